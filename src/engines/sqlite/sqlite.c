/* src/engines/sqlite/sqlite.c - the SQLite engine: libsqlite3 calls run on the db's worker pool,
 * short cached reads inline on the loop thread. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include "core/error_int.h"
#include "core/numtext.h"
#include "core/result_int.h"
#include "core/secret.h"
#include "core/timeconv.h"
#include "core/value_int.h"
#include "engines/engine.h"
#include "engines/settings.h"
#include "engines/sqlite/lib.h"
#include "engines/stmtcache.h"
#include "loop/defer.h"

#define SQ_ENGINE "sqlite"
/* Statements kept prepared per connection, keyed by their SQL text. */
#define SQ_CACHE_SIZE 32
/* Virtual machine instructions between two checks of the cancel flag. */
#define SQ_PROGRESS_OPS 1000
/* Default budget of a read run inline on the loop thread, in virtual machine instructions. */
#define SQ_INLINE_STEPS 1000
/* Row index meaning "not part of a batch" in error messages. */
#define SQ_NO_ROW SIZE_MAX

/* ---- options ---- */

static const char *const sq_journal_modes[] = { "DELETE", "TRUNCATE", "PERSIST", "MEMORY",
                                                "WAL",    "OFF",      NULL };
static const char *const sq_sync_modes[] = { "OFF", "NORMAL", "FULL", "EXTRA", NULL };
static const char *const sq_open_modes[] = { "rwc", "rw", "ro", NULL };
static const char *const sq_txn_modes[] = { "DEFERRED", "IMMEDIATE", "EXCLUSIVE", NULL };
static const char *const sq_true_words[] = { "on", "true", "yes", "1", NULL };
static const char *const sq_false_words[] = { "off", "false", "no", "0", NULL };

enum { SQ_MODE_RWC = 0, SQ_MODE_RW = 1, SQ_MODE_RO = 2 };
enum { SQ_JOURNAL_WAL = 4 };
enum { SQ_SYNC_NORMAL = 1 };
enum { SQ_TXN_DEFERRED = 0, SQ_TXN_IMMEDIATE = 1 };

/* The engine options of one database, as indexes into the word lists above. */
typedef struct sq_options {
    int busy_timeout; /* milliseconds */
    int journal;      /* sq_journal_modes; applied to files only */
    int synchronous;  /* sq_sync_modes */
    int foreign_keys;
    int mode;         /* sq_open_modes */
    int txn_mode;     /* sq_txn_modes: how KEEL_TXN_BEGIN starts a transaction */
    int inline_steps; /* budget of an inline read; 0: every statement runs on a worker */
} sq_options;

/* ---- connection state ---- */

typedef enum sq_job_kind { SQ_JOB_CONNECT, SQ_JOB_QUERY, SQ_JOB_CLOSE } sq_job_kind;

/* One prepared statement of the cache. */
typedef struct sq_cached {
    keel__stmtcache_entry entry; /* its text */
    sqlite3_stmt *st;
    int dml;
    int read; /* a read-only query (SELECT, WITH … SELECT, VALUES): may run inline */
} sq_cached;

/* A statement ready to run: from the cache (owned == 0) or prepared for one use. */
typedef struct sq_stmt {
    sqlite3_stmt *st;
    int dml;
    int owned;
} sq_stmt;

/* How a declared column type asks values to be read. */
typedef enum sq_decl {
    SQ_DECL_NONE,
    SQ_DECL_BOOL,
    SQ_DECL_DATE,
    SQ_DECL_TIME,
    SQ_DECL_TIMESTAMP,
    SQ_DECL_TIMESTAMPTZ,
    SQ_DECL_UUID,
    SQ_DECL_JSON,
    SQ_DECL_NUMERIC,
    SQ_DECL_INT,
    SQ_DECL_TEXT,
    SQ_DECL_BLOB,
    SQ_DECL_FLOAT
} sq_decl;

/* A statement streamed to the rows callback (keel_conn_query_rows) is stepped this many rows
 * per worker job: each batch is handed over from the loop, and the next job steps on unless
 * the statement was paused (keel_conn_pause), so what keel holds stays at one batch. */
#define SQ_STREAM_ROWS 256
/* A day of a duration (an interval parameter) in microseconds. */
#define SQ_US_PER_DAY INT64_C(86400000000)

/* sq_conn.many of a job that describes a statement (keel_conn_prepare). */
#define SQ_DESCRIBE 2

/*
 * The engine state of a connection (keel_conn.impl). Jobs run one at a time, so the fields a job
 * uses are touched by one thread at a time: the worker's queue lock orders a job's run() after
 * the loop's submission and its done() after run(). Only cancel crosses threads while a job runs.
 * Between jobs the loop thread itself may run a read inline (sq_try_inline) with the handle and
 * the statement cache; it never does while a job is queued or running.
 */
typedef struct sq_conn {
    /* Fixed when the connection is created (loop thread), read by jobs. */
    char *dbname;
    char *filename; /* path, or the memdb URI of a ":memory:" database */
    char *display;  /* what error messages call the database file */
    int memory;
    sq_options opts;
    keel__workers *workers;

    /* Owned by the thread running the current job, or by the loop thread between jobs. */
    sqlite3 *db;               /* set by the connect job; the loop uses it only between jobs */
    keel__stmtcache cache;     /* of sq_cached */
    sqlite3_stmt *st_clear;    /* a trivial statement whose step resets the interrupt flag */
    sqlite3_stmt *st_sp_begin; /* the savepoint that makes a batch atomic */
    sqlite3_stmt *st_sp_rollback;
    sqlite3_stmt *st_sp_release;
    int cleanup; /* cleanup statements must not be interrupted */

    /* Set by the loop to stop the running job; read by the worker. */
    atomic_int cancel;

    /* The current job: inputs set on the loop before submission, outputs by run(). */
    sq_job_kind kind;
    int clear_interrupt;
    keel__arena arena; /* the copy of the SQL */
    const char *sql;
    size_t sql_len;
    keel_value *params; /* a copy (keel__values_copy) */
    size_t nparams;
    size_t nrows;
    int many;   /* 1: a batch; SQ_DESCRIBE: keel_conn_prepare (nparams counts, no values) */
    int stream; /* the statement's rows go to the rows callback a batch per job */
    /* A streamed statement between its jobs: the statement stands after the rows handed
     * over, its parameters (bound without a copy) and SQL kept until it ends. */
    sq_stmt cur;
    sq_decl *cur_decls; /* its columns' declared types (malloc'd) */
    int more;           /* set by a job: the statement has more rows, cur is open */
    keel_result *res;
    keel_error err;

    /* Loop thread only. */
    keel_conn *conn;
    int running;
    int waiting;          /* a streamed statement is paused between its jobs */
    int abandoned;        /* closed while a job ran: done() closes and frees */
    int interrupted;      /* sqlite3_interrupt was called: the next job clears the flag first */
    keel__defer *deliver; /* reports an inline read from a later loop iteration */
    int inline_pending;   /* an inline read finished: res / err wait for deliver */
    int inline_cancelled; /* cancelled while pending: deliver reports KEEL_ERR_CANCELLED */
    int inline_spent;     /* the inline read used up its budget (set by its progress handler) */
} sq_conn;

/* ---- small text helpers ---- */

/* Index of value in a NULL-terminated word list (case-insensitive), or -1. */
static int sq_word_index(const char *value, const char *const *words) {
    for (int i = 0; words[i]; i++) {
        if (strcasecmp(value, words[i]) == 0)
            return i;
    }
    return -1;
}

/* Skips white space, semicolons and comments; stops at end or a NUL. */
static const char *sq_skip_trivia(const char *p, const char *end) {
    while (p < end && *p) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v' ||
            *p == ';') {
            p++;
        } else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
            while (p < end && *p && *p != '\n')
                p++;
        } else if (p + 1 < end && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < end && !(p[0] == '*' && p[1] == '/'))
                p++;
            p = p + 1 < end ? p + 2 : end;
        } else {
            break;
        }
    }
    return p;
}

static int sq_only_trivia(const char *p, const char *end) {
    p = sq_skip_trivia(p, end);
    return p >= end || *p == '\0';
}

