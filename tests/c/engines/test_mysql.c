/* tests/c/engines/test_mysql.c - the MySQL/MariaDB engine against a real server. */
#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <keel/keel.h>

#include "core/timeconv.h"
#include "engines/engine.h"
#include "loop/loop_int.h"
#include "test.h"
#include "support.h"
#include "support/proxy.h"

static keel_db *open_db(void) { return open_url(my_url(), NULL); }

/* The single integer a query returns, also when MySQL sends it as DECIMAL or text (SUM and
 * some counters do), or INT64_MIN. */
static int64_t q_num(keel_conn *c, const char *sql) {
    keel_result *res = q(c, sql, NULL, 0);
    const keel_value *v = keel_result_value(res, 0, 0);
    int64_t out = INT64_MIN;
    if (v && v->type == KEEL_TYPE_INT)
        out = v->u.i64;
    else if (v && (v->type == KEEL_TYPE_NUMERIC || v->type == KEEL_TYPE_TEXT))
        out = strtoll(v->u.str.ptr, NULL, 10);
    keel_result_free(res);
    return out;
}

static int64_t q_int_p(keel_conn *c, const char *sql, const keel_value *param) {
    keel_result *res = q(c, sql, param, 1);
    const keel_value *v = keel_result_value(res, 0, 0);
    int64_t out = v && v->type == KEEL_TYPE_INT ? v->u.i64 : INT64_MIN;
    keel_result_free(res);
    return out;
}

/* A session status counter of the connection (Questions, Com_stmt_execute…). */
static int64_t status_of(keel_conn *c, const char *name) {
    keel_result *res =
        q(c, "SHOW SESSION STATUS WHERE Variable_name = $1", (keel_value[]){ keel_text(name) }, 1);
    const keel_value *v = keel_result_value(res, 0, 1);
    int64_t out = v && v->type == KEEL_TYPE_TEXT ? strtoll(v->u.str.ptr, NULL, 10) : -1;
    keel_result_free(res);
    return out;
}

static const char *utf8 = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac "
                          "\xf0\x9f\x98\x80 \xf0\x9f\x8e\x89";

TEST(check_config_validates_options) {
    keel__option opts[2];
    keel__dbconfig dbc;
    memset(&dbc, 0, sizeof dbc);
    dbc.name = "main";
    dbc.engine = "mysql";
    dbc.options = opts;
    dbc.noptions = 1;
    keel_error err;
    const struct {
        const char *key, *value;
        keel_status want;
    } cases[] = {
        { "charset", "utf8mb4", KEEL_OK },
        { "charset", "latin1; DROP", KEEL_ERR_CONFIG },
        { "charset", "UTF8MB3", KEEL_OK },
        { "charset", "utf8", KEEL_OK },
        { "charset", "latin1", KEEL_ERR_CONFIG }, /* keel's text is UTF-8 */
        { "ssl_mode", "REQUIRED", KEEL_OK },
        { "ssl_mode", "preferred", KEEL_OK },
        { "ssl_mode", "verify-identity", KEEL_ERR_CONFIG }, /* needs ssl_ca */
        { "ssl_mode", "maybe", KEEL_ERR_CONFIG },
        { "ssl_mode", "${env:MYSQL_SSL_MODE}", KEEL_OK },
        { "ssl_ca", "/etc/ssl/ca.pem", KEEL_OK },
        { "ssl_cert", "/etc/ssl/client.pem", KEEL_ERR_CONFIG }, /* needs ssl_key */
        { "connect_timeout", "2.5", KEEL_OK },
        { "connect_timeout", "-1", KEEL_ERR_CONFIG },
        { "bogus", "1", KEEL_ERR_CONFIG },
        { "password", "x", KEEL_ERR_CONFIG },
        { "host", "x", KEEL_ERR_CONFIG },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        opts[0].key = (char *)cases[i].key;
        opts[0].value = (char *)cases[i].value;
        keel_error_clear(&err);
        keel_status st = keel__engine_mysql.check_config(&dbc, &err);
        if (st != cases[i].want)
            fprintf(stderr, "  %s=%s: %s\n", cases[i].key, cases[i].value, err.message);
        CHECK_INT(st, cases[i].want);
    }
    opts[0].key = "charset";
    opts[0].value = "latin1";
    keel__engine_mysql.check_config(&dbc, &err);
    CHECK_CONTAINS(err.message, "databases.main.options.charset");
    CHECK_CONTAINS(err.message, "always UTF-8");
    opts[0].key = "bogus";
    opts[0].value = "1";
    keel__engine_mysql.check_config(&dbc, &err);
    CHECK_STR(err.message, "databases.main.options.bogus: unknown MySQL option");
    CHECK_STR(err.engine, "mysql");

    /* Options that only make sense together. */
    dbc.noptions = 2;
    opts[0].key = "ssl_mode";
    opts[0].value = "VERIFY_IDENTITY";
    opts[1].key = "ssl_ca";
    opts[1].value = "/etc/ssl/ca.pem";
    CHECK_INT(keel__engine_mysql.check_config(&dbc, &err), KEEL_OK);
    opts[0].key = "ssl_cert";
    opts[0].value = "/c.pem";
    opts[1].key = "ssl_key";
    opts[1].value = "/k.pem";
    CHECK_INT(keel__engine_mysql.check_config(&dbc, &err), KEEL_OK);

    /* The same check runs when a configuration is validated, for both URL schemes. */
    const char *urls[] = { "mysql://u@db.example/app", "mariadb://u@db.example/app" };
    for (size_t i = 0; i < 2; i++) {
        keel_config *cfg = NULL;
        keel_config_new(&cfg, &err);
        CHECK_INT(keel_config_set_url(cfg, urls[i], &err), KEEL_OK);
        CHECK_INT(keel_config_validate(cfg, &err), KEEL_OK);
        CHECK_STR(keel_config_database_engine(cfg, "default"), "mysql");
        keel_config_set(cfg, "databases.default.options.no_such_option", "1", &err);
        CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
        CHECK_CONTAINS(err.message,
                       "databases.default.options.no_such_option: unknown MySQL option");
        keel_config_free(cfg);
    }
    keel_config *cfg = NULL;
    keel_config_new(&cfg, &err);
    CHECK_INT(keel_config_set_url(cfg, "mysql://u@h/app?charset=utf8mb4&ssl_mode=disabled", &err),
              KEEL_OK);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_OK);
    keel_config_free(cfg);
}

/* v is a duration (a TIME value beyond a time of day): an INTERVAL of micros alone. */
static int is_duration(const keel_value *v, int64_t micros) {
    return v && v->type == KEEL_TYPE_INTERVAL && v->u.interval.months == 0 &&
           v->u.interval.days == 0 && v->u.interval.micros == micros;
}

