/* src/loop/loop.c - watches and timers on a host loop, and the keel_loop handle itself. */
#include <stdlib.h>
#include <time.h>

#include "loop/loop_priv.h"

keel_loop *keel_loop_new(const keel_loop_ops *ops, void *host) {
    if (!ops || !ops->watch || !ops->timer)
        return NULL;
    keel_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    loop->ops = *ops;
    loop->host = host;
    return loop;
}

int keel_loop_is_blocking(const keel_loop *loop) { return loop && loop->blocking != NULL; }

void keel_loop_free(keel_loop *loop) {
    if (!loop)
        return;
    /* A db that owns its loop frees it as it closes, which may happen from inside a callback
     * of that loop: the calls of keel up the stack still use it, and the last one frees it. */
    if (loop->dispatching || loop->running) {
        loop->free_pending = 1;
        return;
    }
    keel__blocking_free(loop->blocking);
    free(loop);
}

void keel__loop_free_if_pending(keel_loop *loop) {
    if (loop->free_pending && !loop->dispatching && !loop->running) {
        loop->free_pending = 0;
        keel_loop_free(loop);
    }
}

int keel__loop_dispatching(const keel_loop *loop) { return loop && loop->dispatching > 0; }

void keel__loop_after_dispatch(keel_loop *loop, keel__unwind *u) {
    u->next = NULL;
    if (loop->after_tail)
        loop->after_tail->next = u;
    else
        loop->after_head = u;
    loop->after_tail = u;
}

/* Begins one callback of keel_watch_ready / keel_timer_fire; the outermost starts the budget. */
static void dispatch_enter(keel_loop *loop) {
    if (loop->dispatching++ == 0)
        loop->turn_start_us = keel__now_us();
}

/*
 * Ends one callback of keel_watch_ready / keel_timer_fire. The outermost one runs the queued
 * work, still counted as dispatching, so that what that work queues in turn (a close requested
 * by a callback of a close) runs here as well, after it.
 */
static void dispatch_leave(keel_loop *loop) {
    if (loop->dispatching == 1) {
        keel__unwind *u;
        while ((u = loop->after_head) != NULL) {
            loop->after_head = u->next;
            if (!loop->after_head)
                loop->after_tail = NULL;
            u->fn(u->arg); /* may free u */
        }
    }
    if (--loop->dispatching == 0)
        loop->turn_start_us = 0;
    keel__loop_free_if_pending(loop);
}

int64_t keel_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t keel__now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int keel__turn_spent(const keel_loop *loop) {
    /* Outside the host's calls keel runs inside one of the application's (a query started from
     * a coroutine, say), whose time is not keel's to take: long work waits for the loop. A
     * nested run of a blocking loop goes on with the outer call's budget. */
    return loop->dispatching == 0 || keel__now_us() - loop->turn_start_us >= KEEL__TURN_BUDGET_US;
}

keel_watch *keel__watch_new(keel_loop *loop, int fd, keel__watch_cb cb, void *arg) {
    keel_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
    return w;
}

int keel__watch_set(keel_watch *w, int events) {
    events &= KEEL_READ | KEEL_WRITE;
    if (events == w->events)
        return 0;
    if (events == 0) {
        /* Stopping cannot fail (loop.h): whatever the host answers, w watches nothing now. */
        w->loop->ops.watch(w->loop->host, w, w->fd, 0);
        w->events = 0;
        w->host_knows = 0;
        return 0;
    }
    /* Even a refused call may have left a registration behind: the host hears events 0 for it
     * before w is freed, so a host that frees its record there never leaks one. */
    w->host_knows = 1;
    if (w->loop->ops.watch(w->loop->host, w, w->fd, events) != 0)
        return -1;
    w->events = events;
    return 0;
}

int keel__watch_events(const keel_watch *w) { return w->events; }

void keel__watch_free(keel_watch *w) {
    if (!w)
        return;
    if (w->host_knows)
        w->loop->ops.watch(w->loop->host, w, w->fd, 0);
    free(w);
}

void keel_watch_ready(keel_watch *w, int events) {
    events &= w->events;
    if (!events)
        return;
    keel_loop *loop = w->loop; /* the callback may free w */
    dispatch_enter(loop);
    w->cb(w->arg, events);
    dispatch_leave(loop);
}

void keel_watch_set_host_data(keel_watch *w, void *data) { w->host_data = data; }

void *keel_watch_get_host_data(const keel_watch *w) { return w->host_data; }

keel_timer *keel__timer_new(keel_loop *loop, keel__timer_cb cb, void *arg) {
    keel_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    t->cb = cb;
    t->arg = arg;
    t->deadline = -1;
    return t;
}

int keel__timer_arm(keel_timer *t, int64_t deadline_ms) {
    if (deadline_ms < 0) {
        /* A timer that fired has no deadline left to cancel; the host still hears the disarm
         * before t is freed (host_knows stays set). */
        if (t->deadline >= 0) {
            t->loop->ops.timer(t->loop->host, t, -1);
            t->host_knows = 0;
            t->deadline = -1;
        }
        return 0;
    }
    t->host_knows = 1;
    if (t->loop->ops.timer(t->loop->host, t, deadline_ms) != 0) {
        /* The host failed to arm it: a firing it may still deliver is ignored. */
        t->deadline = -1;
        return -1;
    }
    t->deadline = deadline_ms;
    return 0;
}

void keel__timer_free(keel_timer *t) {
    if (!t)
        return;
    /* Also after it fired: a host that frees its record on the disarm never leaks it. */
    if (t->host_knows)
        t->loop->ops.timer(t->loop->host, t, -1);
    free(t);
}

void keel_timer_fire(keel_timer *t) {
    if (t->deadline < 0)
        return; /* disarmed after the host had already queued it */
    t->deadline = -1;
    keel_loop *loop = t->loop; /* the callback may free t */
    dispatch_enter(loop);
    t->cb(t->arg);
    dispatch_leave(loop);
}

void keel_timer_set_host_data(keel_timer *t, void *data) { t->host_data = data; }

void *keel_timer_get_host_data(const keel_timer *t) { return t->host_data; }
