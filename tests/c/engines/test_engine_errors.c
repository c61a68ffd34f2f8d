/* tests/c/engines/test_engine_errors.c - mistakes a caller can make and errors a server raises mid-result, on the SQL engines: each named, nothing left half-done. */
#include <unistd.h>

#include "core/buf.h"
#include "support.h"
#include "support/proxy.h"

/* A connection of its own on url; *db receives the db to close. */
static keel_conn *conn_on(const char *url, keel_db **db) {
    *db = open_url(url, NULL);
    return acquire(*db);
}

static void done_with(keel_db *db, keel_conn *c) {
    keel_conn_release(c);
    if (db)
        keel_db_close(db);
}

/* ---- PostgreSQL ---- */

/* PostgreSQL's protocol carries at most 65535 parameters: a statement with more is refused
 * before anything is sent, naming where, and the connection goes on. */
TEST(postgresql_refuses_more_parameters_than_the_protocol_carries) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    size_t n = 65536;
    keel_value *params = calloc(n, sizeof *params);
    keel__buf sql = { 0 };
    CHECK(params != NULL);
    keel__buf_puts(&sql, "SELECT 1 WHERE 1 IN (");
    for (size_t i = 0; i < n; i++) {
        params[i] = keel_int((int64_t)i);
        keel__buf_printf(&sql, i ? ",$%zu" : "$%zu", i + 1);
    }
    keel__buf_puts(&sql, ")");
    keel_error err = q_fail(c, sql.data, params, n);
    CHECK_INT(err.code, KEEL_ERR_PARAMETERS);
    CHECK_CONTAINS(err.message, "above the maximum $65535");
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel__buf_free(&sql);
    free(params);
    done_with(db, c);
}

/* A batch refuses a value PostgreSQL cannot take before sending any row, and names the row. */
TEST(postgresql_batch_names_the_row_of_a_value_it_cannot_send) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_result_free(q(c, "CREATE TEMPORARY TABLE t_rows (id BIGINT, note TEXT)", NULL, 0));
    keel_value rows[6] = { keel_int(1), keel_text("one"),
                           keel_int(2), keel_text("two"),
                           keel_int(3), { .type = KEEL_TYPE_TEXT, .u.str = { "a\0b", 3 } } };
    keel_error err;
    CHECK_INT(
        keel_conn_query_many_sync(c, "INSERT INTO t_rows VALUES ($1, $2)", rows, 3, 2, NULL, &err),
        KEEL_ERR_DATA);
    CHECK_CONTAINS(err.message, "row 2: ");
    CHECK_CONTAINS(err.message, "parameter $2: text contains a NUL byte");
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM t_rows"), 0);
    /* COPY cannot be a batch's statement: refused before anything is sent. */
    CHECK_INT(keel_conn_query_many_sync(c, " /* out */ (COPY (SELECT $1, $2) TO STDOUT", rows, 1, 2,
                                        NULL, &err),
              KEEL_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "COPY cannot run in a batch");
    CHECK_INT(keel_conn_query_many_sync(c,
                                        "-- a line comment first\n COPY (SELECT $1, $2) TO STDOUT",
                                        rows, 1, 2, NULL, &err),
              KEEL_ERR_UNSUPPORTED);
    /* A comment that never ends is refused before anything is sent, saying where it starts. */
    CHECK_INT(keel_conn_query_many_sync(c, "/* unterminated SELECT $1, $2", rows, 1, 2, NULL, &err),
              KEEL_ERR_PROGRAMMING);
    CHECK_CONTAINS(err.message, "unterminated block comment starting at offset 0");
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM t_rows"), 0);
    done_with(db, c);
}

/* The columns of cp_kinds, in order. */
#define KINDS 14
static const char *const kind_cols[KINDS] = { "t", "j",  "b",  "f8", "f4", "n",  "by",
                                              "d", "tm", "ts", "tz", "u",  "pt", "i" };

/* Loads one row into cp_kinds holding v in column col and NULL elsewhere; the load's status. */
static keel_status load_one(keel_conn *c, size_t col, keel_value v, keel_error *err) {
    keel_value row[KINDS];
    for (size_t i = 0; i < KINDS; i++)
        row[i] = i == col ? v : keel_null();
    int64_t loaded = 0;
    return keel_conn_copy_in_sync(c, NULL, "cp_kinds", kind_cols, KINDS, row, 1, &loaded, err);
}

