/* src/core/value.c - constructors and names for keel_value, and deep copies of value arrays. */
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/value.h>
#include "core/value_int.h"

keel_value keel_null(void) {
    keel_value v;
    memset(&v, 0, sizeof v);
    v.type = KEEL_TYPE_NULL;
    return v;
}

keel_value keel_bool(int b) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_BOOL;
    v.u.boolean = b ? 1 : 0;
    return v;
}

keel_value keel_int(int64_t i) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_INT;
    v.u.i64 = i;
    return v;
}

keel_value keel_float(double f) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_FLOAT;
    v.u.f64 = f;
    return v;
}

static keel_value string_value(keel_type type, const char *p, size_t len) {
    keel_value v = keel_null();
    v.type = type;
    v.u.str.ptr = p ? p : "";
    v.u.str.len = p ? len : 0;
    return v;
}

keel_value keel_text(const char *s) { return string_value(KEEL_TYPE_TEXT, s, s ? strlen(s) : 0); }

keel_value keel_textn(const char *s, size_t len) { return string_value(KEEL_TYPE_TEXT, s, len); }

keel_value keel_bytes(const void *p, size_t len) {
    return string_value(KEEL_TYPE_BYTES, (const char *)p, len);
}

keel_value keel_numeric(const char *s) {
    return string_value(KEEL_TYPE_NUMERIC, s, s ? strlen(s) : 0);
}

keel_value keel_json(const char *s) { return string_value(KEEL_TYPE_JSON, s, s ? strlen(s) : 0); }

keel_value keel_date(int32_t days) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_DATE;
    v.u.date = days;
    return v;
}

static keel_value micros_value(keel_type type, int64_t micros) {
    keel_value v = keel_null();
    v.type = type;
    v.u.micros = micros;
    return v;
}

keel_value keel_time(int64_t micros) { return micros_value(KEEL_TYPE_TIME, micros); }

keel_value keel_timestamp(int64_t micros) { return micros_value(KEEL_TYPE_TIMESTAMP, micros); }

keel_value keel_timestamptz(int64_t micros) { return micros_value(KEEL_TYPE_TIMESTAMPTZ, micros); }

keel_value keel_uuid(const unsigned char bytes[16]) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_UUID;
    memcpy(v.u.uuid, bytes, 16);
    return v;
}

keel_value keel_array(const keel_value *items, size_t n) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_ARRAY;
    v.u.array.items = n ? items : NULL;
    v.u.array.n = items ? n : 0;
    return v;
}

keel_value keel_interval(int32_t months, int32_t days, int64_t micros) {
    keel_value v = keel_null();
    v.type = KEEL_TYPE_INTERVAL;
    v.u.interval.months = months;
    v.u.interval.days = days;
    v.u.interval.micros = micros;
    return v;
}

