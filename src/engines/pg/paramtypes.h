/* src/engines/pg/paramtypes.h - PostgreSQL parameter types the server describes, for arrays and ints. */
#ifndef KEEL_ENGINES_PG_PARAMTYPES_H
#define KEEL_ENGINES_PG_PARAMTYPES_H

#include "engines/pg/pg.h"

/*
 * An array parameter takes the form of the type the server gives the parameter: a list is an
 * int4[] for `id = ANY($1)` and a JSON array for a jsonb column. An int takes the server's type
 * too, so that `f($1)` finds f(integer) and `$1` compares with a smallint column as the column's
 * type: it is sent as that type when keel has a form for ints of it (smallint, integer, bigint,
 * oid, numeric, real, double precision; a value out of its range is refused naming the
 * parameter), else as bigint, as when the server cannot type the statement with the int left
 * unknown (SELECT $1 is text; f($1) with f(integer) and f(bigint) is ambiguous): the statement is
 * then described again with bigint, so that it resolves as it would with a bigint.
 *
 * Before a statement with arrays or ints runs for the first time on a connection, it is parsed
 * into the unnamed statement and described (one round trip, with the types keel declares for
 * its other parameters; two when it is described again); the described types are cached by text
 * and declared types, so later runs cost nothing extra. Inside a transaction block the first
 * describe runs inside a savepoint, so that a statement the server cannot type with an unknown
 * int never aborts the user's transaction. A statement that fails drops its cached types (a
 * table may have changed under them).
 */

/* The empty cache of described types, and its release when the connection closes. */
void keel__pg_ptypes_init(pg_impl *p);
void keel__pg_ptypes_free(pg_impl *p);

/* True when a statement's parameters (any row) hold an array or an int. */
int keel__pg_needs_types(const keel__stmt *stmt);

/*
 * Sets p->pdesc for stmt from the cache: 1 when its types are known, 0 when the statement must
 * be described first, -1 when out of memory.
 */
int keel__pg_ptypes_cached(pg_impl *p, const keel__stmt *stmt, const char *sql);

/*
 * Starts describing stmt (sql is the connection's NUL-terminated copy): copies its parameters
 * for the run that follows. KEEL_OK, or the error (nothing is in flight then unless the
 * connection was given up).
 */
keel_status keel__pg_ptypes_start(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                  keel_error *err);

/*
 * Collects the describe's results; once they are in, caches the types and starts the statement
 * itself with run (the rest of keel__pg_query). Returns 1 when the operation is over (failed),
 * 0 when more input is needed or the statement is now running, -1 when the connection failed.
 */
int keel__pg_ptypes_collect(pg_impl *p, keel_status (*run)(pg_impl *, const keel__stmt *,
                                                           const char *, keel_error *));

/* The running statement is over; when it failed, the cached types it used are dropped. */
void keel__pg_ptypes_done(pg_impl *p);

/* Forgets the copy of a described statement (after its run started, or at the end). */
void keel__pg_ptypes_clear(pg_impl *p);

#endif
