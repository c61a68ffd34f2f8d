/* tests/c/loop/test_epoll_host.c - an epoll host loop written from keel/loop.h alone, driving every engine. */
/*
 * The host below relies only on what include/keel/loop.h promises: it keeps one record per watch
 * and per timer in the host data, frees a watch's record on the call with events 0 and a timer's
 * on the disarm (never on a firing), defers those frees to the end of a dispatch batch, and checks
 * each collected readiness or due timer again before dispatching it. Every promise of the header
 * it can observe is checked as it runs (ops on the loop thread only, never nested, two live watches
 * never on one descriptor, a stop for a closed descriptor…); at the end no record may be left, and
 * LeakSanitizer (make test-c-asan) sees the records a missing stop or disarm would leak.
 *
 * The workload: one keel_db on this loop with PostgreSQL, MariaDB, SQLite and MongoDB, each driven
 * by several concurrent clients through a pool smaller than the number of clients (so requests
 * queue), with cancels and releases of running statements, and pools of one connection whose
 * requests time out or are withdrawn.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <bson/bson.h>
#include <keel/keel.h>

#include "support.h"

/* ---- the host ---- */

typedef struct wrec {
    keel_watch *w;
    int fd;
    int events; /* what epoll watches for w */
    int dead;   /* stopped: readiness collected for it is void */
    struct wrec *next_dead;
} wrec;

typedef struct trec {
    keel_timer *t;
    int64_t deadline;
    int armed;
    unsigned gen; /* changes with every arming: a firing collected before it is void */
    int dead;
    size_t slot; /* index in host.timers */
    struct trec *next_dead;
} trec;

/* The test's own deadlines (cancels, delayed releases), kept apart from keel's timers. */
typedef struct app_timer {
    int64_t at;
    void (*fn)(void *arg);
    void *arg;
} app_timer;

typedef struct host {
    int ep;
    pthread_t thread;
    trec **timers;
    size_t ntimers, cap_timers;
    wrec **byfd; /* the live record of each descriptor, to check that none is shared */
    size_t cap_fd;
    app_timer *apps;
    size_t napps, cap_apps;
    wrec *dead_w; /* records stopped during the batch being dispatched, freed after it */
    trec *dead_t;
    int dispatching;
    int in_op;
    long live_w, live_t;
    long watch_calls, timer_calls, readies, fires, stale_skipped;
    long violations;
} host;

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

static int host_init(host *h) {
    memset(h, 0, sizeof *h);
    h->thread = pthread_self();
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    return h->ep >= 0 ? 0 : -1;
}

/* Frees the host's own arrays. Records still live are left alone: keel should have stopped or
 * disarmed them all, and LeakSanitizer reports those it did not. */
static void host_free(host *h) {
    free(h->timers);
    free(h->byfd);
    free(h->apps);
    close(h->ep);
}

static void app_after(host *h, int64_t ms, void (*fn)(void *), void *arg) {
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

/* One turn: wait for readiness or the next deadline (at most max_ms), then dispatch. */
static void host_turn(host *h, int max_ms) {
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

/* Runs turns until *flag is set; 0, or -1 after limit_ms. */
static int host_run_until(host *h, const int *flag, int64_t limit_ms) {
    int64_t end = keel_now_ms() + limit_ms;
    while (!*flag) {
        if (keel_now_ms() > end)
            return -1;
        host_turn(h, 100);
    }
    return 0;
}

static const keel_loop_ops host_ops = { h_watch, h_timer };

/* ---- the workload ---- */

#define CLIENTS 8
#define QUERIES_PER_CLIENT 30 /* 240 statements per engine */
#define WAITERS 3             /* requests that time out on a one-connection pool */

typedef struct engine_spec {
    const char *name; /* the database name in the configuration */
    int mongo;
    const char *echo_sql;      /* returns $1 */
    const char *slow_sql;      /* runs until cancelled */
    int64_t interrupted_value; /* what slow_sql may return instead of an error when stopped */
} engine_spec;

static const engine_spec engines[] = {
    { "pg", 0, "SELECT $1::int8", "SELECT pg_sleep(30)", 0 },
    { "my", 0, "SELECT $1", "SELECT SLEEP(30)", 1 },
    { "lite", 0, "SELECT $1",
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000) "
      "SELECT count(*) FROM n",
      0 },
    { "mongo", 1, NULL, NULL, 0 },
};
#define NENGINES (sizeof engines / sizeof engines[0])

static char mongo_coll[64];

typedef struct lane lane;

typedef struct client {
    lane *ln;
    int id;
    keel_conn *conn;
    int n;       /* statements completed */
    int kind;    /* of the statement in flight: 0 echo, 1 cancelled, 2 released while running */
    int64_t arg; /* what the echo must return */
    int finished;
    int timer_pending; /* the cancel or release of the statement in flight is still to come */
    int parked;        /* the statement ended before its cancel or release came */
} client;

struct lane {
    host *h;
    keel_db *db;
    const engine_spec *e;
    char tiny[32]; /* the one-connection pool of this engine */
    client clients[CLIENTS];
    int running;
    long ok, cancelled, released, failed;
    /* the pool-timeout scenario */
    keel_conn *holder;
    int waiters_done, timeouts, withdrawn_called, after_ok, tiny_done;
};

static void client_next(client *cl);

static int64_t value_int(const keel_value *v) {
    if (!v)
        return INT64_MIN;
    if (v->type == KEEL_TYPE_INT)
        return v->u.i64;
    if (v->type == KEEL_TYPE_NUMERIC || v->type == KEEL_TYPE_TEXT) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.*s", (int)v->u.str.len, v->u.str.ptr);
        return strtoll(buf, NULL, 10);
    }
    return INT64_MIN;
}

