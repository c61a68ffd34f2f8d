/* src/core/value_int.h - internal helpers for keel_value arrays: the deep copy engines keep. */
#ifndef KEEL_CORE_VALUE_INT_H
#define KEEL_CORE_VALUE_INT_H

#include <stddef.h>
#include <keel/value.h>

/*
 * A deep copy of n values, for an engine that uses parameters after the call that passed them
 * returns (a batch sent row by row, a job on a worker, a bulk load). One block holds the array,
 * then extra bytes for the caller (aligned for any type; *extra_out points at them, or is NULL
 * when extra is 0; extra_out may be NULL then), then the elements of arrays and the bounds of
 * ranges (at any depth), then the bytes of every string value (numeric, text, bytes, JSON, BSON
 * document), which the copied values point to. An empty string points at a NUL inside the
 * block, never at the caller's memory. n may be 0. Returns NULL when out of memory, when the
 * sizes add up beyond what can be allocated, or when arrays nest more than KEEL_ARRAY_MAX_DIMS
 * deep. Free with keel__values_free.
 */
keel_value *keel__values_copy(const keel_value *vals, size_t n, size_t extra, void **extra_out);

/* Frees a copy made by keel__values_copy (its strings and extra bytes with it); accepts NULL. */
void keel__values_free(keel_value *copy);

#endif
