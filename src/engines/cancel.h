/* src/engines/cancel.h - server-side cancel requests from the worker pool, retried with backoff. */
#ifndef KEEL_ENGINES_CANCEL_H
#define KEEL_ENGINES_CANCEL_H

#include <stdint.h>
#include "loop/loop_int.h"
#include "loop/worker.h"

/*
 * Engines whose cancel is a request on a connection of its own (PostgreSQL's cancel key,
 * MySQL's KILL QUERY) send it from a worker, since it blocks until the server answers. Such a
 * request can overtake the statement it targets, and a server ignores a cancel for a session
 * that is not running anything yet; so when the answer comes and the same operation still
 * runs, another request follows after a pause (20 ms, doubling up to 500 ms), 25 requests at
 * most for one operation.
 */

/* The engine's part. owner is the engine's connection state given to keel__cancel_init. */
typedef struct keel__cancel_ops {
    /* Loop thread: 1 while the operation numbered seq still runs and may be cancelled. */
    int (*running)(void *owner, uint64_t seq);
    /* Loop thread: a copy of what one request needs, so the connection may close while it is
     * sent; NULL when none can be made (out of memory). */
    void *(*prepare)(void *owner);
    /* Worker thread: sends the request prepared and waits for the server's answer. */
    void (*send)(void *req);
    /* Loop thread, after send: frees what prepare made. */
    void (*release)(void *req);
} keel__cancel_ops;

typedef struct keel__cancel_job keel__cancel_job;

/* A connection's cancellation state, kept in the engine's connection state. */
typedef struct keel__cancel {
    const keel__cancel_ops *ops;
    void *owner;
    keel_loop *loop;
    keel__workers *workers; /* where the requests for the current operation are sent */
    keel__cancel_job *job;  /* the request in flight, if any */
    keel_timer *timer;      /* the next request */
    uint64_t seq;           /* the operation being cancelled */
    unsigned tries;         /* requests sent for it */
} keel__cancel;

/*
 * Sets k up for a connection on loop, whose state is owner. A zero-filled k that was never set
 * up may be stopped.
 */
void keel__cancel_init(keel__cancel *k, keel_loop *loop, const keel__cancel_ops *ops,
                       void *owner);

/*
 * Starts cancelling the operation numbered seq, which runs now, through the worker pool w: a
 * first request is sent unless one is still in flight (its answer then decides whether another
 * follows). Nothing is sent without a pool (w NULL) or memory: the operation then runs to its
 * end.
 */
void keel__cancel_start(keel__cancel *k, keel__workers *w, uint64_t seq);

/*
 * The connection closes: no further request is sent, and one in flight finishes on its worker
 * and frees itself. Safe on a state that was never started.
 */
void keel__cancel_stop(keel__cancel *k);

#endif
