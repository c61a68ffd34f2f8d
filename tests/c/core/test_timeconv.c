/* tests/c/core/test_timeconv.c - tests of calendar arithmetic and the date/time/UUID text codecs. */
#include <string.h>

#include "core/timeconv.h"
#include "test.h"

#define USECS_PER_DAY INT64_C(86400000000)

static int test_is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static unsigned test_days_in_month(int64_t y, unsigned m) {
    static const unsigned dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && test_is_leap(y) ? 29 : dim[m - 1];
}

/* Parsers are called with a length, so they must not read a terminator: these helpers pass the
 * exact length of a C string. */
static int pdate(const char *s, int32_t *d) { return keel__parse_date(s, strlen(s), d); }

static int ptime(const char *s, int64_t *t) { return keel__parse_time(s, strlen(s), t); }

static int pts(const char *s, int64_t *t) { return keel__parse_timestamp(s, strlen(s), t); }

static int ptstz(const char *s, int64_t *t) { return keel__parse_timestamptz(s, strlen(s), t); }

TEST(test_known_days) {
    CHECK_INT(keel__days_from_civil(1970, 1, 1), 0);
    CHECK_INT(keel__days_from_civil(2000, 1, 1), 10957);
    CHECK_INT(keel__days_from_civil(1969, 12, 31), -1);
    CHECK_INT(keel__days_from_civil(2000, 2, 29), 11016);
    CHECK_INT(keel__days_from_civil(1900, 3, 1), -25508);
    CHECK_INT(keel__days_from_civil(1, 1, 1), -719162);
    /* Astronomical year 0 is 1 BC; -43 is 44 BC. Values from PostgreSQL. */
    CHECK_INT(keel__days_from_civil(0, 1, 1), -719528);
    CHECK_INT(keel__days_from_civil(-43, 3, 15), -735160);
    CHECK_INT(keel__days_from_civil(-4713, 11, 24), -2440588);
    CHECK_INT(keel__days_from_civil(5874897, 12, 31), 2145042905);
    CHECK_INT(keel__days_from_civil(294277, 1, 1), 106762940);
    CHECK_INT(keel__days_from_civil(10000, 1, 1), 2932897);

    int64_t y;
    unsigned m, d;
    keel__civil_from_days(0, &y, &m, &d);
    CHECK(y == 1970 && m == 1 && d == 1);
    keel__civil_from_days(-735160, &y, &m, &d);
    CHECK(y == -43 && m == 3 && d == 15);
    /* The extremes of int32 must convert without overflow. */
    keel__civil_from_days(INT32_MAX, &y, &m, &d);
    CHECK_INT(keel__days_from_civil(y, m, d), INT32_MAX);
    keel__civil_from_days(INT32_MIN, &y, &m, &d);
    CHECK_INT(keel__days_from_civil(y, m, d), INT32_MIN);
}

TEST(test_every_day_round_trip) {
    /*
     * Walks every day from -800000 to +800000 (about 2190 years either side of 1970) and checks
     * that each converts back, and that each is the calendar successor of the one before it,
     * which an independent month-length table decides.
     */
    int64_t py;
    unsigned pm, pd;
    keel__civil_from_days(-800000, &py, &pm, &pd);
    int bad_round_trip = 0, bad_successor = 0, bad_range = 0;
    for (int32_t days = -800000; days <= 800000; days++) {
        int64_t y;
        unsigned m, d;
        keel__civil_from_days(days, &y, &m, &d);
        if (m < 1 || m > 12 || d < 1 || d > test_days_in_month(y, m))
            bad_range++;
        else if (keel__days_from_civil(y, m, d) != days)
            bad_round_trip++;
        if (days > -800000) {
            int next_ok;
            if (pd < test_days_in_month(py, pm))
                next_ok = y == py && m == pm && d == pd + 1;
            else if (pm < 12)
                next_ok = y == py && m == pm + 1 && d == 1;
            else
                next_ok = y == py + 1 && m == 1 && d == 1;
            if (!next_ok)
                bad_successor++;
        }
        py = y;
        pm = m;
        pd = d;
    }
    CHECK_INT(bad_range, 0);
    CHECK_INT(bad_round_trip, 0);
    CHECK_INT(bad_successor, 0);
}

