/* tests/c/engines/test_pg_types.c - PostgreSQL values beyond the scalars: arrays both ways. */
#include <stdint.h>

#include <keel/keel.h>

#include "test.h"
#include "support.h"

static keel_db *open_db(void) { return open_url(pg_url(), NULL); }

static keel_db *open_db_cache(const char *size) {
    const char *extra[] = { "databases.default.options.statement_cache_size", size, NULL };
    return open_url(pg_url(), extra);
}

/* v is an ARRAY of n elements. */
static int is_array(const keel_value *v, size_t n) {
    return v && v->type == KEEL_TYPE_ARRAY && v->u.array.n == n;
}

static int is_int(const keel_value *v, int64_t i) {
    return v && v->type == KEEL_TYPE_INT && v->u.i64 == i;
}

TEST(arrays_of_every_known_type_decode_as_arrays) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "SELECT ARRAY[1, NULL, -3]::int2[], ARRAY[2147483647]::int4[], "
                       "ARRAY[9000000000]::int8[], ARRAY[1.5]::float4[], ARRAY[-2.25]::float8[], "
                       "ARRAY[1.10]::numeric[], ARRAY['a b', 'q\"\\', NULL, 'NULL', '', "
                       "'{x}']::text[], ARRAY['v']::varchar[], ARRAY[true, false]::bool[], "
                       "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']::uuid[], "
                       "ARRAY['2000-01-02']::date[], ARRAY['2000-01-01 00:00:01']::timestamp[], "
                       "ARRAY['1970-01-01 00:00:00+00']::timestamptz[], "
                       "ARRAY['\\x00ff'::bytea], ARRAY['{\"k\": [1, \"}\"]}']::jsonb[], "
                       "'{{1,2},{3,4}}'::int4[], '{}'::int4[], '[0:1]={7,8}'::int4[], "
                       "'{{{1}},{{2}}}'::int8[]",
                       NULL, 0);
    CHECK(r != NULL);
    if (!r) {
        keel_conn_release(c);
        keel_db_close(db);
        return;
    }
    const keel_value *v = keel_result_value(r, 0, 0);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_ARRAY);
    CHECK(is_array(v, 3) && is_int(&v->u.array.items[0], 1) &&
          v->u.array.items[1].type == KEEL_TYPE_NULL && is_int(&v->u.array.items[2], -3));
    v = keel_result_value(r, 0, 1);
    CHECK(is_array(v, 1) && is_int(&v->u.array.items[0], 2147483647));
    v = keel_result_value(r, 0, 2);
    CHECK(is_array(v, 1) && is_int(&v->u.array.items[0], 9000000000LL));
    v = keel_result_value(r, 0, 3);
    CHECK(is_array(v, 1) && v->u.array.items[0].type == KEEL_TYPE_FLOAT &&
          v->u.array.items[0].u.f64 == 1.5);
    v = keel_result_value(r, 0, 4);
    CHECK(is_array(v, 1) && v->u.array.items[0].u.f64 == -2.25);
    v = keel_result_value(r, 0, 5);
    CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_NUMERIC, "1.10", 4));
    v = keel_result_value(r, 0, 6);
    CHECK(is_array(v, 6));
    if (is_array(v, 6)) {
        CHECK(same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "a b", 3));
        CHECK(same_str(&v->u.array.items[1], KEEL_TYPE_TEXT, "q\"\\", 3));
        CHECK_INT(v->u.array.items[2].type, KEEL_TYPE_NULL);
        CHECK(same_str(&v->u.array.items[3], KEEL_TYPE_TEXT, "NULL", 4));
        CHECK(same_str(&v->u.array.items[4], KEEL_TYPE_TEXT, "", 0));
        CHECK(same_str(&v->u.array.items[5], KEEL_TYPE_TEXT, "{x}", 3));
    }
    v = keel_result_value(r, 0, 7);
    CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "v", 1));
    v = keel_result_value(r, 0, 8);
    CHECK(is_array(v, 2) && v->u.array.items[0].type == KEEL_TYPE_BOOL &&
          v->u.array.items[0].u.boolean == 1 && v->u.array.items[1].u.boolean == 0);
    v = keel_result_value(r, 0, 9);
    CHECK(is_array(v, 1) && v->u.array.items[0].type == KEEL_TYPE_UUID &&
          v->u.array.items[0].u.uuid[0] == 0xa0 && v->u.array.items[0].u.uuid[15] == 0x11);
    v = keel_result_value(r, 0, 10);
    CHECK(is_array(v, 1) && v->u.array.items[0].type == KEEL_TYPE_DATE &&
          v->u.array.items[0].u.date == 10958);
    v = keel_result_value(r, 0, 11);
    CHECK(is_array(v, 1) && v->u.array.items[0].type == KEEL_TYPE_TIMESTAMP &&
          v->u.array.items[0].u.micros == INT64_C(946684801000000));
    v = keel_result_value(r, 0, 12);
    CHECK(is_array(v, 1) && v->u.array.items[0].type == KEEL_TYPE_TIMESTAMPTZ &&
          v->u.array.items[0].u.micros == 0);
    v = keel_result_value(r, 0, 13);
    CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_BYTES, "\0\xff", 2));
    v = keel_result_value(r, 0, 14);
    CHECK(is_array(v, 1) &&
          same_str(&v->u.array.items[0], KEEL_TYPE_JSON, "{\"k\": [1, \"}\"]}", 15));
    v = keel_result_value(r, 0, 15);
    CHECK(is_array(v, 2) && is_array(&v->u.array.items[0], 2) &&
          is_array(&v->u.array.items[1], 2) && is_int(&v->u.array.items[1].u.array.items[0], 3));
    CHECK(is_array(keel_result_value(r, 0, 16), 0));
    v = keel_result_value(r, 0, 17);
    CHECK(is_array(v, 2) && is_int(&v->u.array.items[0], 7) && is_int(&v->u.array.items[1], 8));
    v = keel_result_value(r, 0, 18);
    CHECK(is_array(v, 2) && is_array(&v->u.array.items[1], 1) &&
          is_array(&v->u.array.items[1].u.array.items[0], 1) &&
          is_int(&v->u.array.items[1].u.array.items[0].u.array.items[0], 2));
    keel_result_free(r);

    /* Arrays of types keel has no element type for are arrays of the elements' text. */
    r = q(c, "SELECT ARRAY['12:00:00+02'::timetz], ARRAY['(1,2)'::point]", NULL, 0);
    v = keel_result_value(r, 0, 0);
    CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "12:00:00+02", 11));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_ARRAY);
    v = keel_result_value(r, 0, 1);
    CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "(1,2)", 5));
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

