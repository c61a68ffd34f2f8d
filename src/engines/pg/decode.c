/* src/engines/pg/decode.c - PostgreSQL result values in binary format. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>

#include "core/numtext.h"
#include "core/timeconv.h"
#include "engines/pg/codec.h"
#include "engines/pg/decode.h"
#include "engines/pg/describe.h"

/* PostgreSQL counts dates and timestamps from 2000-01-01, keel from 1970-01-01. */
#define PGD_EPOCH_DAYS 10957
#define PGD_EPOCH_MICROS INT64_C(946684800000000)
/* numeric's sign word, and the largest display scale numeric_recv accepts. */
#define PGD_NUMERIC_NEG 0x4000
#define PGD_NUMERIC_NAN 0xC000
#define PGD_NUMERIC_PINF 0xD000
#define PGD_NUMERIC_NINF 0xF000
#define PGD_NUMERIC_MAX_DSCALE 0x3FFF
/* A range's flags byte (rangetypes.h). */
#define PGD_RANGE_EMPTY 0x01
#define PGD_RANGE_LB_INC 0x02
#define PGD_RANGE_UB_INC 0x04
#define PGD_RANGE_LB_INF 0x08
#define PGD_RANGE_UB_INF 0x10

/* The scalar types decoded from binary. */
enum {
    PGD_BOOL = 16,
    PGD_BYTEA = 17,
    PGD_NAME = 19,
    PGD_INT8 = 20,
    PGD_INT2 = 21,
    PGD_INT4 = 23,
    PGD_TEXT = 25,
    PGD_OID = 26,
    PGD_JSON = 114,
    PGD_CIDR = 650,
    PGD_FLOAT4 = 700,
    PGD_FLOAT8 = 701,
    PGD_INET = 869,
    PGD_BPCHAR = 1042,
    PGD_VARCHAR = 1043,
    PGD_DATE = 1082,
    PGD_TIME = 1083,
    PGD_TIMESTAMP = 1114,
    PGD_TIMESTAMPTZ = 1184,
    PGD_INTERVAL = 1186,
    PGD_TIMETZ = 1266,
    PGD_NUMERIC = 1700,
    PGD_VOID = 2278,
    PGD_UUID = 2950,
    PGD_JSONB = 3802
};

static int pgd_scalar(Oid oid) {
    switch (oid) {
    case PGD_BOOL:
    case PGD_BYTEA:
    case PGD_NAME:
    case PGD_INT8:
    case PGD_INT2:
    case PGD_INT4:
    case PGD_TEXT:
    case PGD_OID:
    case PGD_JSON:
    case PGD_CIDR:
    case PGD_FLOAT4:
    case PGD_FLOAT8:
    case PGD_INET:
    case PGD_BPCHAR:
    case PGD_VARCHAR:
    case PGD_DATE:
    case PGD_TIME:
    case PGD_TIMESTAMP:
    case PGD_TIMESTAMPTZ:
    case PGD_INTERVAL:
    case PGD_TIMETZ:
    case PGD_NUMERIC:
    case PGD_VOID:
    case PGD_UUID:
    case PGD_JSONB:
        return 1;
    default:
        return 0;
    }
}

int keel__pg_binary_ok(Oid oid) {
    if (pgd_scalar(oid) || keel__pg_range_subtype(oid))
        return 1;
    Oid elem = keel__pg_array_elem_oid(oid);
    return elem && (pgd_scalar(elem) || keel__pg_range_subtype(elem));
}

int keel__pg_binary_result_ok(const PGresult *r) {
    int n = PQnfields(r);
    for (int i = 0; i < n; i++)
        if (!keel__pg_binary_ok(PQftype(r, i)))
            return 0;
    return 1;
}

