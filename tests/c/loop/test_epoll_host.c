/* tests/c/loop/test_epoll_host.c - an epoll host loop written from keel/loop.h alone, driving every engine. */
/*
 * The host (support/epoll_host.c) relies only on what include/keel/loop.h promises and checks
 * every promise it can observe as it runs; at the end no record may be left, and LeakSanitizer
 * (make test-c-asan) sees the records a missing stop or disarm would leak.
 *
 * The workload: one keel_db on this loop with PostgreSQL, MariaDB, SQLite and MongoDB, each driven
 * by several concurrent clients through a pool smaller than the number of clients (so requests
 * queue), with cancels and releases of running statements, and pools of one connection whose
 * requests time out or are withdrawn.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <bson/bson.h>
#include <keel/keel.h>

#include "support.h"
#include "support/epoll_host.h"

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
    epoll_host *h;
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
        epoll_host_after(ln->h, 200, cancel_or_release, cl);
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
    epoll_host_after(ln->h, 1500, release_holder, ln); /* the waiters give up after 0.3 s */
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
static keel_status mongo_run(epoll_host *h, keel_db *db, const bson_t *cmd, keel_error *err) {
    wait_acq a = { 0 };
    keel_error_clear(err);
    if (keel_db_acquire(db, "mongo", on_wait_acq, &a, err) != KEEL_OK)
        return err->code;
    CHECK_INT(epoll_host_run_until(h, &a.done, 60000), 0);
    if (!a.conn) {
        *err = a.err;
        return err->code;
    }
    wait_cmd x = { 0 };
    if (keel_conn_command(a.conn, NULL, bson_get_data(cmd), cmd->len, on_wait_cmd, &x, err) ==
        KEEL_OK) {
        CHECK_INT(epoll_host_run_until(h, &x.done, 60000), 0);
        *err = x.err;
    }
    keel_conn_release(a.conn);
    return err->code;
}

/* {_id: k, v: k} for k in 0..9, the documents the MongoDB clients find. */
static void mongo_seed(epoll_host *h, keel_db *db) {
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

static void mongo_drop(epoll_host *h, keel_db *db) {
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
    epoll_host h;
    CHECK_INT(epoll_host_init(&h), 0);
    keel_loop *loop = keel_loop_new(&epoll_host_ops, &h);
    CHECK(loop != NULL);
    keel_db *db = open_all(loop);
    CHECK(db != NULL);
    if (!db) {
        keel_loop_free(loop);
        epoll_host_free(&h);
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
        CHECK_INT(epoll_host_run_until(&h, &w.done, 60000), 0);
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
        epoll_host_turn(&h, 100);
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
    epoll_host_free(&h);
}

int main(void) {
    snprintf(mongo_coll, sizeof mongo_coll, "epoll_host_%d", (int)getpid());
    RUN(an_epoll_host_written_from_the_header_drives_every_engine_and_leaks_nothing);
    return TEST_SUMMARY();
}
