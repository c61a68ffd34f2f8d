/* keel/value.h - the engine-neutral value model used for parameters and results. */
#ifndef KEEL_VALUE_H
#define KEEL_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include <keel/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The type of a keel_value. Numbers only ever grow. */
typedef enum keel_type {
    KEEL_TYPE_NULL = 0,
    KEEL_TYPE_BOOL = 1,
    KEEL_TYPE_INT = 2,     /* int64 */
    KEEL_TYPE_FLOAT = 3,   /* float64 */
    KEEL_TYPE_NUMERIC = 4, /* exact decimal, as text ("-12.3400", "NaN") */
    KEEL_TYPE_TEXT = 5,    /* UTF-8 */
    KEEL_TYPE_BYTES = 6,
    KEEL_TYPE_DATE = 7,         /* days since 1970-01-01 (proleptic Gregorian) */
    KEEL_TYPE_TIME = 8,         /* microseconds since midnight */
    KEEL_TYPE_TIMESTAMP = 9,    /* microseconds since 1970-01-01T00:00:00, no time zone */
    KEEL_TYPE_TIMESTAMPTZ = 10, /* microseconds since 1970-01-01T00:00:00Z (UTC) */
    KEEL_TYPE_UUID = 11,        /* 16 bytes, network order */
    KEEL_TYPE_JSON = 12,        /* JSON document as UTF-8 text */
    KEEL_TYPE_DOCUMENT = 13,    /* BSON document bytes (document engines: MongoDB) */
    KEEL_TYPE_ARRAY = 14,       /* PostgreSQL array: u.array, n elements; a dimension of a
                                   multi-dimensional array is an element that is an ARRAY */
    KEEL_TYPE_INTERVAL = 15,    /* PostgreSQL interval: u.interval (months, days, microseconds) */
    KEEL_TYPE_INET = 16,        /* PostgreSQL inet: u.str, an address with an optional prefix
                                   ("10.0.0.1", "fe80::1/64") */
    KEEL_TYPE_CIDR = 17,        /* PostgreSQL cidr: u.str, a network ("10.0.0.0/8") */
    KEEL_TYPE_RANGE = 18        /* PostgreSQL range (results, bulk loads): u.range */
} keel_type;

/* The flags of a KEEL_TYPE_RANGE. An unbounded side's bound is KEEL_TYPE_NULL. */
#define KEEL_RANGE_EMPTY 1u
#define KEEL_RANGE_LOWER_INC 2u
#define KEEL_RANGE_UPPER_INC 4u

/* The most dimensions an array has (PostgreSQL's limit). */
#define KEEL_ARRAY_MAX_DIMS 6

/*
 * A value. Transparent so parameters can be built on the stack without allocation. Text-like
 * values (NUMERIC, TEXT, BYTES, JSON, DOCUMENT) point at memory the value does not own: for parameters the
 * caller keeps it alive until the submitting call returns (keel copies what it needs); for
 * results it lives as long as the keel_result it came from.
 */
typedef struct keel_value {
    keel_type type;
    union {
        int boolean;
        int64_t i64;
        double f64;
        struct {
            const char *ptr;
            size_t len;
        } str;
        int32_t date;
        int64_t micros; /* TIME, TIMESTAMP, TIMESTAMPTZ */
        unsigned char uuid[16];
        struct {
            const struct keel_value *items;
            size_t n;
        } array;
        struct {
            const struct keel_value *bounds; /* [0] lower, [1] upper; NULL when empty */
            unsigned flags;                  /* KEEL_RANGE_* */
        } range;
        struct {
            int64_t micros; /* the time part */
            int32_t days;
            int32_t months; /* kept apart, as PostgreSQL does: a month has no fixed length */
        } interval;
    } u;
} keel_value;

/* Constructors for parameters. They never allocate and never fail. */
KEEL_API keel_value keel_null(void);
KEEL_API keel_value keel_bool(int b);
KEEL_API keel_value keel_int(int64_t v);
KEEL_API keel_value keel_float(double v);
KEEL_API keel_value keel_text(const char *s); /* NUL-terminated; strlen is taken */
KEEL_API keel_value keel_textn(const char *s, size_t len);
KEEL_API keel_value keel_bytes(const void *p, size_t len);
KEEL_API keel_value keel_numeric(const char *decimal_text);
KEEL_API keel_value keel_json(const char *json_text);
KEEL_API keel_value keel_date(int32_t days_since_epoch);
KEEL_API keel_value keel_time(int64_t micros_since_midnight);
KEEL_API keel_value keel_timestamp(int64_t micros_since_epoch);
KEEL_API keel_value keel_timestamptz(int64_t micros_since_epoch_utc);
KEEL_API keel_value keel_uuid(const unsigned char bytes[16]);
/*
 * An array of n elements (not copied: see above). A multi-dimensional array is an array of
 * arrays of equal lengths; elements may be NULL. On PostgreSQL the server's type for the
 * parameter decides its form: an array type in binary, json/jsonb as a JSON array.
 */
KEEL_API keel_value keel_array(const keel_value *items, size_t n);
/* An interval of months, days and microseconds (each signed, as PostgreSQL keeps them). */
KEEL_API keel_value keel_interval(int32_t months, int32_t days, int64_t micros);

/* The lower-case name of a type ("timestamptz"). Never NULL. */
KEEL_API const char *keel_type_name(keel_type type);

#ifdef __cplusplus
}
#endif
#endif
