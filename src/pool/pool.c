/* src/pool/pool.c - a pool of connections to one database: FIFO waiters, timeouts, clean returns. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/db_int.h"
#include "core/error_int.h"
#include "core/result_int.h"
#include "loop/defer.h"
#include "pool/pool.h"

/* A queued acquire request. */
typedef struct waiter {
    keel_acquire_cb cb;
    void *arg;
    int64_t deadline;
    int64_t queued_us; /* when it was queued (keel__now_us), for the acquire-wait percentiles */
    struct waiter *next;
} waiter;

/* A keel_db_warm request: done when every connect it started has finished. */
struct keel__warm {
    keel_acquire_cb cb;
    void *arg;
    size_t pending;
    keel_error error; /* the first connect error, code KEEL_OK when none */
    struct keel__warm *next;
};

/* The acquire-wait percentiles are over this many of the latest served acquires: recent enough
 * to show a pool that is short now, enough for a p99 that is not just the maximum. */
#define WAIT_WINDOW 1024

struct keel__pool {
    keel_db *db;
    keel_loop *loop;
    const keel__dbconfig *cfg;
    const keel__engine *engine;
    keel_conn *conns; /* every connection, any state, linked through prev/next */
    size_t nconns;
    size_t nconnecting;
    size_t nleased;
    keel_conn **idle; /* a stack: the most recently used connection is reused first */
    size_t nidle, cap_idle;
    waiter *wait_head, *wait_tail;
    size_t nwaiting;
    struct keel__warm *warms;
    keel_timer *timeout_timer; /* armed at the head waiter's deadline */
    keel__defer *dispatch;     /* serves waiters from the loop, outside any caller's stack */
    int timeout_armed_at_valid;
    int64_t timeout_armed_at;
    keel_error last_error; /* the last connect failure, for timeout messages */
    /* Back-off after failed connects: no connect starts before next_connect_at. */
    int64_t backoff_ms; /* the current delay; 0 while the last connect worked */
    int64_t next_connect_at;
    keel_timer *retry_timer;  /* serves waiters again when the back-off is over */
    uint64_t rng;             /* jitter of the delays and of max_lifetime */
    size_t nchecking;         /* connections being pinged for waiters (ping_after_idle) */
    keel_timer *reap_timer;   /* closes connections idle too long or too old */
    int64_t reap_at;          /* when reap_timer is armed for; INT64_MAX when it is not */
    int refill;               /* connections closed for their age are to be replaced */
    int64_t idle_ms, life_ms; /* idle_timeout and max_lifetime; 0 when they do not apply */
    /* Totals since the pool was made, for keel_db_pool_stats. */
    uint64_t connects, connect_failures, acquires, acquire_timeouts;
    /* How long the last WAIT_WINDOW served acquires waited, in microseconds: a ring that
     * nwaits (every wait recorded) indexes. */
    int64_t waits_us[WAIT_WINDOW];
    uint64_t nwaits;
};

/* A ping_after_idle check may take connect_timeout, or PING_DEADLINE_S when none is set: a
 * server that answers a connect in that time answers a ping. */
#define PING_DEADLINE_S 10.0

/*
 * After a failed connect the pool waits before it starts another one: 50 ms, doubling with each
 * failure in a row up to 2 s, reset by a connect that works. Without it a connect that fails at
 * once (a secret file that does not exist) and a caller that asks again from its callback would
 * keep the loop busy connecting; with it the attempts stay a few per second whatever callers do.
 */
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000

/*
 * How long keel waits for the server's answer to a cancel before it closes the connection: the
 * timeout of the operation again, at most GRACE_MAX_S after a deadline, and CANCEL_GRACE_S
 * after a cancel of the caller's or a release when the operation has no deadline. A server that
 * is alive answers a cancel in a round trip; one that says nothing for that long is taken for
 * gone (a hung host, a network dropping packets), and nothing can be done with its connection.
 */
#define GRACE_MAX_S 1.0
#define CANCEL_GRACE_S 10.0

/* The rollback of a connection released inside a transaction may take command_timeout, or
 * RESET_DEADLINE_S when none is set; a connection that has not rolled back by then is closed. */
#define RESET_DEADLINE_S 10.0

static void dispatch(void *arg);
static void on_timeout(void *arg);
static void reap(void *arg);

/* Milliseconds of a duration setting; 0 stays 0 (disabled). */
static int64_t setting_ms(double seconds) { return (int64_t)(seconds * 1000.0 + 0.5); }

keel__pool *keel__pool_new(keel_db *db, keel_loop *loop, const keel__dbconfig *cfg,
                           const keel__engine *engine) {
    keel__pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->db = db;
    p->loop = loop;
    p->cfg = cfg;
    p->engine = engine;
    p->timeout_timer = keel__timer_new(loop, on_timeout, p);
    p->dispatch = keel__defer_new(loop, dispatch, p);
    p->retry_timer = keel__timer_new(loop, dispatch, p);
    p->reap_timer = keel__timer_new(loop, reap, p);
    p->reap_at = INT64_MAX;
    if (!p->timeout_timer || !p->dispatch || !p->retry_timer || !p->reap_timer) {
        keel__timer_free(p->timeout_timer);
        keel__defer_free(p->dispatch);
        keel__timer_free(p->retry_timer);
        keel__timer_free(p->reap_timer);
        free(p);
        return NULL;
    }
    /* An SQLite database in memory lives only while one of its connections is open: closing
     * idle or old connections could drop it with its data, so they are kept. */
    int in_memory = strcmp(engine->name, "sqlite") == 0 && cfg->database &&
                    strcmp(cfg->database, ":memory:") == 0;
    p->idle_ms = in_memory ? 0 : setting_ms(cfg->idle_timeout);
    p->life_ms = in_memory ? 0 : setting_ms(cfg->max_lifetime);
    /* Pools that fail together (one database down for many processes) retry apart. */
    p->rng = ((uint64_t)(uintptr_t)p ^ ((uint64_t)getpid() << 32) ^ (uint64_t)keel_now_ms()) | 1;
    return p;
}

