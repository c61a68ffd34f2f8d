/* tests/c/core/test_callbacks.c - what an application may call from inside keel's callbacks. */
/*
 * The rules of docs/c-api.md ("Calling keel from a callback"), on a real SQLite database: from
 * acquire and query callbacks every asynchronous call works (its own callback comes later, never
 * inside the call); the synchronous calls refuse to run there instead of spinning the loop again;
 * a rows callback finds its connection busy.
 */
#include <stdlib.h>
#include <unistd.h>

#include <keel/keel.h>

#include "test.h"

static char dbdir[] = "/tmp/keel-callbacks-XXXXXX";
static char dburl[256];

static keel_db *open_db(void) {
    keel_config *cfg = NULL;
    keel_error err;
    keel_db *db = NULL;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", dburl, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.min_size", "0", &err), KEEL_OK);
    /* One connection: the request made from the first acquire callback can only be served by the
     * release of the first lease. With room for a second connection the pool would open one for
     * it, and whether that or the release came first would be up to the worker threads. */
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.max_size", "1", &err), KEEL_OK);
    CHECK_INT(keel_db_open(&db, cfg, NULL, &err), KEEL_OK);
    keel_config_free(cfg);
    return db;
}

typedef struct story {
    keel_db *db;
    keel_conn *first, *second;
    int in_callback;      /* set while one of ours runs: a callback inside a call shows here */
    int nested;           /* callbacks that ran inside a call made from a callback */
    int queries;          /* query callbacks */
    int second_acquired;  /* the request made from the first acquire callback was served */
    int withdrawn_called; /* callbacks of calls that failed or were withdrawn: must stay 0 */
    keel_status sync_in_acquire, sync_in_query, sync_in_rows, busy_in_rows;
    char sync_message[KEEL_ERROR_MESSAGE_MAX];
    int rows_batches;
    int done;
} story;

static void enter(story *s) {
    if (s->in_callback)
        s->nested++;
    s->in_callback = 1;
}

static void leave(story *s) { s->in_callback = 0; }

static void on_withdrawn(keel_conn *conn, const keel_error *err, void *arg) {
    story *s = arg;
    (void)err;
    s->withdrawn_called++;
    keel_conn_release(conn);
}

static void on_never(keel_result *res, const keel_error *err, void *arg) {
    story *s = arg;
    (void)err;
    s->withdrawn_called++;
    keel_result_free(res);
}

static void on_rows(const keel_result *rows, void *arg) {
    story *s = arg;
    enter(s);
    s->rows_batches++;
    keel_error err;
    /* The connection is in the middle of this statement. */
    s->busy_in_rows = keel_conn_query(s->second, "SELECT 1", NULL, 0, on_never, s, &err);
    s->sync_in_rows = keel_db_query_sync(s->db, NULL, "SELECT 1", NULL, 0, NULL, &err);
    (void)rows;
    leave(s);
}

static void on_rows_done(keel_result *res, const keel_error *err, void *arg) {
    story *s = arg;
    enter(s);
    CHECK(err == NULL);
    keel_result_free(res);
    keel_conn_release(s->second);
    s->second = NULL;
    /* Closing from a callback is deferred until keel is done with this loop event. */
    keel_db_close(s->db);
    s->done = 1;
    leave(s);
}

static void on_second(keel_conn *conn, const keel_error *err, void *arg) {
    story *s = arg;
    enter(s);
    CHECK(err == NULL);
    s->second_acquired = 1;
    s->second = conn;
    keel_conn_cancel(conn); /* nothing runs: a no-op */
    keel_error e;
    CHECK_INT(keel_conn_query_rows(conn, "SELECT 1 UNION ALL SELECT 2", NULL, 0, on_rows,
                                   on_rows_done, s, &e),
              KEEL_OK);
    leave(s);
}

static void on_query(keel_result *res, const keel_error *err, void *arg) {
    story *s = arg;
    enter(s);
    CHECK(err == NULL);
    keel_result_free(res);
    keel_error e;
    if (++s->queries == 1) {
        /* Another statement on the same connection, from its own completion. */
        CHECK_INT(keel_conn_query(s->first, "SELECT 2", NULL, 0, on_query, s, &e), KEEL_OK);
        s->sync_in_query = keel_conn_query_sync(s->first, "SELECT 3", NULL, 0, NULL, &e);
    } else {
        /* Giving the connection back serves the request queued from the acquire callback. */
        keel_conn_release(s->first);
        s->first = NULL;
    }
    leave(s);
}

static void on_first(keel_conn *conn, const keel_error *err, void *arg) {
    story *s = arg;
    enter(s);
    CHECK(err == NULL);
    s->first = conn;
    keel_error e;
    keel_pool_stats st;
    CHECK_INT(keel_db_pool_stats(s->db, NULL, &st, &e), KEEL_OK);
    CHECK_INT(st.leased, 1);
    keel_conn *other = NULL;
    CHECK_INT(keel_db_try_acquire(s->db, NULL, &other, &e), KEEL_ERR_BUSY); /* none idle */
    CHECK_INT(keel_db_acquire(s->db, NULL, on_withdrawn, s, &e), KEEL_OK);
    CHECK_INT(keel_db_acquire_cancel(s->db, on_withdrawn, s), 1);
    CHECK_INT(keel_conn_query(conn, "SELECT 1", NULL, 0, on_query, s, &e), KEEL_OK);
    /* The pool is full (max_size 1): this request waits for the release in on_query. */
    CHECK_INT(keel_db_acquire(s->db, NULL, on_second, s, &e), KEEL_OK);
    s->sync_in_acquire = keel_db_query_sync(s->db, NULL, "SELECT 1", NULL, 0, NULL, &e);
    snprintf(s->sync_message, sizeof s->sync_message, "%s", e.message);
    leave(s);
}

TEST(asynchronous_calls_work_from_callbacks_and_synchronous_ones_refuse) {
    story s = { 0 };
    s.db = open_db();
    keel_loop *loop = keel_db_loop(s.db);
    keel_error err;
    CHECK_INT(keel_db_acquire(s.db, NULL, on_first, &s, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(loop, &s.done), KEEL_OK); /* the db and its loop are gone after */
    CHECK_INT(s.done, 1);
    CHECK_INT(s.nested, 0);
    CHECK_INT(s.queries, 2);
    CHECK_INT(s.second_acquired, 1);
    CHECK_INT(s.withdrawn_called, 0);
    CHECK_INT(s.rows_batches, 1);
    CHECK_INT(s.busy_in_rows, KEEL_ERR_BUSY);
    CHECK_INT(s.sync_in_acquire, KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(s.sync_in_query, KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(s.sync_in_rows, KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(s.sync_message, "inside a callback");
}

TEST(synchronous_calls_outside_callbacks_are_unaffected) {
    keel_db *db = open_db();
    keel_error err;
    keel_result *res = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT 41 + 1", NULL, 0, &res, &err), KEEL_OK);
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 42);
    keel_result_free(res);
    keel_db_close(db);
}

int main(void) {
    if (!mkdtemp(dbdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dburl, sizeof dburl, "sqlite:///%s/callbacks.db", dbdir);
    RUN(asynchronous_calls_work_from_callbacks_and_synchronous_ones_refuse);
    RUN(synchronous_calls_outside_callbacks_are_unaffected);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dbdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dbdir);
    return TEST_SUMMARY();
}
