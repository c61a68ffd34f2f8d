/* src/engines/mysql/stmtcache.h - MySQL's per-connection cache of prepared statements (LRU). */
#ifndef KEEL_ENGINES_MYSQL_STMTCACHE_H
#define KEEL_ENGINES_MYSQL_STMTCACHE_H

#include "engines/mysql/mysql.h"

/* An empty cache of the connection's prepared statements. */
void keel__my_cache_init(my_impl *p);

/* Closes every cached statement (the handle is closing) and empties the cache. */
void keel__my_cache_free(my_impl *p);

/* The cached statement for sql, made the most recently used, or NULL. */
my_cached *keel__my_cache_find(my_impl *p, const char *sql, size_t len);

/* Queues a statement to be closed on the server before the next prepared statement runs. */
int keel__my_evict_push(my_impl *p, MYSQL_STMT *st);

/* Adds a prepared statement; the least recently used one beyond the limit is evicted. */
void keel__my_cache_add(my_impl *p, MYSQL_STMT *st, const char *sql, size_t len);

/* Takes cur out of the cache: it is closed on the server before the next statement runs. */
void keel__my_cache_drop_cur(my_impl *p);

#endif