/* The v of the first document a find returned, or INT64_MIN. */
static int64_t mongo_first_v(const keel_result *res) {
    const keel_value *v = keel_result_value(res, 0, 0);
    if (!v || v->type != KEEL_TYPE_DOCUMENT)
        return INT64_MIN;
    bson_t doc;
    bson_iter_t it, found;
    if (!bson_init_static(&doc, (const uint8_t *)v->u.str.ptr, v->u.str.len) ||
        !bson_iter_init(&it, &doc) ||
        !bson_iter_find_descendant(&it, "cursor.firstBatch.0.v", &found))
        return INT64_MIN;
    return bson_iter_as_int64(&found);
}

static void on_statement(keel_result *res, const keel_error *err, void *arg) {
    client *cl = arg;
    lane *ln = cl->ln;
    if (cl->kind == 0) {
        int64_t got = INT64_MIN;
        if (res)
            got = ln->e->mongo ? mongo_first_v(res) : value_int(keel_result_value(res, 0, 0));
        if (got == cl->arg) {
            ln->ok++;
        } else {
            ln->failed++;
            fprintf(stderr, "  %s client %d: %s (got %lld, want %lld)\n", ln->e->name, cl->id,
                    err ? err->message : "wrong value", (long long)got, (long long)cl->arg);
        }
    } else {
        /* MongoDB's find may finish before the cancel reaches it: then it simply succeeds. An
         * interrupted SLEEP returns 1 on MariaDB, at times without an error. */
        int good = err ? err->code == KEEL_ERR_CANCELLED
                       : ln->e->mongo ||
                             (ln->e->interrupted_value &&
                              value_int(keel_result_value(res, 0, 0)) == ln->e->interrupted_value);
        if (good) {
            if (cl->kind == 1)
                ln->cancelled++;
            else
                ln->released++;
        } else {
            ln->failed++;
            fprintf(stderr, "  %s client %d: a cancelled statement ended with %s: %s\n",
                    ln->e->name, cl->id, err ? keel_status_name(err->code) : "KEEL_OK",
                    err ? err->message : "a result");
        }
    }
    keel_result_free(res);
    cl->n++;
    if (cl->kind && cl->timer_pending) {
        cl->parked = 1; /* finished first (MongoDB): carry on once the timer has come */
        return;
    }
    if (cl->kind == 2) {
        cl->conn = NULL; /* released while it ran: back in the pool now */
    } else if (cl->n % 3 == 0) {
        keel_conn_release(cl->conn); /* sometimes keep it, sometimes give it back */
        cl->conn = NULL;
    }
    client_next(cl);
}

/* The app timer of a statement to cancel (kind 1) or to release while it runs (kind 2). */
static void cancel_or_release(void *arg) {
    client *cl = arg;
    cl->timer_pending = 0;
    if (cl->parked) {
        cl->parked = 0;
        if (cl->kind == 2) {
            keel_conn_release(cl->conn);
            cl->conn = NULL;
        }
        client_next(cl);
    } else if (cl->kind == 1) {
        keel_conn_cancel(cl->conn);
    } else {
        keel_conn_release(cl->conn); /* cancels the statement; its callback still runs */
    }
}

