/* src/engines/cancel.c - server-side cancel requests with a deadline, retried with backoff. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engines/cancel.h"

/* Requests sent for one operation at most, and the pauses between them (doubling). */
#define CANCEL_TRIES 25
#define CANCEL_RETRY_MIN_MS 20
#define CANCEL_RETRY_MAX_MS 500

/* Where a packet request is. */
typedef enum packet_state { P_START, P_CONNECTING, P_SENDING, P_AWAITING, P_ENDED } packet_state;

/*
 * A request in flight. It reaches the connection's state only through k, which
 * keel__cancel_stop clears, so the connection may close while a job is sent. A connection or
 * packet request is driven on the loop through watch (or on a worker by keel__cancel_fire); a
 * job request holds what prepare made in req.
 */
struct keel__cancel_job {
    keel__cancel *k;
    const keel__cancel_ops *ops;
    void *req;
    void *conn; /* a connection request: the library's cancel connection */
    int conn_ok;
    keel__cancel_packet pkt;
    packet_state state; /* P_START until a connection request ends, then P_ENDED */
    int fd;             /* the socket waited on (a connection request's belongs to conn) */
    size_t sent;
    keel_watch *watch;
    int watch_fd;
};

static void cancel_send(keel__cancel *k);

/* ---- packets ---- */

/*
 * Advances a packet request as far as it goes without waiting. Returns the events it waits
 * for next (KEEL_READ or KEEL_WRITE), or 0 once it ended: the server closed the connection
 * after reading the packet (the answer), or the socket failed.
 */