static uint32_t get32(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get16(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint64_t get64(const char *s) { return (uint64_t)get32(s) << 32 | get32(s + 4); }

/* Writes why the bytes are not a value; returns -2, "malformed". */
__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return -2;
}

/* The type's name for messages. */
static const char *pgd_name(Oid oid) {
    const char *name = keel__pg_type_name(oid);
    return name ? name : "unknown";
}

static int wrong_length(Oid oid, size_t n, size_t want, char *why, size_t size) {
    return bad(why, size, "a binary %s value of %zu bytes (it has %zu)", pgd_name(oid), n, want);
}

/* Text made here (a timetz, an infinite date, a numeric) as v, of type t, in res. */
static int as_text(keel_result *res, keel_type t, const char *s, size_t n, keel_value *v) {
    return keel__result_set_text(res, v, t, s, n) == 0 ? 0 : -1;
}

/* "HH:MM:SS[.ffffff]" as PostgreSQL writes a time of day (trailing zeros of the fraction
 * dropped) into out (at least 32 bytes); its length. */
static size_t pgd_time_text(int64_t micros, char *out) {
    uint64_t us = (uint64_t)micros;
    uint64_t secs = us / 1000000;
    unsigned frac = (unsigned)(us % 1000000);
    int n = snprintf(out, 32, "%02llu:%02u:%02u", (unsigned long long)(secs / 3600),
                     (unsigned)(secs / 60 % 60), (unsigned)(secs % 60));
    if (frac) {
        char f[8];
        snprintf(f, sizeof f, ".%06u", frac);
        size_t k = 7;
        while (f[k - 1] == '0')
            k--;
        memcpy(out + n, f, k);
        n += (int)k;
        out[n] = '\0';
    }
    return (size_t)n;
}

/* A timetz (time of day, then the zone in seconds west of UTC) as PostgreSQL's text. */
static int pgd_timetz(keel_result *res, const char *s, keel_value *v, char *why, size_t size) {
    int64_t micros = (int64_t)get64(s);
    int32_t west = (int32_t)get32(s + 8);
    if (micros < 0 || micros > INT64_C(86400000000) || west < -15 * 3600 - 59 * 60 - 59 ||
        west > 15 * 3600 + 59 * 60 + 59)
        return bad(why, size, "a binary time with time zone value out of range");
    char text[64];
    size_t n = pgd_time_text(micros, text);
    int east = -west, mag = east < 0 ? -east : east;
    int hh = mag / 3600, mm = mag / 60 % 60, ss = mag % 60;
    char sign = east < 0 ? '-' : '+';
    if (ss)
        n += (size_t)snprintf(text + n, sizeof text - n, "%c%02d:%02d:%02d", sign, hh, mm, ss);
    else if (mm)
        n += (size_t)snprintf(text + n, sizeof text - n, "%c%02d:%02d", sign, hh, mm);
    else
        n += (size_t)snprintf(text + n, sizeof text - n, "%c%02d", sign, hh);
    return as_text(res, KEEL_TYPE_TEXT, text, n, v);
}

/* A numeric as numeric_out writes it: its digits to the display scale, "NaN", "Infinity". */
static int pgd_numeric(keel_result *res, const char *s, size_t n, keel_value *v, char *why,
                       size_t size) {
    if (n < 8)
        return wrong_length(PGD_NUMERIC, n, 8, why, size);
    uint16_t ndigits = get16(s), sign = get16(s + 4), dscale = get16(s + 6);
    int16_t weight = (int16_t)get16(s + 2);
    if (n != 8 + 2 * (size_t)ndigits)
        return bad(why, size, "a binary numeric value of %zu bytes with %u digits", n,
                   (unsigned)ndigits);
    if (sign == PGD_NUMERIC_NAN || sign == PGD_NUMERIC_PINF || sign == PGD_NUMERIC_NINF) {
        const char *word = sign == PGD_NUMERIC_NAN    ? "NaN"
                           : sign == PGD_NUMERIC_PINF ? "Infinity"
                                                      : "-Infinity";
        return as_text(res, KEEL_TYPE_NUMERIC, word, strlen(word), v);
    }
    if ((sign != 0 && sign != PGD_NUMERIC_NEG) || dscale > PGD_NUMERIC_MAX_DSCALE)
        return bad(why, size, "a binary numeric value with sign 0x%04x and scale %u",
                   (unsigned)sign, (unsigned)dscale);
    for (size_t i = 0; i < ndigits; i++)
        if (get16(s + 8 + 2 * i) > 9999)
            return bad(why, size, "a binary numeric value with a digit over 9999");
    /* The sign, the integer part (at least "0"), the point and dscale digits. */
    size_t intdigits = weight >= 0 ? 4 * ((size_t)weight + 1) : 1;
    size_t cap = 2 + intdigits + 1 + dscale + 4;
    char *out = keel__result_alloc(res, cap);
    if (!out)
        return -1;
    size_t o = 0;
    if (sign == PGD_NUMERIC_NEG)
        out[o++] = '-';
    int d;
    if (weight < 0) {
        d = weight + 1;
        out[o++] = '0';
    } else {
        for (d = 0; d <= weight; d++) {
            unsigned dig = d < ndigits ? get16(s + 8 + 2 * (size_t)d) : 0;
            char four[5] = { (char)('0' + dig / 1000), (char)('0' + dig / 100 % 10),
                             (char)('0' + dig / 10 % 10), (char)('0' + dig % 10), 0 };
            size_t skip = 0;
            if (d == 0) /* no leading zeros in the first group */
                while (skip < 3 && four[skip] == '0')
                    skip++;
            memcpy(out + o, four + skip, 4 - skip);
            o += 4 - skip;
        }
    }
    if (dscale > 0) {
        out[o++] = '.';
        size_t end = o + dscale;
        for (unsigned i = 0; i < dscale; d++, i += 4) {
            unsigned dig = d >= 0 && d < ndigits ? get16(s + 8 + 2 * (size_t)d) : 0;
            char four[4] = { (char)('0' + dig / 1000), (char)('0' + dig / 100 % 10),
                             (char)('0' + dig / 10 % 10), (char)('0' + dig % 10) };
            memcpy(out + o, four, 4); /* the room has 4 bytes past dscale for the last group */
            o += 4;
        }
        o = end;
    }
    out[o] = '\0';
    v->type = KEEL_TYPE_NUMERIC;
    v->u.str.ptr = out;
    v->u.str.len = o;
    return 0;
}

/* An inet or cidr as network_out writes it: the address, and "/bits" for a cidr or a network
 * shorter than the address. */
static int pgd_inet(keel_result *res, Oid oid, const char *s, size_t n, keel_value *v, char *why,
                    size_t size) {
    if (n < 4)
        return wrong_length(oid, n, 8, why, size);
    unsigned family = (unsigned char)s[0], bits = (unsigned char)s[1], nb = (unsigned char)s[3];
    int af = family == 2 ? AF_INET : family == 3 ? AF_INET6 : -1;
    unsigned want = af == AF_INET ? 4 : 16;
    if (af < 0 || nb != want || n != 4 + (size_t)nb || bits > 8 * nb)
        return bad(why, size, "a binary %s value of family %u with %u address bytes", pgd_name(oid),
                   family, nb);
    char text[INET6_ADDRSTRLEN + 8];
    if (!inet_ntop(af, s + 4, text, INET6_ADDRSTRLEN))
        return bad(why, size, "a binary %s value that is not an address", pgd_name(oid));
    size_t len = strlen(text);
    if (oid == PGD_CIDR || bits != 8 * nb)
        len += (size_t)snprintf(text + len, sizeof text - len, "/%u", bits);
    return as_text(res, oid == PGD_CIDR ? KEEL_TYPE_CIDR : KEEL_TYPE_INET, text, len, v);
}

static int pgd_value(keel_result *res, Oid oid, const char *s, size_t n, keel_value *v, char *why,
                     size_t size);

/*
 * A timestamp after keel's range (which counts microseconds from 1970 in 64 bits: up to
 * 294247-01-10) and before PostgreSQL's end (294276) as the text its text form gives, which
 * keel's text decoder returns as it is. A timestamptz is written in UTC ("+00"), as the server
 * writes it in keel's usual session time zone.
 */
static int pgd_late_timestamp(keel_result *res, int tz, int64_t micros, keel_value *v) {
    int64_t days = micros / INT64_C(86400000000), tod = micros % INT64_C(86400000000);
    int64_t year;
    unsigned month, day;
    keel__civil_from_days((int32_t)(days + PGD_EPOCH_DAYS), &year, &month, &day);
    char text[64];
    int n = snprintf(text, sizeof text, "%04lld-%02u-%02u ", (long long)year, month, day);
    n += (int)pgd_time_text(tod, text + n);
    if (tz)
        n += snprintf(text + n, sizeof text - (size_t)n, "+00");
    return as_text(res, KEEL_TYPE_TEXT, text, (size_t)n, v);
}

/* A range of the built-in range type oid. */
static int pgd_range(keel_result *res, Oid oid, Oid sub, const char *s, size_t n, keel_value *v,
                     char *why, size_t size) {
    if (n < 1)
        return wrong_length(oid, n, 1, why, size);
    unsigned flags = (unsigned char)s[0];
    v->type = KEEL_TYPE_RANGE;
    v->u.range.bounds = NULL;
    if (flags & PGD_RANGE_EMPTY) {
        if (n != 1)
            return wrong_length(oid, n, 1, why, size);
        v->u.range.flags = KEEL_RANGE_EMPTY;
        return 0;
    }
    keel_value *b = (keel_value *)(void *)keel__result_alloc(res, 2 * sizeof *b);
    if (!b)
        return -1;
    memset(b, 0, 2 * sizeof *b);
    size_t at = 1;
    for (int i = 0; i < 2; i++) {
        if (flags & (i == 0 ? PGD_RANGE_LB_INF : PGD_RANGE_UB_INF))
            continue; /* unbounded: NULL, as the text's empty bound */
        if (n - at < 4)
            return bad(why, size, "a binary %s value cut short", pgd_name(oid));
        uint32_t len = get32(s + at);
        at += 4;
        if (len > n - at)
            return bad(why, size, "a binary %s value cut short", pgd_name(oid));
        int r = pgd_value(res, sub, s + at, len, &b[i], why, size);
        if (r != 0)
            return r;
        at += len;
    }
    if (at != n)
        return bad(why, size, "a binary %s value with %zu bytes too many", pgd_name(oid), n - at);
    v->u.range.bounds = b;
    v->u.range.flags =
        ((flags & PGD_RANGE_LB_INC) && !(flags & PGD_RANGE_LB_INF) ? KEEL_RANGE_LOWER_INC : 0) |
        ((flags & PGD_RANGE_UB_INC) && !(flags & PGD_RANGE_UB_INF) ? KEEL_RANGE_UPPER_INC : 0);
    return 0;
}

typedef struct pgd_array {
    keel_result *res;
    Oid elem;
    const char *s;
    size_t n, at;
    int32_t dims[KEEL_ARRAY_MAX_DIMS];
    int nd;
    char *why;
    size_t size;
} pgd_array;

/* The elements of dimension d into out (an ARRAY of dims[d] items). */
static int pgd_array_level(pgd_array *a, int d, keel_value *out) {
    size_t count = (size_t)a->dims[d];
    keel_value *items = NULL;
    if (count) {
        items = (keel_value *)(void *)keel__result_alloc(a->res, count * sizeof *items);
        if (!items)
            return -1;
        memset(items, 0, count * sizeof *items);
    }
    for (size_t i = 0; i < count; i++) {
        int r;
        if (d + 1 < a->nd) {
            r = pgd_array_level(a, d + 1, &items[i]);
        } else {
            if (a->n - a->at < 4)
                return bad(a->why, a->size, "a binary array value cut short");
            uint32_t len = get32(a->s + a->at);
            a->at += 4;
            if (len == 0xFFFFFFFFu) {
                items[i].type = KEEL_TYPE_NULL;
                continue;
            }
            if (len > a->n - a->at)
                return bad(a->why, a->size, "a binary array value cut short");
            r = pgd_value(a->res, a->elem, a->s + a->at, len, &items[i], a->why, a->size);
            a->at += len;
        }
        if (r != 0)
            return r;
    }
    out->type = KEEL_TYPE_ARRAY;
    out->u.array.items = items;
    out->u.array.n = count;
    return 0;
}

/* An array of the element type elem: nested lists, one level per dimension, lower bounds
 * dropped (as the text path drops "[0:2]="). */
static int pgd_arrayv(keel_result *res, Oid oid, Oid elem, const char *s, size_t n, keel_value *v,
                      char *why, size_t size) {
    if (n < 12)
        return bad(why, size, "a binary %s value cut short", pgd_name(oid));
    uint32_t nd = get32(s), flags = get32(s + 4), et = get32(s + 8);
    if (nd > KEEL_ARRAY_MAX_DIMS || flags > 1 || et != elem)
        return bad(why, size,
                   "a binary %s value with %u dimensions of elements of type %u (not %u)",
                   pgd_name(oid), (unsigned)nd, (unsigned)et, (unsigned)elem);
    if (n < 12 + 8 * (size_t)nd)
        return bad(why, size, "a binary %s value cut short", pgd_name(oid));
    pgd_array a = { res, elem, s, n, 12 + 8 * (size_t)nd, { 0 }, (int)nd, why, size };
    uint64_t total = nd ? 1 : 0;
    for (uint32_t d = 0; d < nd; d++) {
        int32_t len = (int32_t)get32(s + 12 + 8 * d);
        if (len < 0)
            return bad(why, size, "a binary %s value with a negative dimension", pgd_name(oid));
        a.dims[d] = len;
        total *= (uint64_t)len;
        /* Each element takes at least its 4-byte length: more than the bytes hold is a lie. */
        if (total > (n - a.at) / 4 + 1)
            return bad(why, size, "a binary %s value cut short", pgd_name(oid));
    }
    if (nd == 0 || total == 0) {
        v->type = KEEL_TYPE_ARRAY;
        v->u.array.items = NULL;
        v->u.array.n = 0;
        return 0;
    }
    int r = pgd_array_level(&a, 0, v);
    if (r == 0 && a.at != n)
        return bad(why, size, "a binary %s value with %zu bytes too many", pgd_name(oid), n - a.at);
    return r;
}

static int pgd_value(keel_result *res, Oid oid, const char *s, size_t n, keel_value *v, char *why,
                     size_t size) {
    switch (oid) {
    case PGD_BOOL:
        if (n != 1)
            return wrong_length(oid, n, 1, why, size);
        v->type = KEEL_TYPE_BOOL;
        v->u.boolean = s[0] != 0;
        return 0;
    case PGD_INT2:
        if (n != 2)
            return wrong_length(oid, n, 2, why, size);
        v->type = KEEL_TYPE_INT;
        v->u.i64 = (int16_t)get16(s);
        return 0;
    case PGD_INT4:
        if (n != 4)
            return wrong_length(oid, n, 4, why, size);
        v->type = KEEL_TYPE_INT;
        v->u.i64 = (int32_t)get32(s);
        return 0;
    case PGD_OID:
        if (n != 4)
            return wrong_length(oid, n, 4, why, size);
        v->type = KEEL_TYPE_INT;
        v->u.i64 = get32(s);
        return 0;
    case PGD_INT8:
        if (n != 8)
            return wrong_length(oid, n, 8, why, size);
        v->type = KEEL_TYPE_INT;
        v->u.i64 = (int64_t)get64(s);
        return 0;
    case PGD_FLOAT4: {
        if (n != 4)
            return wrong_length(oid, n, 4, why, size);
        uint32_t bits = get32(s);
        float f;
        memcpy(&f, &bits, sizeof f);
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = keel__float_shortest(f);
        return 0;
    }
    case PGD_FLOAT8: {
        if (n != 8)
            return wrong_length(oid, n, 8, why, size);
        uint64_t bits = get64(s);
        v->type = KEEL_TYPE_FLOAT;
        memcpy(&v->u.f64, &bits, sizeof v->u.f64);
        return 0;
    }
    case PGD_NUMERIC:
        return pgd_numeric(res, s, n, v, why, size);
    case PGD_TEXT:
    case PGD_VARCHAR:
    case PGD_BPCHAR:
    case PGD_NAME:
        return as_text(res, KEEL_TYPE_TEXT, s, n, v);
    case PGD_JSON:
        return as_text(res, KEEL_TYPE_JSON, s, n, v);
    case PGD_JSONB:
        if (n < 1 || s[0] != 1)
            return bad(why, size, "a binary jsonb value without its version byte 1");
        return as_text(res, KEEL_TYPE_JSON, s + 1, n - 1, v);
    case PGD_BYTEA: {
        char *out = keel__result_alloc(res, n);
        if (!out)
            return -1;
        if (n)
            memcpy(out, s, n);
        v->type = KEEL_TYPE_BYTES;
        v->u.str.ptr = out;
        v->u.str.len = n;
        return 0;
    }
    case PGD_UUID:
        if (n != 16)
            return wrong_length(oid, n, 16, why, size);
        v->type = KEEL_TYPE_UUID;
        memcpy(v->u.uuid, s, 16);
        return 0;
    case PGD_DATE: {
        if (n != 4)
            return wrong_length(oid, n, 4, why, size);
        int32_t days = (int32_t)get32(s);
        if (days == INT32_MIN || days == INT32_MAX) /* text gives their words as text */
            return as_text(res, KEEL_TYPE_TEXT, days < 0 ? "-infinity" : "infinity",
                           days < 0 ? 9 : 8, v);
        if (days > INT32_MAX - PGD_EPOCH_DAYS)
            return bad(why, size, "a binary date value out of range");
        v->type = KEEL_TYPE_DATE;
        v->u.date = days + PGD_EPOCH_DAYS;
        return 0;
    }
    case PGD_TIME: {
        if (n != 8)
            return wrong_length(oid, n, 8, why, size);
        int64_t micros = (int64_t)get64(s);
        if (micros < 0 || micros > INT64_C(86400000000))
            return bad(why, size, "a binary time value out of range");
        v->type = KEEL_TYPE_TIME;
        v->u.micros = micros;
        return 0;
    }
    case PGD_TIMETZ:
        if (n != 12)
            return wrong_length(oid, n, 12, why, size);
        return pgd_timetz(res, s, v, why, size);
    case PGD_TIMESTAMP:
    case PGD_TIMESTAMPTZ: {
        if (n != 8)
            return wrong_length(oid, n, 8, why, size);
        int64_t micros = (int64_t)get64(s);
        if (micros == INT64_MIN || micros == INT64_MAX)
            return as_text(res, KEEL_TYPE_TEXT, micros < 0 ? "-infinity" : "infinity",
                           micros < 0 ? 9 : 8, v);
        if (micros > INT64_MAX - PGD_EPOCH_MICROS)
            return pgd_late_timestamp(res, oid == PGD_TIMESTAMPTZ, micros, v);
        v->type = oid == PGD_TIMESTAMP ? KEEL_TYPE_TIMESTAMP : KEEL_TYPE_TIMESTAMPTZ;
        v->u.micros = micros + PGD_EPOCH_MICROS;
        return 0;
    }
    case PGD_INTERVAL:
        if (n != 16)
            return wrong_length(oid, n, 16, why, size);
        *v = keel_interval((int32_t)get32(s + 12), (int32_t)get32(s + 8), (int64_t)get64(s));
        return 0;
    case PGD_INET:
    case PGD_CIDR:
        return pgd_inet(res, oid, s, n, v, why, size);
    case PGD_VOID:
        v->type = KEEL_TYPE_NULL;
        return 0;
    default:
        break;
    }
    Oid sub = keel__pg_range_subtype(oid);
    if (sub)
        return pgd_range(res, oid, sub, s, n, v, why, size);
    Oid elem = keel__pg_array_elem_oid(oid);
    if (elem)
        return pgd_arrayv(res, oid, elem, s, n, v, why, size);
    return bad(why, size, "keel has no binary decoder for type %u", (unsigned)oid);
}

int keel__pg_decode_binary(keel_result *res, Oid oid, const char *s, size_t n, keel_value *v,
                           char *why, size_t why_size) {
    return pgd_value(res, oid, s, n, v, why, why_size);
}
