/* tests/c/core/test_db.c - the keel_db manager: closing it from inside its own callbacks, and the synchronous API when its loop fails. */
#include <sys/resource.h>
#include <unistd.h>

#include <keel/keel.h>

#include "support.h"

/*
 * What sync_wait once left behind when its loop failed is a pointer into a frame that has
 * returned: ASan sees a write through it only with its fake stack, which this test turns on
 * (the other C tests run without it).
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_stack_use_after_return=1"; }

static char dbdir[] = "/tmp/keel-db-XXXXXX";
static char sqlite_url[256];

/* A db on loop (NULL: a private blocking loop) with one SQLite database "main" whose every
 * statement runs on a worker thread, so that completions come from the worker pool's drain. */
static keel_db *open_sqlite(keel_loop *loop, const char *max_size) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_error err;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", sqlite_url, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.min_size", "0", &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.pool.max_size", max_size, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.options.inline_steps", "0", &err), KEEL_OK);
    keel_status st = keel_db_open(&db, cfg, loop, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  keel_db_open: %s\n", err.message);
    CHECK_INT(st, KEEL_OK);
    keel_config_free(cfg);
    return db;
}

/* Several operations of one db whose first callback closes the db. */
typedef struct closer {
    keel_db *db;
    keel_conn *conns[4];
    keel_status status[4];
    int called;
    int expected;
    int done;
} closer;

typedef struct closer_arg {
    closer *x;
    int i;
} closer_arg;

static void close_on_first_result(keel_result *res, const keel_error *err, void *arg) {
    closer_arg *a = arg;
    closer *x = a->x;
    keel_result_free(res);
    x->status[a->i] = err ? err->code : KEEL_OK;
    if (x->called++ == 0)
        keel_db_close(x->db);
    if (x->called == x->expected)
        x->done = 1;
}

TEST(closing_inside_a_worker_completion_waits_for_the_callbacks_to_return) {
    /* Before closes were deferred, this close freed the worker pool while its drain loop was
     * still handing out the other finished jobs (ASan: heap-use-after-free in drain_finished). */
    keel_loop *loop = keel_loop_new_blocking();
    closer x = { .expected = 3 };
    closer_arg args[3];
    keel_error err;
    x.db = open_sqlite(loop, "3");
    for (int i = 0; i < 3; i++)
        CHECK_INT(keel_db_acquire_sync(x.db, NULL, &x.conns[i], &err), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        args[i] = (closer_arg){ &x, i };
        CHECK_INT(
            keel_conn_query(x.conns[i], "SELECT 1", NULL, 0, close_on_first_result, &args[i], &err),
            KEEL_OK);
    }
    /* Let all three jobs finish, so that one drain of the worker pool completes them all. */
    usleep(300 * 1000);
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    /* The jobs had finished: their results were delivered before the close ran. */
    for (int i = 0; i < 3; i++)
        CHECK_INT(x.status[i], KEEL_OK);
    /* The close made the leased connections closed handles; releasing them frees them. */
    for (int i = 0; i < 3; i++) {
        CHECK_INT(
            keel_conn_query(x.conns[i], "SELECT 1", NULL, 0, close_on_first_result, &args[i], &err),
            KEEL_ERR_CLOSED);
        keel_conn_release(x.conns[i]);
    }
    CHECK_INT(x.called, 3);
    keel_loop_free(loop);
}

static void close_on_first_acquire(keel_conn *conn, const keel_error *err, void *arg) {
    closer_arg *a = arg;
    closer *x = a->x;
    x->status[a->i] = err ? err->code : KEEL_OK;
    if (x->called++ == 0)
        keel_db_close(x->db);
    /* Given back after the close was requested: the pool still takes it. */
    keel_conn_release(conn);
    if (x->called == x->expected)
        x->done = 1;
}

TEST(closing_inside_an_acquire_callback_lets_the_pool_finish_its_dispatch) {
    /* Before: the pool's dispatch loop went on reading the pool the close had freed. */
    keel_loop *loop = keel_loop_new_blocking();
    closer x = { .expected = 2 };
    closer_arg args[2];
    keel_error err;
    x.db = open_sqlite(loop, "2");
    keel_conn *a = NULL, *b = NULL;
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &a, &err), KEEL_OK);
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &b, &err), KEEL_OK);
    keel_conn_release(a);
    keel_conn_release(b);
    for (int i = 0; i < 2; i++) {
        args[i] = (closer_arg){ &x, i };
        CHECK_INT(keel_db_acquire(x.db, NULL, close_on_first_acquire, &args[i], &err), KEEL_OK);
    }
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    CHECK_INT(x.status[0], KEEL_OK);
    CHECK_INT(x.status[1], KEEL_OK);
    keel_loop_free(loop);
}

