/* bench/c/floor.h - what every C floor program shares: argument parsing, the timed loop over one or more connections, the JSON report. */
/*
 * A floor program runs one operation in a tight loop with no Python and no event loop: what the
 * hardware, the server and the client library alone allow. Each program supplies its operation
 * as a floor_op and one state per connection; floor_measure() warms up untimed until WARMUP_OPS
 * operations or WARMUP_SECONDS, then measures until MAX_OPS operations were started or
 * MAX_SECONDS passed, whichever comes first, on one thread per connection, and prints one JSON object on stdout: ops, seconds
 * (wall), cpu_seconds (every thread of the process), p50_us and p99_us. Its functions are static
 * inline: each program includes it once and uses what it needs.
 */
#ifndef KEEL_BENCH_FLOOR_H
#define KEEL_BENCH_FLOOR_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double floor_clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int64_t floor_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64: a cheap, fixed sequence of keys, so every run reads the same rows. */
static inline uint64_t floor_next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Parses a non-negative integer argument; exits with a message naming it when it is not one. */
static inline long long floor_parse_count(const char *prog, const char *name, const char *text) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0) {
        fprintf(stderr, "%s: %s must be a non-negative integer, not \"%s\"\n", prog, name, text);
        exit(2);
    }
    return v;
}

/* The loop's bounds, parsed from the three arguments every floor program takes. */
typedef struct floor_limits {
    long long warmup;
    double warmup_seconds;
    long long max_ops;
    double max_seconds;
} floor_limits;

/* The four arguments every floor program takes: WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS. */
static inline floor_limits floor_parse_limits(const char *prog, char **args) {
    floor_limits l;
    l.warmup = floor_parse_count(prog, "WARMUP_OPS", args[0]);
    l.warmup_seconds = strtod(args[1], NULL);
    l.max_ops = floor_parse_count(prog, "MAX_OPS", args[2]);
    l.max_seconds = strtod(args[3], NULL);
    if (l.max_ops < 1 || !(l.max_seconds > 0) || !(l.warmup_seconds >= 0)) {
        fprintf(stderr,
                "%s: MAX_OPS must be at least 1, MAX_SECONDS above 0 and WARMUP_SECONDS "
                "not negative\n",
                prog);
        exit(2);
    }
    return l;
}

/*
 * One operation on one connection's state: returns 0, or -1 after printing why it failed.
 * rng is the connection's own key sequence; sink accumulates something from every value read,
 * so that the compiler cannot drop the reading.
 */
typedef int (*floor_op)(void *state, uint64_t *rng, int64_t *sink);

typedef struct floor_shared {
    floor_op op;
    const floor_limits *limits;
    long long warmup_each;
    atomic_llong started;
    pthread_barrier_t barrier;
    int64_t *lat;
} floor_shared;

typedef struct floor_worker {
    floor_shared *shared;
    void *state;
    uint64_t rng;
    int64_t sink;
    int failed;
} floor_worker;

static inline int floor_compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static inline void *floor_worker_main(void *arg) {
    floor_worker *w = arg;
    floor_shared *sh = w->shared;
    int64_t warm_until = floor_now_ns() + (int64_t)(sh->limits->warmup_seconds * 1e9);
    for (long long i = 0; i < sh->warmup_each && !w->failed && floor_now_ns() < warm_until; i++)
        w->failed = sh->op(w->state, &w->rng, &w->sink) != 0;
    /* Every connection starts measuring at once, after every warm-up, once the clocks read. */
    pthread_barrier_wait(&sh->barrier);
    pthread_barrier_wait(&sh->barrier);
    int64_t deadline = floor_now_ns() + (int64_t)(sh->limits->max_seconds * 1e9);
    long long k;
    /* Each started operation has its own index, hence its own latency slot. */
    while (!w->failed && (k = atomic_fetch_add(&sh->started, 1)) < sh->limits->max_ops) {
        int64_t t0 = floor_now_ns();
        w->failed = sh->op(w->state, &w->rng, &w->sink) != 0;
        int64_t t1 = floor_now_ns();
        sh->lat[k] = t1 - t0;
        if (t1 >= deadline)
            break;
    }
    return NULL;
}

/*
 * Runs op on every state, one thread each (n >= 1), and prints the JSON report. Returns 0, or 1
 * when an operation failed (its message is already on stderr) or a resource ran out.
 */
static inline int floor_measure(const char *prog, floor_op op, void **states, int n,
                                const floor_limits *limits) {
    floor_shared sh;
    sh.op = op;
    sh.limits = limits;
    sh.warmup_each = (limits->warmup + n - 1) / n;
    atomic_init(&sh.started, 0);
    sh.lat = malloc((size_t)limits->max_ops * sizeof *sh.lat);
    floor_worker *w = calloc((size_t)n, sizeof *w);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (sh.lat == NULL || w == NULL || threads == NULL) {
        fprintf(stderr, "%s: out of memory for %lld latencies\n", prog, limits->max_ops);
        free(sh.lat);
        free(w);
        free(threads);
        return 1;
    }
    pthread_barrier_init(&sh.barrier, NULL, (unsigned)n + 1);
    int started_threads = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        w[i].shared = &sh;
        w[i].state = states[i];
        w[i].rng = 0x9E3779B97F4A7C15ull + (uint64_t)i * 0x2545F4914F6CDD1Dull;
        if (pthread_create(&threads[i], NULL, floor_worker_main, &w[i]) != 0) {
            /* Without every thread the barrier would never open: give up at once. */
            fprintf(stderr, "%s: cannot start thread %d of %d\n", prog, i + 1, n);
            exit(1);
        }
        started_threads++;
    }
    pthread_barrier_wait(&sh.barrier);
    double cpu0 = floor_clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    int64_t start = floor_now_ns();
    pthread_barrier_wait(&sh.barrier);
    int64_t sink = 0;
    for (int i = 0; i < started_threads; i++) {
        pthread_join(threads[i], NULL);
        failed |= w[i].failed;
        sink += w[i].sink;
    }
    double wall = (double)(floor_now_ns() - start) / 1e9;
    double cpu = floor_clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    pthread_barrier_destroy(&sh.barrier);

    long long ops = atomic_load(&sh.started);
    if (ops > limits->max_ops)
        ops = limits->max_ops;
    if (!failed) {
        qsort(sh.lat, (size_t)ops, sizeof *sh.lat, floor_compare_i64);
        long long k50 = (ops * 50 + 99) / 100 - 1, k99 = (ops * 99 + 99) / 100 - 1;
        printf("{\"ops\": %lld, \"seconds\": %.9f, \"cpu_seconds\": %.9f, \"p50_us\": %.3f, "
               "\"p99_us\": %.3f, \"connections\": %d, \"checksum\": %lld}\n",
               ops, wall, cpu, (double)sh.lat[k50 < 0 ? 0 : k50] / 1000.0,
               (double)sh.lat[k99 < 0 ? 0 : k99] / 1000.0, n, (long long)sink);
    }
    free(sh.lat);
    free(w);
    free(threads);
    return failed ? 1 : 0;
}

#endif
