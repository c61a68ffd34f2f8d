/* tests/c/engines/test_lost.c - a server that drops the connection in the middle of an operation, every engine. */
#include <bson/bson.h>
#include <pthread.h>
#include <unistd.h>

#include "support.h"
#include "support/proxy.h"

/*
 * Each test reaches a server through a proxy (support/proxy.h) and closes the connection from
 * the proxy while an operation is under way: waiting for a result or streaming one, sending a
 * batch or a bulk load the server does not read, committing, rolling back a released
 * connection, or in the middle of the handshake. What a user relies on:
 * the operation ends with KEEL_ERR_CONNECTION_LOST (KEEL_ERR_CONNECT for a connect) naming the
 * database and the engine, within moments; a transaction the connection had open is not
 * committed; the pool drops the dead connection and the next acquire gets a working one.
 */

/* Bulk values large enough that the kernel's socket buffers fill while the proxy reads
 * nothing: the client then waits to write when the cut comes. */
#define BULK_ROWS 20000
#define BULK_TEXT 1024

/* Closes the proxy's connections after a delay, from a thread of its own, while the test's
 * thread is inside a blocking call. */
typedef struct cutter {
    pthread_t thread;
    test_proxy *px;
    unsigned ms;
} cutter;

static void *cut_later(void *arg) {
    cutter *c = arg;
    usleep(c->ms * 1000u);
    test_proxy_cut(c->px);
    return NULL;
}

static void cut_in(cutter *c, test_proxy *px, unsigned ms) {
    c->px = px;
    c->ms = ms;
    CHECK_INT(pthread_create(&c->thread, NULL, cut_later, c), 0);
}

static void cut_done(cutter *c) { pthread_join(c->thread, NULL); }

/* A proxy in front of url's server, and url through it in purl. NULL when it cannot start. */
static test_proxy *proxy_for(const char *url, char *purl, size_t size) {
    char host[256];
    int port = 0;
    CHECK_INT(test_url_host_port(url, host, sizeof host, &port), 0);
    test_proxy *px = test_proxy_start(host, port);
    CHECK(px && test_proxy_url(px, url, purl, size));
    return px;
}

/* The error a lost connection must give: its code, engine and database named. */
static void check_lost(const keel_error *err, keel_status code, const char *engine) {
    if (err->code != code)
        fprintf(stderr, "  got %s: %s\n", keel_status_name(err->code), err->message);
    CHECK_INT(err->code, code);
    CHECK_STR(err->engine, engine);
    CHECK_STR(err->database, "default");
}

/* The pool's open connections (idle, leased or being opened). */
static size_t pool_size(keel_db *db) {
    keel_pool_stats stats;
    keel_error err;
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    return stats.size;
}

/* rows * ncols values: an integer id, then (ncols 2) a text of BULK_TEXT bytes. */
static keel_value *bulk_rows(size_t rows, size_t ncols, char *text) {
    keel_value *v = calloc(rows * ncols, sizeof *v);
    memset(text, 'x', BULK_TEXT);
    text[BULK_TEXT] = '\0';
    for (size_t i = 0; v && i < rows; i++) {
        v[i * ncols] = keel_int((int64_t)i);
        if (ncols > 1)
            v[i * ncols + 1] = keel_text(text);
    }
    return v;
}

/* ---- SQL engines ---- */

typedef struct sql_engine {
    const char *engine;
    const char *url;
    const char *sleep5; /* a statement that answers after five seconds */
    const char *create; /* the table the tests write to */
    const char *drop;
} sql_engine;

static const sql_engine pg = {
    "postgresql",
    NULL,
    "SELECT pg_sleep(5)",
    "CREATE TABLE keel_lost (id BIGINT, note TEXT)",
    "DROP TABLE IF EXISTS keel_lost",
};

static const sql_engine my = {
    "mysql",
    NULL,
    "SELECT SLEEP(5)",
    "CREATE TABLE keel_lost (id BIGINT, note TEXT)",
    "DROP TABLE IF EXISTS keel_lost",
};

/* Runs sql on a connection of its own straight to the server (no proxy). */
static int64_t direct_int(const char *url, const char *sql) {
    keel_db *db = open_url(url, NULL);
    keel_conn *c = acquire(db);
    int64_t v = c ? q_int(c, sql) : INT64_MIN;
    keel_conn_release(c);
    if (db)
        keel_db_close(db);
    return v;
}

