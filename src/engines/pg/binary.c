/* src/engines/pg/binary.c - PostgreSQL binary format: keel values for COPY and for parameters. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

#include "core/numtext.h"
#include "core/timeconv.h"
#include "engines/pg/binary.h"

/* PostgreSQL counts dates and timestamps from 2000-01-01, keel from 1970-01-01. */
#define PGC_EPOCH_DAYS 10957
#define PGC_EPOCH_MICROS INT64_C(946684800000000)
/* The longest value a field can carry (the server's limit for one datum is 1 GiB). */
#define PGC_FIELD_MAX ((size_t)0x3FFFFFFF)
/* numeric's limits in binary: base-10000 digits per value (numeric_recv refuses more) and the
 * largest display scale. */
#define PGC_NUMERIC_MAX_DIGITS 3000
#define PGC_NUMERIC_MAX_DSCALE 0x3FFF
#define PGC_NUMERIC_POS 0x0000
#define PGC_NUMERIC_NEG 0x4000
#define PGC_NUMERIC_NAN 0xC000
#define PGC_NUMERIC_PINF 0xD000
#define PGC_NUMERIC_NINF 0xF000

/* Type OIDs with a binary encoder. */
enum {
    PGC_OID_BOOL = 16,
    PGC_OID_BYTEA = 17,
    PGC_OID_INT8 = 20,
    PGC_OID_INT2 = 21,
    PGC_OID_INT4 = 23,
    PGC_OID_TEXT = 25,
    PGC_OID_OID = 26,
    PGC_OID_JSON = 114,
    PGC_OID_FLOAT4 = 700,
    PGC_OID_FLOAT8 = 701,
    PGC_OID_DATE = 1082,
    PGC_OID_TIME = 1083,
    PGC_OID_TIMESTAMP = 1114,
    PGC_OID_TIMESTAMPTZ = 1184,
    PGC_OID_NUMERIC = 1700,
    PGC_OID_UUID = 2950,
    PGC_OID_JSONB = 3802,
    PGC_OID_INTERVAL = 1186,
    PGC_OID_INET = 869,
    PGC_OID_CIDR = 650,
    PGC_OID_VARCHAR = 1043,
    PGC_OID_BPCHAR = 1042,
    PGC_OID_NAME = 19
};

/* The built-in array types whose elements keel encodes and decodes. */
static const struct {
    uint32_t array, elem;
    const char *name;
} pgc_arrays[] = {
    { 1000, PGC_OID_BOOL, "boolean" },
    { 1001, PGC_OID_BYTEA, "bytea" },
    { 1003, PGC_OID_NAME, "name" },
    { 1005, PGC_OID_INT2, "smallint" },
    { 1007, PGC_OID_INT4, "integer" },
    { 1009, PGC_OID_TEXT, "text" },
    { 1014, PGC_OID_BPCHAR, "character" },
    { 1015, PGC_OID_VARCHAR, "character varying" },
    { 1016, PGC_OID_INT8, "bigint" },
    { 1021, PGC_OID_FLOAT4, "real" },
    { 1022, PGC_OID_FLOAT8, "double precision" },
    { 1028, PGC_OID_OID, "oid" },
    { 1115, PGC_OID_TIMESTAMP, "timestamp without time zone" },
    { 1182, PGC_OID_DATE, "date" },
    { 1183, PGC_OID_TIME, "time without time zone" },
    { 1185, PGC_OID_TIMESTAMPTZ, "timestamp with time zone" },
    { 1231, PGC_OID_NUMERIC, "numeric" },
    { 199, PGC_OID_JSON, "json" },
    { 2951, PGC_OID_UUID, "uuid" },
    { 3807, PGC_OID_JSONB, "jsonb" },
    { 1187, PGC_OID_INTERVAL, "interval" },
    { 1041, PGC_OID_INET, "inet" },
    { 651, PGC_OID_CIDR, "cidr" },
};

uint32_t keel__pgc_array_elem(uint32_t array_oid, const char **name) {
    for (size_t i = 0; i < sizeof pgc_arrays / sizeof pgc_arrays[0]; i++) {
        if (pgc_arrays[i].array == array_oid) {
            if (name)
                *name = pgc_arrays[i].name;
            return pgc_arrays[i].elem;
        }
    }
    return 0;
}

int keel__pgc_tz_is_utc(const char *tz) {
    static const char *const utc[] = { "UTC",       "Etc/UTC",   "GMT",       "Etc/GMT",
                                       "UCT",       "Etc/UCT",   "Universal", "Etc/Universal",
                                       "Zulu",      "Etc/Zulu",  "GMT0",      "Etc/GMT0",
                                       "Etc/GMT+0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich",
                                       "GMT+0",     "GMT-0",     NULL };
    for (size_t i = 0; tz && utc[i]; i++)
        if (strcasecmp(tz, utc[i]) == 0)
            return 1;
    return 0;
}

