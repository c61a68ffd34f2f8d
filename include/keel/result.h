/* keel/result.h - the decoded result of one statement. */
#ifndef KEEL_RESULT_H
#define KEEL_RESULT_H

#include <stddef.h>
#include <stdint.h>
#include <keel/export.h>
#include <keel/value.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * An immutable, fully decoded result: column names and types, rows of keel_value, and the number
 * of rows a DML statement affected. Owned by whoever received it; free with keel_result_free.
 * Accessors never block and never fail; out-of-range indexes return NULL / KEEL_TYPE_NULL.
 */
typedef struct keel_result keel_result;

KEEL_API size_t keel_result_nrows(const keel_result *res);
KEEL_API size_t keel_result_ncols(const keel_result *res);

/* Column name; valid as long as res. NULL if col is out of range. */
KEEL_API const char *keel_result_colname(const keel_result *res, size_t col);

/* The column's declared type as far as the engine knows it; KEEL_TYPE_NULL when it does not. */
KEEL_API keel_type keel_result_coltype(const keel_result *res, size_t col);

/*
 * A statement's description (the result keel_conn_prepare completes with; other results have
 * no parameters and no type names): the engine's name of a column's type ("int4", "VARCHAR",
 * "INTEGER"), or NULL when the engine does not name it; the number of parameters ($1…$n); each
 * parameter's type as far as the engine infers it (KEEL_TYPE_NULL when it does not: MySQL and
 * SQLite leave parameters untyped) and the engine's name of it (NULL likewise). Names are valid
 * as long as res.
 */
KEEL_API const char *keel_result_coltype_name(const keel_result *res, size_t col);
KEEL_API size_t keel_result_nparams(const keel_result *res);
KEEL_API keel_type keel_result_paramtype(const keel_result *res, size_t i);
KEEL_API const char *keel_result_paramtype_name(const keel_result *res, size_t i);

/*
 * The engine's identifier of a column's type: PostgreSQL's type OID (what a custom type's
 * values are recognised by, keel_result_coltype being TEXT for them), or 0 when the engine has
 * none (MySQL, SQLite) or col is out of range.
 */
KEEL_API uint32_t keel_result_coltype_id(const keel_result *res, size_t col);

/* The value at (row, col); valid as long as res. NULL if out of range. */
KEEL_API const keel_value *keel_result_value(const keel_result *res, size_t row, size_t col);

/* All values of a row, ncols of them, valid as long as res. NULL if row is out of range. */
KEEL_API const keel_value *keel_result_row(const keel_result *res, size_t row);

/* Rows affected by INSERT/UPDATE/DELETE, or -1 when the statement does not report it. */
KEEL_API int64_t keel_result_affected(const keel_result *res);

/* Frees res and everything its values point at. Accepts NULL. Never blocks. */
KEEL_API void keel_result_free(keel_result *res);

#ifdef __cplusplus
}
#endif
#endif