static void direct_exec(const char *url, const char *sql) {
    keel_db *db = open_url(url, NULL);
    keel_conn *c = acquire(db);
    keel_result_free(q(c, sql, NULL, 0));
    keel_conn_release(c);
    if (db)
        keel_db_close(db);
}

/*
 * A statement waiting for its result inside a transaction: the cut ends it with
 * CONNECTION_LOST, the row the transaction inserted is not committed, the connection reports
 * an unknown transaction state and is dropped on release; the next lease works.
 */
static void lost_while_waiting(const sql_engine *e) {
    char purl[512];
    test_proxy *px = proxy_for(e->url, purl, sizeof purl);
    if (!px)
        return;
    direct_exec(e->url, e->drop);
    direct_exec(e->url, e->create);
    keel_db *db = open_url(purl, NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_value row[2] = { keel_int(1), keel_text("uncommitted") };
    keel_result_free(q(c, "INSERT INTO keel_lost VALUES ($1, $2)", row, 2));
    CHECK_INT(pool_size(db), 1);

    cutter cut;
    watchdog(30, "a statement whose connection is cut while it waits");
    cut_in(&cut, px, 300);
    err = q_fail(c, e->sleep5, NULL, 0);
    cut_done(&cut);
    watchdog(0, "");
    check_lost(&err, KEEL_ERR_CONNECTION_LOST, e->engine);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_UNKNOWN);
    /* The connection stays dead: the next statement is refused the same way, at once. */
    err = q_fail(c, "SELECT 1", NULL, 0);
    check_lost(&err, KEEL_ERR_CONNECTION_LOST, e->engine);
    keel_conn_release(c);
    CHECK_INT(pool_size(db), 0);

    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT 6 * 7"), 42);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM keel_lost"), 0);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
    CHECK_INT(direct_int(e->url, "SELECT COUNT(*) FROM keel_lost"), 0);
    direct_exec(e->url, e->drop);
}

/*
 * A batch (query_many) and a bulk load (copy_in) the server stops reading: the client fills
 * its socket and waits to write when the cut comes. Both end with CONNECTION_LOST; nothing was
 * loaded and the pool serves again.
 */
static void lost_while_sending(const sql_engine *e) {
    char purl[512];
    test_proxy *px = proxy_for(e->url, purl, sizeof purl);
    if (!px)
        return;
    direct_exec(e->url, e->drop);
    direct_exec(e->url, e->create);
    keel_db *db = open_url(purl, NULL);
    static char text[BULK_TEXT + 1];
    keel_value *rows = bulk_rows(BULK_ROWS, 2, text);
    CHECK(rows != NULL);
    for (int bulk = 0; bulk < 2 && rows; bulk++) {
        keel_conn *c = acquire(db);
        if (!c)
            break;
        keel_error err;
        CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
        test_proxy_stall(px);
        cutter cut;
        watchdog(30,
                 bulk ? "a bulk load whose connection is cut" : "a batch whose connection is cut");
        cut_in(&cut, px, 300);
        static const char *const cols[] = { "id", "note" };
        keel_status st =
            bulk
                ? keel_conn_copy_in_sync(c, NULL, "keel_lost", cols, 2, rows, BULK_ROWS, NULL, &err)
                : keel_conn_query_many_sync(c, "INSERT INTO keel_lost VALUES ($1, $2)", rows,
                                            BULK_ROWS, 2, NULL, &err);
        cut_done(&cut);
        watchdog(0, "");
        CHECK_INT(st, KEEL_ERR_CONNECTION_LOST);
        check_lost(&err, KEEL_ERR_CONNECTION_LOST, e->engine);
        keel_conn_release(c);
        CHECK_INT(pool_size(db), 0);
        test_proxy_resume(px);
        c = acquire(db);
        CHECK_INT(q_int(c, "SELECT COUNT(*) FROM keel_lost"), 0);
        keel_conn_release(c);
    }
    free(rows);
    keel_db_close(db);
    test_proxy_free(px);
    direct_exec(e->url, e->drop);
}

/*
 * A connection released inside a transaction is rolled back by the pool before it serves again;
 * when the connection is cut during that rollback, the pool drops it: nothing of the
 * transaction is committed, and the next lease gets a new connection.
 */
