/* tests/c/pool/test_pool.c - pool semantics on a real SQLite database (and a dead PostgreSQL). */
#include <stdlib.h>
#include <unistd.h>

#include <keel/keel.h>

#include "loop/loop_int.h"
#include "support.h"

static char dbdir[] = "/tmp/keel-pool-XXXXXX";
static char dburl[256];

/* A db on the blocking loop with one SQLite database "main" and the given pool settings. */
static keel_db *open_db(const char *min_size, const char *max_size, const char *timeout) {
    keel_config *cfg = NULL;
    keel_error err;
    keel_db *db = NULL;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", dburl, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.min_size", min_size, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.max_size", max_size, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.acquire_timeout", timeout, &err), KEEL_OK);
    keel_status st = keel_db_open(&db, cfg, NULL, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  keel_db_open: %s\n", err.message);
    CHECK_INT(st, KEEL_OK);
    keel_config_free(cfg);
    return db;
}

typedef struct order_log {
    int order[8];
    int n;
    int expected;
    int done;
    keel_status last_status;
} order_log;

typedef struct waiter_arg {
    order_log *log;
    int id;
} waiter_arg;

static void record_and_release(keel_conn *conn, const keel_error *err, void *arg) {
    waiter_arg *w = arg;
    w->log->last_status = err ? err->code : KEEL_OK;
    w->log->order[w->log->n++] = w->id;
    keel_conn_release(conn);
    if (w->log->n == w->log->expected)
        w->log->done = 1;
}

TEST(waiters_are_served_in_arrival_order) {
    keel_db *db = open_db("1", "1", "5");
    keel_error err;
    keel_conn *held = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &held, &err), KEEL_OK);
    order_log log = { .expected = 4 };
    waiter_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (waiter_arg){ &log, i };
        CHECK_INT(keel_db_acquire(db, "main", record_and_release, &args[i], &err), KEEL_OK);
    }
    CHECK_INT(log.n, 0); /* never called from inside keel_db_acquire */
    keel_pool_stats stats;
    memset(&stats, 0xab, sizeof stats);
    CHECK_INT(keel_db_pool_stats(db, "main", &stats, &err), KEEL_OK);
    for (size_t i = 0; i < sizeof stats.reserved / sizeof stats.reserved[0]; i++)
        CHECK(stats.reserved[i] == 0);
    CHECK_INT(stats.waiting, 4);
    CHECK_INT(stats.leased, 1);
    keel_conn_release(held);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &log.done), KEEL_OK);
    for (int i = 0; i < 4; i++)
        CHECK_INT(log.order[i], i);
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.size, 1);
    CHECK_INT(stats.idle, 1);
    CHECK_INT(stats.waiting, 0);
    keel_db_close(db);
}

TEST(a_withdrawn_request_is_never_called_back) {
    keel_db *db = open_db("1", "1", "5");
    keel_error err;
    keel_conn *held = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &held, &err), KEEL_OK);
    order_log log = { .expected = 1 };
    waiter_arg withdrawn = { &log, 1 }, kept = { &log, 2 };
    CHECK_INT(keel_db_acquire(db, NULL, record_and_release, &withdrawn, &err), KEEL_OK);
    CHECK_INT(keel_db_acquire(db, NULL, record_and_release, &kept, &err), KEEL_OK);
    CHECK_INT(keel_db_acquire_cancel(db, record_and_release, &withdrawn), 1);
    CHECK_INT(keel_db_acquire_cancel(db, record_and_release, &withdrawn), 0);
    keel_pool_stats stats;
    keel_db_pool_stats(db, NULL, &stats, &err);
    CHECK_INT(stats.waiting, 1);
    keel_conn_release(held);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &log.done), KEEL_OK);
    CHECK_INT(log.n, 1);
    CHECK_INT(log.order[0], 2);
    keel_db_close(db);
}

