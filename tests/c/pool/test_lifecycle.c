/* tests/c/pool/test_lifecycle.c - idle_timeout, max_lifetime, ping_after_idle, max_waiters and the pool's counters, every engine. */
#include <stdlib.h>
#include <unistd.h>

#include "engines/engine.h"
#include "loop/loop_int.h"
#include "support.h"
#include "support/proxy.h"

static char dbdir[] = "/tmp/keel-lifecycle-XXXXXX";
static char sqlite_url[256];

/* The servers every engine test runs against, SQLite first. */
static const char *engine_urls[4];
static const char *const engine_names[] = { "sqlite", "postgresql", "mysql", "mongodb" };

/* Opens url with the pool settings of extra (key/value pairs, NULL-ended, under
 * databases.default.pool.). */
static keel_db *open_pool(const char *url, const char *const *extra) {
    const char *keys[33];
    char paths[16][96];
    size_t i = 0;
    for (; extra[i] && i < 32; i += 2) {
        snprintf(paths[i / 2], sizeof paths[i / 2], "databases.default.pool.%s", extra[i]);
        keys[i] = paths[i / 2];
        keys[i + 1] = extra[i + 1];
    }
    keys[i] = NULL;
    return open_url(url, keys);
}

static keel_pool_stats stats_of(keel_db *db) {
    keel_pool_stats s;
    keel_error err;
    memset(&s, 0, sizeof s);
    CHECK_INT(keel_db_pool_stats(db, NULL, &s, &err), KEEL_OK);
    return s;
}

static void set_flag(void *arg) { *(int *)arg = 1; }

/* Runs the loop of db for ms milliseconds: timers of the pool fire meanwhile. */
static void run_for(keel_db *db, int ms) {
    int done = 0;
    keel_timer *t = keel__timer_new(keel_db_loop(db), set_flag, &done);
    CHECK(t != NULL);
    if (!t)
        return;
    keel__timer_arm(t, keel_now_ms() + ms);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &done), KEEL_OK);
    keel__timer_free(t);
}