TEST(test_far_dates) {
    /* Every 400-year era has 146097 days, far from 1970 too. */
    for (int64_t y = -5000000; y <= 5000000; y += 400 * 1237)
        CHECK_INT(keel__days_from_civil(y + 400, 3, 1) - keel__days_from_civil(y, 3, 1), 146097);
    for (int32_t days = -2000000000; days <= 2000000000; days += 999983) {
        int64_t y;
        unsigned m, d;
        keel__civil_from_days(days, &y, &m, &d);
        CHECK_INT(keel__days_from_civil(y, m, d), days);
    }
}

TEST(test_leap_years) {
    int32_t d;
    CHECK_INT(pdate("1900-02-29", &d), -1);
    CHECK_INT(pdate("2100-02-29", &d), -1);
    CHECK_INT(pdate("2000-02-29", &d), 0);
    CHECK_INT(d, 11016);
    CHECK_INT(pdate("2024-02-29", &d), 0);
    CHECK_INT(pdate("2023-02-29", &d), -1);
    CHECK_INT(pdate("1600-02-29", &d), 0);
    /* Astronomical year 0 (1 BC) and -4 (5 BC) are leap years, 2 BC is not. */
    CHECK_INT(pdate("0001-02-29 BC", &d), 0);
    CHECK_INT(pdate("0005-02-29 BC", &d), 0);
    CHECK_INT(pdate("0002-02-29 BC", &d), -1);
    CHECK_INT(keel__days_from_civil(1900, 3, 1) - keel__days_from_civil(1900, 2, 28), 1);
    CHECK_INT(keel__days_from_civil(2000, 3, 1) - keel__days_from_civil(2000, 2, 28), 2);
}

TEST(test_date_parse) {
    int32_t d;
    CHECK_INT(pdate("1970-01-01", &d), 0);
    CHECK_INT(d, 0);
    CHECK_INT(pdate("2000-01-01", &d), 0);
    CHECK_INT(d, 10957);
    CHECK_INT(pdate("0044-03-15 BC", &d), 0);
    CHECK_INT(d, -735160);
    CHECK_INT(pdate("0001-01-01 BC", &d), 0);
    CHECK_INT(d, keel__days_from_civil(0, 1, 1));
    CHECK_INT(pdate("4714-11-24 BC", &d), 0);
    CHECK_INT(d, -2440588);
    CHECK_INT(pdate("5874897-12-31", &d), 0);
    CHECK_INT(d, 2145042905);
    CHECK_INT(pdate("10000-01-01", &d), 0);
    CHECK_INT(d, 2932897);
    /* The length is honoured: the text after n bytes is not looked at. */
    CHECK_INT(keel__parse_date("2000-01-01garbage", 10, &d), 0);
    CHECK_INT(d, 10957);
}

TEST(test_date_reject) {
    static const char *const bad[] = {
        "2024-13-01",       "2024-00-10",    "2024-02-30",
        "2024-04-31",       "2024-01-00",    "2024-01-32",
        "0000-01-01",       "0000-01-01 BC", "4714-11-23 BC",
        "4715-01-01 BC",    "5874898-01-01", "99999999-01-01",
        "24-01-01",         "2024-1-01",     "2024-01-1",
        "2024/01/01",       "2024-01-01 ",   "2024-01-01x",
        "2024-01-01 bc",    "2024-01-01 AD", "2024-01-01BC",
        "2024-01-01 13:00", "-2024-01-01",   "+2024-01-01",
        "infinity",         "-infinity",     "",
        " 2024-01-01",      "2024-01-0a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t d = 12345;
        if (pdate(bad[i], &d) != -1)
            fprintf(stderr, "    accepted date \"%s\"\n", bad[i]);
        CHECK_INT(pdate(bad[i], &d), -1);
        CHECK_INT(d, 12345);
    }
    int32_t d;
    CHECK_INT(keel__parse_date(NULL, 0, &d), -1);
    /* A length that cuts the text short makes it malformed. */
    CHECK_INT(keel__parse_date("2024-01-01", 9, &d), -1);
}