keel__pgc_kind keel__pgc_kind_of(uint32_t oid, const char *receive) {
    /* Receive functions that read the value's text as it is: these types send their text. */
    static const char *const text_recv[] = { "textrecv",  "varcharrecv", "bpcharrecv", "namerecv",
                                             "enum_recv", "citextrecv",  NULL };
    switch (oid) {
    case PGC_OID_BOOL:
        return KEEL__PGC_BOOL;
    case PGC_OID_BYTEA:
        return KEEL__PGC_BYTEA;
    case PGC_OID_INT8:
        return KEEL__PGC_INT8;
    case PGC_OID_INT2:
        return KEEL__PGC_INT2;
    case PGC_OID_INT4:
        return KEEL__PGC_INT4;
    case PGC_OID_TEXT:
        return KEEL__PGC_TEXT;
    case PGC_OID_OID:
        return KEEL__PGC_OID;
    case PGC_OID_JSON:
        return KEEL__PGC_JSON;
    case PGC_OID_FLOAT4:
        return KEEL__PGC_FLOAT4;
    case PGC_OID_FLOAT8:
        return KEEL__PGC_FLOAT8;
    case PGC_OID_DATE:
        return KEEL__PGC_DATE;
    case PGC_OID_TIME:
        return KEEL__PGC_TIME;
    case PGC_OID_TIMESTAMP:
        return KEEL__PGC_TIMESTAMP;
    case PGC_OID_TIMESTAMPTZ:
        return KEEL__PGC_TIMESTAMPTZ;
    case PGC_OID_NUMERIC:
        return KEEL__PGC_NUMERIC;
    case PGC_OID_UUID:
        return KEEL__PGC_UUID;
    case PGC_OID_JSONB:
        return KEEL__PGC_JSONB;
    case PGC_OID_VARCHAR:
    case PGC_OID_BPCHAR:
    case PGC_OID_NAME:
        return KEEL__PGC_TEXT;
    case PGC_OID_INTERVAL:
        return KEEL__PGC_INTERVAL;
    case PGC_OID_INET:
        return KEEL__PGC_INET;
    case PGC_OID_CIDR:
        return KEEL__PGC_CIDR;
    default:
        break;
    }
    if (receive && strcmp(receive, "array_recv") == 0)
        return KEEL__PGC_ARRAY;
    if (receive && strcmp(receive, "range_recv") == 0)
        return KEEL__PGC_RANGE;
    for (size_t i = 0; receive && text_recv[i]; i++)
        if (strcmp(receive, text_recv[i]) == 0)
            return KEEL__PGC_TEXT;
    return KEEL__PGC_OTHER;
}

static void put16(char *p, uint16_t v) {
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
}