TEST(acquire_times_out_naming_database_and_pool_size) {
    keel_db *db = open_db("0", "1", "0.1");
    keel_error err;
    keel_conn *held = NULL, *second = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &held, &err), KEEL_OK);
    int64_t start = keel_now_ms();
    CHECK_INT(keel_db_acquire_sync(db, NULL, &second, &err), KEEL_ERR_POOL_TIMEOUT);
    CHECK(keel_now_ms() - start >= 100);
    CHECK(second == NULL);
    CHECK_CONTAINS(err.message, "'main'");
    CHECK_CONTAINS(err.message, "max_size 1");
    CHECK_STR(err.database, "main");
    keel_conn_release(held);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &second, &err), KEEL_OK);
    CHECK(second == held); /* the same connection came back clean */
    keel_conn_release(second);
    keel_db_close(db);
}

TEST(release_inside_a_transaction_rolls_back) {
    keel_db *db = open_db("1", "1", "5");
    keel_error err;
    keel_conn *c = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "CREATE TABLE IF NOT EXISTS t_rb (v INTEGER)", NULL, 0,
                                 NULL, &err),
              KEEL_OK);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    keel_value v = keel_int(42);
    CHECK_INT(keel_conn_query_sync(c, "INSERT INTO t_rb VALUES ($1)", &v, 1, NULL, &err), KEEL_OK);
    keel_conn_release(c);
    keel_result *res = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT count(*) FROM t_rb", NULL, 0, &res, &err),
              KEEL_OK);
    CHECK_INT(keel_result_value(res, 0, 0)->u.i64, 0);
    keel_result_free(res);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(try_acquire_is_the_fast_path) {
    keel_db *db = open_db("1", "1", "5");
    keel_error err;
    keel_conn *c = NULL, *d = NULL;
    /* Nothing is open before the pool is warmed. */
    CHECK_INT(keel_db_try_acquire(db, NULL, &c, &err), KEEL_ERR_BUSY);
    order_log log = { .expected = 1 };
    waiter_arg warm = { &log, 7 };
    CHECK_INT(keel_db_warm(db, NULL, record_and_release, &warm, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &log.done), KEEL_OK);
    CHECK_INT(log.last_status, KEEL_OK);
    keel_pool_stats stats;
    keel_db_pool_stats(db, NULL, &stats, &err);
    CHECK_INT(stats.idle, 1);
    CHECK_INT(keel_db_try_acquire(db, NULL, &c, &err), KEEL_OK);
    CHECK(c != NULL);
    CHECK_INT(keel_db_try_acquire(db, NULL, &d, &err), KEEL_ERR_BUSY);
    CHECK_STR(keel_conn_database(c), "main");
    CHECK_STR(keel_conn_engine(c), "sqlite");
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(unknown_database_is_named) {
    keel_db *db = open_db("0", "2", "5");
    keel_error err;
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(db, "reporting", &c, &err), KEEL_ERR_UNKNOWN_DATABASE);
    CHECK_CONTAINS(err.message, "'reporting'");
    CHECK_CONTAINS(err.message, "main");
    keel_pool_stats stats;
    CHECK_INT(keel_db_pool_stats(db, "nope", &stats, &err), KEEL_ERR_UNKNOWN_DATABASE);
    CHECK(keel_db_database_engine(db, "nope") == NULL);
    CHECK_STR(keel_db_database_engine(db, "main"), "sqlite");
    CHECK_STR(keel_db_default_database(db), "main");
    CHECK_INT(keel_db_database_count(db), 1);
    CHECK_STR(keel_db_database_name(db, 0), "main");
    keel_db_close(db);
}

static void never_called(keel_result *res, const keel_error *err, void *arg) {
    (void)res, (void)err;
    *(int *)arg = 1;
}

