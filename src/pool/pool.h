/* src/pool/pool.h - a pool of connections to one configured database. */
#ifndef KEEL_POOL_POOL_H
#define KEEL_POOL_POOL_H

#include <keel/db.h>
#include "engines/engine.h"

/*
 * The pool keeps up to max_size connections, opens them on demand (and min_size ahead with
 * keel__pool_warm), serves acquire requests in arrival order, fails a request that waited
 * longer than acquire_timeout, and takes connections back clean: rolled back when released
 * inside a transaction, discarded when broken. A timer of its own closes connections idle past
 * idle_timeout (down to min_size) or older than max_lifetime, and opens new ones up to min_size;
 * an idle connection past ping_after_idle is pinged before a waiter gets it; max_waiters bounds
 * the queue. Everything runs on the loop thread.
 */
typedef struct keel__pool keel__pool;

/* NULL when out of memory. cfg must outlive the pool; db provides the worker pool. */
keel__pool *keel__pool_new(keel_db *db, keel_loop *loop, const keel__dbconfig *cfg,
                           const keel__engine *engine);
keel_status keel__pool_acquire(keel__pool *p, keel_acquire_cb cb, void *arg, keel_error *err);
keel_status keel__pool_try_acquire(keel__pool *p, keel_conn **out, keel_error *err);
/* Removes the queued request (cb, arg); 1 when found (its callback will never run), else 0. */
int keel__pool_acquire_cancel(keel__pool *p, keel_acquire_cb cb, void *arg);
keel_status keel__pool_warm(keel__pool *p, keel_acquire_cb cb, void *arg, keel_error *err);
void keel__pool_stats(const keel__pool *p, keel_pool_stats *out);
/* The database name this pool serves. */
const char *keel__pool_name(const keel__pool *p);

/* Gives a leased connection back (keel_conn_release). */
void keel__pool_release(keel_conn *c);

/* True (1) once keel_db_close was called on the pool's db: its connections take no new work. */
int keel__pool_closing(const keel__pool *p);

/*
 * Cancels the operation running on the leased connection c and drops its callbacks, which are
 * never called: the operation ends unreported and c stays busy until it has. For a caller whose
 * callback argument is about to go away (the synchronous API when its loop fails).
 */
void keel__conn_forget(keel_conn *c);

/* What the deadline timer of a connection is armed for. */
enum {
    KEEL__DEADLINE_NONE = 0,
    KEEL__DEADLINE_OP = 1,    /* the running operation's timeout */
    KEEL__DEADLINE_GRACE = 2, /* the server's answer to a cancel */
    KEEL__DEADLINE_RESET = 3  /* the rollback of a connection released inside a transaction */
};

/*
 * Arms the deadline of the operation starting on c: its keel_conn_set_timeout, else the
 * database's command_timeout; nothing when neither is set. KEEL_ERR_NOMEM or KEEL_ERR_INTERNAL
 * (the loop refused the timer) when it cannot be armed: the operation must not start then.
 */
keel_status keel__conn_deadline_start(keel_conn *c, keel_error *err);

/* Disarms the deadline of an operation that did not start after all. */
void keel__conn_deadline_stop(keel_conn *c);

/*
 * Asks the engine to stop the operation running on c (once per operation) and bounds the wait
 * for it: when the server has not answered within the grace, the connection is closed and the
 * operation completes then (KEEL_ERR_TIMEOUT after a deadline, else KEEL_ERR_CANCELLED).
 */
void keel__conn_request_cancel(keel_conn *c);

/*
 * Closes the pool: fails queued requests with KEEL_ERR_CLOSED, closes every connection (leased
 * ones become closed handles that keel_conn_release frees; their running operations complete
 * with KEEL_ERR_CLOSED), then frees the pool. Callbacks run after the pool is detached from
 * its connections.
 */
void keel__pool_free(keel__pool *p);

/* Ends a keel_conn_pause: the hand-over of a finished result, or the engine, goes on. */
void keel__conn_unpause(keel_conn *c);

#endif