/* Whether the first word of sql (after trivia) is one of verbs, in any case. */
static int sq_starts_with(const char *sql, size_t len, const char *const *verbs) {
    const char *end = sql + len;
    const char *p = sq_skip_trivia(sql, end);
    for (int i = 0; verbs[i]; i++) {
        size_t n = strlen(verbs[i]);
        if ((size_t)(end - p) >= n && strncasecmp(p, verbs[i], n) == 0) {
            char next = (size_t)(end - p) > n ? p[n] : ' ';
            if (!((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') ||
                  (next >= '0' && next <= '9') || next == '_'))
                return 1;
        }
    }
    return 0;
}

/*
 * Whether a statement changes rows, so that sqlite3_changes describes it: SQLite keeps the count
 * of the last INSERT, UPDATE or DELETE, which a SELECT or DDL statement does not reset.
 */
static int sq_is_dml(const char *sql, size_t len, sqlite3_stmt *st) {
    static const char *const verbs[] = { "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", NULL };
    return !sqlite3_stmt_readonly(st) && sq_starts_with(sql, len, verbs);
}

/*
 * Whether a statement is a query that only reads, and so may run inline on the loop thread and
 * be run again on a worker when it must fall back. sqlite3_stmt_readonly alone is not enough:
 * it is also true of BEGIN, COMMIT and of PRAGMAs that change connection settings, none of which
 * may run twice or out of band; the leading verb rules those out.
 */
static int sq_is_read(const char *sql, size_t len, sqlite3_stmt *st) {
    static const char *const verbs[] = { "SELECT", "WITH", "VALUES", NULL };
    return sqlite3_stmt_readonly(st) && sq_starts_with(sql, len, verbs);
}

/* ---- options ---- */

static keel_status sq_option_error(keel_error *err, const char *db, const char *key,
                                   const char *expected) {
    return keel__error_set(err, KEEL_ERR_CONFIG, NULL, db, "databases.%s.options.%s: expected %s",
                           db, key, expected);
}

/* Reads a decimal count from 0 to INT_MAX, without sign or unit. Returns 0, or -1. */
static int sq_parse_count(const char *value, int *out) {
    char *end;
    if (value[0] < '0' || value[0] > '9')
        return -1;
    long long n = strtoll(value, &end, 10);
    if (*end != '\0' || n < 0 || n > INT_MAX)
        return -1;
    *out = (int)n;
    return 0;
}

/*
 * Applies one option to o. value NULL checks only that the key is known (its value holds a
 * secret reference that is resolved at connect time). Values are never quoted in messages since
 * a resolved reference may hold anything.
 */
static keel_status sq_option_apply(sq_options *o, const char *db, const char *key,
                                   const char *value, keel_error *err) {
    if (strcmp(key, "busy_timeout") == 0) {
        if (value && sq_parse_count(value, &o->busy_timeout) != 0)
            return sq_option_error(err, db, key, "a number of milliseconds (0 or more)");
    } else if (strcmp(key, "inline_steps") == 0) {
        if (value && sq_parse_count(value, &o->inline_steps) != 0)
            return sq_option_error(err, db, key,
                                   "a number of SQLite virtual machine steps (0 or more; 0 "
                                   "runs every statement on a worker thread)");
    } else if (strcmp(key, "journal_mode") == 0) {
        int i = value ? sq_word_index(value, sq_journal_modes) : 0;
        if (i < 0)
            return sq_option_error(err, db, key, "DELETE, TRUNCATE, PERSIST, MEMORY, WAL or OFF");
        if (value)
            o->journal = i;
    } else if (strcmp(key, "synchronous") == 0) {
        int i = value ? sq_word_index(value, sq_sync_modes) : 0;
        if (i < 0)
            return sq_option_error(err, db, key, "OFF, NORMAL, FULL or EXTRA");
        if (value)
            o->synchronous = i;
    } else if (strcmp(key, "foreign_keys") == 0) {
        if (!value)
            return KEEL_OK;
        if (sq_word_index(value, sq_true_words) >= 0)
            o->foreign_keys = 1;
        else if (sq_word_index(value, sq_false_words) >= 0)
            o->foreign_keys = 0;
        else
            return sq_option_error(err, db, key, "on or off");
    } else if (strcmp(key, "mode") == 0) {
        int i = value ? sq_word_index(value, sq_open_modes) : 0;
        if (i < 0)
            return sq_option_error(err, db, key, "rwc, rw or ro");
        if (value)
            o->mode = i;
    } else if (strcmp(key, "transaction_mode") == 0) {
        int i = value ? sq_word_index(value, sq_txn_modes) : 0;
        if (i < 0)
            return sq_option_error(err, db, key, "DEFERRED, IMMEDIATE or EXCLUSIVE");
        if (value)
            o->txn_mode = i;
    } else {
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, db,
                               "databases.%s.options.%s: unknown SQLite option", db, key);
    }
    return KEEL_OK;
}

/*
 * Reads the options of dbc into o. With resolve, secret references are resolved (connect time);
 * without, values holding references are only checked for a known key (validation time).
 */
static keel_status sq_options_load(const keel__dbconfig *dbc, int resolve, sq_options *o,
                                   keel_error *err) {
    o->busy_timeout = 5000;
    o->journal = SQ_JOURNAL_WAL;
    o->synchronous = SQ_SYNC_NORMAL;
    o->foreign_keys = 1;
    o->mode = SQ_MODE_RWC;
    o->txn_mode = -1;
    o->inline_steps = SQ_INLINE_STEPS;
    for (size_t i = 0; i < dbc->noptions; i++) {
        const keel__option *opt = &dbc->options[i];
        const char *value = opt->value ? opt->value : "";
        char *resolved = NULL;
        if (resolve) {
            keel_status st = keel__settings_resolve_option(dbc, opt, &resolved, err);
            if (st != KEEL_OK)
                return st;
            value = resolved;
        } else if (strstr(value, "${")) {
            value = NULL;
        }
        keel_status st = sq_option_apply(o, dbc->name, opt->key, value, err);
        keel__secret_free(resolved);
        if (st != KEEL_OK)
            return st;
    }
    /* A read-only connection cannot take the write lock BEGIN IMMEDIATE asks for. */
    if (o->txn_mode < 0)
        o->txn_mode = o->mode == SQ_MODE_RO ? SQ_TXN_DEFERRED : SQ_TXN_IMMEDIATE;
    return KEEL_OK;
}

static keel_status sq_check_config(const keel__dbconfig *dbc, keel_error *err) {
    if (!dbc->database || !dbc->database[0])
        return keel__error_set(
            err, KEEL_ERR_CONFIG, NULL, dbc->name,
            "databases.%s.database: SQLite needs a file path or :memory:", dbc->name);
    sq_options o;
    return sq_options_load(dbc, 0, &o, err);
}

/* ---- errors (worker side) ---- */

/* Fills the job's error; prefixes "row N: " when row is a batch row. */
static void sq_fail(sq_conn *sq, keel_status code, const char *sqlstate, size_t row,
                    const char *msg) {
    if (row != SQ_NO_ROW)
        keel__error_set(&sq->err, code, SQ_ENGINE, sq->dbname, "row %zu: %s", row, msg);
    else
        keel__error_set(&sq->err, code, SQ_ENGINE, sq->dbname, "%s", msg);
    keel__error_set_sqlstate(&sq->err, sqlstate);
}

/* The SQLSTATE and status for an SQLITE_ERROR, recognised from SQLite's message. */
static keel_status sq_classify_error(const char *msg, int prepare, const char **sqlstate) {
    if (strstr(msg, "syntax error") || strstr(msg, "incomplete input") ||
        strstr(msg, "unrecognized token")) {
        *sqlstate = "42601";
        return KEEL_ERR_PROGRAMMING;
    }
    if (strstr(msg, "no such table")) {
        *sqlstate = "42P01";
        return KEEL_ERR_PROGRAMMING;
    }
    if (strstr(msg, "no such column")) {
        *sqlstate = "42703";
        return KEEL_ERR_PROGRAMMING;
    }
    if (strstr(msg, "no such function")) {
        *sqlstate = "42883";
        return KEEL_ERR_PROGRAMMING;
    }
    if (strstr(msg, "no transaction is active")) {
        *sqlstate = "25P01";
        return KEEL_ERR_TRANSACTION;
    }
    if (strstr(msg, "within a transaction")) {
        *sqlstate = "25001";
        return KEEL_ERR_TRANSACTION;
    }
    if (strstr(msg, "no such savepoint")) {
        *sqlstate = "3B001";
        return KEEL_ERR_TRANSACTION;
    }
    /* Anything else that fails to compile is a fault of the statement; at run time it is the
     * database's (a failing function, a raised error). */
    *sqlstate = prepare ? "42000" : "";
    return prepare ? KEEL_ERR_PROGRAMMING : KEEL_ERR_DATABASE;
}

/*
 * The object names of a UNIQUE, PRIMARY KEY or NOT NULL failure, from SQLite's message:
 * "UNIQUE constraint failed: t.a, t.b" (table_name t; column_name only when one column is
 * named) or "UNIQUE constraint failed: index 'name'" (a unique index on expressions:
 * constraint_name).
 */
static void sq_constraint_names(const char *msg, keel_error *err) {
    const char *s = strstr(msg, " constraint failed: ");
    if (!s)
        return;
    s += strlen(" constraint failed: ");
    if (strncmp(s, "index '", 7) == 0) {
        const char *end = strrchr(s + 7, '\'');
        if (end)
            keel__error_set_field(err, KEEL__ERRF_CONSTRAINT, s + 7, (size_t)(end - (s + 7)));
        return;
    }
    const char *dot = strchr(s, '.');
    if (!dot)
        return;
    size_t tlen = (size_t)(dot - s);
    /* Every column named must be of the same table. */
    for (const char *c = strstr(dot, ", "); c; c = strstr(c + 2, ", "))
        if (strncmp(c + 2, s, tlen) != 0 || c[2 + tlen] != '.')
            return;
    keel__error_set_field(err, KEEL__ERRF_TABLE, s, tlen);
    if (!strstr(dot, ", "))
        keel__error_set_field(err, KEEL__ERRF_COLUMN, dot + 1, SIZE_MAX);
}