TEST(test_date_format) {
    char buf[KEEL__TIME_TEXT_MAX];
    CHECK_INT(keel__format_date(0, buf), 10);
    CHECK_STR(buf, "1970-01-01");
    keel__format_date(19782, buf);
    CHECK_STR(buf, "2024-02-29");
    keel__format_date(-735160, buf);
    CHECK_STR(buf, "0044-03-15 BC");
    keel__format_date(keel__days_from_civil(0, 12, 31), buf);
    CHECK_STR(buf, "0001-12-31 BC");
    keel__format_date(keel__days_from_civil(1, 1, 1), buf);
    CHECK_STR(buf, "0001-01-01");
    keel__format_date(2145042905, buf);
    CHECK_STR(buf, "5874897-12-31");
    CHECK_INT(keel__format_date(INT32_MIN, buf), strlen(buf));
    CHECK(strlen(buf) < KEEL__TIME_TEXT_MAX);
    CHECK_INT(keel__format_date(INT32_MAX, buf), strlen(buf));

    /* Every date of PostgreSQL's range that we sample formats and parses back to itself. */
    int bad = 0;
    for (int64_t days = -2440588; days <= 2145042905; days += 9973) {
        int32_t back;
        size_t n = keel__format_date((int32_t)days, buf);
        if (keel__parse_date(buf, n, &back) != 0 || back != days)
            bad++;
    }
    CHECK_INT(bad, 0);
}

TEST(test_time_parse) {
    int64_t t;
    CHECK_INT(ptime("00:00", &t), 0);
    CHECK_INT(t, 0);
    CHECK_INT(ptime("13:45", &t), 0);
    CHECK_INT(t, (13 * 3600 + 45 * 60) * INT64_C(1000000));
    CHECK_INT(ptime("13:45:01", &t), 0);
    CHECK_INT(t, (13 * 3600 + 45 * 60 + 1) * INT64_C(1000000));
    CHECK_INT(ptime("13:45:01.5", &t), 0);
    CHECK_INT(t, (13 * 3600 + 45 * 60 + 1) * INT64_C(1000000) + 500000);
    CHECK_INT(ptime("13:45:01.000001", &t), 0);
    CHECK_INT(t, (13 * 3600 + 45 * 60 + 1) * INT64_C(1000000) + 1);
    CHECK_INT(ptime("23:59:59.999999", &t), 0);
    CHECK_INT(t, USECS_PER_DAY - 1);
    CHECK_INT(ptime("24:00:00", &t), 0);
    CHECK_INT(t, USECS_PER_DAY);
    CHECK_INT(ptime("24:00", &t), 0);
    CHECK_INT(ptime("24:00:00.000", &t), 0);
    CHECK_INT(t, USECS_PER_DAY);
}