TEST(synchronous_errors_never_call_back) {
    keel_db *db = open_db("0", "2", "5");
    keel_error err;
    keel_conn *c = NULL;
    int called = 0;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    keel_value one = keel_int(1);
    CHECK_INT(keel_conn_query(c, "SELECT $1, $2", &one, 1, never_called, &called, &err),
              KEEL_ERR_PARAMETERS);
    CHECK_CONTAINS(err.message, "$1…$2");
    CHECK_INT(keel_conn_query(c, "SELECT 1", &one, 1, never_called, &called, &err),
              KEEL_ERR_PARAMETERS);
    CHECK_INT(keel_conn_query(c, "SELECT 'unterminated", NULL, 0, never_called, &called, &err),
              KEEL_ERR_PROGRAMMING);
    CHECK_CONTAINS(err.message, "unterminated");
    CHECK_STR(err.database, "main");
    CHECK_INT(called, 0);
    /* The connection is untouched by those errors. */
    keel_result *res = NULL;
    CHECK_INT(keel_conn_query_sync(c, "SELECT $1 + 1", &one, 1, &res, &err), KEEL_OK);
    CHECK_INT(keel_result_value(res, 0, 0)->u.i64, 2);
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

/* A host loop that refuses every timer and watch, as one out of memory does. */
static int refusing_watch(void *h, keel_watch *w, int fd, int events) {
    (void)h, (void)w, (void)fd, (void)events;
    return -1;
}

static int refusing_timer(void *h, keel_timer *t, int64_t deadline_ms) {
    (void)h, (void)t;
    return deadline_ms < 0 ? 0 : -1;
}

static void never_acquired(keel_conn *conn, const keel_error *err, void *arg) {
    (void)conn, (void)err;
    *(int *)arg = 1;
}

/* The pool serves a waiter from a call on the next loop turn; when the loop refuses to schedule
 * it, the acquire fails at once instead of waiting for an event that may never come. */
TEST(acquire_fails_when_the_loop_refuses_to_schedule_it) {
    static const keel_loop_ops ops = { refusing_watch, refusing_timer };
    keel_loop *loop = keel_loop_new(&ops, NULL);
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_error err;
    int called = 0;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", dburl, &err), KEEL_OK);
    CHECK_INT(keel_db_open(&db, cfg, loop, &err), KEEL_OK);
    keel_config_free(cfg);
    CHECK_INT(keel_db_acquire(db, "main", never_acquired, &called, &err), KEEL_ERR_INTERNAL);
    CHECK_CONTAINS(err.message, "the event loop refused a timer");
    CHECK_STR(err.database, "main");
    keel_pool_stats stats;
    CHECK_INT(keel_db_pool_stats(db, "main", &stats, &err), KEEL_OK);
    CHECK_INT(stats.waiting, 0);
    keel_db_close(db);
    CHECK_INT(called, 0);
    keel_loop_free(loop);
}

typedef struct long_query {
    keel_conn *conn;
    int done;
    keel_status status;
} long_query;

static void long_query_done(keel_result *res, const keel_error *err, void *arg) {
    long_query *q = arg;
    q->status = err ? err->code : KEEL_OK;
    keel_result_free(res);
    q->done = 1;
}

static void release_now(void *arg) {
    long_query *q = arg;
    keel_conn_release(q->conn);
}

static const char *slow_sql =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "
    "SELECT count(*) FROM c";

TEST(release_while_busy_cancels_and_returns_the_connection) {
    keel_db *db = open_db("0", "1", "5");
    keel_error err;
    long_query q = { 0 };
    CHECK_INT(keel_db_acquire_sync(db, NULL, &q.conn, &err), KEEL_OK);
    CHECK_INT(keel_conn_query(q.conn, slow_sql, NULL, 0, long_query_done, &q, &err), KEEL_OK);
    CHECK_INT(keel_conn_query(q.conn, "SELECT 1", NULL, 0, never_called, NULL, &err),
              KEEL_ERR_BUSY);
    keel_timer *t = keel__timer_new(keel_db_loop(db), release_now, &q);
    keel__timer_arm(t, keel_now_ms() + 100);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &q.done), KEEL_OK);
    CHECK_INT(q.status, KEEL_ERR_CANCELLED);
    keel__timer_free(t);
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK(c == q.conn);
    CHECK_INT(keel_conn_query_sync(c, "SELECT 1", NULL, 0, NULL, &err), KEEL_OK);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(close_with_a_leased_connection_leaves_a_closed_handle) {
    keel_db *db = open_db("1", "2", "5");
    keel_error err;
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    keel_db_close(db);
    int called = 0;
    CHECK_INT(keel_conn_query(c, "SELECT 1", NULL, 0, never_called, &called, &err),
              KEEL_ERR_CLOSED);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_UNKNOWN);
    CHECK_INT(called, 0);
    keel_conn_release(c); /* frees the handle: ASan reports a leak otherwise */
    keel_db_close(NULL);
    keel_conn_release(NULL);
}

