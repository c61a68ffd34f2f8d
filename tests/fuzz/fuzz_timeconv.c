/* tests/fuzz/fuzz_timeconv.c - libFuzzer target: date, time, timestamp and UUID text codecs. */
#include "fuzz.h"

#include "core/timeconv.h"

/*
 * Every text a parser accepts must format to text that parses back to the same value, and every
 * value the formatters are given (taken from the input's bytes) must fit their buffers; values
 * in the parsers' ranges must come back unchanged.
 */

/* The first n bytes of data as a little-endian integer (n <= 8). */
static uint64_t le(const uint8_t *data, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)data[i] << (8 * i);
    return v;
}

static void check_text(const char *s, size_t n) {
    char *out = malloc(KEEL__TIME_TEXT_MAX);
    FUZZ_ASSERT(out != NULL);
    int32_t days, days2;
    int64_t us, us2;
    if (keel__parse_date(s, n, &days) == 0) {
        size_t m = keel__format_date(days, out);
        FUZZ_ASSERT(m < KEEL__TIME_TEXT_MAX);
        FUZZ_ASSERT(keel__parse_date(out, m, &days2) == 0 && days2 == days);
    }
    if (keel__parse_time(s, n, &us) == 0) {
        FUZZ_ASSERT(us >= 0 && us <= INT64_C(86400000000));
        size_t m = keel__format_time(us, out);
        FUZZ_ASSERT(keel__parse_time(out, m, &us2) == 0 && us2 == us);
    }
    if (keel__parse_timestamp(s, n, &us) == 0) {
        size_t m = keel__format_timestamp(us, out);
        FUZZ_ASSERT(keel__parse_timestamp(out, m, &us2) == 0 && us2 == us);
    }
    if (keel__parse_timestamptz(s, n, &us) == 0) {
        size_t m = keel__format_timestamptz(us, out);
        FUZZ_ASSERT(keel__parse_timestamptz(out, m, &us2) == 0 && us2 == us);
    }
    unsigned char id[16], id2[16];
    if (keel__parse_uuid(s, n, id) == 0) {
        keel__format_uuid(id, out);
        FUZZ_ASSERT(keel__parse_uuid(out, 36, id2) == 0 && memcmp(id, id2, 16) == 0);
    }
    free(out);
}

/* Formats values taken from the input bytes; reads back those inside the parsers' ranges. */
static void check_values(const uint8_t *data, size_t size) {
    char *out = malloc(KEEL__TIME_TEXT_MAX);
    FUZZ_ASSERT(out != NULL);
    if (size >= 4) {
        int32_t days = (int32_t)(uint32_t)le(data, 4), back;
        int64_t year;
        unsigned month, day;
        keel__civil_from_days(days, &year, &month, &day);
        FUZZ_ASSERT(month >= 1 && month <= 12 && day >= 1 && day <= 31);
        FUZZ_ASSERT(keel__days_from_civil(year, month, day) == days);
        size_t m = keel__format_date(days, out);
        FUZZ_ASSERT(m < KEEL__TIME_TEXT_MAX);
        /* PostgreSQL's date range: 4714-11-24 BC to 5874897-12-31. */
        if (days >= -2440588 && keel__parse_date(out, m, &back) == 0)
            FUZZ_ASSERT(back == days);
        else
            FUZZ_ASSERT(days < -2440588 || days > 2145042905);
    }
    if (size >= 8) {
        int64_t us = (int64_t)le(data, 8), back;
        size_t m = keel__format_timestamp(us, out);
        FUZZ_ASSERT(m < KEEL__TIME_TEXT_MAX);
        if (us >= INT64_C(-2440588) * INT64_C(86400000000))
            FUZZ_ASSERT(keel__parse_timestamp(out, m, &back) == 0 && back == us);
        m = keel__format_timestamptz(us, out);
        FUZZ_ASSERT(m < KEEL__TIME_TEXT_MAX);
        if (us >= INT64_C(-2440588) * INT64_C(86400000000))
            FUZZ_ASSERT(keel__parse_timestamptz(out, m, &back) == 0 && back == us);
        m = keel__format_time(us, out);
        FUZZ_ASSERT(m < KEEL__TIME_TEXT_MAX);
        FUZZ_ASSERT(keel__parse_time(out, m, &back) == 0);
    }
    if (size >= 16) {
        unsigned char id[16];
        keel__format_uuid(data, out);
        FUZZ_ASSERT(strlen(out) == 36);
        FUZZ_ASSERT(keel__parse_uuid(out, 36, id) == 0 && memcmp(id, data, 16) == 0);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The parsers take a length, not a C string: give them the exact bytes, in a buffer of
     * their own size so that reading past the end is caught. */
    char *s = malloc(size ? size : 1);
    FUZZ_ASSERT(s != NULL);
    if (size)
        memcpy(s, data, size);
    check_text(s, size);
    free(s);
    check_values(data, size);
    return 0;
}