static void close_only(keel_result *res, const keel_error *err, void *arg) {
    closer *x = arg;
    keel_result_free(res);
    x->status[0] = err ? err->code : KEEL_OK;
    x->called++;
    keel_db_close(x->db);
}

TEST(closing_inside_a_callback_frees_a_private_loop_when_its_run_returns) {
    /* Before: the close freed the db's private blocking loop, which keel_loop_run went on
     * using (ASan: heap-use-after-free in fire_due_timers). */
    closer x = { 0 };
    keel_error err;
    x.db = open_sqlite(NULL, "1");
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(keel_conn_query(c, "SELECT 1", NULL, 0, close_only, &x, &err), KEEL_OK);
    /* Nothing sets done: once the db is closed the loop has nothing left to wait for, says so,
     * and is freed as the run returns. */
    CHECK_INT(keel_loop_run(keel_db_loop(x.db), &x.done), KEEL_ERR_INTERNAL);
    CHECK_INT(x.called, 1);
    CHECK_INT(x.status[0], KEEL_OK);
    keel_conn_release(c);
}

static void count_call(keel_result *res, const keel_error *err, void *arg) {
    closer *x = arg;
    (void)err;
    keel_result_free(res);
    x->called++;
}

static void refuse_new_work(keel_result *res, const keel_error *err, void *arg) {
    closer *x = arg;
    keel_result_free(res);
    x->status[0] = err ? err->code : KEEL_OK;
    keel_db_close(x->db);
    /* From the close on, the db takes no new work, even before it is actually closed. */
    keel_error e;
    x->status[1] = keel_conn_query(x->conns[1], "SELECT 1", NULL, 0, count_call, x, &e);
    x->status[2] = keel_conn_transaction(x->conns[0], KEEL_TXN_BEGIN, 0, count_call, x, &e);
    x->done = 1;
}

TEST(a_db_closed_from_a_callback_refuses_new_work_at_once) {
    keel_loop *loop = keel_loop_new_blocking();
    closer x = { 0 };
    keel_error err;
    x.db = open_sqlite(loop, "2");
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &x.conns[0], &err), KEEL_OK);
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &x.conns[1], &err), KEEL_OK);
    CHECK_INT(keel_conn_query(x.conns[0], "SELECT 1", NULL, 0, refuse_new_work, &x, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    CHECK_INT(x.status[0], KEEL_OK);
    CHECK_INT(x.status[1], KEEL_ERR_CLOSED);
    CHECK_INT(x.status[2], KEEL_ERR_CLOSED);
    CHECK_INT(x.called, 0); /* refused synchronously: their callbacks never run */
    keel_conn_release(x.conns[0]);
    keel_conn_release(x.conns[1]);
    keel_loop_free(loop);
}

static void close_again(keel_conn *conn, const keel_error *err, void *arg) {
    closer *x = arg;
    x->status[0] = err ? err->code : KEEL_OK;
    keel_conn_release(conn);
    keel_db_close(x->db); /* the close that called back is the one that frees */
    x->called++;
}

TEST(closing_again_from_a_callback_of_the_close_does_nothing) {
    /* Before: the second close freed the db under the first (ASan: double free). */
    closer x = { 0 };
    keel_error err;
    x.db = open_sqlite(NULL, "1");
    keel_conn *held = NULL;
    CHECK_INT(keel_db_acquire_sync(x.db, NULL, &held, &err), KEEL_OK);
    CHECK_INT(keel_db_acquire(x.db, NULL, close_again, &x, &err), KEEL_OK);
    keel_db_close(x.db);
    CHECK_INT(x.called, 1);
    CHECK_INT(x.status[0], KEEL_ERR_CLOSED);
    keel_conn_release(held);
}

/* ---- the synchronous API when its loop fails ---- */

/*
 * Makes keel_loop_run fail the honest way: poll(2) refuses more descriptors than RLIMIT_NOFILE
 * allows (EINVAL), which the blocking loop reports as KEEL_ERR_IO. Opening a descriptor fails
 * meanwhile too, so only calls that need none may run between these two.
 */
static struct rlimit saved_nofile;

static void forbid_descriptors(void) {
    getrlimit(RLIMIT_NOFILE, &saved_nofile);
    struct rlimit none = { 0, saved_nofile.rlim_max };
    setrlimit(RLIMIT_NOFILE, &none);
}

static void allow_descriptors(void) { setrlimit(RLIMIT_NOFILE, &saved_nofile); }

/* The single integer a statement returns on a connection leased for it, or INT64_MIN. */
static int64_t db_int(keel_db *db, const char *sql) {
    keel_result *res = NULL;
    keel_error err;
    if (keel_db_query_sync(db, NULL, sql, NULL, 0, &res, &err) != KEEL_OK) {
        fprintf(stderr, "  \"%s\": %s\n", sql, err.message);
        return INT64_MIN;
    }
    const keel_value *v = keel_result_value(res, 0, 0);
    int64_t out = v && v->type == KEEL_TYPE_INT ? v->u.i64 : INT64_MIN;
    keel_result_free(res);
    return out;
}

TEST(a_failed_loop_withdraws_the_queued_acquire) {
    /* Before: the request stayed queued with a pointer into acquire_sync's returned frame; the
     * next release served it (ASan: stack-use-after-return in sync_acquired). */
    const char *const pool[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(pg_url(), pool);
    keel_conn *held = acquire(db);
    if (!held) {
        keel_db_close(db);
        return;
    }
    keel_conn *c = NULL;
    keel_error err;
    forbid_descriptors();
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    allow_descriptors();
    CHECK_INT(st, KEEL_ERR_IO);
    CHECK_CONTAINS(err.message, "blocking loop failed");
    CHECK(c == NULL);
    keel_pool_stats stats;
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.waiting, 0);
    keel_conn_release(held);
    /* The connection goes to the next request, not to the one that gave up. */
    CHECK_INT(db_int(db, "SELECT 41 + 1"), 42);
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.leased, 0);
    CHECK_INT(stats.idle, 1);
    keel_db_close(db);
}