/* Maps a failed SQLite call (rc, extended) to the job's error, with sqlite3_errmsg. */
static void sq_fail_sqlite(sq_conn *sq, int rc, int prepare, size_t row) {
    const char *msg = sq->db ? sqlite3_errmsg(sq->db) : sqlite3_errstr(rc);
    const char *state = "";
    keel_status code;
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        code = KEEL_ERR_INTEGRITY;
        switch (rc) {
        case SQLITE_CONSTRAINT_UNIQUE:
        case SQLITE_CONSTRAINT_PRIMARYKEY:
        case SQLITE_CONSTRAINT_ROWID:
            state = "23505";
            break;
        case SQLITE_CONSTRAINT_FOREIGNKEY:
            state = "23503";
            break;
        case SQLITE_CONSTRAINT_NOTNULL:
            state = "23502";
            break;
        case SQLITE_CONSTRAINT_CHECK:
            state = "23514";
            break;
        default:
            state = "23000";
            break;
        }
        break;
    case SQLITE_ERROR:
        code = sq_classify_error(msg, prepare, &state);
        break;
    case SQLITE_RANGE:
        code = KEEL_ERR_PARAMETERS;
        break;
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
        code = KEEL_ERR_DATA;
        state = "22000";
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = KEEL_ERR_OPERATIONAL;
        state = "55P03";
        break;
    case SQLITE_INTERRUPT:
        code = KEEL_ERR_CANCELLED;
        state = "57014";
        break;
    case SQLITE_CANTOPEN:
        code = KEEL_ERR_CONNECT;
        state = "08001";
        break;
    case SQLITE_NOMEM:
        code = KEEL_ERR_NOMEM;
        state = "53200";
        break;
    default:
        code = KEEL_ERR_DATABASE;
        break;
    }
    sq_fail(sq, code, state, row, msg);
    keel__error_set_server_code(&sq->err, rc, KEEL_VIOLATION_NONE);
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
        rc == SQLITE_CONSTRAINT_NOTNULL)
        sq_constraint_names(msg, &sq->err);
}

static void sq_fail_nomem(sq_conn *sq) {
    sq_fail(sq, KEEL_ERR_NOMEM, "53200", SQ_NO_ROW, "out of memory");
}

static void sq_fail_cancelled(sq_conn *sq, size_t row) {
    sq_fail(sq, KEEL_ERR_CANCELLED, "57014", row, "interrupted");
}

static int sq_cancelled(sq_conn *sq) {
    return atomic_load_explicit(&sq->cancel, memory_order_relaxed) != 0;
}

/* Called by SQLite every SQ_PROGRESS_OPS instructions; non-zero interrupts the statement. It
 * catches a cancel that arrived before the statement started, which sqlite3_interrupt misses
 * (the flag is reset when a statement starts on an otherwise idle connection). */
static int sq_progress(void *arg) {
    sq_conn *sq = arg;
    return !sq->cleanup && sq_cancelled(sq);
}

/* Steps a statement that returns no rows and resets it; returns the step's result code. */
static int sq_step_once(sqlite3_stmt *st) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    return rc;
}

/* ---- statement cache (worker side) ---- */

/* The cached statement for sql, made the most recently used; NULL when there is none. */
static sq_cached *sq_cache_find(sq_conn *sq, const char *sql, size_t len) {
    return (sq_cached *)keel__stmtcache_find(&sq->cache, sql, len, NULL, 0);
}

/* A statement leaves the cache (evicted, or the connection closes): it is finalized. */
static void sq_cache_release(void *owner, keel__stmtcache_entry *e) {
    (void)owner;
    sqlite3_finalize(((sq_cached *)e)->st);
}

/* Caches st, evicting the least recently used statement when the cache is full. Returns 0 when
 * it could not (no memory): the caller then keeps and finalizes the statement itself. */
static int sq_cache_put(sq_conn *sq, const char *sql, size_t len, sqlite3_stmt *st, int dml,
                        int read) {
    sq_cached *e = (sq_cached *)keel__stmtcache_add(&sq->cache, sql, len, NULL, 0);
    if (!e)
        return 0;
    e->st = st;
    e->dml = dml;
    e->read = read;
    return 1;
}

/*
 * Finds or prepares the statement of the whole text sql. Returns 0 with *out (out->st NULL when
 * the text holds no statement at all), 1 when the text holds several statements (nothing is
 * prepared), -1 with the job's error set.
 */
static int sq_statement(sq_conn *sq, const char *sql, size_t len, sq_stmt *out) {
    sq_cached *e = sq_cache_find(sq, sql, len);
    if (e) {
        out->st = e->st;
        out->dml = e->dml;
        out->owned = 0;
        return 0;
    }
    if (len >= INT_MAX) {
        sq_fail(sq, KEEL_ERR_DATA, "54000", SQ_NO_ROW, "statement too long");
        return -1;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    /* The copy is NUL-terminated: passing the terminator spares SQLite a copy of the text. */
    int rc = sqlite3_prepare_v3(sq->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK) {
        sq_fail_sqlite(sq, rc, 1, SQ_NO_ROW);
        return -1;
    }
    if (tail && !sq_only_trivia(tail, sql + len)) {
        sqlite3_finalize(st);
        return 1;
    }
    out->st = st;
    out->dml = st ? sq_is_dml(sql, len, st) : 0;
    out->owned = st ? !sq_cache_put(sq, sql, len, st, out->dml, sq_is_read(sql, len, st)) : 0;
    return 0;
}

/* Makes a used statement ready for its next use, or finalizes a one-time one. */
static void sq_statement_done(sq_stmt *s) {
    if (!s->st)
        return;
    if (s->owned) {
        sqlite3_finalize(s->st);
    } else {
        sqlite3_reset(s->st);
        sqlite3_clear_bindings(s->st);
    }
    s->st = NULL;
}

/* ---- binding and decoding (worker side) ---- */

/* Binds one row of parameters; parameter n goes to ?n. Returns 0 or -1 with the error set. */
static int sq_bind(sq_conn *sq, sqlite3_stmt *st, const keel_value *params, size_t n, size_t row) {
    int expected = sqlite3_bind_parameter_count(st);
    if ((size_t)expected != n) {
        char msg[128];
        snprintf(msg, sizeof msg, "the statement takes %d parameters, %zu given", expected, n);
        sq_fail(sq, KEEL_ERR_PARAMETERS, "08P01", row, msg);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = &params[i];
        int idx = (int)i + 1;
        char text[KEEL__TIME_TEXT_MAX];
        size_t tn;
        int rc;
        switch (v->type) {
        case KEEL_TYPE_NULL:
            rc = sqlite3_bind_null(st, idx);
            break;
        case KEEL_TYPE_BOOL:
            rc = sqlite3_bind_int(st, idx, v->u.boolean ? 1 : 0);
            break;
        case KEEL_TYPE_INT:
            rc = sqlite3_bind_int64(st, idx, v->u.i64);
            break;
        case KEEL_TYPE_FLOAT:
            rc = sqlite3_bind_double(st, idx, v->u.f64);
            break;
        case KEEL_TYPE_NUMERIC:
        case KEEL_TYPE_TEXT:
        case KEEL_TYPE_JSON:
            /* The job's copy of the parameters outlives the statement's use of them. */
            rc = sqlite3_bind_text64(st, idx, v->u.str.len ? v->u.str.ptr : "", v->u.str.len,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case KEEL_TYPE_BYTES:
            /* A NULL pointer would bind SQL NULL: an empty blob needs a non-NULL one. */
            rc = sqlite3_bind_blob64(st, idx, v->u.str.len ? v->u.str.ptr : "", v->u.str.len,
                                     SQLITE_STATIC);
            break;
        case KEEL_TYPE_DATE:
            tn = keel__format_date(v->u.date, text);
            rc = sqlite3_bind_text(st, idx, text, (int)tn, SQLITE_TRANSIENT);
            break;
        case KEEL_TYPE_TIME:
            tn = keel__format_time(v->u.micros, text);
            rc = sqlite3_bind_text(st, idx, text, (int)tn, SQLITE_TRANSIENT);
            break;
        case KEEL_TYPE_INTERVAL:
            /* Checked by sq_query: no months, and the days fit the microseconds. */
            tn = keel__format_duration(
                (int64_t)v->u.interval.days * SQ_US_PER_DAY + v->u.interval.micros, text);
            rc = sqlite3_bind_text(st, idx, text, (int)tn, SQLITE_TRANSIENT);
            break;
        case KEEL_TYPE_TIMESTAMP:
            tn = keel__format_timestamp(v->u.micros, text);
            rc = sqlite3_bind_text(st, idx, text, (int)tn, SQLITE_TRANSIENT);
            break;
        case KEEL_TYPE_TIMESTAMPTZ:
            tn = keel__format_timestamptz(v->u.micros, text);
            rc = sqlite3_bind_text(st, idx, text, (int)tn, SQLITE_TRANSIENT);
            break;
        case KEEL_TYPE_UUID:
            keel__format_uuid(v->u.uuid, text);
            rc = sqlite3_bind_text(st, idx, text, 36, SQLITE_TRANSIENT);
            break;
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "parameter $%zu has an unknown type (%d)", i + 1,
                     (int)v->type);
            sq_fail(sq, KEEL_ERR_PARAMETERS, "", row, msg);
            return -1;
        }
        }
        if (rc != SQLITE_OK) {
            sq_fail_sqlite(sq, rc, 0, row);
            return -1;
        }
    }
    return 0;
}