/* Runs SELECT-like sql with one array parameter and checks the text the server made of it. */
static void check_array_param(keel_conn *c, const char *sql, keel_value param, const char *want) {
    keel_result *r = q(c, sql, &param, 1);
    const keel_value *v = keel_result_value(r, 0, 0);
    if (!same_str(v, KEEL_TYPE_TEXT, want, strlen(want))) {
        fprintf(stderr, "  %s: got \"%.*s\", want \"%s\"\n", sql,
                v && v->type == KEEL_TYPE_TEXT ? (int)v->u.str.len : 0,
                v && v->type == KEEL_TYPE_TEXT ? v->u.str.ptr : "", want);
        CHECK(0);
    }
    keel_result_free(r);
}

static void array_parameters_on(keel_db *db) {
    keel_conn *c = acquire(db);
    if (!c)
        return;
    keel_result_free(q(c, "DROP TYPE IF EXISTS pgt_mood CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE TYPE pgt_mood AS ENUM ('sad', 'ok')", NULL, 0));
    keel_value ints[3] = { keel_int(1), keel_null(), keel_int(3) };
    keel_value arr = keel_array(ints, 3);
    for (int round = 0; round < 2; round++) { /* described, then from the cache */
        check_array_param(c, "SELECT $1::int4[]::text", arr, "{1,NULL,3}");
        check_array_param(c, "SELECT $1::int2[]::text", arr, "{1,NULL,3}");
        check_array_param(c, "SELECT $1::numeric[]::text", arr, "{1,NULL,3}");
        check_array_param(c, "SELECT $1::jsonb::text", arr, "[1, null, 3]");
        check_array_param(c, "SELECT $1::json::text", arr, "[1,null,3]");
        keel_result *r =
            q(c, "SELECT count(*) FROM generate_series(1, 5) g WHERE g = ANY($1)", &arr, 1);
        CHECK(is_int(keel_result_value(r, 0, 0), 2));
        keel_result_free(r);
    }
    keel_value texts[4] = { keel_text("a \"b\" \\c"), keel_text(""), keel_null(),
                            keel_text("NULL") };
    keel_value tarr = keel_array(texts, 4);
    check_array_param(c, "SELECT $1::text[]::text", tarr,
                      "{\"a \\\"b\\\" \\\\c\",\"\",NULL,\"NULL\"}");
    check_array_param(c, "SELECT $1::jsonb::text", tarr,
                      "[\"a \\\"b\\\" \\\\c\", \"\", null, \"NULL\"]");
    /* An array type keel has no element type for goes as an array literal. */
    keel_value moods[2] = { keel_text("ok"), keel_text("sad") };
    check_array_param(c, "SELECT $1::pgt_mood[]::text", keel_array(moods, 2), "{ok,sad}");
    keel_value rows[2][2] = { { keel_int(1), keel_int(2) }, { keel_int(3), keel_int(4) } };
    keel_value dims[2] = { keel_array(rows[0], 2), keel_array(rows[1], 2) };
    check_array_param(c, "SELECT $1::int8[]::text", keel_array(dims, 2), "{{1,2},{3,4}}");
    check_array_param(c, "SELECT $1::int8[]::text", keel_array(NULL, 0), "{}");
    keel_value misc[2] = { keel_bytes("\0\1", 2), keel_null() };
    check_array_param(c, "SELECT $1::bytea[]::text", keel_array(misc, 2), "{\"\\\\x0001\",NULL}");
    keel_value when[2] = { keel_timestamptz(0), keel_date(0) };
    check_array_param(c, "SELECT $1::jsonb::text", keel_array(when, 2),
                      "[\"1970-01-01T00:00:00+00:00\", \"1970-01-01\"]");
    keel_value fl[2] = { keel_float(1.0), keel_numeric("2.50") };
    check_array_param(c, "SELECT $1::jsonb::text", keel_array(fl, 2), "[1.0, \"2.50\"]");

    /* A batch, where rows hold arrays or NULL. */
    keel_result_free(q(c, "CREATE TEMP TABLE pgt_batch (id int, a int4[], j jsonb)", NULL, 0));
    keel_value one[1] = { keel_int(5) };
    keel_value batch[9] = { keel_int(1), arr,
                            arr,         keel_int(2),
                            keel_null(), keel_array(one, 1),
                            keel_int(3), keel_array(one, 1),
                            keel_null() };
    keel_result *res = NULL;
    keel_error err;
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO pgt_batch VALUES ($1, $2, $3)", batch, 3, 3,
                                        &res, &err),
              KEEL_OK);
    CHECK_INT(keel_result_affected(res), 3);
    keel_result_free(res);
    res = q(c, "SELECT a::text, j::text FROM pgt_batch ORDER BY id", NULL, 0);
    CHECK(same_str(keel_result_value(res, 0, 0), KEEL_TYPE_TEXT, "{1,NULL,3}", 10));
    CHECK(same_str(keel_result_value(res, 0, 1), KEEL_TYPE_TEXT, "[1, null, 3]", 12));
    CHECK_INT(keel_result_value(res, 1, 0)->type, KEEL_TYPE_NULL);
    CHECK(same_str(keel_result_value(res, 1, 1), KEEL_TYPE_TEXT, "[5]", 3));
    CHECK(same_str(keel_result_value(res, 2, 0), KEEL_TYPE_TEXT, "{5}", 3));
    keel_result_free(res);
    keel_result_free(q(c, "DROP TYPE pgt_mood CASCADE", NULL, 0));
    keel_conn_release(c);
}

