/* src/core/error_int.h - internal helpers for filling a keel_error. */
#ifndef KEEL_CORE_ERROR_INT_H
#define KEEL_CORE_ERROR_INT_H

#include <stddef.h>
#include <stdint.h>
#include <keel/error.h>

/*
 * Fills err (which may be NULL) with code, engine, database and a printf-formatted message,
 * clears the SQLSTATE and the server fields (detail … datatype_name), and returns code so callers can write `return keel__error_set(...)`.
 * engine and database may be NULL (stored as "keel" and ""). Secrets must never be passed in.
 */
keel_status keel__error_set(keel_error *err, keel_status code, const char *engine,
                            const char *database, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Sets the SQLSTATE of err (NULL or shorter strings are accepted; at most 5 characters kept),
 * and err->violation when the SQLSTATE names a kind of constraint (23505, 23503 …). */
void keel__error_set_sqlstate(keel_error *err, const char *sqlstate);

/* Sets err->server_code and, unless violation is
 * KEEL_VIOLATION_NONE, err->violation. err may be NULL. */
void keel__error_set_server_code(keel_error *err, int64_t code, keel_violation violation);

/* Which of keel_error's server fields keel__error_set_field fills. */
typedef enum keel__error_field {
    KEEL__ERRF_DETAIL,
    KEEL__ERRF_HINT,
    KEEL__ERRF_SCHEMA,
    KEEL__ERRF_TABLE,
    KEEL__ERRF_COLUMN,
    KEEL__ERRF_CONSTRAINT,
    KEEL__ERRF_DATATYPE
} keel__error_field;

/*
 * Sets one server field of err (which may be NULL) to the first len bytes of value (len
 * SIZE_MAX: up to its NUL), truncated to the field's size; NULL stores "". detail and hint are
 * redacted (keel__redact) and their newlines and tabs become spaces.
 */
void keel__error_set_field(keel_error *err, keel__error_field which, const char *value, size_t len);

/* Copies src into dst (both may be NULL). */
void keel__error_copy(keel_error *dst, const keel_error *src);

/*
 * Maps a five-character SQLSTATE to the status that best describes its SQL-standard class
 * (23 → INTEGRITY, 42/26/34/3D/3F → PROGRAMMING, 22 → DATA, 08 → CONNECTION_LOST,
 * 25/40/2D → TRANSACTION, 0A → UNSUPPORTED, anything else → DATABASE). An engine maps its
 * server's own codes and classes first (PostgreSQL: keel__pg_status_of) and leaves the rest here.
 */
keel_status keel__status_from_sqlstate(const char *sqlstate);

/*
 * Copies a server or library message into dst (size bytes), removing anything that looks like a
 * password: the value of password, passwd and pwd keywords in any case, followed by '=' or ':'
 * (conninfo, ODBC "PWD=…;", "password: …", JSON's "password": "…", a percent-encoded '=' inside
 * a URL's query; quoted values up to their closing quote), and the userinfo password of URLs,
 * which ends at the last '@' before the query, including URLs nested percent-encoded in another
 * one's query. Masking too much is the mistake it prefers.
 */
void keel__redact(char *dst, size_t size, const char *src);

#endif