const char *keel__pool_name(const keel__pool *p) { return p->cfg->name; }

/*
 * Serves the waiters from the next loop turn. Returns -1 when the loop refused the deferred call;
 * the waiters are then served by the acquire timeout's timer (on_timeout dispatches first).
 */
static int schedule_dispatch(keel__pool *p) { return keel__defer_schedule(p->dispatch); }

static void link_conn(keel__pool *p, keel_conn *c) {
    c->prev = NULL;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
}

static void unlink_conn(keel__pool *p, keel_conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    p->nconns--;
}

static int push_idle(keel__pool *p, keel_conn *c) {
    if (p->nidle == p->cap_idle) {
        size_t cap = p->cap_idle ? p->cap_idle * 2 : 8;
        keel_conn **a = realloc(p->idle, cap * sizeof *a);
        if (!a)
            return -1;
        p->idle = a;
        p->cap_idle = cap;
    }
    c->state = KEEL__CONN_IDLE;
    c->last_used_ms = keel_now_ms();
    p->idle[p->nidle++] = c;
    return 0;
}

static void remove_idle_at(keel__pool *p, size_t i) {
    memmove(p->idle + i, p->idle + i + 1, (p->nidle - i - 1) * sizeof *p->idle);
    p->nidle--;
}

static void remove_idle(keel__pool *p, keel_conn *c) {
    for (size_t i = 0; i < p->nidle; i++) {
        if (p->idle[i] == c) {
            remove_idle_at(p, i);
            return;
        }
    }
}

static void slices_drop(keel_conn *c);
static void on_deadline(void *arg);
static int deadline_arm(keel_conn *c, int what, double seconds);

/* Frees a connection handle's own memory (the engine state is already gone). */
static void free_shell(keel_conn *c) {
    slices_drop(c);
    keel__timer_free(c->deadline);
    keel__buf_free(&c->sql);
    free(c->map);
    free(c);
}

/* Closes a connection that is not leased and forgets it. */
static void destroy(keel__pool *p, keel_conn *c) {
    if (c->state == KEEL__CONN_CHECKING)
        p->nchecking--;
    unlink_conn(p, c);
    c->engine->close(c);
    c->impl = NULL;
    free_shell(c);
}

/* A draw in [0, n) from the pool's own xorshift64* generator. */
static uint64_t pool_random(keel__pool *p, uint64_t n) {
    uint64_t x = p->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    return (x * 0x2545F4914F6CDD1DULL) % n;
}

static void lease(keel__pool *p, keel_conn *c, int64_t waited_us) {
    c->state = KEEL__CONN_LEASED;
    c->release_pending = 0;
    c->cancel_requested = 0;
    c->timeout = KEEL_TIMEOUT_CONFIGURED;
    p->nleased++;
    p->acquires++;
    p->waits_us[p->nwaits++ % WAIT_WINDOW] = waited_us;
}

/* True when the idle connection c must be pinged before it is leased (ping_after_idle). */
static int needs_ping(const keel__pool *p, const keel_conn *c, int64_t now) {
    int64_t after = setting_ms(p->cfg->ping_after_idle);
    return after > 0 && now - c->last_used_ms >= after;
}

/* Makes the reaper run at when, or earlier if it is armed for earlier already. A loop that
 * refuses the timer leaves idle connections open longer, which is harmless. */
static void reap_schedule(keel__pool *p, int64_t when) {
    if (when >= p->reap_at)
        return;
    if (keel__timer_arm(p->reap_timer, when) == 0)
        p->reap_at = when;
}

static waiter *pop_waiter(keel__pool *p) {
    waiter *w = p->wait_head;
    if (w) {
        p->wait_head = w->next;
        if (!p->wait_head)
            p->wait_tail = NULL;
        p->nwaiting--;
    }
    return w;
}

/* Completes the oldest waiter with an error (the database name is filled in). */
static void fail_head_waiter(keel__pool *p, const keel_error *err) {
    waiter *w = pop_waiter(p);
    if (!w)
        return;
    keel_error e = *err;
    if (!e.database[0])
        keel__error_set(&e, e.code, e.engine[0] ? e.engine : NULL, p->cfg->name, "%s",
                        err->message);
    if (err->sqlstate[0])
        keel__error_set_sqlstate(&e, err->sqlstate);
    keel_acquire_cb cb = w->cb;
    void *arg = w->arg;
    free(w);
    cb(NULL, &e, arg);
}

/* Starts one new connection. On a synchronous failure err is filled and nothing is kept. */
static keel_status start_connect(keel__pool *p, struct keel__warm *warm, keel_error *err) {
    keel_conn *c = calloc(1, sizeof *c);
    if (!c)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, p->cfg->name, "out of memory");
    c->pool = p;
    c->engine = p->engine;
    c->config = p->cfg;
    c->loop = p->loop;
    c->state = KEEL__CONN_CONNECTING;
    c->busy = 1;
    c->created_ms = keel_now_ms();
    c->expires_ms = INT64_MAX;
    int64_t life = p->life_ms;
    /* Up to a tenth shorter, so that connections opened together are not all replaced at once,
     * and none lives longer than max_lifetime. */
    if (life > 0)
        c->expires_ms = c->created_ms + life - (int64_t)pool_random(p, (uint64_t)(life / 10) + 1);
    c->warm = warm;
    keel_status st = p->engine->connect(c, err);
    if (st != KEEL_OK) {
        p->connect_failures++;
        /* The engine may have allocated state before failing; close releases it. */
        if (c->impl)
            p->engine->close(c);
        free_shell(c);
        return st;
    }
    link_conn(p, c);
    p->nconnecting++;
    if (warm)
        warm->pending++;
    return KEEL_OK;
}

