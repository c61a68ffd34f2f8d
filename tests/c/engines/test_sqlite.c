/* tests/c/engines/test_sqlite.c - the SQLite engine through the public synchronous API. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <keel/keel.h>

#include "core/timeconv.h"
#include "engines/engine.h"
#include "loop/loop_int.h"
#include "test.h"
/* A helper that could not open, acquire or run a statement fails the test case. */
#define SUPPORT_COUNT_FAILURES
#include "support.h"

static char tmpdir[] = "/tmp/keel-sqlite-XXXXXX";
static int file_counter;

/* A URL for a new database file in the temp dir; path receives the file path. */
static void new_file_url(char *url, size_t size, char *path, size_t psize) {
    snprintf(path, psize, "%s/db%d.sqlite", tmpdir, ++file_counter);
    snprintf(url, size, "sqlite:///%s", path);
}

static keel_db *open_file_db(const char *const *extra) {
    char url[256], path[200];
    new_file_url(url, sizeof url, path, sizeof path);
    return open_url(url, extra);
}

static void exec(keel_conn *c, const char *sql) { keel_result_free(q(c, sql, NULL, 0)); }

/* Runs a statement expected to fail; returns its status with err filled. */
static keel_status q_err(keel_conn *c, const char *sql, const keel_value *params, size_t n,
                         keel_error *err) {
    keel_result *res = NULL;
    keel_error_clear(err);
    keel_status st = keel_conn_query_sync(c, sql, params, n, &res, err);
    keel_result_free(res);
    return st;
}

static void txn(keel_conn *c, keel_txn_op op, unsigned depth) {
    keel_error err;
    if (c && keel_conn_transaction_sync(c, op, depth, &err) != KEEL_OK) {
        fprintf(stderr, "  transaction %d: %s\n", (int)op, err.message);
        test__failures_in_case++;
    }
}

static int str_eq(const keel_value *v, keel_type type, const char *s) {
    return same_str(v, type, s, strlen(s));
}