/* A round trip on c, on any engine. */
static keel_status ping(keel_conn *c) {
    keel_error err;
    keel_status st = keel_conn_ping_sync(c, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  ping: %s\n", err.message);
    return st;
}

/* Idle connections above min_size are closed once idle_timeout passes; min_size stay open. */
TEST(idle_connections_close_down_to_min_size) {
    for (size_t e = 0; e < 4; e++) {
        const char *const pool[] = {
            "min_size",        "1",  "max_size", "3", "idle_timeout", "0.2", "max_lifetime", "0",
            "acquire_timeout", "10", NULL
        };
        keel_db *db = open_pool(engine_urls[e], pool);
        if (!db)
            continue;
        printf("# %s\n", engine_names[e]);
        keel_conn *c[3];
        for (int i = 0; i < 3; i++)
            c[i] = acquire(db);
        for (int i = 0; i < 3; i++)
            keel_conn_release(c[i]);
        keel_pool_stats s = stats_of(db);
        CHECK_INT(s.size, 3);
        CHECK_INT(s.idle, 3);
        CHECK_INT(s.connects, 3);
        run_for(db, 600);
        s = stats_of(db);
        CHECK_INT(s.size, 1);
        CHECK_INT(s.idle, 1);
        run_for(db, 300); /* never below min_size */
        s = stats_of(db);
        CHECK_INT(s.size, 1);
        CHECK_INT(s.connects, 3);
        keel_conn *again = acquire(db);
        CHECK_INT(ping(again), KEEL_OK);
        keel_conn_release(again);
        keel_db_close(db);
    }
}

/* Connections older than max_lifetime are closed when idle and replaced up to min_size; a
 * leased one is left to its holder and replaced when it comes back. */
TEST(old_connections_are_recycled) {
    for (size_t e = 0; e < 4; e++) {
        const char *const pool[] = { "min_size",     "2", "max_size", "2", "max_lifetime", "0.4",
                                     "idle_timeout", "0", NULL };
        keel_db *db = open_pool(engine_urls[e], pool);
        if (!db)
            continue;
        printf("# %s\n", engine_names[e]);
        keel_conn *a = acquire(db), *b = acquire(db);
        keel_conn_release(b);
        /* b goes after 0.36 to 0.4 s; its replacement would not before 0.72 s. */
        run_for(db, 600);
        /* b went and was replaced; a, leased, is still usable past its lifetime. */
        keel_pool_stats s = stats_of(db);
        CHECK_INT(s.size, 2);
        CHECK_INT(s.leased, 1);
        CHECK_INT(s.connects, 3);
        CHECK_INT(ping(a), KEEL_OK);
        keel_conn_release(a);
        /* Given back after its lifetime, a is closed and replaced too. */
        run_for(db, 150);
        s = stats_of(db);
        CHECK_INT(s.size, 2);
        CHECK(s.connects >= 4);
        CHECK_INT(s.connect_failures, 0);
        keel_conn *c = acquire(db);
        CHECK_INT(ping(c), KEEL_OK);
        keel_conn_release(c);
        keel_db_close(db);
    }
}

/* Each connection's lifetime is max_lifetime less up to a tenth, drawn apart. */
TEST(lifetimes_are_spread_by_jitter) {
    const char *const pool[] = { "min_size", "0", "max_size", "20", "max_lifetime", "100", NULL };
    keel_db *db = open_pool(sqlite_url, pool);
    if (!db)
        return;
    keel_conn *c[20];
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 20; i++) {
        c[i] = acquire(db);
        if (!c[i])
            continue;
        int64_t life = c[i]->expires_ms - c[i]->created_ms;
        CHECK(life >= 90000 && life <= 100000);
        lo = life < lo ? life : lo;
        hi = life > hi ? life : hi;
    }
    printf("# lifetimes from %lld to %lld ms\n", (long long)lo, (long long)hi);
    CHECK(hi - lo >= 2000); /* 20 draws from 10 s: all within 2 s has a chance below 1e-13 */
    for (int i = 0; i < 20; i++)
        keel_conn_release(c[i]);
    keel_db_close(db);
}

/* An SQLite database in memory lives only while one of its connections is open: its pool
 * keeps its connections whatever idle_timeout and max_lifetime say, so the data stays. */
TEST(an_in_memory_sqlite_database_keeps_its_connections) {
    const char *const pool[] = { "min_size",     "0",   "max_size", "2", "idle_timeout", "0.1",
                                 "max_lifetime", "0.1", NULL };
    keel_db *db = open_pool("sqlite::memory:", pool);
    if (!db)
        return;
    keel_conn *c = acquire(db);
    keel_result_free(q(c, "CREATE TABLE kept (v INTEGER)", NULL, 0));
    keel_result_free(q(c, "INSERT INTO kept VALUES (7)", NULL, 0));
    keel_conn_release(c);
    run_for(db, 300);
    keel_pool_stats s = stats_of(db);
    CHECK_INT(s.size, 1);
    CHECK_INT(s.connects, 1);
    c = acquire(db);
    CHECK_INT(q_int(c, "SELECT v FROM kept"), 7);
    keel_conn_release(c);
    keel_db_close(db);
}

/* An idle connection past ping_after_idle is pinged and, answering, leased again. */
TEST(an_idle_connection_is_pinged_and_kept) {
    for (size_t e = 0; e < 4; e++) {
        const char *const pool[] = { "min_size",        "1",    "max_size", "1",
                                     "ping_after_idle", "0.05", NULL };
        keel_db *db = open_pool(engine_urls[e], pool);
        if (!db)
            continue;
        printf("# %s\n", engine_names[e]);
        keel_conn *c = acquire(db);
        keel_conn_release(c);
        usleep(100 * 1000);
        /* The fast path leaves a connection that needs its ping to keel_db_acquire. */
        keel_conn *fast = NULL;
        keel_error err;
        CHECK_INT(keel_db_try_acquire(db, NULL, &fast, &err), KEEL_ERR_BUSY);
        keel_conn *again = acquire(db);
        CHECK(again == c);
        CHECK_INT(ping(again), KEEL_OK);
        keel_conn_release(again);
        keel_pool_stats s = stats_of(db);
        CHECK_INT(s.connects, 1);
        CHECK_INT(s.acquires, 2);
        keel_db_close(db);
    }
}

