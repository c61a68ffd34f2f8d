/* tests/c/support/epoll_host.c - an epoll host loop for keel, written from keel/loop.h alone. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "support/epoll_host.h"

typedef struct epoll_host_wrec {
    keel_watch *w;
    int fd;
    int events; /* what epoll watches for w */
    int dead;   /* stopped: readiness collected for it is void */
    struct epoll_host_wrec *next_dead;
} wrec;

typedef struct epoll_host_trec {
    keel_timer *t;
    int64_t deadline;
    int armed;
    unsigned gen; /* changes with every arming: a firing collected before it is void */
    int dead;
    size_t slot; /* index in host.timers */
    struct epoll_host_trec *next_dead;
} trec;

typedef epoll_host host;
typedef epoll_host_app_timer app_timer;

static void violation(host *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  host: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    h->violations++;
}

/* The header: ops come on the loop thread, and never from inside another op. */
static void enter_op(host *h, const char *op) {
    if (!pthread_equal(pthread_self(), h->thread))
        violation(h, "%s called off the loop thread", op);
    if (h->in_op)
        violation(h, "%s called from inside another op", op);
    h->in_op++;
}

static void leave_op(host *h) { h->in_op--; }

/* Counts an arming call; true when it is the one to refuse. */
static int refuse(host *h) {
    if (++h->armings != h->fail_at)
        return 0;
    h->refused++;
    return 1;
}

static void bury_watch(host *h, wrec *r) {
    if (!h->dispatching) {
        free(r);
        return;
    }
    r->next_dead = h->dead_w;
    h->dead_w = r;
}

static void bury_timer(host *h, trec *r) {
    if (!h->dispatching) {
        free(r);
        return;
    }
    r->next_dead = h->dead_t;
    h->dead_t = r;
}

static int fd_slot(host *h, int fd) {
    if (fd < 0)
        return -1;
    if ((size_t)fd >= h->cap_fd) {
        size_t cap = (size_t)fd + 64;
        wrec **a = realloc(h->byfd, cap * sizeof *a);
        if (!a)
            return -1;
        memset(a + h->cap_fd, 0, (cap - h->cap_fd) * sizeof *a);
        h->byfd = a;
        h->cap_fd = cap;
    }
    return 0;
}