TEST(intervals_go_as_time_and_durations_come_back) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    if (!c) {
        keel_db_close(db);
        return;
    }
    /* Days and micros as sent (34 days 22:59:59.5 is 838:59:59.5); the binary protocol carries
     * the days apart from the hours, which take one byte. */
    keel_value iv = { .type = KEEL_TYPE_INTERVAL };
    iv.u.interval.days = -34;
    iv.u.interval.micros = -(INT64_C(22) * 3600 + 59 * 60 + 59) * 1000000 - 500000;
    keel_result *r = q(c, "SELECT CAST($1 AS TIME(6))", &iv, 1);
    CHECK(is_duration(keel_result_value(r, 0, 0), -INT64_C(3020399500000)));
    keel_result_free(r);
    iv.u.interval.days = 0;
    iv.u.interval.micros = INT64_C(3723000000); /* 01:02:03: a time of day */
    r = q(c, "SELECT CAST($1 AS TIME(6))", &iv, 1);
    const keel_value *v = keel_result_value(r, 0, 0);
    CHECK(v && v->type == KEEL_TYPE_TIME && v->u.micros == INT64_C(3723000000));
    keel_result_free(r);
    /* Beyond TIME's range, or with months: refused before anything is sent. */
    iv.u.interval.days = 35;
    keel_error e = q_fail(c, "SELECT $1", &iv, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK(strstr(e.message, "outside MySQL's TIME range") != NULL);
    iv.u.interval.days = 0;
    iv.u.interval.months = 1;
    e = q_fail(c, "SELECT $1", &iv, 1);
    CHECK(strstr(e.message, "an interval with months is not a MySQL value") != NULL);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(scalar_types_round_trip_through_select) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    if (!c) {
        keel_db_close(db);
        return;
    }
    CHECK_STR(keel_conn_engine(c), "mysql");
    keel_result *r;
    const keel_value *v;

    const int64_t ints[] = { 0, 1, -1, 42, INT64_MAX, INT64_MIN, 1234567890123LL };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        r = q(c, "SELECT $1 AS v", (keel_value[]){ keel_int(ints[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == ints[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
        CHECK_STR(keel_result_colname(r, 0), "v");
        CHECK_INT(keel_result_affected(r), -1);
        keel_result_free(r);
    }
    const double floats[] = { 0.1, -1.5e300, 5e-324, 1.0 / 3.0, 123456789.125, 1e22 };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        r = q(c, "SELECT $1", (keel_value[]){ keel_float(floats[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_FLOAT && v->u.f64 == floats[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_FLOAT);
        keel_result_free(r);
    }
    r = q(c, "SELECT $1", (keel_value[]){ keel_numeric("-12.3400") }, 1);
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_NUMERIC, "-12.3400", 8));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_NUMERIC);
    keel_result_free(r);

    r = q(c, "SELECT $1", (keel_value[]){ keel_text(utf8) }, 1);
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_TEXT, utf8, strlen(utf8)));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TEXT);
    keel_result_free(r);
    r = q(c, "SELECT $1, CHAR_LENGTH($1)", (keel_value[]){ keel_text("") }, 1);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "", 0));
    CHECK_INT(keel_result_value(r, 0, 1) ? keel_result_value(r, 0, 1)->u.i64 : -1, 0);
    keel_result_free(r);

    const unsigned char blob[] = { 0, 1, 2, 0x5c, 0x27, 0x7f, 0x80, 0xfe, 0xff, 0 };
    r = q(c, "SELECT $1", (keel_value[]){ keel_bytes(blob, sizeof blob) }, 1);
    v = keel_result_value(r, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_BYTES, (const char *)blob, sizeof blob));
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_BYTES);
    keel_result_free(r);

    const int32_t days[] = { 0, -1, 19723, 2932896, -700000 };
    for (size_t i = 0; i < sizeof days / sizeof days[0]; i++) {
        r = q(c, "SELECT $1", (keel_value[]){ keel_date(days[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_DATE && v->u.date == days[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_DATE);
        keel_result_free(r);
    }
    const int64_t times[] = { 0, 45296789012LL, 86399999999LL };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        r = q(c, "SELECT $1", (keel_value[]){ keel_time(times[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIME && v->u.micros == times[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TIME);
        keel_result_free(r);
    }
    const int64_t stamps[] = { 0, 1700000000123456LL, -123456789LL, 253402300799999999LL };
    for (size_t i = 0; i < sizeof stamps / sizeof stamps[0]; i++) {
        r = q(c, "SELECT $1", (keel_value[]){ keel_timestamp(stamps[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIMESTAMP && v->u.micros == stamps[i]);
        CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_TIMESTAMP);
        keel_result_free(r);
        /* TIMESTAMPTZ is sent as its UTC time and comes back as a TIMESTAMP in UTC. */
        r = q(c, "SELECT $1", (keel_value[]){ keel_timestamptz(stamps[i]) }, 1);
        v = keel_result_value(r, 0, 0);
        CHECK(v && v->type == KEEL_TYPE_TIMESTAMP && v->u.micros == stamps[i]);
        keel_result_free(r);
    }

    /* UUIDs are stored as CHAR(36) text and read back as text. */
    const unsigned char uuid[16] = { 0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                     0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00 };
    r = q(c, "SELECT $1", (keel_value[]){ keel_uuid(uuid) }, 1);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT,
                   "123e4567-e89b-12d3-a456-426614174000", 36));
    keel_result_free(r);

    r = q(c, "SELECT $1 AS a, $2 AS b, $1 AS c", (keel_value[]){ keel_int(7), keel_text("x") }, 2);
    CHECK(r && keel_result_ncols(r) == 3);
    CHECK(r && keel_result_value(r, 0, 2)->u.i64 == 7);
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "x", 1));
    keel_result_free(r);

    /* NULL parameters and NULL columns. */
    r = q(c, "SELECT NULL AS a, $1 AS b, CAST(NULL AS SIGNED) AS c", (keel_value[]){ keel_null() },
          1);
    CHECK(r && keel_result_value(r, 0, 0)->type == KEEL_TYPE_NULL &&
          keel_result_value(r, 0, 1)->type == KEEL_TYPE_NULL &&
          keel_result_value(r, 0, 2)->type == KEEL_TYPE_NULL);
    CHECK_INT(keel_result_coltype(r, 2), KEEL_TYPE_INT);
    keel_result_free(r);

    /* The text protocol (no parameters) decodes the same types. */
    r = q(c,
          "SELECT 42, -7.25e0, CAST(1.50 AS DECIMAL(5,2)), 'caf\xc3\xa9', x'00ff', "
          "DATE '2024-02-03', TIME '12:34:56.5', TIMESTAMP '2024-02-03 04:05:06.000007', "
          "18446744073709551615, CAST(-1 AS UNSIGNED) - 1, TIME '-01:00:00', TIME '100:00:00', "
          "NULL",
          NULL, 0);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keel_result_value(r, 0, 0)->u.i64, 42);
        CHECK(keel_result_value(r, 0, 1)->type == KEEL_TYPE_FLOAT &&
              keel_result_value(r, 0, 1)->u.f64 == -7.25);
        CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_NUMERIC, "1.50", 4));
        CHECK(same_str(keel_result_value(r, 0, 3), KEEL_TYPE_TEXT, "caf\xc3\xa9", 5));
        CHECK(same_str(keel_result_value(r, 0, 4), KEEL_TYPE_BYTES, "\0\xff", 2));
        CHECK(keel_result_value(r, 0, 5)->type == KEEL_TYPE_DATE &&
              keel_result_value(r, 0, 5)->u.date == 19756);
        CHECK(keel_result_value(r, 0, 6)->type == KEEL_TYPE_TIME &&
              keel_result_value(r, 0, 6)->u.micros == 45296500000LL);
        CHECK(keel_result_value(r, 0, 7)->type == KEEL_TYPE_TIMESTAMP &&
              keel_result_value(r, 0, 7)->u.micros == 1706933106000007LL);
        CHECK(same_str(keel_result_value(r, 0, 8), KEEL_TYPE_NUMERIC, "18446744073709551615", 20));
        CHECK(same_str(keel_result_value(r, 0, 9), KEEL_TYPE_NUMERIC, "18446744073709551614", 20));
        /* TIME values that are no time of day are durations: INTERVALs of micros. */
        CHECK(is_duration(keel_result_value(r, 0, 10), -3600000000LL));
        CHECK_INT(keel_result_coltype(r, 10), KEEL_TYPE_TIME);
        CHECK(is_duration(keel_result_value(r, 0, 11), 360000000000LL));
        CHECK(keel_result_value(r, 0, 12)->type == KEEL_TYPE_NULL);
    }
    keel_result_free(r);
    /* The same through the binary protocol (a parameter makes it a prepared statement). */
    r = q(c,
          "SELECT $1, 18446744073709551615, TIME '-01:00:00', TIME '100:00:00.25', "
          "CAST('0000-00-00' AS DATE)",
          (keel_value[]){ keel_int(1) }, 1);
    CHECK(r != NULL);
    if (r) {
        CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_NUMERIC, "18446744073709551615", 20));
        CHECK(is_duration(keel_result_value(r, 0, 2), -3600000000LL));
        CHECK(is_duration(keel_result_value(r, 0, 3), 360000250000LL));
    }
    keel_result_free(r);

    /* The session runs in UTC. */
    r = q(c, "SELECT @@session.time_zone, @@character_set_client, @@character_set_results", NULL,
          0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "+00:00", 6));
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, "utf8mb4", 7));
    CHECK(same_str(keel_result_value(r, 0, 2), KEEL_TYPE_TEXT, "utf8mb4", 7));
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

