/* src/loop/defer.c - deferred calls, built on a loop timer armed at an already-passed deadline. */
#include <stdlib.h>

#include "loop/defer.h"
#include "loop/loop_int.h"

struct keel__defer {
    keel_timer *timer; /* armed at 0 (always due) while a call is pending */
    keel__defer_cb cb;
    void *arg;
    int pending;
};

static void defer_fire(void *arg) {
    keel__defer *d = arg;
    d->pending = 0;
    /* The callback may free d or schedule it again: d is not touched after it. */
    d->cb(d->arg);
}

keel__defer *keel__defer_new(keel_loop *loop, keel__defer_cb cb, void *arg) {
    keel__defer *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->timer = keel__timer_new(loop, defer_fire, d);
    if (!d->timer) {
        free(d);
        return NULL;
    }
    d->cb = cb;
    d->arg = arg;
    return d;
}

int keel__defer_schedule(keel__defer *d) {
    if (d->pending)
        return 0;
    /* Deadline 0 has always passed: every host fires it from its next turn (asyncio's call_soon,
     * the blocking loop's next pass over its timers), never from inside the arming call. */
    if (keel__timer_arm(d->timer, 0) != 0)
        return -1;
    d->pending = 1;
    return 0;
}

int keel__defer_pending(const keel__defer *d) { return d->pending; }

void keel__defer_cancel(keel__defer *d) {
    if (!d->pending)
        return;
    keel__timer_arm(d->timer, -1);
    d->pending = 0;
}

void keel__defer_free(keel__defer *d) {
    if (!d)
        return;
    keel__timer_free(d->timer);
    free(d);
}