TEST(types_both_ways) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BOOLEAN, i INTEGER, f REAL, n NUMERIC, "
            "tx TEXT, y BLOB, d DATE, tm TIME, ts TIMESTAMP, tz TIMESTAMPTZ, u UUID, j JSON)");
    int32_t day = keel__days_from_civil(2024, 2, 29);
    int64_t tod = ((13 * 60 + 45) * 60 + 30) * INT64_C(1000000) + 123456;
    int64_t ts = day * INT64_C(86400000000) + tod;
    const unsigned char uuid[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                     0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    const unsigned char bytes[5] = { 0, 1, 2, 0xff, 0 };
    const char *text = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac";
    keel_value p[13] = {
        keel_int(1),
        keel_bool(1),
        keel_int(INT64_MIN),
        keel_float(3.25),
        keel_numeric("12.5"),
        keel_text(text),
        keel_bytes(bytes, sizeof bytes),
        keel_date(day),
        keel_time(tod),
        keel_timestamp(ts),
        keel_timestamptz(ts),
        keel_uuid(uuid),
        keel_json("{\"a\": [1, 2]}"),
    };
    keel_result *res = q(c,
                         "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                         "$12, $13)",
                         p, 13);
    CHECK_INT(keel_result_affected(res), 1);
    keel_result_free(res);
    keel_value nulls[13];
    for (int k = 0; k < 13; k++)
        nulls[k] = keel_null();
    nulls[0] = keel_int(2);
    keel_result_free(q(c,
                       "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                       "$12, $13)",
                       nulls, 13));

    res = q(c, "SELECT * FROM t ORDER BY id", NULL, 0);
    CHECK_INT(keel_result_nrows(res), 2);
    CHECK_INT(keel_result_ncols(res), 13);
    static const keel_type coltypes[13] = {
        KEEL_TYPE_INT,     KEEL_TYPE_BOOL,      KEEL_TYPE_INT,         KEEL_TYPE_FLOAT,
        KEEL_TYPE_NUMERIC, KEEL_TYPE_TEXT,      KEEL_TYPE_BYTES,       KEEL_TYPE_DATE,
        KEEL_TYPE_TIME,    KEEL_TYPE_TIMESTAMP, KEEL_TYPE_TIMESTAMPTZ, KEEL_TYPE_UUID,
        KEEL_TYPE_JSON
    };
    for (size_t k = 0; k < 13; k++) {
        CHECK_INT(keel_result_coltype(res, k), coltypes[k]);
        const keel_value *v = keel_result_value(res, 0, k);
        CHECK(v && v->type == coltypes[k]);
        const keel_value *nv = keel_result_value(res, 1, k);
        if (k > 0)
            CHECK(nv && nv->type == KEEL_TYPE_NULL);
    }
    CHECK_STR(keel_result_colname(res, 10), "tz");
    const keel_value *row = keel_result_row(res, 0);
    if (row) {
        CHECK_INT(row[0].u.i64, 1);
        CHECK_INT(row[1].u.boolean, 1);
        CHECK(row[2].u.i64 == INT64_MIN);
        CHECK(row[3].u.f64 == 3.25);
        CHECK(str_eq(&row[4], KEEL_TYPE_NUMERIC, "12.5"));
        CHECK(str_eq(&row[5], KEEL_TYPE_TEXT, text));
        CHECK(row[6].type == KEEL_TYPE_BYTES && row[6].u.str.len == 5 &&
              memcmp(row[6].u.str.ptr, bytes, 5) == 0);
        CHECK_INT(row[7].u.date, day);
        CHECK_INT(row[8].u.micros, tod);
        CHECK_INT(row[9].u.micros, ts);
        CHECK_INT(row[10].u.micros, ts);
        CHECK(memcmp(row[11].u.uuid, uuid, 16) == 0);
        CHECK(str_eq(&row[12], KEEL_TYPE_JSON, "{\"a\": [1, 2]}"));
    }
    keel_result_free(res);

    /* What is stored is plain SQLite text, readable by other tools. */
    res = q(c, "SELECT typeof(b), b FROM t WHERE id = 1", NULL, 0);
    row = keel_result_row(res, 0);
    if (row) {
        CHECK(str_eq(&row[0], KEEL_TYPE_TEXT, "integer"));
        CHECK(row[1].type == KEEL_TYPE_BOOL && row[1].u.boolean == 1);
    }
    keel_result_free(res);
    res = q(c,
            "SELECT d || '', tm || '', ts || '', tz || '', u || '', typeof(y) FROM t "
            "WHERE id = 1",
            NULL, 0);
    row = keel_result_row(res, 0);
    if (row) {
        CHECK(str_eq(&row[0], KEEL_TYPE_TEXT, "2024-02-29"));
        CHECK(str_eq(&row[1], KEEL_TYPE_TEXT, "13:45:30.123456"));
        CHECK(str_eq(&row[2], KEEL_TYPE_TEXT, "2024-02-29 13:45:30.123456"));
        CHECK(str_eq(&row[3], KEEL_TYPE_TEXT, "2024-02-29 13:45:30.123456+00:00"));
        CHECK(str_eq(&row[4], KEEL_TYPE_TEXT, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
        CHECK(str_eq(&row[5], KEEL_TYPE_TEXT, "blob"));
    }
    keel_result_free(res);

    /* Parameters in expressions have no declared type: they come back by storage class. */
    keel_value e[4] = { keel_bool(0), keel_numeric("7"), keel_date(0), keel_json("[]") };
    res = q(c, "SELECT $1, $2, $3, $4", e, 4);
    row = keel_result_row(res, 0);
    if (row) {
        CHECK(row[0].type == KEEL_TYPE_INT && row[0].u.i64 == 0);
        CHECK(str_eq(&row[1], KEEL_TYPE_TEXT, "7"));
        CHECK(str_eq(&row[2], KEEL_TYPE_TEXT, "1970-01-01"));
        CHECK(str_eq(&row[3], KEEL_TYPE_TEXT, "[]"));
        CHECK_INT(keel_result_coltype(res, 0), KEEL_TYPE_NULL);
    }
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(declared_type_fallbacks) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE f (id INTEGER PRIMARY KEY, b BOOL, d DATE, ts DATETIME, "
            "tz TIMESTAMP WITH TIME ZONE, u UUID, n DECIMAL(10,2), j JSONB, tm TIME, x FOO, "
            "e TEXT, y BLOB)");
    exec(c, "INSERT INTO f VALUES (1, 7, 'hello', 'yesterday', '2024-01-01 00:00:00', "
            "'not-a-uuid', 'abc', 42, '25:99', 1, '', x'')");
    exec(c, "INSERT INTO f VALUES (2, 'true', '2000-01-01', '2000-01-01T10:00:00', "
            "'2000-01-01 12:00:00+02:00', x'00112233445566778899aabbccddeeff', 0.1, 2.5, "
            "'10:00', 'x', NULL, NULL)");
    exec(c, "INSERT INTO f (id, n, j) VALUES (3, 12345678901234, '{\"k\": true}')");
    keel_result *res = q(c, "SELECT * FROM f ORDER BY id", NULL, 0);
    CHECK_INT(keel_result_nrows(res), 3);
    CHECK_INT(keel_result_coltype(res, 2), KEEL_TYPE_DATE);
    CHECK_INT(keel_result_coltype(res, 3), KEEL_TYPE_TIMESTAMP);
    CHECK_INT(keel_result_coltype(res, 4), KEEL_TYPE_TIMESTAMPTZ);
    CHECK_INT(keel_result_coltype(res, 6), KEEL_TYPE_NUMERIC);
    CHECK_INT(keel_result_coltype(res, 9), KEEL_TYPE_NULL);
    const keel_value *r = keel_result_row(res, 0);
    if (r) {
        CHECK(r[1].type == KEEL_TYPE_INT && r[1].u.i64 == 7);
        CHECK(str_eq(&r[2], KEEL_TYPE_TEXT, "hello"));
        CHECK(str_eq(&r[3], KEEL_TYPE_TEXT, "yesterday"));
        /* Text without an offset in a time-zone column is UTC (CURRENT_TIMESTAMP's form). */
        CHECK(r[4].type == KEEL_TYPE_TIMESTAMPTZ &&
              r[4].u.micros == keel__days_from_civil(2024, 1, 1) * INT64_C(86400000000));
        CHECK(str_eq(&r[5], KEEL_TYPE_TEXT, "not-a-uuid"));
        CHECK(str_eq(&r[6], KEEL_TYPE_TEXT, "abc"));
        CHECK(str_eq(&r[7], KEEL_TYPE_JSON, "42"));
        CHECK(str_eq(&r[8], KEEL_TYPE_TEXT, "25:99"));
        CHECK(r[9].type == KEEL_TYPE_INT && r[9].u.i64 == 1);
        CHECK(str_eq(&r[10], KEEL_TYPE_TEXT, ""));
        CHECK(r[11].type == KEEL_TYPE_BYTES && r[11].u.str.len == 0);
    }
    r = keel_result_row(res, 1);
    if (r) {
        CHECK(r[1].type == KEEL_TYPE_BOOL && r[1].u.boolean == 1);
        CHECK(r[2].type == KEEL_TYPE_DATE && r[2].u.date == keel__days_from_civil(2000, 1, 1));
        CHECK(r[3].type == KEEL_TYPE_TIMESTAMP &&
              r[3].u.micros ==
                  keel__days_from_civil(2000, 1, 1) * INT64_C(86400000000) + INT64_C(36000000000));
        CHECK(r[4].type == KEEL_TYPE_TIMESTAMPTZ &&
              r[4].u.micros ==
                  keel__days_from_civil(2000, 1, 1) * INT64_C(86400000000) + INT64_C(36000000000));
        CHECK(r[5].type == KEEL_TYPE_UUID && r[5].u.uuid[0] == 0x00 && r[5].u.uuid[15] == 0xff);
        CHECK(str_eq(&r[6], KEEL_TYPE_NUMERIC, "0.1"));
        CHECK(str_eq(&r[7], KEEL_TYPE_JSON, "2.5"));
        CHECK(r[8].type == KEEL_TYPE_TIME && r[8].u.micros == INT64_C(36000000000));
        CHECK(str_eq(&r[9], KEEL_TYPE_TEXT, "x"));
        CHECK(r[10].type == KEEL_TYPE_NULL);
    }
    r = keel_result_row(res, 2);
    if (r) {
        CHECK(str_eq(&r[6], KEEL_TYPE_NUMERIC, "12345678901234"));
        CHECK(str_eq(&r[7], KEEL_TYPE_JSON, "{\"k\": true}"));
    }
    keel_result_free(res);

    /* Untyped expressions come back by storage class, with no column type. */
    res = q(c, "SELECT 1, 2.5, 'x', x'00ff', NULL", NULL, 0);
    r = keel_result_row(res, 0);
    if (r) {
        CHECK(r[0].type == KEEL_TYPE_INT && r[0].u.i64 == 1);
        CHECK(r[1].type == KEEL_TYPE_FLOAT && r[1].u.f64 == 2.5);
        CHECK(str_eq(&r[2], KEEL_TYPE_TEXT, "x"));
        CHECK(r[3].type == KEEL_TYPE_BYTES && r[3].u.str.len == 2);
        CHECK(r[4].type == KEEL_TYPE_NULL);
        for (size_t k = 0; k < 5; k++)
            CHECK_INT(keel_result_coltype(res, k), KEEL_TYPE_NULL);
    }
    keel_result_free(res);

    /* Declared types match in any case, and long ones (searched in place) too. */
    exec(c, "CREATE TABLE g (a integer, b Text, c real, d blob, e boolean, "
            "f timestamp with time zone, g \"unsigned big integer of a declared type long "
            "enough\", h \"a declared type name long enough to be searched in place: Bool\")");
    res = q(c, "SELECT * FROM g", NULL, 0);
    static const keel_type want[] = { KEEL_TYPE_INT,   KEEL_TYPE_TEXT, KEEL_TYPE_FLOAT,
                                      KEEL_TYPE_BYTES, KEEL_TYPE_BOOL, KEEL_TYPE_TIMESTAMPTZ,
                                      KEEL_TYPE_INT,   KEEL_TYPE_BOOL };
    CHECK_INT(keel_result_ncols(res), 8);
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        CHECK_INT(keel_result_coltype(res, k), want[k]);
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(intervals_are_duration_text_and_time_columns_read_it) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE d (id INTEGER PRIMARY KEY, tm TIME)");
    keel_value iv[2] = { keel_int(1), { .type = KEEL_TYPE_INTERVAL } };
    iv[1].u.interval.days = -2;
    iv[1].u.interval.micros = -INT64_C(3600000000) - 500000;
    keel_result_free(q(c, "INSERT INTO d VALUES ($1, $2)", iv, 2));
    iv[0] = keel_int(2);
    iv[1].u.interval.days = 0;
    iv[1].u.interval.micros = INT64_C(3723000000);
    keel_result_free(q(c, "INSERT INTO d VALUES ($1, $2)", iv, 2));
    keel_result *res = q(c, "SELECT tm, typeof(tm), CAST(tm AS TEXT) FROM d ORDER BY id", NULL, 0);
    const keel_value *r = keel_result_row(res, 0);
    CHECK(r && r[0].type == KEEL_TYPE_INTERVAL && r[0].u.interval.months == 0 &&
          r[0].u.interval.days == 0 && r[0].u.interval.micros == -INT64_C(176400500000));
    CHECK(r && str_eq(&r[1], KEEL_TYPE_TEXT, "text"));
    CHECK(r && str_eq(&r[2], KEEL_TYPE_TEXT, "-49:00:00.500000"));
    r = keel_result_row(res, 1);
    CHECK(r && r[0].type == KEEL_TYPE_TIME && r[0].u.micros == INT64_C(3723000000));
    CHECK(r && str_eq(&r[2], KEEL_TYPE_TEXT, "01:02:03"));
    keel_result_free(res);
    keel_error err;
    iv[1].u.interval.months = 1;
    CHECK_INT(q_err(c, "SELECT $2", iv, 2, &err), KEEL_ERR_DATA);
    CHECK_STR(err.message, "parameter $2: an interval with months is not a SQLite value");
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(large_blob_and_many_rows) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    size_t size = 10 * 1024 * 1024;
    unsigned char *blob = malloc(size);
    if (!blob) {
        CHECK(blob != NULL);
        return;
    }
    for (size_t i = 0; i < size; i++)
        blob[i] = (unsigned char)(i * 31 + (i >> 13));
    exec(c, "CREATE TABLE b (id INTEGER PRIMARY KEY, y BLOB)");
    keel_value p[2] = { keel_int(1), keel_bytes(blob, size) };
    keel_result_free(q(c, "INSERT INTO b VALUES ($1, $2)", p, 2));
    keel_result *res = q(c, "SELECT y, length(y) FROM b WHERE id = 1", NULL, 0);
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_BYTES && v->u.str.len == size &&
          memcmp(v->u.str.ptr, blob, size) == 0);
    v = keel_result_value(res, 0, 1);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == (int64_t)size);
    keel_result_free(res);
    free(blob);

    exec(c, "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
    res = q(c,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000) "
            "INSERT INTO big SELECT x, 'row ' || x FROM n",
            NULL, 0);
    CHECK_INT(keel_result_affected(res), 100000);
    keel_result_free(res);
    res = q(c, "SELECT id, name FROM big ORDER BY id", NULL, 0);
    CHECK_INT(keel_result_nrows(res), 100000);
    CHECK_INT(keel_result_affected(res), -1);
    const keel_value *last = keel_result_row(res, 99999);
    CHECK(last && last[0].u.i64 == 100000 && str_eq(&last[1], KEEL_TYPE_TEXT, "row 100000"));
    keel_result_free(res);
    /* An engine that does not stream has its rows handed to keel_conn_query_rows in slices
     * of at most 256 rows, in order, before the query callback. */
    rows_run x;
    run_rows(db, c, "SELECT id, name FROM big ORDER BY id", NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.batches, (100000 + 255) / 256);
    CHECK_INT(x.max_batch, 256);
    CHECK_INT(x.rows, 100000);
    CHECK(x.in_order);
    CHECK_STR(x.colname, "id");
    CHECK(x.res && keel_result_nrows(x.res) == 0 && keel_result_ncols(x.res) == 2);
    keel_result_free(x.res);
    run_rows(db, c, "SELECT id FROM big WHERE id < 0", NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.batches, 0);
    CHECK(x.res && keel_result_ncols(x.res) == 1);
    keel_result_free(x.res);
    res = q(c, "UPDATE big SET name = name || '!' WHERE id <= 250", NULL, 0);
    CHECK_INT(keel_result_affected(res), 250);
    keel_result_free(res);
    res = q(c, "CREATE INDEX big_name ON big(name)", NULL, 0);
    CHECK_INT(keel_result_affected(res), -1);
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(executemany_atomic) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE m (id INTEGER PRIMARY KEY, name TEXT)");
    enum { ROWS = 10000 };
    keel_value *p = malloc(ROWS * 2 * sizeof *p);
    char(*names)[24] = malloc(ROWS * sizeof *names);
    if (!p || !names) {
        CHECK(p && names);
        free(p);
        free(names);
        return;
    }
    for (int i = 0; i < ROWS; i++) {
        snprintf(names[i], sizeof names[i], "name %d", i);
        p[2 * i] = keel_int(i);
        p[2 * i + 1] = keel_text(names[i]);
    }
    keel_result *res = NULL;
    keel_error err;
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO m VALUES ($1, $2)", p, ROWS, 2, &res, &err),
              KEEL_OK);
    CHECK_INT(keel_result_affected(res), ROWS);
    CHECK_INT(keel_result_nrows(res), 0);
    keel_result_free(res);
    CHECK_INT(q_int(c, "SELECT count(*) FROM m"), ROWS);

    /* A duplicate key in row 5000 leaves the table as it was. */
    for (int i = 0; i < ROWS; i++)
        p[2 * i] = keel_int(ROWS + i);
    p[2 * 5000] = keel_int(17);
    res = NULL;
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO m VALUES ($1, $2)", p, ROWS, 2, &res, &err),
              KEEL_ERR_INTEGRITY);
    CHECK(res == NULL);
    CHECK_STR(err.sqlstate, "23505");
    CHECK_CONTAINS(err.message, "row 5000");
    CHECK_STR(err.engine, "sqlite");
    CHECK_STR(err.database, "default");
    CHECK_INT(q_int(c, "SELECT count(*) FROM m"), ROWS);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* Inside a transaction the failed batch is undone and the transaction goes on. */
    txn(c, KEEL_TXN_BEGIN, 0);
    exec(c, "INSERT INTO m VALUES (-1, 'before')");
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO m VALUES ($1, $2)", p, ROWS, 2, &res, &err),
              KEEL_ERR_INTEGRITY);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM m"), ROWS + 1);
    txn(c, KEEL_TXN_ROLLBACK, 0);
    CHECK_INT(q_int(c, "SELECT count(*) FROM m"), ROWS);

    /* A bad row in the middle names its index too. */
    keel_value bad[4] = { keel_int(-5), keel_text("x"), keel_int(-6), keel_text("y") };
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO m VALUES ($1, $2) RETURNING id", bad, 2, 2,
                                        &res, &err),
              KEEL_OK);
    CHECK_INT(keel_result_affected(res), 2);
    keel_result_free(res);
    CHECK_INT(keel_conn_query_many_sync(c, "SELECT $1, $2; SELECT 2", bad, 2, 2, &res, &err),
              KEEL_ERR_PROGRAMMING);
    free(p);
    free(names);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(scripts) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    keel_result *res = q(c,
                         "CREATE TABLE s (x INTEGER);\n"
                         "INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);\n"
                         "-- a comment\n"
                         "SELECT sum(x) AS total FROM s; /* trailing */",
                         NULL, 0);
    CHECK_INT(keel_result_nrows(res), 1);
    CHECK_STR(keel_result_colname(res, 0), "total");
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 3);
    keel_result_free(res);
    res = q(c, "  -- nothing but a comment\n ; ", NULL, 0);
    CHECK(res && keel_result_ncols(res) == 0 && keel_result_nrows(res) == 0);
    keel_result_free(res);
    keel_error err;
    CHECK_INT(q_err(c, "INSERT INTO s VALUES (3); SELEC oops", NULL, 0, &err),
              KEEL_ERR_PROGRAMMING);
    CHECK_STR(err.sqlstate, "42601");
    keel_value one = keel_int(1);
    CHECK_INT(q_err(c, "SELECT $1; SELECT 2", &one, 1, &err), KEEL_ERR_PROGRAMMING);
    CHECK_INT(q_int(c, "SELECT count(*) FROM s"), 3);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(errors) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    keel_error err;
    CHECK_INT(q_err(c, "SELEC 1", NULL, 0, &err), KEEL_ERR_PROGRAMMING);
    CHECK_STR(err.sqlstate, "42601");
    CHECK_CONTAINS(err.message, "syntax error");
    CHECK_STR(err.engine, "sqlite");
    CHECK_INT(q_err(c, "SELECT * FROM missing", NULL, 0, &err), KEEL_ERR_PROGRAMMING);
    CHECK_STR(err.sqlstate, "42P01");
    CHECK_CONTAINS(err.message, "missing");
    exec(c, "CREATE TABLE u (id INTEGER PRIMARY KEY, e TEXT UNIQUE NOT NULL, "
            "p INTEGER REFERENCES u(id), k INTEGER CHECK (k > 0))");
    CHECK_INT(q_err(c, "SELECT nope FROM u", NULL, 0, &err), KEEL_ERR_PROGRAMMING);
    CHECK_STR(err.sqlstate, "42703");
    exec(c, "INSERT INTO u VALUES (1, 'a', NULL, 1)");
    CHECK_INT(q_err(c, "INSERT INTO u VALUES (2, 'a', NULL, 1)", NULL, 0, &err),
              KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23505");
    CHECK_CONTAINS(err.message, "UNIQUE");
    CHECK_INT(q_err(c, "INSERT INTO u VALUES (1, 'b', NULL, 1)", NULL, 0, &err),
              KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23505");
    CHECK_INT(q_err(c, "INSERT INTO u VALUES (3, NULL, NULL, 1)", NULL, 0, &err),
              KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23502");
    CHECK_INT(q_err(c, "INSERT INTO u VALUES (4, 'd', 99, 1)", NULL, 0, &err), KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23503");
    CHECK_INT(q_err(c, "INSERT INTO u VALUES (5, 'e', NULL, -1)", NULL, 0, &err),
              KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23514");

    keel_value one = keel_int(1);
    CHECK_INT(q_err(c, "SELECT $1, $2", &one, 1, &err), KEEL_ERR_PARAMETERS);
    /* SQLite's own placeholders are not keel's: they count as unbound parameters. */
    CHECK_INT(q_err(c, "SELECT ?", NULL, 0, &err), KEEL_ERR_PARAMETERS);
    CHECK_INT(q_err(c, "SELECT :name", NULL, 0, &err), KEEL_ERR_PARAMETERS);
    CHECK_INT(q_err(c, "SELECT json('{bad')", NULL, 0, &err), KEEL_ERR_DATABASE);
    /* A BSON document is refused as on the other SQL engines, before the job starts. */
    keel_value doc = { .type = KEEL_TYPE_DOCUMENT, .u.str = { "\x05\0\0\0\0", 5 } };
    CHECK_INT(q_err(c, "SELECT $1", &doc, 1, &err), KEEL_ERR_DATA);
    CHECK_STR(err.message,
              "parameter $1: a BSON document is not a SQLite value; pass JSON instead");
    keel_value rows[2] = { keel_int(1), doc };
    keel_result *res = NULL;
    CHECK_INT(keel_conn_query_many_sync(c, "SELECT $1", rows, 2, 1, &res, &err), KEEL_ERR_DATA);
    CHECK_STR(err.message,
              "row 1: parameter $1: a BSON document is not a SQLite value; pass JSON instead");
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_ERR_TRANSACTION);
    CHECK_STR(err.sqlstate, "25P01");
    /* The connection is fine after every error. */
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

/* SQLite's result codes each map to a keel status and SQLSTATE; the connection stays usable. */
TEST(errors_by_result_code) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    keel_error err;
    CHECK_INT(q_err(c, "SELECT keel_no_such_function(1)", NULL, 0, &err), KEEL_ERR_PROGRAMMING);
    CHECK_STR(err.sqlstate, "42883");
    CHECK_CONTAINS(err.message, "keel_no_such_function");
    exec(c, "CREATE TABLE m (id INTEGER PRIMARY KEY)");
    CHECK_INT(q_err(c, "INSERT INTO m VALUES ('not a rowid')", NULL, 0, &err), KEEL_ERR_DATA);
    CHECK_STR(err.sqlstate, "22000");
    CHECK_CONTAINS(err.message, "datatype mismatch");
    /* Longer than SQLite's limit on a value: refused before anything is allocated. */
    CHECK_INT(q_err(c, "SELECT zeroblob(2000000000)", NULL, 0, &err), KEEL_ERR_DATA);
    CHECK_STR(err.sqlstate, "22000");
    CHECK_CONTAINS(err.message, "too big");
    CHECK_INT(q_err(c, "ATTACH DATABASE '/nonexistent-keel-dir/a.db' AS a", NULL, 0, &err),
              KEEL_ERR_CONNECT);
    CHECK_STR(err.sqlstate, "08001");
    CHECK_INT(q_int(c, "SELECT count(*) FROM m"), 0);
    keel_conn_release(c);
    keel_db_close(db);
}

/* Text a DECIMAL column keeps as text is a NUMERIC value when it is a decimal number SQLite
 * does not parse (NaN, the infinities), and stays TEXT otherwise; a BOOL column reads 'false'. */
TEST(decimal_text_and_boolean_words) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE d (id INTEGER PRIMARY KEY, n DECIMAL(10,2), b BOOL)");
    static const struct {
        const char *in;
        keel_type type;
    } cases[] = {
        { "NaN", KEEL_TYPE_NUMERIC },
        { "Infinity", KEEL_TYPE_NUMERIC },
        { "-Infinity", KEEL_TYPE_NUMERIC },
        { "+Infinity", KEEL_TYPE_NUMERIC },
        { "-NaN", KEEL_TYPE_TEXT },
        { "1e", KEEL_TYPE_TEXT },
        { "1e+", KEEL_TYPE_TEXT },
        { "0x10", KEEL_TYPE_TEXT },
        { ".", KEEL_TYPE_TEXT },
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        keel_value row[2] = { keel_int((int64_t)i), keel_text(cases[i].in) };
        keel_result_free(q(c, "INSERT INTO d (id, n) VALUES ($1, $2)", row, 2));
    }
    keel_result *res = q(c, "SELECT n FROM d ORDER BY id", NULL, 0);
    CHECK_INT(keel_result_nrows(res), n);
    for (size_t i = 0; i < n && i < keel_result_nrows(res); i++) {
        if (!str_eq(keel_result_value(res, i, 0), cases[i].type, cases[i].in)) {
            fprintf(stderr, "  %s read back as type %d\n", cases[i].in,
                    (int)keel_result_value(res, i, 0)->type);
            CHECK(!"the value keeps its text, as NUMERIC or TEXT");
        }
    }
    keel_result_free(res);
    exec(c, "UPDATE d SET b = CASE id WHEN 0 THEN 'false' WHEN 1 THEN 'FALSE' ELSE 'no' END");
    res = q(c, "SELECT b FROM d WHERE id < 3 ORDER BY id", NULL, 0);
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_BOOL && v->u.boolean == 0);
    v = keel_result_value(res, 1, 0);
    CHECK(v && v->type == KEEL_TYPE_BOOL && v->u.boolean == 0);
    v = keel_result_value(res, 2, 0);
    CHECK(v && str_eq(v, KEEL_TYPE_TEXT, "no"));
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(connect_errors_and_options) {
    keel_db *db = open_url("sqlite:////nonexistent-keel-dir/sub/x.db", NULL);
    keel_conn *c = NULL;
    keel_error err;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
    CHECK_CONTAINS(err.message, "/nonexistent-keel-dir/sub/x.db");
    CHECK_STR(err.engine, "sqlite");
    keel_db_close(db);

    /* A file that is not a database fails at connect time too. */
    char url[256], path[200];
    new_file_url(url, sizeof url, path, sizeof path);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("this is not a database file, not even close to one\n", f);
        fclose(f);
    }
    db = open_url(url, NULL);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
    CHECK_CONTAINS(err.message, path);
    keel_db_close(db);

    keel_config *cfg = NULL;
    keel_config_new(&cfg, &err);
    keel_config_set_url(cfg, "sqlite:///tmp/whatever.db", &err);
    keel_config_set(cfg, "databases.default.options.bogus", "1", &err);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.default.options.bogus: unknown SQLite option");
    keel_config_free(cfg);

    static const char *const bad[][2] = {
        { "databases.default.options.synchronous", "SOMETIMES" },
        { "databases.default.options.busy_timeout", "-1" },
        { "databases.default.options.busy_timeout", "12ms" },
        { "databases.default.options.journal_mode", "fast" },
        { "databases.default.options.foreign_keys", "maybe" },
        { "databases.default.options.mode", "rwx" },
        { "databases.default.options.transaction_mode", "later" },
        { "databases.default.options.inline_steps", "-1" },
        { "databases.default.options.inline_steps", "many" },
        { "databases.default.options.inline_steps", "3000000000" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg = NULL;
        keel_config_new(&cfg, &err);
        keel_config_set_url(cfg, "sqlite:///tmp/whatever.db", &err);
        keel_config_set(cfg, bad[i][0], bad[i][1], &err);
        CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
        CHECK_CONTAINS(err.message, bad[i][0]);
        keel_config_free(cfg);
    }
}

TEST(pragmas_and_modes) {
    char url[256], path[200];
    new_file_url(url, sizeof url, path, sizeof path);
    keel_db *db = open_url(url, NULL);
    keel_conn *c = acquire(db);
    keel_result *res = q(c, "PRAGMA journal_mode", NULL, 0);
    CHECK(str_eq(keel_result_value(res, 0, 0), KEEL_TYPE_TEXT, "wal"));
    keel_result_free(res);
    CHECK_INT(q_int(c, "PRAGMA synchronous"), 1);
    CHECK_INT(q_int(c, "PRAGMA foreign_keys"), 1);
    CHECK_INT(q_int(c, "PRAGMA busy_timeout"), 5000);
    exec(c, "CREATE TABLE r (x INTEGER)");
    exec(c, "INSERT INTO r VALUES (1)");
    keel_conn_release(c);
    keel_db_close(db);

    static const char *const opts[] = { "databases.default.options.journal_mode",
                                        "delete",
                                        "databases.default.options.synchronous",
                                        "FULL",
                                        "databases.default.options.foreign_keys",
                                        "off",
                                        "databases.default.options.busy_timeout",
                                        "250",
                                        NULL };
    db = open_file_db(opts);
    c = acquire(db);
    res = q(c, "PRAGMA journal_mode", NULL, 0);
    CHECK(str_eq(keel_result_value(res, 0, 0), KEEL_TYPE_TEXT, "delete"));
    keel_result_free(res);
    CHECK_INT(q_int(c, "PRAGMA synchronous"), 2);
    CHECK_INT(q_int(c, "PRAGMA foreign_keys"), 0);
    CHECK_INT(q_int(c, "PRAGMA busy_timeout"), 250);
    keel_conn_release(c);
    keel_db_close(db);

    /* Read-only: reads and transactions work, writes fail. */
    static const char *const ro[] = { "databases.default.options.mode", "ro", NULL };
    db = open_url(url, ro);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT count(*) FROM r"), 1);
    keel_error err;
    CHECK(q_err(c, "INSERT INTO r VALUES (2)", NULL, 0, &err) != KEEL_OK);
    CHECK_CONTAINS(err.message, "readonly");
    txn(c, KEEL_TXN_BEGIN, 0);
    CHECK_INT(q_int(c, "SELECT count(*) FROM r"), 1);
    txn(c, KEEL_TXN_COMMIT, 0);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(busy_after_timeout) {
    static const char *const opts[] = { "databases.default.options.busy_timeout", "100", NULL };
    keel_db *db = open_file_db(opts);
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    exec(a, "CREATE TABLE w (x INTEGER)");
    txn(a, KEEL_TXN_BEGIN, 0);
    exec(a, "INSERT INTO w VALUES (1)");
    keel_error err;
    CHECK_INT(q_err(b, "INSERT INTO w VALUES (2)", NULL, 0, &err), KEEL_ERR_OPERATIONAL);
    CHECK_CONTAINS(err.message, "locked");
    /* WAL lets the reader see the last committed state meanwhile. */
    CHECK_INT(q_int(b, "SELECT count(*) FROM w"), 0);
    txn(a, KEEL_TXN_COMMIT, 0);
    exec(b, "INSERT INTO w VALUES (2)");
    CHECK_INT(q_int(a, "SELECT count(*) FROM w"), 2);
    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(memory_shared_by_pool) {
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    CHECK(a != b);
    exec(a, "CREATE TABLE mem (x TEXT)");
    keel_value v = keel_text("shared");
    keel_result_free(q(a, "INSERT INTO mem VALUES ($1)", &v, 1));
    /* The second read of b runs inline and sees the same shared memory database. */
    for (int round = 0; round < 2; round++) {
        keel_result *res = q(b, "SELECT x FROM mem", NULL, 0);
        CHECK(str_eq(keel_result_value(res, 0, 0), KEEL_TYPE_TEXT, "shared"));
        keel_result_free(res);
    }
    exec(a, "INSERT INTO mem VALUES ('more')");
    CHECK_INT(q_int(b, "SELECT count(*) FROM mem"), 2);
    CHECK_INT(q_int(b, "SELECT count(*) FROM mem"), 2);

    /* Another keel_db has its own memory database. */
    keel_db *other = open_url("sqlite:///:memory:", NULL);
    keel_conn *o = acquire(other);
    keel_error err;
    CHECK_INT(q_err(o, "SELECT x FROM mem", NULL, 0, &err), KEEL_ERR_PROGRAMMING);
    keel_conn_release(o);
    keel_db_close(other);

    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(transactions) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE t (x INTEGER)");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    txn(c, KEEL_TXN_BEGIN, 0);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    exec(c, "INSERT INTO t VALUES (1)");
    txn(c, KEEL_TXN_SAVEPOINT, 1);
    exec(c, "INSERT INTO t VALUES (2)");
    txn(c, KEEL_TXN_SAVEPOINT, 2);
    exec(c, "INSERT INTO t VALUES (3)");
    txn(c, KEEL_TXN_RELEASE, 2);
    txn(c, KEEL_TXN_ROLLBACK_TO, 1);
    txn(c, KEEL_TXN_RELEASE, 1);
    CHECK_INT(q_int(c, "SELECT count(*) FROM t"), 1);
    txn(c, KEEL_TXN_COMMIT, 0);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    txn(c, KEEL_TXN_BEGIN, 0);
    exec(c, "INSERT INTO t VALUES (4)");
    txn(c, KEEL_TXN_ROLLBACK, 0);
    CHECK_INT(q_int(c, "SELECT count(*) FROM t"), 1);
    keel_error err;
    txn(c, KEEL_TXN_BEGIN, 0);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 9, &err), KEEL_ERR_TRANSACTION);
    CHECK_STR(err.sqlstate, "3B001");
    /* Released inside a transaction: the pool rolls it back. */
    exec(c, "INSERT INTO t VALUES (5)");
    keel_conn_release(c);
    c = acquire(db);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM t"), 1);
    keel_conn_release(c);

    keel_result *res = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT count(*) FROM t", NULL, 0, &res, &err), KEEL_OK);
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 1);
    keel_result_free(res);
    keel_db_close(db);
}

TEST(statement_cache) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE sc (a INTEGER)");
    exec(c, "INSERT INTO sc VALUES (1)");
    char sql[64];
    /* More distinct statements than the cache holds, twice over, then the first ones again. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 80; i++) {
            snprintf(sql, sizeof sql, "SELECT a + %d FROM sc", i);
            CHECK_INT(q_int(c, sql), 1 + i);
        }
    }
    for (int i = 0; i < 100; i++) {
        keel_value p = keel_int(i);
        keel_result *res = q(c, "SELECT $1 * 2", &p, 1);
        const keel_value *v = keel_result_value(res, 0, 0);
        CHECK(v && v->u.i64 == 2 * i);
        keel_result_free(res);
    }
    /* A cached statement follows schema changes. */
    keel_result *res = q(c, "SELECT * FROM sc", NULL, 0);
    CHECK_INT(keel_result_ncols(res), 1);
    keel_result_free(res);
    exec(c, "ALTER TABLE sc ADD COLUMN b TEXT DEFAULT 'new'");
    res = q(c, "SELECT * FROM sc", NULL, 0);
    CHECK_INT(keel_result_ncols(res), 2);
    CHECK(str_eq(keel_result_value(res, 0, 1), KEEL_TYPE_TEXT, "new"));
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

static void cancel_cb(void *arg) { keel_conn_cancel(arg); }

static const char *const long_query =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000) "
    "SELECT count(*) FROM n";