/*
 * A connect failed: the next one waits a random part (half to all) of the grown delay. Failures
 * of connects started together (one per waiter) grow it once: those that end while the wait
 * they caused is running leave it as it is.
 */
static void backoff_grow(keel__pool *p) {
    int64_t now = keel_now_ms();
    if (now < p->next_connect_at)
        return;
    int64_t d = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    p->backoff_ms = d;
    p->next_connect_at = now + d / 2 + (int64_t)pool_random(p, (uint64_t)(d - d / 2) + 1);
}

static void backoff_reset(keel__pool *p) {
    p->backoff_ms = 0;
    p->next_connect_at = 0;
}

/* Arms the timeout at the head waiter's deadline; -1 when the loop refused the timer. */
static int rearm_timeout(keel__pool *p) {
    if (!p->wait_head) {
        if (p->timeout_armed_at_valid) {
            keel__timer_arm(p->timeout_timer, -1);
            p->timeout_armed_at_valid = 0;
        }
        return 0;
    }
    int64_t deadline = p->wait_head->deadline;
    if (p->timeout_armed_at_valid && p->timeout_armed_at == deadline)
        return 0;
    if (keel__timer_arm(p->timeout_timer, deadline) != 0) {
        p->timeout_armed_at_valid = 0;
        return -1;
    }
    p->timeout_armed_at = deadline;
    p->timeout_armed_at_valid = 1;
    return 0;
}

/*
 * Arms the acquire timeout, from the loop. Without its timer a waiter the pool cannot serve would
 * wait forever: when the loop refuses it, every waiter fails now.
 */
static void rearm_timeout_or_fail(keel__pool *p) {
    if (rearm_timeout(p) == 0)
        return;
    keel_error e;
    keel__error_set(&e, KEEL_ERR_INTERNAL, NULL, p->cfg->name,
                    "the event loop refused the timer of the acquire timeout");
    /* Only the waiters queued now: a callback that asks again is served from a later turn. */
    for (size_t n = p->nwaiting; n > 0; n--)
        fail_head_waiter(p, &e);
}

/*
 * Puts a clean connection among the idle ones and arms the reaper for it, or closes it when it
 * is past its max_lifetime (the reaper replaces it up to min_size) or cannot be kept.
 */
static void keep_idle(keel__pool *p, keel_conn *c) {
    int64_t now = keel_now_ms();
    if (now >= c->expires_ms) {
        destroy(p, c);
        p->refill = 1;
        reap_schedule(p, now);
        return;
    }
    if (push_idle(p, c) != 0) {
        destroy(p, c);
        return;
    }
    int64_t due = c->expires_ms, idle = p->idle_ms;
    if (idle > 0 && p->nconns > p->cfg->min_size && now + idle < due)
        due = now + idle;
    if (due != INT64_MAX)
        reap_schedule(p, due);
}

/*
 * Pings the idle connection c (taken off the idle stack) for the waiters: keel__conn_complete
 * puts it back on top when it answers, and closes it otherwise, so that a new connection is
 * opened for them. Returns -1 (c closed) when the ping cannot start.
 */
static int start_check(keel__pool *p, keel_conn *c) {
    keel_error err;
    c->state = KEEL__CONN_CHECKING;
    c->busy = 1;
    c->cb = NULL;
    c->rows_cb = NULL;
    p->nchecking++;
    double limit = c->config->connect_timeout > 0 ? c->config->connect_timeout : PING_DEADLINE_S;
    if (c->engine->ping(c, &err) != KEEL_OK) {
        c->busy = 0;
        destroy(p, c);
        return -1;
    }
    /* Without its deadline a ping the server never answers would hold the connection; the
     * reset deadline closes it, and the waiters get another. */
    if (deadline_arm(c, KEEL__DEADLINE_RESET, limit) != 0)
        c->engine->cancel(c);
    return 0;
}

/* Serves waiters with idle connections, finishes warms, opens connections that are needed. */
static void dispatch(void *arg) {
    keel__pool *p = arg;
    /* Each waiter not covered by a ping in flight gets an idle connection: one past its
     * max_lifetime is closed, one idle past ping_after_idle is pinged first. */
    while (p->nwaiting > p->nchecking && p->nidle) {
        keel_conn *c = p->idle[--p->nidle];
        int64_t now = keel_now_ms();
        if (now >= c->expires_ms) {
            destroy(p, c);
            p->refill = 1;
            reap_schedule(p, now);
            continue;
        }
        if (needs_ping(p, c, now)) {
            (void)start_check(p, c);
            continue;
        }
        waiter *w = pop_waiter(p);
        lease(p, c, keel__now_us() - w->queued_us);
        keel_acquire_cb cb = w->cb;
        void *cb_arg = w->arg;
        free(w);
        cb(c, NULL, cb_arg);
    }
    /* Finished warms, in the order they were made. */
    struct keel__warm **link = &p->warms;
    while (*link) {
        struct keel__warm *wm = *link;
        if (wm->pending) {
            link = &wm->next;
            continue;
        }
        *link = wm->next;
        keel_error e = wm->error;
        keel_acquire_cb cb = wm->cb;
        void *cb_arg = wm->arg;
        free(wm);
        cb(NULL, e.code == KEEL_OK ? NULL : &e, cb_arg);
    }
    /* Each waiter not covered by a connect in flight gets one, while the pool has room. A connect
     * that fails at once fails the oldest waiter with its error; the next one waits for the
     * back-off, from the loop. */
    while (p->nwaiting > p->nconnecting + p->nchecking && p->nconns < p->cfg->max_size) {
        if (keel_now_ms() < p->next_connect_at) {
            if (keel__timer_arm(p->retry_timer, p->next_connect_at) == 0)
                break;
            /* Nothing would start the next attempt: the waiters it was for get the error of
             * the last one now (only those: a callback that asks again is served from the
             * dispatch its request schedules). */
            for (size_t n = p->nwaiting - p->nconnecting - p->nchecking; n > 0; n--)
                fail_head_waiter(p, &p->last_error);
            break;
        }
        keel_error err;
        keel_error_clear(&err);
        if (start_connect(p, NULL, &err) != KEEL_OK) {
            p->last_error = err;
            backoff_grow(p);
            fail_head_waiter(p, &err);
        }
    }
    rearm_timeout_or_fail(p);
}

