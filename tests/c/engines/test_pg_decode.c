/* tests/c/engines/test_pg_decode.c - PostgreSQL results in binary format (engines/pg/decode.c). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <keel/keel.h>

#include "core/result_int.h"
#include "engines/pg/decode.h"
#include "test.h"
#include "support.h"

static keel_db *open_db_cache(const char *size) {
    const char *extra[] = { "databases.default.options.statement_cache_size", size, NULL };
    return open_url(pg_url(), extra);
}

/* a and b are the same value: same type, same contents (NaN equal to NaN, -0.0 not to 0.0). */
static int same_value(const keel_value *a, const keel_value *b) {
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case KEEL_TYPE_NULL:
        return 1;
    case KEEL_TYPE_BOOL:
        return a->u.boolean == b->u.boolean;
    case KEEL_TYPE_INT:
        return a->u.i64 == b->u.i64;
    case KEEL_TYPE_FLOAT:
        return (isnan(a->u.f64) && isnan(b->u.f64)) ||
               (a->u.f64 == b->u.f64 && signbit(a->u.f64) == signbit(b->u.f64));
    case KEEL_TYPE_DATE:
        return a->u.date == b->u.date;
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        return a->u.micros == b->u.micros;
    case KEEL_TYPE_UUID:
        return memcmp(a->u.uuid, b->u.uuid, 16) == 0;
    case KEEL_TYPE_INTERVAL:
        return a->u.interval.months == b->u.interval.months &&
               a->u.interval.days == b->u.interval.days &&
               a->u.interval.micros == b->u.interval.micros;
    case KEEL_TYPE_ARRAY:
        if (a->u.array.n != b->u.array.n)
            return 0;
        for (size_t i = 0; i < a->u.array.n; i++)
            if (!same_value(&a->u.array.items[i], &b->u.array.items[i]))
                return 0;
        return 1;
    case KEEL_TYPE_RANGE:
        if (a->u.range.flags != b->u.range.flags ||
            (a->u.range.bounds == NULL) != (b->u.range.bounds == NULL))
            return 0;
        return !a->u.range.bounds || (same_value(&a->u.range.bounds[0], &b->u.range.bounds[0]) &&
                                      same_value(&a->u.range.bounds[1], &b->u.range.bounds[1]));
    default: /* text, numeric, json, bytes, inet, cidr */
        return a->u.str.len == b->u.str.len &&
               (a->u.str.len == 0 || memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0);
    }
}

