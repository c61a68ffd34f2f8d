/* src/engines/stmtcache.h - the prepared-statement cache of the SQL engines: by text, LRU, bounded. */
#ifndef KEEL_ENGINES_STMTCACHE_H
#define KEEL_ENGINES_STMTCACHE_H

#include <stddef.h>
#include <stdint.h>

/*
 * PostgreSQL, MySQL and SQLite each keep the statements a connection prepared, keyed by their
 * SQL text (and, for PostgreSQL, the parameter types the statement was prepared with), evicting
 * the least recently used one beyond a capacity. This is that cache; what a statement is and
 * what evicting it means (DEALLOCATE, mysql_stmt_close, sqlite3_finalize) stays with the engine.
 * An engine's entry type begins with a keel__stmtcache_entry, and the cache allocates entries of
 * the engine's size. Not thread-safe: one thread at a time, as a connection is used.
 */

/* The cache's part of an entry; the engine's fields follow it in the engine's entry type. */
typedef struct keel__stmtcache_entry {
    struct keel__stmtcache_entry *prev, *next; /* most recently used first */
    uint64_t hash;
    const char *sql; /* a NUL-terminated copy of the text, owned by the entry */
    size_t sql_len;
    const void *key; /* a copy of the extra key bytes (aligned for any type), or NULL */
    size_t key_len;
} keel__stmtcache_entry;

/* Called for an entry the cache evicts, before it frees the entry: the engine lets go of the
 * statement (finalises it, or queues it to be closed on the server). */
typedef void (*keel__stmtcache_evict_cb)(void *owner, keel__stmtcache_entry *e);

typedef struct keel__stmtcache {
    keel__stmtcache_entry *mru, *lru;
    size_t count;
    size_t capacity;   /* entries kept at most; 0 caches nothing */
    size_t entry_size; /* the size of the engine's entry type */
    keel__stmtcache_evict_cb evict;
    void *owner; /* passed to evict */
} keel__stmtcache;

/*
 * An empty cache of at most capacity entries of entry_size bytes (at least
 * sizeof(keel__stmtcache_entry)); evict (not NULL) is called with owner for each evicted entry.
 * Allocates nothing.
 */
void keel__stmtcache_init(keel__stmtcache *c, size_t capacity, size_t entry_size,
                          keel__stmtcache_evict_cb evict, void *owner);

/*
 * The entry for this text and these extra key bytes (key may be NULL when key_len is 0), made
 * the most recently used; NULL when there is none.
 */
keel__stmtcache_entry *keel__stmtcache_find(keel__stmtcache *c, const char *sql, size_t len,
                                            const void *key, size_t key_len);

/*
 * A new entry for this text and key, the most recently used, with the engine's fields zeroed
 * (the caller fills them before any other call on the cache). When the cache is full the least
 * recently used entry is evicted first. NULL when out of memory or when the capacity is 0:
 * nothing is cached nor evicted then, and the caller keeps its statement itself. The caller
 * must not add a text and key the cache already holds (find first).
 */
keel__stmtcache_entry *keel__stmtcache_add(keel__stmtcache *c, const char *sql, size_t len,
                                           const void *key, size_t key_len);

/* Takes e out of the cache and frees it without calling evict: the caller has dealt with its
 * statement already (or will). */
void keel__stmtcache_remove(keel__stmtcache *c, keel__stmtcache_entry *e);

/*
 * Frees every entry, calling release(owner, e) first for each when release is not NULL (a
 * closing connection finalises its statements; evict's work, such as queueing a DEALLOCATE,
 * may make no sense then). The cache stays usable, empty.
 */
void keel__stmtcache_clear(keel__stmtcache *c, keel__stmtcache_evict_cb release);

#endif
