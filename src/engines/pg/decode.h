/* src/engines/pg/decode.h - PostgreSQL result values in binary format. */
#ifndef KEEL_ENGINES_PG_DECODE_H
#define KEEL_ENGINES_PG_DECODE_H

#include <stddef.h>

#include "engines/pg/pg.h"

/*
 * True when keel decodes values of type oid from their binary form into the very value it
 * decodes from their text: bool, int2/4/8, oid, float4/8, numeric, text, varchar, bpchar, name,
 * bytea, uuid, date, time, timetz, timestamp, timestamptz, interval, json, jsonb, inet, cidr,
 * void, the built-in ranges of those, and arrays of all of them. A statement whose result
 * columns all pass is asked for its results in binary.
 */
int keel__pg_binary_ok(Oid oid);

/* True when every column of r passes keel__pg_binary_ok (a result without columns does too). */
int keel__pg_binary_result_ok(const PGresult *r);

/*
 * Decodes the binary form s[0..n) of a value of type oid (keel__pg_binary_ok) into v, whose
 * text, bytes and elements live in res. The value is the one keel__pg_decode_value and its
 * siblings make of the server's text form: values that text gives as TEXT (dates and
 * timestamps ±infinity, timetz, a numeric's digits) are written as the server writes them.
 * Returns 0; -1 when out of memory; -2 when the bytes are not a value of the type (truncated,
 * too long, an array of another element type…), with the reason in why (why_size bytes).
 */
int keel__pg_decode_binary(keel_result *res, Oid oid, const char *s, size_t n, keel_value *v,
                           char *why, size_t why_size);

#endif