TEST(cancel_long_query) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    if (!c)
        return;
    keel_conn_cancel(c); /* idle: nothing happens */
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_timer *t = keel__timer_new(keel_db_loop(db), cancel_cb, c);
    CHECK(t != NULL);
    for (int round = 0; round < 3; round++) {
        keel__timer_arm(t, keel_now_ms() + 100);
        keel_error err;
        int64_t start = keel_now_ms();
        CHECK_INT(q_err(c, long_query, NULL, 0, &err), KEEL_ERR_CANCELLED);
        CHECK_STR(err.sqlstate, "57014");
        CHECK(keel_now_ms() - start < 30000);
        CHECK_INT(q_int(c, "SELECT 1"), 1);
        /* A statement never prepared before must not see a stale interrupt either. */
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT 40 + %d", round);
        CHECK_INT(q_int(c, sql), 40 + round);
    }
    /* A cancelled batch is undone. */
    exec(c, "CREATE TABLE cb (x INTEGER)");
    enum { N = 200000 };
    keel_value *p = malloc(N * sizeof *p);
    if (p) {
        for (int i = 0; i < N; i++)
            p[i] = keel_int(i);
        keel__timer_arm(t, keel_now_ms() + 20);
        keel_result *res = NULL;
        keel_error err;
        keel_status st = keel_conn_query_many_sync(
            c,
            "INSERT INTO cb SELECT $1 FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL "
            "SELECT x + 1 FROM n WHERE x < 20) SELECT x FROM n)",
            p, N, 1, &res, &err);
        keel_result_free(res);
        if (st == KEEL_ERR_CANCELLED) {
            CHECK_STR(err.sqlstate, "57014");
            CHECK_INT(q_int(c, "SELECT count(*) FROM cb"), 0);
        } else {
            CHECK_INT(st, KEEL_OK); /* a very fast machine finished first */
        }
        CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
        free(p);
    }
    keel__timer_free(t);
    keel_conn_release(c);
    keel_db_close(db);
}

