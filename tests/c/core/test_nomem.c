/* tests/c/core/test_nomem.c - out of memory: each of libkeel's allocations fails in turn; every call reports it or succeeds, never crashes, hangs or leaks. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/buf.h"
#include "core/config_int.h"
#include "core/result_int.h"
#include "core/url.h"
#include "query/placeholder.h"
#include "support.h"
#include "test.h"

#include <bson/bson.h>
#include <keel/keel.h>

/*
 * This program is linked with -Wl,--wrap for malloc, calloc, realloc, strdup and strndup
 * (tests/c/meson.build): the calls libkeel's objects make reach the __wrap_ functions below,
 * while the C library, libpq, libyaml and the engines' client libraries keep their own. The
 * library has no hook of its own for this; the linker gives the test one.
 *
 * countdown > 0 makes the countdown-th allocation from now fail (and only that one); 0 lets all
 * pass. Worker threads allocate too, hence the atomics. How many allocations a run makes can
 * depend on timing (how the server's replies arrive): each run fails one of its own.
 */
static atomic_long countdown;

static int fail_now(void) {
    long left = atomic_load(&countdown);
    while (left > 0 && !atomic_compare_exchange_weak(&countdown, &left, left - 1))
        ;
    return left == 1;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n) {
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n) {
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strndup(s, n);
}

/* A scenario: a sequence of calls that returns the first failure, or KEEL_ERR_INTERNAL (with a
 * message) when it succeeded with a wrong outcome. It frees everything it made either way. */
typedef keel_status (*scenario)(keel_error *err);

static keel_status wrong(keel_error *err, const char *what) {
    err->code = KEEL_ERR_INTERNAL;
    snprintf(err->message, sizeof err->message, "wrong outcome: %s", what);
    return KEEL_ERR_INTERNAL;
}

/*
 * True when a failed run reported its failure as one out of memory must be reported: as
 * KEEL_ERR_NOMEM, or, where the whole stack runs (whole), also as the two reports of a resource
 * a lower layer could not get: the event loop refusing a timer or a watch (KEEL_ERR_INTERNAL,
 * "the event loop refused ...") and worker threads that could not start (KEEL_ERR_CONNECT).
 * Never a stalled loop, an unrelated status or a status err does not repeat.
 */
static int reported(keel_status st, const keel_error *err, int whole) {
    if (err->code != st)
        return 0;
    if (st == KEEL_ERR_NOMEM)
        return 1;
    if (!whole)
        return 0;
    if (st == KEEL_ERR_INTERNAL)
        return strstr(err->message, "the event loop refused") != NULL;
    if (st == KEEL_ERR_CONNECT)
        return strstr(err->message, "cannot start the worker threads") != NULL;
    return 0;
}

/*
 * Runs s once with the n-th allocation failing, for n = 1, 2, ... until a run makes fewer than
 * n allocations; that last run must succeed. Every other run must succeed or report the
 * failure (see reported). Returns the number of allocations of a full run.
 */
static long exhaust(const char *name, scenario s, int whole) {
    for (long n = 1; n < 200000; n++) {
        keel_error err;
        keel_error_clear(&err);
        atomic_store(&countdown, n);
        keel_status st = s(&err);
        long left = atomic_exchange(&countdown, 0);
        if (left > 0) {
            if (st != KEEL_OK)
                fprintf(stderr, "  %s without a failed allocation: %s: %s\n", name,
                        keel_status_name(st), err.message);
            CHECK_INT(st, KEEL_OK);
            printf("# %s: %ld allocations, each failed once\n", name, n - 1);
            return n - 1;
        }
        if (st != KEEL_OK && !reported(st, &err, whole)) {
            fprintf(stderr, "  %s, allocation %ld failed: %s (err.code %s): %s\n", name, n,
                    keel_status_name(st), keel_status_name(err.code), err.message);
            CHECK(!"the failed allocation was reported as out of memory");
        }
    }
    CHECK(!"the scenario never ran out of allocations to fail");
    return -1;
}

/* ---- scenarios ---- */