/*
 * Classifies a declared type by substrings, as SQLite derives affinities. The keel types SQLite
 * lacks come first; the affinity rules (INT, then CHAR/CLOB/TEXT, BLOB, REAL/FLOA/DOUB) follow in
 * SQLite's order.
 *
 * This runs for every column of every execution, so it works on an upper-case copy with strstr:
 * glibc's strcasestr costs a thousand instructions or more per call, and the chain below made
 * this the largest single cost of a short read. The plain affinity names most schemas use are
 * matched whole first. A type too long for the copy (unusual) is searched with strcasestr.
 */
static sq_decl sq_classify_decl(const char *d) {
    static const struct {
        const char *name;
        sq_decl decl;
    } plain[] = { { "INTEGER", SQ_DECL_INT },
                  { "TEXT", SQ_DECL_TEXT },
                  { "REAL", SQ_DECL_FLOAT },
                  { "BLOB", SQ_DECL_BLOB } };
    if (!d || !d[0])
        return SQ_DECL_NONE;
    char up[48];
    size_t n = strlen(d);
    const char *h = d;
    char *(*has)(const char *, const char *) = strcasestr;
    if (n < sizeof up) {
        for (size_t i = 0; i <= n; i++)
            up[i] = d[i] >= 'a' && d[i] <= 'z' ? (char)(d[i] - 'a' + 'A') : d[i];
        for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
            if (strcmp(up, plain[i].name) == 0)
                return plain[i].decl;
        }
        h = up;
        has = strstr;
    }
    if (has(h, "BOOL"))
        return SQ_DECL_BOOL;
    if (has(h, "TIMESTAMPTZ"))
        return SQ_DECL_TIMESTAMPTZ;
    if (has(h, "TIMESTAMP") || has(h, "DATETIME"))
        return has(h, "WITH TIME") ? SQ_DECL_TIMESTAMPTZ : SQ_DECL_TIMESTAMP;
    if (has(h, "DATE"))
        return SQ_DECL_DATE;
    if (has(h, "TIME"))
        return SQ_DECL_TIME;
    if (has(h, "UUID"))
        return SQ_DECL_UUID;
    if (has(h, "JSON"))
        return SQ_DECL_JSON;
    if (has(h, "NUMERIC") || has(h, "DECIMAL"))
        return SQ_DECL_NUMERIC;
    if (has(h, "INT"))
        return SQ_DECL_INT;
    if (has(h, "CHAR") || has(h, "CLOB") || has(h, "TEXT"))
        return SQ_DECL_TEXT;
    if (has(h, "BLOB"))
        return SQ_DECL_BLOB;
    if (has(h, "REAL") || has(h, "FLOA") || has(h, "DOUB"))
        return SQ_DECL_FLOAT;
    return SQ_DECL_NONE;
}

static keel_type sq_decl_type(sq_decl d) {
    static const keel_type types[] = {
        [SQ_DECL_NONE] = KEEL_TYPE_NULL,           [SQ_DECL_BOOL] = KEEL_TYPE_BOOL,
        [SQ_DECL_DATE] = KEEL_TYPE_DATE,           [SQ_DECL_TIME] = KEEL_TYPE_TIME,
        [SQ_DECL_TIMESTAMP] = KEEL_TYPE_TIMESTAMP, [SQ_DECL_TIMESTAMPTZ] = KEEL_TYPE_TIMESTAMPTZ,
        [SQ_DECL_UUID] = KEEL_TYPE_UUID,           [SQ_DECL_JSON] = KEEL_TYPE_JSON,
        [SQ_DECL_NUMERIC] = KEEL_TYPE_NUMERIC,     [SQ_DECL_INT] = KEEL_TYPE_INT,
        [SQ_DECL_TEXT] = KEEL_TYPE_TEXT,           [SQ_DECL_BLOB] = KEEL_TYPE_BYTES,
        [SQ_DECL_FLOAT] = KEEL_TYPE_FLOAT,
    };
    return types[d];
}

/* Whether text is a decimal number ("-12.50", "1e3", "NaN", "Infinity"). */
static int sq_is_decimal(const char *s, size_t n) {
    const char *p = s, *end = s + n;
    if (p < end && (*p == '+' || *p == '-'))
        p++;
    if ((size_t)(end - p) == 3 && strncasecmp(p, "NaN", 3) == 0)
        return p == s;
    if ((size_t)(end - p) == 8 && strncasecmp(p, "Infinity", 8) == 0)
        return 1;
    size_t digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
    }
    if (digits == 0)
        return 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return p == end;
}

/*
 * Decodes column col of the current row into out (already KEEL_TYPE_NULL). The declared type
 * chooses the keel type; when the stored value does not fit it, the value is returned by its
 * storage class so nothing is lost. Returns 0, or -1 when out of memory.
 */
static int sq_decode(sq_conn *sq, keel_result *res, sqlite3_stmt *st, int col, sq_decl decl,
                     keel_value *out) {
    int sc = sqlite3_column_type(st, col);
    if (sc == SQLITE_NULL)
        return 0;
    const char *txt = NULL;
    size_t n = 0;
    if (sc == SQLITE_TEXT || sc == SQLITE_BLOB) {
        txt = sc == SQLITE_TEXT ? (const char *)sqlite3_column_text(st, col)
                                : (const char *)sqlite3_column_blob(st, col);
        n = (size_t)sqlite3_column_bytes(st, col);
        if (!txt) {
            if (sqlite3_errcode(sq->db) == SQLITE_NOMEM)
                return -1;
            txt = "";
            n = 0;
        }
    }
    char num[40];
    switch (decl) {
    case SQ_DECL_BOOL:
        if (sc == SQLITE_INTEGER) {
            int64_t v = sqlite3_column_int64(st, col);
            if (v == 0 || v == 1) {
                out->type = KEEL_TYPE_BOOL;
                out->u.boolean = (int)v;
                return 0;
            }
        } else if (sc == SQLITE_TEXT) {
            if ((n == 4 && strncasecmp(txt, "true", 4) == 0) ||
                (n == 5 && strncasecmp(txt, "false", 5) == 0)) {
                out->type = KEEL_TYPE_BOOL;
                out->u.boolean = n == 4;
                return 0;
            }
        }
        break;
    case SQ_DECL_DATE:
        if (sc == SQLITE_TEXT && keel__parse_date(txt, n, &out->u.date) == 0) {
            out->type = KEEL_TYPE_DATE;
            return 0;
        }
        break;
    case SQ_DECL_TIME:
        if (sc == SQLITE_TEXT && keel__parse_time(txt, n, &out->u.micros) == 0) {
            out->type = KEEL_TYPE_TIME;
            return 0;
        }
        /* A duration (negative, or 24 hours and more), as a timedelta parameter writes it. */
        if (sc == SQLITE_TEXT && keel__parse_duration(txt, n, &out->u.interval.micros) == 0) {
            out->type = KEEL_TYPE_INTERVAL;
            out->u.interval.days = 0;
            out->u.interval.months = 0;
            return 0;
        }
        break;
    case SQ_DECL_TIMESTAMP:
        if (sc == SQLITE_TEXT && keel__parse_timestamp(txt, n, &out->u.micros) == 0) {
            out->type = KEEL_TYPE_TIMESTAMP;
            return 0;
        }
        break;
    case SQ_DECL_TIMESTAMPTZ:
        /* Text without an offset is UTC: that is what SQLite's CURRENT_TIMESTAMP writes. */
        if (sc == SQLITE_TEXT && (keel__parse_timestamptz(txt, n, &out->u.micros) == 0 ||
                                  keel__parse_timestamp(txt, n, &out->u.micros) == 0)) {
            out->type = KEEL_TYPE_TIMESTAMPTZ;
            return 0;
        }
        break;
    case SQ_DECL_UUID:
        if (sc == SQLITE_TEXT && keel__parse_uuid(txt, n, out->u.uuid) == 0) {
            out->type = KEEL_TYPE_UUID;
            return 0;
        }
        if (sc == SQLITE_BLOB && n == 16) {
            memcpy(out->u.uuid, txt, 16);
            out->type = KEEL_TYPE_UUID;
            return 0;
        }
        break;
    case SQ_DECL_JSON:
        /* A JSON column has NUMERIC affinity, so a bare number document is stored as one. */
        if (sc == SQLITE_TEXT)
            return keel__result_set_text(res, out, KEEL_TYPE_JSON, txt, n);
        if (sc == SQLITE_INTEGER) {
            int len = snprintf(num, sizeof num, "%" PRId64, (int64_t)sqlite3_column_int64(st, col));
            return keel__result_set_text(res, out, KEEL_TYPE_JSON, num, (size_t)len);
        }
        if (sc == SQLITE_FLOAT && isfinite(sqlite3_column_double(st, col))) {
            size_t len = keel__format_double(sqlite3_column_double(st, col), num, sizeof num);
            return keel__result_set_text(res, out, KEEL_TYPE_JSON, num, len);
        }
        break;
    case SQ_DECL_NUMERIC:
        if (sc == SQLITE_INTEGER) {
            int len = snprintf(num, sizeof num, "%" PRId64, (int64_t)sqlite3_column_int64(st, col));
            return keel__result_set_text(res, out, KEEL_TYPE_NUMERIC, num, (size_t)len);
        }
        if (sc == SQLITE_FLOAT) {
            size_t len = keel__format_double(sqlite3_column_double(st, col), num, sizeof num);
            return keel__result_set_text(res, out, KEEL_TYPE_NUMERIC, num, len);
        }
        if (sc == SQLITE_TEXT && sq_is_decimal(txt, n))
            return keel__result_set_text(res, out, KEEL_TYPE_NUMERIC, txt, n);
        break;
    default:
        break;
    }
    switch (sc) {
    case SQLITE_INTEGER:
        out->type = KEEL_TYPE_INT;
        out->u.i64 = sqlite3_column_int64(st, col);
        return 0;
    case SQLITE_FLOAT:
        out->type = KEEL_TYPE_FLOAT;
        out->u.f64 = sqlite3_column_double(st, col);
        return 0;
    case SQLITE_TEXT:
        return keel__result_set_text(res, out, KEEL_TYPE_TEXT, txt, n);
    default:
        return keel__result_set_text(res, out, KEEL_TYPE_BYTES, txt, n);
    }
}

