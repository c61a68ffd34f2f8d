/* bench/c/pg_floor.c - the physical floor for the PostgreSQL operations pgbench cannot run: a C loop over libpq. */
/*
 * usage: pg_floor CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...
 *   fetch SQL                    run SQL (no parameters, prepared once) and read every value
 *                                of every row, results in binary
 *   many TABLE COLUMNS NROWS     insert NROWS rows of workload 4 (see insert_row) with one
 *                                prepared INSERT per row in one pipeline with one sync (one
 *                                implicit transaction), sent and read non-blocking
 *   copy TABLE COLUMNS NROWS     the same rows by binary COPY ... FROM STDIN
 * The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
 * PGPASSWORD). The insert modes empty TABLE first (untimed), as the drivers' turns do. Values
 * are encoded once, before the loop: the floor measures libpq and the server, not encoding.
 * Prints the JSON report of floor.h.
 */
#include <libpq-fe.h>

#include <inttypes.h>
#include <poll.h>

#include "floor.h"

#define PROG "pg_floor"
#define NCOLS 7
/* 2024-01-01 00:00:00 UTC in PostgreSQL's binary timestamp: microseconds since 2000-01-01. */
#define TS_2024 ((int64_t)8766 * 86400 * 1000000)

enum mode { MODE_FETCH, MODE_MANY, MODE_COPY };

typedef struct pg_state {
    PGconn *conn;
    enum mode mode;
    char *sql;
    long long nrows;
    /* MODE_MANY: every row's parameter values, lengths and formats. */
    char **values;
    int *lengths;
    char *rowbuf;
    /* MODE_COPY: the whole binary COPY stream. */
    char *copy_data;
    size_t copy_len;
} pg_state;

static void put_be16(char *p, uint16_t v) {
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
}

static void put_be32(char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (24 - 8 * i));
}

static void put_be64(char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (56 - 8 * i));
}

/*
 * Row i (1-based) of workload 4, in binary: id int8 = i, qty int4 = i % 1000, price float8 =
 * i * 0.5, name text = "name %08d", active bool = i even, created timestamptz = 2024-01-01 UTC
 * + i seconds, note text = NULL when i % 10 == 0, else "note %d". buf receives the encoded
 * values (at most 96 bytes); vals/lens get each value's place and length (-1 for NULL).
 */
static void insert_row(long long i, char *buf, char *vals[NCOLS], int lens[NCOLS]) {
    char *p = buf;
    double price = (double)i * 0.5;
    uint64_t bits;
    memcpy(&bits, &price, sizeof bits);
    vals[0] = p, lens[0] = 8, put_be64(p, (uint64_t)i), p += 8;
    vals[1] = p, lens[1] = 4, put_be32(p, (uint32_t)(i % 1000)), p += 4;
    vals[2] = p, lens[2] = 8, put_be64(p, bits), p += 8;
    vals[3] = p, lens[3] = sprintf(p, "name %08lld", i), p += lens[3] + 1;
    vals[4] = p, lens[4] = 1, *p = (char)(i % 2 == 0), p += 1;
    vals[5] = p, lens[5] = 8, put_be64(p, (uint64_t)(TS_2024 + (int64_t)i * 1000000)), p += 8;
    if (i % 10 == 0) {
        vals[6] = NULL, lens[6] = -1;
    } else {
        vals[6] = p, lens[6] = sprintf(p, "note %lld", i);
    }
}

/* Runs a statement that returns no rows; prints why it failed and returns -1 when it does. */
static int exec_command(PGconn *conn, const char *sql) {
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, PROG ": %s: %s", sql, PQerrorMessage(conn));
    PQclear(r);
    return ok ? 0 : -1;
}

static int op_fetch(pg_state *st, int64_t *sink) {
    PGresult *r = PQexecPrepared(st->conn, "floor", 0, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, PROG ": the query failed: %s", PQerrorMessage(st->conn));
        PQclear(r);
        return -1;
    }
    int nrows = PQntuples(r), ncols = PQnfields(r);
    for (int row = 0; row < nrows; row++)
        for (int c = 0; c < ncols; c++)
            *sink += PQgetlength(r, row, c) + (unsigned char)PQgetvalue(r, row, c)[0];
    PQclear(r);
    return 0;
}

/*
 * Takes every result that has fully arrived: a row's (followed by a NULL) or the sync's. Counts
 * the rows done in *done and sets *synced; returns -1 after printing the first failure.
 */
static int take_results(pg_state *st, long long *done, int *synced) {
    int nulls = 0;
    while (!PQisBusy(st->conn)) {
        PGresult *r = PQgetResult(st->conn);
        if (r == NULL) {
            /* One NULL ends a row's results; a second means nothing more is pending. */
            if (++nulls == 2)
                break;
            continue;
        }
        nulls = 0;
        ExecStatusType status = PQresultStatus(r);
        PQclear(r);
        if (status == PGRES_PIPELINE_SYNC) {
            *synced = 1;
            break;
        }
        if (status != PGRES_COMMAND_OK) {
            fprintf(stderr, PROG ": row %lld failed: %s", *done, PQerrorMessage(st->conn));
            return -1;
        }
        (*done)++;
    }
    return 0;
}