static void on_timeout(void *arg) {
    keel__pool *p = arg;
    p->timeout_armed_at_valid = 0;
    /* Waiters an idle connection can serve get it, when the loop refused the deferred dispatch
     * that should have served them. */
    if (p->wait_head && p->nidle)
        dispatch(p);
    int64_t now = keel_now_ms();
    while (p->wait_head && p->wait_head->deadline <= now) {
        waiter *w = pop_waiter(p);
        p->acquire_timeouts++;
        keel_error e;
        keel__error_set(&e, KEEL_ERR_POOL_TIMEOUT, NULL, p->cfg->name,
                        "timed out after %.3g s waiting for a connection to database '%s' "
                        "(pool max_size %zu, %zu in use, %zu waiting)%s%s",
                        p->cfg->acquire_timeout, p->cfg->name, p->cfg->max_size, p->nleased,
                        p->nwaiting, p->last_error.code != KEEL_OK ? "; last connect error: " : "",
                        p->last_error.code != KEEL_OK ? p->last_error.message : "");
        keel_acquire_cb cb = w->cb;
        void *cb_arg = w->arg;
        free(w);
        cb(NULL, &e, cb_arg);
    }
    rearm_timeout_or_fail(p);
}

keel_status keel__pool_acquire(keel__pool *p, keel_acquire_cb cb, void *arg, keel_error *err) {
    /* max_waiters bounds the requests that wait for a release: those beyond what the idle
     * connections, the connects and pings in flight and the room left in the pool cover. */
    if (p->cfg->max_waiters != SIZE_MAX) {
        size_t covered = p->nidle + p->nconnecting + p->nchecking +
                         (p->cfg->max_size > p->nconns ? p->cfg->max_size - p->nconns : 0);
        /* This request would be one more beyond what is covered. */
        if (p->nwaiting >= covered && p->nwaiting - covered >= p->cfg->max_waiters) {
            p->acquire_timeouts++;
            return keel__error_set(err, KEEL_ERR_POOL_TIMEOUT, NULL, p->cfg->name,
                                   "the queue of requests waiting for a connection to database "
                                   "'%s' is full (pool max_waiters %zu; max_size %zu, %zu in "
                                   "use, %zu waiting)",
                                   p->cfg->name, p->cfg->max_waiters, p->cfg->max_size, p->nleased,
                                   p->nwaiting);
        }
    }
    /* The waiter is served from the dispatch: without it, it would wait for an unrelated event
     * (or forever), so a loop that refuses the dispatch's timer fails the call instead. */
    if (keel__defer_schedule(p->dispatch) != 0)
        return keel__error_set(err, KEEL_ERR_INTERNAL, NULL, p->cfg->name,
                               "the event loop refused a timer");
    waiter *w = malloc(sizeof *w);
    if (!w)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, p->cfg->name, "out of memory");
    w->cb = cb;
    w->arg = arg;
    w->deadline = keel_now_ms() + (int64_t)(p->cfg->acquire_timeout * 1000.0);
    w->queued_us = keel__now_us();
    w->next = NULL;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwaiting++;
    return KEEL_OK;
}

keel_status keel__pool_try_acquire(keel__pool *p, keel_conn **out, keel_error *err) {
    /* A connection that is too old or must be pinged first is for keel__pool_acquire. */
    int64_t now = keel_now_ms();
    if (p->wait_head || p->nidle == 0 || now >= p->idle[p->nidle - 1]->expires_ms ||
        needs_ping(p, p->idle[p->nidle - 1], now))
        return keel__error_set(err, KEEL_ERR_BUSY, NULL, p->cfg->name,
                               "no idle connection to database '%s' ready right now", p->cfg->name);
    keel_conn *c = p->idle[--p->nidle];
    lease(p, c, 0);
    *out = c;
    return KEEL_OK;
}

int keel__pool_acquire_cancel(keel__pool *p, keel_acquire_cb cb, void *arg) {
    waiter *prev = NULL;
    for (waiter *w = p->wait_head; w; prev = w, w = w->next) {
        if (w->cb != cb || w->arg != arg)
            continue;
        if (prev)
            prev->next = w->next;
        else
            p->wait_head = w->next;
        if (p->wait_tail == w)
            p->wait_tail = prev;
        p->nwaiting--;
        free(w);
        /* The head may have changed: the timeout follows the new head's deadline. */
        rearm_timeout(p);
        return 1;
    }
    return 0;
}

keel_status keel__pool_warm(keel__pool *p, keel_acquire_cb cb, void *arg, keel_error *err) {
    struct keel__warm *wm = calloc(1, sizeof *wm);
    if (!wm)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, p->cfg->name, "out of memory");
    wm->cb = cb;
    wm->arg = arg;
    /* Within the back-off after a failed connect, the warm reports that failure. */
    if (p->nconns < p->cfg->min_size && keel_now_ms() < p->next_connect_at)
        wm->error = p->last_error;
    while (p->nconns < p->cfg->min_size && wm->error.code == KEEL_OK) {
        keel_error e;
        keel_error_clear(&e);
        if (start_connect(p, wm, &e) != KEEL_OK) {
            p->last_error = e;
            backoff_grow(p);
            wm->error = e;
        }
    }
    /* A warm with no connect in flight completes from the dispatch: without it, never. */
    if (wm->pending == 0 && schedule_dispatch(p) != 0) {
        free(wm);
        return keel__error_set(err, KEEL_ERR_INTERNAL, NULL, p->cfg->name,
                               "the event loop refused a timer");
    }
    /* Append so warms complete in the order they were requested. */
    struct keel__warm **link = &p->warms;
    while (*link)
        link = &(*link)->next;
    *link = wm;
    return KEEL_OK;
}

