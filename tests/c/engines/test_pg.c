/* tests/c/engines/test_pg.c - the PostgreSQL engine against a real server (KEEL_TEST_PG_URL). */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include <keel/keel.h>

#include "engines/engine.h"
#include "engines/pg/pg.h"
#include "loop/loop_int.h"
#include "test.h"
#include "support.h"
#include "support/proxy.h"

static keel_db *open_db(void) { return open_url(pg_url(), NULL); }

/* SELECT $1::cast with one parameter: the value that comes back, copied into *out. */
static keel_result *roundtrip(keel_conn *c, const char *cast, keel_value param) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT $1::%s AS v", cast);
    return q(c, sql, &param, 1);
}

TEST(scalar_types_round_trip_through_select) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result *r;
    const keel_value *v;

    r = roundtrip(c, "bool", keel_bool(1));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_BOOL && v->u.boolean == 1);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_BOOL);
    CHECK_STR(keel_result_colname(r, 0), "v");
    keel_result_free(r);
    r = roundtrip(c, "bool", keel_bool(0));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_BOOL && v->u.boolean == 0);
    keel_result_free(r);

    const int64_t ints[] = { 0, 1, -1, 42, INT64_MAX, INT64_MIN, 1234567890123LL };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        r = roundtrip(c, "int8", keel_int(ints[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == ints[i]);
        keel_result_free(r);
    }
    r = roundtrip(c, "int4", keel_int(-2147483648LL));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == -2147483648LL);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    keel_result_free(r);
    r = roundtrip(c, "int2", keel_int(-7));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == -7);
    keel_result_free(r);
    r = roundtrip(c, "oid", keel_int(4000000000LL));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 4000000000LL);
    keel_result_free(r);

    const double floats[] = { 0.1, -1.5e300, 5e-324, 1.0 / 3.0, 123456789.125, -0.0, 1e22 };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        r = roundtrip(c, "float8", keel_float(floats[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_FLOAT && v->u.f64 == floats[i]);
        keel_result_free(r);
    }
    r = roundtrip(c, "float8", keel_float(NAN));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_FLOAT && isnan(v->u.f64));
    keel_result_free(r);
    r = roundtrip(c, "float8", keel_float(INFINITY));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_FLOAT && isinf(v->u.f64) && v->u.f64 > 0);
    keel_result_free(r);
    r = roundtrip(c, "float8", keel_float(-INFINITY));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_FLOAT && isinf(v->u.f64) && v->u.f64 < 0);
    keel_result_free(r);
    r = roundtrip(c, "float4", keel_float(1.5));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_FLOAT && v->u.f64 == 1.5);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_FLOAT);
    keel_result_free(r);

    r = roundtrip(c, "numeric", keel_numeric("-12.3400"));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_NUMERIC, "-12.3400", 8));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_NUMERIC);
    keel_result_free(r);
    r = roundtrip(c, "numeric", keel_numeric("NaN"));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_NUMERIC, "NaN", 3));
    keel_result_free(r);
    r = roundtrip(c, "numeric", keel_numeric("123456789012345678901234567890.000000001"));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_NUMERIC, "123456789012345678901234567890.000000001", 40));
    keel_result_free(r);

    const char *utf8 = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 "
                       "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";
    r = roundtrip(c, "text", keel_text(utf8));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_TEXT, utf8, strlen(utf8)));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TEXT);
    keel_result_free(r);
    r = roundtrip(c, "varchar(40)", keel_text(""));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_TEXT, "", 0));
    keel_result_free(r);
    r = roundtrip(c, "char(3)", keel_textn("abcdef", 2));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_TEXT, "ab ", 3));
    keel_result_free(r);
    r = q(c, "SELECT $1 AS untyped", (keel_value[]){ keel_text("plain") }, 1);
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_TEXT, "plain", 5));
    keel_result_free(r);

    const unsigned char blob[] = { 0, 1, 2, 0x5c, 0x78, 0x7f, 0x80, 0xfe, 0xff, 0 };
    r = roundtrip(c, "bytea", keel_bytes(blob, sizeof blob));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_BYTES, (const char *)blob, sizeof blob));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_BYTES);
    keel_result_free(r);
    r = roundtrip(c, "bytea", keel_bytes(NULL, 0));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_BYTES && v->u.str.len == 0);
    keel_result_free(r);

    const int32_t days[] = { 0, -1, 19723, 2932896, -700000 };
    for (size_t i = 0; i < sizeof days / sizeof days[0]; i++) {
        r = roundtrip(c, "date", keel_date(days[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_DATE && v->u.date == days[i]);
        keel_result_free(r);
    }
    const int64_t times[] = { 0, 45296789012LL, 86399999999LL };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        r = roundtrip(c, "time", keel_time(times[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIME && v->u.micros == times[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TIME);
        keel_result_free(r);
    }
    const int64_t stamps[] = { 0, 1700000000123456LL, -123456789LL, 253402300799999999LL };
    for (size_t i = 0; i < sizeof stamps / sizeof stamps[0]; i++) {
        r = roundtrip(c, "timestamp", keel_timestamp(stamps[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIMESTAMP && v->u.micros == stamps[i]);
        keel_result_free(r);
        r = roundtrip(c, "timestamptz", keel_timestamptz(stamps[i]));
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIMESTAMPTZ && v->u.micros == stamps[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TIMESTAMPTZ);
        keel_result_free(r);
    }
    /* The session time zone changes the text the server writes, not the instant. */
    keel_result_free(q(c, "SET TimeZone = 'Asia/Kolkata'", NULL, 0));
    r = roundtrip(c, "timestamptz", keel_timestamptz(1700000000123456LL));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_TIMESTAMPTZ && v->u.micros == 1700000000123456LL);
    keel_result_free(r);
    keel_result_free(q(c, "RESET TimeZone", NULL, 0));

    const unsigned char uuid[16] = { 0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                     0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00 };
    r = roundtrip(c, "uuid", keel_uuid(uuid));
    v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_UUID && memcmp(v->u.uuid, uuid, 16) == 0);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_UUID);
    keel_result_free(r);

    r = roundtrip(c, "json", keel_json("{\"a\":[1,2]}"));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_JSON, "{\"a\":[1,2]}", 11));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_JSON);
    keel_result_free(r);
    r = roundtrip(c, "jsonb", keel_json("{\"a\":[1,2]}"));
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_JSON, "{\"a\": [1, 2]}", 13));
    keel_result_free(r);

    keel_conn_release(c);
    keel_db_close(db);
}

/*
 * Parameters of the types keel declares go in binary; values the server's types cannot hold
 * are refused by the server as they were in text, whichever form they took, and an int8
 * parameter still narrows into an int4 column with the server's range check.
 */
/*
 * libpq takes parameter lengths as int: a text longer than that is refused by length before any
 * of its bytes is read (a length that does not match the memory must not be trusted), and the
 * connection goes on.
 */