TEST(array_parameters_take_the_type_the_server_describes) {
    keel_db *db = open_db();
    array_parameters_on(db);
    keel_db_close(db);
    /* Without named statements (behind pgbouncer): the unnamed statement is described. */
    db = open_db_cache("0");
    array_parameters_on(db);
    keel_db_close(db);
}

/* Int parameters take the type the server gives them, on a connection of db. */
static void int_parameters_on(keel_db *db) {
    keel_conn *c = acquire(db);
    if (!c)
        return;
    keel_result_free(q(c,
                       "CREATE OR REPLACE FUNCTION pg_temp.pgt_small(x smallint) RETURNS text "
                       "LANGUAGE sql AS $$SELECT 'smallint ' || x$$",
                       NULL, 0));
    keel_result_free(q(c,
                       "CREATE OR REPLACE FUNCTION pg_temp.pgt_over(x int) RETURNS text "
                       "LANGUAGE sql AS $$SELECT 'integer'$$",
                       NULL, 0));
    keel_result_free(q(c,
                       "CREATE OR REPLACE FUNCTION pg_temp.pgt_over(x bigint) RETURNS text "
                       "LANGUAGE sql AS $$SELECT 'bigint'$$",
                       NULL, 0));
    keel_value v = keel_int(-5);
    for (int round = 0; round < 2; round++) { /* described, then from the cache */
        keel_result *r = q(c, "SELECT pg_temp.pgt_small($1), pg_typeof($1)::text", &v, 1);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "smallint -5", 11));
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "smallint", 8));
        keel_result_free(r);
        /* Typed text (SELECT $1), or not typed at all: a bigint, as before. */
        r = q(c, "SELECT $1, pg_temp.pgt_over($1)", &v, 1);
        const keel_value *got = keel_result_value(r, 0, 0);
        CHECK(got && got->type == KEEL_TYPE_INT && got->u.i64 == -5);
        CHECK_INT(keel_result_coltype_id(r, 0), 20);
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "bigint", 6));
        keel_result_free(r);
        keel_value big = keel_int(40000);
        keel_error e = q_fail(c, "SELECT pg_temp.pgt_small($1)", &big, 1);
        CHECK_INT(e.code, KEEL_ERR_DATA);
        CHECK(strstr(e.message, "parameter $1: 40000 is out of range for type smallint") != NULL);
        CHECK_STR(e.sqlstate, "22003");
        /* numeric, real and double precision from an int, exactly where they can. */
        keel_value three[3] = { keel_int(7), keel_int(16777217), keel_int(9007199254740993) };
        r = q(c, "SELECT ($1 + 0.5)::text, ($2 * 1::real)::text, ($3 * 1::float8)::text", three, 3);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "7.5", 3));
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "1.6777216e+07", 13));
        CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_TEXT, "9.007199254740992e+15", 21));
        keel_result_free(r);
    }
    /* Inside a transaction a statement the server cannot type with an unknown int is described
     * in a savepoint: the transaction goes on. */
    keel_error err;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_value one = keel_int(1);
    keel_result *r = q(c, "SELECT pg_temp.pgt_over($1), $1 IS NULL", &one, 1);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "bigint", 6));
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    keel_conn_release(c);
}

