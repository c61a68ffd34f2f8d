/* src/loop/loop_priv.h - the loop structures shared by loop.c and the built-in blocking adapter. */
#ifndef KEEL_LOOP_LOOP_PRIV_H
#define KEEL_LOOP_LOOP_PRIV_H

#include "loop/loop_int.h"

struct keel__blocking; /* state of the poll(2)-based adapter (blocking.c) */

struct keel_loop {
    keel_loop_ops ops;
    void *host;
    struct keel__blocking *blocking; /* non-NULL for keel_loop_new_blocking loops */
    int dispatching;                 /* keel_watch_ready / keel_timer_fire calls on the stack */
    int running;                     /* keel_loop_run calls on the stack */
    int free_pending;                /* keel_loop_free came meanwhile: the last call frees */
    keel__unwind *after_head, *after_tail; /* keel__loop_after_dispatch's queue */
    int64_t turn_start_us; /* when the host's current call into keel began; 0 outside one */
};

/* Frees the loop if keel_loop_free was called while it was in use and nothing uses it now. */
void keel__loop_free_if_pending(keel_loop *loop);

struct keel_watch {
    keel_loop *loop;
    int fd;
    int events;     /* the set keel watches, as last accepted by the host */
    int host_knows; /* the host was asked to watch something since it last heard events 0 */
    keel__watch_cb cb;
    void *arg;
    void *host_data;
};

struct keel_timer {
    keel_loop *loop;
    keel__timer_cb cb;
    void *arg;
    int64_t deadline; /* < 0 when disarmed or fired */
    int host_knows;   /* the host was asked to arm it since it last heard a disarm */
    void *host_data;
};

/* Frees the blocking adapter's state (blocking.c). */
void keel__blocking_free(struct keel__blocking *b);

#endif
