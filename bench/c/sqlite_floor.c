/* bench/c/sqlite_floor.c - the physical floor for SQLite: a plain C loop over libsqlite3. */
/*
 * usage: sqlite_floor CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS DB MODE ARGS...
 *   read SQL NROWS               SQL has at most one parameter, bound to a pseudo-random key in
 *                                1..NROWS (the way the Python workloads pick theirs); step it to
 *                                the end and read every column of every row
 *   insert TABLE COLUMNS NROWS   insert NROWS rows of workload 4 (see format_row) by one prepared
 *                                INSERT in one transaction; TABLE is emptied first (untimed)
 *
 * Opens DB once per connection (each on a thread of its own), with keel's defaults for a file
 * (WAL, synchronous=NORMAL), and runs the loop of floor.h, which prints the JSON report. No
 * Python and no event loop are involved: this is what the hardware and libsqlite3 alone allow,
 * the bound a driver can approach but not pass.
 */
#include <sqlite3.h>

#include "floor.h"

typedef struct sqlite_state {
    sqlite3 *db;
    sqlite3_stmt *stmt;
    int nparams;
    int insert;
    long long nrows;
    char *text; /* insert: every row's strings (format_row) */
} sqlite_state;

/* Room for one row's three strings: name, created and note (at offsets 0, 32 and 80). */
#define ROW_TEXT 112

/*
 * Row i (1-based) of workload 4: id = i, qty = i % 1000, price = i * 0.5, name = "name %08d",
 * active = i even, created = 2024-01-01 00:00:00+00:00 + i seconds (ISO text, as Python's
 * sqlite3 stores a datetime), note = NULL when i % 10 == 0, else "note %d". The strings are
 * written once, before the loop, into text (ROW_TEXT bytes a row).
 */
static void format_row(char *text, long long i) {
    long long s = i % 86400;
    snprintf(text, 32, "name %08lld", i);
    snprintf(text + 32, 48, "2024-01-%02lld %02lld:%02lld:%02lld+00:00", 1 + i / 86400, s / 3600,
             s % 3600 / 60, s % 60);
    snprintf(text + 80, 32, "note %lld", i);
}

static void bind_row(sqlite3_stmt *stmt, long long i, const char *text) {
    sqlite3_bind_int64(stmt, 1, i);
    sqlite3_bind_int64(stmt, 2, i % 1000);
    sqlite3_bind_double(stmt, 3, (double)i * 0.5);
    sqlite3_bind_text(stmt, 4, text, -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 5, i % 2 == 0);
    sqlite3_bind_text(stmt, 6, text + 32, -1, SQLITE_STATIC);
    if (i % 10 == 0)
        sqlite3_bind_null(stmt, 7);
    else
        sqlite3_bind_text(stmt, 7, text + 80, -1, SQLITE_STATIC);
}

static int exec_sql(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite_floor: %s: %s\n", sql, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* One batch: every row in one transaction. */
static int insert_once(sqlite_state *st) {
    if (exec_sql(st->db, "BEGIN") != 0)
        return -1;
    for (long long i = 1; i <= st->nrows; i++) {
        bind_row(st->stmt, i, st->text + (i - 1) * ROW_TEXT);
        int rc = sqlite3_step(st->stmt);
        sqlite3_reset(st->stmt);
        if (rc != SQLITE_DONE) {
            fprintf(stderr, "sqlite_floor: row %lld failed: %s\n", i, sqlite3_errmsg(st->db));
            exec_sql(st->db, "ROLLBACK");
            return -1;
        }
    }
    return exec_sql(st->db, "COMMIT");
}

/* One operation: bind a key when the statement takes one, step every row, read every column. */
static int run_once(void *arg, uint64_t *rng, int64_t *sink) {
    sqlite_state *st = arg;
    sqlite3_stmt *stmt = st->stmt;
    if (st->insert)
        return insert_once(st);
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

/* Opens the file and prepares the statement of one connection (args: the mode's arguments). */
static int setup(sqlite_state *st, const char *path, const char *mode, char **args, int nargs) {
    char sql[1024];
    if (strcmp(mode, "read") == 0 && nargs == 2) {
        snprintf(sql, sizeof sql, "%s", args[0]);
        st->nrows = floor_parse_count("sqlite_floor", "NROWS", args[1]);
    } else if (strcmp(mode, "insert") == 0 && nargs == 3) {
        st->insert = 1;
        snprintf(sql, sizeof sql, "INSERT INTO %s (%s) VALUES (?, ?, ?, ?, ?, ?, ?)", args[0],
                 args[1]);
        st->nrows = floor_parse_count("sqlite_floor", "NROWS", args[2]);
    } else {
        fprintf(stderr,
                "sqlite_floor: unknown mode or wrong arguments: %s (read SQL NROWS | "
                "insert TABLE COLUMNS NROWS)\n",
                mode);
        return -1;
    }
    if (st->nrows < 1) {
        fprintf(stderr, "sqlite_floor: NROWS must be at least 1\n");
        return -1;
    }
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
    if (exec_sql(st->db, "PRAGMA synchronous=NORMAL") != 0)
        return -1;
    if (st->insert) {
        st->text = malloc((size_t)st->nrows * ROW_TEXT);
        if (st->text == NULL) {
            fprintf(stderr, "sqlite_floor: out of memory for %lld rows\n", st->nrows);
            return -1;
        }
        for (long long i = 1; i <= st->nrows; i++)
            format_row(st->text + (i - 1) * ROW_TEXT, i);
        char del[300];
        snprintf(del, sizeof del, "DELETE FROM %.200s", args[0]);
        return exec_sql(st->db, del);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(
            stderr,
            "usage: sqlite_floor CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS DB MODE "
            "ARGS...\n");
        return 2;
    }
    long long n = floor_parse_count("sqlite_floor", "CONNECTIONS", argv[1]);
    floor_limits limits = floor_parse_limits("sqlite_floor", argv + 2);
    if (n < 1 || n > 1024) {
        fprintf(stderr, "sqlite_floor: CONNECTIONS must be 1 to 1024\n");
        return 2;
    }
    sqlite_state *st = calloc((size_t)n, sizeof *st);
    void **states = calloc((size_t)n, sizeof *states);
    int failed = st == NULL || states == NULL;
    for (long long i = 0; i < n && !failed; i++) {
        states[i] = &st[i];
        failed = setup(&st[i], argv[6], argv[7], argv + 8, argc - 8) != 0;
    }
    if (!failed)
        failed = floor_measure("sqlite_floor", run_once, states, (int)n, &limits);
    for (long long i = 0; st != NULL && i < n; i++) {
        sqlite3_finalize(st[i].stmt);
        sqlite3_close(st[i].db);
        free(st[i].text);
    }
    free(st);
    free(states);
    return failed ? 1 : 0;
}