static const char YAML[] = "default: main\n"
                           "databases:\n"
                           "  main:\n"
                           "    url: \"postgresql://app:s3cret@db1.example:5433/orders\"\n"
                           "    pool: {min_size: 1, max_size: 8, acquire_timeout: 2.5}\n"
                           "    options: {application_name: billing, connect_timeout: 3}\n"
                           "  events:\n"
                           "    engine: mysql\n"
                           "    host: db2.example\n"
                           "    user: ev\n"
                           "    password: \"${env:KEEL_TEST_NOMEM_PASSWORD}\"\n"
                           "  local:\n"
                           "    url: \"sqlite:///tmp/keel-nomem.db\"\n";

static keel_status config_scenario(keel_error *err) {
    keel_config *cfg = NULL, *copy = NULL;
    char *resolved = NULL;
    keel_status st = keel_config_new(&cfg, err);
    if (st == KEEL_OK)
        st = keel__config_load_yaml(cfg, "nomem.yaml", YAML, sizeof YAML - 1, err);
    if (st == KEEL_OK)
        st = keel_config_set_url(cfg, "mongodb://u:p@h1:27017,h2:27018/app?replicaSet=rs0", err);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "databases.main.pool.max_size", "12", err);
    if (st == KEEL_OK)
        st = keel_config_apply_env(cfg, err);
    if (st == KEEL_OK)
        st = keel_config_validate(cfg, err);
    if (st == KEEL_OK && !(copy = keel__config_clone(cfg))) {
        err->code = KEEL_ERR_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
        st = KEEL_ERR_NOMEM;
    }
    if (st == KEEL_OK)
        st = keel__config_resolve("pw=${env:KEEL_TEST_NOMEM_PASSWORD};",
                                  "databases.events.password", &resolved, err);
    if (st == KEEL_OK && strcmp(resolved, "pw=hunter2;") != 0)
        st = wrong(err, resolved);
    if (st == KEEL_OK && keel_config_database_count(copy) != 5)
        st = wrong(err, "database count");
    if (st == KEEL_OK && strcmp(keel_config_database_engine(copy, "events"), "mysql") != 0)
        st = wrong(err, "events engine");
    free(resolved);
    keel_config_free(copy);
    keel_config_free(cfg);
    return st;
}

static keel_status url_scenario(keel_error *err) {
    static const char *const urls[] = {
        "postgresql://app:pw@[::1]:5432/db?sslmode=require&application_name=a%20b",
        "mysql://root@127.0.0.1/keel?charset=utf8mb4",
        "sqlite:///var/lib/app.db?mode=ro",
        "mongodb://u:p%40ss@h1,h2:27018/app?replicaSet=rs0&authSource=admin",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        keel__url u;
        keel_status st = keel__url_parse(urls[i], &u, err);
        if (st != KEEL_OK)
            return st;
        keel__url_free(&u);
        char *red = keel__url_redact(urls[i]);
        if (!red) {
            err->code = KEEL_ERR_NOMEM;
            return KEEL_ERR_NOMEM;
        }
        int leaked = strstr(red, "pw@") != NULL || strstr(red, "p%40ss") != NULL;
        free(red);
        if (leaked)
            return wrong(err, urls[i]);
    }
    return KEEL_OK;
}

