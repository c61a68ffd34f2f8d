/* src/loop/loop_int.h - internal watches and timers that engines and pools use on a keel_loop. */
#ifndef KEEL_LOOP_LOOP_INT_H
#define KEEL_LOOP_LOOP_INT_H

#include <stdint.h>
#include <keel/loop.h>

/* Called on the loop thread when the watched fd is ready for events (KEEL_READ|KEEL_WRITE). */
typedef void (*keel__watch_cb)(void *arg, int events);
/* Called on the loop thread when the timer's deadline has passed. */
typedef void (*keel__timer_cb)(void *arg);

/* A watch on fd, initially watching nothing. NULL when out of memory. */
keel_watch *keel__watch_new(keel_loop *loop, int fd, keel__watch_cb cb, void *arg);
/*
 * Changes the watched events (0 stops). Calls the host only when the set changes. Returns 0, or
 * -1 when the host refused.
 */
int keel__watch_set(keel_watch *w, int events);
int keel__watch_events(const keel_watch *w);
/* Stops watching and frees; accepts NULL. Safe to call from inside the watch's own callback. */
void keel__watch_free(keel_watch *w);

keel_timer *keel__timer_new(keel_loop *loop, keel__timer_cb cb, void *arg);
/* Arms at deadline_ms (keel_now_ms clock) or disarms when < 0. Returns 0 or -1. */
int keel__timer_arm(keel_timer *t, int64_t deadline_ms);
/* Disarms and frees; accepts NULL. Safe from inside the timer's own callback. */
void keel__timer_free(keel_timer *t);

/*
 * Work that must wait until keel's callbacks on a loop have returned, because the frames up the
 * stack (keel's and the host's) still use what it frees: a keel_db closed from inside one of its
 * own callbacks is closed from here. The caller owns the node, so queueing it cannot fail.
 */
typedef struct keel__unwind {
    void (*fn)(void *arg);
    void *arg;
    struct keel__unwind *next;
} keel__unwind;

/* True (1) while keel runs a callback on loop: inside keel_watch_ready or keel_timer_fire. */
int keel__loop_dispatching(const keel_loop *loop);

/*
 * Queues u, while keel__loop_dispatching(loop): u->fn(u->arg) runs once, when the outermost
 * keel_watch_ready / keel_timer_fire on loop has finished its callback, before it returns to
 * the host. Work queued by u->fn itself runs there too, after it. u must stay valid until
 * u->fn runs, which may free it.
 */
void keel__loop_after_dispatch(keel_loop *loop, keel__unwind *u);

/*
 * The budget of one loop callback. No callback of keel's may hold the host loop for long: work
 * that grows with the size of a result (decoding rows, handing them to the application) runs in
 * slices, and stops once the host's call into keel (keel_watch_ready, keel_timer_fire) has run
 * for KEEL__TURN_BUDGET_US, to go on from a later turn (keel__defer). The budget counts
 * everything that call runs, the application's callbacks included, so what they cost shortens
 * keel's own share. Slices are small enough (a few hundred rows) to overshoot it by little.
 */
#define KEEL__TURN_BUDGET_US 4000

/* Microseconds on the monotonic clock of keel_now_ms. */
int64_t keel__now_us(void);

/*
 * True (1) when the host's call into keel on loop that is in progress has used up
 * KEEL__TURN_BUDGET_US: the caller should stop at the next point where it can go on later.
 * Always 1 outside such a call, inside a keel call the application made (keel_conn_query, say):
 * work that grows with a result then waits for the loop instead of stretching the
 * application's call.
 */
int keel__turn_spent(const keel_loop *loop);

#endif