const char *keel_type_name(keel_type type) {
    static const char *const names[] = {
        [KEEL_TYPE_NULL] = "null",
        [KEEL_TYPE_BOOL] = "bool",
        [KEEL_TYPE_INT] = "int",
        [KEEL_TYPE_FLOAT] = "float",
        [KEEL_TYPE_NUMERIC] = "numeric",
        [KEEL_TYPE_TEXT] = "text",
        [KEEL_TYPE_BYTES] = "bytes",
        [KEEL_TYPE_DATE] = "date",
        [KEEL_TYPE_TIME] = "time",
        [KEEL_TYPE_TIMESTAMP] = "timestamp",
        [KEEL_TYPE_TIMESTAMPTZ] = "timestamptz",
        [KEEL_TYPE_UUID] = "uuid",
        [KEEL_TYPE_JSON] = "json",
        [KEEL_TYPE_DOCUMENT] = "document",
        [KEEL_TYPE_ARRAY] = "array",
        [KEEL_TYPE_INTERVAL] = "interval",
        [KEEL_TYPE_INET] = "inet",
        [KEEL_TYPE_CIDR] = "cidr",
        [KEEL_TYPE_RANGE] = "range",
    };
    if ((unsigned)type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "unknown";
}

/* The types whose value points at bytes (u.str): what a deep copy must copy. */
static int value_has_bytes(keel_type t) {
    return t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_TEXT || t == KEEL_TYPE_BYTES ||
           t == KEEL_TYPE_JSON || t == KEEL_TYPE_DOCUMENT || t == KEEL_TYPE_INET ||
           t == KEEL_TYPE_CIDR;
}

/*
 * Adds up the values nested in arrays and the string bytes of n values, depth levels deep at
 * most. Returns 0, or -1 when a sum wraps or arrays nest deeper.
 */
static int values_measure(const keel_value *vals, size_t n, int depth, size_t *nested,
                          size_t *bytes) {
    for (size_t i = 0; i < n; i++) {
        if (value_has_bytes(vals[i].type)) {
            if (__builtin_add_overflow(*bytes, vals[i].u.str.len, bytes))
                return -1;
        } else if (vals[i].type == KEEL_TYPE_ARRAY) {
            /* Counts are checked before any element is read: a stated length that cannot
             * be the length of an array in memory is refused without reading it. */
            if (depth >= KEEL_ARRAY_MAX_DIMS ||
                __builtin_add_overflow(*nested, vals[i].u.array.n, nested) ||
                *nested > SIZE_MAX / sizeof(keel_value) ||
                values_measure(vals[i].u.array.items, vals[i].u.array.n, depth + 1, nested,
                               bytes) != 0)
                return -1;
        } else if (vals[i].type == KEEL_TYPE_RANGE && vals[i].u.range.bounds) {
            /* A range's two bounds are nested values too (NULL for an unbounded side). */
            if (depth >= KEEL_ARRAY_MAX_DIMS || __builtin_add_overflow(*nested, 2, nested) ||
                *nested > SIZE_MAX / sizeof(keel_value) ||
                values_measure(vals[i].u.range.bounds, 2, depth + 1, nested, bytes) != 0)
                return -1;
        }
    }
    return 0;
}

/* Points the strings, arrays and range bounds of the n values at copies made at *text and
 * *nested. */
static void values_relink(keel_value *copy, size_t n, char **text, keel_value **nested, char *nul) {
    for (size_t i = 0; i < n; i++) {
        if (copy[i].type == KEEL_TYPE_ARRAY) {
            size_t m = copy[i].u.array.n;
            if (!m) {
                copy[i].u.array.items = NULL;
                continue;
            }
            keel_value *items = *nested;
            memcpy(items, copy[i].u.array.items, m * sizeof *items);
            *nested += m;
            copy[i].u.array.items = items;
            values_relink(items, m, text, nested, nul);
            continue;
        }
        if (copy[i].type == KEEL_TYPE_RANGE) {
            if (!copy[i].u.range.bounds)
                continue;
            keel_value *bounds = *nested;
            memcpy(bounds, copy[i].u.range.bounds, 2 * sizeof *bounds);
            *nested += 2;
            copy[i].u.range.bounds = bounds;
            values_relink(bounds, 2, text, nested, nul);
            continue;
        }
        if (!value_has_bytes(copy[i].type))
            continue;
        size_t len = copy[i].u.str.len;
        if (!len) {
            copy[i].u.str.ptr = nul;
            continue;
        }
        memcpy(*text, copy[i].u.str.ptr, len);
        copy[i].u.str.ptr = *text;
        *text += len;
    }
}

keel_value *keel__values_copy(const keel_value *vals, size_t n, size_t extra, void **extra_out) {
    /* Every size is summed with a check: lengths the caller states must not wrap the block's
     * size around to a small one. */
    size_t align = alignof(max_align_t), head = 0, extra_at = 0, nested = 0, bytes = 0,
           nested_at = 0, nested_size = 0, total = 0;
    if (__builtin_mul_overflow(n, sizeof(keel_value), &head) ||
        __builtin_add_overflow(head, align - 1, &extra_at))
        return NULL; /* more values than memory can hold: vals cannot be that long */
    extra_at = extra_at / align * align;
    if (values_measure(vals, n, 0, &nested, &bytes) != 0)
        return NULL;
    int wrapped = __builtin_add_overflow(extra_at, extra, &nested_at) ||
                  __builtin_add_overflow(nested_at, align - 1, &nested_at) ||
                  __builtin_mul_overflow(nested, sizeof(keel_value), &nested_size);
    nested_at = nested_at / align * align;
    wrapped |= __builtin_add_overflow(nested_at, nested_size, &total) ||
               __builtin_add_overflow(total, bytes, &total) ||
               __builtin_add_overflow(total, 1, &total);
    char *block = wrapped ? NULL : malloc(total);
    if (!block)
        return NULL;
    keel_value *copy = (keel_value *)(void *)block;
    char *text = block + nested_at + nested_size, *nul = block + total - 1;
    keel_value *items = (keel_value *)(void *)(block + nested_at);
    *nul = '\0'; /* where empty strings point */
    if (n)
        memcpy(copy, vals, head);
    values_relink(copy, n, &text, &items, nul);
    if (extra_out)
        *extra_out = extra ? block + extra_at : NULL;
    return copy;
}

void keel__values_free(keel_value *copy) { free(copy); }