TEST(parameters_longer_than_libpq_can_carry_are_refused) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_value v = keel_text("short");
    v.u.str.len = (size_t)INT32_MAX + 1;
    keel_error e = q_fail(c, "SELECT $1::text", &v, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_CONTAINS(e.message, "longer than 2 GiB");
    v.type = KEEL_TYPE_JSON;
    e = q_fail(c, "SELECT $1::json", &v, 1);
    CHECK_CONTAINS(e.message, "longer than 2 GiB");
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(binary_parameters_keep_the_servers_checks) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    /* About 9500 BC: representable in the binary form, before PostgreSQL's first timestamp. */
    keel_error e = q_fail(c, "SELECT $1::timestamptz",
                          (keel_value[]){ keel_timestamptz(-300000000000000000LL) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22008");
    /* So far out that the binary form would overflow: sent as text, refused all the same. */
    e = q_fail(c, "SELECT $1::timestamp", (keel_value[]){ keel_timestamp(INT64_MIN + 1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    e = q_fail(c, "SELECT $1::timestamptz", (keel_value[]){ keel_timestamptz(INT64_MIN + 1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22008");
    e = q_fail(c, "SELECT $1::date", (keel_value[]){ keel_date(INT32_MIN + 1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);

    keel_result_free(q(c, "CREATE TEMP TABLE narrow (n int4, d date, t time, b bool)", NULL, 0));
    e = q_fail(c, "INSERT INTO narrow (n) VALUES ($1)", (keel_value[]){ keel_int(1LL << 40) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22003");
    keel_value row[] = { keel_int(-7), keel_date(-719162), keel_time(1), keel_bool(1) };
    keel_result_free(q(c, "INSERT INTO narrow VALUES ($1, $2, $3, $4)", row, 4));
    keel_result *r = q(c, "SELECT n, d, t, b FROM narrow", NULL, 0);
    CHECK_INT(keel_result_nrows(r), 1);
    const keel_value *v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == -7);
    v = keel_result_value(r, 0, 1);
    CHECK(v && v->type == KEEL_TYPE_DATE && v->u.date == -719162);
    v = keel_result_value(r, 0, 2);
    CHECK(v && v->type == KEEL_TYPE_TIME && v->u.micros == 1);
    v = keel_result_value(r, 0, 3);
    CHECK(v && v->type == KEEL_TYPE_BOOL && v->u.boolean);
    keel_result_free(r);
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(server_values_without_a_keel_type_come_back_as_text) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "SELECT 'infinity'::timestamp, '-infinity'::date, '10.0.0.1'::inet, "
                       "'12:00:00+02'::timetz, interval '1 day', ARRAY[1,2], 'x'::name, "
                       "'infinity'::timestamptz",
                       NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "infinity", 8));
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TIMESTAMP);
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "-infinity", 9));
        CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_INET, "10.0.0.1", 8));
        CHECK(same_str(keel_result_value(r, 0, 3), KEEL_TYPE_TEXT, "12:00:00+02", 11));
        CHECK_INT(keel_result_coltype(r, 3), KEEL_TYPE_TEXT);
        CHECK_INT(keel_result_value(r, 0, 4)->type, KEEL_TYPE_INTERVAL); /* test_pg_types.c */
        /* Arrays of the types keel knows are arrays (test_pg_types.c). */
        CHECK_INT(keel_result_value(r, 0, 5)->type, KEEL_TYPE_ARRAY);
        CHECK(same_str(keel_result_value(r, 0, 6), KEEL_TYPE_TEXT, "x", 1));
        CHECK(same_str(keel_result_value(r, 0, 7), KEEL_TYPE_TEXT, "infinity", 8));
        CHECK_INT(keel_result_affected(r), 1);
    }
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(every_type_round_trips_through_a_table_including_nulls) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c,
                       "CREATE TEMP TABLE all_types (b bool, i int8, i4 int4, f float8, "
                       "n numeric(10,3), t text, vc varchar(20), by bytea, d date, tm time, "
                       "ts timestamp, tz timestamptz, u uuid, j json, jb jsonb)",
                       NULL, 0));
    const unsigned char uuid[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                     0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    const char *utf8 = "\xc3\xbc\xc3\xb1\xc3\xaf\xc3\xa7\xc3\xb8"
                       "d\xc3\xa9 \xe2\x82\xac";
    keel_value row[15] = {
        keel_bool(1),
        keel_int(-9000000000LL),
        keel_text("77"), /* text into an int column: the server infers the type */
        keel_float(2.5e-3),
        keel_numeric("3.14159"),
        keel_text(utf8),
        keel_text("short"),
        keel_bytes("\0\1\2", 3),
        keel_date(-3000),
        keel_time(3723000004LL),
        keel_timestamp(951782400000000LL),
        keel_timestamptz(-86400000001LL),
        keel_uuid(uuid),
        keel_json("[true, null]"),
        keel_json("{\"k\": \"v\"}"),
    };
    keel_result *r = q(c,
                       "INSERT INTO all_types VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,"
                       "$13,$14,$15)",
                       row, 15);
    CHECK(r != NULL);
    CHECK_INT(keel_result_affected(r), 1);
    CHECK_INT(keel_result_ncols(r), 0);
    keel_result_free(r);
    keel_value nulls[15];
    for (size_t i = 0; i < 15; i++)
        nulls[i] = keel_null();
    keel_result_free(q(c,
                       "INSERT INTO all_types VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,"
                       "$13,$14,$15)",
                       nulls, 15));
    r = q(c, "SELECT * FROM all_types ORDER BY b NULLS LAST", NULL, 0);
    CHECK(r != NULL);
    if (r) {
        const keel_type types[15] = { KEEL_TYPE_BOOL,  KEEL_TYPE_INT,       KEEL_TYPE_INT,
                                      KEEL_TYPE_FLOAT, KEEL_TYPE_NUMERIC,   KEEL_TYPE_TEXT,
                                      KEEL_TYPE_TEXT,  KEEL_TYPE_BYTES,     KEEL_TYPE_DATE,
                                      KEEL_TYPE_TIME,  KEEL_TYPE_TIMESTAMP, KEEL_TYPE_TIMESTAMPTZ,
                                      KEEL_TYPE_UUID,  KEEL_TYPE_JSON,      KEEL_TYPE_JSON };
        CHECK_INT(keel_result_nrows(r), 2);
        CHECK_INT(keel_result_ncols(r), 15);
        for (size_t i = 0; i < 15; i++) {
            CHECK_INT(keel_result_coltype(r, i), types[i]);
            const keel_value *nv = keel_result_value(r, 1, i);
            CHECK(nv && nv->type == KEEL_TYPE_NULL);
        }
        const keel_value *v = keel_result_row(r, 0);
        CHECK(v[0].type == KEEL_TYPE_BOOL && v[0].u.boolean);
        CHECK(v[1].type == KEEL_TYPE_INT && v[1].u.i64 == -9000000000LL);
        CHECK(v[2].type == KEEL_TYPE_INT && v[2].u.i64 == 77);
        CHECK(v[3].type == KEEL_TYPE_FLOAT && v[3].u.f64 == 2.5e-3);
        CHECK(same_str(&v[4], KEEL_TYPE_NUMERIC, "3.142", 5));
        CHECK(same_str(&v[5], KEEL_TYPE_TEXT, utf8, strlen(utf8)));
        CHECK(same_str(&v[6], KEEL_TYPE_TEXT, "short", 5));
        CHECK(same_str(&v[7], KEEL_TYPE_BYTES, "\0\1\2", 3));
        CHECK(v[8].type == KEEL_TYPE_DATE && v[8].u.date == -3000);
        CHECK(v[9].type == KEEL_TYPE_TIME && v[9].u.micros == 3723000004LL);
        CHECK(v[10].type == KEEL_TYPE_TIMESTAMP && v[10].u.micros == 951782400000000LL);
        CHECK(v[11].type == KEEL_TYPE_TIMESTAMPTZ && v[11].u.micros == -86400000001LL);
        CHECK(v[12].type == KEEL_TYPE_UUID && memcmp(v[12].u.uuid, uuid, 16) == 0);
        CHECK(same_str(&v[13], KEEL_TYPE_JSON, "[true, null]", 12));
        CHECK(same_str(&v[14], KEEL_TYPE_JSON, "{\"k\": \"v\"}", 10));
    }
    keel_result_free(r);
    r = q(c, "SELECT NULL::int AS a, $1::text AS b", (keel_value[]){ keel_null() }, 1);
    CHECK(r && keel_result_value(r, 0, 0)->type == KEEL_TYPE_NULL &&
          keel_result_value(r, 0, 1)->type == KEEL_TYPE_NULL);
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    CHECK_STR(keel_result_colname(r, 1), "b");
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(ten_megabyte_bytea_round_trips) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    size_t n = 10u * 1024 * 1024;
    unsigned char *blob = malloc(n);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob[i] = (unsigned char)x;
    }
    keel_value p = keel_bytes(blob, n);
    keel_result *r = q(c, "SELECT $1::bytea, length($1::bytea)", &p, 1);
    CHECK(r != NULL);
    if (r) {
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_BYTES, (const char *)blob, n));
        CHECK_INT(keel_result_value(r, 0, 1)->u.i64, (long long)n);
    }
    keel_result_free(r);
    free(blob);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(hundred_thousand_rows_decode) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "SELECT g AS id, 'row ' || g AS label, g * 0.5 AS half, g % 2 = 0 AS even "
                       "FROM generate_series(1, 100000) g",
                       NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keel_result_nrows(r), 100000);
        CHECK_INT(keel_result_affected(r), 100000);
        const keel_value *v = keel_result_row(r, 99999);
        CHECK(v && v[0].type == KEEL_TYPE_INT && v[0].u.i64 == 100000);
        CHECK(v && same_str(&v[1], KEEL_TYPE_TEXT, "row 100000", 10));
        CHECK(v && same_str(&v[2], KEEL_TYPE_NUMERIC, "50000.0", 7));
        CHECK(v && v[3].type == KEEL_TYPE_BOOL && v[3].u.boolean == 1);
        int64_t sum = 0;
        for (size_t i = 0; i < keel_result_nrows(r); i++)
            sum += keel_result_value(r, i, 0)->u.i64;
        CHECK_INT(sum, 5000050000LL);
    }
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(executemany_of_ten_thousand_rows) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(
        q(c, "CREATE TEMP TABLE em (id int8 PRIMARY KEY, name text, data bytea)", NULL, 0));
    size_t rows = 10000;
    keel_value *params = calloc(rows * 3, sizeof *params);
    char(*names)[32] = calloc(rows, sizeof *names);
    for (size_t i = 0; i < rows; i++) {
        snprintf(names[i], sizeof names[i], "name-%zu-\xc3\xa9", i);
        params[i * 3] = keel_int((int64_t)i);
        params[i * 3 + 1] = keel_text(names[i]);
        params[i * 3 + 2] = i % 7 ? keel_bytes(names[i], 4) : keel_null();
    }
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_query_many_sync(c, "INSERT INTO em VALUES ($1, $2, $3)", params,
                                               rows, 3, &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_affected(r), 10000);
    CHECK_INT(keel_result_nrows(r), 0);
    keel_result_free(r);
    CHECK_INT(q_int(c, "SELECT count(*) FROM em"), 10000);
    CHECK_INT(q_int(c, "SELECT sum(id)::int8 FROM em"), 49995000);
    CHECK_INT(q_int(c, "SELECT count(*) FROM em WHERE data IS NULL"), 1429);
    r = q(c, "SELECT name FROM em WHERE id = 9999", NULL, 0);
    CHECK(r &&
          same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, names[9999], strlen(names[9999])));
    keel_result_free(r);

    /* A failing row stops the batch, names its index, and the batch is all or nothing. */
    keel_result_free(q(c, "TRUNCATE em", NULL, 0));
    params[17 * 3] = keel_int(5);
    st = keel_conn_query_many_sync(c, "INSERT INTO em VALUES ($1, $2, $3)", params, rows, 3, &r,
                                   &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23505");
    CHECK_CONTAINS(err.message, "row 17: duplicate key value");
    CHECK_INT(q_int(c, "SELECT count(*) FROM em"), 0);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* A batch of one row, and a batch of statements without parameters. */
    st = keel_conn_query_many_sync(c, "INSERT INTO em VALUES ($1, $2, $3)", params, 1, 3, &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 1);
    keel_result_free(r);
    st = keel_conn_query_many_sync(c, "UPDATE em SET name = 'x'", NULL, 3, 0, &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
    free(params);
    free(names);
    keel_conn_release(c);
    keel_db_close(db);
}

/*
 * A batch parses its statement once per run of rows with the same parameter types: a row whose
 * types differ is parsed again, so values of mixed types reach a numeric column as they would
 * one statement at a time, and errors still name the row, also when its parse fails.
 */
TEST(executemany_with_parameter_types_changing_between_rows) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "CREATE TEMP TABLE mt (id int8 PRIMARY KEY, v numeric)", NULL, 0));
    const char *sql = "INSERT INTO mt VALUES ($1, $2)";
    keel_value params[] = { keel_int(0), keel_null(),        keel_int(1), keel_int(1099511627776),
                            keel_int(2), keel_float(0.5),    keel_int(3), keel_float(0.25),
                            keel_int(4), keel_text("1.125"), keel_int(5), keel_int(7) };
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_query_many_sync(c, sql, params, 6, 2, &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_affected(r), 6);
    keel_result_free(r);
    r = q(c, "SELECT string_agg(coalesce(v::text, '-'), ' ' ORDER BY id) FROM mt", NULL, 0);
    CHECK(r && same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT,
                        "- 1099511627776 0.5 0.25 1.125 7", 32));
    keel_result_free(r);

    /* A duplicate key after a change of types is reported with its own row number. */
    keel_result_free(q(c, "TRUNCATE mt", NULL, 0));
    params[10] = keel_int(1);
    st = keel_conn_query_many_sync(c, sql, params, 6, 2, &r, &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK_CONTAINS(err.message, "row 5: duplicate key value");
    CHECK_INT(q_int(c, "SELECT count(*) FROM mt"), 0);

    /* A row whose types the statement cannot take fails at its parse, named by its row. */
    unsigned char id[16] = { 1 };
    params[10] = keel_int(5);
    params[7] = keel_uuid(id);
    st = keel_conn_query_many_sync(c, sql, params, 6, 2, &r, &err);
    CHECK_INT(st == KEEL_OK, 0);
    CHECK_CONTAINS(err.message, "row 3: ");
    CHECK_CONTAINS(err.message, "uuid");
    CHECK_INT(q_int(c, "SELECT count(*) FROM mt"), 0);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(multi_statement_simple_query_returns_the_last_rows) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "CREATE TEMP TABLE ms (a int); INSERT INTO ms VALUES (1), (2), (3); "
                       "SELECT a FROM ms ORDER BY a; UPDATE ms SET a = a + 1",
                       NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keel_result_nrows(r), 3);
        CHECK_STR(keel_result_colname(r, 0), "a");
        CHECK_INT(keel_result_value(r, 2, 0)->u.i64, 3);
    }
    keel_result_free(r);
    r = q(c, "INSERT INTO ms VALUES (9); DELETE FROM ms WHERE a > 2", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 0);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
    r = q(c, "", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 0 && keel_result_affected(r) == -1);
    keel_result_free(r);
    r = q(c, "SET application_name = 'x'", NULL, 0);
    CHECK(r && keel_result_affected(r) == -1);
    keel_result_free(r);
    /* An error in the middle stops the rest and is reported. */
    keel_error e = q_fail(c, "SELECT 1; SELECT 1/0; SELECT 3", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_INT(q_int(c, "SELECT count(*) FROM ms"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

/* The rows of a 50,000-row statement come in several batches, in order, on every path a
 * statement takes: prepared in this round trip (pipelined), a cached execute, unnamed. */
static void check_streamed(keel_db *db, keel_conn *c, const char *sql, const keel_value *params,
                           size_t n) {
    rows_run x;
    run_rows(db, c, sql, params, n, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.rows, 50000);
    CHECK(x.batches > 1);
    CHECK(x.max_batch < 50000);
    CHECK(x.in_order);
    CHECK_STR(x.colname, "g");
    CHECK(x.res != NULL);
    if (x.res) {
        CHECK_INT(keel_result_nrows(x.res), 0);
        CHECK_INT(keel_result_ncols(x.res), 2);
        CHECK_STR(keel_result_colname(x.res, 1), "label");
        CHECK_INT(keel_result_affected(x.res), 50000);
    }
    keel_result_free(x.res);
}

TEST(query_rows_streams_a_large_result_in_batches) {
    const char *sql = "SELECT g, 'row ' || g AS label FROM generate_series(1, $1::int) g";
    keel_value n = keel_int(50000);
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    check_streamed(db, c, sql, &n, 1); /* prepared now */
    check_streamed(db, c, sql, &n, 1); /* cached */
    check_streamed(db, c, "SELECT g, 'row ' || g AS label FROM generate_series(1, 50000) g", NULL,
                   0);
    keel_conn_release(c);
    keel_db_close(db);

    const char *extra[] = { "databases.default.options.statement_cache_size", "0", NULL };
    db = open_url(pg_url(), extra);
    c = acquire(db);
    check_streamed(db, c, sql, &n, 1); /* unnamed statement */
    check_streamed(db, c, "SELECT g, 'row ' || g AS label FROM generate_series(1, 50000) g;", NULL,
                   0);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(query_rows_edge_cases) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    rows_run x;
    /* No rows: no batch, and the columns are in the result. */
    run_rows(db, c, "SELECT 1 AS g, 2 AS h WHERE false", NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.batches, 0);
    CHECK(x.res && keel_result_ncols(x.res) == 2 && keel_result_nrows(x.res) == 0);
    CHECK_STR(keel_result_colname(x.res, 1), "h");
    keel_result_free(x.res);
    /* Several statements: the last rows, handed over at the end in slices of 256 rows. */
    run_rows(db, c,
             "SELECT 7 AS g; SELECT g FROM generate_series(1, 3000) g; "
             "SET application_name = 'x'",
             NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.batches, (3000 + 255) / 256);
    CHECK_INT(x.max_batch, 256);
    CHECK_INT(x.rows, 3000);
    CHECK(x.in_order);
    CHECK(x.res && keel_result_nrows(x.res) == 0);
    keel_result_free(x.res);
    /* A statement without rows. */
    run_rows(db, c, "CREATE TEMP TABLE qr (a int)", NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.batches, 0);
    CHECK(x.res && keel_result_ncols(x.res) == 0);
    keel_result_free(x.res);
    /* An error after rows went out: reported, and the connection stays usable. */
    run_rows(db, c, "SELECT g, 1 / (g - 40000) FROM generate_series(1, 50000) g", NULL, 0, &x);
    CHECK_INT(x.err.code, KEEL_ERR_DATA);
    CHECK(x.res == NULL);
    CHECK(x.rows < 40000);
    CHECK(x.in_order);
    CHECK_INT(q_int(c, "SELECT 4"), 4);
    /* A rows callback is required. */
    keel_error err;
    CHECK_INT(keel_conn_query_rows(c, "SELECT 1", NULL, 0, NULL, rows_run_done, &x, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "rows callback");
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(server_errors_map_to_statuses) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e = q_fail(c, "SELEC 1", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42601");
    CHECK_STR(e.engine, "postgresql");
    CHECK_STR(e.database, "default");
    CHECK_CONTAINS(e.message, "syntax error");

    e = q_fail(c, "SELECT * FROM no_such_table_here WHERE a = $1", (keel_value[]){ keel_int(1) },
               1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42P01");

    keel_result_free(q(c, "CREATE TEMP TABLE uv (id int PRIMARY KEY)", NULL, 0));
    keel_result_free(q(c, "INSERT INTO uv VALUES ($1)", (keel_value[]){ keel_int(1) }, 1));
    e = q_fail(c, "INSERT INTO uv VALUES ($1)", (keel_value[]){ keel_int(1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_STR(e.sqlstate, "23505");
    CHECK_CONTAINS(e.message, "DETAIL: Key (id)=(1) already exists");
    /* The server's fields, apart: which constraint of which table, without parsing. */
    CHECK_STR(e.detail, "Key (id)=(1) already exists.");
    CHECK_STR(e.constraint_name, "uv_pkey");
    CHECK_STR(e.table_name, "uv");
    CHECK_STR(e.column_name, "");
    CHECK_STR(e.hint, "");
    CHECK_CONTAINS(e.schema_name, "pg_temp");

    keel_result_free(q(c, "CREATE TEMP TABLE nn (id int NOT NULL)", NULL, 0));
    e = q_fail(c, "INSERT INTO nn VALUES (NULL)", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_STR(e.column_name, "id");
    CHECK_STR(e.table_name, "nn");
    CHECK_STR(e.constraint_name, "");

    e = q_fail(c, "SELECT no_such_function_here(1)", NULL, 0);
    CHECK_CONTAINS(e.hint, "No function matches");
    CHECK_STR(e.detail, "");

    e = q_fail(c, "SELECT 1/0", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.detail, "");
    CHECK_STR(e.constraint_name, "");
    CHECK_STR(e.sqlstate, "22012");
    e = q_fail(c, "SELECT $1::int", (keel_value[]){ keel_text("abc") }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22P02");

    e = q_fail(c, "SELECT $1, $2", (keel_value[]){ keel_int(1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_PARAMETERS);
    e = q_fail(c, "SELECT $1::text", (keel_value[]){ keel_textn("a\0b", 3) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_CONTAINS(e.message, "$1");

    e = q_fail(c, "COPY uv FROM STDIN", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_UNSUPPORTED);
    e = q_fail(c, "COPY uv TO STDOUT", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_UNSUPPORTED);
    keel_result *r = NULL;
    CHECK_INT(keel_conn_query_many_sync(c, " /* c */ copy uv FROM STDIN", NULL, 2, 0, &r, &e),
              KEEL_ERR_UNSUPPORTED);

    /* After all of that the connection is still good. */
    CHECK_INT(q_int(c, "SELECT count(*) FROM uv"), 1);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    keel_conn_release(c);
    keel_db_close(db);
}

/* PostgreSQL's own SQLSTATEs map in the engine; the SQL-standard classes in the core. */
TEST(postgresql_sqlstates_map_to_statuses) {
    CHECK_INT(keel__pg_status_of("57014"), KEEL_ERR_CANCELLED);
    CHECK_INT(keel__pg_status_of("08P01"), KEEL_ERR_PARAMETERS);
    CHECK_INT(keel__pg_status_of("42P18"), KEEL_ERR_PARAMETERS);
    CHECK_INT(keel__pg_status_of("42P02"), KEEL_ERR_PARAMETERS);
    CHECK_INT(keel__pg_status_of("53300"), KEEL_ERR_OPERATIONAL);
    CHECK_INT(keel__pg_status_of("55P03"), KEEL_ERR_OPERATIONAL);
    CHECK_INT(keel__pg_status_of("57P01"), KEEL_ERR_OPERATIONAL);
    CHECK_INT(keel__pg_status_of("58030"), KEEL_ERR_OPERATIONAL);
    CHECK_INT(keel__pg_status_of("XX000"), KEEL_ERR_INTERNAL);
    CHECK_INT(keel__pg_status_of("23505"), KEEL_ERR_INTEGRITY);
    CHECK_INT(keel__pg_status_of("42P01"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__pg_status_of("22P02"), KEEL_ERR_DATA);
    CHECK_INT(keel__pg_status_of("08006"), KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel__pg_status_of("40P01"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__pg_status_of("0A000"), KEEL_ERR_UNSUPPORTED);
    CHECK_INT(keel__pg_status_of("P0001"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__pg_status_of(""), KEEL_ERR_DATABASE);
    CHECK_INT(keel__pg_status_of(NULL), KEEL_ERR_DATABASE);

    /* And from the server: a parameter whose type cannot be inferred, a lock not granted. */
    keel_db *db = open_db();
    keel_conn *a = acquire(db), *b = acquire(db);
    keel_error e = q_fail(a, "SELECT $1 IS NULL", (keel_value[]){ keel_null() }, 1);
    CHECK_INT(e.code, KEEL_ERR_PARAMETERS);
    CHECK_STR(e.sqlstate, "42P18");
    keel_result_free(q(a, "DROP TABLE IF EXISTS keel_pg_lock", NULL, 0));
    keel_result_free(q(a, "CREATE TABLE keel_pg_lock (id int)", NULL, 0));
    keel_result_free(q(a, "INSERT INTO keel_pg_lock VALUES (1)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(a, KEEL_TXN_BEGIN, 0, &e), KEEL_OK);
    keel_result_free(q(a, "SELECT id FROM keel_pg_lock FOR UPDATE", NULL, 0));
    e = q_fail(b, "SELECT id FROM keel_pg_lock FOR UPDATE NOWAIT", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_OPERATIONAL);
    CHECK_STR(e.sqlstate, "55P03");
    CHECK_INT(keel_conn_transaction_sync(a, KEEL_TXN_ROLLBACK, 0, &e), KEEL_OK);
    CHECK_INT(q_int(b, "SELECT count(*) FROM keel_pg_lock"), 1); /* b stays usable */
    keel_result_free(q(a, "DROP TABLE keel_pg_lock", NULL, 0));
    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(dead_server_fails_fast_without_leaking_the_password) {
    keel_db *db = open_url("postgresql://postgres:s3cr3t-pw@127.0.0.1:1/keel_test", NULL);
    CHECK(db != NULL);
    keel_conn *c = NULL;
    keel_error err;
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    CHECK_INT(st, KEEL_ERR_CONNECT);
    CHECK_STR(err.engine, "postgresql");
    CHECK_CONTAINS(err.message, "127.0.0.1");
    CHECK_CONTAINS(err.message, "port 1");
    CHECK(strstr(err.message, "s3cr3t-pw") == NULL);
    keel_db_close(db);
}

TEST(connect_timeout_when_the_server_never_answers) {
    int port = 0;
    int fd = silent_listener(&port);
    char url[128];
    snprintf(url, sizeof url, "postgresql://postgres:pw@127.0.0.1:%d/keel_test", port);
    const char *extra[] = { "databases.default.connect_timeout", "0.5", NULL };
    keel_db *db = open_url(url, extra);
    keel_conn *c = NULL;
    keel_error err;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_TIMEOUT);
    CHECK_CONTAINS(err.message, "127.0.0.1");
    CHECK_CONTAINS(err.message, "timed out");
    keel_db_close(db);
    close(fd);
}

TEST(host_names_are_resolved_and_options_reach_the_server) {
    /* localhost goes through the resolver job; options reach the session; a DateStyle other
     * than ISO and an IntervalStyle other than postgres are corrected at connect time. */
    char url[512];
    const char *base = pg_url();
    const char *ip = strstr(base, "127.0.0.1");
    if (ip)
        snprintf(url, sizeof url, "%.*slocalhost%s", (int)(ip - base), base, ip + 9);
    else
        snprintf(url, sizeof url, "%s", base);
    const char *extra[] = { "databases.default.options.application_name", "keel-pg-test",
                            "databases.default.options.options",
                            "-c DateStyle=SQL,DMY -c IntervalStyle=iso_8601", NULL };
    keel_db *db = open_url(url, extra);
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    keel_result *r = q(c,
                       "SELECT current_setting('application_name'), "
                       "current_setting('DateStyle'), DATE '2024-02-03', "
                       "current_setting('IntervalStyle'), '1 day'::interval",
                       NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "keel-pg-test", 12));
        const keel_value *ds = keel_result_value(r, 0, 1);
        CHECK(ds && ds->type == KEEL_TYPE_TEXT && strncmp(ds->u.str.ptr, "ISO", 3) == 0);
        const keel_value *d = keel_result_value(r, 0, 2);
        CHECK(d && d->type == KEEL_TYPE_DATE && d->u.date == 19756);
        CHECK(same_str(keel_result_value(r, 0, 3), KEEL_TYPE_TEXT, "postgres", 8));
        const keel_value *i = keel_result_value(r, 0, 4);
        CHECK(i && i->type == KEEL_TYPE_INTERVAL && i->u.interval.days == 1);
    }
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

/* The password in the test URL (as written, up to 63 bytes), or "" when it has none. */
static void url_password(char *out, size_t size) {
    const char *u = strstr(pg_url(), "://");
    const char *at = u ? strchr(u + 3, '@') : NULL;
    const char *colon = u ? strchr(u + 3, ':') : NULL;
    out[0] = '\0';
    if (at && colon && colon < at)
        snprintf(out, size, "%.*s", (int)(at - colon - 1), colon + 1);
}

TEST(secrets_are_resolved_at_connect_time) {
    const char *extra[] = { "databases.default.password", "${env:KEEL_TEST_PG_SECRET}", NULL };
    keel_db *db = open_url(pg_url(), extra);
    CHECK(db != NULL);
    unsetenv("KEEL_TEST_PG_SECRET");
    keel_conn *c = NULL;
    keel_error err;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "KEEL_TEST_PG_SECRET");
    char pw[64];
    url_password(pw, sizeof pw);
    setenv("KEEL_TEST_PG_SECRET", pw[0] ? pw : "rotated-secret", 1);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
    unsetenv("KEEL_TEST_PG_SECRET");
}

TEST(transactions_commit_roll_back_and_use_savepoints) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error err;
    keel_result_free(q(c, "CREATE TEMP TABLE tx (a int)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    keel_result_free(q(c, "INSERT INTO tx VALUES (1)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM tx"), 0);

    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO tx VALUES (1)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_SAVEPOINT, 1, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO tx VALUES (2)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK_TO, 1, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 1, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT count(*) FROM tx"), 1);

    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_error e = q_fail(c, "SELECT 1/0", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_FAILED);
    e = q_fail(c, "SELECT 1", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_TRANSACTION);
    CHECK_STR(e.sqlstate, "25P02");
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(commit_of_a_failed_block_is_an_error_and_a_failed_savepoint_is_rolled_back) {
    /* PostgreSQL answers COMMIT of a block in which a statement failed with the tag ROLLBACK
     * and no error: keel reports it, so a caught error cannot silently lose the writes. */
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error err;
    keel_result_free(q(c, "CREATE TEMP TABLE txf (a int PRIMARY KEY)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO txf VALUES (1)", NULL, 0));
    keel_error e = q_fail(c, "INSERT INTO txf VALUES (1)", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_ERR_TRANSACTION);
    CHECK_STR(err.sqlstate, "25P02");
    CHECK_CONTAINS(err.message, "the transaction was rolled back: an earlier statement");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM txf"), 0);

    /* A savepoint whose statement failed: RELEASE rolls back to it and reports it; the
     * enclosing block goes on and commits its own writes. */
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO txf VALUES (1)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_SAVEPOINT, 1, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO txf VALUES (2)", NULL, 0));
    e = q_fail(c, "INSERT INTO txf VALUES (1)", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 1, &err), KEEL_ERR_TRANSACTION);
    CHECK_STR(err.sqlstate, "25P02");
    CHECK_CONTAINS(err.message, "the savepoint was rolled back: an earlier statement");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    keel_result_free(q(c, "INSERT INTO txf VALUES (3)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT count(*) FROM txf"), 2);
    CHECK_INT(q_int(c, "SELECT sum(a) FROM txf"), 4);

    /* A block whose error was rolled back to a savepoint commits normally. */
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_SAVEPOINT, 1, &err), KEEL_OK);
    e = q_fail(c, "INSERT INTO txf VALUES (1)", NULL, 0);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK_TO, 1, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 1, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO txf VALUES (5)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT count(*) FROM txf"), 3);

    /* COMMIT (or END) written as a statement reports it too; ROLLBACK does not. */
    const char *commits[] = { "COMMIT", " /* c */ -- d\n end", "commit;" };
    for (size_t i = 0; i < sizeof commits / sizeof commits[0]; i++) {
        keel_result_free(q(c, "BEGIN", NULL, 0));
        keel_result_free(q(c, "INSERT INTO txf VALUES (7)", NULL, 0));
        e = q_fail(c, "INSERT INTO txf VALUES (7)", NULL, 0);
        CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
        e = q_fail(c, commits[i], NULL, 0);
        CHECK_INT(e.code, KEEL_ERR_TRANSACTION);
        CHECK_STR(e.sqlstate, "25P02");
        CHECK_CONTAINS(e.message, "the transaction was rolled back: an earlier statement");
        CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    }
    keel_result_free(q(c, "BEGIN", NULL, 0));
    e = q_fail(c, "INSERT INTO txf VALUES (1)", NULL, 0);
    keel_result_free(q(c, "ROLLBACK", NULL, 0));
    keel_result_free(q(c, "COMMIT", NULL, 0)); /* outside a block: a warning, no error */
    CHECK_INT(q_int(c, "SELECT count(*) FROM txf"), 3);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(connection_released_inside_a_transaction_comes_back_clean) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(pg_url(), extra);
    keel_conn *c = acquire(db);
    keel_error err;
    keel_result_free(q(c, "CREATE TEMP TABLE rel (a int)", NULL, 0));
    int64_t pid = q_int(c, "SELECT pg_backend_pid()");
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO rel VALUES (1)", NULL, 0));
    keel_conn_release(c);
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(q_int(c, "SELECT pg_backend_pid()"), pid); /* the same session, rolled back */
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM rel"), 0);
    keel_conn_release(c);
    keel_db_close(db);
}

typedef struct cancel_ctx {
    keel_conn *conn;
    int done;
    keel_error err;
    int64_t started;
} cancel_ctx;

static void on_cancel_timer(void *arg) {
    cancel_ctx *x = arg;
    keel_conn_cancel(x->conn);
}

static void on_cancelled_done(keel_result *res, const keel_error *err, void *arg) {
    cancel_ctx *x = arg;
    x->done = 1;
    if (err)
        x->err = *err;
    keel_result_free(res);
}

/* Starts sql asynchronously, cancels it after 300 ms from a loop timer, returns the error. */
static keel_error run_and_cancel(keel_db *db, keel_conn *c, const char *sql,
                                 const keel_value *params, size_t nrows, size_t nparams, int many) {
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    x.conn = c;
    keel_error err;
    keel_status st =
        many ? keel_conn_query_many(c, sql, params, nrows, nparams, on_cancelled_done, &x, &err)
             : keel_conn_query(c, sql, params, nparams, on_cancelled_done, &x, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        return err;
    keel_loop *loop = keel_db_loop(db);
    keel_timer *t = keel__timer_new(loop, on_cancel_timer, &x);
    keel__timer_arm(t, keel_now_ms() + 300);
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    keel__timer_free(t);
    return x.err;
}

TEST(cancel_stops_a_running_query_and_the_connection_stays_usable) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e = run_and_cancel(db, c, "SELECT pg_sleep(10)", NULL, 1, 0, 0);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_STR(e.sqlstate, "57014");
    CHECK_INT(q_int(c, "SELECT 1"), 1);

    keel_value rows[3] = { keel_float(0), keel_float(10), keel_float(0) };
    e = run_and_cancel(db, c, "SELECT pg_sleep($1)", rows, 3, 1, 1);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_CONTAINS(e.message, "row 1");
    CHECK_INT(q_int(c, "SELECT 2"), 2);
    keel_conn_cancel(c); /* nothing runs: a no-op */
    CHECK_INT(q_int(c, "SELECT 3"), 3);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(release_while_running_cancels_and_returns_the_connection) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(pg_url(), extra);
    keel_conn *c = acquire(db);
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_query(c, "SELECT pg_sleep(10)", NULL, 0, on_cancelled_done, &x, &err),
              KEEL_OK);
    keel_conn_release(c);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(closing_the_db_while_a_query_runs_reports_closed) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_query(c, "SELECT pg_sleep(0.5)", NULL, 0, on_cancelled_done, &x, &err),
              KEEL_OK);
    keel_db_close(db);
    CHECK_INT(x.done, 1);
    CHECK_INT(x.err.code, KEEL_ERR_CLOSED);
    keel_conn_release(c);
}

TEST(server_side_close_is_noticed) {
    keel_db *db = open_db();
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    CHECK(a && b && a != b);
    int64_t pid_a = q_int(a, "SELECT pg_backend_pid()");
    keel_conn_release(a);
    keel_pool_stats stats;
    keel_error err;
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.size, 2);
    keel_value pid = keel_int(pid_a);
    keel_result_free(q(b, "SELECT pg_terminate_backend($1::int)", &pid, 1));
    /* Runs the loop while the idle connection sees the server close it. */
    keel_result_free(q(b, "SELECT pg_sleep(0.3)", NULL, 0));
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.size, 1);
    keel_conn_release(b);

    /* A leased connection killed under its holder fails with CONNECTION_LOST. */
    a = acquire(db);
    b = acquire(db);
    pid = keel_int(q_int(a, "SELECT pg_backend_pid()"));
    keel_result_free(q(b, "SELECT pg_terminate_backend($1::int)", &pid, 1));
    keel_result_free(q(b, "SELECT pg_sleep(0.3)", NULL, 0));
    keel_error e = q_fail(a, "SELECT 1", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel_conn_txn_status(a), KEEL_TXN_UNKNOWN);
    keel_conn_release(a);
    keel_conn_release(b);
    keel_result *r = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT 42", NULL, 0, &r, &err), KEEL_OK);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 42);
    keel_result_free(r);
    keel_db_close(db);
}

/* What a notify handler received. */
typedef struct notes {
    int count;
    int lost;
    int after_lost;  /* calls after the loss was reported: must stay 0 */
    int remove_self; /* the handler removes itself at its first call */
    char channel[64];
    char payload[64];
    int64_t pid;
    keel_error err;
} notes;

static void on_note(keel_conn *conn, const keel_notification *n, const keel_error *err, void *arg) {
    notes *x = arg;
    if (x->lost)
        x->after_lost++;
    if (!n) {
        x->lost++;
        x->err = *err;
        return;
    }
    x->count++;
    snprintf(x->channel, sizeof x->channel, "%s", n->channel);
    snprintf(x->payload, sizeof x->payload, "%s", n->payload);
    x->pid = n->pid;
    if (x->remove_self) {
        keel_error e;
        CHECK_INT(keel_conn_set_notify_handler(conn, NULL, NULL, &e), KEEL_OK);
    }
}

/* Channels the session of c listens to. */
static int64_t listening(keel_conn *c) {
    return q_int(c, "SELECT count(*) FROM pg_listening_channels()");
}

TEST(notifications_reach_the_handler_while_idle_and_after_an_operation) {
    keel_db *db = open_db();
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    CHECK(a && b);
    notes x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_set_notify_handler(a, on_note, &x, &err), KEEL_OK);
    keel_result_free(q(a, "LISTEN \"keel Ch\"", NULL, 0));
    int64_t pid_b = q_int(b, "SELECT pg_backend_pid()");

    /* Sent by another session while a is idle: read from a's socket while b runs. */
    keel_result_free(q(b, "NOTIFY \"keel Ch\", 'one'", NULL, 0));
    keel_result_free(q(b, "SELECT pg_notify('keel Ch', 'two')", NULL, 0));
    /* A notification is sent when its transaction commits: after the statement. */
    keel_result_free(q(b, "SELECT pg_sleep(0.2)", NULL, 0));
    CHECK_INT(x.count, 2);
    CHECK_STR(x.channel, "keel Ch");
    CHECK_STR(x.payload, "two");
    CHECK_INT(x.pid, pid_b);

    /* Sent by a itself, arriving with a statement's results: delivered before its callback. */
    keel_result_free(q(a, "SELECT pg_notify('keel Ch', '')", NULL, 0));
    CHECK_INT(x.count, 3);
    CHECK_STR(x.payload, "");
    /* A channel a does not listen to, and a notification inside a transaction that rolls
     * back, never arrive. */
    keel_result_free(q(b, "NOTIFY other_channel, 'x'", NULL, 0));
    keel_result_free(q(b, "BEGIN", NULL, 0));
    keel_result_free(q(b, "NOTIFY \"keel Ch\", 'rolled back'", NULL, 0));
    keel_result_free(q(b, "ROLLBACK", NULL, 0));
    keel_result_free(q(b, "SELECT pg_sleep(0.1)", NULL, 0));
    CHECK_INT(x.count, 3);

    /* Without a handler, what arrives is dropped; the connection is none the worse. */
    CHECK_INT(keel_conn_set_notify_handler(a, NULL, NULL, &err), KEEL_OK);
    keel_result_free(q(b, "SELECT pg_notify('keel Ch', 'dropped')", NULL, 0));
    keel_result_free(q(b, "SELECT pg_sleep(0.1)", NULL, 0));
    CHECK_INT(x.count, 3);
    CHECK_INT(q_int(a, "SELECT 7"), 7);

    /* A handler may remove itself. */
    x.remove_self = 1;
    CHECK_INT(keel_conn_set_notify_handler(a, on_note, &x, &err), KEEL_OK);
    keel_result_free(q(b, "SELECT pg_notify('keel Ch', 'a'), pg_notify('keel Ch', 'b')", NULL, 0));
    keel_result_free(q(b, "SELECT pg_sleep(0.1)", NULL, 0));
    CHECK_INT(x.count, 4);
    CHECK_STR(x.payload, "a");

    /* Released, a connection that listened unlistens before anyone else gets it. */
    CHECK_INT(listening(a), 1);
    keel_conn_release(a);
    keel_conn_release(b);
    a = acquire(db);
    b = acquire(db);
    CHECK_INT(listening(a), 0);
    CHECK_INT(listening(b), 0);

    /* Released inside a transaction: rolled back, then unlistened. */
    CHECK_INT(keel_conn_set_notify_handler(a, on_note, &x, &err), KEEL_OK);
    keel_result_free(q(a, "LISTEN keel_txn", NULL, 0));
    keel_result_free(q(a, "BEGIN", NULL, 0));
    keel_result_free(q(a, "CREATE TEMP TABLE keel_listen_txn (a int)", NULL, 0));
    keel_conn_release(a);
    keel_conn_release(b);
    a = acquire(db);
    b = acquire(db);
    CHECK_INT(listening(a) + listening(b), 0);
    CHECK_INT(q_int(a, "SELECT count(*) FROM pg_tables WHERE tablename = 'keel_listen_txn'"), 0);
    CHECK_INT(q_int(b, "SELECT count(*) FROM pg_tables WHERE tablename = 'keel_listen_txn'"), 0);

    /* LISTEN run as a plain statement, without a handler, is undone on release too. */
    keel_result_free(q(a, " -- subscribe\n /* plain */ listen keel_plain", NULL, 0));
    keel_result_free(q(b, "SELECT 1 AS listen_not", NULL, 0));
    CHECK_INT(listening(a), 1);
    keel_conn_release(a);
    keel_conn_release(b);
    a = acquire(db);
    b = acquire(db);
    CHECK_INT(listening(a) + listening(b), 0);
    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(a_listening_connection_lost_while_idle_tells_its_handler_once) {
    keel_db *db = open_db();
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    notes x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_set_notify_handler(a, on_note, &x, &err), KEEL_OK);
    keel_result_free(q(a, "LISTEN keel_lost", NULL, 0));
    keel_value pid = keel_int(q_int(a, "SELECT pg_backend_pid()"));
    keel_result_free(q(b, "SELECT pg_terminate_backend($1::int)", &pid, 1));
    keel_result_free(q(b, "SELECT pg_sleep(0.3)", NULL, 0));
    CHECK_INT(x.lost, 1);
    CHECK_INT(x.after_lost, 0);
    CHECK_INT(x.err.code, KEEL_ERR_CONNECTION_LOST);
    CHECK_CONTAINS(x.err.message, "while it listened");
    CHECK_STR(x.err.database, "default");
    CHECK_INT(q_fail(a, "SELECT 1", NULL, 0).code, KEEL_ERR_CONNECTION_LOST);
    keel_conn_release(a);
    /* The pool serves again, and no connection of it listens. */
    a = acquire(db);
    CHECK_INT(listening(a), 0);
    keel_conn_release(a);
    keel_conn_release(b);
    keel_db_close(db);
}

TEST(notify_handlers_are_refused_where_they_cannot_work) {
    keel_error err;
    CHECK_INT(keel_conn_set_notify_handler(NULL, on_note, NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    keel_db *db = open_url("sqlite::memory:", NULL);
    keel_conn *c = acquire(db);
    CHECK_INT(keel_conn_set_notify_handler(c, on_note, NULL, &err), KEEL_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "LISTEN/NOTIFY is PostgreSQL's");
    CHECK_STR(err.database, "default");
    keel_conn_release(c);
    CHECK_INT(keel_conn_set_notify_handler(c, on_note, NULL, &err), KEEL_ERR_CLOSED);
    keel_db_close(db);
    db = open_db();
    c = acquire(db);
    keel_conn_release(c);
    CHECK_INT(keel_conn_set_notify_handler(c, on_note, NULL, &err), KEEL_ERR_CLOSED);
    keel_db_close(db);
}

TEST(check_config_validates_options) {
    keel__option opts[1];
    keel__dbconfig dbc;
    memset(&dbc, 0, sizeof dbc);
    dbc.name = "main";
    dbc.engine = "postgresql";
    dbc.options = opts;
    dbc.noptions = 1;
    keel_error err;
    const struct {
        const char *key, *value;
        keel_status want;
    } cases[] = {
        { "sslmode", "verify-full", KEEL_OK },
        { "sslmode", "maybe", KEEL_ERR_CONFIG },
        { "sslmode", "${env:PGSSLMODE}", KEEL_OK },
        { "sslrootcert", "/etc/ssl/root.crt", KEEL_OK },
        { "application_name", "svc", KEEL_OK },
        { "target_session_attrs", "read-write", KEEL_OK },
        { "target_session_attrs", "writable", KEEL_ERR_CONFIG },
        { "keepalives", "1", KEEL_OK },
        { "keepalives", "2", KEEL_ERR_CONFIG },
        { "keepalives_idle", "30", KEEL_OK },
        { "keepalives_idle", "-3", KEEL_ERR_CONFIG },
        { "options", "-c search_path=app", KEEL_OK },
        { "bogus", "1", KEEL_ERR_CONFIG },
        { "password", "x", KEEL_ERR_CONFIG },
        { "client_encoding", "LATIN1", KEEL_ERR_CONFIG },
        { "min_size", "1", KEEL_ERR_CONFIG },
        { "statement_cache_size", "0", KEEL_OK },
        { "statement_cache_size", "250", KEEL_OK },
        { "statement_cache_size", "-1", KEEL_ERR_CONFIG },
        { "statement_cache_size", "lots", KEEL_ERR_CONFIG },
        { "statement_cache_size", "", KEEL_ERR_CONFIG },
        { "statement_cache_size", "100001", KEEL_ERR_CONFIG },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        opts[0].key = (char *)cases[i].key;
        opts[0].value = (char *)cases[i].value;
        keel_error_clear(&err);
        keel_status st = keel__engine_postgresql.check_config(&dbc, &err);
        if (st != cases[i].want)
            fprintf(stderr, "  %s=%s: %s\n", cases[i].key, cases[i].value, err.message);
        CHECK_INT(st, cases[i].want);
    }
    opts[0].key = "bogus";
    opts[0].value = "1";
    keel__engine_postgresql.check_config(&dbc, &err);
    CHECK_STR(err.message, "databases.main.options.bogus: unknown PostgreSQL connection option");

    /* The same check runs when a configuration is validated. */
    keel_config *cfg = NULL;
    keel_config_new(&cfg, &err);
    keel_config_set_url(cfg, pg_url(), &err);
    keel_config_set(cfg, "databases.default.options.no_such_option", "1", &err);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.default.options.no_such_option");
    keel_config_free(cfg);
}

TEST(a_host_list_with_an_address_before_a_name_connects) {
    /* A literal address has no lookup and an empty hostaddr entry: the lists stay in step. */
    if (!strstr(pg_url(), "127.0.0.1")) {
        fprintf(stderr, "  # skipped: the test URL does not use 127.0.0.1\n");
        return;
    }
    const char *extra[] = { "databases.default.host", "127.0.0.1,localhost", NULL };
    keel_db *db = open_url(pg_url(), extra);
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(a_document_parameter_is_refused_with_a_data_error) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_value doc = { .type = KEEL_TYPE_DOCUMENT, .u.str = { "\x05\0\0\0\0", 5 } };
    keel_error e = q_fail(c, "SELECT $1", &doc, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.message,
              "parameter $1: a BSON document is not a PostgreSQL value; pass JSON instead");
    CHECK_INT(q_int(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(a_late_cancel_never_reaches_the_next_statement) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(pg_url(), extra);
    keel_conn *c = acquire(db);
    keel_loop *loop = keel_db_loop(db);
    int hits = 0;
    for (int i = 0; i < 40; i++) {
        cancel_ctx x;
        memset(&x, 0, sizeof x);
        x.conn = c;
        keel_error err;
        CHECK_INT(keel_conn_query(c, "SELECT pg_sleep(0.02)", NULL, 0, on_cancelled_done, &x, &err),
                  KEEL_OK);
        keel_timer *t = keel__timer_new(loop, on_cancel_timer, &x);
        keel__timer_arm(t, keel_now_ms() + 14 + i % 8);
        CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
        keel__timer_free(t);
        /* The statements that follow never meet the cancel request of the one before. */
        keel_error e = q_fail(c, "SELECT pg_sleep(0.02)", NULL, 0);
        hits += e.code != KEEL_OK;
        e = q_fail(c, "SELECT 1", NULL, 0);
        hits += e.code != KEEL_OK;
    }
    CHECK_INT(hits, 0);
    keel_conn_release(c);
    keel_db_close(db);
}

/* Named statements of this session that keel's cache prepared. */
static int64_t keel_statements(keel_conn *c) {
    return q_int(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'keel_s%'");
}

/* How many statements of this session were prepared from exactly this text. */
static int64_t prepared_as(keel_conn *c, const char *sql) {
    keel_value v = keel_text(sql);
    keel_result *r =
        q(c, "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", &v, 1);
    const keel_value *n = keel_result_value(r, 0, 0);
    int64_t out = n && n->type == KEEL_TYPE_INT ? n->u.i64 : -1;
    keel_result_free(r);
    return out;
}

/* A db whose PostgreSQL connections keep at most size prepared statements ("0": none). */
static keel_db *open_db_cache(const char *size) {
    const char *extra[] = { "databases.default.options.statement_cache_size", size, NULL };
    return open_url(pg_url(), extra);
}

TEST(a_statement_run_twice_is_prepared_once) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    CHECK_INT(prepared_as(c, "SELECT 41 + 1"), 1);

    /* The parameter types are part of the key: an int and a text tuple need two statements. */
    const char *sql = "SELECT $1::text AS v";
    keel_value i = keel_int(7), t = keel_text("7");
    for (int k = 0; k < 3; k++) {
        keel_result *r = q(c, sql, &i, 1);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "7", 1));
        keel_result_free(r);
        r = q(c, sql, &t, 1);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "7", 1));
        keel_result_free(r);
    }
    CHECK_INT(prepared_as(c, sql), 2);

    /* Bytes parameters go through the cache too. */
    keel_value b = keel_bytes("\x00\x01\xff", 3);
    keel_result *r = q(c, "SELECT length($1::bytea)", &b, 1);
    const keel_value *v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 3);
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(cache_size_zero_uses_no_named_statements) {
    keel_db *db = open_db_cache("0");
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_value i = keel_int(5);
    for (int k = 0; k < 3; k++) {
        CHECK_INT(q_int(c, "SELECT 2 + 2"), 4);
        keel_result *r = q(c, "SELECT $1::int8 * 2", &i, 1);
        const keel_value *v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 10);
        keel_result_free(r);
    }
    CHECK_INT(q_int(c, "SELECT count(*) FROM pg_prepared_statements"), 0);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(lru_eviction_deallocates_and_the_count_stays_within_the_size) {
    keel_db *db = open_db_cache("3");
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    char sql[64];
    for (int k = 0; k < 20; k++) {
        snprintf(sql, sizeof sql, "SELECT %d AS n", k);
        CHECK_INT(q_int(c, sql), k);
        CHECK(keel_statements(c) <= 3);
    }
    /* The counting statement is one of the three; the rest were deallocated. */
    CHECK_INT(keel_statements(c), 3);
    /* An evicted statement is prepared again under a new name and still answers. */
    CHECK_INT(q_int(c, "SELECT 0 AS n"), 0);
    CHECK_INT(q_int(c, "SELECT 0 AS n"), 0);
    CHECK_INT(prepared_as(c, "SELECT 0 AS n"), 1);
    CHECK(keel_statements(c) <= 3);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(alter_table_between_executions_is_transparent) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    keel_result_free(q(c, "DROP TABLE IF EXISTS keel_pgcache_alt", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE keel_pgcache_alt (a int)", NULL, 0));
    keel_result_free(q(c, "INSERT INTO keel_pgcache_alt VALUES (1)", NULL, 0));
    keel_value one = keel_int(1);
    const char *by_key = "SELECT * FROM keel_pgcache_alt WHERE a = $1";
    for (int k = 0; k < 2; k++) {
        keel_result *r = q(c, "SELECT * FROM keel_pgcache_alt", NULL, 0);
        CHECK(r && keel_result_ncols(r) == 1);
        keel_result_free(r);
        r = q(c, by_key, &one, 1);
        CHECK(r && keel_result_ncols(r) == 1 && keel_result_nrows(r) == 1);
        keel_result_free(r);
    }
    keel_result_free(q(c, "ALTER TABLE keel_pgcache_alt ADD COLUMN b text DEFAULT 'x'", NULL, 0));
    keel_result *r = q(c, "SELECT * FROM keel_pgcache_alt", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 2);
    if (r)
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "x", 1));
    keel_result_free(r);
    r = q(c, by_key, &one, 1);
    CHECK(r && keel_result_ncols(r) == 2 && keel_result_nrows(r) == 1);
    keel_result_free(r);
    CHECK_INT(prepared_as(c, "SELECT * FROM keel_pgcache_alt"), 1);

    /* Inside a transaction the error has already aborted it, so it is reported; after the
     * rollback the statement is prepared afresh. */
    keel_result_free(q(c, "ALTER TABLE keel_pgcache_alt ADD COLUMN c int", NULL, 0));
    keel_result_free(q(c, "BEGIN", NULL, 0));
    keel_error e = q_fail(c, "SELECT * FROM keel_pgcache_alt", NULL, 0);
    CHECK_STR(e.sqlstate, "0A000");
    keel_result_free(q(c, "ROLLBACK", NULL, 0));
    r = q(c, "SELECT * FROM keel_pgcache_alt", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 3);
    keel_result_free(r);
    CHECK_INT(prepared_as(c, "SELECT * FROM keel_pgcache_alt"), 1);
    keel_result_free(q(c, "DROP TABLE keel_pgcache_alt", NULL, 0));
    CHECK(keel_statements(c) <= 100);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(scripts_stay_on_the_simple_protocol_and_semicolons_are_safe) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    for (int k = 0; k < 2; k++) {
        CHECK_INT(q_int(c, "SELECT 1; SELECT 2"), 2);
        keel_result *r = q(c, "SELECT ';' AS s", NULL, 0);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, ";", 1));
        keel_result_free(r);
        CHECK_INT(q_int(c, "SELECT 3;  \n"), 3);
    }
    CHECK_INT(prepared_as(c, "SELECT 1; SELECT 2"), 0);
    CHECK_INT(prepared_as(c, "SELECT 3;  \n"), 1);
    /* Statements that cannot be prepared with parameters fail as they did unprepared. */
    keel_value one = keel_int(1);
    keel_error e = q_fail(c, "SELECT $1; SELECT 2", &one, 1);
    CHECK_STR(e.sqlstate, "42601");
    CHECK_INT(q_int(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(errors_and_rollback_leave_the_cache_usable) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    const char *sql = "SELECT 10 / $1::int8";
    keel_value two = keel_int(2), zero = keel_int(0);
    keel_result *r = q(c, sql, &two, 1);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 5);
    keel_result_free(r);
    keel_error e = q_fail(c, sql, &zero, 1);
    CHECK_STR(e.sqlstate, "22012");

    /* A statement that fails to parse is not kept. */
    int64_t before = keel_statements(c);
    e = q_fail(c, "SELEC 1", NULL, 0);
    CHECK_STR(e.sqlstate, "42601");
    e = q_fail(c, "SELEC 1", NULL, 0);
    CHECK_STR(e.sqlstate, "42601");
    CHECK_INT(keel_statements(c), before);

    keel_result_free(q(c, "BEGIN", NULL, 0));
    r = q(c, sql, &two, 1);
    keel_result_free(r);
    e = q_fail(c, sql, &zero, 1);
    CHECK_STR(e.sqlstate, "22012");
    e = q_fail(c, sql, &two, 1);
    CHECK_STR(e.sqlstate, "25P02");
    e = q_fail(c, "SELECT 'never prepared'", NULL, 0);
    CHECK_STR(e.sqlstate, "25P02");
    keel_result_free(q(c, "ROLLBACK", NULL, 0));
    r = q(c, sql, &two, 1);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 5);
    keel_result_free(r);
    CHECK_INT(prepared_as(c, sql), 1);
    CHECK_INT(prepared_as(c, "SELECT 'never prepared'"), 0);

    /* Statements deallocated behind keel's back are prepared again transparently. */
    keel_result_free(q(c, "DEALLOCATE ALL", NULL, 0));
    r = q(c, sql, &two, 1);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 5);
    keel_result_free(r);
    CHECK_INT(prepared_as(c, sql), 1);

    /* A connection reset by the pool (released inside a transaction) keeps its statements. */
    keel_result_free(q(c, "BEGIN", NULL, 0));
    keel_conn_release(c);
    c = acquire(db);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
        r = q(c, sql, &two, 1);
        CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 5);
        keel_result_free(r);
        CHECK_INT(prepared_as(c, sql), 1);
        keel_conn_release(c);
    }
    keel_db_close(db);
}

/* ---- bulk loads (keel_conn_copy_in) ------------------------------------------------------ */

/* Loads rows with keel_conn_copy_in_sync; returns the rows loaded, or -1 (the error in *e). */
static int64_t copy_in(keel_conn *c, const char *schema, const char *table, const char *const *cols,
                       size_t ncols, const keel_value *rows, size_t nrows, keel_error *e) {
    int64_t loaded = -1;
    keel_error local;
    keel_error_clear(e ? e : &local);
    if (keel_conn_copy_in_sync(c, schema, table, cols, ncols, rows, nrows, &loaded,
                               e ? e : &local) != KEEL_OK)
        return -1;
    return loaded;
}

/* The text of the single value a query returns ("" when none). */
static void q_text(keel_conn *c, const char *sql, char *out, size_t size) {
    keel_result *r = q(c, sql, NULL, 0);
    const keel_value *v = keel_result_value(r, 0, 0);
    snprintf(out, size, "%.*s", v && v->type == KEEL_TYPE_TEXT ? (int)v->u.str.len : 0,
             v && v->type == KEEL_TYPE_TEXT ? v->u.str.ptr : "");
    keel_result_free(r);
}

TEST(copy_in_loads_every_type_in_binary) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TYPE IF EXISTS cp_mood CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE TYPE cp_mood AS ENUM ('sad', 'ok')", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TEMP TABLE cp_types (b bool, i2 int2, i4 int4, i8 int8, o oid, "
                       "f4 float4, f8 float8, n numeric, n2 numeric(10,3), t text, vc "
                       "varchar(20), ch char(3), by bytea, d date, tm time, ts timestamp, "
                       "tz timestamptz, u uuid, u2 uuid, j json, jb jsonb, e cp_mood)",
                       NULL, 0));
    const unsigned char uuid[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                     0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    const char *utf8 = "\xc3\xbc\xc3\xb1\xc3\xaf \xe2\x82\xac";
    keel_value rows[2 * 22] = {
        keel_bool(1),
        keel_int(-32768),
        keel_int(2147483647),
        keel_int(-9000000000LL),
        keel_int(4000000000LL),
        keel_float(1.5),
        keel_float(-2.5e-3),
        keel_numeric("-123.4500"),
        keel_numeric("3.14159"),
        keel_text(utf8),
        keel_text("short"),
        keel_text("ab"),
        keel_bytes("\0\1\2", 3),
        keel_date(-3000),
        keel_time(3723000004LL),
        keel_timestamp(951782400000000LL),
        keel_timestamptz(-86400000001LL),
        keel_uuid(uuid),
        keel_text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        keel_json("[true, null]"),
        keel_json("{\"k\": \"v\"}"),
        keel_text("ok"),
    };
    for (size_t i = 22; i < 44; i++)
        rows[i] = keel_null();
    keel_error e;
    CHECK_INT(copy_in(c, NULL, "cp_types", NULL, 22, rows, 2, &e), 2);
    if (e.code)
        fprintf(stderr, "  copy: %s\n", e.message);
    char text[512];
    q_text(c,
           "SELECT concat_ws('|', b, i2, i4, i8, o, f4, f8, n, n2, t, vc, ch, encode(by, 'hex'), "
           "d, tm, ts, tz AT TIME ZONE 'UTC', u, u2, j, jb, e) FROM cp_types WHERE b",
           text, sizeof text);
    CHECK_STR(text, "t|-32768|2147483647|-9000000000|4000000000|1.5|-0.0025|-123.4500|3.142|"
                    "\xc3\xbc\xc3\xb1\xc3\xaf \xe2\x82\xac|short|ab |000102|1961-10-15|"
                    "01:02:03.000004|2000-02-29 00:00:00|1969-12-30 23:59:59.999999|"
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|"
                    "[true, null]|{\"k\": \"v\"}|ok");
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_types WHERE num_nulls(b, i2, i4, i8, o, f4, f8, "
                       "n, n2, t, vc, ch, by, d, tm, ts, tz, u, u2, j, jb, e) = 22"),
              1);

    /* numeric in every shape decimal text takes, and ints and floats into numeric. */
    keel_result_free(q(c, "CREATE TEMP TABLE cp_num (k int, n numeric)", NULL, 0));
    const char *const nums[] = { "0",        "-0.00",     "12345678.9", "1E+3",  "1.5E-7",
                                 "NaN",      "-123.4500", "0.0001",     "99999", "100000000",
                                 "Infinity", "-inf",      ".5",         "7.",    "1e-2" };
    const char *const want[] = { "0",        "0.00",      "12345678.9", "1000",  "0.00000015",
                                 "NaN",      "-123.4500", "0.0001",     "99999", "100000000",
                                 "Infinity", "-Infinity", "0.5",        "7",     "0.01" };
    size_t nn = sizeof nums / sizeof nums[0];
    keel_value nrows[2 * 17];
    for (size_t i = 0; i < nn; i++) {
        nrows[2 * i] = keel_int((int64_t)i);
        nrows[2 * i + 1] = keel_numeric(nums[i]);
    }
    nrows[2 * nn] = keel_int((int64_t)nn);
    nrows[2 * nn + 1] = keel_int(-42);
    nrows[2 * nn + 2] = keel_int((int64_t)nn + 1);
    nrows[2 * nn + 3] = keel_float(0.1);
    CHECK_INT(copy_in(c, NULL, "cp_num", NULL, 2, nrows, nn + 2, &e), (int64_t)nn + 2);
    for (size_t i = 0; i < nn + 2; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT n::text FROM cp_num WHERE k = %zu", i);
        q_text(c, sql, text, sizeof text);
        CHECK_STR(text, i < nn ? want[i] : i == nn ? "-42" : "0.1");
    }
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(copy_in_names_columns_schemas_and_quoted_identifiers) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP SCHEMA IF EXISTS \"Copy \"\"Schema\" CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE SCHEMA \"Copy \"\"Schema\"", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE \"Copy \"\"Schema\".\"Mixed Table\" (id serial, "
                       "\"Name Col\" text, qty int DEFAULT 7, twice int GENERATED ALWAYS AS "
                       "(qty * 2) STORED)",
                       NULL, 0));
    const char *cols[] = { "Name Col" };
    keel_value rows[2] = { keel_text("a"), keel_text("b") };
    keel_error e;
    CHECK_INT(copy_in(c, "Copy \"Schema", "Mixed Table", cols, 1, rows, 2, &e), 2);
    CHECK_INT(q_int(c, "SELECT sum(qty + twice + id) FROM \"Copy \"\"Schema\".\"Mixed Table\""),
              7 + 14 + 1 + 7 + 14 + 2);
    /* Every column but the generated one when no list is given. */
    keel_value all[3] = { keel_int(10), keel_text("c"), keel_int(1) };
    CHECK_INT(copy_in(c, "Copy \"Schema", "Mixed Table", NULL, 3, all, 1, &e), 1);
    CHECK_INT(q_int(c, "SELECT twice FROM \"Copy \"\"Schema\".\"Mixed Table\" WHERE id = 10"), 2);
    /* Without a schema the search path decides; nothing to load still checks the table. */
    keel_result_free(q(c, "SET search_path = \"Copy \"\"Schema\", public", NULL, 0));
    CHECK_INT(copy_in(c, NULL, "Mixed Table", cols, 1, NULL, 0, &e), 0);
    CHECK_INT(copy_in(c, NULL, "Mixed Table", NULL, 0, NULL, 0, &e), 0);
    keel_result_free(q(c, "RESET search_path", NULL, 0));
    CHECK_INT(copy_in(c, NULL, "Mixed Table", cols, 1, NULL, 0, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42P01");
    keel_result_free(q(c, "DROP SCHEMA \"Copy \"\"Schema\" CASCADE", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(copy_in_errors_name_what_was_wrong_and_load_nothing) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(
        q(c, "CREATE TEMP TABLE cp_err (id int8 PRIMARY KEY, qty int2, t text)", NULL, 0));
    keel_value rows[9] = { keel_int(1), keel_int(5), keel_text("x"),     keel_int(2),   keel_int(6),
                           keel_null(), keel_int(3), keel_text("seven"), keel_text("z") };
    keel_error e;
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 3, rows, 3, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_CONTAINS(e.message, "row 2, column \"qty\" (smallint)");
    CHECK_CONTAINS(e.message, "a text value");
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_err"), 0);

    rows[7] = keel_int(70000);
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 3, rows, 3, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_CONTAINS(e.message, "70000 is out of range for type smallint");
    rows[7] = keel_int(7);
    rows[8] = keel_textn("a\0b", 3);
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 3, rows, 3, &e), -1);
    CHECK_CONTAINS(e.message, "NUL");

    /* Server-side failures: a duplicate key names the line of the data. */
    rows[8] = keel_text("z");
    rows[6] = keel_int(1);
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 3, rows, 3, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_STR(e.sqlstate, "23505");
    CHECK_CONTAINS(e.message, "line 3");
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_err"), 0);

    /* The rows and the table must agree; unknown tables and columns are the server's errors. */
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 2, rows, 1, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_PARAMETERS);
    CHECK_CONTAINS(e.message, "the table has 3 columns but each row has 2 values");
    CHECK_INT(copy_in(c, NULL, "cp_missing", NULL, 3, rows, 1, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42P01");
    CHECK_CONTAINS(e.message, "cp_missing");
    const char *cols[] = { "id", "nope" };
    CHECK_INT(copy_in(c, NULL, "cp_err", cols, 2, rows, 1, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42703");
    CHECK_CONTAINS(e.message, "nope");
    /* Bad arguments fail before anything is sent. */
    CHECK_INT(copy_in(c, NULL, "", NULL, 3, rows, 1, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_INVALID_ARGUMENT);
    const char *empty[] = { "" };
    CHECK_INT(copy_in(c, NULL, "cp_err", empty, 1, rows, 1, &e), -1);
    CHECK_INT(e.code, KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    CHECK_INT(copy_in(c, NULL, "cp_err", NULL, 3, rows + 3, 2, &e), 2);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(copy_in_is_part_of_the_transaction_and_loads_large_batches) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(
        q(c, "CREATE TEMP TABLE cp_big (id int8, name text, at timestamptz)", NULL, 0));
    size_t n = 100000;
    keel_value *rows = calloc(n * 3, sizeof *rows);
    char *names = malloc(n * 16);
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(names + i * 16, 16, "name %zu", i);
        rows[3 * i] = keel_int((int64_t)i);
        rows[3 * i + 1] = keel_textn(names + i * 16, (size_t)len);
        rows[3 * i + 2] = keel_timestamptz((int64_t)i * 1000000);
    }
    keel_error e;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &e), KEEL_OK);
    CHECK_INT(copy_in(c, NULL, "cp_big", NULL, 3, rows, n, &e), (int64_t)n);
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_big"), (int64_t)n);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &e), KEEL_OK);
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_big"), 0);
    CHECK_INT(copy_in(c, NULL, "cp_big", NULL, 3, rows, n, &e), (int64_t)n);
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_big WHERE at = to_timestamp(id) AND "
                       "name = 'name ' || id"),
              (int64_t)n);
    free(rows);
    free(names);
    keel_conn_release(c);
    keel_db_close(db);
}

static void on_copy_done(keel_result *res, const keel_error *err, void *arg) {
    on_cancelled_done(res, err, arg);
}

/* Starts a load, cancels it after 300 ms from a loop timer, returns the error. */
static keel_error copy_and_cancel(keel_db *db, keel_conn *c, const char *table,
                                  const keel_value *rows, size_t ncols, size_t nrows) {
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    x.conn = c;
    keel_error err;
    keel_status st =
        keel_conn_copy_in(c, NULL, table, NULL, ncols, rows, nrows, on_copy_done, &x, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        return err;
    keel_loop *loop = keel_db_loop(db);
    keel_timer *t = keel__timer_new(loop, on_cancel_timer, &x);
    keel__timer_arm(t, keel_now_ms() + 300);
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    keel__timer_free(t);
    return x.err;
}

TEST(copy_in_cancel_while_waiting_or_sending_loads_nothing) {
    const char *extra[] = { "databases.default.pool.max_size", "2", NULL };
    keel_db *db = open_url(pg_url(), extra);
    keel_conn *c = acquire(db), *other = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS cp_cancel", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE cp_cancel (id int8, pad text)", NULL, 0));
    /* Waiting for a lock before the server asks for data. */
    keel_result_free(q(other, "BEGIN", NULL, 0));
    keel_result_free(q(other, "LOCK TABLE cp_cancel IN ACCESS EXCLUSIVE MODE", NULL, 0));
    keel_value one[2] = { keel_int(1), keel_text("x") };
    keel_error e = copy_and_cancel(db, c, "cp_cancel", one, 2, 1);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    keel_result_free(q(other, "COMMIT", NULL, 0));
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_cancel"), 0);

    /* Sending data to a server that is slow to take it (a trigger sleeps on every row). */
    keel_result_free(q(c,
                       "CREATE FUNCTION pg_temp.cp_slow() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END$$",
                       NULL, 0));
    keel_result_free(q(c,
                       "CREATE TRIGGER cp_slow BEFORE INSERT ON cp_cancel FOR EACH ROW "
                       "EXECUTE FUNCTION pg_temp.cp_slow()",
                       NULL, 0));
    size_t n = 20000;
    char *pad = malloc(1024);
    memset(pad, 'p', 1024);
    keel_value *rows = calloc(n * 2, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        rows[2 * i] = keel_int((int64_t)i);
        rows[2 * i + 1] = keel_textn(pad, 1024);
    }
    int64_t t0 = keel_now_ms();
    e = copy_and_cancel(db, c, "cp_cancel", rows, 2, n);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK(keel_now_ms() - t0 < 10000);
    CHECK_INT(q_int(c, "SELECT count(*) FROM cp_cancel"), 0);
    CHECK_INT(copy_in(c, NULL, "cp_cancel", NULL, 2, rows, 3, &e), 3);
    keel_result_free(q(c, "DROP TABLE cp_cancel", NULL, 0));
    free(rows);
    free(pad);
    keel_conn_release(other);
    keel_conn_release(c);
    keel_db_close(db);
}

/* The test URL with its host replaced by host (the URL as is when it names no 127.0.0.1). */
static void pg_url_with_host(char *out, size_t size, const char *host) {
    const char *base = pg_url();
    const char *ip = strstr(base, "127.0.0.1");
    if (ip)
        snprintf(out, size, "%.*s%s%s", (int)(ip - base), base, host, ip + 9);
    else
        snprintf(out, size, "%s", base);
}

TEST(cancels_against_a_silent_server_hold_up_nothing_and_close_is_bounded) {
    char host[256];
    int port = 0;
    CHECK_INT(test_url_host_port(pg_url(), host, sizeof host, &port), 0);
    test_proxy *px = test_proxy_start(host, port ? port : 5432);
    char url[512], named[512];
    CHECK(px && test_proxy_url(px, pg_url(), url, sizeof url));
    if (!px)
        return;
    pg_url_with_host(named, sizeof named, "localhost");
    const char *extra[] = { "databases.default.pool.max_size",
                            "4",
                            "databases.lite.url",
                            "sqlite::memory:",
                            "databases.lite.pool.max_size",
                            "1",
                            "databases.named.url",
                            named,
                            NULL };
    keel_db *db = open_url(url, extra);
    enum { N = 3 };
    keel_conn *c[N];
    cancel_ctx x[N];
    keel_error err;
    for (int i = 0; i < N; i++) {
        c[i] = acquire(db);
        memset(&x[i], 0, sizeof x[i]);
        CHECK_INT(
            keel_conn_query(c[i], "SELECT pg_sleep(10)", NULL, 0, on_cancelled_done, &x[i], &err),
            KEEL_OK);
    }
    /* The server falls silent: the statements hang, and every cancel request (sent to the same
     * address) meets a host that accepts and never answers. */
    test_proxy_stall(px);
    for (int i = 0; i < N; i++)
        keel_conn_cancel(c[i]);

    watchdog(30, "an SQLite statement while cancel requests are stuck");
    int64_t t0 = keel_now_ms();
    keel_result *r = NULL;
    CHECK_INT(keel_db_query_sync(db, "lite", "SELECT 42", NULL, 0, &r, &err), KEEL_OK);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 42);
    keel_result_free(r);
    CHECK(keel_now_ms() - t0 < 5000);

    watchdog(30, "a new connection by host name while cancel requests are stuck");
    t0 = keel_now_ms();
    keel_conn *n = NULL;
    CHECK_INT(keel_db_acquire_sync(db, "named", &n, &err), KEEL_OK);
    CHECK_INT(q_int(n, "SELECT 7"), 7);
    keel_conn_release(n);
    CHECK(keel_now_ms() - t0 < 5000);

    watchdog(30, "keel_db_close with statements on a silent server");
    t0 = keel_now_ms();
    keel_db_close(db);
    int64_t took = keel_now_ms() - t0;
    watchdog(0, "");
    CHECK(took < 5000);
    for (int i = 0; i < N; i++) {
        CHECK_INT(x[i].done, 1);
        CHECK_INT(x[i].err.code, KEEL_ERR_CLOSED);
        keel_conn_release(c[i]);
    }
    test_proxy_free(px);
}

/* Active statements whose text holds marker, other than the asking session's own. */
static int64_t pg_running_with(keel_conn *mon, const char *marker) {
    keel_value v = keel_text(marker);
    keel_result *r = q(mon,
                       "SELECT count(*)::int8 FROM pg_stat_activity WHERE state = 'active' "
                       "AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                       &v, 1);
    const keel_value *n = keel_result_value(r, 0, 0);
    int64_t out = n && n->type == KEEL_TYPE_INT ? n->u.i64 : -1;
    keel_result_free(r);
    return out;
}

TEST(closing_the_db_cancels_a_statement_still_running_on_the_server) {
    char marker[64], sql[128];
    snprintf(marker, sizeof marker, "keel-close-%d-%lld", (int)getpid(), (long long)keel_now_ms());
    snprintf(sql, sizeof sql, "SELECT pg_sleep(30) /* %s */", marker);
    keel_db *mondb = open_db();
    keel_conn *mon = acquire(mondb);
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_query(c, sql, NULL, 0, on_cancelled_done, &x, &err), KEEL_OK);
    int64_t seen = 0;
    for (int i = 0; i < 100 && seen != 1; i++) {
        seen = pg_running_with(mon, marker);
        if (seen != 1)
            usleep(50000);
    }
    CHECK_INT(seen, 1);
    int64_t t0 = keel_now_ms();
    keel_db_close(db);
    CHECK(keel_now_ms() - t0 < 2000);
    CHECK_INT(x.err.code, KEEL_ERR_CLOSED);
    keel_conn_release(c);
    /* The statement stops on the server soon after, not when its 30 s are over. */
    for (int i = 0; i < 100 && seen != 0; i++) {
        seen = pg_running_with(mon, marker);
        if (seen != 0)
            usleep(50000);
    }
    CHECK_INT(seen, 0);
    keel_conn_release(mon);
    keel_db_close(mondb);
}

TEST(executemany_returning) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "CREATE TEMP TABLE rt (id int8 PRIMARY KEY, name text)", NULL, 0));
    check_many_returning(c);
    keel_conn_release(c);
    keel_db_close(db);
}

