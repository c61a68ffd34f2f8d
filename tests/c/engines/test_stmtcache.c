/* tests/c/engines/test_stmtcache.c - the engines' prepared-statement cache: lookup, LRU, capacity. */
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include "engines/stmtcache.h"
#include "test.h"

/* An engine's entry: the cache's part first, then what the engine keeps per statement. */
typedef struct entry {
    keel__stmtcache_entry base;
    int stmt;
} entry;

typedef struct owner {
    int evicted[64];
    size_t nevicted;
    int released[64];
    size_t nreleased;
} owner;

static void on_evict(void *o, keel__stmtcache_entry *e) {
    owner *w = o;
    w->evicted[w->nevicted++] = ((entry *)e)->stmt;
}

static void on_release(void *o, keel__stmtcache_entry *e) {
    owner *w = o;
    w->released[w->nreleased++] = ((entry *)e)->stmt;
}

static entry *add(keel__stmtcache *c, const char *sql, int stmt) {
    entry *e = (entry *)keel__stmtcache_add(c, sql, strlen(sql), NULL, 0);
    if (e) {
        CHECK_INT(e->stmt, 0); /* the engine's part starts zeroed */
        e->stmt = stmt;
    }
    return e;
}

static entry *find(keel__stmtcache *c, const char *sql) {
    return (entry *)keel__stmtcache_find(c, sql, strlen(sql), NULL, 0);
}

/* The statements from most to least recently used, as digits ("321"), checking both links. */
static const char *order(const keel__stmtcache *c) {
    static char buf[64];
    size_t n = 0;
    const keel__stmtcache_entry *last = NULL;
    for (const keel__stmtcache_entry *e = c->mru; e && n < sizeof buf - 1; e = e->next) {
        if (e->prev != last)
            return "broken prev link";
        buf[n++] = (char)('0' + ((const entry *)e)->stmt);
        last = e;
    }
    if (c->lru != last || n != c->count)
        return "broken tail or count";
    buf[n] = '\0';
    return buf;
}

TEST(finds_what_was_added_by_its_text) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 4, sizeof(entry), on_evict, &w);
    char sql[] = "SELECT $1";
    entry *e = (entry *)keel__stmtcache_add(&c, sql, strlen(sql), NULL, 0);
    CHECK(e != NULL);
    e->stmt = 1;
    sql[0] = 'X'; /* the entry holds its own copy of the text */
    CHECK_STR(e->base.sql, "SELECT $1");
    CHECK_INT(e->base.sql_len, 9);
    CHECK(find(&c, "SELECT $1") == e);
    CHECK(find(&c, "SELECT $") == NULL);   /* a prefix is another text */
    CHECK(find(&c, "SELECT $12") == NULL); /* so is a longer one */
    CHECK(find(&c, "select $1") == NULL);
    CHECK(find(&c, "") == NULL);
    /* Text is compared as bytes, NULs included. */
    entry *z = (entry *)keel__stmtcache_add(&c, "a\0b", 3, NULL, 0);
    CHECK(z != NULL);
    CHECK(keel__stmtcache_find(&c, "a\0b", 3, NULL, 0) == &z->base);
    CHECK(keel__stmtcache_find(&c, "a\0c", 3, NULL, 0) == NULL);
    CHECK_INT(c.count, 2);
    CHECK_INT(w.nevicted, 0);
    keel__stmtcache_clear(&c, NULL);
    CHECK_INT(c.count, 0);
    CHECK(c.mru == NULL && c.lru == NULL);
}

TEST(evicts_the_least_recently_used_beyond_capacity) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 3, sizeof(entry), on_evict, &w);
    add(&c, "one", 1);
    add(&c, "two", 2);
    add(&c, "three", 3);
    CHECK_STR(order(&c), "321");
    CHECK(find(&c, "one") != NULL); /* a hit makes it the most recently used */
    CHECK_STR(order(&c), "132");
    add(&c, "four", 4); /* full: "two" goes */
    CHECK_INT(w.nevicted, 1);
    CHECK_INT(w.evicted[0], 2);
    CHECK_STR(order(&c), "413");
    CHECK(find(&c, "two") == NULL);
    CHECK(find(&c, "three") != NULL);
    add(&c, "five", 5); /* "one" is now the least recently used */
    CHECK_INT(w.nevicted, 2);
    CHECK_INT(w.evicted[1], 1);
    CHECK_STR(order(&c), "534");
    CHECK_INT(c.count, 3);
    keel__stmtcache_clear(&c, on_release);
    CHECK_INT(w.nreleased, 3);
    CHECK_INT(w.nevicted, 2); /* clear calls release, not evict */
}