/* A connection the server ended while it was idle is replaced at the next acquire, which
 * succeeds on a new connection. */
TEST(a_connection_killed_while_idle_is_replaced) {
    static const char *const kill_sql[] = { NULL, "SELECT pg_terminate_backend(%lld)", "KILL %lld",
                                            NULL };
    static const char *const id_sql[] = { NULL, "SELECT pg_backend_pid()", "SELECT CONNECTION_ID()",
                                          NULL };
    for (size_t e = 1; e < 3; e++) {
        const char *const pool[] = { "min_size",        "1",    "max_size", "1",
                                     "ping_after_idle", "0.05", NULL };
        keel_db *db = open_pool(engine_urls[e], pool);
        keel_db *killer = open_url(engine_urls[e], NULL);
        if (!db || !killer) {
            keel_db_close(db);
            keel_db_close(killer);
            continue;
        }
        printf("# %s\n", engine_names[e]);
        keel_conn *c = acquire(db);
        int64_t id = q_int(c, id_sql[e]);
        keel_conn_release(c);
        keel_conn *k = acquire(killer);
        char sql[64];
        snprintf(sql, sizeof sql, kill_sql[e], (long long)id);
        keel_result_free(q(k, sql, NULL, 0));
        keel_conn_release(k);
        usleep(200 * 1000);
        c = acquire(db);
        CHECK(c != NULL);
        int64_t id2 = q_int(c, id_sql[e]);
        CHECK(id2 != id && id2 != INT64_MIN);
        keel_conn_release(c);
        keel_pool_stats s = stats_of(db);
        CHECK_INT(s.connects, 2);
        CHECK_INT(s.size, 1);
        keel_db_close(killer);
        keel_db_close(db);
    }
}

/*
 * A connection whose server fell silent while it was idle (a host gone, a firewall that dropped
 * the connection without a word): the ping of ping_after_idle gets no answer within
 * connect_timeout, the connection is closed, and the request gets a new one without an error.
 * The proxy lets every connection of the second db through for exactly the bytes of its
 * handshake (measured on the first db's), so the ping is the first thing the server never sees.
 */
