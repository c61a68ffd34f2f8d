/* tests/fuzz/fuzz_numtext.c - libFuzzer target: integer and floating-point text codecs. */
#include "fuzz.h"

#include <errno.h>
#include <locale.h>
#include <math.h>

#include "core/numtext.h"

/*
 * Differential checks against the C library: keel__parse_int64 against strtoll on the texts it
 * must accept, keel__strtod against strtod_l in the C locale (same value bit for bit, same end),
 * and keel__format_double read back exactly for the double made of the first eight bytes.
 */

static locale_t c_locale(void) {
    static locale_t loc;
    if (!loc)
        loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    FUZZ_ASSERT(loc != (locale_t)0);
    return loc;
}

static void check_int64(const char *s, size_t n) {
    int64_t got = 12345;
    int rc = keel__parse_int64(s, n, &got);
    /* The reference: optional sign, then at least one digit and nothing else, within range. */
    size_t i = n && (s[0] == '+' || s[0] == '-');
    int well_formed = i < n;
    for (size_t j = i; j < n; j++)
        if (s[j] < '0' || s[j] > '9')
            well_formed = 0;
    if (!well_formed) {
        FUZZ_ASSERT(rc == -1 && got == 12345);
        return;
    }
    errno = 0;
    long long want = strtoll(s, NULL, 10);
    if (errno == ERANGE) {
        FUZZ_ASSERT(rc == -1 && got == 12345);
    } else {
        FUZZ_ASSERT(rc == 0 && got == want);
    }
}

static void check_strtod(const char *s) {
    char *end1 = NULL, *end2 = NULL;
    double a = keel__strtod(s, &end1);
    double b = strtod_l(s, &end2, c_locale());
    FUZZ_ASSERT(end1 == end2);
    if (isnan(a) || isnan(b))
        FUZZ_ASSERT(isnan(a) && isnan(b));
    else
        FUZZ_ASSERT(memcmp(&a, &b, sizeof a) == 0);
}

static void check_format(const uint8_t *data) {
    double d;
    memcpy(&d, data, sizeof d);
    char text[32];
    size_t n = keel__format_double(d, text, sizeof text);
    FUZZ_ASSERT(n < sizeof text && strlen(text) == n);
    char *end;
    double back = keel__strtod(text, &end);
    FUZZ_ASSERT(*end == '\0');
    if (isnan(d))
        FUZZ_ASSERT(isnan(back));
    else
        FUZZ_ASSERT(memcmp(&back, &d, sizeof d) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_cstring(data, size);
    size_t n = strlen(s);
    check_int64(s, n);
    check_strtod(s);
    if (size >= sizeof(double))
        check_format(data);
    free(s);
    return 0;
}