TEST(test_time_rounding) {
    /* More than six fraction digits round to the nearest microsecond, ties to even; these
     * agree with PostgreSQL 15 for the same input. */
    int64_t t, base = 12 * 3600 * INT64_C(1000000);
    CHECK_INT(ptime("12:00:00.0000004", &t), 0);
    CHECK_INT(t, base);
    CHECK_INT(ptime("12:00:00.0000005", &t), 0);
    CHECK_INT(t, base);
    CHECK_INT(ptime("12:00:00.00000051", &t), 0);
    CHECK_INT(t, base + 1);
    CHECK_INT(ptime("12:00:00.0000015", &t), 0);
    CHECK_INT(t, base + 2);
    CHECK_INT(ptime("12:00:00.0000006", &t), 0);
    CHECK_INT(t, base + 1);
    CHECK_INT(ptime("12:00:00.1234564999", &t), 0);
    CHECK_INT(t, base + 123456);
    CHECK_INT(ptime("12:00:59.9999999", &t), 0);
    CHECK_INT(t, base + 60 * INT64_C(1000000));
    /* Rounding can carry up to exactly 24:00:00, as in PostgreSQL. */
    CHECK_INT(ptime("23:59:59.9999995", &t), 0);
    CHECK_INT(t, USECS_PER_DAY);
    CHECK_INT(pts("2024-12-31 23:59:59.99999999", &t), 0);
    CHECK_INT(t, (int64_t)keel__days_from_civil(2025, 1, 1) * USECS_PER_DAY);
}

TEST(test_time_reject) {
    static const char *const bad[] = {
        "25:00",     "24:00:01",    "24:01",     "24:00:00.000001",
        "12:60",     "12:00:60",    "12:00:61",  "1:00",
        "12:0",      "12",          "12:00:",    "12:00:0",
        "12:00:00.", "12:00:00.1x", "12:00:00 ", " 12:00",
        "12:00:00Z", "12:00:00+01", "12-00-00",  "ab:cd",
        "",          "12:00:00.-1", "-1:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = 777;
        if (ptime(bad[i], &t) != -1)
            fprintf(stderr, "    accepted time \"%s\"\n", bad[i]);
        CHECK_INT(ptime(bad[i], &t), -1);
        CHECK_INT(t, 777);
    }
}

TEST(test_time_format) {
    char buf[KEEL__TIME_TEXT_MAX];
    CHECK_INT(keel__format_time(0, buf), 8);
    CHECK_STR(buf, "00:00:00");
    keel__format_time((13 * 3600 + 45 * 60 + 1) * INT64_C(1000000) + 500000, buf);
    CHECK_STR(buf, "13:45:01.500000");
    keel__format_time(1, buf);
    CHECK_STR(buf, "00:00:00.000001");
    keel__format_time(USECS_PER_DAY, buf);
    CHECK_STR(buf, "24:00:00");
    keel__format_time(USECS_PER_DAY - 1, buf);
    CHECK_STR(buf, "23:59:59.999999");
    /* Values outside a day are taken modulo a day. */
    keel__format_time(-1, buf);
    CHECK_STR(buf, "23:59:59.999999");
    keel__format_time(USECS_PER_DAY + 1, buf);
    CHECK_STR(buf, "00:00:00.000001");

    int bad = 0;
    for (int64_t t = 0; t <= USECS_PER_DAY; t += 86399999) {
        int64_t back;
        size_t n = keel__format_time(t, buf);
        if (keel__parse_time(buf, n, &back) != 0 || back != t)
            bad++;
    }
    CHECK_INT(bad, 0);
}

TEST(test_timestamp_parse) {
    int64_t t;
    CHECK_INT(pts("2024-02-29 13:45:01.123456", &t), 0);
    CHECK_INT(t, INT64_C(1709214301123456));
    CHECK_INT(pts("2024-02-29T13:45:01.123456", &t), 0);
    CHECK_INT(t, INT64_C(1709214301123456));
    CHECK_INT(pts("1970-01-01 00:00", &t), 0);
    CHECK_INT(t, 0);
    CHECK_INT(pts("1969-12-31 23:59:59.999999", &t), 0);
    CHECK_INT(t, -1);
    CHECK_INT(pts("0044-03-15 12:00:00.5 BC", &t), 0);
    CHECK_INT(t, INT64_C(-63517780799500000));
    CHECK_INT(pts("2024-01-01 24:00:00", &t), 0);
    CHECK_INT(t, (int64_t)keel__days_from_civil(2024, 1, 2) * USECS_PER_DAY);
    /* The ends of PostgreSQL's timestamp range. */
    CHECK_INT(pts("4714-11-24 00:00:00 BC", &t), 0);
    CHECK_INT(t, INT64_C(-210866803200000000));
    /* PostgreSQL goes on to 294276-12-31, but int64 microseconds since 1970 end earlier. */
    CHECK_INT(pts("294247-01-10 04:00:54.775807", &t), 0);
    CHECK_INT(t, INT64_MAX);
}

