/* tests/c/support/epoll_host.h - an epoll host loop for keel, written from keel/loop.h alone. */
#ifndef KEEL_TESTS_SUPPORT_EPOLL_HOST_H
#define KEEL_TESTS_SUPPORT_EPOLL_HOST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/keel.h>

/*
 * The host relies only on what include/keel/loop.h promises: it keeps one record per watch and
 * per timer in the host data, frees a watch's record on the call with events 0 and a timer's on
 * the disarm (never on a firing), defers those frees to the end of a dispatch batch, and checks
 * each collected readiness or due timer again before dispatching it. Every promise of the header
 * it can observe is checked as it runs (ops on the loop thread only, never nested, two live
 * watches never on one descriptor…) and counted in violations, with a line on stderr each.
 * Records keel never released are left alone by epoll_host_free, for LeakSanitizer to report.
 *
 * For tests of what keel does when its host refuses: with fail_at = n, the n-th arming call
 * (a watch with events != 0, a timer with a deadline) returns -1.
 */

struct epoll_host_wrec;
struct epoll_host_trec;

/* The test's own deadlines (cancels, delayed releases), kept apart from keel's timers. */
typedef struct epoll_host_app_timer {
    int64_t at;
    void (*fn)(void *arg);
    void *arg;
} epoll_host_app_timer;

typedef struct epoll_host {
    int ep;
    pthread_t thread;
    struct epoll_host_trec **timers;
    size_t ntimers, cap_timers;
    struct epoll_host_wrec **byfd; /* the live record of each descriptor, to check sharing */
    size_t cap_fd;
    epoll_host_app_timer *apps;
    size_t napps, cap_apps;
    struct epoll_host_wrec *dead_w; /* stopped during the batch being dispatched */
    struct epoll_host_trec *dead_t;
    int dispatching;
    int in_op;
    long live_w, live_t; /* records held: watches watching, timers armed or fired */
    long watch_calls, timer_calls, readies, fires, stale_skipped;
    long armings; /* calls with events != 0 or a deadline, refused ones included */
    long fail_at; /* the arming call to refuse (1 is the first); 0: none */
    long refused;
    long violations;
} epoll_host;

/* The ops to pass to keel_loop_new with the host. */
extern const keel_loop_ops epoll_host_ops;

/* 0, or -1 when epoll_create1 fails. The calling thread becomes the loop thread. */
int epoll_host_init(epoll_host *h);

/* Frees the host's own memory and closes its epoll descriptor. */
void epoll_host_free(epoll_host *h);

/* Calls fn(arg) from the turn after ms milliseconds. */
void epoll_host_after(epoll_host *h, int64_t ms, void (*fn)(void *arg), void *arg);

/* One turn: waits for readiness or the next deadline (at most max_ms), then dispatches. */
void epoll_host_turn(epoll_host *h, int max_ms);

/* Runs turns until *flag is set: 0, or -1 when limit_ms passed first. */
int epoll_host_run_until(epoll_host *h, const int *flag, int64_t limit_ms);

#endif