TEST(a_failed_loop_cancels_and_detaches_the_running_statement) {
    /* Before: the statement's callback still pointed into query_sync's returned frame, and its
     * completion wrote there (ASan: stack-use-after-return in sync_queried). */
    const char *const pool[] = { "databases.default.pool.max_size", "2", NULL };
    keel_db *db = open_url(pg_url(), pool);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result *res = NULL;
    keel_error err;
    forbid_descriptors();
    keel_status st = keel_conn_query_sync(c, "SELECT pg_sleep(0.3)", NULL, 0, &res, &err);
    allow_descriptors();
    CHECK_INT(st, KEEL_ERR_IO);
    CHECK_CONTAINS(err.message, "blocking loop failed");
    CHECK(res == NULL);
    /* Still busy until the cancelled statement has ended; released, it comes back then. */
    CHECK_INT(keel_conn_query_sync(c, "SELECT 1", NULL, 0, NULL, &err), KEEL_ERR_BUSY);
    keel_conn_release(c);
    /* Long enough for the cancelled statement to end while the loop runs. */
    CHECK_INT(db_int(db, "SELECT 7 FROM pg_sleep(0.5)"), 7);
    keel_pool_stats stats;
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.leased, 0);
    CHECK_INT(stats.idle, stats.size);
    CHECK_INT(db_int(db, "SELECT 1"), 1);
    keel_db_close(db);
}

static void never_called(keel_conn *conn, const keel_error *err, void *arg) {
    (void)conn, (void)err;
    *(int *)arg = 1;
}

static int refusing_watch(void *h, keel_watch *w, int fd, int events) {
    (void)h, (void)w, (void)fd, (void)events;
    return -1;
}

static int refusing_timer(void *h, keel_timer *t, int64_t deadline_ms) {
    (void)h, (void)t;
    return deadline_ms < 0 ? 0 : -1;
}

/* Missing arguments, names of nothing and synchronous calls without a blocking loop are refused
 * at once, and nothing is called back. */