/*
 * Opens connections until the pool holds min_size again after closing old ones, unless a failed
 * connect's back-off is running: then the reaper tries again when it is over (*next).
 */
static void refill(keel__pool *p, int64_t now, int64_t *next) {
    while (p->nconns < p->cfg->min_size) {
        if (now < p->next_connect_at) {
            if (p->next_connect_at < *next)
                *next = p->next_connect_at;
            return;
        }
        keel_error e;
        keel_error_clear(&e);
        if (start_connect(p, NULL, &e) != KEEL_OK) {
            p->last_error = e;
            backoff_grow(p);
        } else {
            p->conns->refill = 1; /* link_conn put it first */
        }
    }
    p->refill = 0;
}

/*
 * The reaper: closes idle connections past their max_lifetime, and those idle longer than
 * idle_timeout while the pool holds more than min_size (the longest idle first: the bottom of
 * the stack), replaces those closed for their age up to min_size, and arms itself for the next
 * connection due. Leased connections are left alone: they are judged when they come back.
 */
static void reap(void *arg) {
    keel__pool *p = arg;
    p->reap_at = INT64_MAX;
    if (keel__pool_closing(p))
        return;
    int64_t now = keel_now_ms(), next = INT64_MAX, idle = p->idle_ms;
    size_t i = 0;
    while (i < p->nidle) {
        keel_conn *c = p->idle[i];
        if (now >= c->expires_ms) {
            remove_idle_at(p, i);
            destroy(p, c);
            p->refill = 1;
        } else if (idle > 0 && p->nconns > p->cfg->min_size && now - c->last_used_ms >= idle) {
            remove_idle_at(p, i);
            destroy(p, c);
        } else {
            if (c->expires_ms < next)
                next = c->expires_ms;
            if (idle > 0 && p->nconns > p->cfg->min_size && c->last_used_ms + idle < next)
                next = c->last_used_ms + idle;
            i++;
        }
    }
    if (p->refill)
        refill(p, now, &next);
    if (next != INT64_MAX)
        reap_schedule(p, next);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void keel__pool_stats(const keel__pool *p, keel_pool_stats *out) {
    memset(out, 0, sizeof *out);
    out->size = p->nconns;
    out->idle = p->nidle;
    out->leased = p->nleased;
    out->waiting = p->nwaiting;
    out->min_size = p->cfg->min_size;
    out->max_size = p->cfg->max_size;
    out->acquire_timeout = p->cfg->acquire_timeout;
    out->connects = p->connects;
    out->connect_failures = p->connect_failures;
    out->acquires = p->acquires;
    out->acquire_timeouts = p->acquire_timeouts;
    size_t n = p->nwaits < WAIT_WINDOW ? (size_t)p->nwaits : WAIT_WINDOW;
    if (n == 0)
        return;
    int64_t sorted[WAIT_WINDOW];
    memcpy(sorted, p->waits_us, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_i64);
    /* Nearest rank: the smallest wait that at least half (99 %) of the window did not exceed. */
    out->acquire_wait_p50 = (double)sorted[(n * 50 + 99) / 100 - 1] / 1e6;
    out->acquire_wait_p99 = (double)sorted[(n * 99 + 99) / 100 - 1] / 1e6;
}

/* ---- deadlines ---------------------------------------------------------------------------- */

/* Arms the deadline timer of c seconds from now for what (KEEL__DEADLINE_…); -1 when the timer
 * cannot be had (out of memory, or the loop refused it). */
static int deadline_arm(keel_conn *c, int what, double seconds) {
    if (!c->deadline && !(c->deadline = keel__timer_new(c->loop, on_deadline, c)))
        return -1;
    if (keel__timer_arm(c->deadline, keel_now_ms() + (int64_t)(seconds * 1000.0 + 0.5)) != 0) {
        c->deadline_state = KEEL__DEADLINE_NONE;
        return -1;
    }
    c->deadline_state = what;
    return 0;
}

static void deadline_disarm(keel_conn *c) {
    if (c->deadline_state != KEEL__DEADLINE_NONE) {
        keel__timer_arm(c->deadline, -1);
        c->deadline_state = KEEL__DEADLINE_NONE;
    }
}

keel_status keel__conn_deadline_start(keel_conn *c, keel_error *err) {
    c->timed_out = 0;
    c->op_timeout_set = c->timeout >= 0;
    c->op_timeout = c->op_timeout_set ? c->timeout : c->config->command_timeout;
    if (c->op_timeout <= 0)
        return KEEL_OK;
    if (deadline_arm(c, KEEL__DEADLINE_OP, c->op_timeout) == 0)
        return KEEL_OK;
    if (!c->deadline)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, c->config->name, "out of memory");
    return keel__error_set(err, KEEL_ERR_INTERNAL, NULL, c->config->name,
                           "the event loop refused the timer of the operation's deadline");
}

void keel__conn_deadline_stop(keel_conn *c) { deadline_disarm(c); }

/* The error of an operation whose deadline passed; closed when its connection had to go. */
static void timeout_error(const keel_conn *c, keel_error *e, int closed) {
    /* In milliseconds: a caller's 0.2 s may arrive here less what its wait for a connection
     * took (0.199994), and should read as what it asked for. */
    double shown = (double)(int64_t)(c->op_timeout * 1000.0 + 0.5) / 1000.0;
    keel__error_set(e, KEEL_ERR_TIMEOUT, c->engine->name, c->config->name,
                    "the operation on database '%s' did not finish within %g s (%s); %s",
                    c->config->name, shown, c->op_timeout_set ? "its timeout" : "command_timeout",
                    closed ? "the server did not answer its cancel either, so the connection "
                             "was closed"
                           : "it was cancelled on the server");
    keel__error_set_sqlstate(e, "57014");
}