/*
 * One batch on the non-blocking connection, the way an event loop drives it: rows are queued
 * while the socket takes them, and results are read as they arrive, so that neither side waits
 * for the other's buffers to drain.
 */
static int op_many(pg_state *st) {
    static const int formats[NCOLS] = { 1, 1, 1, 1, 1, 1, 1 };
    long long sent = 0, done = 0;
    int synced = 0, sync_sent = 0;
    while (!synced) {
        /* Queue rows until libpq's buffer cannot be flushed at once. */
        int pending = 0;
        while (sent < st->nrows && !pending) {
            long long end = sent + 256 < st->nrows ? sent + 256 : st->nrows;
            for (; sent < end; sent++) {
                if (!PQsendQueryPrepared(st->conn, "floor", NCOLS,
                                         (const char *const *)st->values + sent * NCOLS,
                                         st->lengths + sent * NCOLS, formats, 0)) {
                    fprintf(stderr, PROG ": cannot send row %lld: %s", sent,
                            PQerrorMessage(st->conn));
                    return -1;
                }
            }
            pending = PQflush(st->conn);
        }
        if (sent == st->nrows && !sync_sent) {
            if (!PQpipelineSync(st->conn)) {
                fprintf(stderr, PROG ": cannot send the sync: %s", PQerrorMessage(st->conn));
                return -1;
            }
            sync_sent = 1;
        }
        pending = PQflush(st->conn);
        if (pending < 0) {
            fprintf(stderr, PROG ": cannot send: %s", PQerrorMessage(st->conn));
            return -1;
        }
        struct pollfd pfd = { .fd = PQsocket(st->conn), .events = POLLIN };
        if (pending)
            pfd.events |= POLLOUT;
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
            fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
            return -1;
        }
        if ((pfd.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(st->conn)) {
            fprintf(stderr, PROG ": cannot read: %s", PQerrorMessage(st->conn));
            return -1;
        }
        if (take_results(st, &done, &synced) != 0)
            return -1;
    }
    if (done != st->nrows) {
        fprintf(stderr, PROG ": %lld of %lld rows reported done\n", done, st->nrows);
        return -1;
    }
    return 0;
}

static int op_copy(pg_state *st) {
    PGresult *r = PQexec(st->conn, st->sql);
    int status = PQresultStatus(r);
    PQclear(r);
    if (status != PGRES_COPY_IN) {
        fprintf(stderr, PROG ": COPY did not start: %s", PQerrorMessage(st->conn));
        return -1;
    }
    /* 64 KiB messages, as the drivers send. */
    for (size_t off = 0; off < st->copy_len; off += 65536) {
        size_t n = st->copy_len - off < 65536 ? st->copy_len - off : 65536;
        if (PQputCopyData(st->conn, st->copy_data + off, (int)n) != 1) {
            fprintf(stderr, PROG ": cannot send COPY data: %s", PQerrorMessage(st->conn));
            return -1;
        }
    }
    if (PQputCopyEnd(st->conn, NULL) != 1) {
        fprintf(stderr, PROG ": cannot end COPY: %s", PQerrorMessage(st->conn));
        return -1;
    }
    r = PQgetResult(st->conn);
    status = PQresultStatus(r);
    PQclear(r);
    PQclear(PQgetResult(st->conn));
    if (status != PGRES_COMMAND_OK) {
        fprintf(stderr, PROG ": COPY failed: %s", PQerrorMessage(st->conn));
        return -1;
    }
    return 0;
}

static int run_once(void *arg, uint64_t *rng, int64_t *sink) {
    pg_state *st = arg;
    (void)rng;
    switch (st->mode) {
    case MODE_FETCH:
        return op_fetch(st, sink);
    case MODE_MANY:
        return op_many(st);
    case MODE_COPY:
        return op_copy(st);
    }
    return -1;
}

