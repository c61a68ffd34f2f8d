/* bench/c/sqlite_floor.c - the physical floor for SQLite reads: a plain C loop over libsqlite3. */
/*
 * usage: sqlite_floor DB SQL NROWS WARMUP_OPS MAX_OPS MAX_SECONDS
 *
 * Prepares SQL once (with at most one parameter, bound to a pseudo-random key in 1..NROWS, the
 * way the Python workloads pick theirs), then steps it to the end and reads every column of
 * every row, WARMUP_OPS times untimed and then until MAX_OPS operations or MAX_SECONDS seconds,
 * whichever comes first. Prints one JSON object: ops, seconds (wall), cpu_seconds, p50_us and
 * p99_us. No Python and no event loop are involved: this is what the hardware and libsqlite3
 * alone allow, the bound a driver can approach but not pass.
 */
#include <sqlite3.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64: a cheap, fixed sequence of keys, so every run reads the same rows. */
static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Parses a non-negative integer argument; exits with a message naming it when it is not one. */
static long long parse_count(const char *name, const char *text) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0) {
        fprintf(stderr, "sqlite_floor: %s must be a non-negative integer, not \"%s\"\n", name,
                text);
        exit(2);
    }
    return v;
}

/* One operation: bind a key when the statement takes one, step every row, read every column. */
static int run_once(sqlite3_stmt *stmt, int nparams, long long nrows, uint64_t *rng,
                    int64_t *sink) {
    if (nparams > 0)
        sqlite3_bind_int64(stmt, 1, (sqlite3_int64)(next_random(rng) % (uint64_t)nrows) + 1);
    int rc;
    int ncols = sqlite3_column_count(stmt);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        for (int c = 0; c < ncols; c++) {
            switch (sqlite3_column_type(stmt, c)) {
            case SQLITE_INTEGER:
                *sink += sqlite3_column_int64(stmt, c);
                break;
            case SQLITE_FLOAT:
                *sink += (int64_t)sqlite3_column_double(stmt, c);
                break;
            case SQLITE_TEXT:
            case SQLITE_BLOB:
                /* The text pointer is fetched too, as a driver does when it copies the value. */
                *sink += sqlite3_column_bytes(stmt, c) + (sqlite3_column_text(stmt, c) != NULL);
                break;
            default:
                break;
            }
        }
    }
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: sqlite_floor DB SQL NROWS WARMUP_OPS MAX_OPS MAX_SECONDS\n");
        return 2;
    }
    const char *path = argv[1];
    const char *sql = argv[2];
    long long nrows = parse_count("NROWS", argv[3]);
    long long warmup = parse_count("WARMUP_OPS", argv[4]);
    long long max_ops = parse_count("MAX_OPS", argv[5]);
    double max_seconds = strtod(argv[6], NULL);
    if (nrows < 1 || max_ops < 1 || !(max_seconds > 0)) {
        fprintf(stderr, "sqlite_floor: NROWS and MAX_OPS must be at least 1, MAX_SECONDS > 0\n");
        return 2;
    }

    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite_floor: cannot open %s: %s\n", path, db ? sqlite3_errmsg(db) : "");
        sqlite3_close(db);
        return 1;
    }
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite_floor: cannot prepare the statement: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    int nparams = sqlite3_bind_parameter_count(stmt);
    int64_t *lat = malloc((size_t)max_ops * sizeof *lat);
    if (lat == NULL) {
        fprintf(stderr, "sqlite_floor: out of memory for %lld latencies\n", max_ops);
        sqlite3_finalize(stmt);
        sqlite3_close(db);
        return 1;
    }

    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int64_t sink = 0;
    int failed = 0;
    for (long long i = 0; i < warmup && !failed; i++)
        failed = run_once(stmt, nparams, nrows, &rng, &sink) != 0;

    long long ops = 0;
    double cpu0 = now_seconds(CLOCK_PROCESS_CPUTIME_ID);
    int64_t start = now_ns();
    int64_t deadline = start + (int64_t)(max_seconds * 1e9);
    while (!failed && ops < max_ops) {
        int64_t t0 = now_ns();
        failed = run_once(stmt, nparams, nrows, &rng, &sink) != 0;
        int64_t t1 = now_ns();
        lat[ops++] = t1 - t0;
        if (t1 >= deadline)
            break;
    }
    double wall = (double)(now_ns() - start) / 1e9;
    double cpu = now_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;

    if (failed) {
        fprintf(stderr, "sqlite_floor: the statement failed: %s\n", sqlite3_errmsg(db));
    } else {
        qsort(lat, (size_t)ops, sizeof *lat, compare_i64);
        long long k50 = (ops * 50 + 99) / 100 - 1, k99 = (ops * 99 + 99) / 100 - 1;
        printf("{\"ops\": %lld, \"seconds\": %.9f, \"cpu_seconds\": %.9f, \"p50_us\": %.3f, "
               "\"p99_us\": %.3f, \"checksum\": %lld}\n",
               ops, wall, cpu, (double)lat[k50 < 0 ? 0 : k50] / 1000.0,
               (double)lat[k99 < 0 ? 0 : k99] / 1000.0, (long long)sink);
    }
    free(lat);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return failed ? 1 : 0;
}
