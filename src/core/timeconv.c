/* src/core/timeconv.c - Gregorian calendar arithmetic and ISO text codecs for times and UUIDs. */
#include "core/timeconv.h"

#include <stdbool.h>

#define USECS_PER_SEC INT64_C(1000000)
#define USECS_PER_DAY INT64_C(86400000000)

/* Days in a 400-year Gregorian cycle, and from 0000-03-01 to 1970-01-01 (both astronomical). */
#define DAYS_PER_ERA 146097
#define DAYS_0000_03_01_TO_EPOCH 719468

/*
 * The ranges the parsers accept. Dates: PostgreSQL's, from 4714-11-24 BC (Julian day 0) to
 * 5874897-12-31, as days since 1970-01-01 (values from PostgreSQL; the tests check them against
 * the calendar functions). Timestamps start at the same day; PostgreSQL's end (294277-01-01) lies
 * beyond what int64 microseconds since 1970 can hold, so the last accepted instant is the last
 * representable one, 294247-01-10 04:00:54.775807.
 */
#define DATE_MIN_DAYS INT64_C(-2440588)
#define DATE_MAX_DAYS INT64_C(2145042905)
/* Largest year numbers (as written, before any BC) that can fall inside the date range. */
#define YEAR_MAX_AD 5874897
#define YEAR_MAX_BC 4714

/* Timezone displacements PostgreSQL accepts are below 16 hours. */
#define OFFSET_MAX_HOURS 15

/* Division rounding towards negative infinity (b > 0), as calendar eras need for early years. */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static bool is_leap(int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

static unsigned days_in_month(int64_t year, unsigned month) {
    static const unsigned char dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return month == 2 && is_leap(year) ? 29 : dim[month - 1];
}

/*
 * The calendar is counted in 400-year eras that start on March 1, so that the leap day is the
 * last day of each year and months have a fixed offset within the year: March is month 0 and the
 * day of the year of the first of month m is (153 m + 2) / 5. An era always has 146097 days.
 * The arithmetic is done in 64 bits so that any year whose day count fits is exact.
 */
static int64_t days_from_civil64(int64_t year, unsigned month, unsigned day) {
    int64_t y = month <= 2 ? year - 1 : year;
    int64_t era = floor_div(y, 400);
    int64_t year_of_era = y - era * 400;
    int64_t month_from_march = month > 2 ? (int64_t)month - 3 : (int64_t)month + 9;
    int64_t day_of_year = (153 * month_from_march + 2) / 5 + (int64_t)day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * DAYS_PER_ERA + day_of_era - DAYS_0000_03_01_TO_EPOCH;
}

/* Callers keep to years whose day count fits in int32 (about 5.8 million years either side of
 * 1970); the parsers check their ranges before converting. */
int32_t keel__days_from_civil(int64_t year, unsigned month, unsigned day) {
    return (int32_t)days_from_civil64(year, month, day);
}

void keel__civil_from_days(int32_t days, int64_t *year, unsigned *month, unsigned *day) {
    int64_t z = (int64_t)days + DAYS_0000_03_01_TO_EPOCH;
    int64_t era = floor_div(z, DAYS_PER_ERA);
    int64_t day_of_era = z - era * DAYS_PER_ERA;
    /* Removing the leap days seen so far (one per 4 years, none per 100, one per 400, with the
     * era's final day handled by the last term) leaves a count divisible into 365-day years. */
    int64_t year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / (DAYS_PER_ERA - 1)) /
        365;
    int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    int64_t month_from_march = (5 * day_of_year + 2) / 153;
    unsigned m = (unsigned)(month_from_march < 10 ? month_from_march + 3 : month_from_march - 9);
    *day = (unsigned)(day_of_year - (153 * month_from_march + 2) / 5 + 1);
    *month = m;
    *year = year_of_era + era * 400 + (m <= 2 ? 1 : 0);
}

/* ---- parsing ---- */

