/* tests/fuzz/fuzz_pgvalue.c - libFuzzer target: PostgreSQL value decoders and binary encoders. */
#include "fuzz.h"

#include <keel/result.h>

#include "core/buf.h"
#include "core/numtext.h"
#include "core/result_int.h"
#include "engines/pg/binary.h"
#include "engines/pg/codec.h"
#include "engines/pg/decode.h"

/*
 * keel asks PostgreSQL for results in text format (libpq's PQgetvalue: NUL-terminated text) and
 * decodes them with keel__pg_decode_value, or, for a cached statement's later runs, in binary
 * (decode.c); what it sends in binary (parameters, COPY rows) it encodes itself. So this target covers both directions of src/engines/pg/codec.c and binary.c:
 *
 *  - byte 0 picks a column type (by OID, through keel__pg_type_of) and the rest of the input,
 *    up to a NUL, is the value's text: the decoded value has the column's kind or is TEXT equal
 *    to the input; an int8 text that is a valid integer decodes to it; bytea's hex form decodes
 *    to its bytes.
 *  - the text is encoded as a binary numeric (keel__pgc_numeric, the parser COPY and numeric
 *    parameters use): the result is well formed (normalised base-10000 digits, a known sign) and
 *    holds the same decimal value as the text.
 *  - the first 16 bytes as a value of each type keel sends in binary (keel__pgc_param), written
 *    into a buffer of exactly the 16 bytes the function is promised.
 *  - the bytes after byte 0, as they are, as the binary form of a value of the column type
 *    (keel__pg_decode_binary, which reads results of cached statements): a value of the type's
 *    kind (or TEXT, or NULL for void), or a refusal with a reason, never a read past the bytes.
 *  - for an array type (int4[], text[], bytea[], jsonb[], date[], interval[]) the text goes through
 *    keel__pg_decode_array: an ARRAY at most 6 deep whose leaves are NULL or of the element's
 *    kind (or TEXT), or TEXT equal to the input; likewise a range (int4range, tstzrange) through
 *    keel__pg_decode_range.
 */

static const uint32_t oids[] = {
    16,   /* bool */
    17,   /* bytea */
    20,   /* int8 */
    21,   /* int2 */
    23,   /* int4 */
    25,   /* text */
    26,   /* oid */
    114,  /* json */
    700,  /* float4 */
    701,  /* float8 */
    1043, /* varchar */
    1082, /* date */
    1083, /* time */
    1114, /* timestamp */
    1184, /* timestamptz */
    1186, /* interval */
    1266, /* timetz */
    1700, /* numeric */
    2950, /* uuid */
    3802, /* jsonb */
    1007, /* int4[] */
    1009, /* text[] */
    1001, /* bytea[] */
    3807, /* jsonb[] */
    1182, /* date[] */
    869,  /* inet */
    650,  /* cidr */
    1187, /* interval[] */
    3904, /* int4range */
    3910, /* tstzrange */
    3905, /* int4range[] */
};

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void check_decode(keel_type kind, const char *s, size_t n) {
    keel_result *res = keel__result_new(1);
    FUZZ_ASSERT(res != NULL);
    keel_value v;
    memset(&v, 0, sizeof v);
    FUZZ_ASSERT(keel__pg_decode_value(res, kind, s, n, &v) == 0);
    FUZZ_ASSERT(v.type == kind || v.type == KEEL_TYPE_TEXT);
    if (v.type == KEEL_TYPE_TEXT || v.type == KEEL_TYPE_JSON || v.type == KEEL_TYPE_NUMERIC)
        FUZZ_ASSERT(v.u.str.len == n && memcmp(v.u.str.ptr, s, n) == 0);
    if (kind == KEEL_TYPE_INT) {
        int64_t want;
        if (keel__parse_int64(s, n, &want) == 0)
            FUZZ_ASSERT(v.type == KEEL_TYPE_INT && v.u.i64 == want);
    }
    if (kind == KEEL_TYPE_BYTES && n >= 2 && s[0] == '\\' && s[1] == 'x' && n % 2 == 0) {
        int valid = 1;
        for (size_t i = 2; i < n; i++)
            valid &= hexval(s[i]) >= 0;
        if (valid) {
            FUZZ_ASSERT(v.type == KEEL_TYPE_BYTES && v.u.str.len == (n - 2) / 2);
            for (size_t i = 0; i < v.u.str.len; i++)
                FUZZ_ASSERT((unsigned char)v.u.str.ptr[i] ==
                            (hexval(s[2 + 2 * i]) << 4 | hexval(s[3 + 2 * i])));
        }
    }
    keel_result_free(res);
}

/* Every element of a decoded array, at most 6 levels deep, is NULL, an array, or a leaf of
 * kind et (or TEXT, for text the element decoder does not recognise). */