static void put32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static void put64(char *p, uint64_t v) {
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

int keel__pgc_header(keel__buf *out) {
    static const char header[19] = { 'P',  'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n',
                                     '\0', 0,   0,   0,   0,   0,   0,    0,      0 };
    return keel__buf_append(out, header, sizeof header);
}

int keel__pgc_trailer(keel__buf *out) {
    static const char trailer[2] = { '\377', '\377' };
    return keel__buf_append(out, trailer, sizeof trailer);
}

/* ---- numeric ------------------------------------------------------------------------------ */

static int64_t floor_div4(int64_t x) { return x >= 0 ? x / 4 : -((-x + 3) / 4); }

/* Appends a numeric with no digits (zero, NaN, the infinities). */
static int numeric_special(keel__buf *out, uint16_t sign, uint16_t dscale) {
    if (keel__buf_reserve(out, 12) != 0)
        return -1;
    char *p = out->data + out->len;
    put32(p, 8);
    put16(p + 4, 0);
    put16(p + 6, 0);
    put16(p + 8, sign);
    put16(p + 10, dscale);
    out->len += 12;
    return 0;
}

int keel__pgc_numeric(keel__buf *out, const char *s, size_t n) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    const char *word = s + i;
    size_t wn = n - i;
    if ((wn == 3 && strncasecmp(word, "nan", 3) == 0 && i == 0))
        return numeric_special(out, PGC_NUMERIC_NAN, 0);
    if ((wn == 8 && strncasecmp(word, "infinity", 8) == 0) ||
        (wn == 3 && strncasecmp(word, "inf", 3) == 0))
        return numeric_special(out, neg ? PGC_NUMERIC_NINF : PGC_NUMERIC_PINF, 0);
    /* The mantissa's digits, where its point is, and the exponent. */
    size_t first = i, ndig = 0, before_point = 0;
    int point = 0;
    for (; i < n; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            ndig++;
            if (!point)
                before_point++;
        } else if (s[i] == '.' && !point) {
            point = 1;
        } else {
            break;
        }
    }
    if (ndig == 0)
        return -2;
    size_t mant_end = i;
    int64_t exp10 = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int eneg = 0;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        if (i == n)
            return -2;
        for (; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -2;
            if (exp10 < 100000000)
                exp10 = exp10 * 10 + (s[i] - '0');
        }
        if (eneg)
            exp10 = -exp10;
    }
    if (i != n)
        return -2;
    /* value = 0.d1d2…dm × 10^dp; the display scale counts the digits after the point. */
    int64_t dp = (int64_t)before_point + exp10;
    int64_t dscale = (int64_t)ndig - dp;
    if (dscale < 0)
        dscale = 0;
    /* The digits alone, leading and trailing zeros stripped. */
    const char *d = s + first;
    size_t lo = 0, hi = mant_end - first; /* over d, skipping the point */
    while (lo < hi && (d[lo] == '0' || d[lo] == '.')) {
        if (d[lo] == '0')
            dp--;
        lo++;
    }
    while (hi > lo && (d[hi - 1] == '0' || d[hi - 1] == '.'))
        hi--;
    if (dscale > PGC_NUMERIC_MAX_DSCALE)
        return -3;
    if (lo == hi)
        return numeric_special(out, PGC_NUMERIC_POS, (uint16_t)dscale);
    size_t m = 0;
    for (size_t k = lo; k < hi; k++)
        m += d[k] != '.';
    int64_t weight = floor_div4(dp - 1);
    int64_t last = floor_div4(dp - (int64_t)m);
    int64_t ngroups = weight - last + 1;
    if (weight > INT16_MAX || weight < INT16_MIN || ngroups > PGC_NUMERIC_MAX_DIGITS)
        return -3;
    size_t bytes = 12 + 2 * (size_t)ngroups;
    if (keel__buf_reserve(out, bytes) != 0)
        return -1;
    char *p = out->data + out->len;
    memset(p + 12, 0, 2 * (size_t)ngroups);
    static const uint16_t pow10[4] = { 1, 10, 100, 1000 };
    int64_t x = dp - 1; /* the power of ten of the digit at hand */
    for (size_t k = lo; k < hi; k++) {
        if (d[k] == '.')
            continue;
        int64_t g = floor_div4(x);
        size_t at = 12 + 2 * (size_t)(weight - g);
        uint16_t v = (uint16_t)((unsigned char)p[at] << 8 | (unsigned char)p[at + 1]);
        v = (uint16_t)(v + (d[k] - '0') * pow10[x - 4 * g]);
        put16(p + at, v);
        x--;
    }
    put32(p, (uint32_t)(bytes - 4));
    put16(p + 4, (uint16_t)ngroups);
    put16(p + 6, (uint16_t)(int16_t)weight);
    put16(p + 8, neg ? PGC_NUMERIC_NEG : PGC_NUMERIC_POS);
    put16(p + 10, (uint16_t)dscale);
    out->len += bytes;
    return 0;
}

/* ---- JSON --------------------------------------------------------------------------------- */

/* Appends s as a JSON string. 0, or -1 when out of memory. */
static int pg_json_string(keel__buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (keel__buf_putc(b, '"') != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int r;
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            r = keel__buf_append(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            r = keel__buf_append(b, esc, 6);
        } else {
            r = keel__buf_putc(b, (char)c);
        }
        if (r != 0)
            return -1;
    }
    return keel__buf_putc(b, '"');
}

size_t keel__pgc_time_text(const keel_value *v, char *out, int iso_t) {
    size_t n = 0;
    switch (v->type) {
    case KEEL_TYPE_DATE:
        return keel__format_date(v->u.date, out);
    case KEEL_TYPE_TIME:
        return keel__format_time(v->u.micros, out);
    case KEEL_TYPE_TIMESTAMP:
        n = keel__format_timestamp(v->u.micros, out);
        break;
    default:
        n = keel__format_timestamptz(v->u.micros, out);
        break;
    }
    char *sp = iso_t ? memchr(out, ' ', n) : NULL;
    if (sp && sp[1] >= '0' && sp[1] <= '9')
        *sp = 'T';
    return n;
}

int keel__pgc_json(keel__buf *b, const keel_value *v) {
    char text[KEEL__TIME_TEXT_MAX > 40 ? KEEL__TIME_TEXT_MAX : 40];
    size_t n;
    switch (v->type) {
    case KEEL_TYPE_NULL:
        return keel__buf_puts(b, "null");
    case KEEL_TYPE_BOOL:
        return keel__buf_puts(b, v->u.boolean ? "true" : "false");
    case KEEL_TYPE_INT:
        return keel__buf_printf(b, "%lld", (long long)v->u.i64);
    case KEEL_TYPE_FLOAT:
        if (!isfinite(v->u.f64))
            return -3;
        n = keel__format_double(v->u.f64, text, sizeof text);
        if (keel__buf_append(b, text, n) != 0)
            return -1;
        if (!memchr(text, '.', n) && !memchr(text, 'e', n) && !memchr(text, 'E', n))
            return keel__buf_puts(b, ".0");
        return 0;
    case KEEL_TYPE_JSON:
        return keel__buf_append(b, v->u.str.ptr ? v->u.str.ptr : "", v->u.str.len);
    case KEEL_TYPE_NUMERIC: /* exact, as a string (as pydantic's JSON mode writes a Decimal) */
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
        return pg_json_string(b, v->u.str.ptr ? v->u.str.ptr : "", v->u.str.len);
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        n = keel__pgc_time_text(v, text, 1);
        return pg_json_string(b, text, n);
    case KEEL_TYPE_UUID:
        keel__format_uuid(v->u.uuid, text);
        return pg_json_string(b, text, 36);
    case KEEL_TYPE_ARRAY:
        if (keel__buf_putc(b, '[') != 0)
            return -1;
        for (size_t i = 0; i < v->u.array.n; i++) {
            if (i && keel__buf_putc(b, ',') != 0)
                return -1;
            int r = keel__pgc_json(b, &v->u.array.items[i]);
            if (r != 0)
                return r;
        }
        return keel__buf_putc(b, ']');
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_DOCUMENT:
    case KEEL_TYPE_INTERVAL:
    case KEEL_TYPE_RANGE:
        return -2;
    }
    return -2;
}