/* A cursor over text that is not NUL-terminated. */
typedef struct cursor {
    const char *p;
    const char *end;
} cursor;

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Reads exactly count digits. */
static bool read_digits(cursor *c, unsigned count, unsigned *value) {
    unsigned v = 0;
    if ((size_t)(c->end - c->p) < count)
        return false;
    for (unsigned i = 0; i < count; i++) {
        if (!is_digit(c->p[i]))
            return false;
        v = v * 10 + (unsigned)(c->p[i] - '0');
    }
    c->p += count;
    *value = v;
    return true;
}

static bool read_char(cursor *c, char ch) {
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* The fields of YYYY-MM-DD, unvalidated: the year as written (AD or BC is known only later). */
typedef struct ymd {
    int64_t year;
    unsigned month;
    unsigned day;
} ymd;

/* Reads YYYY-MM-DD where the year has 4 to 7 digits (PostgreSQL pads to 4 and writes more for
 * years after 9999; 7 digits cover its last year, 5874897). */
static bool read_ymd(cursor *c, ymd *out) {
    int64_t year = 0;
    unsigned ndigits = 0;
    while (c->p < c->end && is_digit(*c->p) && ndigits < 8) {
        year = year * 10 + (*c->p - '0');
        c->p++;
        ndigits++;
    }
    if (ndigits < 4 || ndigits > 7)
        return false;
    out->year = year;
    return read_char(c, '-') && read_digits(c, 2, &out->month) && read_char(c, '-') &&
           read_digits(c, 2, &out->day);
}

/* Consumes a " BC" suffix when present. */
static bool read_bc(cursor *c) {
    if (c->end - c->p >= 3 && c->p[0] == ' ' && c->p[1] == 'B' && c->p[2] == 'C') {
        c->p += 3;
        return true;
    }
    return false;
}

/*
 * Validates the date fields and converts them to days since 1970-01-01 within PostgreSQL's date
 * range. Year 0 does not exist in either era: 1 BC is astronomical year 0.
 */
static bool ymd_to_days(const ymd *f, bool bc, int64_t *days) {
    if (f->year < 1 || f->year > (bc ? YEAR_MAX_BC : YEAR_MAX_AD))
        return false;
    int64_t year = bc ? 1 - f->year : f->year;
    if (f->month < 1 || f->month > 12 || f->day < 1 || f->day > days_in_month(year, f->month))
        return false;
    int64_t d = days_from_civil64(year, f->month, f->day);
    if (d < DATE_MIN_DAYS || d > DATE_MAX_DAYS)
        return false;
    *days = d;
    return true;
}

/*
 * Reads HH:MM[:SS[.f…]] as microseconds since midnight. More than six fraction digits are rounded
 * to the nearest microsecond, ties to an even microsecond (which is what PostgreSQL yields for
 * "…0.0000005", "…0.0000015" and "23:59:59.9999995"); rounding may reach 24:00:00 exactly.
 * 24:00:00 itself is accepted only with every other field zero; leap seconds are rejected.
 */
static bool read_time(cursor *c, int64_t *micros) {
    unsigned hh, mm, ss = 0;
    int64_t frac = 0;
    bool frac_nonzero = false;
    bool round_up = false;

    if (!read_digits(c, 2, &hh) || !read_char(c, ':') || !read_digits(c, 2, &mm))
        return false;
    if (read_char(c, ':')) {
        if (!read_digits(c, 2, &ss))
            return false;
        if (read_char(c, '.')) {
            unsigned ndigits = 0;
            int rounding_digit = 0;
            bool sticky = false;
            while (c->p < c->end && is_digit(*c->p)) {
                int digit = *c->p - '0';
                if (ndigits < 6)
                    frac = frac * 10 + digit;
                else if (ndigits == 6)
                    rounding_digit = digit;
                else if (digit != 0)
                    sticky = true;
                if (digit != 0)
                    frac_nonzero = true;
                ndigits++;
                c->p++;
            }
            if (ndigits == 0)
                return false;
            for (unsigned i = ndigits; i < 6; i++)
                frac *= 10;
            round_up = rounding_digit > 5 || (rounding_digit == 5 && (sticky || (frac & 1) != 0));
        }
    }
    if (hh > 24 || mm > 59 || ss > 59)
        return false;
    if (hh == 24 && (mm != 0 || ss != 0 || frac_nonzero))
        return false;
    *micros = ((int64_t)hh * 3600 + mm * 60 + ss) * USECS_PER_SEC + frac + (round_up ? 1 : 0);
    return true;
}

/* Reads Z, ±HH, ±HHMM, ±HHMMSS, ±HH:MM or ±HH:MM:SS as seconds east of UTC. */
static bool read_offset(cursor *c, int64_t *seconds) {
    unsigned hh, mm = 0, ss = 0;
    int sign;
    if (read_char(c, 'Z') || read_char(c, 'z')) {
        *seconds = 0;
        return true;
    }
    if (read_char(c, '+'))
        sign = 1;
    else if (read_char(c, '-'))
        sign = -1;
    else
        return false;
    if (!read_digits(c, 2, &hh))
        return false;
    if (read_char(c, ':')) {
        if (!read_digits(c, 2, &mm))
            return false;
        if (read_char(c, ':') && !read_digits(c, 2, &ss))
            return false;
    } else if (c->p < c->end && is_digit(*c->p)) {
        if (!read_digits(c, 2, &mm))
            return false;
        if (c->p < c->end && is_digit(*c->p) && !read_digits(c, 2, &ss))
            return false;
    }
    if (hh > OFFSET_MAX_HOURS || mm > 59 || ss > 59)
        return false;
    *seconds = sign * ((int64_t)hh * 3600 + mm * 60 + ss);
    return true;
}

int keel__parse_date(const char *s, size_t n, int32_t *days) {
    cursor c = { s, s + n };
    ymd f;
    int64_t d;
    if (!s || !read_ymd(&c, &f))
        return -1;
    bool bc = read_bc(&c);
    if (c.p != c.end || !ymd_to_days(&f, bc, &d))
        return -1;
    *days = (int32_t)d;
    return 0;
}

int keel__parse_time(const char *s, size_t n, int64_t *micros) {
    cursor c = { s, s + n };
    int64_t t;
    if (!s || !read_time(&c, &t) || c.p != c.end)
        return -1;
    *micros = t;
    return 0;
}

/* The two decimal digits at s as a number, or -1. */
static int two_digits(const char *s) {
    unsigned a = (unsigned)(unsigned char)s[0] - '0', b = (unsigned)(unsigned char)s[1] - '0';
    return a > 9 || b > 9 ? -1 : (int)(a * 10 + b);
}

/*
 * The text servers write for most timestamps, "YYYY-MM-DD hh:mm:ss" with up to six digits of
 * fraction and a year from 1 to 9999, read at fixed positions. Returns 0, or -1 for any other
 * text, which the general parser then judges (it gives the same value for this one).
 */
static int parse_plain_timestamp(const char *s, size_t n, int64_t *micros) {
    if (n < 19 || n == 20 || n > 26 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' ||
        s[16] != ':' || (n > 19 && s[19] != '.'))
        return -1;
    int yh = two_digits(s), yl = two_digits(s + 2), mo = two_digits(s + 5);
    int d = two_digits(s + 8), h = two_digits(s + 11), mi = two_digits(s + 14);
    int se = two_digits(s + 17);
    if (yh < 0 || yl < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        se < 0 || se > 59)
        return -1;
    int64_t year = yh * 100 + yl;
    if (year == 0 || (unsigned)d > days_in_month(year, (unsigned)mo))
        return -1;
    int64_t frac = 0;
    for (size_t i = 20; i < 26; i++) {
        unsigned c = i < n ? (unsigned)(unsigned char)s[i] - '0' : 0;
        if (c > 9)
            return -1;
        frac = frac * 10 + c;
    }
    *micros = days_from_civil64(year, (unsigned)mo, (unsigned)d) * USECS_PER_DAY +
              ((int64_t)(h * 60 + mi) * 60 + se) * USECS_PER_SEC + frac;
    return 0;
}

/*
 * The common body of the timestamp parsers: date, 'T' or ' ', time, an offset when with_offset,
 * and an optional " BC" (PostgreSQL writes it last, after any offset). The result, shifted to
 * UTC by the offset, must lie in the timestamp range described at the top of this file.
 */
static int parse_timestamp_text(const char *s, size_t n, bool with_offset, int64_t *micros) {
    if (s && !with_offset && parse_plain_timestamp(s, n, micros) == 0)
        return 0;
    cursor c = { s, s + n };
    ymd f;
    int64_t days, tod, offset = 0;
    if (!s || !read_ymd(&c, &f))
        return -1;
    if (!read_char(&c, 'T') && !read_char(&c, ' '))
        return -1;
    if (!read_time(&c, &tod))
        return -1;
    if (with_offset && !read_offset(&c, &offset))
        return -1;
    bool bc = read_bc(&c);
    if (c.p != c.end || !ymd_to_days(&f, bc, &days))
        return -1;
    /* The offset is applied to the time of day first, so that a local time past the end can
     * still come back into range. Overflow of the day's start means the instant is out of range:
     * any time on that day minus the largest offset (under 16 hours) is still past INT64_MAX. */
    int64_t t;
    if (__builtin_mul_overflow(days, USECS_PER_DAY, &t) ||
        __builtin_add_overflow(t, tod - offset * USECS_PER_SEC, &t))
        return -1;
    if (t < DATE_MIN_DAYS * USECS_PER_DAY)
        return -1;
    *micros = t;
    return 0;
}

int keel__parse_timestamp(const char *s, size_t n, int64_t *micros) {
    return parse_timestamp_text(s, n, false, micros);
}

int keel__parse_timestamptz(const char *s, size_t n, int64_t *micros_utc) {
    return parse_timestamp_text(s, n, true, micros_utc);
}

/* ---- formatting ---- */

static char *put2(char *o, unsigned v) {
    o[0] = (char)('0' + v / 10);
    o[1] = (char)('0' + v % 10);
    return o + 2;
}

/* Writes a non-negative year with at least four digits, as PostgreSQL does. */
static char *put_year(char *o, int64_t year) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + year % 10);
        year /= 10;
    } while (year > 0);
    while (n < 4)
        tmp[n++] = '0';
    while (n > 0)
        *o++ = tmp[--n];
    return o;
}