/* Encodes every row of the insert modes once: parameter arrays, or the binary COPY stream. */
static int encode_rows(pg_state *st) {
    size_t n = (size_t)st->nrows;
    char *buf = st->rowbuf = malloc(n * 96);
    st->values = malloc(n * NCOLS * sizeof *st->values);
    st->lengths = malloc(n * NCOLS * sizeof *st->lengths);
    /* COPY: 19-byte header, per row 2 + 7 * 4 bytes of framing and at most 96 of data, trailer. */
    st->copy_data = malloc(19 + n * (2 + NCOLS * 4 + 96) + 2);
    if (buf == NULL || st->values == NULL || st->lengths == NULL || st->copy_data == NULL) {
        fprintf(stderr, PROG ": out of memory for %zu rows\n", n);
        return -1;
    }
    char *p = st->copy_data;
    memcpy(p, "PGCOPY\n\377\r\n\0", 11);
    memset(p + 11, 0, 8);
    p += 19;
    for (size_t i = 0; i < n; i++) {
        char **vals = st->values + i * NCOLS;
        int *lens = st->lengths + i * NCOLS;
        insert_row((long long)i + 1, buf + i * 96, vals, lens);
        put_be16(p, NCOLS);
        p += 2;
        for (int c = 0; c < NCOLS; c++) {
            put_be32(p, (uint32_t)lens[c]);
            p += 4;
            if (lens[c] > 0) {
                memcpy(p, vals[c], (size_t)lens[c]);
                p += lens[c];
            }
        }
    }
    put_be16(p, 0xFFFF);
    p += 2;
    st->copy_len = (size_t)(p - st->copy_data);
    return 0;
}

static int setup(pg_state *st, const char *mode, char **args, int nargs) {
    st->conn = PQconnectdb("");
    if (PQstatus(st->conn) != CONNECTION_OK) {
        fprintf(stderr, PROG ": cannot connect: %s", PQerrorMessage(st->conn));
        return -1;
    }
    if (strcmp(mode, "fetch") == 0 && nargs == 1) {
        st->mode = MODE_FETCH;
        PGresult *r = PQprepare(st->conn, "floor", args[0], 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            fprintf(stderr, PROG ": cannot prepare %s: %s", args[0], PQerrorMessage(st->conn));
        return ok ? 0 : -1;
    }
    if ((strcmp(mode, "many") == 0 || strcmp(mode, "copy") == 0) && nargs == 3) {
        static const Oid types[NCOLS] = { 20, 23, 701, 25, 16, 1184, 25 };
        const char *table = args[0], *columns = args[1];
        st->nrows = floor_parse_count(PROG, "NROWS", args[2]);
        if (st->nrows < 1) {
            fprintf(stderr, PROG ": NROWS must be at least 1\n");
            return -1;
        }
        char sql[1024];
        snprintf(sql, sizeof sql, "TRUNCATE %s", table);
        if (exec_command(st->conn, sql) != 0 || encode_rows(st) != 0)
            return -1;
        if (strcmp(mode, "copy") == 0) {
            st->mode = MODE_COPY;
            size_t len = strlen(table) + strlen(columns) + 64;
            char *copy = malloc(len);
            if (copy == NULL)
                return -1;
            snprintf(copy, len, "COPY %s (%s) FROM STDIN (FORMAT BINARY)", table, columns);
            st->sql = copy;
            return 0;
        }
        st->mode = MODE_MANY;
        snprintf(sql, sizeof sql, "INSERT INTO %s (%s) VALUES ($1, $2, $3, $4, $5, $6, $7)", table,
                 columns);
        PGresult *r = PQprepare(st->conn, "floor", sql, NCOLS, types);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            fprintf(stderr, PROG ": cannot prepare %s: %s", sql, PQerrorMessage(st->conn));
            return -1;
        }
        /* The connection stays in pipeline mode, non-blocking: every batch is one pipeline
         * and one sync. */
        if (PQsetnonblocking(st->conn, 1) != 0 || !PQenterPipelineMode(st->conn)) {
            fprintf(stderr, PROG ": cannot enter pipeline mode: %s", PQerrorMessage(st->conn));
            return -1;
        }
        return 0;
    }
    fprintf(stderr,
            PROG ": unknown mode or wrong arguments: %s (fetch SQL | many TABLE COLUMNS "
                 "NROWS | copy TABLE COLUMNS NROWS)\n",
            mode);
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: " PROG
                " CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...\n");
        return 2;
    }
    long long n = floor_parse_count(PROG, "CONNECTIONS", argv[1]);
    floor_limits limits = floor_parse_limits(PROG, argv + 2);
    if (n < 1 || n > 1024) {
        fprintf(stderr, PROG ": CONNECTIONS must be 1 to 1024\n");
        return 2;
    }
    pg_state *st = calloc((size_t)n, sizeof *st);
    void **states = calloc((size_t)n, sizeof *states);
    int failed = st == NULL || states == NULL;
    for (long long i = 0; i < n && !failed; i++) {
        states[i] = &st[i];
        failed = setup(&st[i], argv[6], argv + 7, argc - 7) != 0;
    }
    if (!failed)
        failed = floor_measure(PROG, run_once, states, (int)n, &limits);
    for (long long i = 0; st != NULL && i < n; i++) {
        PQfinish(st[i].conn);
        free(st[i].sql);
        free(st[i].values);
        free(st[i].lengths);
        free(st[i].rowbuf);
        free(st[i].copy_data);
    }
    free(st);
    free(states);
    return failed ? 1 : 0;
}