/* ---- values ------------------------------------------------------------------------------- */

/* Writes why a value cannot be encoded; returns 1, "not encodable". */
__attribute__((format(printf, 3, 4))) static int why_set(char *why, size_t size, const char *fmt,
                                                         ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return 1;
}

static int mismatch(const keel__pgc_col *col, const keel_value *v, char *why, size_t size) {
    const char *kind = keel_type_name(v->type);
    return why_set(why, size, "%s %s value cannot be loaded into type %s",
                   strchr("aeiou", kind[0]) ? "an" : "a", kind, col->type_name);
}

/* Room for a field of len bytes and its length word; the pointer to write the value at. */
static char *field(keel__buf *out, size_t len) {
    if (out->cap - out->len < len + 5 && keel__buf_reserve(out, len + 4) != 0)
        return NULL;
    char *p = out->data + out->len;
    put32(p, (uint32_t)len);
    out->len += 4 + len;
    return p + 4;
}

static int put_text(keel__buf *out, const char *s, size_t len, int version_byte, char *why,
                    size_t size) {
    if (len > PGC_FIELD_MAX)
        return why_set(why, size, "text longer than 1 GiB");
    if (len && memchr(s, '\0', len))
        return why_set(why, size, "text contains a NUL byte, which PostgreSQL cannot store");
    char *p = field(out, len + (version_byte ? 1 : 0));
    if (!p)
        return -1;
    if (version_byte)
        *p++ = 1; /* jsonb's binary form is a format version, then the text */
    if (len)
        memcpy(p, s, len);
    return 0;
}

/* An array into a json or jsonb column: as a JSON array. */
static int put_json_array(keel__buf *out, const keel_value *v, int version_byte, char *why,
                          size_t size) {
    size_t start = out->len;
    if (keel__buf_reserve(out, 5) != 0)
        return -1;
    out->len += 4;
    if (version_byte)
        out->data[out->len++] = 1;
    int r = keel__pgc_json(out, v);
    if (r != 0) {
        out->len = start;
        return r == -1 ? -1
                       : why_set(why, size, "bytes or an interval in a list have no JSON form");
    }
    if (out->len - start - 4 > PGC_FIELD_MAX) {
        out->len = start;
        return why_set(why, size, "the JSON text is longer than 1 GiB");
    }
    put32(out->data + start, (uint32_t)(out->len - start - 4));
    return 0;
}

static int put_int(keel__buf *out, const keel__pgc_col *col, const keel_value *v, int64_t min,
                   int64_t max, size_t width, char *why, size_t size) {
    if (v->type != KEEL_TYPE_INT)
        return mismatch(col, v, why, size);
    if (v->u.i64 < min || v->u.i64 > max) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)v->u.i64);
        return why_set(why, size, "%s is out of range for type %s", num, col->type_name);
    }
    char *p = field(out, width);
    if (!p)
        return -1;
    if (width == 2)
        put16(p, (uint16_t)v->u.i64);
    else if (width == 4)
        put32(p, (uint32_t)v->u.i64);
    else
        put64(p, (uint64_t)v->u.i64);
    return 0;
}

static int put_numeric(keel__buf *out, const keel__pgc_col *col, const keel_value *v, char *why,
                       size_t size) {
    char text[32];
    const char *s;
    size_t n;
    switch (v->type) {
    case KEEL_TYPE_NUMERIC:
        s = v->u.str.ptr ? v->u.str.ptr : "";
        n = v->u.str.len;
        break;
    case KEEL_TYPE_INT:
        n = (size_t)snprintf(text, sizeof text, "%lld", (long long)v->u.i64);
        s = text;
        break;
    case KEEL_TYPE_FLOAT:
        /* numeric has NaN and the infinities too (PostgreSQL 14+ for the infinities). */
        if (isnan(v->u.f64))
            s = "NaN";
        else if (isinf(v->u.f64))
            s = v->u.f64 > 0 ? "Infinity" : "-Infinity";
        else
            s = text;
        n = s == text ? keel__format_double(v->u.f64, text, sizeof text) : strlen(s);
        break;
    default:
        return mismatch(col, v, why, size);
    }
    int r = keel__pgc_numeric(out, s, n);
    if (r == -1)
        return -1;
    if (r == -2)
        return why_set(why, size, "\"%.*s%s\" is not a decimal number", n > 40 ? 40 : (int)n, s,
                       n > 40 ? "…" : "");
    if (r == -3)
        return why_set(why, size, "the value is out of the range of type %s", col->type_name);
    return 0;
}