static keel_status placeholder_scenario(keel_error *err) {
    static const char sql[] = "SELECT $1, '$2', \"$3\", /* $5 */ x FROM t WHERE a = $2 "
                              "AND b IN ($1, $3) -- $9\n";
    for (int style = KEEL__PH_POSTGRES; style <= KEEL__PH_MYSQL; style++) {
        keel__buf out = { 0 };
        size_t max = 0, *map = NULL, nmap = 0;
        keel_status st =
            keel__placeholders_rewrite(sql, (keel__ph_style)style, &out, &max, &map, &nmap, err);
        if (st == KEEL_OK && max != 3)
            st = wrong(err, "highest index");
        if (st == KEEL_OK && style == KEEL__PH_MYSQL && nmap != 4)
            st = wrong(err, "MySQL map");
        free(map);
        keel__buf_free(&out);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static keel_status nomem(keel_error *err) {
    err->code = KEEL_ERR_NOMEM;
    return KEEL_ERR_NOMEM;
}

static keel_status buffers_scenario(keel_error *err) {
    keel__buf b = { 0 };
    keel__arena a = { 0 };
    keel_status st = KEEL_OK;
    for (int i = 0; i < 300 && st == KEEL_OK; i++)
        if (keel__buf_printf(&b, "%d,", i) != 0 || keel__buf_puts(&b, "ab") != 0 ||
            keel__buf_putc(&b, ';') != 0)
            st = nomem(err);
    for (int i = 0; i < 300 && st == KEEL_OK; i++)
        if (!keel__arena_strndup(&a, "some text to copy", 9) || !keel__arena_alloc(&a, 100))
            st = nomem(err);
    if (st == KEEL_OK && strncmp(b.data, "0,ab;1,ab;", 10) != 0)
        st = wrong(err, "buffer contents");
    keel__buf_free(&b);
    keel__arena_free(&a);
    return st;
}

static keel_status result_scenario(keel_error *err) {
    keel_result *res = keel__result_new(2);
    if (!res)
        return nomem(err);
    keel_status st = KEEL_OK;
    if (keel__result_set_column(res, 0, "id", 2, KEEL_TYPE_INT) != 0 ||
        keel__result_set_column(res, 1, "name", 4, KEEL_TYPE_TEXT) != 0)
        st = nomem(err);
    for (int i = 0; i < 2000 && st == KEEL_OK; i++) {
        keel_value *row = keel__result_add_row(res);
        if (!row || keel__result_set_text(res, &row[1], KEEL_TYPE_TEXT, "a name", 6) != 0) {
            st = nomem(err);
            break;
        }
        row[0] = keel_int(i);
    }
    if (st == KEEL_OK &&
        (keel_result_nrows(res) != 2000 || keel_result_value(res, 1999, 0)->u.i64 != 1999 ||
         strcmp(keel_result_value(res, 7, 1)->u.str.ptr, "a name") != 0))
        st = wrong(err, "rows");
    keel_result_free(res);
    return st;
}

/* The whole synchronous path on SQLite: configuration, db, pool, worker threads, engine. */
static keel_status sqlite_scenario(keel_error *err) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_conn *conn = NULL;
    keel_result *res = NULL;
    keel_status st = keel_config_new(&cfg, err);
    if (st == KEEL_OK)
        st = keel_config_set_url(cfg, "sqlite::memory:", err);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "databases.default.pool.max_size", "1", err);
    if (st == KEEL_OK)
        st = keel_db_open(&db, cfg, NULL, err);
    keel_config_free(cfg);
    if (st == KEEL_OK)
        st = keel_db_acquire_sync(db, NULL, &conn, err);
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn, "CREATE TABLE t (id INTEGER, name TEXT)", NULL, 0, NULL,
                                  err);
    keel_value params[2] = { keel_int(7), keel_text("seven") };
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn, "INSERT INTO t VALUES ($1, $2)", params, 2, NULL, err);
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn, "SELECT id, name FROM t WHERE id = $1", params, 1, &res,
                                  err);
    if (st == KEEL_OK &&
        (keel_result_nrows(res) != 1 || strcmp(keel_result_value(res, 0, 1)->u.str.ptr, "seven")))
        st = wrong(err, "row read back");
    keel_result_free(res);
    keel_conn_release(conn);
    if (db)
        keel_db_close(db);
    return st;
}

/* The server of server_scenario (a PostgreSQL or MySQL URL). */
static const char *server_url;

/*
 * The whole synchronous path on a server engine: connect, statements with parameters of most
 * types, a batch, a transaction and a bulk load into a temporary table, results read back.
 */
