/* bench/c/sqlite_floor.c - the physical floor for SQLite reads: a plain C loop over libsqlite3. */
/*
 * usage: sqlite_floor CONNECTIONS WARMUP_OPS MAX_OPS MAX_SECONDS DB SQL NROWS
 *
 * Opens DB once per connection (each on a thread of its own) and prepares SQL (with at most one
 * parameter, bound to a pseudo-random key in 1..NROWS, the way the Python workloads pick
 * theirs), then steps it to the end and reads every column of every row, in the loop of
 * floor.h, which prints the JSON report. No Python and no event loop are involved: this is what
 * the hardware and libsqlite3 alone allow, the bound a driver can approach but not pass.
 */
#include <sqlite3.h>

#include "floor.h"

typedef struct sqlite_state {
    sqlite3 *db;
    sqlite3_stmt *stmt;
    int nparams;
    long long nrows;
} sqlite_state;

/* One operation: bind a key when the statement takes one, step every row, read every column. */
static int run_once(void *arg, uint64_t *rng, int64_t *sink) {
    sqlite_state *st = arg;
    sqlite3_stmt *stmt = st->stmt;
    if (st->nparams > 0)
        sqlite3_bind_int64(stmt, 1,
                           (sqlite3_int64)(floor_next_random(rng) % (uint64_t)st->nrows) + 1);
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
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "sqlite_floor: the statement failed: %s\n", sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

/* Opens the file and prepares the statement of one connection. */
static int setup(sqlite_state *st, const char *path, const char *sql) {
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "sqlite_floor: cannot open %s: %s\n", path,
                st->db ? sqlite3_errmsg(st->db) : "");
        return -1;
    }
    if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->stmt, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "sqlite_floor: cannot prepare the statement: %s\n", sqlite3_errmsg(st->db));
        return -1;
    }
    st->nparams = sqlite3_bind_parameter_count(st->stmt);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: sqlite_floor CONNECTIONS WARMUP_OPS MAX_OPS MAX_SECONDS DB SQL "
                        "NROWS\n");
        return 2;
    }
    long long n = floor_parse_count("sqlite_floor", "CONNECTIONS", argv[1]);
    floor_limits limits = floor_parse_limits("sqlite_floor", argv[2], argv[3], argv[4]);
    long long nrows = floor_parse_count("sqlite_floor", "NROWS", argv[7]);
    if (n < 1 || n > 1024 || nrows < 1) {
        fprintf(stderr, "sqlite_floor: CONNECTIONS must be 1 to 1024, NROWS at least 1\n");
        return 2;
    }
    sqlite_state *st = calloc((size_t)n, sizeof *st);
    void **states = calloc((size_t)n, sizeof *states);
    int failed = st == NULL || states == NULL;
    for (long long i = 0; i < n && !failed; i++) {
        st[i].nrows = nrows;
        states[i] = &st[i];
        failed = setup(&st[i], argv[5], argv[6]) != 0;
    }
    if (!failed)
        failed = floor_measure("sqlite_floor", run_once, states, (int)n, &limits);
    for (long long i = 0; st != NULL && i < n; i++) {
        sqlite3_finalize(st[i].stmt);
        sqlite3_close(st[i].db);
    }
    free(st);
    free(states);
    return failed ? 1 : 0;
}
