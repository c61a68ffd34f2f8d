/* src/core/result_int.h - building a keel_result (for engines). */
#ifndef KEEL_CORE_RESULT_INT_H
#define KEEL_CORE_RESULT_INT_H

#include <keel/result.h>
#include "core/buf.h"

/* Creates an empty result with ncols columns (names "" and types NULL). NULL when out of memory. */
keel_result *keel__result_new(size_t ncols);

/* Sets a column's name (copied, n bytes) and declared type. Returns 0 or -1 (out of memory). */
int keel__result_set_column(keel_result *res, size_t col, const char *name, size_t n,
                            keel_type type);

/*
 * Appends a row and returns its ncols values, all KEEL_TYPE_NULL, for the engine to fill.
 * NULL when out of memory. The pointer is valid until the next keel__result_add_row. Growth
 * never copies more than the first block of rows (1024), whatever the size of the result.
 */
keel_value *keel__result_add_row(keel_result *res);

/*
 * Prepares for n more rows: refuses a count whose size in bytes wraps around (counts may come
 * from the network) and sizes the first block of rows, so that a small result is allocated at
 * once. Returns 0, or -1 (too large, or out of memory).
 */
int keel__result_reserve(keel_result *res, size_t n);

/* Memory owned by the result, for text-like values (n bytes, plus a NUL). NULL on failure. */
char *keel__result_alloc(keel_result *res, size_t n);
/* Copies n bytes into result memory and NUL-terminates them. NULL on failure. */
char *keel__result_strndup(keel_result *res, const char *s, size_t n);
/*
 * Makes v a text-like value of type t (TEXT, NUMERIC, JSON, BYTES…) holding a copy of the n
 * bytes at s (NULL when n is 0) in result memory. Returns 0, or -1 when out of memory.
 */
int keel__result_set_text(keel_result *res, keel_value *v, keel_type t, const char *s, size_t n);

void keel__result_set_affected(keel_result *res, int64_t affected);

/* A statement's description (keel_conn_prepare): the engine's name of a column's type (n
 * bytes, copied), the number of parameters (once), and each parameter's type and the engine's
 * name of it (NULL when the engine does not say). Each returns 0, or -1 (out of memory, out of
 * range). */
int keel__result_set_type_name(keel_result *res, size_t col, const char *name, size_t n);

/* Sets a column's engine type identifier (PostgreSQL's type OID). 0, or -1 out of range. */
int keel__result_set_type_id(keel_result *res, size_t col, uint32_t id);
int keel__result_set_nparams(keel_result *res, size_t n);
int keel__result_set_param(keel_result *res, size_t i, keel_type type, const char *name, size_t n);

/*
 * Drops every row and the memory of their values, keeping the columns, the affected count and
 * the row capacity: a result that carries a statement's rows in batches is refilled in place.
 */
void keel__result_clear_rows(keel_result *res);

/*
 * Calls fn(view, arg) with a view of res that holds up to n of its rows from row first on, with
 * res's columns and its affected count: the way to hand part of a result to a keel_rows_cb.
 * Returns how many rows the view held: fewer than n at the end of the rows, and at the end of
 * the block of rows first is in (rows are stored in blocks of 1024; a view starting at a
 * multiple of n, n dividing 1024, always holds n rows before the end). The view lives on the
 * stack of this call and points into res, which must not change until fn returns. Nothing is
 * copied; never fails.
 */
size_t keel__result_show_rows(const keel_result *res, size_t first, size_t n,
                              void (*fn)(const keel_result *view, void *arg), void *arg);

#endif