/* ---- running statements (worker side) ---- */

/*
 * A result with st's columns (read after a first step: a statement prepared before a schema
 * change is compiled again by that step and may then have other columns), their declared kinds
 * in *decls (small when it has room for them, else allocated: free it with sq_decls_free).
 * NULL when out of memory.
 */
static keel_result *sq_result_for(sqlite3_stmt *st, sq_decl *small, size_t nsmall,
                                  sq_decl **decls) {
    int ncols = sqlite3_column_count(st);
    keel_result *res = keel__result_new((size_t)ncols);
    *decls = (size_t)ncols <= nsmall ? small : malloc((size_t)ncols * sizeof **decls);
    if (!res || !*decls)
        goto nomem;
    for (int i = 0; i < ncols; i++) {
        const char *name = sqlite3_column_name(st, i);
        if (!name)
            goto nomem;
        (*decls)[i] = sq_classify_decl(sqlite3_column_decltype(st, i));
        if (keel__result_set_column(res, (size_t)i, name, strlen(name),
                                    sq_decl_type((*decls)[i])) != 0)
            goto nomem;
    }
    return res;
nomem:
    if (*decls && *decls != small)
        free(*decls);
    *decls = NULL;
    keel_result_free(res);
    return NULL;
}

static void sq_decls_free(sq_decl *decls, const sq_decl *small) {
    if (decls && decls != small)
        free(decls);
}

/* Appends the row st stands on to res. 0, or -1 when out of memory. */
static int sq_add_row(sq_conn *sq, keel_result *res, sqlite3_stmt *st, const sq_decl *decls) {
    size_t ncols = keel_result_ncols(res);
    if (ncols == 0)
        return 0;
    keel_value *row = keel__result_add_row(res);
    if (!row)
        return -1;
    for (size_t i = 0; i < ncols; i++) {
        if (sq_decode(sq, res, st, (int)i, decls[i], &row[i]) != 0)
            return -1;
    }
    return 0;
}

/*
 * Binds params to st, steps it to the end and returns its rows in *out. The caller resets or
 * finalizes st. Returns 0, or -1 with the job's error set.
 */
static int sq_exec(sq_conn *sq, sqlite3_stmt *st, int dml, const keel_value *params, size_t nparams,
                   keel_result **out) {
    if (sq_bind(sq, st, params, nparams, SQ_NO_ROW) != 0)
        return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
        return -1;
    }
    sq_decl small[32], *decls = NULL;
    keel_result *res = sq_result_for(st, small, 32, &decls);
    if (!res)
        goto nomem;
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        if (sq_add_row(sq, res, st, decls) != 0)
            goto nomem;
    }
    if (rc != SQLITE_DONE) {
        sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
        goto fail;
    }
    keel__result_set_affected(res, dml ? (int64_t)sqlite3_changes64(sq->db) : -1);
    sq_decls_free(decls, small);
    *out = res;
    return 0;
nomem:
    sq_fail_nomem(sq);
fail:
    sq_decls_free(decls, small);
    keel_result_free(res);
    return -1;
}

/* A result with no columns and no rows, for statements that return nothing. */
static void sq_empty_result(sq_conn *sq, int64_t affected) {
    sq->res = keel__result_new(0);
    if (!sq->res)
        sq_fail_nomem(sq);
    else
        keel__result_set_affected(sq->res, affected);
}

/* Runs every statement of a parameterless script in turn; the result is the last one's. */
static void sq_run_script(sq_conn *sq) {
    const char *p = sq->sql, *end = sq->sql + sq->sql_len;
    keel_result *last = NULL;
    for (;;) {
        p = sq_skip_trivia(p, end);
        if (p >= end || *p == '\0')
            break;
        if (sq_cancelled(sq)) {
            sq_fail_cancelled(sq, SQ_NO_ROW);
            break;
        }
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        int rc = sqlite3_prepare_v3(sq->db, p, (int)(end - p) + 1, 0, &st, &tail);
        if (rc != SQLITE_OK) {
            sq_fail_sqlite(sq, rc, 1, SQ_NO_ROW);
            break;
        }
        const char *start = p;
        p = tail && tail > start ? tail : end;
        if (!st)
            continue;
        keel_result *res = NULL;
        rc = sq_exec(sq, st, sq_is_dml(start, (size_t)(p - start), st), NULL, 0, &res);
        sqlite3_finalize(st);
        if (rc != 0)
            break;
        keel_result_free(last);
        last = res;
    }
    if (sq->err.code != KEEL_OK) {
        keel_result_free(last);
        return;
    }
    if (last)
        sq->res = last;
    else
        sq_empty_result(sq, -1);
}

/* Ends a streamed statement: its rows are all out, or it failed or was cancelled. */
static void sq_stream_end(sq_conn *sq) {
    sq_statement_done(&sq->cur);
    free(sq->cur_decls);
    sq->cur_decls = NULL;
    sq->more = 0;
}

/*
 * Steps the streamed statement sq->cur on from where the last job stopped (first: 1 for the
 * first job, which has just bound it), up to SQ_STREAM_ROWS rows into sq->res. Sets sq->more
 * when rows may remain; the statement ends otherwise.
 */
static void sq_stream_step(sq_conn *sq, int first) {
    sqlite3_stmt *st = sq->cur.st;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
        sq_stream_end(sq);
        return;
    }
    sq_decl small[32], *decls = NULL;
    keel_result *res = sq_result_for(st, small, 32, &decls);
    if (!res)
        goto nomem;
    if (first) {
        /* The declared types are kept for the jobs that follow. */
        size_t n = keel_result_ncols(res);
        sq->cur_decls = malloc((n ? n : 1) * sizeof *sq->cur_decls);
        if (!sq->cur_decls)
            goto nomem;
        if (n)
            memcpy(sq->cur_decls, decls, n * sizeof *decls);
    }
    size_t count = 0;
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        if (sq_add_row(sq, res, st, sq->cur_decls) != 0)
            goto nomem;
        if (++count == SQ_STREAM_ROWS)
            break;
    }
    sq_decls_free(decls, small);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        keel_result_free(res);
        sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
        sq_stream_end(sq);
        return;
    }
    if (rc == SQLITE_ROW) {
        sq->more = 1;
    } else {
        keel__result_set_affected(res, sq->cur.dml ? (int64_t)sqlite3_changes64(sq->db) : -1);
        sq_stream_end(sq);
    }
    sq->res = res;
    return;
nomem:
    sq_decls_free(decls, small);
    keel_result_free(res);
    sq_fail_nomem(sq);
    sq_stream_end(sq);
}

static void sq_run_one(sq_conn *sq) {
    sq_stmt s;
    int r = sq_statement(sq, sq->sql, sq->sql_len, &s);
    if (r < 0)
        return;
    if (r == 1) {
        if (sq->nparams)
            sq_fail(sq, KEEL_ERR_PROGRAMMING, "42601", SQ_NO_ROW,
                    "a statement with parameters must be a single statement");
        else
            sq_run_script(sq);
        return;
    }
    if (!s.st) {
        sq_empty_result(sq, -1);
        return;
    }
    if (sq->stream) {
        if (sq_bind(sq, s.st, sq->params, sq->nparams, SQ_NO_ROW) != 0) {
            sq_statement_done(&s);
            return;
        }
        sq->cur = s;
        sq_stream_step(sq, 1);
        return;
    }
    sq_exec(sq, s.st, s.dml, sq->params, sq->nparams, &sq->res);
    sq_statement_done(&s);
}

/* Undoes a failed batch: its savepoint exists while a transaction is open. */
static void sq_batch_rollback(sq_conn *sq) {
    sq->cleanup = 1;
    if (!sqlite3_get_autocommit(sq->db)) {
        sq_step_once(sq->st_sp_rollback);
        sq_step_once(sq->st_sp_release);
    }
    sq->cleanup = 0;
}

/*
 * Runs the statement once per parameter row inside a savepoint, so the batch is all or nothing
 * whether or not a transaction is open: a failing row undoes the rows before it and leaves an
 * enclosing transaction as it was.
 */