TEST(test_timestamp_reject) {
    static const char *const bad[] = {
        "2024-02-29",
        "2024-02-29 ",
        "2024-02-29  13:45",
        "2024-02-29X13:45",
        "2024-02-30 13:45",
        "2024-13-01 00:00",
        "2024-02-29 25:00",
        "2024-02-29 12:60",
        "2024-02-29 13:45:01Z",
        "2024-02-29 13:45:01+05:30",
        "2024-02-29 13:45:01 junk",
        "2024-02-29 13:45:01.",
        "4714-11-23 23:59:59.999999 BC",
        "294277-01-01 00:00:00",
        "294276-12-31 23:59:59.999999",
        "294247-01-10 04:00:54.775808",
        "294247-01-11 00:00:00",
        "5000000-01-01 00:00:00",
        "0000-01-01 00:00:00",
        "infinity",
        "-infinity",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = 555;
        if (pts(bad[i], &t) != -1)
            fprintf(stderr, "    accepted timestamp \"%s\"\n", bad[i]);
        CHECK_INT(pts(bad[i], &t), -1);
        CHECK_INT(t, 555);
    }
}

/*
 * The plain "YYYY-MM-DD hh:mm:ss[.f…]" text servers write, read at fixed positions, gives the
 * same instant as the general parser for every day of years 1 to 9999 and fractions of any
 * width; texts of that shape that are not valid fall through to it and are still refused.
 */
TEST(test_timestamp_plain_form) {
    int bad = 0;
    for (int32_t d = keel__days_from_civil(1, 1, 1); d <= keel__days_from_civil(9999, 12, 31);
         d += 7) {
        int64_t y;
        unsigned m, day;
        keel__civil_from_days(d, &y, &m, &day);
        unsigned h = (unsigned)d % 24, mi = (unsigned)d % 60, se = (unsigned)(d / 60) % 60;
        unsigned width = (unsigned)d % 7; /* 0 to 6 digits of fraction */
        char buf[40];
        int n =
            snprintf(buf, sizeof buf, "%04d-%02u-%02u %02u:%02u:%02u", (int)y, m, day, h, mi, se);
        int64_t frac = 0;
        if (width) {
            buf[n++] = '.';
            for (unsigned i = 0; i < 6; i++) {
                unsigned digit = (unsigned)(d >> i) % 10;
                if (i < width)
                    buf[n++] = (char)('0' + digit);
                frac = frac * 10 + (i < width ? digit : 0);
            }
        }
        int64_t want = (int64_t)d * USECS_PER_DAY + ((int64_t)(h * 60 + mi) * 60 + se) * 1000000 +
                       frac,
                got = 0;
        if (keel__parse_timestamp(buf, (size_t)n, &got) != 0 || got != want) {
            if (bad++ < 5)
                fprintf(stderr, "    \"%.*s\" read as %lld\n", n, buf, (long long)got);
        }
    }
    CHECK_INT(bad, 0);
    static const char *const refused[] = {
        "2023-02-29 00:00:00",  "2024-02-30 13:45:00",  "2024-04-31 00:00:00",
        "2024-13-01 00:00:00",  "2024-00-10 00:00:00",  "2024-01-00 00:00:00",
        "2024-01-01 23:60:00",  "2024-01-01 23:00:60",  "2024-01-01 25:00:00",
        "2024-01-01 2a:00:00",  "2024-01-01 20:00:00.", "2024-01-01 20:00:00.12x",
        "2024-01-01 20:00:00x", "0000-00-00 00:00:00",  "2024/01/01 00:00:00",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int64_t t = 555;
        CHECK_INT(pts(refused[i], &t), -1);
        CHECK_INT(t, 555);
    }
    /* Of the plain shape but for the general parser: the end of a day, seven fraction digits. */
    int64_t t;
    CHECK_INT(pts("2024-01-01 24:00:00", &t), 0);
    CHECK_INT(t, (int64_t)keel__days_from_civil(2024, 1, 2) * USECS_PER_DAY);
    CHECK_INT(pts("1970-01-01 00:00:00.0000015", &t), 0);
    CHECK_INT(t, 2);
}