static int put_micros(keel__buf *out, int64_t micros, int64_t shift, char *why, size_t size) {
    if (micros < INT64_MIN + shift)
        return why_set(why, size, "the value is out of range");
    char *p = field(out, 8);
    if (!p)
        return -1;
    put64(p, (uint64_t)(micros - shift));
    return 0;
}

size_t keel__pgc_param(const keel_value *v, char *out) {
    uint64_t bits;
    switch (v->type) {
    case KEEL_TYPE_BOOL:
        out[0] = v->u.boolean ? 1 : 0;
        return 1;
    case KEEL_TYPE_INT:
        put64(out, (uint64_t)v->u.i64);
        return 8;
    case KEEL_TYPE_FLOAT:
        memcpy(&bits, &v->u.f64, sizeof bits);
        put64(out, bits);
        return 8;
    case KEEL_TYPE_DATE:
        if (v->u.date < INT32_MIN + PGC_EPOCH_DAYS)
            return 0;
        put32(out, (uint32_t)(v->u.date - PGC_EPOCH_DAYS));
        return 4;
    case KEEL_TYPE_TIME:
        put64(out, (uint64_t)v->u.micros);
        return 8;
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        if (v->u.micros < INT64_MIN + PGC_EPOCH_MICROS)
            return 0;
        put64(out, (uint64_t)(v->u.micros - PGC_EPOCH_MICROS));
        return 8;
    case KEEL_TYPE_UUID:
        memcpy(out, v->u.uuid, 16);
        return 16;
    case KEEL_TYPE_INTERVAL:
        put64(out, (uint64_t)v->u.interval.micros);
        put32(out + 8, (uint32_t)v->u.interval.days);
        put32(out + 12, (uint32_t)v->u.interval.months);
        return 16;
    default:
        return 0;
    }
}

size_t keel__pgc_interval_text(const keel_value *v, char *out) {
    int64_t us = v->u.interval.micros;
    uint64_t mag = us < 0 ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;
    uint64_t secs = mag / 1000000;
    int n = snprintf(out, KEEL__PGC_INTERVAL_TEXT_MAX, "%ld mons %ld days %s%llu:%02u:%02u.%06u",
                     (long)v->u.interval.months, (long)v->u.interval.days, us < 0 ? "-" : "",
                     (unsigned long long)(secs / 3600), (unsigned)(secs / 60 % 60),
                     (unsigned)(secs % 60), (unsigned)(mag % 1000000));
    return n < 0 ? 0 : (size_t)n;
}

/* Appends the binary inet / cidr of the address text s ("10.0.0.1", "::1/64"). 0, -1 out of
 * memory, 1 when the text is not an address (why set). */
static int put_inet(keel__buf *out, const char *s, size_t n, int cidr, char *why, size_t size) {
    char text[64];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof text)
        return why_set(why, size, "the text is not an IP address");
    memcpy(text, s, n);
    text[n] = '\0';
    char *slash = strchr(text, '/');
    long bits = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end)
            return why_set(why, size, "the text is not an IP address");
    }
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, text, addr) != 1)
        return why_set(why, size, "\"%s\" is not an IP address", text);
    int nb = family == AF_INET ? 4 : 16;
    if (bits < 0)
        bits = nb * 8;
    if (bits > nb * 8)
        return why_set(why, size, "the prefix /%ld is too long for the address", bits);
    char *p = field(out, 4 + (size_t)nb);
    if (!p)
        return -1;
    p[0] = (char)(family == AF_INET ? 2 : 3); /* PGSQL_AF_INET, PGSQL_AF_INET6 */
    p[1] = (char)bits;
    p[2] = (char)(cidr ? 1 : 0);
    p[3] = (char)nb;
    memcpy(p + 4, addr, (size_t)nb);
    return 0;
}

static int put_range(keel__buf *out, const keel__pgc_col *col, const keel_value *v,
                     int naive_is_utc, char *why, size_t size);