/* One value of every type keel reads in binary, its edges, and arrays and ranges of them. */
static const char *const exprs[] = {
    "true",
    "false",
    "(-32768)::int2",
    "2147483647::int4",
    "(-9223372036854775808)::int8",
    "4294967295::oid",
    "1.1::float4",
    "'3.4028235e38'::float4",
    "'1e-45'::float4",
    "'NaN'::float4",
    "'-Infinity'::float4",
    "0.1::float8",
    "'-0'::float8",
    "'1e308'::float8",
    "'NaN'::float8",
    "1.10::numeric",
    "0::numeric",
    "0.000::numeric",
    "'-0.000123'::numeric",
    "12345678.90123456789::numeric",
    "1e100::numeric",
    "'NaN'::numeric",
    "'Infinity'::numeric",
    "'-Infinity'::numeric",
    "10000::numeric",
    "0.0001::numeric",
    "'text'::text",
    "'x'::char(3)",
    "'ü€'::varchar",
    "'n'::name",
    "''::text",
    "'\\x00ff'::bytea",
    "''::bytea",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
    "'2000-01-02'::date",
    "'1970-01-01'::date",
    "'infinity'::date",
    "'-infinity'::date",
    "'4713-01-01 BC'::date",
    "'5874897-12-31'::date",
    "'0044-03-15 BC'::date",
    "'24:00:00'::time",
    "'12:34:56.789'::time",
    "'00:00'::time",
    "'12:34:56.5+05:30'::timetz",
    "'00:00:00-08'::timetz",
    "'12:00+00:53:28'::timetz",
    "'2020-01-01 12:00:00.000001'::timestamp",
    "'infinity'::timestamp",
    "'-infinity'::timestamptz",
    "'294276-12-31 23:59:59.999999'::timestamp",
    "'294276-12-31 23:59:59'::timestamptz",
    "'4713-01-01 00:00:00 BC'::timestamp",
    "'1969-12-31 23:59:59.999999+00'::timestamptz",
    "'2020-06-01 12:00+02'::timestamptz",
    "'1 year 2 mons -3 days 04:05:06.789'::interval",
    "'-00:00:01'::interval",
    "'178000000 years'::interval",
    "'{\"a\": [1, 2]}'::json",
    "'{\"b\":1,  \"a\": 2}'::jsonb",
    "'10.0.0.1'::inet",
    "'10.0.0.1/8'::inet",
    "'10.0.0.0/8'::cidr",
    "'10.0.0.1/32'::cidr",
    "'::1'::inet",
    "'::ffff:1.2.3.4'::inet",
    "'2001:db8::/32'::cidr",
    "'::'::inet",
    "'1:0:0:1:0:0:0:1'::inet",
    "'::1.2.3.4'::inet",
    "'fe80::1/64'::inet",
    "pg_sleep(0)",
    "'[1,5)'::int4range",
    "'empty'::int4range",
    "'(,5]'::int8range",
    "'[1.5,)'::numrange",
    "'[2020-01-01,infinity)'::daterange",
    "'[2020-01-01 00:00, 2021-01-01)'::tstzrange",
    "'(2020-01-01,2021-01-01]'::tsrange",
    "'(,)'::int4range",
    "ARRAY[1, NULL, 3]",
    "'{{1,2},{3,4}}'::int4[]",
    "'{}'::text[]",
    "'[0:1]={7,8}'::int4[]",
    "ARRAY['a,b', NULL, 'NULL', '\"', '{}']",
    "'{{{1}},{{2}}}'::int8[]",
    "ARRAY['[1,2)'::int4range, 'empty', NULL]",
    "ARRAY[1.5::float4, 0.1]",
    "ARRAY['{\"k\":1}'::jsonb, NULL]",
    "ARRAY['[1]'::json]",
    "ARRAY['1 day'::interval]",
    "ARRAY['10.0.0.1'::inet]",
    "ARRAY['10.0.0.0/8'::cidr]",
    "ARRAY[1.10::numeric, 'NaN']",
    "ARRAY['infinity'::timestamptz, '2000-01-01']",
    "ARRAY['2000-01-01'::date, 'infinity']",
    "ARRAY['a'::char(2)]",
    "ARRAY['x'::name]",
    "ARRAY['12:00'::time]",
    "ARRAY[true, NULL]",
    "ARRAY[1::oid]",
    "ARRAY['\\x01'::bytea, '']",
    "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
    "ARRAY[1::int2]",
    "ARRAY['2000-01-01 10:00'::timestamp]",
};

/*
 * Each value read in text (the cache off, and a statement's first execution) and in binary (a
 * cached statement's later executions) is the same keel value.
 */
TEST(binary_results_are_the_values_text_gives) {
    keel_db *db = open_db_cache("100"), *textdb = open_db_cache("0");
    keel_conn *c = acquire(db), *t = acquire(textdb);
    if (!c || !t) {
        keel_db_close(db);
        keel_db_close(textdb);
        return;
    }
    char sql[256];
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT %s", exprs[i]);
        keel_result *text = q(t, sql, NULL, 0), *first = q(c, sql, NULL, 0),
                    *second = q(c, sql, NULL, 0);
        CHECK(text && first && second);
        if (text && first && second) {
            int ok = same_value(keel_result_value(text, 0, 0), keel_result_value(first, 0, 0)) &&
                     same_value(keel_result_value(text, 0, 0), keel_result_value(second, 0, 0));
            if (!ok)
                fprintf(stderr, "  differs: %s\n", sql);
            CHECK(ok);
        }
        keel_result_free(text);
        keel_result_free(first);
        keel_result_free(second);
    }
    keel_conn_release(c);
    keel_conn_release(t);
    keel_db_close(db);
    keel_db_close(textdb);
}

/*
 * The format is observable through IntervalStyle: its text in the iso_8601 style is not what
 * keel reads (the value stays text), while binary is independent of it. So a cached statement
 * is executed in text first and in binary from then on, and a statement with a column keel
 * has no binary decoder for (money) stays in text.
 */