static void check_array_items(const keel_value *a, keel_type et, int depth) {
    FUZZ_ASSERT(depth < 6);
    FUZZ_ASSERT(a->u.array.n == 0 || a->u.array.items != NULL);
    for (size_t i = 0; i < a->u.array.n; i++) {
        const keel_value *e = &a->u.array.items[i];
        if (e->type == KEEL_TYPE_ARRAY)
            check_array_items(e, et, depth + 1);
        else
            FUZZ_ASSERT(e->type == KEEL_TYPE_NULL || e->type == et || e->type == KEEL_TYPE_TEXT);
    }
}

/* A range decodes to a RANGE whose bounds are NULL (unbounded) or of the bound's kind (or
 * TEXT), none when empty; or to TEXT equal to the input. */
static void check_decode_range(uint32_t oid, const char *s, size_t n) {
    keel_result *res = keel__result_new(1);
    FUZZ_ASSERT(res != NULL);
    keel_value v;
    memset(&v, 0, sizeof v);
    keel_type et = keel__pg_elem_type_of(oid);
    FUZZ_ASSERT(keel__pg_decode_range(res, et, s, n, &v) == 0);
    FUZZ_ASSERT(v.type == KEEL_TYPE_RANGE || v.type == KEEL_TYPE_TEXT);
    if (v.type == KEEL_TYPE_TEXT) {
        FUZZ_ASSERT(v.u.str.len == n && memcmp(v.u.str.ptr, s, n) == 0);
    } else if (v.u.range.flags & KEEL_RANGE_EMPTY) {
        FUZZ_ASSERT(v.u.range.bounds == NULL);
    } else {
        for (int i = 0; i < 2; i++) {
            keel_type t = v.u.range.bounds[i].type;
            FUZZ_ASSERT(t == KEEL_TYPE_NULL || t == et || t == KEEL_TYPE_TEXT);
        }
    }
    keel_result_free(res);
}

static void check_decode_array(uint32_t oid, const char *s, size_t n) {
    keel_result *res = keel__result_new(1);
    FUZZ_ASSERT(res != NULL);
    keel_value v;
    memset(&v, 0, sizeof v);
    FUZZ_ASSERT(keel__pg_decode_array(res, keel__pg_elem_type_of(oid),
                                      keel__pg_range_bound_type_of(oid), s, n, &v) == 0);
    FUZZ_ASSERT(v.type == KEEL_TYPE_ARRAY || v.type == KEEL_TYPE_TEXT);
    if (v.type == KEEL_TYPE_TEXT)
        FUZZ_ASSERT(v.u.str.len == n && memcmp(v.u.str.ptr, s, n) == 0);
    else
        check_array_items(&v, keel__pg_elem_type_of(oid), 0);
    keel_result_free(res);
}

/* A decimal value as its significant digits (no leading or trailing zeros) and the power of ten
 * of the position before the first one: value = ±0.digits × 10^exp. Zero has no digits. */
typedef struct decimal {
    char *digits;
    size_t n;
    int64_t exp;
} decimal;

static void decimal_from(decimal *d, const char *all, size_t n, int64_t exp) {
    size_t lo = 0, hi = n;
    while (lo < hi && all[lo] == '0') {
        lo++;
        exp--;
    }
    while (hi > lo && all[hi - 1] == '0')
        hi--;
    d->n = hi - lo;
    d->digits = malloc(d->n + 1);
    FUZZ_ASSERT(d->digits != NULL);
    memcpy(d->digits, all + lo, d->n);
    d->exp = d->n ? exp : 0;
}

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* The value of text keel__pgc_numeric accepted, read the way PostgreSQL reads it. */
static void text_value(const char *s, size_t n, decimal *d, int *neg) {
    size_t i = 0;
    *neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        *neg = s[i++] == '-';
    char *all = malloc(n + 1);
    FUZZ_ASSERT(all != NULL);
    size_t m = 0, before = 0;
    int point = 0;
    for (; i < n && ((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && !point)); i++) {
        if (s[i] == '.') {
            point = 1;
            continue;
        }
        all[m++] = s[i];
        before += !point;
    }
    int64_t e = 0;
    if (i < n) { /* e or E, an optional sign, digits: checked by the encoder's acceptance */
        i++;
        int eneg = 0;
        if (s[i] == '+' || s[i] == '-')
            eneg = s[i++] == '-';
        for (; i < n && e < INT64_C(1000000000000); i++)
            e = e * 10 + (s[i] - '0');
        e = eneg ? -e : e;
    }
    decimal_from(d, all, m, (int64_t)before + e);
    free(all);
}

