/* src/loop/defer.h - runs a callback once on a later loop turn, outside the caller's stack. */
#ifndef KEEL_LOOP_DEFER_H
#define KEEL_LOOP_DEFER_H

#include <keel/loop.h>

/*
 * The one way keel postpones work to the next loop turn: an engine that reaches an outcome
 * inside its start function reports it from here (callbacks never run inside the call that
 * started an operation), the pool serves its waiters from here, and long work continues from
 * here after giving the loop a turn. Loop thread only, like every other loop object.
 */
typedef struct keel__defer keel__defer;

/* Called on the loop thread, from a later loop turn than the keel__defer_schedule call. */
typedef void (*keel__defer_cb)(void *arg);

/* A deferred call of cb(arg), not yet scheduled. NULL when out of memory. */
keel__defer *keel__defer_new(keel_loop *loop, keel__defer_cb cb, void *arg);

/*
 * Schedules one call of the callback from a later loop turn; never calls it from inside this
 * call. Idempotent while pending: scheduling twice before the callback runs still runs it once.
 * May be called from inside the callback, which then runs again on a later turn. Returns 0, or
 * -1 when the host loop refused its timer (nothing is scheduled then).
 */
int keel__defer_schedule(keel__defer *d);

/* True (1) while a call is scheduled and has not run yet. */
int keel__defer_pending(const keel__defer *d);

/* Unschedules a pending call; nothing happens when none is pending. */
void keel__defer_cancel(keel__defer *d);

/* Cancels and frees; accepts NULL. Safe to call from inside the callback of d itself. */
void keel__defer_free(keel__defer *d);

#endif
