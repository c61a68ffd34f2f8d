/* src/engines/pg/binary.h - PostgreSQL binary format: keel values for COPY and for parameters. */
#ifndef KEEL_ENGINES_PG_BINARY_H
#define KEEL_ENGINES_PG_BINARY_H

#include <stddef.h>
#include <stdint.h>
#include <keel/value.h>
#include "core/buf.h"

/*
 * What binary form a column takes. Types whose binary form is their text (text, varchar, char,
 * name, citext, enums) share KEEL__PGC_TEXT; every type keel has no binary encoder for is
 * KEEL__PGC_OTHER, whose columns still take NULLs.
 */
typedef enum keel__pgc_kind {
    KEEL__PGC_OTHER = 0,
    KEEL__PGC_BOOL,
    KEEL__PGC_INT2,
    KEEL__PGC_INT4,
    KEEL__PGC_INT8,
    KEEL__PGC_OID,
    KEEL__PGC_FLOAT4,
    KEEL__PGC_FLOAT8,
    KEEL__PGC_NUMERIC,
    KEEL__PGC_TEXT,
    KEEL__PGC_BYTEA,
    KEEL__PGC_DATE,
    KEEL__PGC_TIME,
    KEEL__PGC_TIMESTAMP,
    KEEL__PGC_TIMESTAMPTZ,
    KEEL__PGC_UUID,
    KEEL__PGC_JSON,
    KEEL__PGC_JSONB,
    KEEL__PGC_ARRAY, /* an array of elements of kind elem (keel__pgc_col) */
    KEEL__PGC_INTERVAL,
    KEEL__PGC_INET,
    KEEL__PGC_CIDR,
    KEEL__PGC_RANGE /* a range of bounds of kind elem (keel__pgc_col) */
} keel__pgc_kind;

/*
 * One target column: its kind, and its name and type name for messages (not owned). An array
 * column also has the kind and type OID of its elements; a range column the kind of its bounds.
 */
typedef struct keel__pgc_col {
    keel__pgc_kind kind;
    const char *name;
    const char *type_name;
    keel__pgc_kind elem;
    uint32_t elem_oid;
} keel__pgc_col;

/*
 * The kind of a column of base type oid whose receive function is named receive (the type
 * behind a domain: the caller resolves domains first). array_recv is KEEL__PGC_ARRAY and
 * range_recv KEEL__PGC_RANGE.
 */
keel__pgc_kind keel__pgc_kind_of(uint32_t oid, const char *receive);

/*
 * The element type of a built-in array type (int4[] is int4), or 0 for any other type. *name,
 * when not NULL, is set to the element type's name for messages.
 */
uint32_t keel__pgc_array_elem(uint32_t array_oid, const char **name);

/*
 * Appends v as JSON: ints and floats as numbers (a float always with a point or an exponent),
 * text, numerics (exact), dates, times and UUIDs as strings, JSON as it is, arrays as JSON
 * arrays. 0, -1 out of memory, -2 when v has no JSON form (bytes, BSON), or -3 for a NaN or
 * infinite float (JSON has no such numbers).
 */
int keel__pgc_json(keel__buf *out, const keel_value *v);

/* The ISO text of a date, time or timestamp value into out (KEEL__TIME_TEXT_MAX bytes); its
 * length. With iso_t a timestamp's date and time are joined by 'T' (JSON's custom), else by a
 * space (PostgreSQL's). */
size_t keel__pgc_time_text(const keel_value *v, char *out, int iso_t);

/* The text of an interval value as PostgreSQL reads it ("-1 mons 2 days -00:00:01.5") into out
 * (at least KEEL__PGC_INTERVAL_TEXT_MAX bytes); its length. */
#define KEEL__PGC_INTERVAL_TEXT_MAX 80
size_t keel__pgc_interval_text(const keel_value *v, char *out);

/* True for the names PostgreSQL gives UTC (the session's TimeZone parameter as reported). */
int keel__pgc_tz_is_utc(const char *tz);

/*
 * Appends an array value v (KEEL_TYPE_ARRAY) for col, whose kind is KEEL__PGC_ARRAY, in binary,
 * as a field (its length first). Returns as keel__pgc_row: 0, -1 out of memory, or 1 with the
 * reason in why (out is then as it was).
 */
int keel__pgc_array(keel__buf *out, const keel__pgc_col *col, const keel_value *v, int naive_is_utc,
                    char *why, size_t why_size);

/* Appends the binary COPY header / the end-of-data trailer. 0, or -1 when out of memory. */
int keel__pgc_header(keel__buf *out);
int keel__pgc_trailer(keel__buf *out);

/*
 * Appends one tuple of n values for cols. naive_is_utc says whether the session's time zone is
 * UTC, which makes a naive timestamp a valid timestamptz (and an aware one a valid timestamp)
 * with the meaning the server would give it. Returns 0; -1 when out of memory; or the index of
 * the column whose value cannot be encoded plus 1, with the reason in why (the tuple is then
 * removed from out).
 */
int keel__pgc_row(keel__buf *out, const keel__pgc_col *cols, const keel_value *vals, size_t n,
                  int naive_is_utc, char *why, size_t why_size);

/*
 * Writes v in the binary form of the parameter type keel declares for it (bool, int8, float8,
 * date, time, timestamp, timestamptz, uuid, interval) into out, which has room for at least 16
 * bytes.
 * Returns the length written, or 0 when v goes as text: other types, and dates and timestamps
 * too far out for the binary form, which the server then refuses with its own message.
 */
size_t keel__pgc_param(const keel_value *v, char *out);

/*
 * Encodes decimal text (digits with an optional sign, point and exponent, or NaN / Infinity
 * in any case) as a PostgreSQL numeric in binary into out. 0, -1 out of memory, -2 malformed,
 * -3 out of numeric's range.
 */
int keel__pgc_numeric(keel__buf *out, const char *s, size_t n);

#endif