static int put_value(keel__buf *out, const keel__pgc_col *col, const keel_value *v,
                     int naive_is_utc, char *why, size_t size) {
    char *p;
    if (v->type == KEEL_TYPE_NULL) {
        if (out->cap - out->len < 5 && keel__buf_reserve(out, 4) != 0)
            return -1;
        put32(out->data + out->len, 0xFFFFFFFFu);
        out->len += 4;
        return 0;
    }
    switch (col->kind) {
    case KEEL__PGC_INT8:
        return put_int(out, col, v, INT64_MIN, INT64_MAX, 8, why, size);
    case KEEL__PGC_INT4:
        return put_int(out, col, v, INT32_MIN, INT32_MAX, 4, why, size);
    case KEEL__PGC_INT2:
        return put_int(out, col, v, INT16_MIN, INT16_MAX, 2, why, size);
    case KEEL__PGC_OID:
        return put_int(out, col, v, 0, UINT32_MAX, 4, why, size);
    case KEEL__PGC_TEXT:
        if (v->type != KEEL_TYPE_TEXT && v->type != KEEL_TYPE_NUMERIC && v->type != KEEL_TYPE_JSON)
            return mismatch(col, v, why, size);
        return put_text(out, v->u.str.ptr, v->u.str.len, 0, why, size);
    case KEEL__PGC_JSON:
    case KEEL__PGC_JSONB:
        if (v->type == KEEL_TYPE_ARRAY)
            return put_json_array(out, v, col->kind == KEEL__PGC_JSONB, why, size);
        if (v->type != KEEL_TYPE_JSON && v->type != KEEL_TYPE_TEXT)
            return mismatch(col, v, why, size);
        return put_text(out, v->u.str.ptr, v->u.str.len, col->kind == KEEL__PGC_JSONB, why, size);
    case KEEL__PGC_BOOL:
        if (v->type != KEEL_TYPE_BOOL)
            return mismatch(col, v, why, size);
        if (!(p = field(out, 1)))
            return -1;
        *p = v->u.boolean ? 1 : 0;
        return 0;
    case KEEL__PGC_FLOAT8:
    case KEEL__PGC_FLOAT4: {
        double d;
        if (v->type == KEEL_TYPE_FLOAT)
            d = v->u.f64;
        else if (v->type == KEEL_TYPE_INT)
            d = (double)v->u.i64;
        else
            return mismatch(col, v, why, size);
        if (col->kind == KEEL__PGC_FLOAT8) {
            uint64_t bits;
            memcpy(&bits, &d, sizeof bits);
            if (!(p = field(out, 8)))
                return -1;
            put64(p, bits);
            return 0;
        }
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return why_set(why, size, "the value is out of range for type %s", col->type_name);
        float f = (float)d;
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        if (!(p = field(out, 4)))
            return -1;
        put32(p, bits);
        return 0;
    }
    case KEEL__PGC_NUMERIC:
        return put_numeric(out, col, v, why, size);
    case KEEL__PGC_BYTEA:
        if (v->type != KEEL_TYPE_BYTES)
            return mismatch(col, v, why, size);
        if (v->u.str.len > PGC_FIELD_MAX)
            return why_set(why, size, "bytes longer than 1 GiB");
        if (!(p = field(out, v->u.str.len)))
            return -1;
        if (v->u.str.len)
            memcpy(p, v->u.str.ptr, v->u.str.len);
        return 0;
    case KEEL__PGC_DATE:
        if (v->type != KEEL_TYPE_DATE)
            return mismatch(col, v, why, size);
        if (v->u.date < INT32_MIN + PGC_EPOCH_DAYS)
            return why_set(why, size, "the date is out of range");
        if (!(p = field(out, 4)))
            return -1;
        put32(p, (uint32_t)(v->u.date - PGC_EPOCH_DAYS));
        return 0;
    case KEEL__PGC_TIME:
        if (v->type != KEEL_TYPE_TIME)
            return mismatch(col, v, why, size);
        return put_micros(out, v->u.micros, 0, why, size);
    case KEEL__PGC_TIMESTAMP:
    case KEEL__PGC_TIMESTAMPTZ: {
        keel_type same =
            col->kind == KEEL__PGC_TIMESTAMP ? KEEL_TYPE_TIMESTAMP : KEEL_TYPE_TIMESTAMPTZ;
        keel_type other =
            col->kind == KEEL__PGC_TIMESTAMP ? KEEL_TYPE_TIMESTAMPTZ : KEEL_TYPE_TIMESTAMP;
        if (v->type == other && !naive_is_utc)
            return why_set(why, size,
                           "a %s value needs the session time zone to be loaded into type %s, "
                           "and it is not UTC: pass the value with the column's kind (aware "
                           "for timestamptz, naive for timestamp)",
                           keel_type_name(v->type), col->type_name);
        if (v->type != same && v->type != other)
            return mismatch(col, v, why, size);
        return put_micros(out, v->u.micros, PGC_EPOCH_MICROS, why, size);
    }
    case KEEL__PGC_UUID: {
        unsigned char u[16];
        const unsigned char *src = v->u.uuid;
        if (v->type == KEEL_TYPE_TEXT) {
            if (keel__parse_uuid(v->u.str.ptr ? v->u.str.ptr : "", v->u.str.len, u) != 0)
                return why_set(why, size, "the text is not a UUID");
            src = u;
        } else if (v->type != KEEL_TYPE_UUID) {
            return mismatch(col, v, why, size);
        }
        if (!(p = field(out, 16)))
            return -1;
        memcpy(p, src, 16);
        return 0;
    }
    case KEEL__PGC_ARRAY:
        if (v->type != KEEL_TYPE_ARRAY)
            return mismatch(col, v, why, size);
        return keel__pgc_array(out, col, v, naive_is_utc, why, size);
    case KEEL__PGC_INTERVAL:
        if (v->type != KEEL_TYPE_INTERVAL)
            return mismatch(col, v, why, size);
        if (!(p = field(out, 16)))
            return -1;
        keel__pgc_param(v, p);
        return 0;
    case KEEL__PGC_INET:
    case KEEL__PGC_CIDR:
        if (v->type != KEEL_TYPE_INET && v->type != KEEL_TYPE_CIDR && v->type != KEEL_TYPE_TEXT)
            return mismatch(col, v, why, size);
        return put_inet(out, v->u.str.ptr ? v->u.str.ptr : "", v->u.str.len,
                        col->kind == KEEL__PGC_CIDR, why, size);
    case KEEL__PGC_RANGE:
        if (v->type != KEEL_TYPE_RANGE)
            return mismatch(col, v, why, size);
        return put_range(out, col, v, naive_is_utc, why, size);
    case KEEL__PGC_OTHER:
        break;
    }
    return why_set(why, size,
                   "keel has no binary encoding for type %s, so COPY can only load NULL into "
                   "this column (use executemany for such columns)",
                   col->type_name);
}