static keel_status mongo_find(client *cl, int64_t key, keel_error *err) {
    bson_t cmd = BSON_INITIALIZER, filter;
    BSON_APPEND_UTF8(&cmd, "find", mongo_coll);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "filter", &filter);
    BSON_APPEND_INT64(&filter, "_id", key);
    bson_append_document_end(&cmd, &filter);
    BSON_APPEND_INT32(&cmd, "limit", 1);
    keel_status st =
        keel_conn_command(cl->conn, NULL, bson_get_data(&cmd), cmd.len, on_statement, cl, err);
    bson_destroy(&cmd);
    return st;
}

static void start_statement(client *cl) {
    lane *ln = cl->ln;
    keel_error err;
    keel_status st;
    /* Every tenth statement is cancelled, alternately by keel_conn_cancel and by a release. */
    cl->kind = cl->n % 10 == 4 ? 1 : cl->n % 10 == 9 ? 2 : 0;
    cl->arg = (cl->id * 1000 + cl->n) % 10;
    if (ln->e->mongo) {
        st = mongo_find(cl, cl->kind ? 0 : cl->arg, &err);
    } else if (cl->kind) {
        st = keel_conn_query(cl->conn, ln->e->slow_sql, NULL, 0, on_statement, cl, &err);
    } else {
        keel_value p = keel_int(cl->arg);
        st = keel_conn_query(cl->conn, ln->e->echo_sql, &p, 1, on_statement, cl, &err);
    }
    if (st != KEEL_OK) {
        fprintf(stderr, "  %s client %d: %s\n", ln->e->name, cl->id, err.message);
        ln->failed++;
        keel_conn_release(cl->conn);
        cl->conn = NULL;
        cl->finished = 1;
        ln->running--;
        return;
    }
    if (cl->kind) {
        cl->timer_pending = 1;
        app_after(ln->h, 200, cancel_or_release, cl);
    }
}

static void on_acquired(keel_conn *conn, const keel_error *err, void *arg) {
    client *cl = arg;
    if (!conn) {
        fprintf(stderr, "  %s client %d: acquire: %s\n", cl->ln->e->name, cl->id, err->message);
        cl->ln->failed++;
        cl->finished = 1;
        cl->ln->running--;
        return;
    }
    cl->conn = conn;
    start_statement(cl);
}

static void client_next(client *cl) {
    lane *ln = cl->ln;
    if (cl->n == QUERIES_PER_CLIENT) {
        keel_conn_release(cl->conn);
        cl->conn = NULL;
        cl->finished = 1;
        ln->running--;
        return;
    }
    if (cl->conn) {
        start_statement(cl);
        return;
    }
    keel_error err;
    if (keel_db_acquire(ln->db, ln->e->name, on_acquired, cl, &err) != KEEL_OK) {
        fprintf(stderr, "  %s client %d: acquire: %s\n", ln->e->name, cl->id, err.message);
        ln->failed++;
        cl->finished = 1;
        ln->running--;
    }
}

/* The one-connection pool: a holder keeps its connection while requests queue and time out. */

static void on_tiny_after(keel_conn *conn, const keel_error *err, void *arg) {
    lane *ln = arg;
    if (conn)
        ln->after_ok = 1;
    else
        fprintf(stderr, "  %s: acquire after the timeouts: %s\n", ln->tiny, err->message);
    keel_conn_release(conn);
    ln->tiny_done = 1;
}

static void release_holder(void *arg) {
    lane *ln = arg;
    keel_conn_release(ln->holder);
    ln->holder = NULL;
    keel_error err;
    if (keel_db_acquire(ln->db, ln->tiny, on_tiny_after, ln, &err) != KEEL_OK) {
        fprintf(stderr, "  %s: %s\n", ln->tiny, err.message);
        ln->tiny_done = 1;
    }
}

static void on_waiter(keel_conn *conn, const keel_error *err, void *arg) {
    lane *ln = arg;
    ln->waiters_done++;
    if (!conn && err->code == KEEL_ERR_POOL_TIMEOUT && strstr(err->message, ln->tiny))
        ln->timeouts++;
    else
        fprintf(stderr, "  %s: a waiter got %s\n", ln->tiny, conn ? "a connection" : err->message);
    keel_conn_release(conn);
}

static void on_withdrawn(keel_conn *conn, const keel_error *err, void *arg) {
    lane *ln = arg;
    (void)err;
    ln->withdrawn_called++;
    keel_conn_release(conn);
}