static void record_cb(keel_result *res, const keel_error *err, void *arg) {
    *(keel_status *)arg = err ? err->code : KEEL_OK;
    keel_result_free(res);
}

TEST(close_while_running) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    if (!c)
        return;
    keel_status got = (keel_status)-1;
    keel_error err;
    CHECK_INT(keel_conn_query(c, long_query, NULL, 0, record_cb, &got, &err), KEEL_OK);
    /* Released while running: cancelled, then the db closes with the job still in flight. */
    keel_conn_release(c);
    keel_db_close(db);
    CHECK(got != KEEL_OK);
}

/* ---- reads run inline on the loop thread ---- */

/* The outcome of one asynchronous statement. */
typedef struct outcome {
    int done;
    keel_status status;
    keel_error err;
    keel_result *res;
} outcome;

static void outcome_cb(keel_result *res, const keel_error *err, void *arg) {
    outcome *o = arg;
    o->done = 1;
    o->status = err ? err->code : KEEL_OK;
    if (err)
        o->err = *err;
    o->res = res;
}

/*
 * Starts sql on c and returns how many worker jobs are pending right after: 0 when the engine
 * ran it inline on the loop thread, 1 when it went to a worker. Either way the outcome must not
 * be reported from inside the start.
 */
static size_t start_query(keel_conn *c, const char *sql, const keel_value *p, size_t n,
                          outcome *o) {
    memset(o, 0, sizeof *o);
    keel_error err;
    CHECK_INT(keel_conn_query(c, sql, p, n, outcome_cb, o, &err), KEEL_OK);
    CHECK(!o->done);
    return keel__workers_pending(keel__conn_workers(c));
}