TEST(int_parameters_take_the_type_the_server_describes) {
    keel_db *db = open_db();
    int_parameters_on(db);
    keel_db_close(db);
    db = open_db_cache("0");
    int_parameters_on(db);
    keel_db_close(db);
}

TEST(bad_array_parameters_are_refused_naming_the_parameter) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_value a2[2] = { keel_int(1), keel_int(2) }, a1[1] = { keel_int(3) };
    keel_value ragged[2] = { keel_array(a2, 2), keel_array(a1, 1) };
    keel_value p = keel_array(ragged, 2);
    keel_error e = q_fail(c, "SELECT $1::int4[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "parameter $1") && strstr(e.message, "sub-arrays of equal lengths"));
    keel_value mixed[2] = { keel_int(1), keel_array(a1, 1) };
    p = keel_array(mixed, 2);
    e = q_fail(c, "SELECT $1::int4[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    keel_value big[1] = { keel_int(70000) };
    p = keel_array(big, 1);
    e = q_fail(c, "SELECT $1::int2[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "70000 is out of range for type smallint[]") != NULL);
    keel_value words[1] = { keel_text("x") };
    p = keel_array(words, 1);
    e = q_fail(c, "SELECT $1::int4[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "a text value cannot be loaded into type integer[]") != NULL);
    CHECK(strstr(e.message, "parameter $1: element [0]: ") != NULL);
    /* The bad element is named by its index in each dimension. */
    keel_value row0[2] = { keel_int(1), keel_int(2) }, row1[2] = { keel_int(3), keel_text("y") };
    keel_value rows[2] = { keel_array(row0, 2), keel_array(row1, 2) };
    p = keel_array(rows, 2);
    e = q_fail(c, "SELECT $1::int4[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "parameter $1: element [1][1]: a text value") != NULL);
    keel_value bytes[1] = { keel_bytes("x", 1) };
    p = keel_array(bytes, 1);
    e = q_fail(c, "SELECT $1::jsonb", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "no JSON form") != NULL);
    keel_value nul[1] = { keel_textn("a\0b", 3) };
    p = keel_array(nul, 1);
    e = q_fail(c, "SELECT $1::text[]", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "NUL byte") != NULL);
    keel_value levels[8];
    levels[0] = keel_int(1);
    for (int i = 1; i < 8; i++)
        levels[i] = keel_array(&levels[i - 1], 1);
    e = q_fail(c, "SELECT $1::int4[]", &levels[7], 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "at most 6 dimensions") != NULL);
    /* A statement the server refuses while it is described. */
    p = keel_array(a2, 2);
    e = q_fail(c, "SELECT $1::int4[] FROM no_such_table_pgt", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42P01");
    /* The connection still serves, arrays included. */
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_result *r = q(c, "SELECT cardinality($1::int4[])", &p, 1);
    CHECK(is_int(keel_result_value(r, 0, 0), 2));
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(copy_in_loads_arrays_and_lists_into_json) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "DROP DOMAIN IF EXISTS pgt_pos CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE DOMAIN pgt_pos AS int CHECK (VALUE > 0)", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TEMP TABLE pgt_copy (a int4[], t text[], d pgt_pos[], "
                       "j jsonb, m int8[])",
                       NULL, 0));
    keel_value ints[2] = { keel_int(1), keel_null() };
    keel_value texts[2] = { keel_text("x,y"), keel_text("") };
    keel_value pos[1] = { keel_int(4) };
    keel_value r1[2] = { keel_int(1), keel_int(2) }, r2[2] = { keel_int(3), keel_int(4) };
    keel_value dims[2] = { keel_array(r1, 2), keel_array(r2, 2) };
    keel_value rows[10] = { keel_array(ints, 2),  keel_array(texts, 2), keel_array(pos, 1),
                            keel_array(texts, 2), keel_array(dims, 2),  keel_null(),
                            keel_array(NULL, 0),  keel_null(),          keel_null(),
                            keel_array(NULL, 0) };
    int64_t loaded = 0;
    keel_error err;
    keel_status st = keel_conn_copy_in_sync(c, NULL, "pgt_copy", NULL, 5, rows, 2, &loaded, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  copy_in: %s\n", err.message);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(loaded, 2);
    keel_result *r =
        q(c, "SELECT a::text, t::text, d::text, j::text, m::text FROM pgt_copy", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "{1,NULL}", 8));
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "{\"x,y\",\"\"}", 10));
    CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_TEXT, "{4}", 3));
    CHECK(same_str(keel_result_value(r, 0, 3), KEEL_TYPE_TEXT, "[\"x,y\", \"\"]", 11));
    CHECK(same_str(keel_result_value(r, 0, 4), KEEL_TYPE_TEXT, "{{1,2},{3,4}}", 13));
    CHECK(same_str(keel_result_value(r, 1, 1), KEEL_TYPE_TEXT, "{}", 2));
    CHECK(same_str(keel_result_value(r, 1, 4), KEEL_TYPE_TEXT, "{}", 2));
    keel_result_free(r);
    /* The domain's check still runs on each element, and a bad element names its column. */
    keel_value neg[1] = { keel_int(-1) };
    keel_value bad[5] = { keel_null(), keel_null(), keel_array(neg, 1), keel_null(), keel_null() };
    CHECK(keel_conn_copy_in_sync(c, NULL, "pgt_copy", NULL, 5, bad, 1, NULL, &err) != KEEL_OK);
    CHECK(strstr(err.message, "pgt_pos") != NULL);
    keel_value word[1] = { keel_text("w") };
    keel_value bad2[5] = { keel_array(word, 1), keel_null(), keel_null(), keel_null(),
                           keel_null() };
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "pgt_copy", NULL, 5, bad2, 1, NULL, &err),
              KEEL_ERR_DATA);
    CHECK(strstr(err.message, "column \"a\"") && strstr(err.message, "element [0]: "));
    CHECK_INT(q_int(c, "SELECT count(*) FROM pgt_copy"), 2);
    keel_result_free(q(c, "DROP DOMAIN pgt_pos CASCADE", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

/* An interval with these fields. */
static int is_interval(const keel_value *v, int32_t months, int32_t days, int64_t micros) {
    return v && v->type == KEEL_TYPE_INTERVAL && v->u.interval.months == months &&
           v->u.interval.days == days && v->u.interval.micros == micros;
}

TEST(intervals_and_network_addresses_both_ways) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result *r = q(c,
                       "SELECT '1 year 2 mons -3 days 04:05:06.789'::interval, "
                       "'-1 days +23:59:59'::interval, '-00:00:01.5'::interval, "
                       "'00:00:00'::interval, '100 hours'::interval, "
                       "'10.0.0.1'::inet, 'fe80::1/64'::inet, '10.0.0.0/8'::cidr, "
                       "ARRAY['1 day'::interval], ARRAY['1.2.3.4'::inet, NULL]",
                       NULL, 0);
    CHECK(is_interval(keel_result_value(r, 0, 0), 14, -3, INT64_C(14706789000)));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INTERVAL);
    CHECK(is_interval(keel_result_value(r, 0, 1), 0, -1, INT64_C(86399000000)));
    CHECK(is_interval(keel_result_value(r, 0, 2), 0, 0, -1500000));
    CHECK(is_interval(keel_result_value(r, 0, 3), 0, 0, 0));
    CHECK(is_interval(keel_result_value(r, 0, 4), 0, 0, INT64_C(360000000000)));
    CHECK(same_str(keel_result_value(r, 0, 5), KEEL_TYPE_INET, "10.0.0.1", 8));
    CHECK(same_str(keel_result_value(r, 0, 6), KEEL_TYPE_INET, "fe80::1/64", 10));
    CHECK(same_str(keel_result_value(r, 0, 7), KEEL_TYPE_CIDR, "10.0.0.0/8", 10));
    const keel_value *a = keel_result_value(r, 0, 8);
    CHECK(is_array(a, 1) && is_interval(&a->u.array.items[0], 0, 1, 0));
    a = keel_result_value(r, 0, 9);
    CHECK(is_array(a, 2) && same_str(&a->u.array.items[0], KEEL_TYPE_INET, "1.2.3.4", 7) &&
          a->u.array.items[1].type == KEEL_TYPE_NULL);
    keel_result_free(r);
    /* Another IntervalStyle is not what keel reads: the text as it came. */
    keel_result_free(q(c, "SET IntervalStyle = 'iso_8601'", NULL, 0));
    r = q(c, "SELECT '1 day'::interval", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "P1D", 3));
    keel_result_free(r);
    keel_result_free(q(c, "RESET IntervalStyle", NULL, 0));

    /* Parameters: intervals in binary, inet and cidr as their text with their types. */
    keel_value p[3] = { keel_interval(-1, 2, -3000001), keel_null(), keel_null() };
    p[1].type = KEEL_TYPE_INET;
    p[1].u.str.ptr = "192.168.1.5/24";
    p[1].u.str.len = 14;
    p[2].type = KEEL_TYPE_CIDR;
    p[2].u.str.ptr = "192.168.0.0/16";
    p[2].u.str.len = 14;
    r = q(c, "SELECT $1::text, $2, $3, $1", p, 3);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "-1 mons +2 days -00:00:03.000001",
                   32));
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_INET, "192.168.1.5/24", 14));
    CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_CIDR, "192.168.0.0/16", 14));
    CHECK(is_interval(keel_result_value(r, 0, 3), -1, 2, -3000001));
    keel_result_free(r);
    keel_value ivs[1] = { keel_interval(0, 0, 1) };
    check_array_param(c, "SELECT $1::interval[]::text", keel_array(ivs, 1), "{00:00:00.000001}");

    /* COPY: interval and inet columns in binary. */
    keel_result_free(
        q(c, "CREATE TEMP TABLE pgt_net (i interval, a inet, n cidr, l inet[])", NULL, 0));
    keel_value addrs[1] = { keel_text("::1") };
    keel_value rows[4] = { keel_interval(1, 2, 3), keel_text("10.1.2.3/16"),
                           keel_text("10.0.0.0/8"), keel_array(addrs, 1) };
    int64_t loaded = 0;
    keel_error err;
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "pgt_net", NULL, 4, rows, 1, &loaded, &err), KEEL_OK);
    r = q(c, "SELECT i::text, a::text, n::text, l::text FROM pgt_net", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "1 mon 2 days 00:00:00.000003", 28));
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "10.1.2.3/16", 11));
    CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_TEXT, "10.0.0.0/8", 10));
    CHECK(same_str(keel_result_value(r, 0, 3), KEEL_TYPE_TEXT, "{::1}", 5));
    keel_result_free(r);
    keel_value bad[4] = { keel_null(), keel_text("10.0.0.300"), keel_null(), keel_null() };
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "pgt_net", NULL, 4, bad, 1, NULL, &err),
              KEEL_ERR_DATA);
    CHECK(strstr(err.message, "column \"a\"") && strstr(err.message, "not an IP address"));
    keel_value bad2[4] = { keel_null(), keel_null(), keel_text("10.0.0.1/8"), keel_null() };
    CHECK(keel_conn_copy_in_sync(c, NULL, "pgt_net", NULL, 4, bad2, 1, NULL, &err) != KEEL_OK);
    CHECK_INT(q_int(c, "SELECT count(*) FROM pgt_net"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(ranges_decode_with_their_bounds) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result *r = q(c,
                       "SELECT int4range(1, 5), 'empty'::int4range, '(,3]'::int8range, "
                       "numrange(1.5, NULL), daterange('2000-01-02', '2000-01-03', '[]'), "
                       "'[\"2000-01-01 00:00:01\",)'::tsrange, '(1,2)'::point, "
                       "ARRAY[int8range(1, 3), NULL, 'empty']",
                       NULL, 0);
    const keel_value *v = keel_result_value(r, 0, 0);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_RANGE);
    CHECK_INT(keel_result_coltype_id(r, 0), 3904); /* int4range's OID */
    CHECK_INT(keel_result_coltype_id(r, 6), 600);  /* point: TEXT, told apart by its OID */
    CHECK_INT(keel_result_coltype_id(r, 8), 0);    /* out of range */
    v = keel_result_value(r, 0, 7);                /* an array of ranges */
    CHECK(is_array(v, 3) && v->u.array.items[0].type == KEEL_TYPE_RANGE &&
          is_int(&v->u.array.items[0].u.range.bounds[1], 3) &&
          v->u.array.items[1].type == KEEL_TYPE_NULL &&
          v->u.array.items[2].u.range.flags == KEEL_RANGE_EMPTY);
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_RANGE && v->u.range.flags == KEEL_RANGE_LOWER_INC &&
          is_int(&v->u.range.bounds[0], 1) && is_int(&v->u.range.bounds[1], 5));
    v = keel_result_value(r, 0, 1);
    CHECK(v && v->type == KEEL_TYPE_RANGE && v->u.range.flags == KEEL_RANGE_EMPTY);
    v = keel_result_value(r, 0, 2); /* the server makes (,3] of int8 (,4) */
    CHECK(v && v->type == KEEL_TYPE_RANGE && v->u.range.flags == 0 &&
          v->u.range.bounds[0].type == KEEL_TYPE_NULL && is_int(&v->u.range.bounds[1], 4));
    v = keel_result_value(r, 0, 3);
    CHECK(v && v->type == KEEL_TYPE_RANGE &&
          same_str(&v->u.range.bounds[0], KEEL_TYPE_NUMERIC, "1.5", 3) &&
          v->u.range.bounds[1].type == KEEL_TYPE_NULL);
    v = keel_result_value(r, 0, 4);
    CHECK(v && v->type == KEEL_TYPE_RANGE && v->u.range.bounds[0].type == KEEL_TYPE_DATE &&
          v->u.range.bounds[0].u.date == 10958 && v->u.range.bounds[1].u.date == 10960);
    v = keel_result_value(r, 0, 5);
    CHECK(v && v->type == KEEL_TYPE_RANGE && v->u.range.bounds[0].type == KEEL_TYPE_TIMESTAMP &&
          v->u.range.bounds[0].u.micros == INT64_C(946684801000000));
    CHECK_INT(keel_result_value(r, 0, 6)->type, KEEL_TYPE_TEXT);
    keel_result_free(r);
    /* A range parameter is its text: the C value is refused, naming the form to use. */
    keel_value p = *keel_result_value(r = q(c, "SELECT int4range(1, 2)", NULL, 0), 0, 0);
    keel_error e = q_fail(c, "SELECT $1::int4range", &p, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "a range parameter goes as its text") != NULL);
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

