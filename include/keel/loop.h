/* keel/loop.h - the interface through which a host event loop drives keel. */
#ifndef KEEL_LOOP_H
#define KEEL_LOOP_H

#include <stdint.h>
#include <keel/export.h>
#include <keel/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * keel never blocks its caller and never assumes a thread. Every engine operation is a state
 * machine that tells the loop what it waits for: a file descriptor becoming readable or
 * writable, or a deadline. A host loop (asyncio, libuv, epoll…) implements keel_loop_ops and
 * reports readiness back with keel_watch_ready and keel_timer_fire, as hiredis and libcurl's
 * multi-socket API do. All calls on a loop, and on every keel_db bound to it, happen on the thread
 * that runs the loop.
 */

#define KEEL_READ 1
#define KEEL_WRITE 2

typedef struct keel_loop keel_loop;
typedef struct keel_watch keel_watch; /* one file descriptor watched on behalf of keel */
typedef struct keel_timer keel_timer; /* one one-shot deadline */

typedef struct keel_loop_ops {
    /*
     * Set the events (KEEL_READ | KEEL_WRITE) watched on fd for w, replacing the previous set.
     * events == 0 stops watching; keel calls it with 0 before it frees w. keel only calls it when
     * the set changes. Return 0, or -1 if the host cannot watch the descriptor.
     */
    int (*watch)(void *host, keel_watch *w, int fd, int events);
    /*
     * Arm the timer t to fire once at deadline_ms (keel_now_ms clock), replacing any earlier
     * deadline, or disarm it when deadline_ms < 0. keel disarms a timer before it frees it.
     * Return 0, or -1 on failure.
     */
    int (*timer)(void *host, keel_timer *t, int64_t deadline_ms);
} keel_loop_ops;

/*
 * Creates a loop bound to a host loop. ops is copied; host is passed back to every op. Owned by
 * the caller; free with keel_loop_free once every keel_db using it is closed. Returns NULL when
 * out of memory. Never blocks.
 */
KEEL_API keel_loop *keel_loop_new(const keel_loop_ops *ops, void *host);

/*
 * Creates a self-contained blocking loop based on poll(2): the synchronous C API and the CLI run
 * it with keel_loop_run until their operation completes. Free with keel_loop_free.
 */
KEEL_API keel_loop *keel_loop_new_blocking(void);

/* True (1) for loops made by keel_loop_new_blocking. */
KEEL_API int keel_loop_is_blocking(const keel_loop *loop);

/*
 * Runs a blocking loop until *done becomes non-zero, or until nothing is left to wait for
 * (returns KEEL_ERR_INTERNAL then, since the operation can never finish). Blocks. Returns
 * KEEL_ERR_INVALID_ARGUMENT on a loop that is not blocking.
 */
KEEL_API keel_status keel_loop_run(keel_loop *loop, const int *done);

/* Frees the loop. Accepts NULL. */
KEEL_API void keel_loop_free(keel_loop *loop);

/* Called by the host when w's descriptor is ready for events (KEEL_READ | KEEL_WRITE). */
KEEL_API void keel_watch_ready(keel_watch *w, int events);

/* Called by the host when t's deadline has passed. */
KEEL_API void keel_timer_fire(keel_timer *t);

/* Host bookkeeping: one pointer per watch / timer that keel stores and never reads. */
KEEL_API void keel_watch_set_host_data(keel_watch *w, void *data);
KEEL_API void *keel_watch_get_host_data(const keel_watch *w);
KEEL_API void keel_timer_set_host_data(keel_timer *t, void *data);
KEEL_API void *keel_timer_get_host_data(const keel_timer *t);

/* Milliseconds on the monotonic clock (CLOCK_MONOTONIC), the clock of every keel deadline. */
KEEL_API int64_t keel_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
