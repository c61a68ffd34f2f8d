/* tests/c/engines/test_cancel.c - cancel requests repeated while their operation runs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "engines/cancel.h"
#include "test.h"

/* A stand-in for an engine connection: an operation that runs until told otherwise. */
typedef struct fake {
    pthread_t loop_thread;
    keel__cancel k;
    uint64_t op_seq;
    int running;
    int end_after;     /* the operation ends when this many requests were answered (0: never) */
    int next_op_after; /* a new operation starts when this many requests were answered */
    int fail_prepare;
    int prepared, released;
    int released_off_loop_thread;
    atomic_int sent;
    atomic_int sent_on_loop_thread;
    atomic_int hold; /* the worker waits in send while set */
    int done;        /* set when released reaches done_after */
    int done_after;
    int settled;                 /* calls of settled */
    int answered;                /* its last answered */
    int released_before_settled; /* the request was freed before the end went on */
} fake;

typedef struct request {
    fake *f;
    uint64_t seq;
} request;

static int fake_running(void *owner, uint64_t seq) {
    fake *f = owner;
    return f->running && f->op_seq == seq;
}

static void *fake_prepare(void *owner) {
    fake *f = owner;
    if (f->fail_prepare)
        return NULL;
    request *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    r->f = f;
    r->seq = f->op_seq;
    f->prepared++;
    return r;
}

static void fake_send(void *req) {
    request *r = req;
    fake *f = r->f;
    while (atomic_load(&f->hold))
        usleep(1000);
    if (pthread_equal(pthread_self(), f->loop_thread))
        atomic_fetch_add(&f->sent_on_loop_thread, 1);
    atomic_fetch_add(&f->sent, 1);
}

static void fake_release(void *req) {
    request *r = req;
    fake *f = r->f;
    free(r);
    if (!pthread_equal(pthread_self(), f->loop_thread))
        f->released_off_loop_thread++;
    f->released++;
    if (f->end_after && f->released == f->end_after)
        f->running = 0;
    if (f->next_op_after && f->released == f->next_op_after)
        f->op_seq++;
    if (f->released == f->done_after)
        f->done = 1;
}

static void fake_settled(void *owner, int answered) {
    fake *f = owner;
    f->settled++;
    f->answered = answered;
    f->released_before_settled = f->released;
    f->done = 1;
}

static const keel__cancel_ops fake_ops = {
    .running = fake_running,
    .prepare = fake_prepare,
    .send = fake_send,
    .release = fake_release,
    .settled = fake_settled,
};

static fake *fake_new(keel_loop *loop) {
    fake *f = calloc(1, sizeof *f);
    f->loop_thread = pthread_self();
    f->op_seq = 7;
    f->running = 1;
    atomic_init(&f->sent, 0);
    atomic_init(&f->sent_on_loop_thread, 0);
    atomic_init(&f->hold, 0);
    keel__cancel_init(&f->k, loop, &fake_ops, f);
    return f;
}

static void set_flag(void *arg) { *(int *)arg = 1; }

/* Runs the loop ms longer, so that a request that should not come would have come. */
static void run_for(keel_loop *loop, int64_t ms) {
    int flag = 0;
    keel_timer *t = keel__timer_new(loop, set_flag, &flag);
    CHECK(t != NULL);
    CHECK_INT(keel__timer_arm(t, keel_now_ms() + ms), 0);
    CHECK_INT(keel_loop_run(loop, &flag), KEEL_OK);
    keel__timer_free(t);
}