/* ---- ranges ------------------------------------------------------------------------------- */

/* range_recv's flags: the first byte of a range in binary, then each bound that is there. */
#define PGC_RANGE_EMPTY 0x01
#define PGC_RANGE_LB_INC 0x02
#define PGC_RANGE_UB_INC 0x04
#define PGC_RANGE_LB_INF 0x08
#define PGC_RANGE_UB_INF 0x10

/*
 * Appends a range value v for col (KEEL__PGC_RANGE) as a field: its flags, then its bounds in
 * the binary form of the range's element type. An unbounded side is a NULL bound. The server
 * puts a range of a discrete type in its canonical form ([1,5] becomes [1,6)) and refuses a
 * lower bound above the upper one.
 */
static int put_range(keel__buf *out, const keel__pgc_col *col, const keel_value *v,
                     int naive_is_utc, char *why, size_t size) {
    size_t start = out->len;
    if (keel__buf_reserve(out, 5) != 0)
        return -1;
    out->len += 4;
    const keel_value *b = v->u.range.bounds;
    unsigned flags = v->u.range.flags;
    if ((flags & KEEL_RANGE_EMPTY) || !b) {
        out->data[out->len++] = PGC_RANGE_EMPTY;
    } else {
        int lower = b[0].type != KEEL_TYPE_NULL, upper = b[1].type != KEEL_TYPE_NULL;
        out->data[out->len++] =
            (char)((lower ? (flags & KEEL_RANGE_LOWER_INC ? PGC_RANGE_LB_INC : 0)
                          : PGC_RANGE_LB_INF) |
                   (upper ? (flags & KEEL_RANGE_UPPER_INC ? PGC_RANGE_UB_INC : 0)
                          : PGC_RANGE_UB_INF));
        keel__pgc_col ecol = { col->elem, col->name, col->type_name, KEEL__PGC_OTHER, 0 };
        char ewhy[200];
        for (int i = 0; i < 2; i++) {
            if (b[i].type == KEEL_TYPE_NULL)
                continue;
            int r = col->elem == KEEL__PGC_OTHER
                        ? why_set(ewhy, sizeof ewhy,
                                  "keel has no binary encoding for the bounds of type %s",
                                  col->type_name)
                        : put_value(out, &ecol, &b[i], naive_is_utc, ewhy, sizeof ewhy);
            if (r != 0) {
                out->len = start;
                if (r > 0)
                    why_set(why, size, "%s bound: %s", i == 0 ? "lower" : "upper", ewhy);
                return r;
            }
        }
    }
    put32(out->data + start, (uint32_t)(out->len - start - 4));
    return 0;
}

/* ---- arrays ------------------------------------------------------------------------------- */

/*
 * The dimensions of array v (its length, its first element's length if that is an array, …):
 * the count, or 0 for an array with no elements (any dimension of length 0). -1 when nested
 * deeper than PostgreSQL allows.
 */
static int array_dims(const keel_value *v, int32_t dims[KEEL_ARRAY_MAX_DIMS]) {
    int nd = 0;
    for (const keel_value *a = v; a && a->type == KEEL_TYPE_ARRAY;
         a = a->u.array.n ? &a->u.array.items[0] : NULL) {
        if (nd == KEEL_ARRAY_MAX_DIMS)
            return -1;
        if (a->u.array.n == 0)
            return 0;
        if (a->u.array.n > INT32_MAX)
            return -1;
        dims[nd++] = (int32_t)a->u.array.n;
    }
    return nd;
}

