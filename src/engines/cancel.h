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
 *
 * A request must not outlive its operation: one still in flight when the operation ends could
 * reach the server after the next statement started, and stop that one instead. So an engine
 * whose operation ends asks keel__cancel_hold first, and while a request is in flight it keeps
 * the end to itself until settled is called: a server ignores a cancel that arrives while the
 * session is idle, and nothing else runs on the session before the end is reported.
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
    /* Loop thread: the request that held the end of the operation (keel__cancel_hold) has
     * returned (answered 1), or did not return within 5 seconds (answered 0: it may still
     * reach the server, so the session cannot be trusted with another statement). The engine
     * goes on with what it held back; it may close and free owner from here. Needed only by
     * engines that call keel__cancel_hold. */
    void (*settled)(void *owner, int answered);
} keel__cancel_ops;

typedef struct keel__cancel_job keel__cancel_job;

/* A connection's cancellation state, kept in the engine's connection state. */
typedef struct keel__cancel {
    const keel__cancel_ops *ops;
    void *owner;
    keel_loop *loop;
    keel__workers *workers; /* where the requests for the current operation are sent */
    keel__cancel_job *job;  /* the request in flight, if any */
    keel_timer *timer;      /* the next request, or the end of a hold */
    uint64_t seq;           /* the operation being cancelled */
    unsigned tries;         /* requests sent for it */
    int held;               /* the operation's end waits for the request in flight */
} keel__cancel;

/*
 * Sets k up for a connection on loop, whose state is owner. A zero-filled k that was never set
 * up may be stopped.
 */
void keel__cancel_init(keel__cancel *k, keel_loop *loop, const keel__cancel_ops *ops, void *owner);

/*
 * Starts cancelling the operation numbered seq, which runs now, through the worker pool w: a
 * first request is sent unless one is still in flight (its answer then decides whether another
 * follows). Nothing is sent without a pool (w NULL) or memory: the operation then runs to its
 * end.
 */
void keel__cancel_start(keel__cancel *k, keel__workers *w, uint64_t seq);

/*
 * The running operation reached its end, or a step that a late request must not hit (a batch's
 * rollback). No further request is sent for it. Returns 0 when no request is in flight: the
 * engine goes on at once. Returns 1 when one is: the engine holds back what it was about to do
 * (report the end, start the step), keeping its state not running for ops->running, and goes
 * on when ops->settled is called.
 */
int keel__cancel_hold(keel__cancel *k);

/*
 * The connection closes: no further request is sent, and one in flight finishes on its worker
 * and frees itself; a hold ends without settled being called. Safe on a state that was never
 * started.
 */
void keel__cancel_stop(keel__cancel *k);

#endif