/*
 * A bulk load (COPY in binary) encodes each value for its column's type: a value of a kind the
 * column cannot take, or out of its range, fails the load with KEEL_ERR_DATA naming the row, the
 * column, its type and what was wrong, before the server stores anything.
 */
TEST(postgresql_copy_refuses_values_its_columns_cannot_take) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_result_free(q(c,
                       "CREATE TEMPORARY TABLE cp_kinds (t text, j jsonb, b bool, f8 float8, "
                       "f4 float4, n numeric(10, 2), by bytea, d date, tm time, ts timestamp, "
                       "tz timestamptz, u uuid, pt point, i int4)",
                       NULL, 0));
    static const unsigned char uuid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
    struct {
        size_t col;
        keel_value v;
        const char *what;
    } bad[] = {
        { 0, keel_bool(1), "column \"t\" (text): a bool value cannot be loaded into type text" },
        { 1, keel_int(1), "column \"j\" (jsonb): an int value" },
        { 2, keel_int(1), "column \"b\" (boolean)" },
        { 3, keel_text("1.5"), "a text value cannot be loaded into type double precision" },
        { 4, keel_float(1e39), "the value is out of range for type real" },
        { 5, keel_numeric("12x"), "\"12x\" is not a decimal number" },
        { 5, keel_bool(0), "a bool value cannot be loaded into type numeric" },
        { 5, keel_numeric("1e200000"), "out of the range of type numeric" },
        { 6, keel_text("x"), "a text value cannot be loaded into type bytea" },
        { 7, keel_int(3), "an int value cannot be loaded into type date" },
        { 8, keel_int(3), "an int value cannot be loaded into type time" },
        { 9, keel_text("2024-01-01"), "cannot be loaded into type timestamp" },
        { 10, keel_date(3), "a date value cannot be loaded into type timestamp with time zone" },
        { 11, keel_text("not-a-uuid"), "the text is not a UUID" },
        { 11, keel_int(1), "an int value cannot be loaded into type uuid" },
        { 12, keel_text("(1,2)"), "keel has no binary encoding for type point" },
        { 13, keel_float(1.5), "a float value cannot be loaded into type integer" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        keel_error err;
        keel_status st = load_one(c, bad[i].col, bad[i].v, &err);
        if (st != KEEL_ERR_DATA || !strstr(err.message, bad[i].what))
            fprintf(stderr, "  case %zu: %s: %s\n", i, keel_status_name(st), err.message);
        CHECK_INT(st, KEEL_ERR_DATA);
        CHECK_CONTAINS(err.message, "row 0, column");
        CHECK_CONTAINS(err.message, bad[i].what);
    }
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM cp_kinds"), 0);
    /* What each column does take: ints into floats, text into a UUID, NULL into any type. */
    keel_error err;
    CHECK_INT(load_one(c, 3, keel_int(3), &err), KEEL_OK);
    CHECK_INT(load_one(c, 4, keel_int(-2), &err), KEEL_OK);
    CHECK_INT(load_one(c, 11, keel_text("01020304-0506-0708-090a-0b0c0d0e0f10"), &err), KEEL_OK);
    CHECK_INT(load_one(c, 11, keel_uuid(uuid), &err), KEEL_OK);
    CHECK_INT(load_one(c, 12, keel_null(), &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM cp_kinds"), 5);
    CHECK_INT(q_int(c, "SELECT COUNT(DISTINCT u) FROM cp_kinds"), 1);
    CHECK_INT(q_int(c, "SELECT CAST(SUM(f8) + SUM(f4) AS int8) FROM cp_kinds"), 1);
    done_with(db, c);
}

/* bytea comes back the same whichever output format the server uses for text results (hex, or
 * the escape format of older servers and of sessions that set it). */
TEST(postgresql_bytea_in_escape_output_decodes_as_hex_does) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    static const char want[] = { 0, 1, '\\', 'A', 0x7f, (char)0x80, (char)0xff, '\'' };
    /* Several statements run as one simple query, whose results come as text. */
    static const char *const sql[] = {
        "SET bytea_output = 'hex'; SELECT '\\x00015c417f80ff27'::bytea",
        "SET bytea_output = 'escape'; SELECT '\\x00015c417f80ff27'::bytea",
    };
    for (size_t i = 0; i < 2; i++) {
        keel_result *r = q(c, sql[i], NULL, 0);
        const keel_value *v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_BYTES && v->u.str.len == sizeof want &&
              memcmp(v->u.str.ptr, want, sizeof want) == 0);
        keel_result_free(r);
    }
    done_with(db, c);
}