static void finish_op(keel_conn *c, keel_result *res, const keel_error *err);

/*
 * The server left a cancel unanswered for the whole grace: its connection is closed (the
 * engine abandons the operation, unreported) and the operation completes now.
 */
static void abandon(keel_conn *c) {
    keel_error e;
    if (c->timed_out) {
        timeout_error(c, &e, 1);
    } else {
        keel__error_set(&e, KEEL_ERR_CANCELLED, c->engine->name, c->config->name,
                        "the server of database '%s' did not answer the cancel of the "
                        "operation, so the connection was closed",
                        c->config->name);
        keel__error_set_sqlstate(&e, "57014");
    }
    c->engine->close(c);
    c->impl = NULL;
    slices_drop(c);
    c->broken = 1;
    c->abandoned = 1;
    finish_op(c, NULL, &e);
}

static void slices_continue(void *arg);

void keel__conn_unpause(keel_conn *c) {
    if (!c->paused)
        return;
    c->paused = 0;
    if (c->slices) {
        if (!c->slicer)
            c->slicer = keel__defer_new(c->loop, slices_continue, c);
        /* Without a timer the rest goes at the next cancel or release; nothing else wakes it. */
        if (c->slicer)
            (void)keel__defer_schedule(c->slicer);
    } else if (c->engine->resume) {
        c->engine->resume(c);
    }
}

void keel__conn_request_cancel(keel_conn *c) {
    if (c->cancel_requested)
        return;
    c->cancel_requested = 1;
    /* A paused statement reads on, so that the cancel can end it. */
    keel__conn_unpause(c);
    /* An operation with a deadline is bounded by it already (its grace follows). When no
     * timer can be had, the cancel still goes out, its wait unbounded. */
    if (c->deadline_state == KEEL__DEADLINE_NONE)
        (void)deadline_arm(c, KEEL__DEADLINE_GRACE, CANCEL_GRACE_S);
    /* Rows being handed over in slices stop at the next one: the engine is done already. */
    if (!c->slices)
        c->engine->cancel(c);
}

static void on_deadline(void *arg) {
    keel_conn *c = arg;
    int what = c->deadline_state;
    c->deadline_state = KEEL__DEADLINE_NONE;
    if (what == KEEL__DEADLINE_RESET) {
        /* The rollback of a released connection got no answer: the connection goes. */
        keel__pool *p = c->pool;
        destroy(p, c);
        if (p->wait_head)
            schedule_dispatch(p);
        return;
    }
    if (!c->busy)
        return;
    if (what == KEEL__DEADLINE_GRACE) {
        abandon(c);
        return;
    }
    /* The operation's deadline: a cancel the caller asked for first stays a cancel. */
    c->timed_out = !c->cancel_requested;
    double grace = c->op_timeout < GRACE_MAX_S ? c->op_timeout : GRACE_MAX_S;
    if (deadline_arm(c, KEEL__DEADLINE_GRACE, grace) != 0) {
        /* Without a timer nothing would end the wait for the cancel: give up on it now. */
        abandon(c);
        return;
    }
    if (!c->cancel_requested) {
        c->cancel_requested = 1;
        keel__conn_unpause(c);
        if (!c->slices)
            c->engine->cancel(c);
    }
}

/* ---- returns --------------------------------------------------------------------------------- */

/*
 * Starts the next step of cleaning a released connection (state RESETTING, not busy): the
 * rollback of a transaction left open, then UNLISTEN * on a connection that listened. 1 when a
 * step started, 0 when the connection is clean, -1 when a step could not start (it must go).
 */
static int reset_step(keel_conn *c) {
    keel_txn_status ts = c->engine->txn_status(c);
    if (ts != KEEL_TXN_IDLE && ts != KEEL_TXN_ACTIVE && ts != KEEL_TXN_FAILED)
        return -1;
    if (ts == KEEL_TXN_IDLE && !c->listened)
        return 0;
    keel_error err;
    keel_status st;
    c->state = KEEL__CONN_RESETTING;
    c->busy = 1;
    c->cb = NULL;
    c->rows_cb = NULL;
    if (ts != KEEL_TXN_IDLE) {
        st = c->engine->transaction(c, KEEL_TXN_ROLLBACK, 0, &err);
    } else {
        /* The next user must not receive this one's notifications. */
        static const char unlisten[] = "UNLISTEN *";
        keel__stmt stmt = { .sql = unlisten, .sql_len = sizeof unlisten - 1, .nrows = 1 };
        c->listened = 0;
        st = c->engine->query(c, &stmt, &err);
    }
    double limit = c->config->command_timeout > 0 ? c->config->command_timeout : RESET_DEADLINE_S;
    if (st != KEEL_OK || deadline_arm(c, KEEL__DEADLINE_RESET, limit) != 0)
        return -1;
    return 1;
}

/* Takes a leased, not busy connection back: idle when clean, rolled back, unlistened or closed
 * otherwise. */
static void take_back(keel__pool *p, keel_conn *c) {
    p->nleased--;
    c->release_pending = 0;
    c->cancel_requested = 0;
    c->notify_cb = NULL;
    c->notify_arg = NULL;
    int r = c->broken ? -1 : reset_step(c);
    if (r == 0) {
        keep_idle(p, c);
    } else if (r < 0) {
        destroy(p, c);
    }
    if (p->wait_head)
        schedule_dispatch(p);
}

int keel__pool_closing(const keel__pool *p) { return keel__db_closing(p->db); }

void keel__pool_release(keel_conn *c) {
    keel__pool *p = c->pool;
    if (!p) { /* closed with its db: only the handle is left */
        free_shell(c);
        return;
    }
    if (c->state != KEEL__CONN_LEASED || c->release_pending)
        return; /* released twice: the first release wins */
    /* The caller's notify handler is never called after its release. */
    c->notify_cb = NULL;
    c->notify_arg = NULL;
    if (c->busy) {
        c->release_pending = 1;
        keel__conn_request_cancel(c);
        return;
    }
    take_back(p, c);
}