/* Checks that every sub-array at level d matches dims (rectangular, no array as an element). */
static int array_shape_ok(const keel_value *a, const int32_t *dims, int nd, int d, int *nulls) {
    if (a->type != KEEL_TYPE_ARRAY || a->u.array.n != (size_t)dims[d])
        return 0;
    for (size_t i = 0; i < a->u.array.n; i++) {
        const keel_value *e = &a->u.array.items[i];
        if (d + 1 < nd) {
            if (!array_shape_ok(e, dims, nd, d + 1, nulls))
                return 0;
        } else if (e->type == KEEL_TYPE_ARRAY) {
            return 0;
        } else if (e->type == KEEL_TYPE_NULL) {
            *nulls = 1;
        }
    }
    return 1;
}

/* Appends the elements of a (dimension d of nd) in row-major order; idx[d] is the index of
 * the element at hand (which one failed, for messages). */
static int array_elems(keel__buf *out, const keel__pgc_col *ecol, const keel_value *a, int nd,
                       int d, size_t *idx, int naive_is_utc, char *why, size_t size) {
    for (size_t i = 0; i < a->u.array.n; i++) {
        const keel_value *e = &a->u.array.items[i];
        idx[d] = i;
        int r = d + 1 < nd ? array_elems(out, ecol, e, nd, d + 1, idx, naive_is_utc, why, size)
                           : put_value(out, ecol, e, naive_is_utc, why, size);
        if (r != 0)
            return r;
    }
    return 0;
}

int keel__pgc_array(keel__buf *out, const keel__pgc_col *col, const keel_value *v, int naive_is_utc,
                    char *why, size_t why_size) {
    int32_t dims[KEEL_ARRAY_MAX_DIMS];
    int nd, nulls = 0;
    if (col->elem == KEEL__PGC_JSON || col->elem == KEEL__PGC_JSONB) {
        /* A list inside a json[] is a JSON array, not a dimension: one dimension. */
        nd = v->u.array.n ? 1 : 0;
        dims[0] = (int32_t)(v->u.array.n > INT32_MAX ? INT32_MAX : v->u.array.n);
        for (size_t i = 0; i < v->u.array.n; i++)
            nulls |= v->u.array.items[i].type == KEEL_TYPE_NULL;
    } else {
        nd = array_dims(v, dims);
    }
    if (nd < 0)
        return why_set(why, why_size, "arrays have at most %d dimensions", KEEL_ARRAY_MAX_DIMS);
    if (nd > 0 && col->elem != KEEL__PGC_JSON && col->elem != KEEL__PGC_JSONB &&
        !array_shape_ok(v, dims, nd, 0, &nulls))
        return why_set(why, why_size,
                       "a multi-dimensional array needs sub-arrays of equal lengths (and no "
                       "array beside a scalar)");
    if (col->elem == KEEL__PGC_ARRAY || col->elem == KEEL__PGC_OTHER)
        return why_set(why, why_size, "keel has no binary encoding for the elements of type %s",
                       col->type_name);
    size_t start = out->len, head = 16 + 8 * (size_t)nd;
    if (keel__buf_reserve(out, head + 1) != 0)
        return -1;
    char *p = out->data + out->len;
    put32(p + 4, (uint32_t)nd);
    put32(p + 8, nulls ? 1 : 0);
    put32(p + 12, col->elem_oid);
    for (int d = 0; d < nd; d++) {
        put32(p + 16 + 8 * d, (uint32_t)dims[d]);
        put32(p + 20 + 8 * d, 1);
    }
    out->len += head;
    keel__pgc_col ecol = { col->elem, col->name, col->type_name, KEEL__PGC_OTHER, 0 };
    char ewhy[200];
    size_t idx[KEEL_ARRAY_MAX_DIMS] = { 0 };
    int r = nd ? array_elems(out, &ecol, v, nd, 0, idx, naive_is_utc, ewhy, sizeof ewhy) : 0;
    if (r != 0) {
        out->len = start;
        if (r > 0) { /* "element [1]: …", "element [0][2]: …" */
            char at[KEEL_ARRAY_MAX_DIMS * 24];
            size_t n = 0;
            for (int d = 0; d < nd && n < sizeof at; d++)
                n += (size_t)snprintf(at + n, sizeof at - n, "[%zu]", idx[d]);
            why_set(why, why_size, "element %s: %s", at, ewhy);
        }
        return r;
    }
    if (out->len - start - 4 > PGC_FIELD_MAX) {
        out->len = start;
        return why_set(why, why_size, "the array is longer than 1 GiB");
    }
    put32(out->data + start, (uint32_t)(out->len - start - 4));
    return 0;
}

int keel__pgc_row(keel__buf *out, const keel__pgc_col *cols, const keel_value *vals, size_t n,
                  int naive_is_utc, char *why, size_t why_size) {
    size_t start = out->len;
    if (keel__buf_reserve(out, 2) != 0)
        return -1;
    put16(out->data + out->len, (uint16_t)n);
    out->len += 2;
    for (size_t i = 0; i < n; i++) {
        int r = put_value(out, &cols[i], &vals[i], naive_is_utc, why, why_size);
        if (r != 0) {
            out->len = start;
            return r < 0 ? -1 : (int)i + 1;
        }
    }
    return 0;
}