TEST(test_timestamp_format) {
    char buf[KEEL__TIME_TEXT_MAX];
    keel__format_timestamp(INT64_C(1709214301123456), buf);
    CHECK_STR(buf, "2024-02-29 13:45:01.123456");
    keel__format_timestamp(0, buf);
    CHECK_STR(buf, "1970-01-01 00:00:00");
    keel__format_timestamp(-1, buf);
    CHECK_STR(buf, "1969-12-31 23:59:59.999999");
    keel__format_timestamp(INT64_C(-63517780799500000), buf);
    CHECK_STR(buf, "0044-03-15 12:00:00.500000 BC");
    keel__format_timestamp(INT64_MAX, buf);
    CHECK_STR(buf, "294247-01-10 04:00:54.775807");
    keel__format_timestamp(INT64_C(-210866803200000000), buf);
    CHECK_STR(buf, "4714-11-24 00:00:00 BC");
    /* Any int64 formats within the buffer size. */
    CHECK(keel__format_timestamp(INT64_MIN, buf) < KEEL__TIME_TEXT_MAX);
    CHECK(keel__format_timestamp(INT64_MAX, buf) < KEEL__TIME_TEXT_MAX);
    CHECK(keel__format_timestamptz(INT64_MIN, buf) < KEEL__TIME_TEXT_MAX);

    int bad = 0;
    const int64_t lo = INT64_C(-210866803200000000), hi = INT64_MAX;
    for (int64_t t = lo; t <= hi - INT64_C(1234567890123457); t += INT64_C(1234567890123457)) {
        int64_t back;
        size_t n = keel__format_timestamp(t, buf);
        if (keel__parse_timestamp(buf, n, &back) != 0 || back != t)
            bad++;
        n = keel__format_timestamptz(t, buf);
        if (keel__parse_timestamptz(buf, n, &back) != 0 || back != t)
            bad++;
    }
    CHECK_INT(bad, 0);
}

TEST(test_timestamptz_parse) {
    int64_t t;
    const int64_t local = INT64_C(1709214301000000); /* 2024-02-29 13:45:01 */
    CHECK_INT(ptstz("2024-02-29 13:45:01+00", &t), 0);
    CHECK_INT(t, local);
    CHECK_INT(ptstz("2024-02-29 13:45:01Z", &t), 0);
    CHECK_INT(t, local);
    CHECK_INT(ptstz("2024-02-29T13:45:01z", &t), 0);
    CHECK_INT(t, local);
    CHECK_INT(ptstz("2024-02-29 13:45:01+05:30", &t), 0);
    CHECK_INT(t, local - (5 * 3600 + 30 * 60) * INT64_C(1000000));
    CHECK_INT(ptstz("2024-02-29 13:45:01+0530", &t), 0);
    CHECK_INT(t, local - (5 * 3600 + 30 * 60) * INT64_C(1000000));
    CHECK_INT(ptstz("2024-02-29 13:45:01.000001-08", &t), 0);
    CHECK_INT(t, INT64_C(1709243101000001));
    CHECK_INT(ptstz("2024-02-29 13:45:01-08:00", &t), 0);
    CHECK_INT(t, INT64_C(1709243101000000));
    /* Old local mean time offsets carry seconds; the value is from PostgreSQL. */
    CHECK_INT(ptstz("2024-02-29 13:45:01+05:53:28", &t), 0);
    CHECK_INT(t, INT64_C(1709193093000000));
    CHECK_INT(ptstz("2024-02-29 13:45:01+055328", &t), 0);
    CHECK_INT(t, INT64_C(1709193093000000));
    int64_t lmt, utc;
    CHECK_INT(ptstz("1800-03-15 12:00:00-00:19:32", &lmt), 0);
    CHECK_INT(ptstz("1800-03-15 12:19:32+00", &utc), 0);
    CHECK_INT(lmt, utc);
    /* BC comes after the offset, as PostgreSQL writes it. */
    CHECK_INT(ptstz("0044-03-15 12:00:00+00:19:32 BC", &t), 0);
    CHECK_INT(t, INT64_C(-63517780800000000) - (19 * 60 + 32) * INT64_C(1000000));
    CHECK_INT(ptstz("2024-02-29 13:45:01+15:59:59", &t), 0);
    /* An offset can move a local time past the end of the range back into it. */
    CHECK_INT(ptstz("294247-01-10 06:00:54.775807+02", &t), 0);
    CHECK_INT(t, INT64_MAX);
}