TEST(a_cached_statement_turns_binary_after_its_first_execution) {
    keel_db *db = open_db_cache("100");
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "SET IntervalStyle = 'iso_8601'", NULL, 0));
    const char *sql = "SELECT '1 day'::interval";
    keel_result *first = q(c, sql, NULL, 0), *second = q(c, sql, NULL, 0);
    CHECK(first && same_str(keel_result_value(first, 0, 0), KEEL_TYPE_TEXT, "P1D", 3));
    CHECK(second && keel_result_value(second, 0, 0)->type == KEEL_TYPE_INTERVAL &&
          keel_result_value(second, 0, 0)->u.interval.days == 1);
    keel_result_free(first);
    keel_result_free(second);
    const char *mixed = "SELECT '1 day'::interval, 1::money";
    for (int i = 0; i < 3; i++) {
        keel_result *r = q(c, mixed, NULL, 0);
        CHECK(r && same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "P1D", 3));
        keel_result_free(r);
    }
    /* A first execution that fails tells nothing: the next one is text, the one after binary. */
    const char *div = "SELECT 1 / $1::int, '1 day'::interval";
    keel_value zero = keel_int(0), one = keel_int(1);
    keel_error e = q_fail(c, div, &zero, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    keel_result *r1 = q(c, div, &one, 1), *r2 = q(c, div, &one, 1);
    CHECK(r1 && same_str(keel_result_value(r1, 0, 1), KEEL_TYPE_TEXT, "P1D", 3));
    CHECK(r2 && keel_result_value(r2, 0, 1)->type == KEEL_TYPE_INTERVAL);
    keel_result_free(r1);
    keel_result_free(r2);
    /* Rows streamed by keel_conn_query_rows come in binary too. */
    rows_run x;
    const char *many = "SELECT g, '1 day'::interval FROM generate_series(1, 1000) g";
    run_rows(db, c, many, NULL, 0, &x);
    keel_result_free(x.res);
    run_rows(db, c, many, NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK(x.rows == 1000 && x.in_order);
    keel_result_free(x.res);
    keel_result_free(q(c, "RESET IntervalStyle", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

/* Decodes bytes as a value of type oid: the return code, and the value or the reason. */
static int dec(keel_result *res, uint32_t oid, const char *s, size_t n, keel_value *v, char *why) {
    memset(v, 0, sizeof *v);
    why[0] = '\0';
    return keel__pg_decode_binary(res, oid, s, n, v, why, 160);
}

TEST(malformed_binary_values_are_refused_with_a_reason) {
    keel_result *res = keel__result_new(1);
    keel_value v;
    char why[160];
    CHECK_INT(dec(res, 23, "\0\0\1", 3, &v, why), -2);
    CHECK_CONTAINS(why, "int4 value of 3 bytes (it has 4)");
    CHECK_INT(dec(res, 20, "", 0, &v, why), -2);
    CHECK_INT(dec(res, 16, "\1\1", 2, &v, why), -2);
    CHECK_INT(dec(res, 2950, "0123456789abcde", 15, &v, why), -2);
    CHECK_INT(dec(res, 3802, "\2{}", 3, &v, why), -2);
    CHECK_CONTAINS(why, "version byte");
    /* numeric: a length that disagrees with its digit count, a digit over 9999, a bad sign. */
    CHECK_INT(dec(res, 1700, "\0\1\0\0\0\0\0\0", 8, &v, why), -2);
    CHECK_INT(dec(res, 1700, "\0\1\0\0\0\0\0\0\x27\x10", 10, &v, why), -2);
    CHECK_CONTAINS(why, "over 9999");
    CHECK_INT(dec(res, 1700, "\0\0\0\0\x12\x34\0\0", 8, &v, why), -2);
    CHECK_INT(dec(res, 1083, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, &v, why), -2);
    CHECK_INT(dec(res, 869, "\2\x20\0\4\1\2\3", 7, &v, why), -2);
    CHECK_INT(dec(res, 869, "\7\x20\0\4\1\2\3\4", 8, &v, why), -2);
    CHECK_INT(dec(res, 869, "\2\x21\0\4\1\2\3\4", 8, &v, why), -2);
    /* arrays: the wrong element type, a count the bytes cannot hold, an element cut short. */
    static const char arr_wrong[] = "\0\0\0\1\0\0\0\0\0\0\0\x14\0\0\0\1\0\0\0\1\0\0\0\4\0\0\0\1";
    CHECK_INT(dec(res, 1007, arr_wrong, sizeof arr_wrong - 1, &v, why), -2);
    CHECK_CONTAINS(why, "elements of type 20 (not 23)");
    static const char arr_many[] = "\0\0\0\1\0\0\0\0\0\0\0\x17\x7f\xff\xff\xff\0\0\0\1";
    CHECK_INT(dec(res, 1007, arr_many, sizeof arr_many - 1, &v, why), -2);
    static const char arr_short[] = "\0\0\0\1\0\0\0\0\0\0\0\x17\0\0\0\2\0\0\0\1\0\0\0\4\0\0\0\1";
    CHECK_INT(dec(res, 1007, arr_short, sizeof arr_short - 1, &v, why), -2);
    CHECK_CONTAINS(why, "cut short");
    static const char arr_dims[] = "\0\0\0\7\0\0\0\0\0\0\0\x17";
    CHECK_INT(dec(res, 1007, arr_dims, sizeof arr_dims - 1, &v, why), -2);
    /* ranges: a bound longer than the bytes, bytes after the bounds. */
    CHECK_INT(dec(res, 3904, "\2\0\0\0\4\0\0", 7, &v, why), -2);
    CHECK_INT(dec(res, 3904, "\x18\0", 2, &v, why), -2);
    CHECK_INT(dec(res, 3904, "\1\0", 2, &v, why), -2);
    keel_result_free(res);
}

TEST(binary_values_are_written_as_the_server_writes_their_text) {
    keel_result *res = keel__result_new(1);
    keel_value v;
    char why[160];
    /* numeric -1234.5600 (weight 1: 1234 | 5600, display scale 4) */
    CHECK_INT(dec(res, 1700, "\0\2\0\0\x40\0\0\4\x04\xd2\x15\xe0", 12, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_NUMERIC, "-1234.5600", 10));
    /* 0.00012 (weight -1: 0001 | 2000, scale 5), and 10000 (weight 1: 1, scale 0) */
    CHECK_INT(dec(res, 1700, "\0\2\xff\xff\0\0\0\5\0\1\x07\xd0", 12, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_NUMERIC, "0.00012", 7));
    CHECK_INT(dec(res, 1700, "\0\1\0\1\0\0\0\0\0\1", 10, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_NUMERIC, "10000", 5));
    CHECK_INT(dec(res, 1700, "\0\0\0\0\xc0\0\0\0", 8, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_NUMERIC, "NaN", 3));
    /* timetz 01:02:03.25 at 5:30 east of UTC (-19800 seconds west) */
    CHECK_INT(dec(res, 1266, "\0\0\0\0\xdd\xec\x49\x50\xff\xff\xb2\xa8", 12, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_TEXT, "01:02:03.25+05:30", 17));
    /* inet 10.1.2.3/8 and cidr 10.0.0.0/8 */
    CHECK_INT(dec(res, 869, "\2\x08\0\4\x0a\1\2\3", 8, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_INET, "10.1.2.3/8", 10));
    CHECK_INT(dec(res, 650, "\2\x08\1\4\x0a\0\0\0", 8, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_CIDR, "10.0.0.0/8", 10));
    /* date infinity is its word, as text gives it */
    CHECK_INT(dec(res, 1082, "\x7f\xff\xff\xff", 4, &v, why), 0);
    CHECK(same_str(&v, KEEL_TYPE_TEXT, "infinity", 8));
    /* an empty array of any dimension count is an empty list */
    CHECK_INT(dec(res, 1007, "\0\0\0\0\0\0\0\0\0\0\0\x17", 12, &v, why), 0);
    CHECK(v.type == KEEL_TYPE_ARRAY && v.u.array.n == 0);
    keel_result_free(res);
}

int main(void) {
    RUN(malformed_binary_values_are_refused_with_a_reason);
    RUN(binary_values_are_written_as_the_server_writes_their_text);
    RUN(binary_results_are_the_values_text_gives);
    RUN(a_cached_statement_turns_binary_after_its_first_execution);
    return TEST_SUMMARY();
}