/* Runs the loop until o is reported. */
static void await_outcome(keel_db *db, outcome *o) {
    CHECK_INT(keel_loop_run(keel_db_loop(db), &o->done), KEEL_OK);
}

/* The first value of o's result as an integer, or INT64_MIN; frees the result. */
static int64_t outcome_int(outcome *o) {
    const keel_value *v = keel_result_value(o->res, 0, 0);
    int64_t out = v && v->type == KEEL_TYPE_INT ? v->u.i64 : INT64_MIN;
    keel_result_free(o->res);
    o->res = NULL;
    return out;
}

static const char *const point_sql = "SELECT v FROM pts WHERE id = $1";

TEST(inline_reads) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    if (!c)
        return;
    exec(c, "CREATE TABLE pts (id INTEGER PRIMARY KEY, v TEXT)");
    exec(c, "INSERT INTO pts SELECT x, 'v' || x FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION "
            "ALL SELECT x + 1 FROM n WHERE x < 100) SELECT x FROM n)");
    outcome o;
    /* The first run prepares the statement, on a worker; later runs find it cached. */
    keel_value p = keel_int(5);
    CHECK_INT(start_query(c, point_sql, &p, 1, &o), 1);
    await_outcome(db, &o);
    CHECK(str_eq(keel_result_value(o.res, 0, 0), KEEL_TYPE_TEXT, "v5"));
    keel_result_free(o.res);
    for (int i = 1; i <= 100; i += 33) {
        p = keel_int(i);
        CHECK_INT(start_query(c, point_sql, &p, 1, &o), 0);
        await_outcome(db, &o);
        CHECK_INT(o.status, KEEL_OK);
        CHECK_INT(keel_result_nrows(o.res), 1);
        CHECK_INT(keel_result_affected(o.res), -1);
        CHECK_STR(keel_result_colname(o.res, 0), "v");
        char want[16];
        snprintf(want, sizeof want, "v%d", i);
        CHECK(str_eq(keel_result_value(o.res, 0, 0), KEEL_TYPE_TEXT, want));
        keel_result_free(o.res);
    }
    p = keel_int(1000);
    CHECK_INT(start_query(c, point_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(keel_result_nrows(o.res), 0);
    keel_result_free(o.res);

    /* An error at run time is reported like a worker's, from the loop. */
    static const char *const json_sql = "SELECT json_extract($1, '$.a')";
    keel_value doc = keel_text("{\"a\": 7}");
    keel_result_free(q(c, json_sql, &doc, 1));
    doc = keel_text("{not json");
    CHECK_INT(start_query(c, json_sql, &doc, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(o.status, KEEL_ERR_DATABASE);
    CHECK_CONTAINS(o.err.message, "malformed JSON");
    CHECK(o.res == NULL);

    /* Inside a transaction a read sees the transaction's own writes, inline too. */
    txn(c, KEEL_TXN_BEGIN, 0);
    exec(c, "INSERT INTO pts VALUES (1000, 'new')");
    CHECK_INT(start_query(c, point_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK(str_eq(keel_result_value(o.res, 0, 0), KEEL_TYPE_TEXT, "new"));
    keel_result_free(o.res);
    txn(c, KEEL_TXN_ROLLBACK, 0);
    CHECK_INT(start_query(c, point_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(keel_result_nrows(o.res), 0);
    keel_result_free(o.res);

    /* Writes, and statements that only look read-only to SQLite, always go to a worker. */
    static const char *const writes[] = { "UPDATE pts SET v = v WHERE id = 1", "BEGIN", "COMMIT",
                                          "PRAGMA cache_size = 1000" };
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
            CHECK_INT(start_query(c, writes[i], NULL, 0, &o), 1);
            await_outcome(db, &o);
            CHECK_INT(o.status, KEEL_OK);
            keel_result_free(o.res);
        }
    }
    keel_conn_release(c);
    keel_db_close(db);

    /* inline_steps = 0 runs every statement on a worker. */
    static const char *const off[] = { "databases.default.options.inline_steps", "0", NULL };
    db = open_file_db(off);
    c = acquire(db);
    for (int round = 0; round < 3; round++) {
        CHECK_INT(start_query(c, "SELECT 41 + 1", NULL, 0, &o), 1);
        await_outcome(db, &o);
        CHECK_INT(outcome_int(&o), 42);
    }
    keel_conn_release(c);
    keel_db_close(db);
}

/* A timer that re-arms itself every millisecond, counting how often the loop ran it. */
typedef struct ticker {
    keel_timer *t;
    int ticks;
} ticker;

static void tick(void *arg) {
    ticker *k = arg;
    k->ticks++;
    keel__timer_arm(k->t, keel_now_ms() + 1);
}

static const char *const count_sql =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $1) "
    "SELECT count(*) FROM n";

TEST(inline_budget_falls_back) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    if (!c)
        return;
    outcome o;
    keel_value p = keel_int(10);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 1);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 10);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 10);

    /* Past the budget the statement starts over on a worker, and the loop runs meanwhile. */
    ticker k = { keel__timer_new(keel_db_loop(db), tick, &k), 0 };
    CHECK(k.t != NULL);
    keel__timer_arm(k.t, keel_now_ms() + 1);
    p = keel_int(3000000);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 1);
    await_outcome(db, &o);
    CHECK_INT(o.status, KEEL_OK);
    CHECK_INT(outcome_int(&o), 3000000);
    CHECK(k.ticks >= 2);
    keel__timer_free(k.t);

    /* The fallback leaves the statement ready for the next inline run. */
    p = keel_int(20);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 20);

    /* A budget of one step moves even a point read to a worker, with the same result. */
    keel_conn_release(c);
    keel_db_close(db);
    static const char *const tiny[] = { "databases.default.options.inline_steps", "1", NULL };
    db = open_file_db(tiny);
    c = acquire(db);
    for (int round = 0; round < 3; round++) {
        CHECK_INT(start_query(c, count_sql, &p, 1, &o), 1);
        await_outcome(db, &o);
        CHECK_INT(outcome_int(&o), 20);
    }
    keel_conn_release(c);
    keel_db_close(db);
}