static int h_watch(void *hp, keel_watch *w, int fd, int events) {
    host *h = hp;
    enter_op(h, "watch");
    h->watch_calls++;
    int rc = 0;
    wrec *r = keel_watch_get_host_data(w);
    if (events == 0) {
        /* A stop for a watch we kept nothing for (its registration failed) is ignored. */
        if (r) {
            /* The descriptor may be closed already, or its number taken by a new socket. */
            if (epoll_ctl(h->ep, EPOLL_CTL_DEL, r->fd, NULL) != 0 && errno != EBADF &&
                errno != ENOENT)
                violation(h, "EPOLL_CTL_DEL fd %d: %s", r->fd, strerror(errno));
            if ((size_t)r->fd < h->cap_fd && h->byfd[r->fd] == r)
                h->byfd[r->fd] = NULL;
            keel_watch_set_host_data(w, NULL);
            r->dead = 1;
            h->live_w--;
            bury_watch(h, r);
        }
        goto out;
    }
    if (events & ~(KEEL_READ | KEEL_WRITE))
        violation(h, "watch with unknown events %d", events);
    if (refuse(h)) {
        rc = -1;
        goto out;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = ((events & KEEL_READ) ? EPOLLIN : 0) | ((events & KEEL_WRITE) ? EPOLLOUT : 0);
    if (!r) {
        if (fd_slot(h, fd) != 0) {
            rc = -1;
            goto out;
        }
        if (h->byfd[fd])
            violation(h, "two live watches on fd %d", fd);
        r = calloc(1, sizeof *r);
        if (!r) {
            rc = -1;
            goto out;
        }
        r->w = w;
        r->fd = fd;
        ev.data.ptr = r;
        if (epoll_ctl(h->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            if (errno == EEXIST)
                violation(h, "fd %d is still registered for another watch", fd);
            free(r);
            rc = -1;
            goto out;
        }
        keel_watch_set_host_data(w, r);
        h->byfd[fd] = r;
        h->live_w++;
    } else {
        if (fd != r->fd)
            violation(h, "watch moved from fd %d to %d", r->fd, fd);
        if (events == r->events)
            violation(h, "watch called without a change of events");
        ev.data.ptr = r;
        if (epoll_ctl(h->ep, EPOLL_CTL_MOD, r->fd, &ev) != 0) {
            rc = -1;
            goto out;
        }
    }
    r->events = events;
out:
    leave_op(h);
    return rc;
}

static int h_timer(void *hp, keel_timer *t, int64_t deadline) {
    host *h = hp;
    enter_op(h, "timer");
    h->timer_calls++;
    int rc = 0;
    trec *r = keel_timer_get_host_data(t);
    if (deadline < 0) {
        if (r) {
            h->timers[r->slot] = h->timers[--h->ntimers];
            h->timers[r->slot]->slot = r->slot;
            keel_timer_set_host_data(t, NULL);
            r->dead = 1;
            h->live_t--;
            bury_timer(h, r);
        }
        goto out;
    }
    if (refuse(h)) {
        /* A refused arming leaves the timer disarmed, as loop.h asks. */
        if (r)
            r->armed = 0;
        rc = -1;
        goto out;
    }
    if (!r) {
        if (h->ntimers == h->cap_timers) {
            size_t cap = h->cap_timers ? h->cap_timers * 2 : 16;
            trec **a = realloc(h->timers, cap * sizeof *a);
            if (!a) {
                rc = -1;
                goto out;
            }
            h->timers = a;
            h->cap_timers = cap;
        }
        r = calloc(1, sizeof *r);
        if (!r) {
            rc = -1;
            goto out;
        }
        r->t = t;
        r->slot = h->ntimers;
        h->timers[h->ntimers++] = r;
        keel_timer_set_host_data(t, r);
        h->live_t++;
    }
    r->deadline = deadline;
    r->armed = 1;
    r->gen++;
out:
    leave_op(h);
    return rc;
}

int epoll_host_init(host *h) {
    memset(h, 0, sizeof *h);
    h->thread = pthread_self();
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    return h->ep >= 0 ? 0 : -1;
}

/* Records still live are left alone: keel should have stopped or disarmed them all, and
 * LeakSanitizer reports those it did not. */
void epoll_host_free(host *h) {
    free(h->timers);
    free(h->byfd);
    free(h->apps);
    close(h->ep);
}

void epoll_host_after(host *h, int64_t ms, void (*fn)(void *), void *arg) {
    if (h->napps == h->cap_apps) {
        size_t cap = h->cap_apps ? h->cap_apps * 2 : 16;
        app_timer *a = realloc(h->apps, cap * sizeof *a);
        if (!a) {
            violation(h, "out of memory");
            return;
        }
        h->apps = a;
        h->cap_apps = cap;
    }
    h->apps[h->napps++] = (app_timer){ keel_now_ms() + ms, fn, arg };
}

typedef struct due_timer {
    trec *r;
    unsigned gen;
} due_timer;

void epoll_host_turn(host *h, int max_ms) {
    int64_t now = keel_now_ms();
    int64_t next = now + max_ms;
    for (size_t i = 0; i < h->ntimers; i++)
        if (h->timers[i]->armed && h->timers[i]->deadline < next)
            next = h->timers[i]->deadline;
    for (size_t i = 0; i < h->napps; i++)
        if (h->apps[i].at < next)
            next = h->apps[i].at;
    struct epoll_event evs[16];
    int n = epoll_wait(h->ep, evs, 16, next > now ? (int)(next - now) : 0);
    if (n < 0) {
        if (errno != EINTR)
            violation(h, "epoll_wait: %s", strerror(errno));
        n = 0;
    }
    h->dispatching = 1;
    for (int i = 0; i < n; i++) {
        wrec *r = evs[i].data.ptr;
        if (r->dead) { /* stopped (and maybe freed by keel) by an earlier dispatch */
            h->stale_skipped++;
            continue;
        }
        uint32_t e = evs[i].events;
        int ready = ((e & EPOLLIN) ? KEEL_READ : 0) | ((e & EPOLLOUT) ? KEEL_WRITE : 0);
        if (e & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
            ready |= r->events;
        ready &= r->events;
        if (ready) {
            h->readies++;
            keel_watch_ready(r->w, ready);
        }
    }
    /* Due timers, collected first; each is checked again before it fires. */
    now = keel_now_ms();
    size_t ndue = 0;
    due_timer *due = h->ntimers ? malloc(h->ntimers * sizeof *due) : NULL;
    for (size_t i = 0; due && i < h->ntimers; i++)
        if (h->timers[i]->armed && h->timers[i]->deadline <= now)
            due[ndue++] = (due_timer){ h->timers[i], h->timers[i]->gen };
    for (size_t i = 0; i < ndue; i++) {
        trec *r = due[i].r;
        if (r->dead || !r->armed || r->gen != due[i].gen) {
            h->stale_skipped++;
            continue;
        }
        r->armed = 0; /* fired: the record stays until keel disarms the timer */
        h->fires++;
        keel_timer_fire(r->t);
    }
    free(due);
    for (size_t i = 0; i < h->napps;) {
        if (h->apps[i].at > now) {
            i++;
            continue;
        }
        app_timer a = h->apps[i];
        h->apps[i] = h->apps[--h->napps];
        a.fn(a.arg);
    }
    h->dispatching = 0;
    while (h->dead_w) {
        wrec *r = h->dead_w;
        h->dead_w = r->next_dead;
        free(r);
    }
    while (h->dead_t) {
        trec *r = h->dead_t;
        h->dead_t = r->next_dead;
        free(r);
    }
}

int epoll_host_run_until(host *h, const int *flag, int64_t limit_ms) {
    int64_t end = keel_now_ms() + limit_ms;
    while (!*flag) {
        if (keel_now_ms() > end)
            return -1;
        epoll_host_turn(h, 100);
    }
    return 0;
}

const keel_loop_ops epoll_host_ops = { h_watch, h_timer };
