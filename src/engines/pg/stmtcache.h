/* src/engines/pg/stmtcache.h - PostgreSQL's per-connection cache of named prepared statements. */
#ifndef KEEL_ENGINES_PG_STMTCACHE_H
#define KEEL_ENGINES_PG_STMTCACHE_H

#include "engines/pg/pg.h"

/* An empty cache of at most capacity statements (options.statement_cache_size may change it
 * before the first statement). */
void keel__pg_cache_init(pg_impl *p, size_t capacity);

/* Frees the cache and the DEALLOCATEs still pending (the session ends with the connection). */
void keel__pg_cache_free(pg_impl *p);

/*
 * True when a statement without parameters is certainly one statement, so it can be
 * prepared: it has text and no semicolon other than trailing ones. A semicolon inside a string
 * or a comment also sends the statement the simple way, which is always correct, only slower.
 */
int keel__pg_one_statement(const char *sql);

/*
 * Copies bytes parameters, which point into the caller's memory (valid only during the query
 * call), so a transparent retry can still send them. 0, or -1 when out of memory.
 */
int keel__pg_own_bytes(pg_impl *p, size_t n);

/*
 * Queues the round trip of the running cached statement in one pipeline: DEALLOCATEs of
 * evicted statements with a sync of their own (so their outcome never touches the statement),
 * then on a cache miss the prepare, then the execute and the closing sync. A miss therefore
 * costs no extra round trip. A hit with nothing to deallocate is a plain execute outside
 * pipeline mode, whose bookkeeping in libpq costs the client about 5 % of a short query.
 * Returns 0, -1 when libpq failed, -2 when out of memory (nothing queued then).
 */
int keel__pg_cached_send(pg_impl *p);

/*
 * Collects the results of a cached statement. In a pipeline each command's results end with a
 * NULL and each sync has a result of its own; a lone execute ends with its NULL. Returns 1 when
 * the operation is over, 0 when more input is needed, -1 when the connection failed.
 */
int keel__pg_cached_collect(pg_impl *p);

/* True when oid is an enum type the connection has looked up (its binary form is its label). */
int keel__pg_is_enum(const pg_impl *p, Oid oid);

/* The enum that oid is an array of, when the connection has looked it up; else 0. */
Oid keel__pg_enum_array_elem(const pg_impl *p, Oid oid);

/*
 * The binary flag (pg_stmt.binary) of a statement that returned r: 1 when every column decodes
 * from binary (keel__pg_binary_ok, an enum or an array of one), -1 when some column does not, 0 when the only
 * columns in doubt are user types not looked up yet, which are queued for the lookup (uask).
 */
int keel__pg_result_binary(pg_impl *p, const PGresult *r);

#endif
