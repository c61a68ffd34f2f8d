/* tests/c/pool/test_deadline.c - deadlines of operations: command_timeout, keel_conn_set_timeout, silent servers. */
#include <math.h>

#include "support.h"
#include "support/proxy.h"

/* Generous bounds: a deadline of 0.3 s plus its grace must end well within them on a loaded
 * machine, while a missing deadline would hang until the watchdog. */
#define BOUND_MS 4000

/* A statement that never ends by itself on each SQL engine. */
static const char *const sqlite_forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                          "FROM n) SELECT count(*) FROM n";

/* Runs sql on c, which must fail with KEEL_ERR_TIMEOUT within BOUND_MS; returns the error. */
static keel_error times_out(keel_conn *c, const char *sql) {
    watchdog(30, sql);
    int64_t t0 = keel_now_ms();
    keel_error err = q_fail(c, sql, NULL, 0);
    int64_t took = keel_now_ms() - t0;
    watchdog(0, "");
    CHECK_INT(err.code, KEEL_ERR_TIMEOUT);
    CHECK_STR(err.sqlstate, "57014");
    if (took >= BOUND_MS)
        fprintf(stderr, "  took %lld ms\n", (long long)took);
    CHECK(took < BOUND_MS);
    return err;
}

TEST(bad_timeouts_are_refused) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    keel_error err;
    CHECK_INT(keel_conn_set_timeout(c, -2, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "KEEL_TIMEOUT_CONFIGURED");
    CHECK_INT(keel_conn_set_timeout(c, NAN, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_conn_set_timeout(c, 2e9, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_conn_set_timeout(NULL, 1, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_conn_set_timeout(c, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_set_timeout(c, KEEL_TIMEOUT_CONFIGURED, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);

    keel_config *cfg = NULL;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.command_timeout", "soon", &err),
              KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.command_timeout");
    CHECK_INT(keel_config_set(cfg, "databases.main.command_timeout", "-1", &err), KEEL_ERR_CONFIG);
    CHECK_INT(keel_config_set(cfg, "databases.main.command_timout", "1", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "command_timeout");
    CHECK_INT(keel_config_set(cfg, "databases.main.url", "sqlite::memory:?command_timeout=x", &err),
              KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "command_timeout");
    keel_config_free(cfg);
}

TEST(sqlite_statement_past_its_timeout_is_interrupted) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    keel_error err;
    CHECK_INT(keel_conn_set_timeout(c, 0.3, &err), KEEL_OK);
    err = times_out(c, sqlite_forever);
    CHECK_STR(err.engine, "sqlite");
    CHECK_STR(err.database, "default");
    CHECK_CONTAINS(err.message, "within 0.3 s (its timeout)");
    CHECK_CONTAINS(err.message, "cancelled on the server");
    /* The connection is usable right away, and the deadline holds for the next statement. */
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    times_out(c, sqlite_forever);
    keel_conn_release(c);

    /* The next lease starts from the database's command_timeout (none): the deadline set on
     * the connection went with its release. */
    c = acquire(db);
    CHECK_INT(q_int(c, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < "
                       "2000000) SELECT count(*) FROM n"),
              2000000);
    keel_conn_release(c);
    keel_db_close(db);
}

/* command_timeout of the configuration, keel_conn_set_timeout over it, and back. */
static void command_timeout_applies(const char *url, const char *engine, const char *sleep5,
                                    const char *sleep_half) {
    const char *extra[] = { "databases.default.command_timeout", "0.3", NULL };
    keel_db *db = open_url(url, extra);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_error err = times_out(c, sleep5);
    CHECK_STR(err.engine, engine);
    CHECK_CONTAINS(err.message, "within 0.3 s (command_timeout)");
    CHECK_INT(q_int(c, "SELECT 7"), 7);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* No deadline for this connection: half a second is fine. */
    CHECK_INT(keel_conn_set_timeout(c, 0, &err), KEEL_OK);
    keel_result *r = q(c, sleep_half, NULL, 0);
    CHECK(r != NULL);
    keel_result_free(r);
    CHECK_INT(keel_conn_set_timeout(c, KEEL_TIMEOUT_CONFIGURED, &err), KEEL_OK);
    times_out(c, sleep5);

    /* Inside a transaction the statement that timed out fails it, as any error does; the
     * connection still rolls back and serves again. */
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    times_out(c, sleep5);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT 8"), 8);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(postgresql_command_timeout_cancels_the_statement) {
    command_timeout_applies(pg_url(), "postgresql", "SELECT pg_sleep(5)", "SELECT pg_sleep(0.5)");
}

TEST(mysql_command_timeout_cancels_the_statement) {
    command_timeout_applies(my_url(), "mysql", "SELECT SLEEP(5)", "SELECT SLEEP(0.5)");
}

TEST(sqlite_command_timeout_cancels_the_statement) {
    command_timeout_applies("sqlite::memory:", "sqlite", sqlite_forever,
                            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                            "WHERE x < 100000) SELECT count(*) FROM n");
}

/* What an operation's completion delivered, for the asynchronous API. */
typedef struct outcome {
    int calls;
    keel_error err;
} outcome;

static void on_outcome(keel_result *res, const keel_error *err, void *arg) {
    outcome *o = arg;
    o->calls++;
    keel_error_clear(&o->err);
    if (err)
        o->err = *err;
    keel_result_free(res);
}

/* A proxy in front of the server of url, its URL in purl (size 512); NULL (counted) when it
 * cannot start. */
static test_proxy *proxy_for(const char *url, char *purl) {
    char host[256];
    int port = 0;
    CHECK_INT(test_url_host_port(url, host, sizeof host, &port), 0);
    test_proxy *px = test_proxy_start(host, port);
    CHECK(px && test_proxy_url(px, url, purl, 512));
    return px;
}

/*
 * The server behind a proxy falls silent after the connection is up: an operation with a
 * deadline ends as a timeout within its timeout plus grace (the cancel meets the silence too),
 * the connection is closed and unusable, and the pool replaces it once the server answers.
 */
static void silent_server(const char *url, const char *const *extra_in, const char *engine) {
    char purl[512];
    test_proxy *px = proxy_for(url, purl);
    if (!px)
        return;
    keel_db *db = open_url(purl, extra_in);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    CHECK_INT(keel_conn_set_timeout(c, 0.3, &err), KEEL_OK);
    test_proxy_stall(px);

    watchdog(30, "a ping with a deadline on a silent server");
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_ERR_TIMEOUT);
    int64_t took = keel_now_ms() - t0;
    watchdog(0, "");
    CHECK(took < BOUND_MS);
    CHECK_STR(err.engine, engine);
    CHECK_CONTAINS(err.message, "did not answer its cancel either");
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_ERR_CONNECTION_LOST);
    CHECK_CONTAINS(err.message, "did not answer the cancel");
    keel_conn_release(c);

    test_proxy_resume(px);
    size_t before = test_proxy_accepted(px);
    watchdog(30, "a new connection once the server answers again");
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    watchdog(0, "");
    CHECK(test_proxy_accepted(px) > before);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

TEST(postgresql_silent_server_times_out_and_the_connection_is_replaced) {
    silent_server(pg_url(), NULL, "postgresql");
}

TEST(mysql_silent_server_times_out_and_the_connection_is_replaced) {
    silent_server(my_url(), NULL, "mysql");
}

TEST(mongodb_silent_server_times_out_and_the_connection_is_replaced) {
    /* One server, reached through the proxy only: no replica-set discovery around it. */
    const char *extra[] = { "databases.default.options.directConnection", "true", NULL };
    silent_server(mongo_url(), extra, "mongodb");
}

/* The asynchronous API reports a timeout once, through the callback, like any completion. */
TEST(async_operation_past_its_deadline_calls_back_once) {
    keel_db *db = open_url(pg_url(), NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_set_timeout(c, 0.2, &err), KEEL_OK);
    outcome o = { 0 };
    CHECK_INT(keel_conn_query(c, "SELECT pg_sleep(5)", NULL, 0, on_outcome, &o, &err), KEEL_OK);
    watchdog(30, "an asynchronous statement past its deadline");
    CHECK_INT(keel_loop_run(keel_db_loop(db), &o.calls), KEEL_OK);
    watchdog(0, "");
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.err.code, KEEL_ERR_TIMEOUT);
    /* Nothing more arrives while the loop runs on: the engine's own answer to the cancel was
     * the completion. */
    CHECK_INT(q_int(c, "SELECT 3"), 3);
    CHECK_INT(o.calls, 1);
    keel_conn_release(c);
    keel_db_close(db);
}

/*
 * A connection released inside a transaction rolls back before it serves again; when the
 * server falls silent, that rollback is bounded by command_timeout, so the pool's only slot is
 * not held for ever: the next acquire gets a new connect (which meets the silence, and its own
 * connect_timeout) instead of waiting out acquire_timeout.
 */
TEST(rollback_on_release_against_a_silent_server_is_bounded) {
    char purl[512];
    test_proxy *px = proxy_for(pg_url(), purl);
    if (!px)
        return;
    const char *extra[] = { "databases.default.command_timeout",
                            "0.3",
                            "databases.default.connect_timeout",
                            "0.5",
                            "databases.default.pool.max_size",
                            "1",
                            "databases.default.pool.acquire_timeout",
                            "20",
                            NULL };
    keel_db *db = open_url(purl, extra);
    keel_conn *c = acquire(db);
    keel_error err;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    test_proxy_stall(px);
    keel_conn_release(c);

    watchdog(30, "an acquire while the only connection rolls back on a silent server");
    int64_t t0 = keel_now_ms();
    keel_conn *n = NULL;
    keel_status st = keel_db_acquire_sync(db, NULL, &n, &err);
    int64_t took = keel_now_ms() - t0;
    watchdog(0, "");
    CHECK_INT(st, KEEL_ERR_TIMEOUT); /* the new connect's deadline, not the pool's */
    CHECK(took < BOUND_MS);
    keel_conn_release(n);

    test_proxy_resume(px);
    n = acquire(db);
    CHECK_INT(q_int(n, "SELECT 5"), 5);
    keel_conn_release(n);
    keel_db_close(db);
    test_proxy_free(px);
}

/*
 * A cancel of the caller's, of an operation without a deadline, that the server never answers
 * (it fell silent, and so does the address the cancel request goes to): after 10 seconds the
 * connection is closed and the operation completes as cancelled, instead of waiting for ever.
 */
TEST(an_unanswered_cancel_without_a_deadline_closes_the_connection) {
    char purl[512];
    test_proxy *px = proxy_for(pg_url(), purl);
    if (!px)
        return;
    keel_db *db = open_url(purl, NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    outcome o = { 0 };
    CHECK_INT(keel_conn_query(c, "SELECT pg_sleep(60)", NULL, 0, on_outcome, &o, &err), KEEL_OK);
    test_proxy_stall(px);
    keel_conn_cancel(c);
    watchdog(40, "a cancel that the server never answers");
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel_loop_run(keel_db_loop(db), &o.calls), KEEL_OK);
    int64_t took = keel_now_ms() - t0;
    watchdog(0, "");
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.err.code, KEEL_ERR_CANCELLED);
    CHECK_CONTAINS(o.err.message, "did not answer the cancel");
    CHECK(took >= 9000 && took < 20000);
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_ERR_CONNECTION_LOST);
    keel_conn_release(c);
    test_proxy_resume(px);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT 6"), 6);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

int main(void) {
    RUN(bad_timeouts_are_refused);
    RUN(sqlite_statement_past_its_timeout_is_interrupted);
    RUN(postgresql_command_timeout_cancels_the_statement);
    RUN(mysql_command_timeout_cancels_the_statement);
    RUN(sqlite_command_timeout_cancels_the_statement);
    RUN(postgresql_silent_server_times_out_and_the_connection_is_replaced);
    RUN(mysql_silent_server_times_out_and_the_connection_is_replaced);
    RUN(mongodb_silent_server_times_out_and_the_connection_is_replaced);
    RUN(async_operation_past_its_deadline_calls_back_once);
    RUN(rollback_on_release_against_a_silent_server_is_bounded);
    RUN(an_unanswered_cancel_without_a_deadline_closes_the_connection);
    return TEST_SUMMARY();
}