TEST(many_statements_stay_within_capacity) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 5, sizeof(entry), on_evict, &w);
    char sql[32];
    for (int i = 0; i < 60; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        CHECK(add(&c, sql, i % 10) != NULL);
        CHECK(c.count <= 5);
    }
    CHECK_INT(w.nevicted, 55);
    CHECK_INT(c.count, 5);
    /* The five most recent are the ones kept. */
    for (int i = 55; i < 60; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        CHECK(find(&c, sql) != NULL);
    }
    snprintf(sql, sizeof sql, "SELECT %d", 54);
    CHECK(find(&c, sql) == NULL);
    keel__stmtcache_clear(&c, NULL);
}

TEST(extra_key_bytes_tell_statements_of_one_text_apart) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 8, sizeof(entry), on_evict, &w);
    const char *sql = "INSERT INTO t VALUES ($1)";
    uint32_t int8[] = { 20 }, text[] = { 25 };
    entry *a = (entry *)keel__stmtcache_add(&c, sql, strlen(sql), int8, sizeof int8);
    entry *b = (entry *)keel__stmtcache_add(&c, sql, strlen(sql), text, sizeof text);
    CHECK(a && b && a != b);
    CHECK(keel__stmtcache_find(&c, sql, strlen(sql), int8, sizeof int8) == &a->base);
    CHECK(keel__stmtcache_find(&c, sql, strlen(sql), text, sizeof text) == &b->base);
    CHECK(keel__stmtcache_find(&c, sql, strlen(sql), NULL, 0) == NULL);
    uint32_t two[] = { 20, 20 };
    CHECK(keel__stmtcache_find(&c, sql, strlen(sql), two, sizeof two) == NULL);
    /* The key is copied, aligned for any type (PostgreSQL keeps an Oid array there). */
    int8[0] = 21;
    CHECK(keel__stmtcache_find(&c, sql, strlen(sql), int8, sizeof int8) == NULL);
    CHECK_INT(((const uint32_t *)a->base.key)[0], 20);
    CHECK_INT(a->base.key_len, sizeof int8);
    CHECK_INT((uintptr_t)a->base.key % alignof(max_align_t), 0);
    /* Text and key are not one string: "ab" with key "c" is not "abc". */
    entry *ab = (entry *)keel__stmtcache_add(&c, "ab", 2, "c", 1);
    CHECK(ab != NULL);
    CHECK(keel__stmtcache_find(&c, "abc", 3, NULL, 0) == NULL);
    CHECK(keel__stmtcache_find(&c, "ab", 2, "c", 1) == &ab->base);
    CHECK_STR(ab->base.sql, "ab");
    keel__stmtcache_clear(&c, NULL);
}

TEST(remove_takes_an_entry_out_without_evicting_it) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 8, sizeof(entry), on_evict, &w);
    entry *e1 = add(&c, "1", 1);
    entry *e2 = add(&c, "2", 2);
    entry *e3 = add(&c, "3", 3);
    entry *e4 = add(&c, "4", 4);
    CHECK_STR(order(&c), "4321");
    keel__stmtcache_remove(&c, &e3->base); /* from the middle */
    CHECK_STR(order(&c), "421");
    keel__stmtcache_remove(&c, &e1->base); /* the least recently used */
    CHECK_STR(order(&c), "42");
    keel__stmtcache_remove(&c, &e4->base); /* the most recently used */
    CHECK_STR(order(&c), "2");
    CHECK(find(&c, "3") == NULL);
    CHECK_INT(w.nevicted, 0);
    /* The cache is still usable, and the removed text can be added again. */
    CHECK(add(&c, "3", 3) != NULL);
    CHECK_STR(order(&c), "32");
    keel__stmtcache_remove(&c, &e2->base);
    keel__stmtcache_clear(&c, on_release);
    CHECK_INT(w.nreleased, 1);
    CHECK_INT(w.released[0], 3);
    CHECK(add(&c, "5", 5) != NULL); /* usable after clear */
    keel__stmtcache_clear(&c, NULL);
    CHECK_INT(w.nreleased, 1);
}

TEST(capacity_zero_caches_nothing) {
    owner w = { 0 };
    keel__stmtcache c;
    keel__stmtcache_init(&c, 0, sizeof(entry), on_evict, &w);
    CHECK(add(&c, "SELECT 1", 1) == NULL);
    CHECK(find(&c, "SELECT 1") == NULL);
    CHECK_INT(c.count, 0);
    CHECK_INT(w.nevicted, 0);
    keel__stmtcache_clear(&c, on_release);
    CHECK_INT(w.nreleased, 0);
}

int main(void) {
    RUN(finds_what_was_added_by_its_text);
    RUN(evicts_the_least_recently_used_beyond_capacity);
    RUN(many_statements_stay_within_capacity);
    RUN(extra_key_bytes_tell_statements_of_one_text_apart);
    RUN(remove_takes_an_entry_out_without_evicting_it);
    RUN(capacity_zero_caches_nothing);
    return TEST_SUMMARY();
}