/* A RANGE value with these bounds (NULL: unbounded) and flags. */
static keel_value range_of(keel_value *bounds, unsigned flags) {
    keel_value v = { .type = KEEL_TYPE_RANGE };
    v.u.range.bounds = bounds;
    v.u.range.flags = flags;
    return v;
}

TEST(copy_in_loads_ranges) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(
        q(c, "CREATE TEMP TABLE pgt_crange (i int4range, n numrange, d daterange, t tsrange)", NULL,
          0));
    keel_value ib[2] = { keel_int(1), keel_int(5) }, nb[2] = { keel_null(), keel_numeric("2.5") };
    keel_value db2[2] = { keel_date(10958), keel_date(10958) };
    keel_value tb[2] = { keel_timestamp(INT64_C(946684801000000)), keel_null() };
    keel_value rows[8] = {
        range_of(ib, KEEL_RANGE_LOWER_INC | KEEL_RANGE_UPPER_INC),
        range_of(nb, KEEL_RANGE_UPPER_INC),
        range_of(db2, KEEL_RANGE_LOWER_INC | KEEL_RANGE_UPPER_INC),
        range_of(tb, 0),
        range_of(NULL, KEEL_RANGE_EMPTY),
        range_of(NULL, KEEL_RANGE_EMPTY),
        keel_null(),
        range_of(NULL, KEEL_RANGE_EMPTY),
    };
    int64_t loaded = 0;
    keel_error err;
    keel_status st = keel_conn_copy_in_sync(c, NULL, "pgt_crange", NULL, 4, rows, 2, &loaded, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  copy_in: %s\n", err.message);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(loaded, 2);
    keel_result *r = q(c,
                       "SELECT i::text || ' ' || n::text || ' ' || d::text || ' ' || t::text "
                       "FROM pgt_crange WHERE NOT isempty(i)",
                       NULL, 0);
    const char *want = "[1,6) (,2.5] [2000-01-02,2000-01-03) (\"2000-01-01 00:00:01\",)";
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, want, strlen(want)));
    keel_result_free(r);
    CHECK_INT(q_int(c, "SELECT count(*) FROM pgt_crange WHERE isempty(i) AND d IS NULL"), 1);
    /* A bound of the wrong type names the column and the side; nothing is loaded. */
    keel_value bad_b[2] = { keel_int(1), keel_text("x") };
    keel_value bad[1] = { range_of(bad_b, KEEL_RANGE_LOWER_INC) };
    const char *col[1] = { "i" };
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "pgt_crange", col, 1, bad, 1, NULL, &err),
              KEEL_ERR_DATA);
    CHECK(strstr(err.message, "column \"i\" (int4range): upper bound: a text value") != NULL);
    keel_value plain[1] = { keel_int(3) };
    CHECK_INT(keel_conn_copy_in_sync(c, NULL, "pgt_crange", col, 1, plain, 1, NULL, &err),
              KEEL_ERR_DATA);
    CHECK_INT(q_int(c, "SELECT count(*) FROM pgt_crange"), 2);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(arrays_of_other_types_are_arrays_of_text) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "DROP TYPE IF EXISTS pgt_color CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE TYPE pgt_color AS ENUM ('red', 'green')", NULL, 0));
    /* money[] (built in), an enum's array (OID 10000 on), an enum value, a record array. */
    keel_result *r = q(c,
                       "SELECT ARRAY['1.5'::money, NULL], '{{red},{green}}'::pgt_color[], "
                       "'red'::pgt_color, ARRAY[ROW(1, 'a b')]",
                       NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_ARRAY);
        const keel_value *v = keel_result_value(r, 0, 0);
        CHECK(is_array(v, 2) && same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "$1.50", 5) &&
              v->u.array.items[1].type == KEEL_TYPE_NULL);
        CHECK_INT(keel_result_coltype(r, 1), KEEL_TYPE_TEXT); /* not known to be an array */
        v = keel_result_value(r, 0, 1);
        CHECK(is_array(v, 2) && is_array(&v->u.array.items[0], 1) &&
              same_str(&v->u.array.items[1].u.array.items[0], KEEL_TYPE_TEXT, "green", 5));
        CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_TEXT, "red", 3));
        v = keel_result_value(r, 0, 3);
        CHECK(is_array(v, 1) && same_str(&v->u.array.items[0], KEEL_TYPE_TEXT, "(1,\"a b\")", 9));
        keel_result_free(r);
    }
    keel_result_free(q(c, "DROP TYPE pgt_color CASCADE", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(void_results_are_null) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    /* void's text is empty: the value is NULL (asyncpg's None), the type void by its OID. */
    keel_result *r = q(c, "SELECT pg_sleep(0), 1 FROM generate_series(1, 2)", NULL, 0);
    CHECK(r != NULL && keel_result_nrows(r) == 2);
    if (r) {
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_NULL);
        CHECK_INT(keel_result_coltype_id(r, 0), 2278);
        CHECK_INT(keel_result_value(r, 1, 0)->type, KEEL_TYPE_NULL);
        CHECK(is_int(keel_result_value(r, 1, 1), 1));
        keel_result_free(r);
    }
    keel_conn_release(c);
    keel_db_close(db);
}

int main(void) {
    RUN(arrays_of_every_known_type_decode_as_arrays);
    RUN(array_parameters_take_the_type_the_server_describes);
    RUN(int_parameters_take_the_type_the_server_describes);
    RUN(bad_array_parameters_are_refused_naming_the_parameter);
    RUN(copy_in_loads_arrays_and_lists_into_json);
    RUN(intervals_and_network_addresses_both_ways);
    RUN(ranges_decode_with_their_bounds);
    RUN(void_results_are_null);
    RUN(copy_in_loads_ranges);
    RUN(arrays_of_other_types_are_arrays_of_text);
    return TEST_SUMMARY();
}