TEST(test_timestamptz_reject) {
    static const char *const bad[] = {
        "2024-02-29 13:45:01",
        "2024-02-29 13:45:01 +05",
        "2024-02-29 13:45:01+5",
        "2024-02-29 13:45:01+05:3",
        "2024-02-29 13:45:01+05:",
        "2024-02-29 13:45:01+05:30:",
        "2024-02-29 13:45:01+053",
        "2024-02-29 13:45:01+05305",
        "2024-02-29 13:45:01+16:00",
        "2024-02-29 13:45:01+05:60",
        "2024-02-29 13:45:01+05:30:60",
        "2024-02-29 13:45:01+05:30 ",
        "2024-02-29 13:45:01+05:30x",
        "2024-02-29 13:45:01 BC+05",
        "2024-02-29 13:45:01UTC",
        "2024-02-30 13:45:01+00",
        "294247-01-10 04:00:54.775807-00:00:01",
        "294247-01-10 04:00:54.775807-01",
        "294247-01-11 01:00:00+15:59:59",
        "4714-11-24 00:30:00+01 BC",
        "infinity",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = 333;
        if (ptstz(bad[i], &t) != -1)
            fprintf(stderr, "    accepted timestamptz \"%s\"\n", bad[i]);
        CHECK_INT(ptstz(bad[i], &t), -1);
        CHECK_INT(t, 333);
    }
}

TEST(test_timestamptz_format) {
    char buf[KEEL__TIME_TEXT_MAX];
    CHECK_INT(keel__format_timestamptz(INT64_C(1709214301123456), buf), 32);
    CHECK_STR(buf, "2024-02-29 13:45:01.123456+00:00");
    keel__format_timestamptz(0, buf);
    CHECK_STR(buf, "1970-01-01 00:00:00+00:00");
    keel__format_timestamptz(INT64_C(-63517780800000000), buf);
    CHECK_STR(buf, "0044-03-15 12:00:00+00:00 BC");
}

TEST(test_duration) {
    static const struct {
        const char *text;
        int64_t micros;
        const char *formatted; /* NULL: the text itself */
    } good[] = {
        { "00:00:00", 0, NULL },
        { "-01:02:03", -INT64_C(3723000000), NULL },
        { "838:59:59.999999", INT64_C(3020399999999), NULL },
        { "-838:59:59.5", -INT64_C(3020399500000), "-838:59:59.500000" },
        { "1:00:00", INT64_C(3600000000), "01:00:00" },
        { "123456789:00:00.000001", INT64_C(444444440400000001), NULL },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t us = 0;
        char out[KEEL__TIME_TEXT_MAX];
        CHECK_INT(keel__parse_duration(good[i].text, strlen(good[i].text), &us), 0);
        CHECK_INT(us, good[i].micros);
        const char *want = good[i].formatted ? good[i].formatted : good[i].text;
        CHECK_INT(keel__format_duration(good[i].micros, out), strlen(want));
        CHECK_STR(out, want);
    }
    static const char *const bad[] = {
        "",  ":00:00",    "01:60:00",         "01:00:60", "01:00", "01:00:00.", "1:00:00.1234567",
        "-", "01:00:00 ", "1234567890:00:00", "+01:00:00"
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 7;
        CHECK_INT(keel__parse_duration(bad[i], strlen(bad[i]), &us), -1);
        CHECK_INT(us, 7);
    }
    char out[KEEL__TIME_TEXT_MAX];
    CHECK(keel__format_duration(INT64_MIN, out) < KEEL__TIME_TEXT_MAX);
    CHECK_STR(out, "-2562047788:00:54.775808");
}

