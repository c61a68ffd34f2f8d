/* src/engines/cancel.c - server-side cancel requests from the worker pool, retried with backoff. */
#include <stdlib.h>

#include "engines/cancel.h"

/* Requests sent for one operation at most, and the pauses between them (doubling). */
#define CANCEL_TRIES 25
#define CANCEL_RETRY_MIN_MS 20
#define CANCEL_RETRY_MAX_MS 500
/* How long the end of an operation waits for a request in flight before giving up on it. */
#define CANCEL_HOLD_MAX_MS 5000

/*
 * A request on the worker pool. It reaches the connection's state only through k, which
 * keel__cancel_stop clears, so the connection may close while the request is sent.
 */
struct keel__cancel_job {
    keel__cancel *k;
    const keel__cancel_ops *ops;
    void *req;
};

static void cancel_send(keel__cancel *k);

static void cancel_run(void *arg) {
    keel__cancel_job *job = arg;
    job->ops->send(job->req);
}

/* Ends a hold: the engine goes on with what it held back. Nothing touches k afterwards. */
static void cancel_settle(keel__cancel *k, int answered) {
    k->held = 0;
    if (k->timer)
        keel__timer_arm(k->timer, -1);
    k->ops->settled(k->owner, answered);
}

/*
 * The timer: the next request, or the end of a hold whose request did not return in time. That
 * request is left to finish on its worker and free itself, like one abandoned by close.
 */
static void cancel_timer(void *arg) {
    keel__cancel *k = arg;
    if (!k->held) {
        cancel_send(k);
        return;
    }
    if (k->job)
        k->job->k = NULL;
    k->job = NULL;
    cancel_settle(k, 0);
}

/* After a request was answered: another follows shortly if the same operation still runs. */
static void cancel_done(void *arg) {
    keel__cancel_job *job = arg;
    keel__cancel *k = job->k;
    job->ops->release(job->req);
    free(job);
    if (!k)
        return;
    k->job = NULL;
    if (k->held) {
        cancel_settle(k, 1);
        return;
    }
    if (!k->ops->running(k->owner, k->seq) || k->tries >= CANCEL_TRIES)
        return;
    if (!k->timer)
        k->timer = keel__timer_new(k->loop, cancel_timer, k);
    int64_t delay = CANCEL_RETRY_MIN_MS;
    for (unsigned i = 1; i < k->tries && delay < CANCEL_RETRY_MAX_MS; i++)
        delay *= 2;
    if (delay > CANCEL_RETRY_MAX_MS)
        delay = CANCEL_RETRY_MAX_MS;
    if (k->timer)
        keel__timer_arm(k->timer, keel_now_ms() + delay);
}

static void cancel_send(keel__cancel *k) {
    if (k->job || k->held || !k->ops->running(k->owner, k->seq))
        return;
    keel__cancel_job *job = k->workers ? malloc(sizeof *job) : NULL;
    if (!job)
        return;
    job->k = k;
    job->ops = k->ops;
    job->req = k->ops->prepare(k->owner);
    if (!job->req) {
        free(job);
        return;
    }
    if (keel__workers_submit(k->workers, cancel_run, cancel_done, job) != 0) {
        k->ops->release(job->req);
        free(job);
        return;
    }
    k->job = job;
    k->tries++;
}

void keel__cancel_init(keel__cancel *k, keel_loop *loop, const keel__cancel_ops *ops, void *owner) {
    k->ops = ops;
    k->owner = owner;
    k->loop = loop;
}

void keel__cancel_start(keel__cancel *k, keel__workers *w, uint64_t seq) {
    k->workers = w;
    k->seq = seq;
    k->tries = 0;
    cancel_send(k);
}

int keel__cancel_hold(keel__cancel *k) {
    /* A retry waiting for its turn is called off: the operation it was for is over. */
    if (k->timer)
        keel__timer_arm(k->timer, -1);
    if (!k->job)
        return 0;
    k->held = 1;
    if (!k->timer)
        k->timer = keel__timer_new(k->loop, cancel_timer, k);
    /* Without the timer the hold lasts until the request returns, however long that takes. */
    if (k->timer)
        keel__timer_arm(k->timer, keel_now_ms() + CANCEL_HOLD_MAX_MS);
    return 1;
}

void keel__cancel_stop(keel__cancel *k) {
    if (k->job)
        k->job->k = NULL;
    k->job = NULL;
    k->held = 0;
    keel__timer_free(k->timer);
    k->timer = NULL;
}