void keel__conn_connected(keel_conn *c, const keel_error *err) {
    keel__pool *p = c->pool;
    struct keel__warm *wm = c->warm;
    c->warm = NULL;
    c->busy = 0;
    p->nconnecting--;
    if (wm)
        wm->pending--;
    if (err && err->code != KEEL_OK) {
        keel_error e = *err;
        if (!e.database[0])
            snprintf(e.database, sizeof e.database, "%s", p->cfg->name);
        p->last_error = e;
        p->connect_failures++;
        backoff_grow(p);
        /* A replacement that failed is tried again after the back-off. */
        if (c->refill) {
            p->refill = 1;
            reap_schedule(p, p->next_connect_at);
        }
        destroy(p, c);
        if (wm && wm->error.code == KEEL_OK)
            wm->error = e;
        /* A waiter is served by the next connection that works; when nothing is left in
         * flight for it, it gets this error instead of waiting out its timeout. */
        if (p->nwaiting > p->nconnecting + p->nchecking + p->nidle)
            fail_head_waiter(p, &e);
    } else {
        keel_error_clear(&p->last_error);
        backoff_reset(p);
        p->connects++;
        keep_idle(p, c);
    }
    /* The waiters and warms this connect was for are served from the next turn; when the loop
     * refuses that, from here, where a failed connect already calls back. */
    if (schedule_dispatch(p) != 0)
        dispatch(p);
}

/*
 * Rows a finished statement hands to a keel_rows_cb per call: few enough that the turn budget
 * is checked every fraction of a millisecond even when each row costs the application a lot
 * (JSON documents), enough that a call is worth its overhead.
 */
#define SLICE_ROWS 256

/* Ends the user operation of c with res (or err): the query callback, then a pending release. */
static void finish_op(keel_conn *c, keel_result *res, const keel_error *err) {
    keel__pool *p = c->pool;
    keel_error timeout;
    deadline_disarm(c);
    /* The cancel that the deadline sent took effect: the caller learns why it was sent. */
    if (c->timed_out && err && err->code == KEEL_ERR_CANCELLED) {
        timeout_error(c, &timeout, 0);
        err = &timeout;
    }
    c->timed_out = 0;
    int failed = err && err->code != KEEL_OK;
    keel_query_cb cb = c->cb;
    void *arg = c->cb_arg;
    int release_after = c->release_pending;
    c->busy = 0;
    c->cancel_requested = 0;
    c->paused = 0;
    c->cb = NULL;
    c->rows_cb = NULL;
    c->cb_arg = NULL;
    if (cb)
        cb(res, failed ? err : NULL, arg);
    else
        keel_result_free(res);
    /* The caller released the connection while this operation ran; it is ours again now.
     * When it was not released before the callback, the callback may have released and freed
     * it, so it must not be touched. */
    if (release_after)
        take_back(p, c);
}

/*
 * Hands the rows of c->slices from c->slices_next on to the rows callback, a slice at a time.
 * With budget, stops when the turn's budget is spent or the db is closing: returns 0 then, 1
 * once every row is out.
 */
static int slices_hand_over(keel_conn *c, int budget) {
    size_t n = keel_result_nrows(c->slices);
    while (c->slices_next < n) {
        c->slices_next +=
            keel__result_show_rows(c->slices, c->slices_next, SLICE_ROWS, c->rows_cb, c->cb_arg);
        if (budget && c->slices_next < n &&
            (c->paused || keel__turn_spent(c->loop) || keel__pool_closing(c->pool)))
            return 0;
    }
    return 1;
}

static void slices_continue(void *arg);

/*
 * Goes on handing over the rows of a finished statement (keel__conn_complete), then completes
 * it. The connection stays busy meanwhile; a cancel or release ends the hand-over at the next
 * slice with KEEL_ERR_CANCELLED (the slices handed over stay delivered, as with an error while
 * rows stream).
 */
static void slices_run(keel_conn *c) {
    if (c->cancel_requested) {
        keel_result_free(c->slices);
        c->slices = NULL;
        keel_error e;
        keel__error_set(&e, KEEL_ERR_CANCELLED, c->engine->name, c->config->name,
                        "cancelled while its rows were handed over");
        keel__error_set_sqlstate(&e, "57014");
        finish_op(c, NULL, &e);
        return;
    }
    if (!slices_hand_over(c, 1)) {
        /* A close requested meanwhile (by on_rows, say) ends the operation with
         * KEEL_ERR_CLOSED once this callback returns: nothing is left to hand over. */
        if (keel__pool_closing(c->pool))
            return;
        /* Paused: keel_conn_resume (or a cancel) goes on. */
        if (c->paused)
            return;
        if (!c->slicer)
            c->slicer = keel__defer_new(c->loop, slices_continue, c);
        if (c->slicer && keel__defer_schedule(c->slicer) == 0)
            return;
        /* No way back to the loop (out of memory, or the host refused the timer): the rest
         * goes now, as it did before rows were sliced. */
        slices_hand_over(c, 0);
    }
    keel_result *res = c->slices;
    c->slices = NULL;
    /* The query callback of keel_conn_query_rows always sees a result without rows. */
    keel__result_clear_rows(res);
    finish_op(c, res, NULL);
}

static void slices_continue(void *arg) {
    keel_conn *c = arg;
    if (c->slices)
        slices_run(c);
}

/* Drops a hand-over in progress and the means to continue it (the connection is closing). */
static void slices_drop(keel_conn *c) {
    keel_result_free(c->slices);
    c->slices = NULL;
    keel__defer_free(c->slicer);
    c->slicer = NULL;
}