TEST(a_silent_idle_connection_is_replaced_by_the_ping) {
    static char recorded[1 << 16];
    for (size_t e = 1; e < 3; e++) {
        char host[256], purl[512];
        int port = 0;
        CHECK_INT(test_url_host_port(engine_urls[e], host, sizeof host, &port), 0);
        test_proxy *px = test_proxy_start(host, port);
        CHECK(px && test_proxy_url(px, engine_urls[e], purl, sizeof purl));
        if (!px)
            continue;
        printf("# %s\n", engine_names[e]);
        const char *const pool[] = {
            "min_size",        "0",  "max_size", "1", "ping_after_idle", "0.1",
            "acquire_timeout", "10", NULL
        };
        keel_db *measure = open_pool(purl, pool);
        keel_conn *c = acquire(measure);
        keel_conn_release(c);
        size_t handshake = test_proxy_recorded(px, 0, recorded, sizeof recorded);
        keel_db_close(measure);
        CHECK(handshake > 0);
        test_proxy_limit(px, handshake, SIZE_MAX);
        const char *const silent[] = {
            "min_size",        "0",  "max_size", "1", "ping_after_idle", "0.1",
            "acquire_timeout", "10", NULL
        };
        char keys[8][96];
        const char *cfg[12];
        size_t n = 0;
        for (size_t i = 0; silent[i]; i += 2, n += 2) {
            snprintf(keys[i / 2], sizeof keys[i / 2], "databases.default.pool.%s", silent[i]);
            cfg[n] = keys[i / 2];
            cfg[n + 1] = silent[i + 1];
        }
        cfg[n++] = "databases.default.connect_timeout";
        cfg[n++] = "0.5";
        cfg[n] = NULL;
        keel_db *db = open_url(purl, cfg);
        c = acquire(db);
        CHECK(c != NULL);
        keel_conn_release(c);
        usleep(150 * 1000);
        int64_t start = keel_now_ms();
        keel_conn *fresh = NULL;
        keel_error err;
        keel_status st = keel_db_acquire_sync(db, NULL, &fresh, &err);
        if (st != KEEL_OK)
            fprintf(stderr, "  acquire: %s\n", err.message);
        CHECK_INT(st, KEEL_OK);
        int64_t took = keel_now_ms() - start;
        printf("# the acquire took %lld ms\n", (long long)took);
        CHECK(took >= 400 && took < 5000); /* the ping's connect_timeout, then a connect */
        keel_pool_stats s = stats_of(db);
        CHECK_INT(s.connects, 2);
        CHECK_INT(s.size, 1);
        CHECK_INT(s.acquires, 2);
        /* The measuring connection, the silent one and its replacement (and a cancel request,
         * on the engines that send one when a busy connection is closed). */
        CHECK(test_proxy_accepted(px) >= 3);
        keel_conn_release(fresh);
        keel_db_close(db);
        test_proxy_free(px);
    }
}

typedef struct served {
    keel_conn *conn;
    keel_status status;
    int done;
} served;

static void on_served(keel_conn *conn, const keel_error *err, void *arg) {
    served *s = arg;
    s->conn = conn;
    s->status = err ? err->code : KEEL_OK;
    s->done = 1;
}

/* Beyond max_waiters requests waiting for a release, an acquire fails at once. */
TEST(max_waiters_refuses_at_once) {
    const char *const pool[] = { "min_size",        "0",  "max_size", "1", "max_waiters", "1",
                                 "acquire_timeout", "10", NULL };
    keel_db *db = open_pool(sqlite_url, pool);
    if (!db)
        return;
    keel_error err;
    keel_conn *held = acquire(db);
    served first = { 0 }, refused = { 0 };
    CHECK_INT(keel_db_acquire(db, NULL, on_served, &first, &err), KEEL_OK);
    int64_t start = keel_now_ms();
    CHECK_INT(keel_db_acquire(db, NULL, on_served, &refused, &err), KEEL_ERR_POOL_TIMEOUT);
    CHECK(keel_now_ms() - start < 100);
    CHECK_CONTAINS(err.message, "queue of requests waiting for a connection to database "
                                "'default' is full");
    CHECK_CONTAINS(err.message, "max_waiters 1");
    CHECK_STR(err.database, "default");
    keel_pool_stats s = stats_of(db);
    CHECK_INT(s.acquire_timeouts, 1);
    CHECK_INT(s.waiting, 1);
    keel_conn_release(held);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &first.done), KEEL_OK);
    CHECK_INT(first.status, KEEL_OK);
    CHECK(!refused.done);
    keel_conn_release(first.conn);
    keel_db_close(db);

    /* With 0, a request the pool cannot serve from its idle connections or its room fails;
     * one it can is served. */
    const char *const none[] = { "min_size", "0", "max_size", "1", "max_waiters", "0", NULL };
    db = open_pool(sqlite_url, none);
    if (!db)
        return;
    held = acquire(db);
    CHECK(held != NULL);
    CHECK_INT(keel_db_acquire(db, NULL, on_served, &refused, &err), KEEL_ERR_POOL_TIMEOUT);
    CHECK_CONTAINS(err.message, "max_waiters 0");
    keel_conn_release(held);
    held = acquire(db);
    CHECK(held != NULL);
    keel_conn_release(held);
    keel_db_close(db);
}