static void check_numeric(const char *s, size_t n) {
    keel__buf out = { 0 };
    int r = keel__pgc_numeric(&out, s, n);
    FUZZ_ASSERT(r == 0 || r == -2 || r == -3);
    if (r != 0) {
        FUZZ_ASSERT(out.len == 0);
        keel__buf_free(&out);
        return;
    }
    const unsigned char *p = (const unsigned char *)out.data;
    FUZZ_ASSERT(out.len >= 12);
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    uint16_t ndigits = get16(p + 4), sign = get16(p + 8), dscale = get16(p + 10);
    int16_t weight = (int16_t)get16(p + 6);
    FUZZ_ASSERT(len == out.len - 4 && out.len == 12 + 2 * (size_t)ndigits);
    FUZZ_ASSERT(dscale <= 0x3FFF);
    if (sign == 0xC000 || sign == 0xD000 || sign == 0xF000) {
        FUZZ_ASSERT(ndigits == 0);
        keel__buf_free(&out);
        return;
    }
    FUZZ_ASSERT(sign == 0x0000 || sign == 0x4000);
    /* Normalised: no zero group first or last; each group a base-10000 digit. */
    char *all = malloc(4 * (size_t)ndigits + 1);
    FUZZ_ASSERT(all != NULL);
    for (size_t i = 0; i < ndigits; i++) {
        uint16_t g = get16(p + 12 + 2 * i);
        FUZZ_ASSERT(g < 10000);
        FUZZ_ASSERT((i != 0 && i + 1 != ndigits) || g != 0);
        snprintf(all + 4 * i, 5, "%04u", g);
    }
    decimal got, want;
    decimal_from(&got, all, 4 * (size_t)ndigits, 4 * ((int64_t)weight + 1));
    int neg;
    text_value(s, n, &want, &neg);
    FUZZ_ASSERT(got.n == want.n && memcmp(got.digits, want.digits, got.n) == 0);
    FUZZ_ASSERT(got.exp == want.exp);
    FUZZ_ASSERT(sign == (neg && want.n ? 0x4000 : 0x0000));
    free(got.digits);
    free(want.digits);
    free(all);
    keel__buf_free(&out);
}

static void check_param(const uint8_t *data, size_t size) {
    if (size < 16)
        return;
    static const keel_type types[] = { KEEL_TYPE_BOOL,        KEEL_TYPE_INT,  KEEL_TYPE_FLOAT,
                                       KEEL_TYPE_DATE,        KEEL_TYPE_TIME, KEEL_TYPE_TIMESTAMP,
                                       KEEL_TYPE_TIMESTAMPTZ, KEEL_TYPE_UUID };
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        keel_value v;
        memset(&v, 0, sizeof v);
        v.type = types[t];
        memcpy(&v.u, data, sizeof v.u < 16 ? sizeof v.u : 16);
        if (v.type == KEEL_TYPE_BOOL)
            v.u.boolean = data[0] & 1;
        char *out = malloc(16);
        FUZZ_ASSERT(out != NULL);
        size_t n = keel__pgc_param(&v, out);
        FUZZ_ASSERT(n <= 16);
        if (v.type == KEEL_TYPE_INT) {
            FUZZ_ASSERT(n == 8);
            uint64_t be = 0;
            for (int i = 0; i < 8; i++)
                be = be << 8 | (unsigned char)out[i];
            FUZZ_ASSERT((int64_t)be == v.u.i64);
        }
        free(out);
    }
}

static void check_decode_binary(uint32_t oid, const uint8_t *data, size_t size) {
    keel_result *res = keel__result_new(1);
    FUZZ_ASSERT(res != NULL);
    /* Exactly the value's bytes, so that reading past them is caught. */
    char *s = malloc(size ? size : 1);
    FUZZ_ASSERT(s != NULL);
    if (size)
        memcpy(s, data, size);
    keel_value v;
    memset(&v, 0, sizeof v);
    char why[160];
    why[0] = '\0';
    int r = keel__pg_decode_binary(res, oid, s, size, &v, why, sizeof why);
    FUZZ_ASSERT(r == 0 || r == -2);
    keel_type kind = keel__pg_type_of(oid);
    if (r == 0)
        FUZZ_ASSERT(v.type == kind || v.type == KEEL_TYPE_TEXT);
    else
        FUZZ_ASSERT(why[0] != '\0');
    if (r == 0 && kind == KEEL_TYPE_ARRAY)
        check_array_items(&v, keel__pg_elem_type_of(oid), 0);
    free(s);
    keel_result_free(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint32_t oid = oids[data[0] % (sizeof oids / sizeof oids[0])];
    keel_type kind = keel__pg_type_of(oid);
    /* libpq's values are NUL-terminated: the text is given in a buffer of exactly its length
     * plus that NUL, so reading past it is caught. */
    char *s = fuzz_cstring(data + 1, size - 1);
    size_t n = strlen(s);
    if (kind == KEEL_TYPE_ARRAY)
        check_decode_array(oid, s, n);
    else if (kind == KEEL_TYPE_RANGE)
        check_decode_range(oid, s, n);
    else
        check_decode(kind, s, n);
    check_numeric(s, n);
    free(s);
    check_param(data + 1, size - 1);
    if (keel__pg_binary_ok(oid))
        check_decode_binary(oid, data + 1, size - 1);
    return 0;
}