/*
 * keel writes a batch's messages itself (batch.c) and libpq is handed the session back after
 * it: the transaction state libpq reports (keel_conn_txn_status) follows what the batch did,
 * a batch in a failed block takes libpq's pipeline and fails alike, and 100,000 rows with
 * RETURNING come back in order.
 */
TEST(executemany_on_the_wire_keeps_libpq_in_step) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "CREATE TEMP TABLE wk (id int8 PRIMARY KEY)", NULL, 0));
    keel_value params[] = { keel_int(1), keel_int(2), keel_int(1) };
    keel_result *r = NULL;
    keel_error err;
    /* A batch that opens a block leaves the session in it, and one that ends it, out. */
    CHECK_INT(keel_conn_query_many_sync(c, "BEGIN", NULL, 1, 0, &r, &err), KEEL_OK);
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(keel_conn_query_many_sync(c, "INSERT INTO wk VALUES ($1)", params, 2, 1, &r, &err),
              KEEL_OK);
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    /* A row failing in the block fails the block, and libpq knows it. */
    keel_status st =
        keel_conn_query_many_sync(c, "INSERT INTO wk VALUES ($1)", params + 2, 1, 1, &r, &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK_CONTAINS(err.message, "row 0: duplicate key value");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_FAILED);
    st = keel_conn_query_many_sync(c, "INSERT INTO wk VALUES ($1)", params + 1, 2, 1, &r, &err);
    CHECK_INT(st == KEEL_OK, 0);
    CHECK_STR(err.sqlstate, "25P02");
    CHECK_INT(keel_conn_query_many_sync(c, "ROLLBACK", NULL, 1, 0, &r, &err), KEEL_OK);
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT count(*) FROM wk"), 0);

    size_t rows = 100000;
    keel_value *many = calloc(rows, sizeof *many);
    for (size_t i = 0; i < rows; i++)
        many[i] = keel_int((int64_t)i);
    st = keel_conn_query_many_sync(c, "INSERT INTO wk VALUES ($1) RETURNING id * 2", many, rows, 1,
                                   &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 100000);
    CHECK_INT(keel_result_nrows(r), 100000);
    int in_order = r && keel_result_nrows(r) == rows;
    for (size_t i = 0; in_order && i < rows; i++) {
        const keel_value *v = keel_result_value(r, i, 0);
        in_order = v->type == KEEL_TYPE_INT && v->u.i64 == (int64_t)(2 * i);
    }
    CHECK(in_order);
    keel_result_free(r);
    free(many);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(prepare_describes_a_statement) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TYPE IF EXISTS keel_mood CASCADE", NULL, 0));
    keel_result_free(q(c, "CREATE TYPE keel_mood AS ENUM ('ok', 'sad')", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TEMP TABLE pt (id int8 PRIMARY KEY, name text, price "
                       "numeric(10,2), at timestamptz, mood keel_mood, tags text[])",
                       NULL, 0));
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_prepare_sync(
        c, "SELECT id, name, price, at, mood, tags FROM pt WHERE id = $1 AND name <> $2", &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_nrows(r), 0);
    CHECK_INT(keel_result_ncols(r), 6);
    CHECK_STR(keel_result_colname(r, 0), "id");
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    CHECK_STR(keel_result_coltype_name(r, 0), "int8");
    CHECK_STR(keel_result_coltype_name(r, 1), "text");
    CHECK_INT(keel_result_coltype(r, 2), KEEL_TYPE_NUMERIC);
    CHECK_STR(keel_result_coltype_name(r, 2), "numeric");
    CHECK_INT(keel_result_coltype(r, 3), KEEL_TYPE_TIMESTAMPTZ);
    CHECK_STR(keel_result_coltype_name(r, 3), "timestamptz");
    /* A type keel has no name for is named by its OID. */
    int64_t mood = q_int(c, "SELECT 'keel_mood'::regtype::oid::int8");
    char oid[24];
    snprintf(oid, sizeof oid, "%lld", (long long)mood);
    CHECK_STR(keel_result_coltype_name(r, 4), oid);
    CHECK_STR(keel_result_coltype_name(r, 5), "text[]");
    CHECK_INT(keel_result_nparams(r), 2);
    CHECK_INT(keel_result_paramtype(r, 0), KEEL_TYPE_INT);
    CHECK_STR(keel_result_paramtype_name(r, 0), "int8");
    CHECK_INT(keel_result_paramtype(r, 1), KEEL_TYPE_TEXT);
    CHECK_STR(keel_result_paramtype_name(r, 1), "text");
    CHECK(keel_result_paramtype_name(r, 2) == NULL);
    keel_result_free(r);

    /* A statement without rows has no columns; the statement then runs as any other. */
    st = keel_conn_prepare_sync(c, "INSERT INTO pt (id, name) VALUES ($1, $2)", &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_ncols(r), 0);
    CHECK_INT(keel_result_nparams(r), 2);
    keel_result_free(r);
    keel_value p[] = { keel_int(1), keel_text("one") };
    keel_result_free(q(c, "INSERT INTO pt (id, name) VALUES ($1, $2)", p, 2));
    CHECK_INT(q_int(c, "SELECT count(*) FROM pt"), 1);

    /* What the server cannot prepare fails with its error; the connection stays usable. */
    r = NULL;
    st = keel_conn_prepare_sync(c, "SELECT * FROM no_such_table WHERE id = $1", &r, &err);
    CHECK_INT(st, KEEL_ERR_PROGRAMMING);
    CHECK(r == NULL);
    CHECK_STR(err.sqlstate, "42P01");
    CHECK_CONTAINS(err.message, "no_such_table");
    st = keel_conn_prepare_sync(c, "SELECT 1; SELECT 2", &r, &err);
    CHECK_INT(st, KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_result_free(q(c, "DROP TABLE pt", NULL, 0));
    keel_result_free(q(c, "DROP TYPE keel_mood", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(paused_stream_holds_one_batch) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
#define SQL_200K "SELECT n::int8 FROM generate_series(1, 200000) AS n"
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
#undef SQL_200K
#undef MAX_BATCH
    keel_conn_release(c);
    keel_db_close(db);
}

/* A string of several statements is not streamed: its last result is handed over in slices
 * once complete, and a pause holds the slices back just the same. */
TEST(paused_hand_over_of_a_whole_result) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    paused_run x;
    run_paused(db, c, "SELECT 1; SELECT n::int8 FROM generate_series(1, 5000) AS n", 0, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(x.rows, 5000);
    CHECK(x.in_order);
    CHECK_INT(x.while_paused, 0);
    CHECK(x.most_at_once <= 256);
    keel_result_free(x.res);
    run_paused(db, c, "SELECT 1; SELECT n::int8 FROM generate_series(1, 5000) AS n", 2, &x);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    CHECK(x.rows < 5000);
    keel_result_free(x.res);
    CHECK_INT(q_int(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

int main(void) {
    RUN(check_config_validates_options);
    RUN(scalar_types_round_trip_through_select);
    RUN(binary_parameters_keep_the_servers_checks);
    RUN(parameters_longer_than_libpq_can_carry_are_refused);
    RUN(server_values_without_a_keel_type_come_back_as_text);
    RUN(every_type_round_trips_through_a_table_including_nulls);
    RUN(ten_megabyte_bytea_round_trips);
    RUN(hundred_thousand_rows_decode);
    RUN(executemany_of_ten_thousand_rows);
    RUN(executemany_with_parameter_types_changing_between_rows);
    RUN(executemany_returning);
    RUN(executemany_on_the_wire_keeps_libpq_in_step);
    RUN(prepare_describes_a_statement);
    RUN(paused_stream_holds_one_batch);
    RUN(paused_hand_over_of_a_whole_result);
    RUN(multi_statement_simple_query_returns_the_last_rows);
    RUN(query_rows_streams_a_large_result_in_batches);
    RUN(query_rows_edge_cases);
    RUN(server_errors_map_to_statuses);
    RUN(postgresql_sqlstates_map_to_statuses);
    RUN(dead_server_fails_fast_without_leaking_the_password);
    RUN(connect_timeout_when_the_server_never_answers);
    RUN(host_names_are_resolved_and_options_reach_the_server);
    RUN(secrets_are_resolved_at_connect_time);
    RUN(transactions_commit_roll_back_and_use_savepoints);
    RUN(commit_of_a_failed_block_is_an_error_and_a_failed_savepoint_is_rolled_back);
    RUN(connection_released_inside_a_transaction_comes_back_clean);
    RUN(cancel_stops_a_running_query_and_the_connection_stays_usable);
    RUN(release_while_running_cancels_and_returns_the_connection);
    RUN(closing_the_db_while_a_query_runs_reports_closed);
    RUN(server_side_close_is_noticed);
    RUN(a_host_list_with_an_address_before_a_name_connects);
    RUN(a_document_parameter_is_refused_with_a_data_error);
    RUN(a_late_cancel_never_reaches_the_next_statement);
    RUN(a_statement_run_twice_is_prepared_once);
    RUN(cache_size_zero_uses_no_named_statements);
    RUN(lru_eviction_deallocates_and_the_count_stays_within_the_size);
    RUN(alter_table_between_executions_is_transparent);
    RUN(scripts_stay_on_the_simple_protocol_and_semicolons_are_safe);
    RUN(errors_and_rollback_leave_the_cache_usable);
    RUN(copy_in_loads_every_type_in_binary);
    RUN(copy_in_names_columns_schemas_and_quoted_identifiers);
    RUN(copy_in_errors_name_what_was_wrong_and_load_nothing);
    RUN(copy_in_is_part_of_the_transaction_and_loads_large_batches);
    RUN(copy_in_cancel_while_waiting_or_sending_loads_nothing);
    RUN(cancels_against_a_silent_server_hold_up_nothing_and_close_is_bounded);
    RUN(closing_the_db_cancels_a_statement_still_running_on_the_server);
    RUN(notifications_reach_the_handler_while_idle_and_after_an_operation);
    RUN(a_listening_connection_lost_while_idle_tells_its_handler_once);
    RUN(notify_handlers_are_refused_where_they_cannot_work);
    return TEST_SUMMARY();
}