/* The counters are totals since open; the wait percentiles follow the served requests. */
TEST(stats_count_and_time_acquires) {
    const char *const pool[] = { "min_size", "0", "max_size", "1", "acquire_timeout", "0.1", NULL };
    keel_db *db = open_pool(sqlite_url, pool);
    if (!db)
        return;
    keel_pool_stats s = stats_of(db);
    CHECK(s.connects == 0 && s.acquires == 0 && s.acquire_timeouts == 0);
    CHECK(s.acquire_wait_p50 == 0.0 && s.acquire_wait_p99 == 0.0);
    keel_error err;
    keel_conn *held = acquire(db);
    keel_conn *late = NULL;
    CHECK_INT(keel_db_acquire_sync(db, NULL, &late, &err), KEEL_ERR_POOL_TIMEOUT);
    s = stats_of(db);
    CHECK_INT(s.acquires, 1);
    CHECK_INT(s.acquire_timeouts, 1);
    CHECK_INT(s.connects, 1);
    keel_conn_release(held);
    keel_db_close(db);
    /* A request that waits 0.3 s for a release: the slowest of those served. */
    served waited = { 0 };
    const char *const patient[] = { "min_size", "0", "max_size", "1", NULL };
    db = open_pool(sqlite_url, patient);
    if (!db)
        return;
    for (int i = 0; i < 3; i++) {
        held = acquire(db);
        keel_conn_release(held);
    }
    held = acquire(db);
    CHECK_INT(keel_db_acquire(db, NULL, on_served, &waited, &err), KEEL_OK);
    run_for(db, 300);
    keel_conn_release(held);
    CHECK_INT(keel_loop_run(keel_db_loop(db), &waited.done), KEEL_OK);
    CHECK_INT(waited.status, KEEL_OK);
    keel_conn_release(waited.conn);
    s = stats_of(db);
    CHECK_INT(s.acquires, 5);
    printf("# acquire wait p50 %.6f s, p99 %.6f s\n", s.acquire_wait_p50, s.acquire_wait_p99);
    CHECK(s.acquire_wait_p99 >= 0.29 && s.acquire_wait_p99 < 5.0);
    CHECK(s.acquire_wait_p50 < 0.1);
    for (size_t i = 0; i < sizeof s.reserved / sizeof s.reserved[0]; i++)
        CHECK(s.reserved[i] == 0);
    keel_db_close(db);

    /* Connects that fail are counted apart. */
    keel_db *down = open_url("postgresql://keel@127.0.0.1:1/nothing", NULL);
    if (!down)
        return;
    CHECK_INT(keel_db_acquire_sync(down, NULL, &late, &err), KEEL_ERR_CONNECT);
    s = stats_of(down);
    CHECK_INT(s.connect_failures, 1);
    CHECK_INT(s.connects, 0);
    CHECK_INT(s.acquires, 0);
    keel_db_close(down);
}

int main(void) {
    if (!mkdtemp(dbdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(sqlite_url, sizeof sqlite_url, "sqlite:///%s/lifecycle.db", dbdir);
    engine_urls[0] = sqlite_url;
    engine_urls[1] = pg_url();
    engine_urls[2] = my_url();
    engine_urls[3] = mongo_url();
    RUN(idle_connections_close_down_to_min_size);
    RUN(old_connections_are_recycled);
    RUN(lifetimes_are_spread_by_jitter);
    RUN(an_in_memory_sqlite_database_keeps_its_connections);
    RUN(an_idle_connection_is_pinged_and_kept);
    RUN(a_connection_killed_while_idle_is_replaced);
    RUN(a_silent_idle_connection_is_replaced_by_the_ping);
    RUN(max_waiters_refuses_at_once);
    RUN(stats_count_and_time_acquires);
    char path[320];
    snprintf(path, sizeof path, "%s/lifecycle.db", dbdir);
    remove(path);
    rmdir(dbdir);
    return TEST_SUMMARY();
}
