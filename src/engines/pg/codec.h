/* src/engines/pg/codec.h - PostgreSQL parameters (keel values to wire form) and result values. */
#ifndef KEEL_ENGINES_PG_CODEC_H
#define KEEL_ENGINES_PG_CODEC_H

#include "engines/pg/pg.h"

/* Checks what libpq cannot carry: unknown types, and NUL bytes inside text. */
keel_status keel__pg_param_check(pg_impl *p, const keel_value *v, size_t i, keel_error *err);

/*
 * Encodes one row of parameters into the connection's reusable arrays. Every value whose type
 * keel declares (bool, int8, float8, date, time, timestamps, uuid) goes in binary, which the
 * server reads without parsing text (a batch of inserts spends much of its server time parsing
 * timestamps and numbers otherwise); bytes go in binary too, so they need no escaping. Text,
 * JSON and numeric go as text. Values must have passed keel__pg_param_check.
 */
keel_status keel__pg_encode(pg_impl *p, const keel_value *v, size_t n, keel_error *err);

/* The keel type the values of a column of type oid decode to. */
keel_type keel__pg_type_of(Oid oid);

/*
 * Decodes one value of column kind t. Text the decoder does not recognise (dates such as
 * "infinity", a DateStyle changed by the user) is returned as TEXT rather than failing the
 * whole result. -1 when out of memory.
 */
int keel__pg_decode_value(keel_result *res, keel_type t, const char *s, size_t n, keel_value *v);

#endif
