/* src/core/value.c - constructors and names for keel_value. */
#include <string.h>

#include <keel/value.h>

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