TEST(close_fails_queued_waiters) {
    keel_db *db = open_db("0", "1", "5");
    keel_error err;
    keel_conn *held = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &held, &err), KEEL_OK);
    order_log log = { .expected = 1 };
    waiter_arg w = { &log, 1 };
    CHECK_INT(keel_db_acquire(db, NULL, record_and_release, &w, &err), KEEL_OK);
    keel_db_close(db);
    CHECK_INT(log.n, 1);
    CHECK_INT(log.last_status, KEEL_ERR_CLOSED);
    keel_conn_release(held);
}

TEST(unreachable_server_fails_the_waiter_quickly) {
    keel_config *cfg = NULL;
    keel_error err;
    keel_db *db = NULL;
    keel_config_new(&cfg, &err);
    CHECK_INT(keel_config_set_url(cfg, "postgresql://keel:sekrit@127.0.0.1:1/nothing", &err),
              KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.default.pool.acquire_timeout", "20", &err), KEEL_OK);
    CHECK_INT(keel_db_open(&db, cfg, NULL, &err), KEEL_OK);
    keel_config_free(cfg);
    keel_conn *c = NULL;
    int64_t start = keel_now_ms();
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
    CHECK(keel_now_ms() - start < 5000); /* the connect error, not the 20 s acquire timeout */
    CHECK(strstr(err.message, "sekrit") == NULL);
    CHECK_STR(err.database, "default");
    /* The pool stays usable: the next attempt fails the same way rather than hanging. */
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
    keel_pool_stats stats;
    keel_db_pool_stats(db, NULL, &stats, &err);
    CHECK_INT(stats.size, 0);
    keel_db_close(db);
}

/*
 * Requests for a database whose every connect fails at once (its password is a ${file:} secret
 * that does not exist), by a caller that asks again as soon as it gets the error.
 */
typedef struct retrier {
    keel_db *db;
    int stop;         /* set by the timer: ask no more */
    int done;         /* the last request came back after stop */
    long attempts;    /* requests that came back with an error */
    long wrong;       /* came back with anything but the connect error */
    int64_t asked_at; /* of the request in flight */
    int64_t longest;  /* the longest wait for an answer */
    int64_t deadline; /* of the timer */
    int64_t fired_at; /* when the timer ran */
    keel_conn *conn;  /* a connection once the secret exists */
} retrier;

#define RETRY_LIMIT 20000

static void ask_again(keel_conn *conn, const keel_error *err, void *arg) {
    retrier *r = arg;
    int64_t waited = keel_now_ms() - r->asked_at;
    if (waited > r->longest)
        r->longest = waited;
    if (conn) {
        r->conn = conn;
        r->done = 1;
        return;
    }
    r->attempts++;
    if (err->code != KEEL_ERR_CONFIG || !strstr(err->message, "keel-no-such-secret"))
        r->wrong++;
    if (r->stop || r->attempts >= RETRY_LIMIT) {
        r->done = 1;
        return;
    }
    keel_error e;
    r->asked_at = keel_now_ms();
    if (keel_db_acquire(r->db, NULL, ask_again, r, &e) != KEEL_OK)
        r->done = 1;
}

static void stop_asking(void *arg) {
    retrier *r = arg;
    r->fired_at = keel_now_ms();
    r->stop = 1;
}

TEST(failed_connects_back_off_without_starving_the_loop) {
    char secret[300];
    snprintf(secret, sizeof secret, "%s/keel-no-such-secret", dbdir);
    char pw[320];
    snprintf(pw, sizeof pw, "${file:%s}", secret);
    keel_config *cfg = NULL;
    keel_error err;
    retrier r = { 0 };
    keel_config_new(&cfg, &err);
    CHECK_INT(keel_config_set_url(cfg, pg_url(), &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.default.password", pw, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.default.pool.max_size", "1", &err), KEEL_OK);
    CHECK_INT(keel_db_open(&r.db, cfg, NULL, &err), KEEL_OK);
    keel_config_free(cfg);
    if (!r.db)
        return;
    keel_loop *loop = keel_db_loop(r.db);
    keel_timer *t = keel__timer_new(loop, stop_asking, &r);
    int64_t start = keel_now_ms();
    r.deadline = start + 1500;
    keel__timer_arm(t, r.deadline);
    r.asked_at = start;
    CHECK_INT(keel_db_acquire(r.db, NULL, ask_again, &r, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(loop, &r.done), KEEL_OK);
    double seconds = (double)(keel_now_ms() - start) / 1000.0;
    printf(
        "# %ld connect attempts in %.2f s; the longest wait for an answer %lld ms; the timer ran "
        "%lld ms late\n",
        r.attempts, seconds, (long long)r.longest,
        (long long)(r.fired_at ? r.fired_at - r.deadline : -1));
    /* The timer on the same loop ran, on time, while the caller kept asking. */
    CHECK(r.fired_at != 0);
    CHECK(r.fired_at - r.deadline < 1000);
    /* Attempts are spaced out (50 ms doubling up to 2 s): a handful, not thousands. */
    CHECK(r.attempts >= 2);
    CHECK(r.attempts <= 20);
    /* Every request got the connect error, soon: not the 30 s acquire timeout. */
    CHECK_INT(r.wrong, 0);
    CHECK(r.longest < 5000);

    /* Once the secret exists, the pool connects again. */
    FILE *f = fopen(secret, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("anything", f); /* the test server trusts local connections */
        fclose(f);
    }
    r.done = 0;
    r.stop = 0;
    r.asked_at = keel_now_ms();
    CHECK_INT(keel_db_acquire(r.db, NULL, ask_again, &r, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(loop, &r.done), KEEL_OK);
    CHECK(r.conn != NULL);
    keel_conn_release(r.conn);
    keel__timer_free(t);
    keel_db_close(r.db);
    remove(secret);
}

int main(void) {
    if (!mkdtemp(dbdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dburl, sizeof dburl, "sqlite:///%s/pool.db", dbdir);
    RUN(waiters_are_served_in_arrival_order);
    RUN(a_withdrawn_request_is_never_called_back);
    RUN(acquire_times_out_naming_database_and_pool_size);
    RUN(release_inside_a_transaction_rolls_back);
    RUN(try_acquire_is_the_fast_path);
    RUN(unknown_database_is_named);
    RUN(synchronous_errors_never_call_back);
    RUN(acquire_fails_when_the_loop_refuses_to_schedule_it);
    RUN(release_while_busy_cancels_and_returns_the_connection);
    RUN(close_with_a_leased_connection_leaves_a_closed_handle);
    RUN(close_fails_queued_waiters);
    RUN(unreachable_server_fails_the_waiter_quickly);
    RUN(failed_connects_back_off_without_starving_the_loop);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dbdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dbdir);
    return TEST_SUMMARY();
}