/* Commits the transaction of the connection given, from a timer. */
typedef struct committer {
    keel_conn *c;
    outcome o;
} committer;

static void commit_now(void *arg) {
    committer *k = arg;
    keel_error err;
    CHECK_INT(keel_conn_transaction(k->c, KEEL_TXN_COMMIT, 0, outcome_cb, &k->o, &err), KEEL_OK);
}

TEST(inline_busy_falls_back) {
    /* In rollback-journal mode an exclusive transaction keeps every reader out. */
    static const char *const opts[] = { "databases.default.options.journal_mode", "DELETE",
                                        "databases.default.options.transaction_mode", "EXCLUSIVE",
                                        NULL };
    keel_db *db = open_file_db(opts);
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    if (!a || !b)
        return;
    exec(a, "CREATE TABLE w (x INTEGER)");
    exec(a, "INSERT INTO w VALUES (1)");
    static const char *const count = "SELECT count(*) FROM w";
    CHECK_INT(q_int(b, count), 1);
    outcome o;
    CHECK_INT(start_query(b, count, NULL, 0, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 1);

    txn(a, KEEL_TXN_BEGIN, 0);
    exec(a, "INSERT INTO w VALUES (2)");
    /* The inline attempt meets the lock and does not wait: the read goes to a worker, which
     * waits (busy_timeout) while the loop commits the writer from a timer. */
    committer k = { a, { 0 } };
    keel_timer *t = keel__timer_new(keel_db_loop(db), commit_now, &k);
    keel__timer_arm(t, keel_now_ms() + 50);
    CHECK_INT(start_query(b, count, NULL, 0, &o), 1);
    await_outcome(db, &o);
    CHECK_INT(o.status, KEEL_OK);
    CHECK_INT(outcome_int(&o), 2);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &k.o.done), KEEL_OK);
    CHECK_INT(k.o.status, KEEL_OK);
    keel_result_free(k.o.res);
    keel__timer_free(t);
    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(inline_cancel_and_close) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    if (!c)
        return;
    CHECK_INT(q_int(c, "SELECT 7"), 7);
    /* A cancel that lands between the inline run and its report wins. */
    outcome o;
    CHECK_INT(start_query(c, "SELECT 7", NULL, 0, &o), 0);
    keel_conn_cancel(c);
    await_outcome(db, &o);
    CHECK_INT(o.status, KEEL_ERR_CANCELLED);
    CHECK_STR(o.err.sqlstate, "57014");
    CHECK(o.res == NULL);
    CHECK_INT(start_query(c, "SELECT 7", NULL, 0, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 7);

    /* A user cancel of a read that fell back to the worker still stops it there. */
    keel_value p = keel_int(5);
    keel_result_free(q(c, count_sql, &p, 1));
    keel_timer *t = keel__timer_new(keel_db_loop(db), cancel_cb, c);
    keel__timer_arm(t, keel_now_ms() + 50);
    p = keel_int(1000000000);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 1);
    await_outcome(db, &o);
    CHECK_INT(o.status, KEEL_ERR_CANCELLED);
    keel__timer_free(t);
    p = keel_int(5);
    CHECK_INT(start_query(c, count_sql, &p, 1, &o), 0);
    await_outcome(db, &o);
    CHECK_INT(outcome_int(&o), 5);

    /* Released and closed before the report: the result is dropped, the caller told. */
    CHECK_INT(start_query(c, "SELECT 7", NULL, 0, &o), 0);
    keel_conn_release(c);
    keel_db_close(db);
    CHECK_INT(o.done, 1);
    CHECK_INT(o.status, KEEL_ERR_CLOSED);
}