TEST(requests_repeat_until_the_operation_ends) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    fake *f = fake_new(loop);
    f->end_after = 3;
    f->done_after = 3;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(f->prepared, 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 3);
    CHECK_INT(atomic_load(&f->sent_on_loop_thread), 0);
    CHECK_INT(f->prepared, 3);
    CHECK_INT(f->released, 3);
    CHECK_INT(f->released_off_loop_thread, 0);
    CHECK(f->k.job == NULL);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(a_new_operation_is_not_cancelled_by_a_late_retry) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->next_op_after = 2; /* the cancelled statement ends and the next one starts */
    f->done_after = 2;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 2);
    CHECK_INT(f->released, 2);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(an_operation_that_never_ends_gets_twenty_five_requests) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->done_after = 25;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 25);
    CHECK_INT(f->released, 25);
    CHECK_INT(f->k.tries, 25);
    /* Cancelling again starts a new count. */
    f->done = 0;
    f->done_after = 26;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(atomic_load(&f->sent), 26);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(one_request_at_a_time) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    fake *f = fake_new(loop);
    f->end_after = 1;
    f->done_after = 1;
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    keel__cancel_start(&f->k, w, f->op_seq); /* a second cancel while the first is in flight */
    CHECK_INT(f->prepared, 1);
    atomic_store(&f->hold, 0);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 100);
    CHECK_INT(atomic_load(&f->sent), 1);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(nothing_is_sent_without_a_pool_or_a_request) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    keel__cancel_start(&f->k, NULL, f->op_seq);
    CHECK_INT(f->prepared, 0);
    CHECK(f->k.job == NULL);
    f->fail_prepare = 1;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK(f->k.job == NULL);
    CHECK_INT(f->k.tries, 0);
    /* An operation that is not running is not cancelled. */
    f->fail_prepare = 0;
    f->running = 0;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(f->prepared, 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(the_connection_may_close_while_a_request_is_in_flight) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    /* The cancellation state lives on its own here, so that a touch after it is gone shows. */
    keel__cancel *k = calloc(1, sizeof *k);
    keel__cancel_init(k, loop, &fake_ops, f);
    atomic_store(&f->hold, 1);
    keel__cancel_start(k, w, f->op_seq);
    CHECK(k->job != NULL);
    keel__cancel_stop(k);
    free(k);
    atomic_store(&f->hold, 0);
    keel__workers_free(w); /* waits for the request and runs its completion */
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->released, 1);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(stop_is_safe_on_a_state_never_started) {
    keel__cancel k;
    memset(&k, 0, sizeof k);
    keel__cancel_stop(&k);
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    keel__cancel_stop(&f->k);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(the_end_of_an_operation_waits_for_the_request_in_flight) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    /* The operation ends while its request is still on its way to the server. */
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    run_for(loop, 50);
    CHECK_INT(f->settled, 0);
    atomic_store(&f->hold, 0);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 1);
    CHECK_INT(f->released_before_settled, 1);
    /* No retry follows the end, and nothing is held any more. */
    run_for(loop, 300);
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->settled, 1);
    CHECK_INT(keel__cancel_hold(&f->k), 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(an_end_without_a_request_in_flight_is_not_held_and_calls_off_the_retry) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->done_after = 1;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK); /* answered; a retry is due in 20 ms */
    CHECK_INT(keel__cancel_hold(&f->k), 0);
    run_for(loop, 200);
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->settled, 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(a_request_that_never_returns_releases_the_hold_after_five_seconds) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    f->running = 0;
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK(keel_now_ms() - t0 >= 4900);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 0);
    CHECK(f->k.job == NULL);
    /* The request finishes later on its own, without touching the state. */
    atomic_store(&f->hold, 0);
    keel__workers_free(w);
    CHECK_INT(f->released, 1);
    CHECK_INT(f->settled, 1);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(closing_during_a_hold_never_calls_settled) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    keel__cancel *k = calloc(1, sizeof *k);
    keel__cancel_init(k, loop, &fake_ops, f);
    atomic_store(&f->hold, 1);
    keel__cancel_start(k, w, f->op_seq);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(k), 1);
    keel__cancel_stop(k);
    free(k);
    atomic_store(&f->hold, 0);
    keel__workers_free(w);
    CHECK_INT(f->released, 1);
    CHECK_INT(f->settled, 0);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

int main(void) {
    RUN(requests_repeat_until_the_operation_ends);
    RUN(a_new_operation_is_not_cancelled_by_a_late_retry);
    RUN(an_operation_that_never_ends_gets_twenty_five_requests);
    RUN(one_request_at_a_time);
    RUN(nothing_is_sent_without_a_pool_or_a_request);
    RUN(the_connection_may_close_while_a_request_is_in_flight);
    RUN(stop_is_safe_on_a_state_never_started);
    RUN(the_end_of_an_operation_waits_for_the_request_in_flight);
    RUN(an_end_without_a_request_in_flight_is_not_held_and_calls_off_the_retry);
    RUN(a_request_that_never_returns_releases_the_hold_after_five_seconds);
    RUN(closing_during_a_hold_never_calls_settled);
    return TEST_SUMMARY();
}