/* Checks row 0 of SELECT * FROM all_types (the non-NULL row). */
static void check_all_types_row(keel_result *r, const char *label) {
    const unsigned char uuid[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                     0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    char uuid_text[37];
    keel__format_uuid(uuid, uuid_text);
    const keel_type types[] = { KEEL_TYPE_INT,       KEEL_TYPE_BOOL,  KEEL_TYPE_INT,
                                KEEL_TYPE_INT,       KEEL_TYPE_FLOAT, KEEL_TYPE_NUMERIC,
                                KEEL_TYPE_TEXT,      KEEL_TYPE_TEXT,  KEEL_TYPE_BYTES,
                                KEEL_TYPE_DATE,      KEEL_TYPE_TIME,  KEEL_TYPE_TIMESTAMP,
                                KEEL_TYPE_TIMESTAMP, KEEL_TYPE_TEXT,  KEEL_TYPE_JSON,
                                KEEL_TYPE_INT,       KEEL_TYPE_INT,   KEEL_TYPE_BYTES,
                                KEEL_TYPE_TEXT,      KEEL_TYPE_BYTES };
    size_t ncols = sizeof types / sizeof types[0];
    CHECK_INT(keel_result_nrows(r), 2);
    CHECK_INT(keel_result_ncols(r), ncols);
    if (keel_result_nrows(r) != 2 || keel_result_ncols(r) != ncols) {
        fprintf(stderr, "  (%s)\n", label);
        return;
    }
    for (size_t i = 0; i < ncols; i++) {
        if (keel_result_coltype(r, i) != types[i])
            fprintf(stderr, "  %s: column %zu (%s) is %s\n", label, i, keel_result_colname(r, i),
                    keel_type_name(keel_result_coltype(r, i)));
        CHECK_INT(keel_result_coltype(r, i), types[i]);
        if (i > 0)
            CHECK(keel_result_value(r, 1, i)->type == KEEL_TYPE_NULL);
    }
    const keel_value *v = keel_result_row(r, 0);
    CHECK(v[1].type == KEEL_TYPE_BOOL && v[1].u.boolean);
    CHECK(v[2].type == KEEL_TYPE_INT && v[2].u.i64 == -9000000000LL);
    CHECK(v[3].type == KEEL_TYPE_INT && v[3].u.i64 == 77);
    CHECK(v[4].type == KEEL_TYPE_FLOAT && v[4].u.f64 == 2.5e-3);
    CHECK(same_str(&v[5], KEEL_TYPE_NUMERIC, "3.142", 5));
    CHECK(same_str(&v[6], KEEL_TYPE_TEXT, utf8, strlen(utf8)));
    CHECK(same_str(&v[7], KEEL_TYPE_TEXT, "short", 5));
    CHECK(same_str(&v[8], KEEL_TYPE_BYTES, "\0\1\2", 3));
    CHECK(v[9].type == KEEL_TYPE_DATE && v[9].u.date == -3000);
    CHECK(v[10].type == KEEL_TYPE_TIME && v[10].u.micros == 3723000004LL);
    CHECK(v[11].type == KEEL_TYPE_TIMESTAMP && v[11].u.micros == 951782400000000LL);
    CHECK(v[12].type == KEEL_TYPE_TIMESTAMP && v[12].u.micros == 1700000000000001LL);
    CHECK(same_str(&v[13], KEEL_TYPE_TEXT, uuid_text, 36));
    CHECK(same_str(&v[14], KEEL_TYPE_JSON, "[true, null]", 12));
    CHECK(same_str(&v[15], KEEL_TYPE_NUMERIC, "18446744073709551615", 20));
    CHECK(v[16].type == KEEL_TYPE_INT && v[16].u.i64 == 2024);
    CHECK(same_str(&v[17], KEEL_TYPE_BYTES, "\x05", 1));
    CHECK(same_str(&v[18], KEEL_TYPE_TEXT, "b", 1));
    CHECK(same_str(&v[19], KEEL_TYPE_BYTES, "ab\0\0", 4));
}

TEST(every_type_round_trips_through_a_table_including_nulls) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS all_types", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE all_types (id INT PRIMARY KEY, b BOOLEAN, i BIGINT, i4 INT, "
                       "f DOUBLE, n DECIMAL(10,3), t TEXT, vc VARCHAR(20), by_ BLOB, d DATE, "
                       "tm TIME(6), ts DATETIME(6), tz TIMESTAMP(6) NULL, u CHAR(36), j JSON, "
                       "ub BIGINT UNSIGNED, y YEAR, bt BIT(8), e ENUM('a','b'), bin BINARY(4)) "
                       "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    const unsigned char uuid[16] = { 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                     0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    keel_value row[20] = {
        keel_int(1),
        keel_bool(1),
        keel_int(-9000000000LL),
        keel_text("77"), /* text into an int column: the server converts it */
        keel_float(2.5e-3),
        keel_numeric("3.14159"),
        keel_text(utf8),
        keel_text("short"),
        keel_bytes("\0\1\2", 3),
        keel_date(-3000),
        keel_time(3723000004LL),
        keel_timestamp(951782400000000LL),
        keel_timestamptz(1700000000000001LL),
        keel_uuid(uuid),
        keel_json("[true, null]"),
        keel_numeric("18446744073709551615"),
        keel_int(2024),
        keel_bytes("\x05", 1),
        keel_text("b"),
        keel_bytes("ab", 2),
    };
    const char *insert = "INSERT INTO all_types VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,"
                         "$13,$14,$15,$16,$17,$18,$19,$20)";
    keel_result *r = q(c, insert, row, 20);
    CHECK(r != NULL);
    CHECK_INT(keel_result_affected(r), 1);
    CHECK_INT(keel_result_ncols(r), 0);
    keel_result_free(r);
    keel_value nulls[20];
    nulls[0] = keel_int(2);
    for (size_t i = 1; i < 20; i++)
        nulls[i] = keel_null();
    keel_result_free(q(c, insert, nulls, 20));

    /* Both protocols decode the table the same way. */
    r = q(c, "SELECT * FROM all_types ORDER BY id", NULL, 0);
    CHECK(r != NULL);
    if (r)
        check_all_types_row(r, "text protocol");
    keel_result_free(r);
    r = q(c, "SELECT * FROM all_types WHERE id >= $1 ORDER BY id", (keel_value[]){ keel_int(0) },
          1);
    CHECK(r != NULL);
    if (r)
        check_all_types_row(r, "binary protocol");
    keel_result_free(r);

    /* TIMESTAMP columns are read and written in UTC. */
    r = q(c, "SELECT UNIX_TIMESTAMP(tz) FROM all_types WHERE id = 1", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_NUMERIC, "1700000000.000001", 17));
    keel_result_free(r);

    /* A 4-byte UTF-8 character survives a utf8mb4 column, and NULLs come back as NULL. */
    r = q(c, "SELECT t, CHAR_LENGTH(t) FROM all_types WHERE t = $1",
          (keel_value[]){ keel_text(utf8) }, 1);
    CHECK(r && keel_result_nrows(r) == 1);
    CHECK(r && keel_result_value(r, 0, 1)->u.i64 == 20);
    keel_result_free(r);
    keel_result_free(q(c, "DROP TABLE all_types", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(ten_megabyte_blob_round_trips) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    int64_t max_packet = q_num(c, "SELECT @@max_allowed_packet");
    size_t n = 10u * 1024 * 1024;
    CHECK(max_packet > (int64_t)n + 1024);
    unsigned char *blob = malloc(n);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob[i] = (unsigned char)x;
    }
    keel_value p = keel_bytes(blob, n);
    /* Each placeholder sends its value, so a request carries the blob once. */
    keel_result *r = q(c, "SELECT $1", &p, 1);
    CHECK(r && same_str(keel_result_value(r, 0, 0), KEEL_TYPE_BYTES, (const char *)blob, n));
    keel_result_free(r);
    CHECK_INT(q_int_p(c, "SELECT LENGTH($1)", &p), (long long)n);
    keel_result_free(q(c, "DROP TABLE IF EXISTS big_blob", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE big_blob (id INT PRIMARY KEY, b LONGBLOB)", NULL, 0));
    keel_result_free(q(c, "INSERT INTO big_blob VALUES (1, $1)", &p, 1));
    r = q(c, "SELECT b FROM big_blob", NULL, 0); /* the text protocol */
    CHECK(r && same_str(keel_result_value(r, 0, 0), KEEL_TYPE_BYTES, (const char *)blob, n));
    keel_result_free(r);
    keel_result_free(q(c, "DROP TABLE big_blob", NULL, 0));
    free(blob);
    keel_conn_release(c);
    keel_db_close(db);
}

static void check_hundred_thousand(keel_result *r) {
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_INT(keel_result_nrows(r), 100000);
    CHECK_INT(keel_result_affected(r), -1);
    const keel_value *v = keel_result_row(r, 99999);
    CHECK(v && v[0].type == KEEL_TYPE_INT && v[0].u.i64 == 100000);
    CHECK(v && same_str(&v[1], KEEL_TYPE_TEXT, "row 100000", 10));
    CHECK(v && same_str(&v[2], KEEL_TYPE_NUMERIC, "50000.0", 7));
    CHECK(v && v[3].type == KEEL_TYPE_FLOAT && v[3].u.f64 == 0.25);
    int64_t sum = 0;
    for (size_t i = 0; i < keel_result_nrows(r); i++)
        sum += keel_result_value(r, i, 0)->u.i64;
    CHECK_INT(sum, 5000050000LL);
}

TEST(hundred_thousand_rows_decode) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "SELECT CAST(seq AS SIGNED) AS id, CONCAT('row ', seq) AS label, "
                       "seq * 0.5 AS half, 0.25e0 AS f FROM seq_1_to_100000",
                       NULL, 0);
    check_hundred_thousand(r);
    keel_result_free(r);
    r = q(c,
          "SELECT CAST(seq AS SIGNED) AS id, CONCAT('row ', seq) AS label, seq * 0.5 AS half, "
          "$1 AS f FROM seq_1_to_100000",
          (keel_value[]){ keel_float(0.25) }, 1);
    check_hundred_thousand(r);
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(executemany_of_ten_thousand_rows_in_few_round_trips) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS em", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE em (id BIGINT PRIMARY KEY, name VARCHAR(40), "
                       "data VARBINARY(8), at DATETIME(6), nothing INT) ENGINE=InnoDB "
                       "DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    size_t rows = 10000;
    keel_value *params = calloc(rows * 5, sizeof *params);
    char(*names)[32] = calloc(rows, sizeof *names);
    for (size_t i = 0; i < rows; i++) {
        snprintf(names[i], sizeof names[i], "name-%zu-\xc3\xa9\xf0\x9f\x98\x80", i);
        params[i * 5] = keel_int((int64_t)i);
        params[i * 5 + 1] = keel_text(names[i]);
        params[i * 5 + 2] = i % 7 ? keel_bytes(names[i], 4) : keel_null();
        params[i * 5 + 3] = keel_timestamp((int64_t)i * 1000001);
        params[i * 5 + 4] = keel_null();
    }
    int64_t questions = status_of(c, "Questions");
    int64_t executes = status_of(c, "Com_stmt_execute");
    keel_result *r = NULL;
    keel_error err;
    const char *insert = "INSERT INTO em VALUES ($1, $2, $3, $4, $5)";
    keel_status st = keel_conn_query_many_sync(c, insert, params, rows, 5, &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_affected(r), 10000);
    CHECK_INT(keel_result_nrows(r), 0);
    keel_result_free(r);
    /* Statements the server ran for the batch, not one per row: BEGIN, the bulk executions,
     * COMMIT, and the status query itself. */
    int64_t dq = status_of(c, "Questions") - questions;
    int64_t de = status_of(c, "Com_stmt_execute") - executes;
    fprintf(stderr, "  # executemany of %zu rows: %lld statements, %lld executions\n", rows,
            (long long)dq, (long long)de);
    CHECK(dq > 0 && dq < 10);
    CHECK(de > 0 && de < 10);
    CHECK_INT(q_num(c, "SELECT count(*) FROM em"), 10000);
    CHECK_INT(q_num(c, "SELECT sum(id) FROM em"), 49995000);
    CHECK_INT(q_num(c, "SELECT count(*) FROM em WHERE data IS NULL"), 1429);
    CHECK_INT(q_num(c, "SELECT count(*) FROM em WHERE nothing IS NULL"), 10000);
    r = q(c, "SELECT name, at FROM em WHERE id = 9999", NULL, 0);
    CHECK(r &&
          same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, names[9999], strlen(names[9999])));
    CHECK(r && keel_result_value(r, 0, 1)->u.micros == 9999LL * 1000001);
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* A failing row stops the batch, names its index, and the batch is all or nothing. */
    keel_result_free(q(c, "TRUNCATE em", NULL, 0));
    keel_result_free(q(c, "INSERT INTO em (id) VALUES (100005)", NULL, 0));
    params[17 * 5] = keel_int(100005);
    st = keel_conn_query_many_sync(c, insert, params, rows, 5, &r, &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK_STR(err.sqlstate, "23000");
    CHECK_STR(err.engine, "mysql");
    CHECK_CONTAINS(err.message, "row 17: Duplicate entry '100005'");
    CHECK_INT(q_num(c, "SELECT count(*) FROM em"), 1);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* Inside a transaction the batch runs under a savepoint: the transaction survives it. */
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO em (id) VALUES (200000)", NULL, 0));
    st = keel_conn_query_many_sync(c, insert, params, rows, 5, &r, &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK_CONTAINS(err.message, "row 17:");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(q_num(c, "SELECT count(*) FROM em"), 2);
    params[17 * 5] = keel_int(17);
    st = keel_conn_query_many_sync(c, insert, params, 100, 5, &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 100);
    keel_result_free(r);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(q_num(c, "SELECT count(*) FROM em"), 1);

    /* Mixed types in a column, a batch of one row, and statements without parameters. */
    keel_value mixed[6] = { keel_int(1), keel_text("a"), keel_text("2"),
                            keel_null(), keel_int(3),    keel_int(12345) };
    st = keel_conn_query_many_sync(c, "INSERT INTO em (id, name) VALUES ($1, $2)", mixed, 3, 2, &r,
                                   &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
    r = q(c, "SELECT name FROM em WHERE id = 3", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "12345", 5));
    keel_result_free(r);
    st = keel_conn_query_many_sync(c, insert, params + 5 * 50, 1, 5, &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 1);
    keel_result_free(r);
    st =
        keel_conn_query_many_sync(c, "UPDATE em SET name = 'x' WHERE id < 4", NULL, 3, 0, &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_affected(r), 9); /* three rows matched, three times */
    keel_result_free(r);
    /* A wrong value in one row: the row is named, nothing is kept. */
    keel_value bad[4] = { keel_int(500), keel_text("ok"), keel_int(501), keel_text("") };
    bad[3] = keel_textn("this name is much longer than forty characters, so it fails", 59);
    st = keel_conn_query_many_sync(c, "INSERT INTO em (id, name) VALUES ($1, $2)", bad, 2, 2, &r,
                                   &err);
    CHECK_INT(st, KEEL_ERR_DATA);
    CHECK_CONTAINS(err.message, "row 1: Data too long");
    CHECK_INT(q_num(c, "SELECT count(*) FROM em WHERE id IN (500, 501)"), 0);
    keel_result_free(q(c, "DROP TABLE em", NULL, 0));
    free(params);
    free(names);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(executemany_binds_every_type_in_bulk) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS bt", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE bt (id INT PRIMARY KEY, b BOOLEAN, i BIGINT, f DOUBLE, "
                       "n DECIMAL(10,3), t VARCHAR(50), by_ VARBINARY(10), d DATE, tm TIME(6), "
                       "ts DATETIME(6), tz DATETIME(6), u CHAR(36), j JSON) ENGINE=InnoDB "
                       "DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    const unsigned char u1[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
    const unsigned char u2[16] = { 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88,
                                   0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00 };
    keel_value rows[3][13] = {
        { keel_int(1), keel_bool(1), keel_int(INT64_MIN), keel_float(-0.125), keel_numeric("-1.5"),
          keel_text(utf8), keel_bytes("\0x\0", 3), keel_date(-719162), keel_time(1),
          keel_timestamp(-62135596800000000LL), keel_timestamptz(1), keel_uuid(u1),
          keel_json("{\"a\": 1}") },
        { keel_int(2), keel_null(), keel_null(), keel_null(), keel_null(), keel_null(), keel_null(),
          keel_null(), keel_null(), keel_null(), keel_null(), keel_null(), keel_null() },
        { keel_int(3), keel_bool(0), keel_int(INT64_MAX), keel_float(1e300),
          keel_numeric("9999999.999"), keel_text(""), keel_bytes("", 0), keel_date(2932896),
          keel_time(86399999999LL), keel_timestamp(253402300799999999LL), keel_timestamptz(-1),
          keel_uuid(u2), keel_json("[]") },
    };
    keel_result *r = NULL;
    keel_error err;
    int64_t executes = status_of(c, "Com_stmt_execute");
    keel_status st = keel_conn_query_many_sync(
        c, "INSERT INTO bt VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)", &rows[0][0], 3, 13,
        &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
    CHECK_INT(status_of(c, "Com_stmt_execute") - executes, 2); /* one bulk, one status query */
    r = q(c, "SELECT * FROM bt ORDER BY id", NULL, 0);
    CHECK(r && keel_result_nrows(r) == 3);
    if (r && keel_result_nrows(r) == 3) {
        const keel_value *v = keel_result_row(r, 0);
        CHECK(v[1].type == KEEL_TYPE_BOOL && v[1].u.boolean == 1);
        CHECK(v[2].type == KEEL_TYPE_INT && v[2].u.i64 == INT64_MIN);
        CHECK(v[3].type == KEEL_TYPE_FLOAT && v[3].u.f64 == -0.125);
        CHECK(same_str(&v[4], KEEL_TYPE_NUMERIC, "-1.500", 6));
        CHECK(same_str(&v[5], KEEL_TYPE_TEXT, utf8, strlen(utf8)));
        CHECK(same_str(&v[6], KEEL_TYPE_BYTES, "\0x\0", 3));
        CHECK(v[7].type == KEEL_TYPE_DATE && v[7].u.date == -719162);
        CHECK(v[8].type == KEEL_TYPE_TIME && v[8].u.micros == 1);
        CHECK(v[9].type == KEEL_TYPE_TIMESTAMP && v[9].u.micros == -62135596800000000LL);
        CHECK(v[10].type == KEEL_TYPE_TIMESTAMP && v[10].u.micros == 1);
        CHECK(same_str(&v[11], KEEL_TYPE_TEXT, "01020304-0506-0708-090a-0b0c0d0e0f10", 36));
        CHECK(same_str(&v[12], KEEL_TYPE_JSON, "{\"a\": 1}", 8));
        v = keel_result_row(r, 1);
        for (size_t i = 1; i < 13; i++)
            CHECK(v[i].type == KEEL_TYPE_NULL);
        v = keel_result_row(r, 2);
        CHECK(v[1].type == KEEL_TYPE_BOOL && v[1].u.boolean == 0);
        CHECK(v[2].type == KEEL_TYPE_INT && v[2].u.i64 == INT64_MAX);
        CHECK(v[3].type == KEEL_TYPE_FLOAT && v[3].u.f64 == 1e300);
        CHECK(same_str(&v[4], KEEL_TYPE_NUMERIC, "9999999.999", 11));
        CHECK(same_str(&v[5], KEEL_TYPE_TEXT, "", 0));
        CHECK(same_str(&v[6], KEEL_TYPE_BYTES, "", 0));
        CHECK(v[7].type == KEEL_TYPE_DATE && v[7].u.date == 2932896);
        CHECK(v[8].type == KEEL_TYPE_TIME && v[8].u.micros == 86399999999LL);
        CHECK(v[9].type == KEEL_TYPE_TIMESTAMP && v[9].u.micros == 253402300799999999LL);
        CHECK(v[10].type == KEEL_TYPE_TIMESTAMP && v[10].u.micros == -1);
        CHECK(same_str(&v[11], KEEL_TYPE_TEXT, "ffeeddcc-bbaa-9988-7766-554433221100", 36));
        CHECK(same_str(&v[12], KEEL_TYPE_JSON, "[]", 2));
    }
    keel_result_free(r);
    keel_result_free(q(c, "DROP TABLE bt", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(multi_statement_script_returns_the_last_rows) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result *r = q(c,
                       "DROP TABLE IF EXISTS ms; CREATE TABLE ms (a INT); "
                       "INSERT INTO ms VALUES (1), (2), (3); SELECT a FROM ms ORDER BY a; "
                       "UPDATE ms SET a = a + 1",
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
    r = q(c, "SELECT 1; SELECT 2 AS two, 'x' AS ex", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 2 && keel_result_value(r, 0, 0)->u.i64 == 2);
    keel_result_free(r);
    r = q(c, "", NULL, 0);
    CHECK(r && keel_result_ncols(r) == 0 && keel_result_affected(r) == -1);
    keel_result_free(r);
    r = q(c, "  /* nothing */ ", NULL, 0); /* MySQL answers a comment with an OK */
    CHECK(r && keel_result_ncols(r) == 0 && keel_result_affected(r) == 0);
    keel_result_free(r);
    /* An error in the middle stops the rest and is reported; the connection stays usable. */
    keel_error e = q_fail(c, "SELECT 1; SELECT * FROM no_such_table_here; DELETE FROM ms", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_INT(q_num(c, "SELECT count(*) FROM ms"), 1);
    /* A stored procedure's result sets through both protocols. */
    keel_result_free(q(c, "DROP PROCEDURE IF EXISTS two_sets", NULL, 0));
    keel_result_free(q(c,
                       "CREATE PROCEDURE two_sets(IN x INT) BEGIN SELECT x AS first; "
                       "SELECT x + 1 AS second; END",
                       NULL, 0));
    r = q(c, "CALL two_sets(5)", NULL, 0);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 6);
    keel_result_free(r);
    r = q(c, "CALL two_sets($1)", (keel_value[]){ keel_int(7) }, 1);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 8);
    CHECK_STR(keel_result_colname(r, 0), "second");
    keel_result_free(r);
    CHECK_INT(q_num(c, "SELECT 11"), 11);
    keel_result_free(q(c, "DROP PROCEDURE two_sets; DROP TABLE ms", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(server_errors_map_to_statuses) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e = q_fail(c, "SELEC 1", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42000");
    CHECK_STR(e.engine, "mysql");
    CHECK_STR(e.database, "default");
    CHECK_CONTAINS(e.message, "SQL syntax");
    e = q_fail(c, "SELEC $1", (keel_value[]){ keel_int(1) }, 1); /* fails at prepare */
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42000");

    e = q_fail(c, "SELECT * FROM no_such_table_here WHERE a = $1", (keel_value[]){ keel_int(1) },
               1);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42S02");
    e = q_fail(c, "SELECT no_such_column FROM DUAL", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_STR(e.sqlstate, "42S22");

    keel_result_free(q(c, "DROP TABLE IF EXISTS uv", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE uv (id INT PRIMARY KEY, small TINYINT, name VARCHAR(3) NOT "
                       "NULL DEFAULT '', d DATE) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    keel_result_free(q(c, "INSERT INTO uv (id) VALUES ($1)", (keel_value[]){ keel_int(1) }, 1));
    e = q_fail(c, "INSERT INTO uv (id) VALUES ($1)", (keel_value[]){ keel_int(1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_STR(e.sqlstate, "23000");
    CHECK_CONTAINS(e.message, "Duplicate entry '1' for key");
    e = q_fail(c, "INSERT INTO uv (id) VALUES (1)", NULL, 0); /* the same through text */
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);
    CHECK_STR(e.sqlstate, "23000");
    e = q_fail(c, "INSERT INTO uv (id, name) VALUES (2, $1)", (keel_value[]){ keel_null() }, 1);
    CHECK_INT(e.code, KEEL_ERR_INTEGRITY);

    e = q_fail(c, "INSERT INTO uv (id, small) VALUES (3, $1)", (keel_value[]){ keel_int(1000) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22003");
    e = q_fail(c, "INSERT INTO uv (id, small) VALUES (3, $1)", (keel_value[]){ keel_text("abc") },
               1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    e = q_fail(c, "INSERT INTO uv (id, name) VALUES (3, $1)", (keel_value[]){ keel_text("abcd") },
               1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.sqlstate, "22001");
    e = q_fail(c, "INSERT INTO uv (id, d) VALUES (3, $1)",
               (keel_value[]){ keel_text("2024-13-45") }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);

    /* Parameter counts, and a literal '?', are refused before anything is sent. */
    e = q_fail(c, "SELECT $1, $2", (keel_value[]){ keel_int(1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_PARAMETERS);
    e = q_fail(c, "SELECT $1, ?", (keel_value[]){ keel_int(1) }, 1);
    CHECK_INT(e.code, KEEL_ERR_PARAMETERS);
    e = q_fail(c, "SELECT $1", (keel_value[]){ keel_float(NAN) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_CONTAINS(e.message, "$1");
    e = q_fail(c, "SELECT $1", (keel_value[]){ keel_date(-800000) }, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);

    /* After all of that the connection is still good. */
    CHECK_INT(q_num(c, "SELECT count(*) FROM uv"), 1);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    keel_result_free(q(c, "DROP TABLE uv", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(statement_cache_closes_evicted_statements) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    int64_t prepares = status_of(c, "Com_stmt_prepare");
    int64_t closes = status_of(c, "Com_stmt_close");
    char sql[64];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(sql, sizeof sql, "SELECT $1 + %d", i);
            keel_result *r = q(c, sql, (keel_value[]){ keel_int(1) }, 1);
            CHECK(r && keel_result_value(r, 0, 0)->u.i64 == i + 1);
            keel_result_free(r);
        }
    }
    /* The same statement again and again is prepared once. */
    for (int i = 0; i < 10; i++)
        keel_result_free(q(c, "SELECT $1 + 99", (keel_value[]){ keel_int(1) }, 1));
    int64_t dp = status_of(c, "Com_stmt_prepare") - prepares;
    int64_t dc = status_of(c, "Com_stmt_close") - closes;
    /* Two status queries are prepared statements too. */
    CHECK(dp >= 200 && dp <= 203);
    CHECK(dc >= dp - 64 - 2 && dc <= dp - 64 + 1);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(dead_server_fails_fast_without_leaking_the_password) {
    keel_db *db = open_url("mysql://root:s3cr3t-pw@127.0.0.1:1/keel_test", NULL);
    CHECK(db != NULL);
    keel_conn *c = NULL;
    keel_error err;
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    CHECK_INT(st, KEEL_ERR_CONNECT);
    CHECK_STR(err.engine, "mysql");
    CHECK_STR(err.database, "default");
    CHECK_CONTAINS(err.message, "127.0.0.1");
    CHECK_CONTAINS(err.message, "port 1");
    CHECK(strstr(err.message, "s3cr3t-pw") == NULL);
    keel_db_close(db);

    /* A wrong password is a connect error that does not show the password either. */
    char url[512];
    const char *base = my_url(), *at = strchr(base + 8, '@');
    snprintf(url, sizeof url, "mysql://keel_nobody:s3cr3t-pw%s", at ? at : "@127.0.0.1/x");
    db = open_url(url, NULL);
    st = keel_db_acquire_sync(db, NULL, &c, &err);
    CHECK_INT(st, KEEL_ERR_CONNECT);
    CHECK_CONTAINS(err.message, "Access denied");
    CHECK(strstr(err.message, "s3cr3t-pw") == NULL);
    keel_db_close(db);
}

/* Open file descriptors of the process, to show a connection leaves none behind. */
static int open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void on_warm_done(keel_conn *conn, const keel_error *err, void *arg) {
    (void)conn;
    (void)err;
    (void)arg;
}

TEST(connect_timeout_when_the_server_never_answers) {
    int port = 0;
    int fd = silent_listener(&port);
    char url[128];
    snprintf(url, sizeof url, "mysql://root:pw@127.0.0.1:%d/keel_test?connect_timeout=0.5", port);
    keel_db *db = open_url(url, NULL);
    keel_conn *c = NULL;
    keel_error err;
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_TIMEOUT);
    CHECK(keel_now_ms() - t0 < 5000);
    CHECK_CONTAINS(err.message, "127.0.0.1");
    CHECK_CONTAINS(err.message, "timed out");
    keel_db_close(db);
    close(fd);

    /* An address that never answers the TCP handshake: the connect is abandoned mid-way (or
     * fails at once where there is no route). */
    int fds = open_fds();
    db = open_url("mysql://root@10.255.255.1:3306/keel_test?connect_timeout=0.3", NULL);
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    CHECK(st == KEEL_ERR_TIMEOUT || st == KEEL_ERR_CONNECT);
    keel_db_close(db);
    CHECK_INT(open_fds(), fds);

    /* The db closed while connects are in flight. */
    snprintf(url, sizeof url, "%s%cmin_size=3", my_url(), strchr(my_url(), '?') ? '&' : '?');
    db = open_url(url, NULL);
    CHECK_INT(keel_db_warm(db, NULL, on_warm_done, NULL, &err), KEEL_OK);
    keel_db_close(db);
    CHECK_INT(open_fds(), fds);
}

/* The test URL with its host (127.0.0.1) replaced; 0 when it has another host. */
static int url_with_host(char *out, size_t size, const char *host) {
    const char *base = my_url();
    const char *ip = strstr(base, "@127.0.0.1");
    snprintf(out, size, "%s", base);
    if (!ip)
        return 0;
    snprintf(out, size, "%.*s@%s%s", (int)(ip - base), base, host, ip + 10);
    return 1;
}

TEST(host_names_are_resolved_and_options_reach_the_server) {
    char url[512];
    url_with_host(url, sizeof url, "localhost");
    const char *extra[] = { "databases.default.options.charset", "utf8mb4",
                            "databases.default.options.ssl_mode", "PREFERRED", NULL };
    keel_db *db = open_url(url, extra);
    keel_conn *c = acquire(db);
    CHECK(c != NULL);
    keel_result *r = q(c, "SELECT @@character_set_connection, DATABASE()", NULL, 0);
    CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "utf8mb4", 7));
    /* The database of the test URL: the path after the last '/', up to any '?'. */
    const char *dbname = strrchr(my_url(), '/') + 1;
    CHECK(same_str(keel_result_value(r, 0, 1), KEEL_TYPE_TEXT, dbname, strcspn(dbname, "?")));
    keel_result_free(r);
    keel_conn_release(c);
    keel_db_close(db);

    /* A host starting with '/' is a Unix socket. */
    const char *sock = "/run/mysqld/mysqld.sock";
    if (access(sock, F_OK) == 0 && strstr(my_url(), "@127.0.0.1") && !strchr(my_url(), '?')) {
        url_with_host(url, sizeof url, "%2Frun%2Fmysqld%2Fmysqld.sock");
        db = open_url(url, NULL);
        c = acquire(db);
        CHECK(c != NULL);
        r = q(c, "SELECT @@session.time_zone, CONNECTION_ID() > 0", NULL, 0);
        CHECK(same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "+00:00", 6));
        keel_result_free(r);
        keel_conn_release(c);
        keel_db_close(db);
    }

    /* The mariadb:// scheme selects the same engine. */
    const char *base = my_url();
    snprintf(url, sizeof url, "mariadb%s", strstr(base, "://"));
    db = open_url(url, NULL);
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_STR(keel_conn_engine(c), "mysql");
    CHECK_INT(q_num(c, "SELECT 3"), 3);
    keel_conn_release(c);
    keel_db_close(db);

    /* An unknown host name fails with a connect error naming it. */
    if (url_with_host(url, sizeof url, "no-such-host.invalid")) {
        db = open_url(url, NULL);
        keel_error err;
        CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
        CHECK_CONTAINS(err.message, "no-such-host.invalid");
        keel_db_close(db);
    }
}

TEST(tls_required_fails_clearly_against_a_server_without_tls) {
    keel_db *admin = open_db();
    keel_conn *a = acquire(admin);
    keel_result *r = q(a, "SELECT @@have_ssl", NULL, 0);
    int has_tls = r && same_str(keel_result_value(r, 0, 0), KEEL_TYPE_TEXT, "YES", 3);
    keel_result_free(r);
    keel_conn_release(a);
    keel_db_close(admin);
    const char *extra[] = { "databases.default.options.ssl_mode", "REQUIRED", NULL };
    keel_db *db = open_url(my_url(), extra);
    keel_conn *c = NULL;
    keel_error err;
    keel_status st = keel_db_acquire_sync(db, NULL, &c, &err);
    if (has_tls) {
        CHECK_INT(st, KEEL_OK);
        r = q(c, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", NULL, 0);
        CHECK(r && keel_result_value(r, 0, 1)->u.str.len > 0);
        keel_result_free(r);
        keel_conn_release(c);
    } else {
        CHECK_INT(st, KEEL_ERR_CONNECT);
        CHECK_CONTAINS(err.message, "TLS");
    }
    keel_db_close(db);
    if (has_tls)
        return;
    /* VERIFY_IDENTITY with a host name connects on a worker thread (the certificate is checked
     * against the name); against this server it fails the same clear way. */
    char url[512];
    url_with_host(url, sizeof url, "localhost");
    const char *verify[] = { "databases.default.options.ssl_mode", "VERIFY_IDENTITY",
                             "databases.default.options.ssl_ca", "/nonexistent/ca.pem", NULL };
    db = open_url(url, verify);
    st = keel_db_acquire_sync(db, NULL, &c, &err);
    CHECK_INT(st, KEEL_ERR_CONNECT);
    CHECK_CONTAINS(err.message, "host localhost");
    CHECK_CONTAINS(err.message, "did not offer TLS");
    keel_db_close(db);
}

/* The password in the test URL (as written, up to 63 bytes), or "" when it has none. */
static void url_password(char *out, size_t size) {
    const char *u = strstr(my_url(), "://");
    const char *at = u ? strchr(u + 3, '@') : NULL;
    const char *colon = u ? strchr(u + 3, ':') : NULL;
    out[0] = '\0';
    if (at && colon && colon < at)
        snprintf(out, size, "%.*s", (int)(at - colon - 1), colon + 1);
}

TEST(secrets_are_resolved_at_connect_time) {
    const char *extra[] = { "databases.default.password", "${env:KEEL_TEST_MYSQL_SECRET}", NULL };
    keel_db *db = open_url(my_url(), extra);
    CHECK(db != NULL);
    unsetenv("KEEL_TEST_MYSQL_SECRET");
    keel_conn *c = NULL;
    keel_error err;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "KEEL_TEST_MYSQL_SECRET");
    char pw[64];
    url_password(pw, sizeof pw);
    setenv("KEEL_TEST_MYSQL_SECRET", pw, 1);
    CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_OK);
    CHECK_INT(q_num(c, "SELECT 1"), 1);
    keel_conn_release(c);
    keel_db_close(db);
    unsetenv("KEEL_TEST_MYSQL_SECRET");
}

TEST(transactions_commit_roll_back_and_use_savepoints) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error err;
    keel_result_free(q(c, "DROP TABLE IF EXISTS tx", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE tx (a INT) ENGINE=InnoDB", NULL, 0));
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    keel_result_free(q(c, "INSERT INTO tx VALUES ($1)", (keel_value[]){ keel_int(1) }, 1));
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_num(c, "SELECT count(*) FROM tx"), 0);

    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO tx VALUES (1)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_SAVEPOINT, 1, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO tx VALUES ($1)", (keel_value[]){ keel_int(2) }, 1));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_SAVEPOINT, 2, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO tx VALUES (3)", NULL, 0));
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 2, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK_TO, 1, &err), KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_RELEASE, 1, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_num(c, "SELECT count(*) FROM tx"), 1);

    /* MySQL has no failed transaction state: after an error the transaction goes on. */
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_error e = q_fail(c, "SELECT * FROM no_such_table_here", NULL, 0);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    e = q_fail(c, "RELEASE SAVEPOINT keel_sp_9", NULL, 0);
    CHECK(e.code != KEEL_OK);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_ROLLBACK, 0, &err), KEEL_OK);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    keel_result_free(q(c, "DROP TABLE tx", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(connection_released_inside_a_transaction_comes_back_clean) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(my_url(), extra);
    keel_conn *c = acquire(db);
    keel_error err;
    keel_result_free(q(c, "DROP TABLE IF EXISTS rel", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE rel (a INT) ENGINE=InnoDB", NULL, 0));
    int64_t id = q_num(c, "SELECT CONNECTION_ID()");
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO rel VALUES ($1)", (keel_value[]){ keel_int(1) }, 1));
    keel_conn_release(c);
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(q_num(c, "SELECT CONNECTION_ID()"), id); /* the same session, rolled back */
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_num(c, "SELECT count(*) FROM rel"), 0);
    keel_result_free(q(c, "DROP TABLE rel", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

typedef struct cancel_ctx {
    keel_conn *conn;
    int done;
    keel_error err;
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
    int64_t t0 = keel_now_ms();
    keel_error e = run_and_cancel(db, c, "SELECT SLEEP(10)", NULL, 1, 0, 0);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_STR(e.sqlstate, "70100");
    CHECK_CONTAINS(e.message, "interrupted");
    CHECK(keel_now_ms() - t0 < 5000);
    CHECK_INT(q_num(c, "SELECT 1"), 1);

    e = run_and_cancel(db, c, "SELECT SLEEP($1)", (keel_value[]){ keel_int(10) }, 1, 1, 0);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_INT(q_num(c, "SELECT 2"), 2);

    keel_value rows[3] = { keel_float(0), keel_float(10), keel_float(0) };
    e = run_and_cancel(db, c, "SELECT SLEEP($1)", rows, 3, 1, 1);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_CONTAINS(e.message, "row 1");
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_num(c, "SELECT 3"), 3);
    keel_conn_cancel(c); /* nothing runs: a no-op */
    CHECK_INT(q_num(c, "SELECT 4"), 4);
    CHECK(keel_now_ms() - t0 < 15000);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(release_while_running_cancels_and_returns_the_connection) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(my_url(), extra);
    keel_conn *c = acquire(db);
    int64_t id = q_num(c, "SELECT CONNECTION_ID()");
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_query(c, "SELECT SLEEP(10)", NULL, 0, on_cancelled_done, &x, &err),
              KEEL_OK);
    keel_conn_release(c);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    CHECK_INT(x.err.code, KEEL_ERR_CANCELLED);
    c = acquire(db);
    CHECK(c != NULL);
    CHECK_INT(q_num(c, "SELECT CONNECTION_ID()"), id);
    CHECK_INT(q_num(c, "SELECT 5"), 5);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(closing_the_db_while_a_query_runs_reports_closed) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_conn_query(c, "SELECT SLEEP($1)", (keel_value[]){ keel_float(0.5) }, 1,
                              on_cancelled_done, &x, &err),
              KEEL_OK);
    keel_db_close(db);
    CHECK_INT(x.done, 1);
    CHECK_INT(x.err.code, KEEL_ERR_CLOSED);
    keel_conn_release(c);
}

TEST(lost_connection_is_reported_and_discarded) {
    keel_db *db = open_db();
    keel_conn *a = acquire(db);
    keel_conn *b = acquire(db);
    CHECK(a && b && a != b);
    keel_pool_stats stats;
    keel_error err;

    /* An idle connection killed by the server is noticed and dropped from the pool. */
    int64_t id_a = q_num(a, "SELECT CONNECTION_ID()");
    keel_conn_release(a);
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.size, 2);
    keel_result_free(q(b, "KILL $1", (keel_value[]){ keel_int(id_a) }, 1));
    keel_result_free(q(b, "SELECT SLEEP(0.3)", NULL, 0)); /* runs the loop meanwhile */
    CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
    CHECK_INT(stats.size, 1);
    keel_conn_release(b);

    /* A leased connection killed under its holder fails with CONNECTION_LOST, whichever
     * protocol the next statement uses, and the pool discards it on release. */
    for (int prepared = 0; prepared < 2; prepared++) {
        a = acquire(db);
        b = acquire(db);
        keel_value id = keel_int(q_num(a, "SELECT CONNECTION_ID()"));
        keel_result_free(q(b, "KILL $1", &id, 1));
        keel_error e = prepared ? q_fail(a, "SELECT $1", &id, 1) : q_fail(a, "SELECT 1", NULL, 0);
        CHECK_INT(e.code, KEEL_ERR_CONNECTION_LOST);
        CHECK_STR(e.engine, "mysql");
        CHECK_INT(keel_conn_txn_status(a), KEEL_TXN_UNKNOWN);
        e = q_fail(a, "SELECT 1", NULL, 0);
        CHECK_INT(e.code, KEEL_ERR_CONNECTION_LOST);
        keel_conn_release(a);
        CHECK_INT(keel_db_pool_stats(db, NULL, &stats, &err), KEEL_OK);
        CHECK_INT(stats.size, 1);
        keel_conn_release(b);
    }

    /* A connection killed in the middle of a statement. */
    a = acquire(db);
    b = acquire(db);
    keel_value id = keel_int(q_num(a, "SELECT CONNECTION_ID()"));
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    CHECK_INT(keel_conn_query(a, "SELECT SLEEP(5)", NULL, 0, on_cancelled_done, &x, &err), KEEL_OK);
    keel_result_free(q(b, "KILL $1", &id, 1));
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x.done), KEEL_OK);
    CHECK_INT(x.err.code, KEEL_ERR_CONNECTION_LOST);
    keel_conn_release(a);
    keel_conn_release(b);

    keel_result *r = NULL;
    CHECK_INT(keel_db_query_sync(db, NULL, "SELECT 42", NULL, 0, &r, &err), KEEL_OK);
    CHECK(r && keel_result_value(r, 0, 0)->u.i64 == 42);
    keel_result_free(r);
    keel_db_close(db);
}

TEST(non_finite_decimals_and_documents_are_refused_before_sending) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    const char *bad[] = { "NaN", "Infinity", "-Infinity", "sNaN", "inf" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        keel_error e =
            q_fail(c, "SELECT $1 + $2", (keel_value[]){ keel_int(1), keel_numeric(bad[i]) }, 2);
        CHECK_INT(e.code, KEEL_ERR_DATA);
        CHECK_CONTAINS(e.message, "parameter $2");
        CHECK_STR(e.engine, "mysql");
        keel_result *res = NULL;
        keel_value rows[4] = { keel_int(1), keel_numeric("1.5"), keel_int(2),
                               keel_numeric(bad[i]) };
        CHECK_INT(keel_conn_query_many_sync(c, "SELECT $1 + $2", rows, 2, 2, &res, &e),
                  KEEL_ERR_DATA);
        CHECK_CONTAINS(e.message, "row 1: parameter $2");
    }
    keel_value doc = { .type = KEEL_TYPE_DOCUMENT, .u.str = { "\x05\0\0\0\0", 5 } };
    keel_error e = q_fail(c, "SELECT $1", &doc, 1);
    CHECK_INT(e.code, KEEL_ERR_DATA);
    CHECK_STR(e.message, "parameter $1: a BSON document is not a MySQL value; pass JSON instead");
    keel_result *res =
        q(c, "SELECT CAST($1 AS DECIMAL(10,2))", (keel_value[]){ keel_numeric("2.5") }, 1);
    const keel_value *v = keel_result_value(res, 0, 0);
    CHECK(same_str(v, KEEL_TYPE_NUMERIC, "2.50", 4));
    keel_result_free(res);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(a_cached_statement_reads_the_new_columns_after_alter_table) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(my_url(), extra);
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS keel_c_remeta", NULL, 0));
    keel_result_free(q(c, "CREATE TABLE keel_c_remeta (id BIGINT)", NULL, 0));
    keel_result_free(q(c, "INSERT INTO keel_c_remeta VALUES (1)", NULL, 0));
    /* The counter in the session variable tells how many times the statement really ran. */
    const char *sql = "SELECT *, @keel_runs := @keel_runs + 1 AS runs FROM keel_c_remeta "
                      "WHERE id = $1";
    keel_value one = keel_int(1);
    keel_result_free(q(c, "SET @keel_runs = 0", NULL, 0));
    keel_result *res = q(c, sql, &one, 1);
    CHECK_INT(keel_result_ncols(res), 2);
    keel_result_free(res);
    keel_result_free(q(c, "ALTER TABLE keel_c_remeta ADD COLUMN extra INT DEFAULT 7", NULL, 0));
    /* The server re-prepared the statement and sent the new columns: they are read as they
     * are, without running the statement a second time. */
    res = q(c, sql, &one, 1);
    CHECK(res != NULL);
    CHECK_INT(keel_result_ncols(res), 3);
    CHECK_INT(keel_result_nrows(res), 1);
    CHECK_STR(keel_result_colname(res, 1), "extra");
    const keel_value *v = keel_result_value(res, 0, 1);
    CHECK(v && v->type == KEEL_TYPE_INT && v->u.i64 == 7);
    keel_result_free(res);
    CHECK_INT(q_num(c, "SELECT @keel_runs"), 2);
    CHECK(status_of(c, "Com_stmt_reprepare") >= 1);
    /* The session is in step, and the statement is prepared afresh next time. */
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    res = q(c, sql, &one, 1);
    CHECK_INT(keel_result_ncols(res), 3);
    keel_result_free(res);
    keel_result_free(q(c, "ALTER TABLE keel_c_remeta DROP COLUMN extra", NULL, 0));
    res = q(c, sql, &one, 1);
    CHECK_INT(keel_result_ncols(res), 2);
    keel_result_free(res);
    CHECK_INT(q_int_p(c, "SELECT $1 + 1", &one), 2);
    keel_result_free(q(c, "DROP TABLE keel_c_remeta", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

/* Cancels after delay_ms; ends the batch's wait. */
static keel_error run_and_cancel_after(keel_db *db, keel_conn *c, const char *sql,
                                       const keel_value *params, size_t nrows, size_t nparams,
                                       int64_t delay_ms) {
    cancel_ctx x;
    memset(&x, 0, sizeof x);
    x.conn = c;
    keel_error err;
    CHECK_INT(keel_conn_query_many(c, sql, params, nrows, nparams, on_cancelled_done, &x, &err),
              KEEL_OK);
    keel_loop *loop = keel_db_loop(db);
    keel_timer *t = keel__timer_new(loop, on_cancel_timer, &x);
    keel__timer_arm(t, keel_now_ms() + delay_ms);
    CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
    keel__timer_free(t);
    return x.err;
}

TEST(a_cancelled_batch_stops_and_is_rolled_back) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS keel_c_cancel_batch", NULL, 0));
    keel_result_free(
        q(c, "CREATE TABLE keel_c_cancel_batch (id BIGINT PRIMARY KEY, v TEXT)", NULL, 0));
    size_t n = 200000;
    keel_value *rows = malloc(n * 2 * sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        rows[2 * i] = keel_int((int64_t)i);
        rows[2 * i + 1] = keel_text("vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
    }
    int64_t t0 = keel_now_ms();
    keel_error e = run_and_cancel_after(db, c, "INSERT INTO keel_c_cancel_batch VALUES ($1, $2)",
                                        rows, n, 2, 50);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK(keel_now_ms() - t0 < 3000);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);
    CHECK_INT(q_num(c, "SELECT COUNT(*) FROM keel_c_cancel_batch"), 0);
    /* Inside the caller's transaction, only the batch's savepoint is undone. */
    keel_error err;
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_BEGIN, 0, &err), KEEL_OK);
    keel_result_free(q(c, "INSERT INTO keel_c_cancel_batch VALUES (-1, 'kept')", NULL, 0));
    e = run_and_cancel_after(db, c, "INSERT INTO keel_c_cancel_batch VALUES ($1, $2)", rows, n, 2,
                             50);
    CHECK_INT(e.code, KEEL_ERR_CANCELLED);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_ACTIVE);
    CHECK_INT(q_num(c, "SELECT COUNT(*) FROM keel_c_cancel_batch"), 1);
    CHECK_INT(keel_conn_transaction_sync(c, KEEL_TXN_COMMIT, 0, &err), KEEL_OK);
    CHECK_INT(q_num(c, "SELECT COUNT(*) FROM keel_c_cancel_batch"), 1);
    free(rows);
    keel_result_free(q(c, "DROP TABLE keel_c_cancel_batch", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(a_late_cancel_never_reaches_the_next_statement) {
    const char *extra[] = { "databases.default.pool.max_size", "1", NULL };
    keel_db *db = open_url(my_url(), extra);
    keel_conn *c = acquire(db);
    keel_loop *loop = keel_db_loop(db);
    int hits = 0;
    for (int i = 0; i < 40; i++) {
        cancel_ctx x;
        memset(&x, 0, sizeof x);
        x.conn = c;
        keel_error err;
        CHECK_INT(keel_conn_query(c, "SELECT SLEEP(0.02)", NULL, 0, on_cancelled_done, &x, &err),
                  KEEL_OK);
        keel_timer *t = keel__timer_new(loop, on_cancel_timer, &x);
        keel__timer_arm(t, keel_now_ms() + 14 + i % 8);
        CHECK_INT(keel_loop_run(loop, &x.done), KEEL_OK);
        keel__timer_free(t);
        /* The statements that follow never meet the cancel request of the one before. */
        keel_error e = q_fail(c, "SELECT SLEEP(0.02)", NULL, 0);
        hits += e.code != KEEL_OK;
        e = q_fail(c, "SELECT 1", NULL, 0);
        hits += e.code != KEEL_OK;
    }
    CHECK_INT(hits, 0);
    keel_conn_release(c);
    keel_db_close(db);
}

/*
 * A man in the middle for one connection: it relays the server's greeting with the TLS flag
 * (CLIENT_SSL) cleared, as an attacker downgrading the connection would, then records what the
 * client sends and relays it to the server. With offer_tls it sets the flag instead and then
 * falls silent, as a server that hangs in the TLS handshake: it only records what the client
 * sends until the client closes the connection.
 */
typedef struct mitm {
    int listener, port;
    char host[256];
    int upstream_port;
    int offer_tls;
    unsigned char got[4096]; /* what the client sent after the greeting */
    size_t ngot;
    int greeting_relayed;
    int64_t client_closed_ms; /* offer_tls: when the client closed its end */
    pthread_t thread;
} mitm;

static int mitm_read_packet(int fd, unsigned char *buf, size_t cap, size_t *len) {
    size_t have = 0, want = 4;
    while (have < want) {
        ssize_t n = read(fd, buf + have, want - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        if (have == 4) {
            want = 4 + (size_t)(buf[0] | buf[1] << 8 | buf[2] << 16);
            if (want > cap)
                return -1;
        }
    }
    *len = have;
    return 0;
}

static void *mitm_main(void *arg) {
    mitm *m = arg;
    int client = accept(m->listener, NULL, NULL);
    if (client < 0)
        return NULL;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)m->upstream_port);
    inet_pton(AF_INET, m->host, &sin.sin_addr);
    unsigned char pkt[1024];
    size_t len;
    if (connect(server, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        mitm_read_packet(server, pkt, sizeof pkt, &len) == 0) {
        /* payload: protocol version, server version (NUL-ended), thread id (4), scramble (8),
         * filler (1), then the low two bytes of the capability flags. */
        unsigned char *p = pkt + 4;
        size_t off = 1 + strnlen((char *)p + 1, len - 5) + 1 + 4 + 8 + 1;
        if (4 + off + 2 <= len) {
            if (m->offer_tls)
                p[off + 1] |= 0x08; /* CLIENT_SSL is 0x0800 */
            else
                p[off + 1] &= (unsigned char)~0x08;
            m->greeting_relayed = write(client, pkt, len) == (ssize_t)len;
        }
        ssize_t got;
        while (m->offer_tls &&
               (got = read(client, m->got + m->ngot,
                           m->ngot < sizeof m->got ? sizeof m->got - m->ngot : 0)) > 0)
            m->ngot += (size_t)got;
        if (m->offer_tls)
            m->client_closed_ms = keel_now_ms();
        /* Whatever the client sends now is what a man in the middle would read. */
        ssize_t n;
        while (m->ngot < sizeof m->got &&
               (n = read(client, m->got + m->ngot, sizeof m->got - m->ngot)) > 0) {
            if (write(server, m->got + m->ngot, (size_t)n) != n)
                break;
            m->ngot += (size_t)n;
            /* Relay the server's answer, so that a client that went on gets its reply. */
            unsigned char reply[1024];
            size_t rlen;
            if (mitm_read_packet(server, reply, sizeof reply, &rlen) == 0 &&
                write(client, reply, rlen) != (ssize_t)rlen)
                break;
        }
    }
    close(server);
    close(client);
    return NULL;
}

static int mitm_start(mitm *m, int offer_tls) {
    memset(m, 0, sizeof *m);
    m->offer_tls = offer_tls;
    int port = 0;
    if (test_url_host_port(my_url(), m->host, sizeof m->host, &port) != 0)
        return -1;
    m->upstream_port = port ? port : 3306;
    m->listener = silent_listener(&m->port);
    return pthread_create(&m->thread, NULL, mitm_main, m);
}

static int bytes_contain(const unsigned char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; k && i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

TEST(required_tls_is_refused_before_credentials_reach_a_man_in_the_middle) {
    static const char *const modes[] = { "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY" };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        mitm m;
        CHECK_INT(mitm_start(&m, 0), 0);
        char url[256];
        snprintf(url, sizeof url,
                 "mysql://keel_mitm_user:keel_mitm_secret@127.0.0.1:%d/keel_mitm_db", m.port);
        /* The CA is never read: the connection ends before any TLS handshake. */
        const char *extra[] = { "databases.default.options.ssl_mode",
                                modes[i],
                                "databases.default.connect_timeout",
                                "5",
                                i ? "databases.default.options.ssl_ca" : NULL,
                                "/nonexistent/ca.pem",
                                NULL };
        keel_db *db = open_url(url, extra);
        keel_conn *c = NULL;
        keel_error err;
        watchdog(30, "a connect through a man in the middle");
        CHECK_INT(keel_db_acquire_sync(db, NULL, &c, &err), KEEL_ERR_CONNECT);
        keel_db_close(db);
        pthread_join(m.thread, NULL);
        watchdog(0, "");
        close(m.listener);
        CHECK(m.greeting_relayed);
        CHECK_CONTAINS(err.message, "did not offer TLS");
        CHECK_CONTAINS(err.message, modes[i]);
        CHECK_CONTAINS(err.message, "before the user name or password was sent");
        /* Nothing at all followed the greeting: no user name, no database, no password. */
        CHECK_INT(m.ngot, 0);
        CHECK(!bytes_contain(m.got, m.ngot, "keel_mitm_user"));
        CHECK(!bytes_contain(m.got, m.ngot, "keel_mitm_db"));
        CHECK(!bytes_contain(m.got, m.ngot, "keel_mitm_secret"));
    }
}

TEST(a_tls_handshake_with_a_silent_server_frees_its_thread) {
    mitm m;
    CHECK_INT(mitm_start(&m, 1), 0);
    char url[256];
    snprintf(url, sizeof url, "mysql://keel_mitm_user:keel_mitm_secret@127.0.0.1:%d/keel_mitm_db",
             m.port);
    const char *extra[] = { "databases.default.options.ssl_mode", "REQUIRED",
                            "databases.default.connect_timeout", "2", NULL };
    keel_db *db = open_url(url, extra);
    keel_conn *c = NULL;
    keel_error err;
    int64_t t0 = keel_now_ms();
    CHECK(keel_db_acquire_sync(db, NULL, &c, &err) != KEEL_OK);
    CHECK(keel_now_ms() - t0 < 5000);
    keel_db_close(db);
    /* The blocking handshake on the worker gives up by itself and closes its socket, rather
     * than waiting for the silent server as long as it keeps the connection open. */
    watchdog(30, "the TLS handshake's worker closing its socket");
    pthread_join(m.thread, NULL);
    watchdog(0, "");
    close(m.listener);
    CHECK(m.greeting_relayed);
    CHECK(m.ngot > 0); /* the request for TLS and the TLS hello */
    CHECK(m.client_closed_ms - t0 < 10000);
    CHECK(!bytes_contain(m.got, m.ngot, "keel_mitm_user"));
}

/* Running statements whose text holds marker, other than the asking session's own. */
static int64_t my_running_with(keel_conn *mon, const char *marker) {
    keel_value v = keel_text(marker);
    keel_result *r = q(mon,
                       "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                       "WHERE ID <> CONNECTION_ID() AND COMMAND = 'Query' AND INSTR(INFO, $1) > 0",
                       &v, 1);
    const keel_value *n = keel_result_value(r, 0, 0);
    int64_t out = n && n->type == KEEL_TYPE_INT ? n->u.i64 : -1;
    keel_result_free(r);
    return out;
}

TEST(closing_the_db_kills_a_statement_still_running_on_the_server) {
    char marker[64], sql[128];
    snprintf(marker, sizeof marker, "keel-close-%d-%lld", (int)getpid(), (long long)keel_now_ms());
    /* A computation that never looks at its client (unlike MariaDB's SLEEP, which stops once
     * the client has gone): about 40 s of CPU unless it is killed. */
    snprintf(sql, sizeof sql, "SELECT BENCHMARK(200000000, MD5('x')) /* %s */", marker);
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
        seen = my_running_with(mon, marker);
        if (seen != 1)
            usleep(50000);
    }
    CHECK_INT(seen, 1);
    int64_t t0 = keel_now_ms();
    keel_db_close(db);
    CHECK(keel_now_ms() - t0 < 2000);
    CHECK_INT(x.err.code, KEEL_ERR_CLOSED);
    keel_conn_release(c);
    for (int i = 0; i < 100 && seen != 0; i++) {
        seen = my_running_with(mon, marker);
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
    keel_result_free(q(c, "DROP TABLE IF EXISTS rt", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE rt (id BIGINT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB "
                       "DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    check_many_returning(c);
    keel_result_free(q(c, "DROP TABLE rt", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(prepare_describes_a_statement) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "DROP TABLE IF EXISTS pt", NULL, 0));
    keel_result_free(q(c,
                       "CREATE TABLE pt (id BIGINT PRIMARY KEY, name VARCHAR(20), price "
                       "DECIMAL(10,2), at DATETIME(6), body LONGTEXT) DEFAULT CHARSET=utf8mb4",
                       NULL, 0));
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_prepare_sync(
        c, "SELECT id, name, price, at, body FROM pt WHERE id = $1 AND name <> $2", &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_nrows(r), 0);
    CHECK_INT(keel_result_ncols(r), 5);
    CHECK_STR(keel_result_colname(r, 1), "name");
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    CHECK_STR(keel_result_coltype_name(r, 0), "bigint");
    CHECK_STR(keel_result_coltype_name(r, 1), "varchar");
    CHECK_INT(keel_result_coltype(r, 2), KEEL_TYPE_NUMERIC);
    CHECK_STR(keel_result_coltype_name(r, 2), "decimal");
    CHECK_STR(keel_result_coltype_name(r, 3), "datetime");
    CHECK_STR(keel_result_coltype_name(r, 4), "text");
    CHECK_INT(keel_result_nparams(r), 2);
    CHECK_INT(keel_result_paramtype(r, 1), KEEL_TYPE_NULL);
    CHECK(keel_result_paramtype_name(r, 1) == NULL);
    keel_result_free(r);
    /* The prepared statement is the one the next run of the same SQL executes. */
    int64_t prepares = status_of(c, "Com_stmt_prepare");
    keel_value p[] = { keel_int(1), keel_text("x") };
    keel_result_free(
        q(c, "SELECT id, name, price, at, body FROM pt WHERE id = $1 AND name <> $2", p, 2));
    CHECK_INT(status_of(c, "Com_stmt_prepare") - prepares, 0);

    r = NULL;
    st = keel_conn_prepare_sync(c, "SELECT * FROM no_such_table WHERE id = $1", &r, &err);
    CHECK_INT(st, KEEL_ERR_PROGRAMMING);
    CHECK(r == NULL);
    CHECK_STR(err.sqlstate, "42S02");
    CHECK_CONTAINS(err.message, "no_such_table");
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    keel_result_free(q(c, "DROP TABLE pt", NULL, 0));
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(paused_stream_holds_one_batch) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
#define MAX_BATCH 256
    /* The text protocol, then a prepared statement (a parameter). */
#define SQL_200K "SELECT CAST(seq AS SIGNED) FROM seq_1_to_200000"
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
#undef SQL_200K
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    keel_value limit = keel_int(200000);
    paused_run y;
    memset(&y, 0, sizeof y);
    y.c = c;
    y.in_order = 1;
    keel_error err;
    CHECK_INT(
        keel_conn_query_rows(c, "SELECT CAST(seq AS SIGNED) FROM seq_1_to_200000 WHERE seq <= $1",
                             &limit, 1, paused_batch, paused_done, &y, &err),
        KEEL_OK);
    while (!y.done) {
        y.wake = 0;
        CHECK_INT(keel_loop_run(keel_db_loop(db), &y.wake), KEEL_OK);
        y.since_resume = 0;
        y.paused = 0;
        keel_conn_resume(c);
    }
    CHECK_INT(y.err.code, KEEL_OK);
    CHECK_INT(y.rows, 200000);
    CHECK(y.in_order);
    CHECK_INT(y.while_paused, 0);
    CHECK(y.most_at_once <= MAX_BATCH);
    keel_result_free(y.res);
#undef MAX_BATCH
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    keel_conn_release(c);
    keel_db_close(db);
}

/* ---- server-side cursors (keel_conn_cursor_open, keel_cursor_fetch, keel_cursor_close) ---- */

typedef struct cursor_ctx {
    int done;
    keel_result *res;
    keel_error err;
} cursor_ctx;

static void on_cursor_done(keel_result *res, const keel_error *err, void *arg) {
    cursor_ctx *x = arg;
    x->done = 1;
    x->res = res;
    if (err)
        x->err = *err;
}

/* Waits for an operation started with x; its result (NULL on error) in x->res. */
static void cursor_wait(keel_db *db, cursor_ctx *x) {
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x->done), KEEL_OK);
}

static keel_cursor *cursor_open(keel_db *db, keel_conn *c, const char *sql,
                                const keel_value *params, size_t nparams, size_t prefetch,
                                keel_error *out) {
    cursor_ctx x;
    memset(&x, 0, sizeof x);
    keel_cursor *cur = NULL;
    keel_error err;
    CHECK_INT(
        keel_conn_cursor_open(c, sql, params, nparams, prefetch, &cur, on_cursor_done, &x, &err),
        KEEL_OK);
    cursor_wait(db, &x);
    *out = x.err;
    if (x.res) {
        CHECK_INT(keel_result_nrows(x.res), 0);
        keel_result_free(x.res);
    }
    return cur;
}

/* The next n rows of cur: their first column's integers appended to got (*ngot of them). */
static size_t cursor_fetch_ints(keel_db *db, keel_conn *c, keel_cursor *cur, size_t n, int64_t *got,
                                size_t *ngot, keel_error *out) {
    cursor_ctx x;
    memset(&x, 0, sizeof x);
    keel_error err;
    CHECK_INT(keel_cursor_fetch(c, cur, n, NULL, on_cursor_done, &x, &err), KEEL_OK);
    cursor_wait(db, &x);
    *out = x.err;
    size_t rows = x.res ? keel_result_nrows(x.res) : 0;
    for (size_t i = 0; i < rows; i++) {
        const keel_value *v = keel_result_value(x.res, i, 0);
        got[(*ngot)++] = v && v->type == KEEL_TYPE_INT ? v->u.i64 : INT64_MIN;
    }
    keel_result_free(x.res);
    return rows;
}

TEST(server_side_cursors_let_other_statements_run_between_fetches) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e;
    keel_value from = keel_int(11);
    keel_cursor *cur =
        cursor_open(db, c, "SELECT CAST(seq AS SIGNED) AS n FROM seq_1_to_100000 WHERE seq >= $1",
                    &from, 1, 50, &e);
    CHECK_INT(e.code, KEEL_OK);
    static int64_t got[100000];
    size_t ngot = 0;
    CHECK_INT(cursor_fetch_ints(db, c, cur, 3, got, &ngot, &e), 3);
    CHECK_INT(e.code, KEEL_OK);
    /* Other statements, text and prepared, and a second cursor, between the fetches. */
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    CHECK_INT(q_int_p(c, "SELECT $1 + 1", &from), 12);
    keel_cursor *other =
        cursor_open(db, c, "SELECT CAST(seq AS SIGNED) FROM seq_1_to_10", NULL, 0, 4, &e);
    CHECK_INT(e.code, KEEL_OK);
    int64_t few[16];
    size_t nfew = 0;
    CHECK_INT(cursor_fetch_ints(db, c, other, 6, few, &nfew, &e), 6);
    CHECK_INT(cursor_fetch_ints(db, c, cur, 100000, got, &ngot, &e), 100000 - 10 - 3);
    CHECK_INT(e.code, KEEL_OK);
    int in_order = ngot == 100000 - 10;
    for (size_t i = 0; in_order && i < ngot; i++)
        in_order = got[i] == (int64_t)i + 11;
    CHECK(in_order);
    /* After the end: no rows, no error. */
    CHECK_INT(cursor_fetch_ints(db, c, cur, 5, got, &ngot, &e), 0);
    CHECK_INT(e.code, KEEL_OK);
    CHECK_INT(cursor_fetch_ints(db, c, other, 6, few, &nfew, &e), 4);
    CHECK_INT(few[9], 10);
    /* Closed, their statements are closed on the server with the next prepared statement
     * (status_of is one). */
    int64_t closes = status_of(c, "Com_stmt_close");
    keel_cursor_close(cur);
    keel_cursor_close(other);
    CHECK_INT(status_of(c, "Com_stmt_close"), closes + 2);
    keel_conn_release(c);
    keel_db_close(db);
}

TEST(server_side_cursor_errors_and_refusals) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e, err;
    keel_cursor *cur = NULL;
    cursor_ctx x;
    memset(&x, 0, sizeof x);
    /* Refused before anything is sent. */
    CHECK_INT(keel_conn_cursor_open(c, "SELECT 1", NULL, 0, 0, &cur, on_cursor_done, &x, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "prefetch");
    CHECK_INT(keel_conn_cursor_open(c, "SELECT $1", NULL, 0, 5, &cur, on_cursor_done, &x, &err),
              KEEL_ERR_PARAMETERS);
    /* The server's errors complete the open; the cursor is then not open, and is freed. */
    cur = cursor_open(db, c, "SELECT * FROM no_such_table_for_cursor", NULL, 0, 5, &e);
    CHECK_INT(e.code, KEEL_ERR_PROGRAMMING);
    CHECK_CONTAINS(e.message, "no_such_table_for_cursor");
    int64_t got[4];
    size_t ngot = 0;
    CHECK_INT(keel_cursor_fetch(c, cur, 1, NULL, on_cursor_done, &x, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "not open");
    keel_cursor_close(cur);
    /* A statement without rows ran, and the open says so. */
    keel_result_free(q(c, "CREATE TEMPORARY TABLE cur_t (n INT)", NULL, 0));
    cur = cursor_open(db, c, "INSERT INTO cur_t VALUES (1)", NULL, 0, 5, &e);
    CHECK_INT(e.code, KEEL_ERR_UNSUPPORTED);
    CHECK_CONTAINS(e.message, "must return rows");
    keel_cursor_close(cur);
    CHECK_INT(q_num(c, "SELECT COUNT(*) FROM cur_t"), 1);
    /* A statement with rows that the server opens no cursor for: its rows are read and
     * dropped, and the open says so. */
    keel_result_free(q(c, "DROP PROCEDURE IF EXISTS cur_p", NULL, 0));
    keel_result_free(q(c, "CREATE PROCEDURE cur_p() SELECT 1 UNION ALL SELECT 2", NULL, 0));
    cur = cursor_open(db, c, "CALL cur_p()", NULL, 0, 5, &e);
    CHECK_INT(e.code, KEEL_ERR_UNSUPPORTED);
    CHECK_CONTAINS(e.message, "opened no cursor");
    keel_cursor_close(cur);
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    keel_result_free(q(c, "DROP PROCEDURE cur_p", NULL, 0));
    /* An error midway: the rows before it come, then the error; the connection serves on. */
    cur = cursor_open(db, c,
                      "SELECT CAST(seq AS SIGNED) AS n, "
                      "IF(seq = 3, (SELECT seq FROM seq_1_to_2), 0) AS bad FROM seq_1_to_5",
                      NULL, 0, 1, &e);
    if (e.code == KEEL_OK) {
        /* MariaDB evaluates the rows as it materialises them: the open fails instead. */
        cursor_fetch_ints(db, c, cur, 5, got, &ngot, &e);
    }
    CHECK(e.code != KEEL_OK);
    CHECK_CONTAINS(e.message, "more than 1 row");
    keel_cursor_close(cur);
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    /* A cursor on another connection, or after its connection closed. */
    cur = cursor_open(db, c, "SELECT CAST(seq AS SIGNED) FROM seq_1_to_10", NULL, 0, 2, &e);
    CHECK_INT(e.code, KEEL_OK);
    keel_conn *other = acquire(db);
    CHECK_INT(keel_cursor_fetch(other, cur, 1, NULL, on_cursor_done, &x, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "another connection");
    keel_conn_release(other);
    keel_conn_release(c);
    keel_db_close(db);
    /* The connection is gone: the cursor is detached, and still freed by its close. */
    keel_cursor_close(cur);
    keel_cursor_close(NULL);
}

TEST(a_server_side_cursor_closed_while_fetching_is_freed_when_the_fetch_ends) {
    keel_db *db = open_db();
    keel_conn *c = acquire(db);
    keel_error e, err;
    keel_cursor *cur =
        cursor_open(db, c, "SELECT CAST(seq AS SIGNED) FROM seq_1_to_1000", NULL, 0, 100, &e);
    CHECK_INT(e.code, KEEL_OK);
    cursor_ctx x;
    memset(&x, 0, sizeof x);
    CHECK_INT(keel_cursor_fetch(c, cur, 500, NULL, on_cursor_done, &x, &err), KEEL_OK);
    keel_cursor_close(cur);
    cursor_wait(db, &x);
    CHECK_INT(x.err.code, KEEL_OK);
    CHECK_INT(keel_result_nrows(x.res), 500);
    keel_result_free(x.res);
    CHECK_INT(q_num(c, "SELECT 41 + 1"), 42);
    /* Closing the db while a cursor's open runs reports it closed, and frees the cursor. */
    memset(&x, 0, sizeof x);
    CHECK_INT(keel_conn_cursor_open(c, "SELECT CAST(seq AS SIGNED) FROM seq_1_to_100", NULL, 0, 10,
                                    &cur, on_cursor_done, &x, &err),
              KEEL_OK);
    keel_cursor_close(cur);
    keel_conn_release(c);
    keel_db_close(db);
    CHECK(x.done);
    keel_result_free(x.res);
}

int main(void) {
    RUN(check_config_validates_options);
    RUN(scalar_types_round_trip_through_select);
    RUN(intervals_go_as_time_and_durations_come_back);
    RUN(every_type_round_trips_through_a_table_including_nulls);
    RUN(ten_megabyte_blob_round_trips);
    RUN(hundred_thousand_rows_decode);
    RUN(executemany_of_ten_thousand_rows_in_few_round_trips);
    RUN(executemany_binds_every_type_in_bulk);
    RUN(executemany_returning);
    RUN(prepare_describes_a_statement);
    RUN(paused_stream_holds_one_batch);
    RUN(server_side_cursors_let_other_statements_run_between_fetches);
    RUN(server_side_cursor_errors_and_refusals);
    RUN(a_server_side_cursor_closed_while_fetching_is_freed_when_the_fetch_ends);
    RUN(multi_statement_script_returns_the_last_rows);
    RUN(server_errors_map_to_statuses);
    RUN(statement_cache_closes_evicted_statements);
    RUN(dead_server_fails_fast_without_leaking_the_password);
    RUN(connect_timeout_when_the_server_never_answers);
    RUN(host_names_are_resolved_and_options_reach_the_server);
    RUN(tls_required_fails_clearly_against_a_server_without_tls);
    RUN(secrets_are_resolved_at_connect_time);
    RUN(transactions_commit_roll_back_and_use_savepoints);
    RUN(connection_released_inside_a_transaction_comes_back_clean);
    RUN(cancel_stops_a_running_query_and_the_connection_stays_usable);
    RUN(release_while_running_cancels_and_returns_the_connection);
    RUN(closing_the_db_while_a_query_runs_reports_closed);
    RUN(lost_connection_is_reported_and_discarded);
    RUN(non_finite_decimals_and_documents_are_refused_before_sending);
    RUN(a_cached_statement_reads_the_new_columns_after_alter_table);
    RUN(a_cancelled_batch_stops_and_is_rolled_back);
    RUN(a_late_cancel_never_reaches_the_next_statement);
    RUN(required_tls_is_refused_before_credentials_reach_a_man_in_the_middle);
    RUN(a_tls_handshake_with_a_silent_server_frees_its_thread);
    RUN(closing_the_db_kills_a_statement_still_running_on_the_server);
    return TEST_SUMMARY();
}