static void on_holder(keel_conn *conn, const keel_error *err, void *arg) {
    lane *ln = arg;
    if (!conn) {
        fprintf(stderr, "  %s: holder: %s\n", ln->tiny, err->message);
        ln->tiny_done = 1;
        ln->waiters_done = WAITERS; /* none was queued */
        return;
    }
    ln->holder = conn;
    keel_error e;
    for (int i = 0; i < WAITERS; i++)
        CHECK_INT(keel_db_acquire(ln->db, ln->tiny, on_waiter, ln, &e), KEEL_OK);
    CHECK_INT(keel_db_acquire(ln->db, ln->tiny, on_withdrawn, ln, &e), KEEL_OK);
    CHECK_INT(keel_db_acquire_cancel(ln->db, on_withdrawn, ln), 1);
    app_after(ln->h, 1500, release_holder, ln); /* the waiters give up after 0.3 s */
}

/* ---- set-up and the test itself ---- */

typedef struct wait_acq {
    keel_conn *conn;
    keel_error err;
    int done;
} wait_acq;

static void on_wait_acq(keel_conn *conn, const keel_error *err, void *arg) {
    wait_acq *a = arg;
    a->conn = conn;
    if (err)
        a->err = *err;
    a->done = 1;
}

typedef struct wait_cmd {
    keel_error err;
    int done;
} wait_cmd;

static void on_wait_cmd(keel_result *res, const keel_error *err, void *arg) {
    wait_cmd *x = arg;
    keel_error_clear(&x->err);
    if (err)
        x->err = *err;
    keel_result_free(res);
    x->done = 1;
}

/* Runs one MongoDB command on this host's loop; the error (KEEL_OK on success). */
static keel_status mongo_run(host *h, keel_db *db, const bson_t *cmd, keel_error *err) {
    wait_acq a = { 0 };
    keel_error_clear(err);
    if (keel_db_acquire(db, "mongo", on_wait_acq, &a, err) != KEEL_OK)
        return err->code;
    CHECK_INT(host_run_until(h, &a.done, 60000), 0);
    if (!a.conn) {
        *err = a.err;
        return err->code;
    }
    wait_cmd x = { 0 };
    if (keel_conn_command(a.conn, NULL, bson_get_data(cmd), cmd->len, on_wait_cmd, &x, err) ==
        KEEL_OK) {
        CHECK_INT(host_run_until(h, &x.done, 60000), 0);
        *err = x.err;
    }
    keel_conn_release(a.conn);
    return err->code;
}

/* {_id: k, v: k} for k in 0..9, the documents the MongoDB clients find. */
static void mongo_seed(host *h, keel_db *db) {
    bson_t cmd = BSON_INITIALIZER, docs, doc;
    BSON_APPEND_UTF8(&cmd, "insert", mongo_coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "documents", &docs);
    for (int k = 0; k < 10; k++) {
        char key[4];
        snprintf(key, sizeof key, "%d", k);
        bson_append_document_begin(&docs, key, -1, &doc);
        BSON_APPEND_INT64(&doc, "_id", k);
        BSON_APPEND_INT64(&doc, "v", k);
        bson_append_document_end(&docs, &doc);
    }
    bson_append_array_end(&cmd, &docs);
    keel_error err;
    if (mongo_run(h, db, &cmd, &err) != KEEL_OK)
        fprintf(stderr, "  mongo seed: %s\n", err.message);
    CHECK_INT(err.code, KEEL_OK);
    bson_destroy(&cmd);
}

static void mongo_drop(host *h, keel_db *db) {
    bson_t cmd = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd, "drop", mongo_coll);
    keel_error err;
    mongo_run(h, db, &cmd, &err);
    bson_destroy(&cmd);
}

static keel_db *open_all(keel_loop *loop) {
    keel_config *cfg = NULL;
    keel_error err;
    keel_db *db = NULL;
    if (keel_config_new(&cfg, &err) != KEEL_OK)
        return NULL;
    const char *urls[NENGINES] = { pg_url(), my_url(), "sqlite::memory:", mongo_url() };
    int ok = 1;
    for (size_t i = 0; i < NENGINES && ok; i++) {
        char key[96];
        const char *names[2] = { engines[i].name, NULL };
        char tiny[32];
        snprintf(tiny, sizeof tiny, "%s_tiny", engines[i].name);
        names[1] = tiny;
        for (int k = 0; k < 2 && ok; k++) {
            snprintf(key, sizeof key, "databases.%s.url", names[k]);
            ok = keel_config_set(cfg, key, urls[i], &err) == KEEL_OK;
            snprintf(key, sizeof key, "databases.%s.pool.min_size", names[k]);
            ok = ok && keel_config_set(cfg, key, k ? "1" : "0", &err) == KEEL_OK;
            snprintf(key, sizeof key, "databases.%s.pool.max_size", names[k]);
            ok = ok && keel_config_set(cfg, key, k ? "1" : "4", &err) == KEEL_OK;
            snprintf(key, sizeof key, "databases.%s.pool.acquire_timeout", names[k]);
            ok = ok && keel_config_set(cfg, key, k ? "0.3" : "60", &err) == KEEL_OK;
        }
    }
    ok = ok && keel_config_set(cfg, "default", "pg", &err) == KEEL_OK;
    if (ok && keel_db_open(&db, cfg, loop, &err) != KEEL_OK)
        ok = 0;
    if (!ok)
        fprintf(stderr, "  open: %s\n", err.message);
    keel_config_free(cfg);
    return ok ? db : NULL;
}