static void sq_run_many(sq_conn *sq) {
    sq_stmt s;
    int r = sq_statement(sq, sq->sql, sq->sql_len, &s);
    if (r < 0)
        return;
    if (r == 1 || !s.st) {
        sq_fail(sq, KEEL_ERR_PROGRAMMING, "42601", SQ_NO_ROW,
                "a batch needs exactly one statement");
        return;
    }
    int rc = sq_step_once(sq->st_sp_begin);
    if (rc != SQLITE_DONE) {
        sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
        sq_statement_done(&s);
        return;
    }
    int64_t total = 0;
    int failed = 0;
    /* The rows the statement returns (INSERT … RETURNING), every parameter row's in turn. */
    keel_result *acc = NULL;
    sq_decl small[32], *decls = NULL;
    for (size_t row = 0; row < sq->nrows && !failed; row++) {
        if (sq_cancelled(sq)) {
            sq_fail_cancelled(sq, row);
            failed = 1;
            break;
        }
        if (sq_bind(sq, s.st, sq->params + row * sq->nparams, sq->nparams, row) != 0) {
            failed = 1;
            break;
        }
        rc = sqlite3_step(s.st);
        if (!acc && (rc == SQLITE_ROW || rc == SQLITE_DONE) && sqlite3_column_count(s.st) > 0 &&
            (acc = sq_result_for(s.st, small, 32, &decls)) == NULL) {
            sq_fail_nomem(sq);
            failed = 1;
            sqlite3_reset(s.st);
            break;
        }
        for (; rc == SQLITE_ROW; rc = sqlite3_step(s.st)) {
            if (acc && sq_add_row(sq, acc, s.st, decls) != 0) {
                sq_fail_nomem(sq);
                failed = 1;
                break;
            }
        }
        if (failed) {
            sqlite3_reset(s.st);
            break;
        }
        if (rc != SQLITE_DONE) {
            sq_fail_sqlite(sq, rc, 0, row);
            failed = 1;
        } else {
            total += sqlite3_changes64(sq->db);
        }
        sqlite3_reset(s.st);
    }
    sq_statement_done(&s);
    if (!failed) {
        rc = sq_step_once(sq->st_sp_release);
        if (rc != SQLITE_DONE) {
            sq_fail_sqlite(sq, rc, 0, SQ_NO_ROW);
            failed = 1;
        }
    }
    sq_decls_free(decls, small);
    if (failed) {
        keel_result_free(acc);
        sq_batch_rollback(sq);
    } else if (acc) {
        keel__result_set_affected(acc, s.dml ? total : -1);
        sq->res = acc;
    } else {
        sq_empty_result(sq, s.dml ? total : -1);
    }
}

/*
 * Prepares the statement (into the cache, where the statements that run it later find it) and
 * describes it: its columns with their declared types, and its parameters, which SQLite does
 * not type.
 */
static void sq_run_describe(sq_conn *sq) {
    sq_stmt s;
    int r = sq_statement(sq, sq->sql, sq->sql_len, &s);
    if (r < 0)
        return;
    if (r == 1) {
        sq_fail(sq, KEEL_ERR_PROGRAMMING, "42601", SQ_NO_ROW,
                "a prepared statement must be a single statement");
        return;
    }
    int ncols = s.st ? sqlite3_column_count(s.st) : 0;
    keel_result *res = keel__result_new((size_t)ncols);
    if (!res || keel__result_set_nparams(res, sq->nparams) != 0)
        goto nomem;
    for (int i = 0; i < ncols; i++) {
        const char *name = sqlite3_column_name(s.st, i);
        const char *decl = sqlite3_column_decltype(s.st, i);
        if (!name ||
            keel__result_set_column(res, (size_t)i, name, strlen(name),
                                    sq_decl_type(sq_classify_decl(decl))) != 0 ||
            (decl && keel__result_set_type_name(res, (size_t)i, decl, strlen(decl)) != 0))
            goto nomem;
    }
    sq_statement_done(&s);
    sq->res = res;
    return;
nomem:
    sq_statement_done(&s);
    keel_result_free(res);
    sq_fail_nomem(sq);
}

/*
 * Resets SQLite's interrupt flag after a cancel whose sqlite3_interrupt may have come too late to
 * stop anything: a stale flag would make the next sqlite3_prepare fail. Stepping any statement
 * while none is active clears it.
 */
static void sq_clear_interrupt(sq_conn *sq) {
    sq->cleanup = 1;
    sq_step_once(sq->st_clear);
    sq->cleanup = 0;
}

static void sq_run_query(sq_conn *sq) {
    if (sq->more) {
        /* The next batch of a streamed statement. */
        sq->more = 0;
        if (sq_cancelled(sq)) {
            sq_fail_cancelled(sq, SQ_NO_ROW);
            sq_stream_end(sq);
            return;
        }
        sq_stream_step(sq, 0);
        return;
    }
    if (sq->clear_interrupt)
        sq_clear_interrupt(sq);
    if (sq_cancelled(sq)) {
        sq_fail_cancelled(sq, SQ_NO_ROW);
        return;
    }
    if (sq->many == SQ_DESCRIBE)
        sq_run_describe(sq);
    else if (sq->many)
        sq_run_many(sq);
    else
        sq_run_one(sq);
}

/* Finalizes every statement and closes the handle; safe on a half-opened connection. */
static void sq_close_db(sq_conn *sq) {
    if (sq->more)
        sq_stream_end(sq); /* closed while a streamed statement waited for its next job */
    keel__stmtcache_clear(&sq->cache, sq_cache_release);
    sqlite3_stmt **own[] = { &sq->st_clear, &sq->st_sp_begin, &sq->st_sp_rollback,
                             &sq->st_sp_release };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        sqlite3_finalize(*own[i]);
        *own[i] = NULL;
    }
    sqlite3_close_v2(sq->db);
    sq->db = NULL;
}

/* A connect step failed: report it as a connect error naming the file, and close. */
static void sq_connect_failed(sq_conn *sq, int rc, const char *what) {
    const char *msg = sq->db ? sqlite3_errmsg(sq->db) : sqlite3_errstr(rc);
    keel_status code = (rc & 0xff) == SQLITE_NOMEM ? KEEL_ERR_NOMEM : KEEL_ERR_CONNECT;
    keel__error_set(&sq->err, code, SQ_ENGINE, sq->dbname, "cannot %s SQLite database \"%s\": %s",
                    what, sq->display, msg);
    keel__error_set_sqlstate(&sq->err, code == KEEL_ERR_NOMEM ? "53200" : "08001");
    sq_close_db(sq);
}

static void sq_run_connect(sq_conn *sq) {
    static const int open_flags[] = {
        [SQ_MODE_RWC] = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
        [SQ_MODE_RW] = SQLITE_OPEN_READWRITE,
        [SQ_MODE_RO] = SQLITE_OPEN_READONLY,
    };
    /* NOMUTEX: jobs never use a connection from two threads at once, and sqlite3_interrupt,
     * the one call made while a job runs, takes no lock; the per-call mutex would only cost. */
    int flags = open_flags[sq->opts.mode] | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_EXRESCODE
    flags |= SQLITE_OPEN_EXRESCODE;
#endif
    if (sq->memory)
        flags |= SQLITE_OPEN_URI;
    int rc = sqlite3_open_v2(sq->filename, &sq->db, flags, NULL);
    if (rc != SQLITE_OK) {
        sq_connect_failed(sq, rc, "open");
        return;
    }
    sqlite3_extended_result_codes(sq->db, 1);
    sqlite3_busy_timeout(sq->db, sq->opts.busy_timeout);
    sqlite3_progress_handler(sq->db, SQ_PROGRESS_OPS, sq_progress, sq);

    char sql[160];
    /* WAL cannot be set on a read-only connection and does not apply to memory databases. */
    if (!sq->memory && sq->opts.mode != SQ_MODE_RO) {
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", sq_journal_modes[sq->opts.journal]);
        /* Changing the journal mode takes a lock that SQLite does not wait for through the
         * busy handler: when several connections open a new file at once, all but one get
         * SQLITE_BUSY. Retry (we are on a worker thread) for as long as busy_timeout allows. */
        int waited_ms = 0;
        for (;;) {
            rc = sqlite3_exec(sq->db, sql, NULL, NULL, NULL);
            if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= sq->opts.busy_timeout)
                break;
            struct timespec pause = { 0, 5 * 1000 * 1000 };
            nanosleep(&pause, NULL);
            waited_ms += 5;
        }
        if (rc != SQLITE_OK) {
            sq_connect_failed(sq, rc, "configure");
            return;
        }
    }
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s; PRAGMA foreign_keys=%s",
             sq_sync_modes[sq->opts.synchronous], sq->opts.foreign_keys ? "ON" : "OFF");
    rc = sqlite3_exec(sq->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_connect_failed(sq, rc, "configure");
        return;
    }
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } own[] = {
        { &sq->st_clear, "SELECT 0" },
        { &sq->st_sp_begin, "SAVEPOINT keel_batch" },
        { &sq->st_sp_rollback, "ROLLBACK TO keel_batch" },
        { &sq->st_sp_release, "RELEASE keel_batch" },
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        rc = sqlite3_prepare_v3(sq->db, own[i].sql, -1, SQLITE_PREPARE_PERSISTENT, own[i].st, NULL);
        if (rc != SQLITE_OK) {
            sq_connect_failed(sq, rc, "prepare");
            return;
        }
    }
}

static void sq_job_run(void *arg) {
    sq_conn *sq = arg;
    switch (sq->kind) {
    case SQ_JOB_CONNECT:
        sq_run_connect(sq);
        break;
    case SQ_JOB_QUERY:
        sq_run_query(sq);
        break;
    case SQ_JOB_CLOSE:
        sq_close_db(sq);
        break;
    }
}

/* ---- loop side ---- */

static void sq_free(sq_conn *sq) {
    keel__defer_free(sq->deliver);
    keel__arena_free(&sq->arena);
    keel__values_free(sq->params);
    keel_result_free(sq->res);
    free(sq->cur_decls);
    free(sq->dbname);
    free(sq->filename);
    free(sq->display);
    free(sq);
}