static keel_status server_scenario(keel_error *err) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_conn *conn = NULL;
    keel_result *res = NULL;
    keel_status st = keel_config_new(&cfg, err);
    if (st == KEEL_OK)
        st = keel_config_set_url(cfg, server_url, err);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "databases.default.pool.max_size", "1", err);
    if (st == KEEL_OK)
        st = keel_db_open(&db, cfg, NULL, err);
    keel_config_free(cfg);
    if (st == KEEL_OK)
        st = keel_db_acquire_sync(db, NULL, &conn, err);
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn,
                                  "CREATE TEMPORARY TABLE nomem (id BIGINT, name TEXT, "
                                  "f DOUBLE PRECISION, d DATE, b BOOLEAN)",
                                  NULL, 0, NULL, err);
    keel_value row[5] = { keel_int(7), keel_text("seven"), keel_float(0.5), keel_date(19000),
                          keel_bool(1) };
    if (st == KEEL_OK)
        st = keel_conn_transaction_sync(conn, KEEL_TXN_BEGIN, 0, err);
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn, "INSERT INTO nomem VALUES ($1, $2, $3, $4, $5)", row, 5,
                                  NULL, err);
    keel_value many[4] = { keel_int(8), keel_text("eight"), keel_int(9), keel_text("nine") };
    if (st == KEEL_OK)
        st = keel_conn_query_many_sync(conn, "INSERT INTO nomem (id, name) VALUES ($1, $2)", many,
                                       2, 2, NULL, err);
    if (st == KEEL_OK)
        st = keel_conn_transaction_sync(conn, KEEL_TXN_COMMIT, 0, err);
    static const char *const cols[] = { "id", "name" };
    keel_value loaded[4] = { keel_int(10), keel_text("ten"), keel_int(11), keel_null() };
    int64_t nloaded = 0;
    if (st == KEEL_OK)
        st = keel_conn_copy_in_sync(conn, NULL, "nomem", cols, 2, loaded, 2, &nloaded, err);
    if (st == KEEL_OK && nloaded != 2)
        st = wrong(err, "rows loaded");
    if (st == KEEL_OK)
        st = keel_conn_query_sync(conn,
                                  "SELECT id, name, f, d, b FROM nomem WHERE id >= $1 ORDER BY id",
                                  row, 1, &res, err);
    if (st == KEEL_OK &&
        (keel_result_nrows(res) != 5 || strcmp(keel_result_value(res, 0, 1)->u.str.ptr, "seven") ||
         keel_result_value(res, 0, 3)->u.date != 19000 ||
         keel_result_value(res, 4, 1)->type != KEEL_TYPE_NULL))
        st = wrong(err, "rows read back");
    keel_result_free(res);
    keel_conn_release(conn);
    if (db)
        keel_db_close(db);
    return st;
}

/* What a MongoDB command delivered, for mongo_scenario. */
typedef struct mongo_call {
    int done;
    keel_error err;
    size_t docs; /* documents in the reply's cursor.firstBatch */
} mongo_call;

static void mongo_done(keel_result *res, const keel_error *err, void *arg) {
    mongo_call *x = arg;
    x->done = 1;
    keel_error_clear(&x->err);
    if (err) {
        x->err = *err;
    } else {
        const keel_value *v = keel_result_value(res, 0, 0);
        bson_t reply;
        bson_iter_t it, batch;
        x->docs = 0;
        if (v && v->type == KEEL_TYPE_DOCUMENT &&
            bson_init_static(&reply, (const uint8_t *)v->u.str.ptr, v->u.str.len) &&
            bson_iter_init(&it, &reply) &&
            bson_iter_find_descendant(&it, "cursor.firstBatch", &batch) &&
            BSON_ITER_HOLDS_ARRAY(&batch) && bson_iter_recurse(&batch, &it))
            while (bson_iter_next(&it))
                x->docs++;
    }
    keel_result_free(res);
}

/* Runs cmd on conn and the db's loop until it completes; the number of documents the reply's
 * first batch holds goes to *docs (may be NULL). x outlives the db: when the loop fails, the
 * command is still pending, and keel_db_close completes it (KEEL_ERR_CLOSED) into x. */
static keel_status mongo_run(keel_db *db, keel_conn *conn, mongo_call *x, const bson_t *cmd,
                             size_t *docs, keel_error *err) {
    *x = (mongo_call){ 0 };
    keel_status st =
        keel_conn_command(conn, NULL, bson_get_data(cmd), cmd->len, mongo_done, x, err);
    if (st != KEEL_OK)
        return st;
    st = keel_loop_run(keel_db_loop(db), &x->done);
    if (st != KEEL_OK) { /* the loop reports its status alone */
        err->code = st;
        snprintf(err->message, sizeof err->message, "the blocking loop failed");
        return st;
    }
    if (x->err.code != KEEL_OK) {
        *err = x->err;
        return x->err.code;
    }
    if (docs)
        *docs = x->docs;
    return KEEL_OK;
}