/* Removes the files of the temp dir, then the dir. */
static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

TEST(executemany_returning) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE rt (id INTEGER PRIMARY KEY, name TEXT)");
    check_many_returning(c);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(prepare_describes_a_statement) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
    exec(c, "CREATE TABLE pt (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(10,2))");
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_prepare_sync(
        c, "SELECT id, name, price, id + 1 AS next FROM pt WHERE id = $1 AND name <> $2", &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_nrows(r), 0);
    CHECK_INT(keel_result_ncols(r), 4);
    CHECK_STR(keel_result_colname(r, 3), "next");
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    CHECK_STR(keel_result_coltype_name(r, 0), "INTEGER");
    CHECK_STR(keel_result_coltype_name(r, 1), "TEXT");
    CHECK_STR(keel_result_coltype_name(r, 2), "NUMERIC(10,2)");
    CHECK(keel_result_coltype_name(r, 3) == NULL); /* an expression has no declared type */
    CHECK_INT(keel_result_nparams(r), 2);
    CHECK_INT(keel_result_paramtype(r, 0), KEEL_TYPE_NULL);
    CHECK(keel_result_paramtype_name(r, 0) == NULL);
    keel_result_free(r);
    /* Prepared once, it runs from the statement cache. */
    keel_value p[] = { keel_int(1), keel_text("x") };
    keel_result_free(
        q(c, "SELECT id, name, price, id + 1 AS next FROM pt WHERE id = $1 AND name <> $2", p, 2));

    r = NULL;
    st = keel_conn_prepare_sync(c, "SELECT * FROM no_such_table", &r, &err);
    CHECK_INT(st, KEEL_ERR_PROGRAMMING);
    CHECK(r == NULL);
    CHECK_CONTAINS(err.message, "no_such_table");
    st = keel_conn_prepare_sync(c, "SELECT 1; SELECT 2", &r, &err);
    CHECK_INT(st, KEEL_ERR_PROGRAMMING);
    CHECK_CONTAINS(err.message, "single statement");
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(paused_stream_holds_one_batch) {
    keel_db *db = open_file_db(NULL);
    keel_conn *c = acquire(db);
#define SQL_200K                                                                                   \
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 200000) SELECT n "   \
    "FROM s"