TEST(test_uuid) {
    static const unsigned char want[16] = { 0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                            0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00 };
    static const char *const good[] = {
        "123e4567-e89b-12d3-a456-426614174000",
        "123E4567-E89B-12D3-A456-426614174000",
        "{123e4567-e89b-12d3-a456-426614174000}",
        "{123E4567-e89b-12D3-a456-426614174000}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        unsigned char got[16] = { 0 };
        CHECK_INT(keel__parse_uuid(good[i], strlen(good[i]), got), 0);
        CHECK(memcmp(got, want, 16) == 0);
    }
    char text[KEEL__UUID_TEXT_MAX];
    keel__format_uuid(want, text);
    CHECK_STR(text, "123e4567-e89b-12d3-a456-426614174000");

    unsigned char all[16];
    for (int i = 0; i < 16; i++)
        all[i] = (unsigned char)(i * 17);
    keel__format_uuid(all, text);
    CHECK_STR(text, "00112233-4455-6677-8899-aabbccddeeff");
    unsigned char back[16];
    CHECK_INT(keel__parse_uuid(text, strlen(text), back), 0);
    CHECK(memcmp(all, back, 16) == 0);

    static const char *const bad[] = {
        "",
        "123e4567e89b12d3a456426614174000",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-4266141740000",
        "123e4567-e89b-12d3-a456_426614174000",
        "123e456-7e89b-12d3-a456-426614174000",
        "123g4567-e89b-12d3-a456-426614174000",
        "{123e4567-e89b-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-426614174000}",
        "(123e4567-e89b-12d3-a456-426614174000)",
        "{{23e4567-e89b-12d3-a456-4266141740}}",
        " 123e4567-e89b-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-42661417400 ",
        "-23e4567-e89b-12d3-a456-426614174000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char got[16];
        memset(got, 0xAA, sizeof got);
        if (keel__parse_uuid(bad[i], strlen(bad[i]), got) != -1)
            fprintf(stderr, "    accepted uuid \"%s\"\n", bad[i]);
        CHECK_INT(keel__parse_uuid(bad[i], strlen(bad[i]), got), -1);
        /* A failed parse leaves the output untouched. */
        CHECK(got[0] == 0xAA && got[15] == 0xAA);
    }
    CHECK_INT(keel__parse_uuid(NULL, 0, back), -1);
}

int main(void) {
    RUN(test_known_days);
    RUN(test_every_day_round_trip);
    RUN(test_far_dates);
    RUN(test_leap_years);
    RUN(test_date_parse);
    RUN(test_date_reject);
    RUN(test_date_format);
    RUN(test_time_parse);
    RUN(test_time_rounding);
    RUN(test_time_reject);
    RUN(test_time_format);
    RUN(test_timestamp_parse);
    RUN(test_timestamp_reject);
    RUN(test_timestamp_plain_form);
    RUN(test_timestamp_format);
    RUN(test_timestamptz_parse);
    RUN(test_timestamptz_reject);
    RUN(test_timestamptz_format);
    RUN(test_duration);
    RUN(test_uuid);
    return TEST_SUMMARY();
}
