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
 *
 * The host's obligations, in full (docs/c-api.md sums them up; tests/c/loop/test_epoll_host.c is
 * an epoll host written from them alone):
 *
 * - Threads. keel calls the ops only on the loop thread, from inside a keel call made there (a
 *   keel_db_… or keel_conn_… call, keel_watch_ready, keel_timer_fire), never from another thread:
 *   the worker pool wakes the loop through an eventfd that keel watches like any descriptor.
 * - Host data. Each keel_watch and keel_timer carries one pointer for the host, NULL when keel
 *   creates it; keel never reads or changes it.
 * - Nothing from inside an op. An op must not call back into keel (keel_watch_ready,
 *   keel_timer_fire, any keel_db_… or keel_conn_… call); only the host-data accessors and
 *   keel_now_ms. Readiness and deadlines are reported from the host's own dispatch, never from
 *   inside the op that registered them, even when a deadline has already passed.
 * - Re-entrancy. Inside keel_watch_ready and keel_timer_fire keel runs engine code and the
 *   application's callbacks, so it may call either op on any watch or timer, the one being
 *   dispatched included: change or stop watches, arm, re-arm or disarm timers, create new ones
 *   and free any of them (after stopping or disarming them, see below).
 * - Batches. A host that collects several ready watches or due timers and then dispatches them
 *   one by one must re-check each before dispatching it: when an earlier dispatch stopped a
 *   watch (events 0) or disarmed or re-armed a timer, the collected readiness is void; the
 *   watch or timer may already be freed, and its address may even belong to a new watch or timer
 *   created in the same batch. A host keeps this straight with a record of its own per watch or
 *   timer (the host data) that it marks dead on the stop or disarm call and frees after the
 *   batch, never by comparing keel_watch / keel_timer pointers.
 * - Spurious readiness is harmless: keel ignores events it is not watching and retries reads and
 *   writes that would block. Readiness is level-triggered: report events for as long as they
 *   hold (keel does not always read a descriptor dry; epoll hosts must not use EPOLLET).
 * - Refusals. An op may fail (return -1). keel never waits for an event the host refused: the
 *   operation that needed it fails with KEEL_ERR_INTERNAL and a message saying what the event
 *   loop refused, synchronously when the refusal happens inside the call (keel_db_acquire,
 *   keel_db_warm, keel_conn_query…), else through its callback; a connection whose watch was
 *   refused mid-operation is given up and replaced. Where keel can do without the refused op (a
 *   repeat of a cancel request, say), it carries on. Nothing hangs, and nothing leaks.
 */

#define KEEL_READ 1
#define KEEL_WRITE 2

typedef struct keel_loop keel_loop;
typedef struct keel_watch keel_watch; /* one file descriptor watched on behalf of keel */
typedef struct keel_timer keel_timer; /* one one-shot deadline */

typedef struct keel_loop_ops {
    /*
     * Sets the events (KEEL_READ | KEEL_WRITE) watched on fd for w, replacing the previous set;
     * events == 0 stops watching. keel only calls it when the set changes, always with the same
     * fd for one w. Returns 0, or -1 if the host cannot watch the descriptor; keel then keeps the
     * previous set.
     *
     * Lifetime: from its first call with events != 0, a watch is the host's until a call with
     * events == 0. keel makes that call before it frees w, also when every earlier call failed,
     * so the host may free its per-watch record there (a stop for a watch the host kept nothing
     * for must be ignored). After it the host must never pass w to keel_watch_ready again. A
     * call with events == 0 cannot fail: its result is ignored.
     *
     * Descriptors: two watches with events != 0 never share a descriptor; keel stops a watch
     * before another one watches the same descriptor number. When keel stops a watch, fd may
     * already be closed, or its number reused by a descriptor keel is about to watch (libpq
     * replaces its socket during a connect): stopping must ignore that, e.g. an EBADF or ENOENT
     * from EPOLL_CTL_DEL, and a host keyed by descriptor number must drop the old entry.
     *
     * Errors and hang-ups: report EPOLLERR, EPOLLHUP, EPOLLRDHUP, POLLERR, POLLHUP and POLLNVAL
     * as every event w is watching (keel's next read or write on the descriptor finds the error
     * and stops or fails the operation); never drop them, or the operation waits for its deadline.
     */
    int (*watch)(void *host, keel_watch *w, int fd, int events);
    /*
     * Arms the one-shot timer t to fire at deadline_ms (keel_now_ms clock), replacing any
     * earlier deadline, or disarms it when deadline_ms < 0. A replaced or disarmed deadline must
     * not fire any more, also when the host had already found it due in the batch it is
     * dispatching. Fire at or after the deadline, never before it by more than the host clock's
     * resolution; a deadline already passed fires on the host's next turn, never from inside this
     * call (keel arms deadline 0 to run something on the next turn). Returns 0, or -1 on failure;
     * keel then treats t as disarmed (a firing is ignored).
     *
     * Lifetime: keel re-arms a timer that fired with a new call. From its first arming, a timer
     * is the host's until a call with deadline_ms < 0: keel makes that call before it frees t,
     * also when t has fired since it was armed or when the arming failed, so the host may free
     * its per-timer record there. A host may instead forget t when it fires; then it ignores a
     * disarm for a timer it kept nothing for. After the disarm the host must never pass t to
     * keel_timer_fire again. A disarm cannot fail: its result is ignored.
     */
    int (*timer)(void *host, keel_timer *t, int64_t deadline_ms);
} keel_loop_ops;

/*
 * Creates a loop bound to a host loop. ops is copied; host is passed back to every op. Owned by
 * the caller; free with keel_loop_free once every keel_db using it is closed (by then keel has
 * stopped every watch and disarmed every timer it made on the loop). Returns NULL when out of
 * memory, or when ops, ops->watch or ops->timer is NULL. Never blocks, never calls an op.
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

/*
 * keel_loop_run that also returns, with KEEL_OK and *done still zero, once deadline_ms (the
 * keel_now_ms clock) has passed; a negative deadline_ms is none. It waits in slices this way:
 * a caller that must look at something else now and then (a signal, another thread's turn)
 * runs it again while its operation is not done. It polls at least once, so a deadline already
 * passed (0, say) dispatches what is ready now without waiting. Blocks at most until the
 * deadline; errors as keel_loop_run.
 */
KEEL_API keel_status keel_loop_run_until(keel_loop *loop, const int *done, int64_t deadline_ms);

/*
 * Frees the loop. Accepts NULL. Called while keel runs a callback on this loop, or while
 * keel_loop_run runs on it, the loop is freed when the last of those calls returns.
 */
KEEL_API void keel_loop_free(keel_loop *loop);

/*
 * Called by the host on the loop thread when w's descriptor is ready for events (KEEL_READ |
 * KEEL_WRITE; events w does not watch are ignored). Runs keel's handler and the application's
 * callbacks inside the call, which may use the ops on any watch or timer (see above): w itself
 * may be freed before this returns. keel's own share of the call stays within a few
 * milliseconds whatever the size of a result: longer work goes on from a timer at deadline 0
 * (docs/c-api.md, "The loop is never held long"). The same holds for keel_timer_fire.
 */
KEEL_API void keel_watch_ready(keel_watch *w, int events);

/*
 * Called by the host on the loop thread when t's deadline has passed; t is disarmed from then
 * on. Runs keel's handler like keel_watch_ready; t may be re-armed or freed before this returns.
 * A timer disarmed since its host scheduled the firing is ignored.
 */
KEEL_API void keel_timer_fire(keel_timer *t);

/* Host bookkeeping: one pointer per watch / timer, NULL at first, that keel never reads. */
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
