/* src/engines/cancel.h - server-side cancel requests with a deadline, retried with backoff. */
#ifndef KEEL_ENGINES_CANCEL_H
#define KEEL_ENGINES_CANCEL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "loop/loop_int.h"
#include "loop/worker.h"

/*
 * Engines whose cancel is a request on a connection of its own send it one of three ways:
 *
 *   a connection  the client library's own non-blocking cancel (libpq 17's PQcancelStart),
 *                 polled from the loop.
 *   a packet      bytes written to the server's address over a fresh socket, answered when
 *                 the server closes it (PostgreSQL's CancelRequest). Sent from the loop,
 *                 non-blocking.
 *   a job         a blocking client call (MySQL's KILL QUERY, PostgreSQL's PQcancel when
 *                 neither of the others can be had), run on the worker pool's CANCEL class.
 *
 * Either way a request has a deadline (KEEL__CANCEL_REQUEST_MS): one that has not returned by
 * then is given up (a packet's socket is closed; a job is left to end on its worker and free
 * itself) and no further request follows for that operation, since the server does not answer.
 *
 * Such a request can overtake the statement it targets, and a server ignores a cancel for a
 * session that is not running anything yet; so when the answer comes and the same operation
 * still runs, another request follows after a pause (20 ms, doubling up to 500 ms), 25 requests
 * at most for one operation.
 *
 * A request must not outlive its operation: one still in flight when the operation ends could
 * reach the server after the next statement started, and stop that one instead. So an engine
 * whose operation ends asks keel__cancel_hold first, and while a request is in flight it keeps
 * the end to itself until settled is called: a server ignores a cancel that arrives while the
 * session is idle, and nothing else runs on the session before the end is reported.
 *
 * A connection that closes while its statement runs sends one last request with
 * keel__cancel_fire: it goes from a worker, outlives the connection (and the db), and is never
 * waited for.
 */

/* How long one request may take, and so how long an operation's end waits for it. */
#define KEEL__CANCEL_REQUEST_MS 5000

/* A packet request: what to send where. */
typedef struct keel__cancel_packet {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned char data[64];
    size_t len;
} keel__cancel_packet;

/* The engine's part. owner is the engine's connection state given to keel__cancel_init. */
typedef struct keel__cancel_ops {
    /* Loop thread: 1 while the operation numbered seq still runs and may be cancelled. */
    int (*running)(void *owner, uint64_t seq);
    /* Loop thread: starts the client library's non-blocking cancel of the running operation
     * and returns it, or NULL when it has none (then packet, or prepare and send, are used).
     * NULL: never. The request is then driven with conn_poll, which returns the events it
     * waits for next on conn_socket (KEEL_READ or KEEL_WRITE; the socket may change from one
     * poll to the next), 0 once the server answered, or -1 when it failed; conn_free frees it
     * (from any thread). Before the first poll it waits for KEEL_WRITE. */
    void *(*conn_start)(void *owner);
    int (*conn_poll)(void *conn);
    int (*conn_socket)(const void *conn);
    void (*conn_free)(void *conn);
    /* Loop thread: fills *out with the packet that cancels the running operation. 0, or -1
     * when the connection has none (then prepare and send are used). NULL: never. */
    int (*packet)(void *owner, keel__cancel_packet *out);
    /* Loop thread: a copy of what one job needs, so the connection may close while it is
     * sent; NULL when none can be made (out of memory). NULL: the engine only sends packets. */
    void *(*prepare)(void *owner);
    /* Worker thread: sends the request prepared and waits for the server's answer. It must
     * give up by itself within about KEEL__CANCEL_REQUEST_MS (the client library's timeouts),
     * or its thread stays taken until it returns. */
    void (*send)(void *req);
    /* Frees what prepare made: on the loop thread after send, or on the worker when nobody
     * waits for the answer any more (keel__cancel_fire, or the pool was freed). */
    void (*release)(void *req);
    /* Loop thread: the request that held the end of the operation (keel__cancel_hold) has
     * returned (answered 1), or did not return in time (answered 0: it may still reach the
     * server, so the session cannot be trusted with another statement). The engine goes on
     * with what it held back; it may close and free owner from here. Needed only by engines
     * that call keel__cancel_hold. */
    void (*settled)(void *owner, int answered);
} keel__cancel_ops;

typedef struct keel__cancel_job keel__cancel_job;

/* A connection's cancellation state, kept in the engine's connection state. */
typedef struct keel__cancel {
    const keel__cancel_ops *ops;
    void *owner;
    keel_loop *loop;
    keel__workers *workers; /* where the jobs for the current operation are sent */
    keel__cancel_job *job;  /* the request in flight, if any */
    keel_timer *timer;      /* the next request, or the deadline of the one in flight */
    uint64_t seq;           /* the operation being cancelled */
    unsigned tries;         /* requests sent for it */
    int held;               /* the operation's end waits for the request in flight */
    int unanswered;         /* a request for it was given up and may still reach the server */
} keel__cancel;

/*
 * Sets k up for a connection on loop, whose state is owner. A zero-filled k that was never set
 * up may be stopped.
 */
void keel__cancel_init(keel__cancel *k, keel_loop *loop, const keel__cancel_ops *ops, void *owner);

/*
 * Starts cancelling the operation numbered seq, which runs now: a first request is sent unless
 * one is still in flight (its answer then decides whether another follows). Jobs go to the
 * worker pool w; without a pool (w NULL), a packet or memory, nothing is sent and the operation
 * runs to its end.
 */
void keel__cancel_start(keel__cancel *k, keel__workers *w, uint64_t seq);

/*
 * The running operation reached its end, or a step that a late request must not hit (a batch's
 * rollback). No further request is sent for it. Returns 0 when no request is in flight: the
 * engine goes on at once. Returns 1 when one is, or when one was given up unanswered: the
 * engine holds back what it was about to do (report the end, start the step), keeping its state
 * not running for ops->running, and goes on when ops->settled is called (within
 * KEEL__CANCEL_REQUEST_MS; at once, from a later loop turn, with answered 0 for a request given
 * up: it may still reach the server).
 */
int keel__cancel_hold(keel__cancel *k);

/*
 * The connection closes while its operation runs: one request is sent from a worker of w (a
 * packet with a deadline, or a job), without waiting for it and without touching k or the
 * connection afterwards. Call it before keel__cancel_stop. Nothing happens without a pool or
 * memory.
 */
void keel__cancel_fire(keel__cancel *k, keel__workers *w);

/*
 * The connection closes: no further request is sent; a packet in flight is given up (its
 * socket closed), a job in flight finishes on its worker and frees itself; a hold ends without
 * settled being called. Safe on a state that was never started.
 */
void keel__cancel_stop(keel__cancel *k);

#endif