static void sq_job_done(void *arg);
static void sq_inline_deliver(void *arg);

/*
 * The pool was freed before the job's end could be delivered (on the worker): the connection
 * is gone, so the handle is closed here and the state freed.
 */
static void sq_job_drop(void *arg) {
    sq_conn *sq = arg;
    if (sq->db)
        sq_close_db(sq);
    sq_free(sq);
}

/* Queues the job sq->kind on the ENGINE class. 0, or -1 when the pool refused it. */
static int sq_submit_job(sq_conn *sq) {
    keel__job job = { KEEL__JOB_ENGINE, -1, sq_job_run, sq_job_done, sq_job_drop, sq };
    return keel__workers_submit(sq->workers, &job);
}

/* Closes the handle on a worker (closing may checkpoint the WAL), then frees. */
static void sq_start_close(sq_conn *sq) {
    if (!sq->db) {
        sq_free(sq);
        return;
    }
    sq->kind = SQ_JOB_CLOSE;
    sq->running = 1;
    if (sq_submit_job(sq) != 0) {
        /* The pool is shutting down or out of memory: close here as a last resort. */
        sq_close_db(sq);
        sq_free(sq);
    }
}

/* Submits the job that steps a streamed statement on. When the pool refuses it, the statement
 * ends here with the error, from a later turn (sq->deliver reports it). */
static void sq_next_batch(sq_conn *sq) {
    sq->waiting = 0;
    /* A cancel that came during the last job stays asked for: the next one honours it. */
    sq->running = 1;
    if (sq_submit_job(sq) == 0)
        return;
    sq->running = 0;
    sq_stream_end(sq);
    keel__arena_free(&sq->arena);
    keel__values_free(sq->params);
    sq->sql = NULL;
    sq->params = NULL;
    keel__error_set(&sq->err, KEEL_ERR_INTERNAL, SQ_ENGINE, sq->dbname,
                    "cannot queue the rest of the statement on the worker threads");
    sq->res = NULL;
    if (keel__defer_schedule(sq->deliver) == 0)
        sq->inline_pending = 1;
}

static void sq_job_done(void *arg) {
    sq_conn *sq = arg;
    sq->running = 0;
    if (sq->kind == SQ_JOB_CLOSE) {
        sq_free(sq);
        return;
    }
    keel_result *res = sq->res;
    sq->res = NULL;
    if (sq->abandoned) {
        keel_result_free(res);
        sq_start_close(sq);
        return;
    }
    if (sq->kind == SQ_JOB_QUERY && sq->more && sq->err.code == KEEL_OK) {
        /* A batch of a streamed statement: out it goes, and the next job steps on unless the
         * statement is paused (sq_resume submits it then). */
        keel__conn_rows(sq->conn, res);
        keel_result_free(res);
        if (sq->conn->paused) {
            sq->waiting = 1;
            return;
        }
        sq_next_batch(sq);
        return;
    }
    keel__arena_free(&sq->arena);
    keel__values_free(sq->params);
    sq->sql = NULL;
    sq->params = NULL;
    keel_conn *c = sq->conn;
    /* The callbacks below may start the next job on this connection, which reuses sq->err. */
    keel_error err = sq->err;
    int failed = err.code != KEEL_OK;
    if (sq->kind == SQ_JOB_CONNECT) {
        if (failed) {
            c->impl = NULL;
            sq_free(sq);
        }
        keel__conn_connected(c, failed ? &err : NULL);
        return;
    }
    keel__conn_complete(c, failed ? NULL : res, failed ? &err : NULL);
}

/* Appends s percent-encoded except for characters safe in a URI path. */
static int sq_uri_escape(keel__buf *b, const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int safe = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
        if (safe ? keel__buf_putc(b, (char)ch) : keel__buf_printf(b, "%%%02X", ch))
            return -1;
    }
    return 0;
}

static keel_status sq_connect(keel_conn *c, keel_error *err) {
    const keel__dbconfig *dbc = c->config;
    /* libsqlite3 is loaded on the engine's first connection (engines/sqlite/lib.h). */
    char why[256];
    if (keel__sqlite_lib_load(why, sizeof why) != 0)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, SQ_ENGINE, dbc->name,
                               "database '%s' needs libsqlite3, which could not be loaded: %s",
                               dbc->name, why);
    sq_conn *sq = calloc(1, sizeof *sq);
    if (!sq)
        return keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, dbc->name, "out of memory");
    keel__stmtcache_init(&sq->cache, SQ_CACHE_SIZE, sizeof(sq_cached), sq_cache_release, sq);
    atomic_init(&sq->cancel, 0);
    keel_status st = sq_options_load(dbc, 1, &sq->opts, err);
    if (st != KEEL_OK)
        goto fail;
    char *path = NULL;
    st = keel__settings_resolve(dbc, "database", dbc->database, &path, err);
    if (st != KEEL_OK)
        goto fail;
    sq->display = path;
    sq->dbname = strdup(dbc->name);
    if (!sq->dbname)
        goto nomem;
    if (strcmp(path, ":memory:") == 0) {
        /* Every pooled connection of this keel_db must see the same memory database: a memdb
         * name starting with "/" is shared within the process, and the config pointer tells
         * apart two dbs that configure the same name. */
        keel__buf uri = { 0 };
        if (keel__buf_printf(&uri, "file:/keel-%" PRIxPTR "-", (uintptr_t)dbc) ||
            sq_uri_escape(&uri, dbc->name) || keel__buf_puts(&uri, "?vfs=memdb")) {
            keel__buf_free(&uri);
            goto nomem;
        }
        sq->filename = uri.data;
        sq->memory = 1;
    } else {
        sq->filename = strdup(path);
        if (!sq->filename)
            goto nomem;
    }
    sq->workers = keel__conn_workers(c);
    if (!sq->workers) {
        st = keel__error_set(err, KEEL_ERR_CONNECT, SQ_ENGINE, dbc->name,
                             "cannot start the worker threads SQLite runs on");
        goto fail;
    }
    sq->deliver = keel__defer_new(c->loop, sq_inline_deliver, sq);
    if (!sq->deliver)
        goto nomem;
    sq->conn = c;
    sq->kind = SQ_JOB_CONNECT;
    sq->running = 1;
    keel_error_clear(&sq->err);
    if (sq_submit_job(sq) != 0)
        goto nomem;
    c->impl = sq;
    return KEEL_OK;
nomem:
    st = keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, dbc->name, "out of memory");
fail:
    sq_free(sq);
    return st;
}

/* ---- inline reads (loop side) ---- */

/* The progress handler while a read runs inline: its first call means the budget is spent. */
static int sq_progress_inline(void *arg) {
    sq_conn *sq = arg;
    sq->inline_spent = 1;
    return 1;
}

/*
 * Runs a cached read on the loop thread, within the inline_steps budget and without waiting for
 * any lock. Returns 1 when the statement ran to its end: its result or error then waits for the
 * deferred deliver call, since the engine may not report from inside its start function. Returns 0,
 * having reported nothing and reset the statement, when it must run on a worker instead: it is
 * not a cached read, its budget ran out, or a lock held elsewhere made it fail with
 * SQLITE_BUSY / SQLITE_LOCKED. Running a read again from the start is safe: nothing of it was
 * delivered, in autocommit the rerun reads a newer snapshot, and inside a transaction the
 * snapshot is the transaction's own. The statement comes from the cache only, so the loop never
 * pays for a prepare.
 */
static int sq_try_inline(sq_conn *sq, const char *sql, size_t len, const keel_value *params,
                         size_t nparams) {
    if (sq->opts.inline_steps <= 0)
        return 0;
    sq_cached *e = sq_cache_find(sq, sql, len);
    if (!e || !e->read)
        return 0;
    if (sq->interrupted) {
        sq_clear_interrupt(sq);
        sq->interrupted = 0;
    }
    sqlite3 *db = sq->db;
    /* A lock held by another connection fails at once here; the worker waits for it. */
    sqlite3_busy_handler(db, NULL, NULL);
    sqlite3_progress_handler(db, sq->opts.inline_steps, sq_progress_inline, sq);
    /* SQLite calls the handler when the statement's step count, summed over all its runs,
     * crosses a multiple of the interval: start the count at zero so the budget is whole. */
    sqlite3_stmt_status(e->st, SQLITE_STMTSTATUS_VM_STEP, 1);
    sq->inline_spent = 0;
    keel_error_clear(&sq->err);
    keel_result *res = NULL;
    /* The caller's parameters outlive this call, so they are bound without a copy. */
    int rc = sq_exec(sq, e->st, 0, params, nparams, &res);
    sq_stmt used = { .st = e->st, .dml = 0, .owned = 0 };
    sq_statement_done(&used);
    sqlite3_progress_handler(db, SQ_PROGRESS_OPS, sq_progress, sq);
    sqlite3_busy_timeout(db, sq->opts.busy_timeout);
    /* An interruption can only be the budget's: a cancel cannot arrive while the loop is here,
     * and a stale sqlite3_interrupt was cleared above. */
    if (rc != 0 && (sq->inline_spent || sq->err.code == KEEL_ERR_OPERATIONAL ||
                    sq->err.code == KEEL_ERR_CANCELLED)) {
        keel_error_clear(&sq->err);
        return 0;
    }
    if (keel__defer_schedule(sq->deliver) != 0) {
        keel_result_free(res);
        keel_error_clear(&sq->err);
        return 0;
    }
    sq->res = res;
    sq->inline_pending = 1;
    return 1;
}

