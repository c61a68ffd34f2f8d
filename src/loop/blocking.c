/* src/loop/blocking.c - the built-in poll(2) loop used by the synchronous API and the CLI. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "loop/loop_priv.h"

/*
 * The watches of one poll call, dispatched one by one. Each keel_loop_run has its own, since runs
 * nest (a callback may call a synchronous function on the same loop).
 */
typedef struct batch {
    struct pollfd *pfds;
    keel_watch **polled; /* the watch behind each pollfd; NULL once stopped during the batch */
    size_t n, cap;
    struct batch *outer;
} batch;

/* The registry of live watches and armed timers; callbacks may change it while we dispatch. */
struct keel__blocking {
    keel_watch **watches;
    size_t nwatches, cap_watches;
    keel_timer **timers;
    size_t ntimers, cap_timers;
    batch *batches; /* those being dispatched, innermost first */
    uintptr_t pass; /* counts passes over the timers; a timer's host data is its arming pass */
};

static int ptr_index(void **arr, size_t n, const void *p) {
    for (size_t i = 0; i < n; i++)
        if (arr[i] == p)
            return (int)i;
    return -1;
}

static int ptr_add(void ***arr, size_t *n, size_t *cap, void *p) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void **a = realloc(*arr, c * sizeof *a);
        if (!a)
            return -1;
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = p;
    return 0;
}

static void ptr_remove(void **arr, size_t *n, int i) {
    arr[i] = arr[*n - 1];
    (*n)--;
}

static int blocking_watch(void *host, keel_watch *w, int fd, int events) {
    struct keel__blocking *b = host;
    (void)fd;
    int i = ptr_index((void **)b->watches, b->nwatches, w);
    if (events == 0) {
        if (i >= 0)
            ptr_remove((void **)b->watches, &b->nwatches, i);
        /* Readiness already collected for w is void: w may be freed next, and a watch created
         * later in the batch may get its address. */
        for (batch *bt = b->batches; bt; bt = bt->outer)
            for (size_t k = 0; k < bt->n; k++)
                if (bt->polled[k] == w)
                    bt->polled[k] = NULL;
        return 0;
    }
    if (i >= 0)
        return 0; /* the events themselves live in w */
    return ptr_add((void ***)&b->watches, &b->nwatches, &b->cap_watches, w);
}

static int blocking_timer(void *host, keel_timer *t, int64_t deadline) {
    struct keel__blocking *b = host;
    int i = ptr_index((void **)b->timers, b->ntimers, t);
    if (deadline < 0) {
        if (i >= 0)
            ptr_remove((void **)b->timers, &b->ntimers, i);
        return 0;
    }
    keel_timer_set_host_data(t, (void *)b->pass);
    if (i >= 0)
        return 0;
    return ptr_add((void ***)&b->timers, &b->ntimers, &b->cap_timers, t);
}

keel_loop *keel_loop_new_blocking(void) {
    struct keel__blocking *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    static const keel_loop_ops ops = { blocking_watch, blocking_timer };
    keel_loop *loop = keel_loop_new(&ops, b);
    if (!loop) {
        free(b);
        return NULL;
    }
    loop->blocking = b;
    return loop;
}

void keel__blocking_free(struct keel__blocking *b) {
    if (!b)
        return;
    free(b->watches);
    free(b->timers);
    free(b);
}

/*
 * Fires every timer whose deadline has passed and that was armed before this pass; returns how
 * many fired. A timer armed by a callback of the pass (a deferred call scheduling itself again)
 * waits for the next pass, after a poll, so that it cannot keep the watches from being served.
 */
static int fire_due_timers(struct keel__blocking *b) {
    int fired = 0;
    uintptr_t pass = ++b->pass;
    for (;;) {
        int64_t now = keel_now_ms();
        keel_timer *due = NULL;
        for (size_t i = 0; i < b->ntimers; i++) {
            if (b->timers[i]->deadline <= now &&
                (uintptr_t)keel_timer_get_host_data(b->timers[i]) != pass) {
                due = b->timers[i];
                ptr_remove((void **)b->timers, &b->ntimers, (int)i);
                break;
            }
        }
        if (!due)
            return fired;
        fired++;
        keel_timer_fire(due); /* may free or re-arm timers: hence the rescan */
    }
}

