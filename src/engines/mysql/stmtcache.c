/* src/engines/mysql/stmtcache.c - MySQL's per-connection cache of prepared statements (LRU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/mysql/stmtcache.h"

/* Prepared statements kept per connection, least recently used evicted first. */
#define MY_STMT_CACHE 64

static uint64_t my_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void my_lru_unlink(my_impl *p, my_cached *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        p->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        p->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void my_lru_front(my_impl *p, my_cached *e) {
    e->prev = NULL;
    e->next = p->lru_head;
    if (p->lru_head)
        p->lru_head->prev = e;
    p->lru_head = e;
    if (!p->lru_tail)
        p->lru_tail = e;
}

my_cached *keel__my_cache_find(my_impl *p, const char *sql, size_t len) {
    uint64_t h = my_hash(sql, len);
    for (my_cached *e = p->lru_head; e; e = e->next) {
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            if (e != p->lru_head) {
                my_lru_unlink(p, e);
                my_lru_front(p, e);
            }
            return e;
        }
    }
    return NULL;
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
    my_cached *e = calloc(1, sizeof *e);
    char *copy = e ? malloc(len + 1) : NULL;
    if (!e || !copy || keel__my_evict_push(p, NULL) != 0) {
        /* Not cached: it is closed when the operation ends. */
        free(e);
        free(copy);
        p->cur_uncached = 1;
        return;
    }
    p->nevict--; /* the slot reserved above, so the eviction below cannot fail */
    memcpy(copy, sql, len);
    copy[len] = '\0';
    e->stmt = st;
    e->sql = copy;
    e->len = len;
    e->hash = my_hash(sql, len);
    my_lru_front(p, e);
    if (++p->ncached > MY_STMT_CACHE) {
        my_cached *old = p->lru_tail;
        my_lru_unlink(p, old);
        p->ncached--;
        p->evict[p->nevict++] = old->stmt;
        free(old->sql);
        free(old);
    }
}

void keel__my_cache_drop_cur(my_impl *p) {
    for (my_cached *e = p->lru_head; e; e = e->next) {
        if (e->stmt == p->cur) {
            my_lru_unlink(p, e);
            p->ncached--;
            free(e->sql);
            free(e);
            p->cur_uncached = 1;
            return;
        }
    }
}