static void lost_while_rolling_back(const sql_engine *e) {
    char purl[512];
    test_proxy *px = proxy_for(e->url, purl, sizeof purl);
    if (!px)
        return;
    direct_exec(e->url, e->drop);
    direct_exec(e->url, e->create);
    keel_db *db = open_url(purl, NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_value row[2] = { keel_int(1), keel_text("rolled back") };
    keel_result_free(q(c, "INSERT INTO keel_lost VALUES ($1, $2)", row, 2));
    test_proxy_stall(px);
    keel_conn_release(c); /* the ROLLBACK is sent and meets the silence */
    CHECK_INT(pool_size(db), 1);
    test_proxy_cut(px);
    test_proxy_resume(px);
    /* The next lease waits for the pool to see the cut, then gets a new connection. */
    watchdog(30, "a lease after the rollback of the last one was cut");
    c = acquire(db);
    watchdog(0, "");
    CHECK(c != NULL);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM keel_lost"), 0);
    CHECK_INT(pool_size(db), 1);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
    direct_exec(e->url, e->drop);
}

/* A connect whose server hangs up during the handshake fails with KEEL_ERR_CONNECT naming the
 * database, and a later acquire connects once the server answers. */
static void lost_while_connecting(const char *url, const char *const *extra, const char *engine) {
    char purl[512];
    test_proxy *px = proxy_for(url, purl, sizeof purl);
    if (!px)
        return;
    test_proxy_stall(px); /* new connections are accepted and never answered */
    keel_db *db = open_url(purl, extra);
    keel_conn *c = NULL;
    keel_error err;
    keel_error_clear(&err);
    cutter cut;
    watchdog(30, "a connect whose server hangs up during the handshake");
    cut_in(&cut, px, 300);
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    cut_done(&cut);
    watchdog(0, "");
    CHECK(c == NULL);
    CHECK_INT(st, err.code);
    check_lost(&err, KEEL_ERR_CONNECT, engine);
    test_proxy_resume(px);
    watchdog(30, "a connect once the server answers again");
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    watchdog(0, "");
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

TEST(postgresql_connection_lost_while_waiting_for_a_result) {
    sql_engine e = pg;
    e.url = pg_url();
    lost_while_waiting(&e);
}

TEST(postgresql_connection_lost_while_sending_a_batch_or_a_copy) {
    sql_engine e = pg;
    e.url = pg_url();
    lost_while_sending(&e);
}

TEST(postgresql_connection_lost_while_connecting) {
    lost_while_connecting(pg_url(), NULL, "postgresql");
}

/* What a streamed statement delivered, cutting the connection at its first batch. */
typedef struct streamed {
    test_proxy *px;
    int done;
    size_t batches, rows;
    keel_error err;
} streamed;

static void stream_rows(const keel_result *rows, void *arg) {
    streamed *x = arg;
    if (x->batches++ == 0)
        test_proxy_cut(x->px);
    x->rows += keel_result_nrows(rows);
}

static void stream_done(keel_result *res, const keel_error *err, void *arg) {
    streamed *x = arg;
    x->done = 1;
    keel_error_clear(&x->err);
    if (err)
        x->err = *err;
    keel_result_free(res);
}

/*
 * PostgreSQL streams a large result as it arrives (keel_conn_query_rows); the connection is
 * cut after the first batch: the batches handed over stay handed over, the statement ends with
 * CONNECTION_LOST, and the pool serves again.
 */
TEST(postgresql_connection_lost_while_a_result_streams) {
    char purl[512];
    test_proxy *px = proxy_for(pg_url(), purl, sizeof purl);
    if (!px)
        return;
    keel_db *db = open_url(purl, NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    streamed x = { .px = px };
    keel_error err;
    watchdog(60, "a streamed result whose connection is cut");
    CHECK_INT(keel_conn_query_rows(c,
                                   "SELECT g, repeat('x', 100) FROM generate_series(1, 2000000) g",
                                   NULL, 0, stream_rows, stream_done, &x, &err),
              KEEL_OK);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    watchdog(0, "");
    check_lost(&x.err, KEEL_ERR_CONNECTION_LOST, "postgresql");
    CHECK(x.batches >= 1);
    CHECK(x.rows > 0 && x.rows < 2000000);
    keel_conn_release(c);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

TEST(mysql_connection_lost_while_waiting_for_a_result) {
    sql_engine e = my;
    e.url = my_url();
    lost_while_waiting(&e);
}

TEST(mysql_connection_lost_while_sending_a_batch_or_a_bulk_insert) {
    sql_engine e = my;
    e.url = my_url();
    lost_while_sending(&e);
}

/*
 * MySQL streams a single statement's rows in batches as it reads them: the connection stalls
 * part way through a large result (the proxy stops after 256 KiB from the server) and is then
 * cut. The statement ends with CONNECTION_LOST, the batches handed over before the cut kept (in
 * order, not the whole result); the pool serves again.
 */
TEST(mysql_connection_lost_while_a_result_is_read) {
    char purl[512];
    test_proxy *px = proxy_for(my_url(), purl, sizeof purl);
    if (!px)
        return;
    test_proxy_limit(px, SIZE_MAX, 256 * 1024);
    keel_db *db = open_url(purl, NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    test_proxy_limit(px, SIZE_MAX, SIZE_MAX); /* the connections after this one are not limited */
    rows_run x;
    cutter cut;
    watchdog(60, "a MySQL result whose connection is cut while it is read");
    cut_in(&cut, px, 500);
    run_rows(db, c, "SELECT seq, REPEAT('x', 100) FROM seq_1_to_2000000", NULL, 0, &x);
    cut_done(&cut);
    watchdog(0, "");
    check_lost(&x.err, KEEL_ERR_CONNECTION_LOST, "mysql");
    CHECK(x.rows > 0 && x.rows < 2000000);
    CHECK(x.in_order);
    CHECK(x.res == NULL);
    keel_result_free(x.res);
    keel_conn_release(c);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

TEST(postgresql_connection_lost_while_the_pool_rolls_back) {
    sql_engine e = pg;
    e.url = pg_url();
    lost_while_rolling_back(&e);
}

TEST(mysql_connection_lost_while_the_pool_rolls_back) {
    sql_engine e = my;
    e.url = my_url();
    lost_while_rolling_back(&e);
}

TEST(mysql_connection_lost_while_connecting) { lost_while_connecting(my_url(), NULL, "mysql"); }

/* ---- MongoDB ---- */

/* One server, reached through the proxy only (no replica-set discovery around it), and no
 * retries: a retried read would reconnect and meet the stalled proxy instead of reporting. */
static const char *const mongo_extra[] = { "databases.default.options.directConnection",
                                           "true",
                                           "databases.default.options.retryReads",
                                           "false",
                                           "databases.default.options.retryWrites",
                                           "false",
                                           NULL };

typedef struct done_call {
    int done;
    keel_error err;
    int docs; /* documents in the reply's cursor.firstBatch, when it has one */
} done_call;

static void on_done(keel_result *res, const keel_error *err, void *arg) {
    done_call *x = arg;
    x->done = 1;
    keel_error_clear(&x->err);
    if (err)
        x->err = *err;
    const keel_value *v = keel_result_value(res, 0, 0);
    bson_t reply;
    bson_iter_t it, batch;
    x->docs = -1;
    if (v && v->type == KEEL_TYPE_DOCUMENT &&
        bson_init_static(&reply, (const uint8_t *)v->u.str.ptr, v->u.str.len) &&
        bson_iter_init(&it, &reply) &&
        bson_iter_find_descendant(&it, "cursor.firstBatch", &batch) &&
        BSON_ITER_HOLDS_ARRAY(&batch) && bson_iter_recurse(&batch, &it))
        for (x->docs = 0; bson_iter_next(&it);)
            x->docs++;
    keel_result_free(res);
}

/* {"find": "keel_lost"}, written out as BSON. */
static const unsigned char find_cmd[] = { 25,  0,   0,   0,   0x02, 'f', 'i', 'n', 'd',
                                          0,   10,  0,   0,   0,    'k', 'e', 'e', 'l',
                                          '_', 'l', 'o', 's', 't',  0,   0 };

TEST(mongodb_connection_lost_while_a_command_runs) {
    char purl[512];
    test_proxy *px = proxy_for(mongo_url(), purl, sizeof purl);
    if (!px)
        return;
    keel_db *db = open_url(purl, mongo_extra);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    test_proxy_stall(px);
    done_call x = { 0 };
    cutter cut;
    watchdog(30, "a MongoDB command whose connection is cut");
    CHECK_INT(keel_conn_command(c, NULL, find_cmd, sizeof find_cmd, on_done, &x, &err), KEEL_OK);
    cut_in(&cut, px, 300);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    cut_done(&cut);
    watchdog(0, "");
    check_lost(&x.err, KEEL_ERR_CONNECTION_LOST, "mongodb");
    keel_conn_release(c);

    test_proxy_resume(px);
    watchdog(30, "a MongoDB command once the server answers again");
    c = acquire(db);
    x = (done_call){ 0 };
    CHECK_INT(keel_conn_command(c, NULL, find_cmd, sizeof find_cmd, on_done, &x, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    watchdog(0, "");
    CHECK_INT(x.err.code, KEEL_OK);
    keel_conn_release(c);
    keel_db_close(db);
    test_proxy_free(px);
}

/* Runs cmd on c until it completes; its error in *err (code KEEL_OK when it succeeded), and the
 * number of documents of the reply's cursor.firstBatch in *docs (may be NULL). */
static void mongo_run(keel_db *db, keel_conn *c, const bson_t *cmd, keel_error *err, int *docs) {
    done_call x = { 0 };
    keel_error_clear(err);
    if (keel_conn_command(c, NULL, bson_get_data(cmd), cmd->len, on_done, &x, err) != KEEL_OK)
        return;
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    *err = x.err;
    if (docs)
        *docs = x.docs;
}

/*
 * The connection is cut while a transaction commits (the commit meets a stalled server): the
 * commit fails with CONNECTION_LOST, the documents the transaction wrote are not there, and the
 * next lease works.
 */
TEST(mongodb_connection_lost_while_a_transaction_commits) {
    char purl[512];
    test_proxy *px = proxy_for(mongo_url(), purl, sizeof purl);
    if (!px)
        return;
    keel_db *db = open_url(purl, mongo_extra);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        test_proxy_free(px);
        return;
    }
    keel_error err;
    /* A collection of its own: documents deleted just before a transaction inserts them again
     * can meet a WriteConflict on a slow machine. */
    char coll[64];
    snprintf(coll, sizeof coll, "keel_lost_%ld", (long)getpid());
    bson_t *insert = BCON_NEW("insert", BCON_UTF8(coll), "documents", "[", "{", "_id",
                              BCON_INT32(1), "}", "{", "_id", BCON_INT32(2), "}", "]");
    bson_t *find = BCON_NEW("find", BCON_UTF8(coll), "filter", "{", "}");
    bson_t *drop = BCON_NEW("drop", BCON_UTF8(coll));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    mongo_run(db, c, insert, &err, NULL);
    if (err.code != KEEL_OK)
        fprintf(stderr, "  insert: %s: %s\n", keel_status_name(err.code), err.message);
    CHECK_INT(err.code, KEEL_OK);
    test_proxy_stall(px);
    cutter cut;
    watchdog(30, "a MongoDB commit whose connection is cut");
    cut_in(&cut, px, 300);
    keel_status st = keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err);
    cut_done(&cut);
    watchdog(0, "");
    CHECK_INT(st, KEEL_ERR_CONNECTION_LOST);
    check_lost(&err, KEEL_ERR_CONNECTION_LOST, "mongodb");
    CHECK_CONTAINS(err.message, "the connection to MongoDB was lost");
    keel_conn_release(c);

    test_proxy_resume(px);
    watchdog(30, "a MongoDB lease after a commit was cut");
    c = acquire(db);
    int docs = -1;
    mongo_run(db, c, find, &err, &docs);
    watchdog(0, "");
    CHECK_INT(err.code, KEEL_OK);
    CHECK_INT(docs, 0);
    mongo_run(db, c, drop, &err, NULL); /* the collection may not exist: nothing was stored */
    keel_conn_release(c);
    bson_destroy(drop);
    bson_destroy(insert);
    bson_destroy(find);
    keel_db_close(db);
    test_proxy_free(px);
}

TEST(mongodb_connection_lost_while_connecting) {
    lost_while_connecting(mongo_url(), mongo_extra, "mongodb");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    RUN(postgresql_connection_lost_while_waiting_for_a_result);
    RUN(postgresql_connection_lost_while_sending_a_batch_or_a_copy);
    RUN(postgresql_connection_lost_while_connecting);
    RUN(postgresql_connection_lost_while_a_result_streams);
    RUN(mysql_connection_lost_while_waiting_for_a_result);
    RUN(mysql_connection_lost_while_sending_a_batch_or_a_bulk_insert);
    RUN(mysql_connection_lost_while_connecting);
    RUN(mysql_connection_lost_while_a_result_is_read);
    RUN(postgresql_connection_lost_while_the_pool_rolls_back);
    RUN(mysql_connection_lost_while_the_pool_rolls_back);
    RUN(mongodb_connection_lost_while_a_command_runs);
    RUN(mongodb_connection_lost_while_a_transaction_commits);
    RUN(mongodb_connection_lost_while_connecting);
    return TEST_SUMMARY();
}
