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
    };
    if ((unsigned)type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "unknown";
}

/* The types whose value points at bytes (u.str): what a deep copy must copy. */
static int value_has_bytes(keel_type t) {
    return t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_TEXT || t == KEEL_TYPE_BYTES ||
           t == KEEL_TYPE_JSON || t == KEEL_TYPE_DOCUMENT;
}

keel_value *keel__values_copy(const keel_value *vals, size_t n, size_t extra, void **extra_out) {
    /* Every size is summed with a check: lengths the caller states must not wrap the block's
     * size around to a small one. */
    size_t align = alignof(max_align_t), head = 0, extra_at = 0, bytes = 0, total = 0;
    if (__builtin_mul_overflow(n, sizeof(keel_value), &head) ||
        __builtin_add_overflow(head, align - 1, &extra_at))
        return NULL; /* more values than memory can hold: vals cannot be that long */
    extra_at = extra_at / align * align;
    int wrapped = 0;
    for (size_t i = 0; i < n; i++)
        if (value_has_bytes(vals[i].type))
            wrapped |= __builtin_add_overflow(bytes, vals[i].u.str.len, &bytes);
    wrapped |= __builtin_add_overflow(extra_at, extra, &total) ||
               __builtin_add_overflow(total, bytes, &total) ||
               __builtin_add_overflow(total, 1, &total);
    char *block = wrapped ? NULL : malloc(total);
    if (!block)
        return NULL;
    keel_value *copy = (keel_value *)(void *)block;
    char *text = block + extra_at + extra, *nul = block + total - 1;
    *nul = '\0'; /* where empty strings point */
    if (n)
        memcpy(copy, vals, head);
    for (size_t i = 0; i < n; i++) {
        if (!value_has_bytes(copy[i].type))
            continue;
        size_t len = copy[i].u.str.len;
        if (!len) {
            copy[i].u.str.ptr = nul;
            continue;
        }
        memcpy(text, copy[i].u.str.ptr, len);
        copy[i].u.str.ptr = text;
        text += len;
    }
    if (extra_out)
        *extra_out = extra ? block + extra_at : NULL;
    return copy;
}

void keel__values_free(keel_value *copy) { free(copy); }