/*
 * COPY … TO STDOUT has no place in keel's results: it is refused as unsupported, and the data
 * the server already streams (megabytes here, over many reads) is drained, so the connection
 * serves the next statement. A bulk load wider than any PostgreSQL table is refused before
 * anything is sent.
 */
TEST(postgresql_copy_out_is_refused_and_drained_and_wide_loads_refused) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_error err = q_fail(c,
                            "COPY (SELECT g, repeat('x', 40) FROM generate_series(1, 200000) g) "
                            "TO STDOUT",
                            NULL, 0);
    CHECK_INT(err.code, KEEL_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "COPY TO STDOUT is not supported");
    CHECK_INT(q_int(c, "SELECT 9"), 9);
    /* Among other statements, too. */
    err = q_fail(c, "SELECT 1; COPY (SELECT generate_series(1, 100000)) TO STDOUT; SELECT 2", NULL,
                 0);
    CHECK_INT(err.code, KEEL_ERR_UNSUPPORTED);
    CHECK_INT(q_int(c, "SELECT 10"), 10);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    size_t n = 1665;
    keel_value *row = calloc(n, sizeof *row);
    for (size_t i = 0; row && i < n; i++)
        row[i] = keel_int((int64_t)i);
    int64_t loaded = -1;
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "wide", NULL, n, row, 1, &loaded, &err),
              KEEL_ERR_PARAMETERS);
    CHECK_CONTAINS(err.message, "PostgreSQL tables have at most 1664 columns, rows of 1665 values "
                                "were given");
    free(row);
    CHECK_INT(q_int(c, "SELECT 11"), 11);
    done_with(db, c);
}

/*
 * Values without a keel equivalent (infinite dates and timestamps) come back as the server's
 * text, and alike whichever format the result travels in: binary for a single statement, text
 * for several run as one simple query.
 */
TEST(postgresql_infinite_dates_come_back_as_text_in_both_result_formats) {
    keel_db *db;
    keel_conn *c = conn_on(pg_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    static const char *const sql[] = {
        "SELECT 'infinity'::date, '-infinity'::timestamp, 'infinity'::timestamptz",
        "SELECT 1; SELECT 'infinity'::date, '-infinity'::timestamp, 'infinity'::timestamptz",
    };
    static const char *const want[] = { "infinity", "-infinity", "infinity" };
    for (size_t i = 0; i < 2; i++) {
        keel_result *r = q(c, sql[i], NULL, 0);
        for (size_t col = 0; col < 3; col++) {
            const keel_value *v = keel_result_value(r, 0, col);
            if (!same_str(v, KEEL_TYPE_TEXT, want[col], strlen(want[col])))
                fprintf(stderr, "  statement %zu, column %zu: type %s\n", i, col,
                        v ? keel_type_name(v->type) : "none");
            CHECK(same_str(v, KEEL_TYPE_TEXT, want[col], strlen(want[col])));
        }
        keel_result_free(r);
    }
    done_with(db, c);
}

/* ---- MySQL / MariaDB ---- */

/* A '?' written in the SQL would be a placeholder to MySQL next to those keel binds for $n:
 * refused before anything is sent, naming where it is; a '?' inside a string is text. */
TEST(mysql_a_question_mark_placeholder_is_refused_naming_its_offset) {
    keel_db *db;
    keel_conn *c = conn_on(my_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_value one = keel_int(1);
    keel_error err = q_fail(c, "SELECT $1 + ?", &one, 1);
    CHECK_INT(err.code, KEEL_ERR_PARAMETERS);
    CHECK_CONTAINS(err.message, "not '?', at offset 12");
    keel_result *r = q(c, "SELECT CONCAT($1, '?')", &one, 1);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "1?", 2));
    keel_result_free(r);
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    done_with(db, c);
}

/*
 * An error the server raises after it sent some rows (a subquery that returns two rows for the
 * second row only): the statement fails with the server's error, the rows before it are not
 * returned as a result, and the connection serves the next statement. Text and prepared
 * protocols alike.
 */