static int all_done(const lane *lanes) {
    for (size_t i = 0; i < NENGINES; i++)
        if (lanes[i].running || !lanes[i].tiny_done || lanes[i].waiters_done < WAITERS)
            return 0;
    return 1;
}

TEST(an_epoll_host_written_from_the_header_drives_every_engine_and_leaks_nothing) {
    host h;
    CHECK_INT(host_init(&h), 0);
    keel_loop *loop = keel_loop_new(&host_ops, &h);
    CHECK(loop != NULL);
    keel_db *db = open_all(loop);
    CHECK(db != NULL);
    if (!db) {
        keel_loop_free(loop);
        host_free(&h);
        return;
    }
    mongo_seed(&h, db);
    /* The one-connection pools open their connection first: a connect can take longer than the
     * 0.3 s their requests may wait. */
    for (size_t i = 0; i < NENGINES; i++) {
        char tiny[32];
        snprintf(tiny, sizeof tiny, "%s_tiny", engines[i].name);
        wait_acq w = { 0 };
        keel_error err;
        CHECK_INT(keel_db_warm(db, tiny, on_wait_acq, &w, &err), KEEL_OK);
        CHECK_INT(host_run_until(&h, &w.done, 60000), 0);
        CHECK_INT(w.err.code, KEEL_OK);
    }

    static lane lanes[NENGINES];
    memset(lanes, 0, sizeof lanes);
    for (size_t i = 0; i < NENGINES; i++) {
        lane *ln = &lanes[i];
        ln->h = &h;
        ln->db = db;
        ln->e = &engines[i];
        snprintf(ln->tiny, sizeof ln->tiny, "%s_tiny", engines[i].name);
        keel_error err;
        CHECK_INT(keel_db_acquire(db, ln->tiny, on_holder, ln, &err), KEEL_OK);
        for (int k = 0; k < CLIENTS; k++) {
            client *cl = &ln->clients[k];
            cl->ln = ln;
            cl->id = k;
            ln->running++;
            client_next(cl);
        }
    }
    int64_t end = keel_now_ms() + 240000;
    while (!all_done(lanes) && keel_now_ms() < end)
        host_turn(&h, 100);
    CHECK(all_done(lanes));

    long statements = 0;
    for (size_t i = 0; i < NENGINES; i++) {
        lane *ln = &lanes[i];
        printf("# %s: %ld echoed, %ld cancelled, %ld released while running, %ld failed; "
               "%d of %d waiters timed out\n",
               ln->e->name, ln->ok, ln->cancelled, ln->released, ln->failed, ln->timeouts, WAITERS);
        long n = ln->ok + ln->cancelled + ln->released;
        statements += n;
        CHECK_INT(n, CLIENTS * QUERIES_PER_CLIENT);
        CHECK_INT(ln->failed, 0);
        CHECK(ln->cancelled + ln->released > 0);
        CHECK_INT(ln->timeouts, WAITERS);
        CHECK_INT(ln->withdrawn_called, 0);
        CHECK_INT(ln->after_ok, 1);
    }
    printf("# %ld statements; host: %ld watch calls, %ld timer calls, %ld readiness reports, "
           "%ld firings, %ld stale entries skipped\n",
           statements, h.watch_calls, h.timer_calls, h.readies, h.fires, h.stale_skipped);

    mongo_drop(&h, db);
    keel_db_close(db);
    /* The header: by now every watch is stopped and every timer disarmed, so the host holds no
     * record (and LeakSanitizer finds none). */
    CHECK_INT(h.live_w, 0);
    CHECK_INT(h.live_t, 0);
    CHECK_INT(h.violations, 0);
    keel_loop_free(loop);
    host_free(&h);
}

int main(void) {
    snprintf(mongo_coll, sizeof mongo_coll, "epoll_host_%d", (int)getpid());
    RUN(an_epoll_host_written_from_the_header_drives_every_engine_and_leaks_nothing);
    return TEST_SUMMARY();
}
