/* src/engines/pg/codec.h - PostgreSQL parameters (keel values to wire form) and result values. */
#ifndef KEEL_ENGINES_PG_CODEC_H
#define KEEL_ENGINES_PG_CODEC_H

#include "engines/pg/pg.h"

/* Checks what libpq cannot carry: unknown types, NUL bytes inside text, and ints out of the
 * range of the integer type described for them (p->pdesc). */
keel_status keel__pg_param_check(pg_impl *p, const keel_value *v, size_t i, keel_error *err);

/*
 * Encodes one row of parameters into the connection's reusable arrays. An array goes in the
 * form of the type the server described for it (p->pdesc): an array type in binary, json or
 * jsonb as a JSON array, another type as an array literal in text. An int goes as the type
 * described for it when keel__pg_int_oid_ok says so (numeric as text), else as int8; values
 * out of a described integer type's range were refused by keel__pg_param_check. Every value
 * whose type keel declares (bool, int8, float8, date, time, timestamps, uuid) goes in binary,
 * which the server reads without parsing text (a batch of inserts spends much of its server
 * time parsing timestamps and numbers otherwise); bytes go in binary too, so they need no
 * escaping. Text, JSON and numeric go as text. Values must have passed keel__pg_param_check.
 */
keel_status keel__pg_encode(pg_impl *p, const keel_value *v, size_t n, keel_error *err);

/* The keel type the values of a column of type oid decode to (ARRAY for arrays of the built-in
 * types keel knows, and of TEXT elements for other built-in arrays: money[], timetz[]…; NULL for
 * void, whose values are all None). */
keel_type keel__pg_type_of(Oid oid);

/*
 * Decodes the text form of a range ("[1,5)", "(,\"2020-01-01\"]", "empty") of bounds of type et
 * into v, a RANGE whose bounds live in res. Text of another form is returned as TEXT. 0, or -1
 * when out of memory.
 */
int keel__pg_decode_range(keel_result *res, keel_type et, const char *s, size_t n, keel_value *v);

/* The keel type of the elements of an array column, or of the bounds of a range column, of type
 * oid (NULL for other types). TEXT also for a type of OID 10000 or more (enums, composites,
 * their arrays): a TEXT column whose values are read as arrays of text when they have an
 * array's form ("{…}" or "[l:u]={…}"), else as text. */
keel_type keel__pg_elem_type_of(Oid oid);

/*
 * Decodes the text form of an array ("{1,2,NULL}", "{{\"a\"},{\"b\"}}", "[0:1]={…}") of
 * elements of type et (ranges of bounds of type bt when et is RANGE) into v, an ARRAY whose
 * elements live in res. Text of another form is
 * returned as TEXT. 0, or -1 when out of memory.
 */
int keel__pg_decode_array(keel_result *res, keel_type et, keel_type bt, const char *s, size_t n,
                          keel_value *v);

/* The keel type of the bounds of the ranges an array column of type oid holds (int4range[]:
 * INT), or NULL when its elements are not ranges. */
keel_type keel__pg_range_bound_type_of(Oid oid);

/* True for the types an int parameter is sent as when the server gives it one: smallint,
 * integer, bigint, oid, numeric, real, double precision (else it goes as bigint). */
int keel__pg_int_oid_ok(Oid oid);

/* The type of the bounds of a built-in range type (int4range: int4), or 0 for other types. */
Oid keel__pg_range_subtype(Oid oid);

/* The element type of an array type whose values keel decodes as arrays of its own values
 * (int4[]: int4, int4range[]: int4range), or 0 for other types. */
Oid keel__pg_array_elem_oid(Oid oid);

/* The parameter type keel declares for a value of type t (0: the server decides). */
Oid keel__pg_declared_oid(keel_type t);

/*
 * Decodes one value of column kind t. Text the decoder does not recognise (dates such as
 * "infinity", a DateStyle changed by the user) is returned as TEXT rather than failing the
 * whole result. -1 when out of memory.
 */
int keel__pg_decode_value(keel_result *res, keel_type t, const char *s, size_t n, keel_value *v);

#endif
