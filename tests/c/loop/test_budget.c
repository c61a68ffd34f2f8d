/* tests/c/loop/test_budget.c - no callback of keel's holds the loop long, whatever the size of a result. */
/*
 * A poll(2) host written from keel/loop.h times every call it makes into keel (keel_watch_ready,
 * keel_timer_fire) in CPU time of the loop thread, which the other processes of a loaded machine
 * cannot inflate. Large results (300,000 rows) then go through every SQL engine, both as
 * streamed rows (keel_conn_query_rows, whose consumer also costs a microsecond per row, as
 * building Python records does) and as one collected result (keel_conn_query): keel must decode
 * and hand them over in slices spread over many loop turns, so that the longest call stays far
 * below the time the whole result takes. The bound checked (CALL_LIMIT_US) is generous: keel
 * stops at its budget of 4 ms, and only work it does not slice at all gets near the limit.
 */
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "support.h"

#define ROWS 300000
/* The longest call into keel allowed, in CPU microseconds; keel's budget is 4 ms. Sanitizers
 * make every allocation and free several times dearer. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CALL_LIMIT_US 100000
#else
#define CALL_LIMIT_US 20000
#endif
/* What the consumer of streamed rows spends per row, in CPU nanoseconds. */
#define CONSUMER_NS_PER_ROW 1000

/* ---- the host ---- */

typedef struct wrec {
    keel_watch *w;
    int fd, events, dead;
    struct wrec *next;
} wrec;

typedef struct trec {
    keel_timer *t;
    int64_t deadline; /* < 0: not armed */
    int dead;
    struct trec *next;
} trec;

typedef struct host {
    wrec *watches;
    trec *timers;
    int dispatching;
    long calls;
    int64_t max_call_ns, total_ns;
} host;

static int64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int h_watch(void *hp, keel_watch *w, int fd, int events) {
    host *h = hp;
    wrec *r = keel_watch_get_host_data(w);
    if (events == 0) {
        if (r) {
            r->dead = 1; /* unlinked and freed after the dispatch in progress */
            keel_watch_set_host_data(w, NULL);
        }
        return 0;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        r->w = w;
        r->fd = fd;
        r->next = h->watches;
        h->watches = r;
        keel_watch_set_host_data(w, r);
    }
    r->events = events;
    return 0;
}

static int h_timer(void *hp, keel_timer *t, int64_t deadline) {
    host *h = hp;
    trec *r = keel_timer_get_host_data(t);
    if (deadline < 0) {
        if (r) {
            r->dead = 1;
            keel_timer_set_host_data(t, NULL);
        }
        return 0;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        r->t = t;
        r->next = h->timers;
        h->timers = r;
        keel_timer_set_host_data(t, r);
    }
    r->deadline = deadline;
    return 0;
}

static const keel_loop_ops host_ops = { h_watch, h_timer };

static void timed_ready(host *h, wrec *r, int events) {
    int64_t t0 = cpu_ns();
    keel_watch_ready(r->w, events);
    int64_t dt = cpu_ns() - t0;
    h->calls++;
    h->total_ns += dt;
    if (dt > h->max_call_ns)
        h->max_call_ns = dt;
}

static void timed_fire(host *h, trec *r) {
    int64_t t0 = cpu_ns();
    keel_timer_fire(r->t);
    int64_t dt = cpu_ns() - t0;
    h->calls++;
    h->total_ns += dt;
    if (dt > h->max_call_ns)
        h->max_call_ns = dt;
}

