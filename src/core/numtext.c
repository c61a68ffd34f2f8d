/* src/core/numtext.c - numbers to and from text, the same whatever the host's locale. */
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/numtext.h"

/*
 * The C locale, created once. Number text exchanged with servers always uses '.', and a host
 * program (or a Python module) may have set a locale with a decimal comma. (locale_t)0 when it
 * could not be created, which only happens when memory runs out.
 */
static locale_t numtext_locale;
static pthread_once_t numtext_locale_once = PTHREAD_ONCE_INIT;

static void numtext_locale_init(void) {
    numtext_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t numtext_c_locale(void) {
    pthread_once(&numtext_locale_once, numtext_locale_init);
    return numtext_locale;
}

int keel__parse_int64(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    uint64_t u = 0;
    if (n && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n)
        return -1;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || u > (UINT64_MAX - d) / 10)
            return -1;
        u = u * 10 + d;
    }
    if (neg) {
        if (u > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        if (u > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)u;
    }
    return 0;
}

double keel__strtod(const char *s, char **end) {
    locale_t loc = numtext_c_locale();
    return loc ? strtod_l(s, end, loc) : strtod(s, end);
}

size_t keel__format_double(double d, char *out, size_t size) {
    if (isnan(d))
        return (size_t)snprintf(out, size, "NaN");
    if (isinf(d))
        return (size_t)snprintf(out, size, "%s", d > 0 ? "Infinity" : "-Infinity");
    locale_t loc = numtext_c_locale();
    locale_t old = loc ? uselocale(loc) : (locale_t)0;
    int len = 0;
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(out, size, "%.*g", prec, d);
        if (prec == 17 || strtod(out, NULL) == d)
            break;
    }
    if (loc) {
        uselocale(old);
    } else {
        /* Without the C locale the host's is in force: at least a decimal comma is undone. */
        for (size_t i = 0; i < size && out[i]; i++)
            if (out[i] == ',')
                out[i] = '.';
    }
    return len > 0 ? (size_t)len : 0;
}