/* The deferred deliver call: reports the inline read, from a loop turn after the one it ran in. */
static void sq_inline_deliver(void *arg) {
    sq_conn *sq = arg;
    keel_result *res = sq->res;
    sq->res = NULL;
    sq->inline_pending = 0;
    if (sq->inline_cancelled) {
        /* The user asked to stop before seeing the result: honour it, as a worker job would. */
        sq->inline_cancelled = 0;
        keel_result_free(res);
        res = NULL;
        sq_fail_cancelled(sq, SQ_NO_ROW);
    }
    /* The callback may start the next statement on this connection, which reuses sq->err. */
    keel_error err = sq->err;
    int failed = err.code != KEEL_OK;
    if (failed) {
        keel_result_free(res);
        res = NULL;
    }
    keel__conn_complete(sq->conn, res, failed ? &err : NULL);
}

/* Copies what the worker needs (the statement and its parameters) and submits the job. */
static keel_status sq_submit(keel_conn *c, const char *sql, size_t sql_len,
                             const keel_value *params, size_t nparams, size_t nrows, int many,
                             keel_error *err) {
    sq_conn *sq = c->impl;
    const char *dbname = c->config->name;
    if (!sq || !sq->db)
        return keel__error_set(err, KEEL_ERR_CLOSED, SQ_ENGINE, dbname, "connection is closed");
    if (sq->running || sq->inline_pending)
        return keel__error_set(err, KEEL_ERR_BUSY, SQ_ENGINE, dbname,
                               "an operation is already running on this connection");
    /* Only when no job runs on this connection may the loop thread use its handle. */
    if (!many && sq_try_inline(sq, sql, sql_len, params, nparams))
        return KEEL_OK;
    size_t count = nparams * nrows;
    if (nrows && count / nrows != nparams)
        return keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, dbname, "out of memory");
    /* The statement is copied too: after an abandoning close the core frees its buffer while
     * the job may still read it. */
    sq->sql = keel__arena_strndup(&sq->arena, sql, sql_len);
    keel_value *copy = sq->sql ? keel__values_copy(params, count, 0, NULL) : NULL;
    if (!copy) {
        keel__arena_free(&sq->arena);
        sq->sql = NULL;
        return keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, dbname, "out of memory");
    }
    sq->sql_len = sql_len;
    sq->params = copy;
    sq->nparams = nparams;
    sq->nrows = nrows;
    sq->many = many;
    sq->stream = !many && c->rows_cb != NULL;
    sq->res = NULL;
    keel_error_clear(&sq->err);
    sq->kind = SQ_JOB_QUERY;
    sq->clear_interrupt = sq->interrupted;
    sq->interrupted = 0;
    atomic_store(&sq->cancel, 0);
    sq->running = 1;
    if (sq_submit_job(sq) != 0) {
        sq->running = 0;
        sq->interrupted = sq->clear_interrupt;
        keel__arena_free(&sq->arena);
        keel__values_free(sq->params);
        sq->sql = NULL;
        sq->params = NULL;
        return keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, dbname,
                               "cannot queue the statement on the worker threads");
    }
    return KEEL_OK;
}

static keel_status sq_query(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    /* Refused before the job starts, with the status and words the other SQL engines use. */
    size_t rows = stmt->many ? stmt->nrows : 1;
    for (size_t r = 0; r < rows && stmt->nparams; r++) {
        for (size_t i = 0; i < stmt->nparams; i++) {
            const keel_value *v = &stmt->params[r * stmt->nparams + i];
            keel_type t = v->type;
            const char *db = c->config ? c->config->name : "";
            if (t == KEEL_TYPE_INTERVAL) {
                /* A duration is written as its hours, minutes and seconds: no months. */
                int64_t us;
                const char *why =
                    v->u.interval.months != 0 ? "an interval with months is not a SQLite value"
                    : __builtin_mul_overflow((int64_t)v->u.interval.days, SQ_US_PER_DAY, &us) ||
                            __builtin_add_overflow(us, v->u.interval.micros, &us)
                        ? "the interval is too long (at most about 292,000 years)"
                        : NULL;
                if (!why)
                    continue;
                if (stmt->many)
                    return keel__error_set(err, KEEL_ERR_DATA, SQ_ENGINE, db,
                                           "row %zu: parameter $%zu: %s", r, i + 1, why);
                return keel__error_set(err, KEEL_ERR_DATA, SQ_ENGINE, db, "parameter $%zu: %s",
                                       i + 1, why);
            }
            if (t != KEEL_TYPE_DOCUMENT && t != KEEL_TYPE_ARRAY && t != KEEL_TYPE_INET &&
                t != KEEL_TYPE_CIDR && t != KEEL_TYPE_RANGE)
                continue;
            const char *what = t == KEEL_TYPE_ARRAY      ? "an array"
                               : t == KEEL_TYPE_DOCUMENT ? "a BSON document"
                                                         : keel_type_name(t);
            if (stmt->many)
                return keel__error_set(err, KEEL_ERR_DATA, SQ_ENGINE, db,
                                       "row %zu: parameter $%zu: %s is not a SQLite value; pass "
                                       "JSON instead",
                                       r, i + 1, what);
            return keel__error_set(err, KEEL_ERR_DATA, SQ_ENGINE, db,
                                   "parameter $%zu: %s is not a SQLite value; pass JSON instead",
                                   i + 1, what);
        }
    }
    return sq_submit(c, stmt->sql, stmt->sql_len, stmt->params, stmt->nparams,
                     stmt->many ? stmt->nrows : 1, stmt->many, err);
}

/* The engine's resume: a streamed statement paused between its jobs steps on. */
static void sq_resume(keel_conn *c) {
    sq_conn *sq = c->impl;
    if (sq && sq->waiting)
        sq_next_batch(sq);
}

static keel_status sq_describe(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    return sq_submit(c, stmt->sql, stmt->sql_len, NULL, stmt->nparams, 0, SQ_DESCRIBE, err);
}

static keel_status sq_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    static const char *const begin_sql[] = { "BEGIN DEFERRED", "BEGIN IMMEDIATE",
                                             "BEGIN EXCLUSIVE" };
    sq_conn *sq = c->impl;
    if (op < KEEL_TXN_BEGIN || op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, SQ_ENGINE, c->config->name,
                               "unknown transaction operation %d", (int)op);
    if (op == KEEL_TXN_BEGIN && sq) {
        const char *sql = begin_sql[sq->opts.txn_mode];
        return sq_submit(c, sql, strlen(sql), NULL, 0, 1, 0, err);
    }
    keel__buf sql = { 0 };
    if (keel__txn_sql(op, depth, &sql) != 0) {
        keel__buf_free(&sql);
        return keel__error_set(err, KEEL_ERR_NOMEM, SQ_ENGINE, c->config->name, "out of memory");
    }
    keel_status st = sq_submit(c, sql.data, sql.len, NULL, 0, 1, 0, err);
    keel__buf_free(&sql);
    return st;
}

static void sq_cancel(keel_conn *c) {
    sq_conn *sq = c->impl;
    if (sq && sq->inline_pending) {
        sq->inline_cancelled = 1;
        return;
    }
    if (!sq || !sq->running || sq->kind != SQ_JOB_QUERY)
        return;
    atomic_store(&sq->cancel, 1);
    sqlite3_interrupt(sq->db);
    sq->interrupted = 1;
}

static keel_txn_status sq_txn_status(const keel_conn *c) {
    const sq_conn *sq = c->impl;
    if (!sq || !sq->db || sq->running)
        return KEEL_TXN_UNKNOWN;
    return sqlite3_get_autocommit(sq->db) ? KEEL_TXN_IDLE : KEEL_TXN_ACTIVE;
}

static void sq_close(keel_conn *c) {
    sq_conn *sq = c->impl;
    if (!sq)
        return;
    c->impl = NULL;
    sq->conn = NULL;
    if (sq->inline_pending) {
        /* Nobody will read the result of the inline read: drop it unreported. */
        keel__defer_cancel(sq->deliver);
        sq->inline_pending = 0;
        sq->inline_cancelled = 0;
        keel_result_free(sq->res);
        sq->res = NULL;
    }
    /* The loop's part goes now: what follows may run on a worker (sq_job_drop). */
    keel__defer_free(sq->deliver);
    sq->deliver = NULL;
    if (sq->running) {
        /* The job cannot be stopped mid-call: its done() closes and frees. A query is asked to
         * stop early, since nobody will read its result. */
        sq->abandoned = 1;
        if (sq->kind == SQ_JOB_QUERY) {
            atomic_store(&sq->cancel, 1);
            sqlite3_interrupt(sq->db);
        }
        return;
    }
    sq_start_close(sq);
}

const keel__engine keel__engine_sqlite = {
    .name = "sqlite",
    .placeholder_style = KEEL__PH_SQLITE,
    .ident_quote = '"',
    .check_config = sq_check_config,
    .connect = sq_connect,
    .query = sq_query,
    .describe = sq_describe,
    .resume = sq_resume,
    .copy_in = keel__copy_as_batch,
    .ping = keel__ping_sql,
    .transaction = sq_transaction,
    .cancel = sq_cancel,
    .txn_status = sq_txn_status,
    .close = sq_close,
};