/* Polls the watches once (waiting at most until the next timer, and until deadline_ms when it is
 * not negative) and dispatches what is ready. */
static keel_status poll_once(struct keel__blocking *b, batch *bt, int64_t deadline_ms) {
    if (bt->cap < b->nwatches) {
        struct pollfd *p = realloc(bt->pfds, b->nwatches * sizeof *p);
        if (!p)
            return KEEL_ERR_NOMEM;
        bt->pfds = p;
        keel_watch **q = realloc(bt->polled, b->nwatches * sizeof *q);
        if (!q)
            return KEEL_ERR_NOMEM;
        bt->polled = q;
        bt->cap = b->nwatches;
    }
    size_t n = b->nwatches;
    for (size_t i = 0; i < n; i++) {
        keel_watch *w = b->watches[i];
        bt->polled[i] = w;
        bt->pfds[i].fd = w->fd;
        bt->pfds[i].events = (short)(((w->events & KEEL_READ) ? POLLIN : 0) |
                                     ((w->events & KEEL_WRITE) ? POLLOUT : 0));
        bt->pfds[i].revents = 0;
    }
    int timeout = -1;
    int64_t now = keel_now_ms();
    for (size_t i = 0; i < b->ntimers; i++) {
        int64_t left = b->timers[i]->deadline - now;
        if (left < 0)
            left = 0;
        if (timeout < 0 || left < timeout)
            timeout = left > 1000000 ? 1000000 : (int)left;
    }
    if (deadline_ms >= 0) {
        int64_t left = deadline_ms > now ? deadline_ms - now : 0;
        if (timeout < 0 || left < timeout)
            timeout = left > 1000000 ? 1000000 : (int)left;
    }
    int rc = poll(bt->pfds, n, timeout);
    if (rc < 0)
        return errno == EINTR ? KEEL_OK : KEEL_ERR_IO;
    bt->n = n;
    for (size_t i = 0; i < n && rc > 0; i++) {
        short re = bt->pfds[i].revents;
        if (!re)
            continue;
        rc--;
        /* NULL when an earlier callback of this batch stopped (and maybe freed) the watch. */
        keel_watch *w = bt->polled[i];
        if (!w)
            continue;
        int ev = 0;
        if (re & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
            ev |= KEEL_READ;
        if (re & (POLLOUT | POLLHUP | POLLERR | POLLNVAL))
            ev |= KEEL_WRITE;
        keel_watch_ready(w, ev);
    }
    bt->n = 0;
    return KEEL_OK;
}

/* Polls and dispatches until *done, until deadline_ms has passed (when it is not negative; after
 * one poll at least), or until the loop cannot go on. */
static keel_status run_until(struct keel__blocking *b, const int *done, int64_t deadline_ms) {
    batch bt = { .outer = b->batches };
    b->batches = &bt;
    keel_status st = KEEL_OK;
    int polled = 0;
    while (!*done && st == KEEL_OK) {
        if (fire_due_timers(b) && *done)
            break;
        if (polled && deadline_ms >= 0 && keel_now_ms() >= deadline_ms)
            break;
        if (b->nwatches == 0 && b->ntimers == 0)
            st = KEEL_ERR_INTERNAL;
        else
            st = poll_once(b, &bt, deadline_ms);
        polled = 1;
    }
    b->batches = bt.outer;
    free(bt.pfds);
    free(bt.polled);
    return st;
}

keel_status keel_loop_run(keel_loop *loop, const int *done) {
    return keel_loop_run_until(loop, done, -1);
}

keel_status keel_loop_run_until(keel_loop *loop, const int *done, int64_t deadline_ms) {
    if (!loop || !loop->blocking || !done)
        return KEEL_ERR_INVALID_ARGUMENT;
    /* A db closed from inside one of the callbacks frees its private loop meanwhile: counted
     * as in use, the loop is freed only as the last run on it returns. */
    loop->running++;
    keel_status st = run_until(loop->blocking, done, deadline_ms);
    loop->running--;
    keel__loop_free_if_pending(loop);
    return st;
}