TEST(the_api_refuses_what_it_cannot_use) {
    keel_error err;
    int called = 0;
    CHECK_INT(keel_db_open(NULL, NULL, NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_STR(err.message, "out is NULL");
    keel_db *db = open_sqlite(NULL, "1");
    CHECK_INT(keel_db_acquire(db, NULL, NULL, NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_STR(err.message, "db and callback are required");
    CHECK_INT(keel_db_warm(NULL, NULL, never_called, &called, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_db_try_acquire(db, NULL, NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_STR(err.message, "db and out are required");
    CHECK_INT(keel_db_pool_stats(db, NULL, NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_db_acquire_cancel(db, NULL, NULL), 0);
    CHECK_INT(keel_db_acquire_cancel(NULL, never_called, &called), 0);
    CHECK_INT(keel_db_acquire(db, "other", never_called, &called, &err), KEEL_ERR_UNKNOWN_DATABASE);
    CHECK_CONTAINS(err.message, "other");
    CHECK(keel_db_database_engine(db, "other") == NULL);
    CHECK_STR(keel_db_database_engine(db, NULL), "sqlite");
    CHECK(keel_db_database_name(db, 1) == NULL);
    CHECK(keel_db_database_name(NULL, 0) == NULL);
    CHECK_INT(keel_db_database_count(NULL), 0);
    CHECK(keel_db_loop(NULL) == NULL && keel_db_default_database(NULL) == NULL);
    keel_db_close(db);

    /* The synchronous calls spin a blocking loop: on a host's loop they are refused. */
    static const keel_loop_ops ops = { refusing_watch, refusing_timer };
    keel_loop *host = keel_loop_new(&ops, NULL);
    db = open_sqlite(host, "1");
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_STR(err.message, "synchronous calls need a db opened on a blocking loop");
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT 1", NULL, 0, NULL, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    keel_db_close(db);
    keel_loop_free(host);
    CHECK_INT(called, 0);
}

/* A connection still leased when its db closes is a closed handle: every call on it says so,
 * until its holder releases it. */
TEST(a_handle_left_by_close_reports_it_is_closed) {
    keel_error err;
    keel_db *db = open_sqlite(NULL, "1");
    keel_conn *c = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    keel_db_close(db);
    keel_value one = keel_int(1);
    keel_result *res = NULL;
    CHECK_INT(keel_conn_query_sync(c, "SELECT $1", &one, 1, &res, &err), KEEL_ERR_CLOSED);
    CHECK_STR(err.message, "the connection is closed");
    CHECK(res == NULL);
    CHECK_INT(keel_conn_query_many_sync(c, "SELECT $1", &one, 1, 1, &res, &err), KEEL_ERR_CLOSED);
    static const char *const cols[] = { "a" };
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "t", cols, 1, &one, 1, NULL, &err), KEEL_ERR_CLOSED);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_ERR_CLOSED);
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_ERR_CLOSED);
    keel_conn_release(c);
}

/* keel_db_acquire_within_sync: a lease when one is free; KEEL_ERR_TIMEOUT naming the database
 * when none becomes free in time, the request withdrawn so that the pool serves the next. */
TEST(acquire_within_a_deadline) {
    keel_error err;
    keel_db *db = open_sqlite(NULL, "1");
    keel_conn *a = NULL, *b = NULL;
    CHECK_INT(keel_db_acquire_within_sync(db, NULL, 5, &a, &err), KEEL_OK);
    CHECK(a != NULL);
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel_db_acquire_within_sync(db, "main", 0.2, &b, &err), KEEL_ERR_TIMEOUT);
    int64_t took = keel_now_ms() - t0;
    CHECK(b == NULL);
    CHECK(took >= 190 && took < 5000);
    CHECK_STR(err.message, "no connection to database 'main' became free within 0.2 s");
    CHECK_STR(err.sqlstate, "57014");
    CHECK_STR(err.database, "main");
    keel_pool_stats ps;
    CHECK_INT(keel_db_pool_stats(db, NULL, &ps, &err), KEEL_OK);
    CHECK_INT(ps.waiting, 0);
    keel_conn_release(a);
    CHECK_INT(keel_db_acquire_within_sync(db, NULL, 1, &b, &err), KEEL_OK);
    keel_conn_release(b);
    CHECK_INT(keel_db_acquire_within_sync(db, NULL, 0, &b, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "seconds must be > 0");
    CHECK_INT(keel_db_acquire_within_sync(db, NULL, -1, &b, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_db_acquire_within_sync(db, "other", 1, &b, &err), KEEL_ERR_UNKNOWN_DATABASE);
    CHECK_INT(keel_db_acquire_within_sync(NULL, NULL, 1, &b, &err), KEEL_ERR_INVALID_ARGUMENT);
    keel_db_close(db);

    /* On a host's loop it is refused like every synchronous call. */
    static const keel_loop_ops ops = { refusing_watch, refusing_timer };
    keel_loop *host = keel_loop_new(&ops, NULL);
    db = open_sqlite(host, "1");
    CHECK_INT(keel_db_acquire_within_sync(db, NULL, 1, &b, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_STR(err.message, "synchronous calls need a db opened on a blocking loop");
    keel_db_close(db);
    keel_loop_free(host);
}

/* keel_conn_command_sync is for document engines: an SQL connection refuses it, a closed
 * handle says it is closed. (MongoDB runs it in test_mongo.c and the Python sync tests.) */
TEST(command_sync_on_an_sql_connection) {
    keel_error err;
    keel_db *db = open_sqlite(NULL, "1");
    keel_conn *c = NULL;
    static const char ping[] = "\x0f\0\0\0\x10ping\0\x01\0\0\0\0";
    keel_result *res = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(keel_conn_command_sync(c, NULL, ping, sizeof ping - 1, &res, &err),
              KEEL_ERR_UNSUPPORTED);
    CHECK(res == NULL);
    keel_db_close(db);
    CHECK_INT(keel_conn_command_sync(c, NULL, ping, sizeof ping - 1, &res, &err), KEEL_ERR_CLOSED);
    keel_conn_release(c);
}

/* With no configuration, keel_db_open takes the environment's (KEEL_... variables), and a bad
 * variable is reported with its name. */
TEST(open_without_a_configuration_reads_the_environment) {
    keel_error err;
    keel_db *db = NULL;
    setenv("KEEL_DEFAULT", "fromenv", 1);
    setenv("KEEL_DATABASES__FROMENV__URL", sqlite_url, 1);
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_OK);
    CHECK_STR(keel_db_default_database(db), "fromenv");
    CHECK_INT(db_int(db, "SELECT 2"), 2);
    keel_db_close(db);
    setenv("KEEL_DATABASES__FROMENV__POOL__MAX_SIZE", "lots", 1);
    db = NULL;
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "KEEL_DATABASES__FROMENV__POOL__MAX_SIZE");
    CHECK(db == NULL);
    unsetenv("KEEL_DATABASES__FROMENV__POOL__MAX_SIZE");
    unsetenv("KEEL_DATABASES__FROMENV__URL");
    unsetenv("KEEL_DEFAULT");
}

/* With no configuration, keel_db_open reads the file named by KEEL_CONFIG first, as keel check
 * does; the environment's variables override it, and a file it cannot read names the variable. */
TEST(open_without_a_configuration_reads_the_keel_config_file) {
    char path[600];
    snprintf(path, sizeof path, "%s/app.yaml", dbdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "databases:\n  fromfile:\n    url: \"%s\"\n", sqlite_url);
    fclose(f);
    keel_error err;
    keel_db *db = NULL;
    setenv("KEEL_CONFIG", path, 1);
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_OK);
    CHECK_STR(keel_db_default_database(db), "fromfile");
    CHECK_INT(db_int(db, "SELECT 3"), 3);
    keel_db_close(db);
    setenv("KEEL_DATABASES__FROMFILE__POOL__MAX_SIZE", "lots", 1);
    db = NULL;
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "KEEL_DATABASES__FROMFILE__POOL__MAX_SIZE");
    unsetenv("KEEL_DATABASES__FROMFILE__POOL__MAX_SIZE");
    char missing[700];
    snprintf(missing, sizeof missing, "%s/missing.yaml", dbdir);
    setenv("KEEL_CONFIG", missing, 1);
    db = NULL;
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "KEEL_CONFIG: ");
    CHECK_CONTAINS(err.message, "missing.yaml");
    CHECK(db == NULL);
    /* An empty KEEL_CONFIG is unset; a configuration given is used as it is. */
    setenv("KEEL_CONFIG", "", 1);
    setenv("KEEL_DATABASES__FROMENV__URL", sqlite_url, 1);
    CHECK_INT(keel_db_open(&db, NULL, NULL, &err), KEEL_OK);
    CHECK_STR(keel_db_default_database(db), "fromenv");
    keel_db_close(db);
    unsetenv("KEEL_DATABASES__FROMENV__URL");
    unsetenv("KEEL_CONFIG");
    unlink(path);
}

int main(void) {
    if (!mkdtemp(dbdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(sqlite_url, sizeof sqlite_url, "sqlite:///%s/db.db", dbdir);
    RUN(closing_inside_a_worker_completion_waits_for_the_callbacks_to_return);
    RUN(closing_inside_an_acquire_callback_lets_the_pool_finish_its_dispatch);
    RUN(closing_inside_a_callback_frees_a_private_loop_when_its_run_returns);
    RUN(a_db_closed_from_a_callback_refuses_new_work_at_once);
    RUN(closing_again_from_a_callback_of_the_close_does_nothing);
    RUN(a_failed_loop_withdraws_the_queued_acquire);
    RUN(a_failed_loop_cancels_and_detaches_the_running_statement);
    RUN(the_api_refuses_what_it_cannot_use);
    RUN(a_handle_left_by_close_reports_it_is_closed);
    RUN(open_without_a_configuration_reads_the_environment);
    RUN(open_without_a_configuration_reads_the_keel_config_file);
    RUN(acquire_within_a_deadline);
    RUN(command_sync_on_an_sql_connection);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dbdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dbdir);
    return TEST_SUMMARY();
}