/* Writes the date of days as YYYY-MM-DD with the year number of its era; returns whether BC. */
static char *put_date(char *o, int32_t days, bool *bc) {
    int64_t year;
    unsigned month, day;
    keel__civil_from_days(days, &year, &month, &day);
    *bc = year <= 0;
    o = put_year(o, *bc ? 1 - year : year);
    *o++ = '-';
    o = put2(o, month);
    *o++ = '-';
    return put2(o, day);
}

/* Writes HH:MM:SS and, when non-zero, .ffffff for a time of day in [0, 24:00:00]. */
static char *put_time(char *o, int64_t micros) {
    int64_t secs = micros / USECS_PER_SEC;
    unsigned frac = (unsigned)(micros % USECS_PER_SEC);
    o = put2(o, (unsigned)(secs / 3600));
    *o++ = ':';
    o = put2(o, (unsigned)(secs / 60 % 60));
    *o++ = ':';
    o = put2(o, (unsigned)(secs % 60));
    if (frac) {
        *o++ = '.';
        for (int i = 5; i >= 0; i--) {
            o[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        o += 6;
    }
    return o;
}

static char *put_str(char *o, const char *s) {
    while (*s)
        *o++ = *s++;
    return o;
}

size_t keel__format_date(int32_t days, char *out) {
    bool bc;
    char *o = put_date(out, days, &bc);
    if (bc)
        o = put_str(o, " BC");
    *o = '\0';
    return (size_t)(o - out);
}

/* Splits micros into whole days (rounded down) and the non-negative remainder, without the
 * overflow that multiplying the days back would risk near the ends of int64. */
static int64_t split_day(int64_t micros, int64_t *tod) {
    int64_t days = micros / USECS_PER_DAY;
    int64_t rem = micros % USECS_PER_DAY;
    if (rem < 0) {
        rem += USECS_PER_DAY;
        days--;
    }
    *tod = rem;
    return days;
}

/* A time outside [0, 24:00:00] is written as its time of day (the value modulo one day);
 * exactly 24:00:00 is written as such, as PostgreSQL does. */
size_t keel__format_time(int64_t micros, char *out) {
    if (micros != USECS_PER_DAY)
        split_day(micros, &micros);
    char *o = put_time(out, micros);
    *o = '\0';
    return (size_t)(o - out);
}

/* Writes a timestamp, with suffix (may be "") between the time and any " BC". */
static size_t format_ts(int64_t micros, const char *suffix, char *out) {
    int64_t tod;
    int64_t days = split_day(micros, &tod);
    bool bc;
    char *o = put_date(out, (int32_t)days, &bc);
    *o++ = ' ';
    o = put_time(o, tod);
    o = put_str(o, suffix);
    if (bc)
        o = put_str(o, " BC");
    *o = '\0';
    return (size_t)(o - out);
}

size_t keel__format_timestamp(int64_t micros, char *out) { return format_ts(micros, "", out); }

size_t keel__format_timestamptz(int64_t micros_utc, char *out) {
    return format_ts(micros_utc, "+00:00", out);
}

int keel__parse_duration(const char *s, size_t n, int64_t *micros) {
    if (!s)
        return -1;
    cursor c = { s, s + n };
    bool neg = read_char(&c, '-');
    int64_t hours = 0;
    unsigned digits = 0, mm, ss;
    while (c.p < c.end && is_digit(*c.p) && digits < 9) {
        hours = hours * 10 + (*c.p++ - '0');
        digits++;
    }
    if (!digits || !read_char(&c, ':') || !read_digits(&c, 2, &mm) || !read_char(&c, ':') ||
        !read_digits(&c, 2, &ss) || mm > 59 || ss > 59)
        return -1;
    int64_t frac = 0;
    if (read_char(&c, '.')) {
        unsigned nf = 0;
        while (c.p < c.end && is_digit(*c.p) && nf < 6) {
            frac = frac * 10 + (*c.p++ - '0');
            nf++;
        }
        if (!nf)
            return -1;
        for (; nf < 6; nf++)
            frac *= 10;
    }
    if (c.p != c.end)
        return -1;
    int64_t t = ((hours * 60 + mm) * 60 + ss) * USECS_PER_SEC + frac;
    *micros = neg ? -t : t;
    return 0;
}

size_t keel__format_duration(int64_t micros, char *out) {
    char *o = out;
    uint64_t mag = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    if (micros < 0)
        *o++ = '-';
    uint64_t secs = mag / USECS_PER_SEC, hours = secs / 3600;
    unsigned frac = (unsigned)(mag % USECS_PER_SEC);
    char tmp[24];
    int nd = 0;
    do {
        tmp[nd++] = (char)('0' + hours % 10);
        hours /= 10;
    } while (hours > 0);
    if (nd < 2)
        tmp[nd++] = '0';
    while (nd > 0)
        *o++ = tmp[--nd];
    *o++ = ':';
    o = put2(o, (unsigned)(secs / 60 % 60));
    *o++ = ':';
    o = put2(o, (unsigned)(secs % 60));
    if (frac) {
        *o++ = '.';
        for (int i = 5; i >= 0; i--) {
            o[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        o += 6;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ---- UUID ---- */

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int keel__parse_uuid(const char *s, size_t n, unsigned char out[16]) {
    unsigned char bytes[16];
    if (!s)
        return -1;
    if (n == 38 && s[0] == '{' && s[37] == '}') {
        s++;
        n -= 2;
    }
    if (n != 36)
        return -1;
    size_t j = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        bytes[j++] = (unsigned char)(hi << 4 | lo);
        i += 2;
    }
    for (j = 0; j < 16; j++)
        out[j] = bytes[j];
    return 0;
}

void keel__format_uuid(const unsigned char in[16], char *out) {
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[in[i] >> 4];
        *o++ = hex[in[i] & 15];
    }
    *o = '\0';
}