void keel__conn_complete(keel_conn *c, keel_result *res, const keel_error *err) {
    keel__pool *p = c->pool;
    int failed = err && err->code != KEEL_OK;
    if (failed && err->code == KEEL_ERR_CONNECTION_LOST)
        c->broken = 1;
    if (c->state == KEEL__CONN_RESETTING) {
        deadline_disarm(c);
        keel_result_free(res);
        c->busy = 0;
        /* After a rollback, a connection that listened still has its UNLISTEN to run. */
        int r =
            failed || c->broken || c->engine->txn_status(c) != KEEL_TXN_IDLE ? -1 : reset_step(c);
        if (r < 0)
            destroy(p, c);
        else if (r == 0)
            keep_idle(p, c);
        if (p->wait_head)
            schedule_dispatch(p);
        return;
    }
    if (c->state == KEEL__CONN_CHECKING) {
        /* The ping of ping_after_idle: a connection that answered goes on top of the idle
         * stack, fresh, for the next waiter; one that did not is replaced by a new connect
         * from the dispatch, within the waiter's acquire_timeout. */
        deadline_disarm(c);
        keel_result_free(res);
        c->busy = 0;
        p->nchecking--;
        c->state = KEEL__CONN_IDLE;
        if (failed || c->broken)
            destroy(p, c);
        else
            keep_idle(p, c);
        if (schedule_dispatch(p) != 0)
            dispatch(p);
        return;
    }
    if (failed) {
        keel_result_free(res);
        res = NULL;
    }
    /* Rows the engine did not stream go to the rows callback too, in slices over as many loop
     * turns as their conversion takes, before the query callback: the query callback of
     * keel_conn_query_rows always sees a result without rows. They are delivered while the
     * connection is still busy, as streamed batches are, so the rows callback finds it busy on
     * every engine. */
    if (res && c->rows_cb && keel_result_nrows(res) > 0) {
        c->slices = res;
        c->slices_next = 0;
        slices_run(c);
        return;
    }
    finish_op(c, res, err);
}

void keel__conn_rows(keel_conn *c, const keel_result *res) {
    if (c->rows_cb && keel_result_nrows(res) > 0)
        c->rows_cb(res, c->cb_arg);
}

void keel__conn_notify(keel_conn *c, const keel_notification *n) {
    if (c->notify_cb && c->state == KEEL__CONN_LEASED)
        c->notify_cb(c, n, NULL, c->notify_arg);
}

void keel__conn_broken(keel_conn *c) {
    keel__pool *p = c->pool;
    c->broken = 1;
    if (c->state == KEEL__CONN_IDLE) {
        remove_idle(p, c);
        destroy(p, c);
        return;
    }
    /* A leased connection that listens: its handler learns of the loss, once. */
    keel_notify_cb cb = c->notify_cb;
    if (cb && c->state == KEEL__CONN_LEASED && !c->busy) {
        void *arg = c->notify_arg;
        c->notify_cb = NULL;
        c->notify_arg = NULL;
        keel_error e;
        keel__error_set(&e, KEEL_ERR_CONNECTION_LOST, c->engine->name, c->config->name,
                        "the connection to database '%s' was lost while it listened",
                        c->config->name);
        cb(c, NULL, &e, arg);
    }
}

keel__workers *keel__conn_workers(keel_conn *c) {
    return c->pool ? keel__db_workers(c->pool->db) : NULL;
}

/* A leased connection whose operation was abandoned by close, waiting for its callback. */
typedef struct abandoned {
    keel_query_cb cb;
    void *arg;
} abandoned;

void keel__pool_free(keel__pool *p) {
    if (!p)
        return;
    keel_error closed;
    keel__error_set(&closed, KEEL_ERR_CLOSED, NULL, p->cfg->name, "database '%s' was closed",
                    p->cfg->name);
    size_t nab = 0;
    abandoned *ab = p->nconns ? calloc(p->nconns, sizeof *ab) : NULL;
    keel_conn *c = p->conns;
    while (c) {
        keel_conn *next = c->next;
        if (c->state == KEEL__CONN_LEASED) {
            /* The handle stays with its holder; only the connection behind it goes. */
            if (c->busy && c->cb && ab) {
                ab[nab].cb = c->cb;
                ab[nab].arg = c->cb_arg;
                nab++;
            }
            c->engine->close(c);
            /* The loop may be gone by the time the holder releases the handle. */
            slices_drop(c);
            keel__timer_free(c->deadline);
            c->deadline = NULL;
            c->deadline_state = KEEL__DEADLINE_NONE;
            c->impl = NULL;
            c->pool = NULL;
            c->config = NULL;
            c->state = KEEL__CONN_CLOSED;
            c->busy = 0;
            c->notify_cb = NULL;
            c->notify_arg = NULL;
            c->cb = NULL;
            c->rows_cb = NULL;
            c->prev = c->next = NULL;
            if (c->release_pending)
                free_shell(c); /* already released by its holder */
        } else {
            c->engine->close(c);
            c->impl = NULL;
            free_shell(c);
        }
        c = next;
    }
    waiter *waiters = p->wait_head;
    struct keel__warm *warms = p->warms;
    keel__timer_free(p->timeout_timer);
    keel__defer_free(p->dispatch);
    keel__timer_free(p->retry_timer);
    keel__timer_free(p->reap_timer);
    free(p->idle);
    free(p);
    /* Callbacks last: the pool is gone, so whatever they do cannot reach it. */
    while (waiters) {
        waiter *w = waiters;
        waiters = w->next;
        w->cb(NULL, &closed, w->arg);
        free(w);
    }
    while (warms) {
        struct keel__warm *wm = warms;
        warms = wm->next;
        wm->cb(NULL, &closed, wm->arg);
        free(wm);
    }
    for (size_t i = 0; i < nab; i++)
        ab[i].cb(NULL, &closed, ab[i].arg);
    free(ab);
}
