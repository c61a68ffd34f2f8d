/* tests/c/core/test_numtext.c - int64 parsing and double formatting, locale-independent. */
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>

#include "core/numtext.h"
#include "test.h"

/* Parses a NUL-terminated string; the output is left at 42 when parsing fails. */
static int parse(const char *s, int64_t *out) {
    *out = 42;
    return keel__parse_int64(s, strlen(s), out);
}

TEST(parse_int64_reads_the_whole_range) {
    int64_t v;
    CHECK_INT(parse("0", &v), 0);
    CHECK_INT(v, 0);
    CHECK_INT(parse("-0", &v), 0);
    CHECK_INT(v, 0);
    CHECK_INT(parse("+17", &v), 0);
    CHECK_INT(v, 17);
    CHECK_INT(parse("-17", &v), 0);
    CHECK_INT(v, -17);
    CHECK_INT(parse("000123", &v), 0);
    CHECK_INT(v, 123);
    CHECK_INT(parse("9223372036854775807", &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_INT(parse("-9223372036854775808", &v), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(parse("-9223372036854775807", &v), 0);
    CHECK(v == -INT64_MAX);
    /* 18 digits take the short path, 19 the checked one. */
    CHECK_INT(parse("-999999999999999999", &v), 0);
    CHECK(v == -INT64_C(999999999999999999));
    CHECK_INT(parse("1000000000000000000", &v), 0);
    CHECK(v == INT64_C(1000000000000000000));
    /* Only n bytes are read: the rest of the buffer does not matter. */
    CHECK_INT(keel__parse_int64("12345", 3, &v), 0);
    CHECK_INT(v, 123);
}

TEST(parse_int64_refuses_what_is_not_an_int64) {
    static const char *const bad[] = {
        "",
        "-",
        "+",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x10",
        "--1",
        "+-1",
        "١", /* a non-ASCII digit */
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        NULL,
    };
    for (const char *const *s = bad; *s; s++) {
        int64_t v;
        int rc = parse(*s, &v);
        if (rc != -1 || v != 42)
            fprintf(stderr, "  accepted \"%s\"\n", *s);
        CHECK_INT(rc, -1);
        CHECK_INT(v, 42);
    }
    int64_t v = 42;
    CHECK_INT(keel__parse_int64("5", 0, &v), -1);
    CHECK_INT(keel__parse_int64("1\0"
                                "2",
                                3, &v),
              -1); /* an embedded NUL is not a digit */
    CHECK_INT(v, 42);
}

static const char *fmt(double d, char *buf, size_t size) {
    size_t n = keel__format_double(d, buf, size);
    return n == strlen(buf) ? buf : "(length mismatch)";
}

TEST(format_double_writes_the_shortest_text_that_reads_back) {
    char b[32];
    CHECK_STR(fmt(0.0, b, sizeof b), "0");
    CHECK_STR(fmt(-0.0, b, sizeof b), "-0");
    CHECK_STR(fmt(1.0, b, sizeof b), "1");
    CHECK_STR(fmt(-2.5, b, sizeof b), "-2.5");
    CHECK_STR(fmt(0.1, b, sizeof b), "0.1");
    CHECK_STR(fmt(1e21, b, sizeof b), "1e+21");
    CHECK_STR(fmt(123456789012345.0, b, sizeof b), "123456789012345");
    /* Values that need 16 or 17 significant digits to come back exactly. */
    CHECK_STR(fmt(0.1 + 0.2, b, sizeof b), "0.30000000000000004");
    CHECK_STR(fmt(1.0 / 3.0, b, sizeof b), "0.3333333333333333");
    CHECK_STR(fmt(1.0 + DBL_EPSILON, b, sizeof b), "1.0000000000000002");
    CHECK_STR(fmt(DBL_MAX, b, sizeof b), "1.7976931348623157e+308");
    CHECK_STR(fmt(-DBL_MAX, b, sizeof b), "-1.7976931348623157e+308");
    CHECK_STR(fmt(DBL_MIN, b, sizeof b), "2.2250738585072014e-308");
    CHECK_STR(fmt(4.9406564584124654e-324, b, sizeof b), "4.94065645841247e-324");
    CHECK_STR(fmt(9007199254740993.0, b, sizeof b), "9007199254740992");
    CHECK_STR(fmt(0.1 * 3, b, sizeof b), "0.30000000000000004");
    CHECK_STR(fmt(2.0 / 3.0, b, sizeof b), "0.6666666666666666");
    /* Whatever the value, the text reads back as exactly it. */
    double d = 1.0;
    for (int i = 0; i < 2000; i++) {
        d = d * 1.37 + 0.001 * i;
        if (d > 1e300)
            d = 1.0 / d;
        fmt(d, b, sizeof b);
        CHECK(strtod(b, NULL) == d);
        fmt(-d, b, sizeof b);
        CHECK(strtod(b, NULL) == -d);
    }
}

TEST(format_double_names_nan_and_the_infinities) {
    char b[32];
    CHECK_STR(fmt(NAN, b, sizeof b), "NaN");
    CHECK_STR(fmt(-NAN, b, sizeof b), "NaN");
    CHECK_STR(fmt(INFINITY, b, sizeof b), "Infinity");
    CHECK_STR(fmt(-INFINITY, b, sizeof b), "-Infinity");
}

TEST(format_double_reports_the_length_it_needed_as_snprintf_does) {
    char b[8];
    CHECK_INT(keel__format_double(0.1 + 0.2, b, sizeof b), 19);
    CHECK_STR(b, "0.30000");
    CHECK_INT(keel__format_double(-INFINITY, b, 4), 9);
    CHECK_STR(b, "-In");
}

TEST(strtod_reads_the_c_syntax) {
    char *end;
    CHECK(keel__strtod("1.5", NULL) == 1.5);
    CHECK(keel__strtod("-2.25e3x", &end) == -2250.0);
    CHECK_STR(end, "x");
    CHECK(keel__strtod("0.30000000000000004", NULL) == 0.1 + 0.2);
    CHECK(keel__strtod("1,5", &end) == 1.0); /* a comma ends the number */
    CHECK_STR(end, ",5");
    CHECK(isinf(keel__strtod("Infinity", NULL)));
    CHECK(isnan(keel__strtod("NaN", NULL)));
    CHECK(keel__strtod("abc", &end) == 0.0);
    CHECK_STR(end, "abc");
    /* Hexadecimal floats are C syntax too; the fast path once read "0x10" as 0 ending at 'x'
     * (found by tests/fuzz/fuzz_numtext). */
    CHECK(keel__strtod("0x10", &end) == 16.0);
    CHECK_STR(end, "");
    CHECK(keel__strtod("-0X1p-1074", &end) == -0x1p-1074);
    CHECK_STR(end, "");
}

/* A small deterministic generator for the differential test below. */
static uint64_t next_random(uint64_t *state) {
    *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return *state >> 33;
}

/*
 * Short decimals are converted without strtod; whatever the shape (digits before and after the
 * point, leading zeros, exponents, signs), the result and the end position are strtod's, bit for
 * bit.
 */
TEST(strtod_short_decimals_are_exactly_strtods) {
    uint64_t state = 1;
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        char b[64];
        int n = 0;
        uint64_t r = next_random(&state);
        if (r & 1)
            b[n++] = '-';
        int before = (int)(next_random(&state) % 10), after = (int)(next_random(&state) % 12);
        for (int k = 0; k < before; k++)
            b[n++] = (char)('0' + (k == 0 && r & 2 ? 0 : next_random(&state) % 10));
        if (after || r & 4)
            b[n++] = '.';
        for (int k = 0; k < after; k++)
            b[n++] = (char)('0' + next_random(&state) % 10);
        if (r & 8)
            n += snprintf(b + n, sizeof b - (size_t)n, "e%d", (int)(next_random(&state) % 60) - 30);
        b[n++] = 'x';
        b[n] = '\0';
        char *e1, *e2;
        double got = keel__strtod(b, &e1), want = strtod(b, &e2);
        if (memcmp(&got, &want, sizeof got) != 0 || e1 != e2) {
            if (bad++ < 5)
                fprintf(stderr, "    \"%s\": %.17g, strtod %.17g\n", b, got, want);
        }
    }
    CHECK_INT(bad, 0);
    char *end;
    CHECK(signbit(keel__strtod("-0", NULL)));
    CHECK(keel__strtod(".5", NULL) == 0.5);
    CHECK(keel__strtod("5.", &end) == 5.0);
    CHECK_STR(end, "");
    CHECK(keel__strtod("1e", &end) == 1.0);
    CHECK_STR(end, "e");
    CHECK(keel__strtod(" 2", NULL) == 2.0);
    CHECK(keel__strtod("0.142857142", NULL) == 0.142857142);
    CHECK(keel__strtod("1e22", NULL) == 1e22);
    CHECK(keel__strtod("123456789012345e-22", NULL) == 123456789012345e-22);
}

/*
 * Under a locale whose decimal point is a comma, the text is still C's, and the thread's locale
 * is the same afterwards. Needs such a locale to be installed; without one only the locale
 * restoration is checked.
 */
TEST(a_decimal_comma_locale_changes_nothing) {
    static const char *const names[] = { "de_DE.UTF-8", "de_DE.utf8",  "fr_FR.UTF-8", "fr_FR.utf8",
                                         "nl_NL.UTF-8", "ru_RU.UTF-8", NULL };
    locale_t comma = (locale_t)0;
    for (const char *const *n = names; *n && !comma; n++)
        comma = newlocale(LC_NUMERIC_MASK, *n, (locale_t)0);
    locale_t before = comma ? uselocale(comma) : uselocale((locale_t)0);
    locale_t current = uselocale((locale_t)0);
    char b[32];
    if (comma) {
        char probe[16];
        snprintf(probe, sizeof probe, "%.1f", 1.5);
        CHECK_STR(probe, "1,5"); /* the locale is in force for printf */
    } else {
        printf("# no locale with a decimal comma is installed: only restoration is checked\n");
    }
    CHECK_STR(fmt(1.5, b, sizeof b), "1.5");
    CHECK_STR(fmt(0.1 + 0.2, b, sizeof b), "0.30000000000000004");
    CHECK(keel__strtod("1.5", NULL) == 1.5);
    CHECK(uselocale((locale_t)0) == current);
    if (comma) {
        uselocale(before);
        freelocale(comma);
    }
}

int main(void) {
    RUN(parse_int64_reads_the_whole_range);
    RUN(parse_int64_refuses_what_is_not_an_int64);
    RUN(format_double_writes_the_shortest_text_that_reads_back);
    RUN(format_double_names_nan_and_the_infinities);
    RUN(format_double_reports_the_length_it_needed_as_snprintf_does);
    RUN(strtod_reads_the_c_syntax);
    RUN(strtod_short_decimals_are_exactly_strtods);
    RUN(a_decimal_comma_locale_changes_nothing);
    return TEST_SUMMARY();
}
