/* src/engines/mysql/stmtcache.c - MySQL's per-connection cache of prepared statements (LRU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/mysql/stmtcache.h"

/* Prepared statements kept per connection, least recently used evicted first. */
#define MY_STMT_CACHE 64

/* The cache evicted its least recently used statement: it is closed before the next statement
 * runs, in the slot keel__my_cache_add reserved. */
static void my_cache_evicted(void *owner, keel__stmtcache_entry *e) {
    my_impl *p = owner;
    p->evict[p->nevict++] = ((my_cached *)e)->stmt;
}

/* The connection closes: its statements close with the handle, without a round trip each. */
static void my_cache_close(void *owner, keel__stmtcache_entry *e) {
    (void)owner;
    mysql_stmt_close(((my_cached *)e)->stmt);
}

void keel__my_cache_init(my_impl *p) {
    keel__stmtcache_init(&p->cache, MY_STMT_CACHE, sizeof(my_cached), my_cache_evicted, p);
}

void keel__my_cache_free(my_impl *p) { keel__stmtcache_clear(&p->cache, my_cache_close); }

my_cached *keel__my_cache_find(my_impl *p, const char *sql, size_t len) {
    return (my_cached *)keel__stmtcache_find(&p->cache, sql, len, NULL, 0);
}

int keel__my_evict_push(my_impl *p, MYSQL_STMT *st) {
    if (p->nevict == p->evict_cap) {
        size_t cap = p->evict_cap ? p->evict_cap * 2 : 4;
        MYSQL_STMT **a = realloc(p->evict, cap * sizeof *a);
        if (!a)
            return -1;
        p->evict = a;
        p->evict_cap = cap;
    }
    p->evict[p->nevict++] = st;
    return 0;
}

void keel__my_cache_add(my_impl *p, MYSQL_STMT *st, const char *sql, size_t len) {
    if (keel__my_evict_push(p, NULL) != 0) {
        /* Not cached: it is closed when the operation ends. */
        p->cur_uncached = 1;
        return;
    }
    p->nevict--; /* the slot reserved above, so the eviction below cannot fail */
    my_cached *e = (my_cached *)keel__stmtcache_add(&p->cache, sql, len, NULL, 0);
    if (!e) {
        p->cur_uncached = 1;
        return;
    }
    e->stmt = st;
}

void keel__my_cache_drop_cur(my_impl *p) {
    for (keel__stmtcache_entry *e = p->cache.mru; e; e = e->next) {
        if (((my_cached *)e)->stmt == p->cur) {
            keel__stmtcache_remove(&p->cache, e);
            p->cur_uncached = 1;
            return;
        }
    }
}