/* Frees the records keel stopped or disarmed. */
static void sweep(host *h) {
    for (wrec **pp = &h->watches; *pp;) {
        wrec *r = *pp;
        if (r->dead) {
            *pp = r->next;
            free(r);
        } else {
            pp = &r->next;
        }
    }
    for (trec **pp = &h->timers; *pp;) {
        trec *r = *pp;
        if (r->dead) {
            *pp = r->next;
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

/* One turn: poll, dispatch ready watches, then due timers (each checked again before). */
static void host_turn(host *h) {
    struct pollfd pfd[64];
    wrec *polled[64];
    int n = 0;
    int64_t now = keel_now_ms(), next = now + 100;
    for (wrec *r = h->watches; r && n < 64; r = r->next) {
        if (r->dead)
            continue;
        pfd[n].fd = r->fd;
        pfd[n].events = (short)(((r->events & KEEL_READ) ? POLLIN : 0) |
                                ((r->events & KEEL_WRITE) ? POLLOUT : 0));
        pfd[n].revents = 0;
        polled[n++] = r;
    }
    for (trec *r = h->timers; r; r = r->next)
        if (!r->dead && r->deadline >= 0 && r->deadline < next)
            next = r->deadline;
    poll(pfd, (nfds_t)n, next > now ? (int)(next - now) : 0);
    h->dispatching = 1;
    for (int i = 0; i < n; i++) {
        wrec *r = polled[i];
        int ev = ((pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? KEEL_READ : 0) |
                 ((pfd[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? KEEL_WRITE : 0);
        ev &= r->events;
        if (!r->dead && ev)
            timed_ready(h, r, ev);
    }
    now = keel_now_ms();
    /* Timers armed from here on wait for the next turn, as a host's call_soon would have them. */
    size_t ndue = 0, cap = 0;
    trec **due = NULL;
    for (trec *r = h->timers; r; r = r->next) {
        if (r->dead || r->deadline < 0 || r->deadline > now)
            continue;
        if (ndue == cap) {
            cap = cap ? cap * 2 : 8;
            trec **a = realloc(due, cap * sizeof *a);
            if (!a)
                break;
            due = a;
        }
        due[ndue++] = r;
    }
    int64_t *armed_at = ndue ? malloc(ndue * sizeof *armed_at) : NULL;
    for (size_t i = 0; armed_at && i < ndue; i++)
        armed_at[i] = due[i]->deadline;
    for (size_t i = 0; armed_at && i < ndue; i++) {
        trec *r = due[i];
        if (r->dead || r->deadline != armed_at[i])
            continue;
        r->deadline = -1;
        timed_fire(h, r);
    }
    free(armed_at);
    free(due);
    h->dispatching = 0;
    sweep(h);
}

/* ---- the workload ---- */

typedef struct run {
    host *h;
    int done;
    size_t rows, batches;
    int in_order;
    keel_result *res;
    keel_error err;
    long calls_before;
} run;

static void spin_ns(int64_t ns) {
    int64_t end = cpu_ns() + ns;
    while (cpu_ns() < end)
        ;
}

static void on_rows(const keel_result *rows, void *arg) {
    run *x = arg;
    size_t n = keel_result_nrows(rows);
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = keel_result_value(rows, i, 0);
        if (!v || v->type != KEEL_TYPE_INT || v->u.i64 != (int64_t)(x->rows + i + 1))
            x->in_order = 0;
    }
    x->rows += n;
    x->batches++;
    spin_ns((int64_t)n * CONSUMER_NS_PER_ROW);
}

static void on_done(keel_result *res, const keel_error *err, void *arg) {
    run *x = arg;
    x->done = 1;
    x->res = res;
    if (err)
        x->err = *err;
}

static void on_acquired(keel_conn *c, const keel_error *err, void *arg) {
    keel_conn **out = arg;
    (void)err;
    *out = c;
}

static keel_db *open_on(host *h, keel_loop **loop, const char *url) {
    *loop = keel_loop_new(&host_ops, h);
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_error err;
    if (keel_config_new(&cfg, &err) != KEEL_OK || keel_config_set_url(cfg, url, &err) != KEEL_OK ||
        keel_db_open(&db, cfg, *loop, &err) != KEEL_OK) {
        fprintf(stderr, "  open: %s\n", err.message);
        db = NULL;
    }
    keel_config_free(cfg);
    return db;
}

static keel_conn *acquire_on(host *h, keel_db *db) {
    keel_conn *c = NULL;
    keel_error err;
    if (keel_db_acquire(db, NULL, on_acquired, &c, &err) != KEEL_OK) {
        fprintf(stderr, "  acquire: %s\n", err.message);
        return NULL;
    }
    int64_t end = keel_now_ms() + 30000;
    while (!c && keel_now_ms() < end)
        host_turn(h);
    return c;
}

/*
 * Runs sql on c (streamed to on_rows when streamed, else collected), checks its ROWS rows, and
 * checks that no call into keel took long while it ran.
 */
static void check_sliced(host *h, keel_conn *c, const char *engine, const char *what,
                         const char *sql, const keel_value *params, size_t nparams, int streamed) {
    run x = { .h = h, .in_order = 1 };
    keel_error err;
    h->calls = 0;
    h->max_call_ns = h->total_ns = 0;
    keel_status st = streamed
                         ? keel_conn_query_rows(c, sql, params, nparams, on_rows, on_done, &x, &err)
                         : keel_conn_query(c, sql, params, nparams, on_done, &x, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK) {
        fprintf(stderr, "  %s: %s\n", engine, err.message);
        return;
    }
    int64_t end = keel_now_ms() + 120000;
    while (!x.done && keel_now_ms() < end)
        host_turn(h);
    CHECK(x.done);
    CHECK_INT(x.err.code, KEEL_OK);
    if (x.err.code != KEEL_OK)
        fprintf(stderr, "  %s: %s\n", engine, x.err.message);
    if (streamed) {
        CHECK_INT(x.rows, ROWS);
        CHECK(x.in_order);
    } else {
        CHECK_INT(keel_result_nrows(x.res), ROWS);
        const keel_value *last = keel_result_value(x.res, ROWS - 1, 0);
        CHECK(last && last->type == KEEL_TYPE_INT && last->u.i64 == ROWS);
    }
    keel_result_free(x.res);
    printf("  %-10s %-22s %6ld calls into keel, longest %6.2f ms, all %7.1f ms (CPU)\n", engine,
           what, h->calls, (double)h->max_call_ns / 1e6, (double)h->total_ns / 1e6);
    CHECK(h->max_call_ns < (int64_t)CALL_LIMIT_US * 1000);
    /* Sliced means spread over many turns, not merely fast on a fast machine (a collected
     * result may be decoded off the loop, as SQLite's is, leaving the loop nothing to do). */
    if (streamed)
        CHECK(h->calls > 20);
}

static void check_engine(const char *engine, const char *url, const char *sql,
                         const char *sql_param, const char *several) {
    host h = { 0 };
    keel_loop *loop;
    keel_db *db = open_on(&h, &loop, url);
    CHECK(db != NULL);
    keel_conn *c = db ? acquire_on(&h, db) : NULL;
    CHECK(c != NULL);
    if (c) {
        keel_value limit = keel_int(ROWS);
        check_sliced(&h, c, engine, "streamed", sql, NULL, 0, 1);
        check_sliced(&h, c, engine, "streamed, parameter", sql_param, &limit, 1, 1);
        check_sliced(&h, c, engine, "collected", sql, NULL, 0, 0);
        check_sliced(&h, c, engine, "collected, parameter", sql_param, &limit, 1, 0);
        check_sliced(&h, c, engine, "several statements", several, NULL, 0, 1);
        keel_conn_release(c);
    }
    keel_db_close(db);
    sweep(&h);
    CHECK(h.watches == NULL && h.timers == NULL);
    keel_loop_free(loop);
}

TEST(postgresql_results_are_sliced) {
    check_engine(
        "postgresql", pg_url(),
        "SELECT g, 'row ' || g AS name, g * 0.5 AS score FROM generate_series(1, 300000) g",
        "SELECT g, 'row ' || g AS name, g * 0.5 AS score "
        "FROM generate_series(1, $1::int) g",
        "SELECT 1; SELECT g, 'row ' || g AS name FROM generate_series(1, 300000) g");
}

TEST(mysql_results_are_sliced) {
    check_engine("mysql", my_url(),
                 "SELECT seq, CONCAT('row ', seq) AS name, seq * 0.5 AS score FROM seq_1_to_300000",
                 "SELECT seq, CONCAT('row ', seq) AS name, seq * 0.5 AS score FROM seq_1_to_300000 "
                 "WHERE seq <= $1",
                 "SELECT 1; SELECT seq, CONCAT('row ', seq) AS name FROM seq_1_to_300000");
}

TEST(sqlite_results_are_sliced) {
    check_engine("sqlite", "sqlite::memory:",
                 "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) "
                 "SELECT x, 'row ' || x AS name, x * 0.5 AS score FROM n",
                 "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $1) "
                 "SELECT x, 'row ' || x AS name, x * 0.5 AS score FROM n",
                 "SELECT 1; WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                 "WHERE x < 300000) SELECT x, 'row ' || x AS name FROM n");
}

static void on_pool_acquired(keel_conn *c, const keel_error *err, void *arg) {
    on_acquired(c, err, arg);
}

/*
 * A cancel (or a release) that comes while a large result is still being read (early: after a
 * few turns, before any row was handed over) or handed over in slices ends it with
 * KEEL_ERR_CANCELLED, and the connection is usable after.
 */
static void check_stopped(const char *engine, const char *url, const char *sql, int release,
                          int early) {
    host h = { 0 };
    keel_loop *loop;
    keel_db *db = open_on(&h, &loop, url);
    CHECK(db != NULL);
    keel_conn *c = db ? acquire_on(&h, db) : NULL;
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        keel_loop_free(loop);
        return;
    }
    run x = { .h = &h, .in_order = 1 };
    keel_error err;
    CHECK_INT(keel_conn_query_rows(c, sql, NULL, 0, on_rows, on_done, &x, &err), KEEL_OK);
    int64_t end = keel_now_ms() + 60000;
    for (int turns = 0; !x.done && x.batches == 0 && keel_now_ms() < end; turns++) {
        if (early && turns == 5)
            break;
        host_turn(&h);
    }
    /* Early, PostgreSQL has streamed rows already; MySQL is still reading them. */
    CHECK(early ? !x.done : x.batches > 0);
    if (release)
        keel_conn_release(c);
    else
        keel_conn_cancel(c);
    while (!x.done && keel_now_ms() < end)
        host_turn(&h);
    printf("  %-10s %s %s, after %zu of %d rows: %s\n", engine, release ? "released" : "cancelled",
           early ? "while read" : "while handed over", x.rows, ROWS, keel_status_name(x.err.code));
    CHECK(x.done);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    CHECK(x.rows < ROWS);
    CHECK(x.in_order);
    CHECK(x.res == NULL);
    /* Usable after: the same connection, or the one the pool took back. */
    if (release) {
        c = NULL;
        CHECK_INT(keel_db_acquire(db, NULL, on_pool_acquired, &c, &err), KEEL_OK);
        while (!c && keel_now_ms() < end)
            host_turn(&h);
        CHECK(c != NULL);
    }
    run y = { .h = &h, .in_order = 1 };
    if (c && keel_conn_query(c, "SELECT 1", NULL, 0, on_done, &y, &err) == KEEL_OK) {
        while (!y.done && keel_now_ms() < end)
            host_turn(&h);
        CHECK_INT(y.err.code, KEEL_OK);
        CHECK(y.res && keel_result_nrows(y.res) == 1);
        keel_result_free(y.res);
    } else {
        CHECK(!"the connection takes a statement after the cancel");
    }
    keel_conn_release(c);
    keel_db_close(db);
    sweep(&h);
    keel_loop_free(loop);
}

TEST(cancel_or_release_stops_a_sliced_result) {
    const char *lite = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < "
                       "300000) SELECT x, 'row ' || x AS name FROM n";
    const char *my = "SELECT seq, CONCAT('row ', seq) AS name FROM seq_1_to_300000";
    const char *pg = "SELECT g, 'row ' || g AS name FROM generate_series(1, 300000) g";
    for (int release = 0; release <= 1; release++) {
        check_stopped("sqlite", "sqlite::memory:", lite, release, 0);
        for (int early = 0; early <= 1; early++) {
            check_stopped("mysql", my_url(), my, release, early);
            check_stopped("postgresql", pg_url(), pg, release, early);
        }
    }
}

int main(void) {
    RUN(postgresql_results_are_sliced);
    RUN(mysql_results_are_sliced);
    RUN(sqlite_results_are_sliced);
    RUN(cancel_or_release_stops_a_sliced_result);
    return TEST_SUMMARY();
}