#define MAX_BATCH 256
    paused_run x;
    run_paused(db, c, SQL_200K, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.rows, 200000);
    CHECK(x.in_order);
    CHECK_INT(x.while_paused, 0);
    fprintf(stderr,
            "  # 200000 rows paused after every batch: %zu batches, at most %zu rows at once\n",
            x.batches, x.most_at_once);
    CHECK(x.most_at_once <= MAX_BATCH);
    CHECK(x.batches >= 200000 / MAX_BATCH);
    CHECK(x.res && keel_result_nrows(x.res) == 0);
    keel_result_free(x.res);

    /* A cancel while paused ends the statement; the connection serves again. */
    run_paused(db, c, SQL_200K, 3, &x);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    CHECK(x.rows < 200000);
    keel_result_free(x.res);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);

    /* Released while paused: the statement ends and the connection goes back clean. */
    memset(&x, 0, sizeof x);
    x.c = c;
    x.in_order = 1;
    keel_error err;
    CHECK_INT(keel_conn_query_rows(c, SQL_200K, NULL, 0, paused_batch, paused_done, &x, &err),
              KEEL_OK);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.wake), KEEL_OK);
    keel_conn_release(c);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    keel_result_free(x.res);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT 7"), 7);
#undef SQL_200K
#undef MAX_BATCH
    keel_conn_release(c);
    keel_db_close(db);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(types_both_ways);
    RUN(declared_type_fallbacks);
    RUN(intervals_are_duration_text_and_time_columns_read_it);
    RUN(large_blob_and_many_rows);
    RUN(executemany_atomic);
    RUN(executemany_returning);
    RUN(prepare_describes_a_statement);
    RUN(paused_stream_holds_one_batch);
    RUN(scripts);
    RUN(errors);
    RUN(errors_by_result_code);
    RUN(decimal_text_and_boolean_words);
    RUN(connect_errors_and_options);
    RUN(pragmas_and_modes);
    RUN(busy_after_timeout);
    RUN(memory_shared_by_pool);
    RUN(transactions);
    RUN(statement_cache);
    RUN(cancel_long_query);
    RUN(close_while_running);
    RUN(inline_reads);
    RUN(inline_budget_falls_back);
    RUN(inline_busy_falls_back);
    RUN(inline_cancel_and_close);
    remove_tmpdir();
    return TEST_SUMMARY();
}
