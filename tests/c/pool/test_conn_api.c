/* tests/c/pool/test_conn_api.c - the keel_conn API's refusals: each names what was wrong, starts nothing, and leaves the connection usable. */
#include "support.h"

static void never_called(keel_result *res, const keel_error *err, void *arg) {
    (void)err;
    keel_result_free(res);
    (*(int *)arg)++;
}

/* The refusal err must be: code, with the database named, and a message holding what. */
static void refused(keel_status got, const keel_error *err, keel_status code, const char *what) {
    CHECK_INT(got, code);
    CHECK_INT(err->code, code);
    CHECK_CONTAINS(err->message, what);
}

TEST(statements_without_what_they_need_are_refused) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    int calls = 0;
    keel_error err;
    keel_value one = keel_int(1);
    refused(keel_conn_query(NULL, "SELECT 1", NULL, 0, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, sql and callback are required");
    refused(keel_conn_query(c, NULL, NULL, 0, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, sql and callback are required");
    CHECK_STR(err.database, "default");
    refused(keel_conn_query(c, "SELECT 1", NULL, 0, NULL, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "callback");
    refused(keel_conn_query(c, "SELECT $1", NULL, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "required");
    refused(keel_conn_query_rows(c, "SELECT 1", NULL, 0, NULL, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a rows callback is required");
    refused(keel_conn_query_rows(NULL, "SELECT 1", NULL, 0, NULL, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a rows callback is required");
    refused(keel_conn_query_many(c, "SELECT $1", &one, 0, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a batch needs at least one row of parameters");
    refused(keel_conn_ping(NULL, never_called, &calls, &err), &err, KEEL_ERR_INVALID_ARGUMENT,
            "connection and callback are required");
    refused(keel_conn_ping(c, NULL, &calls, &err), &err, KEEL_ERR_INVALID_ARGUMENT,
            "connection and callback are required");
    refused(keel_conn_transaction(NULL, KEEL_TXN_BEGIN, 0, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a valid transaction operation");
    /* A command is a document of at least five bytes (an empty BSON document). */
    refused(keel_conn_command(c, NULL, "\x04\0\0\0", 4, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a BSON command and callback are required");
    refused(keel_conn_command(c, NULL, "\x05\0\0\0\0", 5, never_called, &calls, &err), &err,
            KEEL_ERR_UNSUPPORTED, "document commands need a document engine such as MongoDB");
    CHECK_STR(err.engine, "sqlite");
    refused(keel_conn_set_timeout(c, -5, &err), &err, KEEL_ERR_INVALID_ARGUMENT,
            "a timeout is a number of seconds");
    refused(keel_conn_prepare(NULL, "SELECT 1", never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, sql and callback are required");
    refused(keel_conn_prepare(c, NULL, never_called, &calls, &err), &err, KEEL_ERR_INVALID_ARGUMENT,
            "connection, sql and callback are required");
    refused(keel_conn_prepare(c, "SELECT 1", NULL, &calls, &err), &err, KEEL_ERR_INVALID_ARGUMENT,
            "callback");
    /* A statement the lexer refuses is refused before anything starts. */
    refused(keel_conn_prepare(c, "SELECT $0", never_called, &calls, &err), &err,
            KEEL_ERR_PARAMETERS, "$0");
    /* Server-side cursors: arguments, and engines without them (SQLite). */
    keel_cursor *cur = NULL;
    refused(keel_conn_cursor_open(c, "SELECT 1", NULL, 0, 10, NULL, never_called, &calls, &err),
            &err, KEEL_ERR_INVALID_ARGUMENT, "connection, sql, out and callback are required");
    refused(keel_conn_cursor_open(c, "SELECT 1", NULL, 0, 0, &cur, never_called, &calls, &err),
            &err, KEEL_ERR_INVALID_ARGUMENT, "at least 1 row at a time (prefetch is 0)");
    refused(keel_conn_cursor_open(c, "SELECT 1", NULL, 0, 10, &cur, never_called, &calls, &err),
            &err, KEEL_ERR_UNSUPPORTED, "the sqlite engine, which has no server-side cursors");
    CHECK(cur == NULL);
    refused(keel_cursor_fetch(c, NULL, 1, NULL, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, cursor and callback are required");
    keel_cursor_close(NULL);
    /* Pausing or resuming a connection that runs no streamed statement does nothing. */
    keel_conn_pause(c);
    keel_conn_resume(c);
    keel_conn_pause(NULL);
    keel_conn_resume(NULL);
    CHECK_INT(calls, 0);
    /* Nothing started: the connection runs the next statement. */
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(bulk_loads_without_a_table_or_columns_are_refused) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "CREATE TABLE t (a INTEGER, b TEXT)", NULL, 0));
    int calls = 0;
    keel_error err;
    keel_value row[2] = { keel_int(1), keel_text("x") };
    static const char *const cols[] = { "a", "b" };
    static const char *const unnamed[] = { "a", "" };
    static const char *const null_name[] = { "a", NULL };
    refused(keel_conn_copy_in(NULL, NULL, "t", cols, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, table, rows and callback are required");
    refused(keel_conn_copy_in(c, NULL, NULL, cols, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "connection, table, rows and callback are required");
    refused(keel_conn_copy_in(c, NULL, "t", cols, 2, NULL, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "rows");
    refused(keel_conn_copy_in(c, NULL, "", cols, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "the table name is empty");
    refused(keel_conn_copy_in(c, "", "t", cols, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "the schema name is empty");
    refused(keel_conn_copy_in(c, NULL, "t", cols, 0, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "a column list must name at least one column");
    refused(keel_conn_copy_in(c, NULL, "t", unnamed, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "column 1 of the column list has no name");
    refused(keel_conn_copy_in(c, NULL, "t", null_name, 2, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "column 1 of the column list has no name");
    refused(keel_conn_copy_in(c, NULL, "t", NULL, 0, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_INVALID_ARGUMENT, "rows to load need at least one value each");
    CHECK_INT(calls, 0);
    int64_t loaded = -1;
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "t", cols, 2, row, 1, &loaded, &err), KEEL_OK);
    CHECK_INT(loaded, 1);
    keel_conn_release(c);
    keel_db_close(db);
}

/* One operation at a time: a second one while the first runs is refused as busy, whatever its
 * kind, and the first completes as if nothing happened. */
TEST(a_second_operation_while_one_runs_is_refused_as_busy) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    rows_run first;
    memset(&first, 0, sizeof first);
    keel_error err;
    CHECK_INT(keel_conn_query_rows(c, "SELECT 1 UNION ALL SELECT 2", NULL, 0, rows_run_batch,
                                   rows_run_done, &first, &err),
              KEEL_OK);
    int calls = 0;
    keel_value row[1] = { keel_int(1) };
    static const char *const cols[] = { "a" };
    refused(keel_conn_query(c, "SELECT 3", NULL, 0, never_called, &calls, &err), &err,
            KEEL_ERR_BUSY, "another operation is in progress");
    refused(keel_conn_ping(c, never_called, &calls, &err), &err, KEEL_ERR_BUSY,
            "another operation is in progress");
    refused(keel_conn_transaction(c, KEEL_TXN_BEGIN, 0, never_called, &calls, &err), &err,
            KEEL_ERR_BUSY, "another operation is in progress");
    refused(keel_conn_copy_in(c, NULL, "t", cols, 1, row, 1, never_called, &calls, &err), &err,
            KEEL_ERR_BUSY, "another operation is in progress");
    refused(keel_conn_command(c, NULL, "\x05\0\0\0\0", 5, never_called, &calls, &err), &err,
            KEEL_ERR_BUSY, "another operation is in progress");
    refused(keel_conn_prepare(c, "SELECT 3", never_called, &calls, &err), &err, KEEL_ERR_BUSY,
            "another operation is in progress");
    CHECK_INT(keel_loop_run(keel_db_loop(db), &first.done), KEEL_OK);
    CHECK_INT(first.err.code, KEEL_OK);
    CHECK_INT(first.rows, 2);
    keel_result_free(first.res);
    CHECK_INT(calls, 0);
    CHECK_INT(q_int(c, "SELECT 3"), 3);
    keel_conn_release(c);
    keel_db_close(db);
}

/* What the synchronous calls made from inside a completion returned. */
typedef struct inside {
    keel_db *db;
    keel_conn *c;
    int done;
    keel_status st[6];
    keel_error err[6];
} inside;

static void sync_calls_inside(keel_result *res, const keel_error *err, void *arg) {
    inside *x = arg;
    (void)err;
    keel_result_free(res);
    keel_value one = keel_int(1);
    static const char *const cols[] = { "a" };
    keel_result *r = NULL;
    keel_conn *other = NULL;
    int64_t loaded = 0;
    x->st[0] = keel_conn_query_sync(x->c, "SELECT 1", NULL, 0, &r, &x->err[0]);
    x->st[1] = keel_conn_query_many_sync(x->c, "SELECT $1", &one, 1, 1, NULL, &x->err[1]);
    x->st[2] = keel_conn_copy_in_sync(x->c, NULL, "t", cols, 1, &one, 1, &loaded, &x->err[2]);
    x->st[3] = keel_conn_transaction_sync(x->c, KEEL_TXN_BEGIN, 0, &x->err[3]);
    x->st[4] = keel_conn_ping_sync(x->c, &x->err[4]);
    x->st[5] = keel_db_acquire_sync(x->db, NULL, &other, &x->err[5]);
    keel_result_free(r);
    keel_conn_release(other);
    x->done = 1;
}

/* A synchronous call spins the loop: from inside one of that loop's callbacks it would deliver
 * other callbacks while this one is half way through, so each is refused, saying why. */
TEST(synchronous_calls_from_inside_a_callback_are_refused) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "CREATE TABLE t (a INTEGER)", NULL, 0));
    inside x = { .db = db, .c = c };
    keel_error err;
    CHECK_INT(keel_conn_query(c, "SELECT 1", NULL, 0, sync_calls_inside, &x, &err), KEEL_OK);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    for (int i = 0; i < 6; i++) {
        CHECK_INT(x.st[i], KEEL_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(x.err[i].message,
                       "a synchronous call cannot be made from inside a callback of its loop");
    }
    /* Nothing ran: the table is empty and no transaction is open. */
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM t"), 0);
    keel_conn_release(c);
    keel_db_close(db);
}

int main(void) {
    RUN(statements_without_what_they_need_are_refused);
    RUN(bulk_loads_without_a_table_or_columns_are_refused);
    RUN(a_second_operation_while_one_runs_is_refused_as_busy);
    RUN(synchronous_calls_from_inside_a_callback_are_refused);
    return TEST_SUMMARY();
}