/* The whole path on MongoDB: connect (worker threads, libmongoc's client), commands whose
 * documents go to the server and back, a transaction. */
static keel_status mongo_scenario(keel_error *err) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_conn *conn = NULL;
    mongo_call call;
    keel_status st = keel_config_new(&cfg, err);
    if (st == KEEL_OK)
        st = keel_config_set_url(cfg, mongo_url(), err);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "databases.default.pool.max_size", "1", err);
    if (st == KEEL_OK)
        st = keel_db_open(&db, cfg, NULL, err);
    keel_config_free(cfg);
    if (st == KEEL_OK)
        st = keel_db_acquire_sync(db, NULL, &conn, err);
    bson_t *clear = BCON_NEW("delete", "nomem", "deletes", "[", "{", "q", "{", "}", "limit",
                             BCON_INT32(0), "}", "]");
    bson_t *insert =
        BCON_NEW("insert", "nomem", "documents", "[", "{", "_id", BCON_INT32(1), "name", "one", "}",
                 "{", "_id", BCON_INT32(2), "name", "two", "}", "]");
    bson_t *find =
        BCON_NEW("find", "nomem", "filter", "{", "}", "sort", "{", "_id", BCON_INT32(1), "}");
    if (st == KEEL_OK)
        st = keel_conn_ping_sync(conn, err);
    if (st == KEEL_OK)
        st = mongo_run(db, conn, &call, clear, NULL, err);
    if (st == KEEL_OK)
        st = keel_conn_transaction_sync(conn, KEEL_TXN_BEGIN, 0, err);
    if (st == KEEL_OK)
        st = mongo_run(db, conn, &call, insert, NULL, err);
    if (st == KEEL_OK)
        st = keel_conn_transaction_sync(conn, KEEL_TXN_COMMIT, 0, err);
    size_t docs = 0;
    if (st == KEEL_OK)
        st = mongo_run(db, conn, &call, find, &docs, err);
    if (st == KEEL_OK && docs != 2)
        st = wrong(err, "documents read back");
    bson_destroy(clear);
    bson_destroy(insert);
    bson_destroy(find);
    keel_conn_release(conn);
    if (db)
        keel_db_close(db);
    return st;
}

TEST(config_reports_every_failed_allocation) { CHECK(exhaust("config", config_scenario, 0) > 50); }
TEST(url_reports_every_failed_allocation) { CHECK(exhaust("url", url_scenario, 0) > 4); }
TEST(placeholders_report_every_failed_allocation) {
    CHECK(exhaust("placeholders", placeholder_scenario, 0) > 2);
}
TEST(buffers_report_every_failed_allocation) { CHECK(exhaust("buffers", buffers_scenario, 0) > 5); }
TEST(results_report_every_failed_allocation) { CHECK(exhaust("results", result_scenario, 0) > 5); }
TEST(sqlite_reports_every_failed_allocation) { CHECK(exhaust("sqlite", sqlite_scenario, 1) > 10); }
TEST(postgresql_reports_every_failed_allocation) {
    server_url = pg_url();
    CHECK(exhaust("postgresql", server_scenario, 1) > 10);
}
TEST(mysql_reports_every_failed_allocation) {
    server_url = my_url();
    CHECK(exhaust("mysql", server_scenario, 1) > 10);
}
TEST(mongodb_reports_every_failed_allocation) { CHECK(exhaust("mongodb", mongo_scenario, 1) > 10); }

int main(void) {
    setenv("KEEL_TEST_NOMEM_PASSWORD", "hunter2", 1);
    setenv("KEEL_DATABASES__FROMENV__URL", "sqlite::memory:", 1);
    RUN(config_reports_every_failed_allocation);
    RUN(url_reports_every_failed_allocation);
    RUN(placeholders_report_every_failed_allocation);
    RUN(buffers_report_every_failed_allocation);
    RUN(results_report_every_failed_allocation);
    RUN(sqlite_reports_every_failed_allocation);
    RUN(postgresql_reports_every_failed_allocation);
    RUN(mysql_reports_every_failed_allocation);
    RUN(mongodb_reports_every_failed_allocation);
    return TEST_SUMMARY();
}
