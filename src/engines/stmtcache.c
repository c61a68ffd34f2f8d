/* src/engines/stmtcache.c - the prepared-statement cache of the SQL engines: by text, LRU, bounded. */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "engines/stmtcache.h"

/* FNV-1a over the text, then the key bytes. */
static uint64_t cache_hash(const char *sql, size_t len, const void *key, size_t key_len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)sql[i]) * 1099511628211ULL;
    const unsigned char *k = key;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return h;
}

static void cache_unlink(keel__stmtcache *c, keel__stmtcache_entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru = e->prev;
    e->prev = e->next = NULL;
    c->count--;
}

static void cache_push(keel__stmtcache *c, keel__stmtcache_entry *e) {
    e->prev = NULL;
    e->next = c->mru;
    if (c->mru)
        c->mru->prev = e;
    else
        c->lru = e;
    c->mru = e;
    c->count++;
}

void keel__stmtcache_init(keel__stmtcache *c, size_t capacity, size_t entry_size,
                          keel__stmtcache_evict_cb evict, void *owner) {
    memset(c, 0, sizeof *c);
    c->capacity = capacity;
    c->entry_size = entry_size;
    c->evict = evict;
    c->owner = owner;
}

keel__stmtcache_entry *keel__stmtcache_find(keel__stmtcache *c, const char *sql, size_t len,
                                            const void *key, size_t key_len) {
    uint64_t h = cache_hash(sql, len, key, key_len);
    for (keel__stmtcache_entry *e = c->mru; e; e = e->next) {
        if (e->hash != h || e->sql_len != len || e->key_len != key_len ||
            memcmp(e->sql, sql, len) != 0 || (key_len && memcmp(e->key, key, key_len) != 0))
            continue;
        if (e != c->mru) {
            cache_unlink(c, e);
            cache_push(c, e);
        }
        return e;
    }
    return NULL;
}

keel__stmtcache_entry *keel__stmtcache_add(keel__stmtcache *c, const char *sql, size_t len,
                                           const void *key, size_t key_len) {
    if (c->capacity == 0)
        return NULL;
    /* One block: the engine's entry, the key (aligned for any type, as PostgreSQL's Oid array
     * needs), then the text and its terminator. */
    size_t align = alignof(max_align_t);
    size_t key_at = (c->entry_size + align - 1) / align * align;
    size_t sql_at = key_at + key_len;
    if (key_len > SIZE_MAX - key_at || len > SIZE_MAX - 1 - sql_at)
        return NULL;
    keel__stmtcache_entry *e = calloc(1, sql_at + len + 1);
    if (!e)
        return NULL;
    char *base = (char *)e;
    if (key_len)
        memcpy(base + key_at, key, key_len);
    memcpy(base + sql_at, sql, len);
    base[sql_at + len] = '\0';
    e->hash = cache_hash(sql, len, key, key_len);
    e->sql = base + sql_at;
    e->sql_len = len;
    e->key = key_len ? base + key_at : NULL;
    e->key_len = key_len;
    if (c->count >= c->capacity && c->lru) {
        keel__stmtcache_entry *old = c->lru;
        cache_unlink(c, old);
        c->evict(c->owner, old);
        free(old);
    }
    cache_push(c, e);
    return e;
}

void keel__stmtcache_remove(keel__stmtcache *c, keel__stmtcache_entry *e) {
    cache_unlink(c, e);
    free(e);
}

void keel__stmtcache_clear(keel__stmtcache *c, keel__stmtcache_evict_cb release) {
    while (c->mru) {
        keel__stmtcache_entry *e = c->mru;
        cache_unlink(c, e);
        if (release)
            release(c->owner, e);
        free(e);
    }
}