TEST(mysql_error_in_the_middle_of_a_result_fails_the_statement) {
    keel_db *db;
    keel_conn *c = conn_on(my_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    static const char sql[] = "SELECT x, (SELECT 1 UNION SELECT x) AS y FROM "
                              "(SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3) t ORDER BY x";
    keel_error err = q_fail(c, sql, NULL, 0);
    CHECK_INT(err.code, KEEL_ERR_DATABASE);
    CHECK_CONTAINS(err.message, "more than 1 row");
    CHECK_STR(err.sqlstate, "21000");
    CHECK_INT(q_int(c, "SELECT 6"), 6);

    static const char psql[] = "SELECT x, (SELECT 1 UNION SELECT x) AS y FROM "
                               "(SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3) t "
                               "WHERE x >= $1 ORDER BY x";
    keel_value one = keel_int(1);
    err = q_fail(c, psql, &one, 1);
    CHECK_INT(err.code, KEEL_ERR_DATABASE);
    CHECK_CONTAINS(err.message, "more than 1 row");
    CHECK_STR(err.sqlstate, "21000");
    CHECK_INT(q_int(c, "SELECT 7"), 7);

    /* Streamed (keel_conn_query_rows): the error ends the stream through the callback. */
    rows_run x;
    run_rows(db, c, sql, NULL, 0, &x);
    CHECK(x.done);
    CHECK_INT(x.err.code, KEEL_ERR_DATABASE);
    CHECK_CONTAINS(x.err.message, "more than 1 row");
    keel_result_free(x.res);
    CHECK_INT(q_int(c, "SELECT 8"), 8);
    done_with(db, c);
}

/*
 * Values MySQL cannot store are refused before anything is sent, naming the parameter (and the
 * row of a batch) and the reason: the server would otherwise store something else (0 for a NaN
 * decimal, a clipped time) without an error.
 */
TEST(mysql_refuses_values_it_cannot_store_naming_the_parameter) {
    keel_db *db;
    keel_conn *c = conn_on(my_url(), &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    const int64_t day = 86400LL * 1000000LL;
    struct {
        keel_value v;
        keel_status code;
        const char *what;
    } bad[] = {
        { keel_numeric(" -Infinity"), KEEL_ERR_DATA,
          "MySQL cannot store NaN or infinite decimals" },
        { keel_numeric("+inf"), KEEL_ERR_DATA, "NaN or infinite decimals" },
        { keel_numeric("NaN123 "), KEEL_ERR_DATA, "NaN or infinite decimals" },
        { keel_timestamp(2932897LL * day), KEEL_ERR_DATA,
          "timestamp outside MySQL's range (years 0-9999)" },
        { keel_timestamptz(-719529LL * day - 1), KEEL_ERR_DATA, "timestamp outside MySQL's range" },
        { keel_time(839LL * 3600 * 1000000), KEEL_ERR_DATA,
          "time outside MySQL's range (-838:59:59 to 838:59:59)" },
        /* Built by hand: keel_textn makes NULL an empty text. */
        { { .type = KEEL_TYPE_TEXT, .u.str = { NULL, 5 } },
          KEEL_ERR_INVALID_ARGUMENT,
          "NULL data with a non-zero length" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        keel_value params[2] = { keel_int(1), bad[i].v };
        keel_error err = q_fail(c, "SELECT $1, $2", params, 2);
        if (err.code != bad[i].code || !strstr(err.message, bad[i].what))
            fprintf(stderr, "  case %zu: %s: %s\n", i, keel_status_name(err.code), err.message);
        CHECK_INT(err.code, bad[i].code);
        CHECK_CONTAINS(err.message, "parameter $2: ");
        CHECK_CONTAINS(err.message, bad[i].what);
        /* In a batch, the row is named too, and no row runs. */
        keel_value rows[4] = { keel_int(1), keel_text("x"), keel_int(2), bad[i].v };
        CHECK_INT(keel_conn_query_many_sync(c, "SELECT $1, $2", rows, 2, 2, NULL, &err),
                  bad[i].code);
        CHECK_CONTAINS(err.message, "row 1: parameter $2: ");
    }
    /* Finite decimals, with spaces and signs, go through. */
    keel_value ok = keel_numeric(" -12.50");
    keel_result *r = q(c, "SELECT CAST($1 AS DECIMAL(6, 2))", &ok, 1);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_NUMERIC, "-12.50", 6));
    keel_result_free(r);
    done_with(db, c);
}

/* ---- every engine ---- */

/*
 * A caller of the C API passing a value whose type is none of keel_type's, or a transaction
 * operation that does not exist: each is refused before anything is sent (the value by the
 * engine, naming the parameter; the operation by keel_conn_transaction), and the connection
 * goes on.
 */
static void refuses_unknown_kinds(const char *url, const char *engine) {
    keel_db *db;
    keel_conn *c = conn_on(url, &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_value bad[2] = { keel_int(1), { .type = (keel_type)99 } };
    keel_error err = q_fail(c, "SELECT $1, $2", bad, 2);
    if (strcmp(engine, "mongodb") != 0) {
        CHECK(err.code == KEEL_ERR_PARAMETERS || err.code == KEEL_ERR_DATA ||
              err.code == KEEL_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.message, "$2");
        CHECK_CONTAINS(err.message, "unknown");
        CHECK_STR(err.engine, engine);
    }
    CHECK_INT(keel_conn_transaction_sync(c, (keel_txn_op)42, 0, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "a valid transaction operation");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(keel_conn_ping_sync(c, &err), KEEL_OK);
    done_with(db, c);
}

TEST(every_engine_refuses_an_unknown_value_type_and_transaction_operation) {
    refuses_unknown_kinds("sqlite::memory:", "sqlite");
    refuses_unknown_kinds(pg_url(), "postgresql");
    refuses_unknown_kinds(my_url(), "mysql");
    refuses_unknown_kinds(mongo_url(), "mongodb");
}

/* ---- constraint violations ---- */

/*
 * On url (a SQL engine), each kind of constraint violation is KEEL_ERR_INTEGRITY with its
 * keel_violation, and the server's own error number where it has one (has_code: whether a nonzero one must be there): MySQL says SQLSTATE 23000 for every kind.
 */
static void violations_are_told_apart(const char *url, const char *int_type, int has_code) {
    keel_db *db;
    keel_conn *c = conn_on(url, &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_result_free(q(c, "DROP TABLE IF EXISTS kv_child", NULL, 0));
    keel_result_free(q(c, "DROP TABLE IF EXISTS kv_parent", NULL, 0));
    char sql[256];
    snprintf(sql, sizeof sql,
             "CREATE TABLE kv_parent (id %s PRIMARY KEY, n %s NOT NULL, CONSTRAINT kv_n CHECK "
             "(n > 0))",
             int_type, int_type);
    keel_result_free(q(c, sql, NULL, 0));
    snprintf(sql, sizeof sql,
             "CREATE TABLE kv_child (id %s PRIMARY KEY, pid %s, CONSTRAINT kv_fk FOREIGN KEY "
             "(pid) REFERENCES kv_parent (id))",
             int_type, int_type);
    keel_result_free(q(c, sql, NULL, 0));
    keel_result_free(q(c, "INSERT INTO kv_parent VALUES (1, 1)", NULL, 0));
    static const struct {
        const char *sql;
        keel_violation kind;
    } cases[] = {
        { "INSERT INTO kv_parent VALUES (1, 1)", KEEL_VIOLATION_UNIQUE },
        { "INSERT INTO kv_parent VALUES (2, NULL)", KEEL_VIOLATION_NOT_NULL },
        { "INSERT INTO kv_parent VALUES (3, -1)", KEEL_VIOLATION_CHECK },
        { "INSERT INTO kv_child VALUES (1, 99)", KEEL_VIOLATION_FOREIGN_KEY },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keel_error err = q_fail(c, cases[i].sql, NULL, 0);
        CHECK_INT(err.code, KEEL_ERR_INTEGRITY);
        CHECK_INT(err.violation, cases[i].kind);
        CHECK(has_code ? err.server_code != 0 : err.server_code == 0);
    }
    /* Other errors name no violation. */
    keel_error err = q_fail(c, "SELECT * FROM kv_no_such_table", NULL, 0);
    CHECK_INT(err.violation, KEEL_VIOLATION_NONE);
    keel_result_free(q(c, "DROP TABLE kv_child", NULL, 0));
    keel_result_free(q(c, "DROP TABLE kv_parent", NULL, 0));
    done_with(db, c);
}

TEST(every_sql_engine_names_the_kind_of_constraint_violated) {
    violations_are_told_apart(pg_url(), "INT", 0);
    violations_are_told_apart(my_url(), "INT", 1);
    violations_are_told_apart("sqlite::memory:?foreign_keys=on", "INTEGER", 1);
}

/* ---- SQLite ---- */

/*
 * A batch runs inside a savepoint that is released at its end: with a deferred foreign key the
 * release is where the violation shows. The batch fails as an integrity error and loads none of
 * its rows; the connection goes on.
 */
TEST(sqlite_batch_violating_a_deferred_foreign_key_fails_at_its_end_and_loads_nothing) {
    keel_db *db;
    keel_conn *c = conn_on("sqlite::memory:?foreign_keys=on", &db);
    if (!c) {
        done_with(db, c);
        return;
    }
    keel_result_free(q(c, "CREATE TABLE parent (id INTEGER PRIMARY KEY)", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE child (id INTEGER, parent INTEGER REFERENCES parent(id) "
                       "DEFERRABLE INITIALLY DEFERRED)",
                       NULL, 0));
    keel_result_free(q(c, "INSERT INTO parent VALUES (1)", NULL, 0));
    keel_value rows[6] = { keel_int(1), keel_int(1), keel_int(2),
                           keel_int(7), keel_int(3), keel_int(1) };
    keel_error err;
    CHECK_INT(
        keel_conn_query_many_sync(c, "INSERT INTO child VALUES ($1, $2)", rows, 3, 2, NULL, &err),
        KEEL_ERR_INTEGRITY);
    CHECK_CONTAINS(err.message, "FOREIGN KEY");
    CHECK_INT(err.violation, KEEL_VIOLATION_FOREIGN_KEY);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM child"), 0);
    /* Rows that hold together load. */
    rows[3] = keel_int(1);
    CHECK_INT(
        keel_conn_query_many_sync(c, "INSERT INTO child VALUES ($1, $2)", rows, 3, 2, NULL, &err),
        KEEL_OK);
    CHECK_INT(q_int(c, "SELECT COUNT(*) FROM child"), 3);
    done_with(db, c);
}

/* ---- connecting ---- */

/* Opens url with the NULL-ended key/value pairs of extra and tries one connection: its status,
 * with the error in *err. */
static keel_status try_connect(const char *url, const char *const *extra, keel_error *err) {
    keel_db *db = open_url(url, extra);
    if (!db)
        return KEEL_ERR_INTERNAL;
    keel_conn *c = NULL;
    keel_error_clear(err);
    keel_status st = keel_db_acquire_sync(db, NULL, &c, err);
    if (st == KEEL_OK)
        st = keel_conn_ping_sync(c, err);
    keel_conn_release(c);
    keel_db_close(db);
    return st;
}

/* A host name that does not resolve (.invalid is reserved for that, RFC 6761) fails the connect
 * naming the host, without the password. */
static void unknown_host(const char *scheme, const char *engine) {
    char url[256];
    snprintf(url, sizeof url, "%s://keel:s3cret-pw@keel-no-such-host.invalid/keel", scheme);
    keel_error err;
    watchdog(60, "a connect to a host name that does not resolve");
    CHECK_INT(try_connect(url, NULL, &err), KEEL_ERR_CONNECT);
    watchdog(0, "");
    CHECK_STR(err.engine, engine);
    CHECK_STR(err.database, "default");
    CHECK_CONTAINS(err.message, "keel-no-such-host.invalid");
    CHECK(strstr(err.message, "s3cret-pw") == NULL);
}

TEST(a_host_name_that_does_not_resolve_fails_the_connect_naming_it) {
    unknown_host("postgresql", "postgresql");
    unknown_host("mysql", "mysql");
}

/* The server's address as the server sees the connection: "unix" over a socket, else the
 * address. */
static void server_addr(const char *url, const char *const *extra, char *out, size_t size) {
    snprintf(out, size, "?");
    keel_db *db = open_url(url, extra);
    keel_conn *c = acquire(db);
    keel_result *r = c ? q(c, "SELECT COALESCE(host(inet_server_addr()), 'unix')", NULL, 0) : NULL;
    const keel_value *v = keel_result_value(r, 0, 0);
    if (v && v->type == KEEL_TYPE_TEXT)
        snprintf(out, size, "%.*s", (int)v->u.str.len, v->u.str.ptr);
    keel_result_free(r);
    keel_conn_release(c);
    if (db)
        keel_db_close(db);
}

/*
 * PostgreSQL hosts that need no lookup: a socket directory, and a host name whose address is
 * given as the hostaddr option (the name is then never looked up, as with libpq). A host list
 * is tried in order, a failing entry falling through to the next.
 */
TEST(postgresql_hosts_that_need_no_lookup_connect) {
    char where[64], host[256];
    int portnum = 0;
    CHECK_INT(test_url_host_port(pg_url(), host, sizeof host, &portnum), 0);
    if (strcmp(host, "127.0.0.1") != 0) {
        printf("# the test server is not at 127.0.0.1: not tried\n");
        return;
    }
    if (access("/var/run/postgresql/.s.PGSQL.5432", F_OK) == 0 && portnum == 5432) {
        const char *socket_dir[] = { "databases.default.host", "/var/run/postgresql", NULL };
        server_addr(pg_url(), socket_dir, where, sizeof where);
        CHECK_STR(where, "unix");
        const char *list[] = { "databases.default.host", "/nonexistent-keel-dir,127.0.0.1", NULL };
        server_addr(pg_url(), list, where, sizeof where);
        CHECK_STR(where, "127.0.0.1");
    } else {
        printf("# no PostgreSQL socket in /var/run/postgresql: socket directories not tried\n");
    }
    const char *hostaddr[] = { "databases.default.host", "keel-no-such-host.invalid",
                               "databases.default.options.hostaddr", "127.0.0.1", NULL };
    server_addr(pg_url(), hostaddr, where, sizeof where);
    CHECK_STR(where, "127.0.0.1");
}

/*
 * An option given by reference (${env:…}) is resolved, and its value checked, at connect time:
 * a value the literal option would have been refused for fails the connect as a configuration
 * error naming the key, never the value (it may be a secret); a good one applies.
 */
TEST(options_given_by_reference_are_checked_when_they_are_resolved) {
    keel_error err;
    const char *charset[] = { "databases.default.options.charset", "${env:KEEL_TEST_OPT}", NULL };
    setenv("KEEL_TEST_OPT", "latin1", 1);
    CHECK_INT(try_connect(my_url(), charset, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.default.options.charset: invalid value (expected "
                                "utf8mb4");
    CHECK(strstr(err.message, "latin1") == NULL);

    const char *mode[] = { "databases.default.options.ssl_mode", "${env:KEEL_TEST_OPT}", NULL };
    setenv("KEEL_TEST_OPT", "VERIFY_CA", 1);
    CHECK_INT(try_connect(my_url(), mode, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.default.options.ssl_ca: ssl_mode VERIFY_CA needs the "
                                "CA certificate");

    const char *timeout[] = { "databases.default.options.connect_timeout", "${env:KEEL_TEST_OPT}",
                              NULL };
    setenv("KEEL_TEST_OPT", "7", 1);
    CHECK_INT(try_connect(my_url(), timeout, &err), KEEL_OK);
    CHECK_INT(try_connect(pg_url(), timeout, &err), KEEL_OK);
    setenv("KEEL_TEST_OPT", "soon", 1);
    CHECK_INT(try_connect(pg_url(), timeout, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.default.options.connect_timeout");
    CHECK(strstr(err.message, "soon") == NULL);
    unsetenv("KEEL_TEST_OPT");
}

int main(void) {
    RUN(postgresql_refuses_more_parameters_than_the_protocol_carries);
    RUN(postgresql_batch_names_the_row_of_a_value_it_cannot_send);
    RUN(postgresql_copy_refuses_values_its_columns_cannot_take);
    RUN(postgresql_bytea_in_escape_output_decodes_as_hex_does);
    RUN(postgresql_copy_out_is_refused_and_drained_and_wide_loads_refused);
    RUN(postgresql_infinite_dates_come_back_as_text_in_both_result_formats);
    RUN(mysql_a_question_mark_placeholder_is_refused_naming_its_offset);
    RUN(mysql_error_in_the_middle_of_a_result_fails_the_statement);
    RUN(mysql_refuses_values_it_cannot_store_naming_the_parameter);
    RUN(every_engine_refuses_an_unknown_value_type_and_transaction_operation);
    RUN(every_sql_engine_names_the_kind_of_constraint_violated);
    RUN(sqlite_batch_violating_a_deferred_foreign_key_fails_at_its_end_and_loads_nothing);
    RUN(a_host_name_that_does_not_resolve_fails_the_connect_naming_it);
    RUN(options_given_by_reference_are_checked_when_they_are_resolved);
    RUN(postgresql_hosts_that_need_no_lookup_connect);
    return TEST_SUMMARY();
}