static int packet_step(keel__cancel_job *j) {
    for (;;) {
        switch (j->state) {
        case P_START:
            j->fd = socket(j->pkt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (j->fd < 0)
                break;
            if (connect(j->fd, (const struct sockaddr *)&j->pkt.addr, j->pkt.addrlen) != 0) {
                if (errno != EINPROGRESS && errno != EINTR)
                    break;
                j->state = P_CONNECTING;
                return KEEL_WRITE;
            }
            j->state = P_SENDING;
            continue;
        case P_CONNECTING: {
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
                break;
            j->state = P_SENDING;
            continue;
        }
        case P_SENDING: {
            ssize_t n = send(j->fd, j->pkt.data + j->sent, j->pkt.len - j->sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    return KEEL_WRITE;
                break;
            }
            j->sent += (size_t)n;
            if (j->sent < j->pkt.len)
                continue;
            j->state = P_AWAITING;
            continue;
        }
        case P_AWAITING: {
            /* The server closes the connection once it has acted on the packet; like libpq,
             * any end of the connection counts as that answer. */
            char buf[64];
            ssize_t n = recv(j->fd, buf, sizeof buf, 0);
            if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
                return KEEL_READ;
            break;
        }
        case P_ENDED:
            return 0;
        }
        j->state = P_ENDED;
        return 0;
    }
}

/*
 * Advances a connection or packet request: the events it waits for next on j->fd, or 0 once it
 * ended.
 */
static int request_step(keel__cancel_job *j) {
    if (!j->conn)
        return packet_step(j);
    if (j->state == P_ENDED)
        return 0;
    int want = j->ops->conn_poll(j->conn);
    if (want > 0 && (j->fd = j->ops->conn_socket(j->conn)) >= 0)
        return want;
    j->conn_ok = want == 0;
    j->state = P_ENDED;
    return 0;
}

/*
 * Whether the request may still reach the server although no answer came: some of a packet
 * left, or a connection request did not end with the server's answer (what the library sent
 * is not known).
 */
static int request_unanswered(const keel__cancel_job *j) {
    if (j->conn)
        return !(j->state == P_ENDED && j->conn_ok);
    return j->sent > 0 && j->state != P_ENDED;
}

static void job_free(keel__cancel_job *j) {
    keel__watch_free(j->watch);
    if (j->conn)
        j->ops->conn_free(j->conn);
    else if (j->fd >= 0)
        close(j->fd);
    free(j);
}

/* The request in flight ended (answered 1), or was given up (answered 0). */
static void request_ended(keel__cancel *k, int answered, int timed_out) {
    k->job = NULL;
    if (!answered && !k->held)
        k->unanswered = 1;
    if (k->held) {
        k->held = 0;
        if (k->timer)
            keel__timer_arm(k->timer, -1);
        k->ops->settled(k->owner, answered);
        return; /* nothing touches k afterwards: the engine may have freed it */
    }
    if (timed_out || !k->ops->running(k->owner, k->seq) || k->tries >= CANCEL_TRIES) {
        if (k->timer)
            keel__timer_arm(k->timer, -1);
        return;
    }
    int64_t delay = CANCEL_RETRY_MIN_MS;
    for (unsigned i = 1; i < k->tries && delay < CANCEL_RETRY_MAX_MS; i++)
        delay *= 2;
    if (delay > CANCEL_RETRY_MAX_MS)
        delay = CANCEL_RETRY_MAX_MS;
    if (k->timer)
        keel__timer_arm(k->timer, keel_now_ms() + delay);
}

static void request_ready(void *arg, int events);

/*
 * Waits on the loop for want on j->fd. A socket that changed gets a fresh watch, since an epoll
 * or asyncio host would not notice a descriptor number that was reused. 0, or -1 when the loop
 * refused.
 */
static int request_wait(keel_loop *loop, keel__cancel_job *j, int want) {
    if (!j->watch || j->watch_fd != j->fd) {
        keel__watch_free(j->watch);
        j->watch_fd = j->fd;
        if (!(j->watch = keel__watch_new(loop, j->fd, request_ready, j)))
            return -1;
    }
    return keel__watch_set(j->watch, want);
}

static void request_ready(void *arg, int events) {
    keel__cancel_job *j = arg;
    (void)events;
    keel__cancel *k = j->k;
    int want = request_step(j);
    if (want && request_wait(k->loop, j, want) == 0)
        return;
    int answered = !request_unanswered(j);
    job_free(j);
    request_ended(k, answered, 0);
}

/* Starts a connection or packet request on the loop. 0, or -1 when it could not start. */
static int request_start(keel__cancel *k, keel__cancel_job *j) {
    int want = KEEL_WRITE;
    if (j->conn)
        j->fd = j->ops->conn_socket(j->conn);
    else
        want = packet_step(j);
    if (!want || j->fd < 0)
        return -1; /* not even connecting: nothing left, nothing to wait for */
    return request_wait(k->loop, j, want);
}

/* ---- jobs ---- */

static void job_run(void *arg) {
    keel__cancel_job *j = arg;
    j->ops->send(j->req);
}

/* After a job was answered: another request follows shortly if the same operation runs. */
static void job_done(void *arg) {
    keel__cancel_job *j = arg;
    keel__cancel *k = j->k;
    j->ops->release(j->req);
    job_free(j);
    if (k)
        request_ended(k, 1, 0);
}

/* Nobody waits for the answer any more (the pool was freed, or keel__cancel_fire). */
static void job_drop(void *arg) {
    keel__cancel_job *j = arg;
    j->ops->release(j->req);
    job_free(j);
}

/* ---- requests ---- */

/*
 * The timer: the next request, or the deadline of the one in flight. A job is left to finish on
 * its worker and free itself, like one abandoned by close; a packet's socket is closed.
 */
static void cancel_timer(void *arg) {
    keel__cancel *k = arg;
    keel__cancel_job *j = k->job;
    if (!j && k->held) {
        request_ended(k, 0, 1); /* the end of an operation whose request was given up */
        return;
    }
    if (!j) {
        cancel_send(k);
        return;
    }
    int answered;
    if (j->req) {
        j->k = NULL;
        answered = 0;
    } else {
        answered = !request_unanswered(j);
        job_free(j);
    }
    request_ended(k, answered, 1);
}

/* A new request, a connection, a packet or a job for w, for the operation k->seq; NULL when
 * none can be made (a job without a pool included). */
static keel__cancel_job *request_new(keel__cancel *k, keel__workers *w) {
    keel__cancel_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->k = k;
    j->ops = k->ops;
    j->fd = -1;
    j->watch_fd = -1;
    if (k->ops->conn_start && (j->conn = k->ops->conn_start(k->owner)))
        return j;
    if (k->ops->packet && k->ops->packet(k->owner, &j->pkt) == 0)
        return j;
    if (w && k->ops->prepare && (j->req = k->ops->prepare(k->owner)))
        return j;
    free(j);
    return NULL;
}

static void cancel_send(keel__cancel *k) {
    if (k->job || k->held || !k->ops->running(k->owner, k->seq))
        return;
    if (!k->timer && !(k->timer = keel__timer_new(k->loop, cancel_timer, k)))
        return; /* without the timer nothing would bound the request */
    keel__cancel_job *j = request_new(k, k->workers);
    if (!j)
        return;
    int64_t deadline = keel_now_ms() + KEEL__CANCEL_REQUEST_MS;
    int rc;
    if (j->req) {
        keel__job job = { KEEL__JOB_CANCEL, deadline, job_run, job_done, job_drop, j };
        rc = keel__workers_submit(k->workers, &job);
        if (rc != 0)
            k->ops->release(j->req);
    } else {
        rc = request_start(k, j);
    }
    if (rc != 0) {
        job_free(j);
        return;
    }
    k->job = j;
    k->tries++;
    keel__timer_arm(k->timer, deadline);
}

void keel__cancel_init(keel__cancel *k, keel_loop *loop, const keel__cancel_ops *ops, void *owner) {
    k->ops = ops;
    k->owner = owner;
    k->loop = loop;
}

void keel__cancel_start(keel__cancel *k, keel__workers *w, uint64_t seq) {
    if (seq != k->seq)
        k->unanswered = 0;
    k->workers = w;
    k->seq = seq;
    k->tries = 0;
    cancel_send(k);
}

int keel__cancel_hold(keel__cancel *k) {
    if (!k->job && k->unanswered && k->timer && keel__timer_arm(k->timer, 0) == 0) {
        /* settled(0) comes from the timer: never from inside the engine's own call. */
        k->unanswered = 0;
        k->held = 1;
        return 1;
    }
    if (!k->job) {
        /* A retry waiting for its turn is called off: the operation it was for is over. */
        if (k->timer)
            keel__timer_arm(k->timer, -1);
        return 0;
    }
    /* The timer stays armed at the request's deadline, which ends the hold at the latest. */
    k->held = 1;
    return 1;
}

/* keel__cancel_fire's connection or packet, on a worker: the same steps, waited for with poll. */
static void fire_run(void *arg) {
    keel__cancel_job *j = arg;
    int64_t deadline = keel_now_ms() + KEEL__CANCEL_REQUEST_MS;
    int want = KEEL_WRITE;
    if (j->conn)
        j->fd = j->ops->conn_socket(j->conn);
    else
        want = packet_step(j);
    for (; want && j->fd >= 0; want = request_step(j)) {
        int64_t left = deadline - keel_now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = { j->fd, (short)(want == KEEL_READ ? POLLIN : POLLOUT), 0 };
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            break;
    }
}

static void fire_drop(void *arg) { job_free(arg); }

void keel__cancel_fire(keel__cancel *k, keel__workers *w) {
    if (!w || !k->ops)
        return;
    keel__cancel_job *j = request_new(k, w);
    if (!j)
        return;
    j->k = NULL;
    int64_t deadline = keel_now_ms() + KEEL__CANCEL_REQUEST_MS;
    keel__job job = { KEEL__JOB_CANCEL, deadline, fire_run, fire_drop, fire_drop, j };
    if (j->req) {
        job.run = job_run;
        job.done = job_drop;
        job.drop = job_drop;
    }
    if (keel__workers_submit(w, &job) != 0) {
        if (j->req)
            k->ops->release(j->req);
        job_free(j);
    }
}

void keel__cancel_stop(keel__cancel *k) {
    keel__cancel_job *j = k->job;
    if (j && j->req)
        j->k = NULL;
    else if (j)
        job_free(j);
    k->job = NULL;
    k->held = 0;
    keel__timer_free(k->timer);
    k->timer = NULL;
}
