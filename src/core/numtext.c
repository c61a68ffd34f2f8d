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

static void numtext_locale_init(void) { numtext_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

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
    /* Up to 18 digits cannot overflow, which spares the check per digit in the common case. */
    if (n - i <= 18) {
        for (; i < n; i++) {
            unsigned d = (unsigned)(unsigned char)s[i] - '0';
            if (d > 9)
                return -1;
            u = u * 10 + d;
        }
        *out = neg ? -(int64_t)u : (int64_t)u;
        return 0;
    }
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

/*
 * The plain decimals servers mostly write ("-12.5", "0.142857142", "1e-7") with at most 15
 * significant digits and a small power of ten, converted exactly: the digits as an integer and
 * 10^|e| (e <= 22) are both exact doubles, and one IEEE multiplication or division of exact
 * operands is correctly rounded, so the result is the one strtod gives (Clinger's fast path).
 * Returns 0 with *out and *end set, or -1 when the text needs strtod.
 */
static int numtext_fast_double(const char *s, double *out, const char **end) {
    static const double pow10[] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                    1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };
    const char *p = s;
    int neg = 0, digits = 0, exp10 = 0;
    uint64_t m = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    /* A hexadecimal float ("0x1p-3") is strtod's too: its "0" is not a decimal number. */
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        return -1;
    const char *start = p;
    for (; *p >= '0' && *p <= '9'; p++) {
        /* Leading zeros are not significant digits. */
        if (m || *p != '0')
            digits++;
        m = m * 10 + (uint64_t)(*p - '0');
        if (digits > 15)
            return -1;
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (m || *p != '0')
                digits++;
            m = m * 10 + (uint64_t)(*p - '0');
            exp10--;
            if (digits > 15)
                return -1;
        }
    }
    /* No digit at all ("", ".", "-", "inf", "nan", hexadecimal…): strtod's business. */
    if (p == start || (p == start + 1 && *start == '.'))
        return -1;
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        int eneg = 0, e = 0;
        if (*q == '-' || *q == '+')
            eneg = *q++ == '-';
        if (*q < '0' || *q > '9')
            return -1;
        for (; *q >= '0' && *q <= '9'; q++) {
            e = e * 10 + (*q - '0');
            if (e > 1000)
                return -1;
        }
        exp10 += eneg ? -e : e;
        p = q;
    }
    if (exp10 < -22 || exp10 > 22)
        return -1;
    double d = (double)m;
    d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
    *out = neg ? -d : d;
    *end = p;
    return 0;
}

double keel__strtod(const char *s, char **end) {
    double d;
    const char *stop;
    if (numtext_fast_double(s, &d, &stop) == 0) {
        if (end)
            *end = (char *)stop;
        return d;
    }
    locale_t loc = numtext_c_locale();
    return loc ? strtod_l(s, end, loc) : strtod(s, end);
}

double keel__float_shortest(float f) {
    if (!isfinite(f))
        return (double)f;
    locale_t loc = numtext_c_locale();
    locale_t old = loc ? uselocale(loc) : (locale_t)0;
    char text[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, (double)f);
        if (prec == 9 || strtof(text, NULL) == f)
            break;
    }
    double d = strtod(text, NULL);
    if (loc)
        uselocale(old);
    return d;
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
