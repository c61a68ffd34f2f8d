/* src/engines/engine.h - the engine vtable every database engine implements, and its contract. */
#ifndef KEEL_ENGINES_ENGINE_H
#define KEEL_ENGINES_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <keel/db.h>
#include "core/buf.h"
#include "core/config_int.h"
#include "loop/loop_int.h"
#include "loop/worker.h"
#include "query/placeholder.h"

/*
 * One statement as the core hands it to an engine. sql has already been rewritten to the
 * engine's placeholder style and checked against the parameter count; it stays valid until the
 * engine completes the operation. params belong to the caller and are valid only during the
 * engine's query/query_many call: an engine that needs them later copies them.
 */
typedef struct keel__stmt {
    const char *sql;
    size_t sql_len;
    const size_t *map; /* KEEL__PH_MYSQL: parameter index for each ?, else NULL */
    size_t nmap;
    const keel_value *params; /* nrows * nparams values, row-major */
    size_t nparams;
    size_t nrows; /* 1 for query, any for query_many (never 0) */
    int many;     /* 1 for query_many: the result has no rows, affected is the total */
} keel__stmt;

/*
 * A bulk load (keel_conn_copy_in) as the core hands it to an engine. Everything points at the
 * caller's memory and is valid only during the engine's copy_in call: an engine that needs it
 * later copies it. columns is NULL for "every column of the table, in order"; rows holds
 * nrows * ncols values, row-major (nrows may be 0).
 */
typedef struct keel__copy {
    const char *schema; /* NULL: the search path decides */
    const char *table;
    const char *const *columns; /* ncols names, or NULL */
    size_t ncols;
    const keel_value *rows;
    size_t nrows;
} keel__copy;

/* Connection lifecycle, owned by the pool. */
typedef enum keel__conn_state {
    KEEL__CONN_CONNECTING = 0,
    KEEL__CONN_IDLE = 1,
    KEEL__CONN_LEASED = 2,
    KEEL__CONN_RESETTING = 3, /* released inside a transaction: rolling back */
    KEEL__CONN_CLOSED = 4,
    KEEL__CONN_CHECKING = 5 /* idle past ping_after_idle: pinged before a waiter gets it */
} keel__conn_state;

struct keel__pool;
struct keel__engine;

/*
 * A server-side cursor (keel_conn_cursor_open). The core keeps the cursors of a connection in
 * its list while the connection lives; the engine's close detaches them (conn NULL, impl closed
 * and NULL), so that keel_cursor_close still frees them afterwards.
 */
struct keel_cursor {
    keel_conn *conn; /* NULL once its connection closed */
    void *impl;      /* the engine's statement, owned by the cursor; NULL until prepared */
    int opening;     /* its open is the running operation */
    int open;        /* the open succeeded: fetches may run */
    int running;     /* its open or a fetch is the running operation */
    int dropped;     /* keel_cursor_close came while running: freed when that ends */
    /* The running operation's completion, rows callback and their argument: the core calls
     * them through the cursor's own, which keep the cursor's state. */
    keel_query_cb cb;
    keel_rows_cb rows_cb;
    void *arg;
    struct keel_cursor *prev, *next; /* the connection's cursors */
};

/* A connection. The public keel_conn is this struct; engines keep their state in impl. */
struct keel_conn {
    struct keel__pool *pool;
    const struct keel__engine *engine;
    const keel__dbconfig *config;
    keel_loop *loop;
    void *impl; /* engine state, owned by the engine (freed by its close) */
    keel__conn_state state;
    int busy;            /* an operation (connect, query, reset) is in flight */
    int broken;          /* the engine found the connection unusable */
    int release_pending; /* released while busy: return to the pool when the op ends */
    int cancel_requested;
    double timeout;           /* keel_conn_set_timeout; KEEL_TIMEOUT_CONFIGURED: command_timeout */
    double op_timeout;        /* the running operation's deadline, in seconds from its start */
    int op_timeout_set;       /* … given by keel_conn_set_timeout rather than command_timeout */
    int deadline_state;       /* KEEL__DEADLINE_… (pool/pool.h): what the deadline is armed for */
    int timed_out;            /* the running operation's deadline passed: it ends as a timeout */
    int abandoned;            /* closed when the server left a timed-out operation unanswered */
    keel_timer *deadline;     /* the deadline, then the cancel's grace; made on first use */
    keel_notify_cb notify_cb; /* keel_conn_set_notify_handler, while leased */
    void *notify_arg;
    int listened;         /* a notify handler was set since the lease: UNLISTEN * on release */
    keel_query_cb cb;     /* completion of the running user operation */
    keel_rows_cb rows_cb; /* keel_conn_query_rows: where the running statement's rows go */
    void *cb_arg;
    int paused;                 /* keel_conn_pause: the running statement's rows wait */
    keel_result *slices;        /* a finished statement's rows, handed to rows_cb in slices */
    size_t slices_next;         /* the first of them not handed over yet */
    struct keel__defer *slicer; /* hands over the next slice from a later turn; on first use */
    keel__buf sql;              /* rewritten statement of the running operation */
    size_t *map;                /* placeholder map of the running operation (MySQL) */
    size_t nmap;
    struct keel_cursor *cursors; /* keel_conn_cursor_open: the cursors opened on it */
    int64_t created_ms;
    int64_t last_used_ms;
    int64_t expires_ms;      /* max_lifetime less its jitter, from created_ms; INT64_MAX: never */
    int refill;              /* opened to bring the pool back to min_size after closing old ones */
    struct keel__warm *warm; /* the keel_db_warm request this connect counts for */
    struct keel_conn *prev, *next; /* the pool's list of its connections */
};

/*
 * The vtable. All functions run on the loop thread. An engine reports the end of an operation
 * it started successfully exactly once, through keel__conn_connected (connect) or
 * keel__conn_complete (everything else); when a start function returns an error it reports
 * nothing. Errors it reports carry engine, database (c->config->name), SQLSTATE and a message
 * free of secrets.
 */
typedef struct keel__engine {
    const char *name; /* "postgresql", "sqlite" */
    keel__ph_style placeholder_style;
    char ident_quote;  /* the character that quotes identifiers: '"' or '`' */
    int notifications; /* 1 when the engine delivers notifications (keel__conn_notify) */
    /* Checks the engine part of a database config (host/path present, known options…).
     * KEEL_ERR_CONFIG naming the key path on failure. Called by keel_config_validate. */
    keel_status (*check_config)(const keel__dbconfig *dbc, keel_error *err);
    /* Starts connecting c (c->impl is NULL); resolves secrets here so rotation works. */
    keel_status (*connect)(keel_conn *c, keel_error *err);
    /* Starts a statement (stmt->nrows == 1) or a batch (stmt->many). NULL on engines without
     * SQL (MongoDB): the core then fails the call with KEEL_ERR_UNSUPPORTED. */
    keel_status (*query)(keel_conn *c, const keel__stmt *stmt, keel_error *err);
    /* Starts describing a statement (keel_conn_prepare) without running it: stmt has no
     * parameter values (nparams is how many $n it uses, nrows 0). It completes with a result
     * of the statement's columns (types and their engine names) and parameters
     * (keel__result_set_nparams / _param), and no rows; an engine with a statement cache keeps
     * the statement prepared there. NULL on engines without SQL. */
    keel_status (*describe)(keel_conn *c, const keel__stmt *stmt, keel_error *err);
    /* Starts a bulk load (keel_conn_copy_in) through the engine's own bulk path; it completes
     * with a result whose affected count is the rows loaded, and loads nothing on error. SQL
     * engines whose fastest atomic bulk path is their batch use keel__copy_as_batch. NULL on
     * engines without tables (MongoDB): the core then fails the call with
     * KEEL_ERR_UNSUPPORTED. */
    keel_status (*copy_in)(keel_conn *c, const keel__copy *copy, keel_error *err);
    /* Starts a document command (keel_conn_command): cmd is BSON, valid only during the call.
     * NULL on SQL engines. */
    keel_status (*command)(keel_conn *c, const char *dbname, const void *cmd, size_t len,
                           keel_error *err);
    /* Starts the cheapest round trip that shows the server answers (keel_conn_ping); it
     * completes like a statement, with a result of no use. SQL engines use keel__ping_sql. */
    keel_status (*ping)(keel_conn *c, keel_error *err);
    /* Starts a transaction control operation (see keel__txn_sql for SQL engines). */
    keel_status (*transaction)(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err);
    /* Goes on reading the rows of a statement streamed to rows_cb after keel_conn_pause
     * (c->paused is 0 again): an engine that streams stops reading once it sees c->paused,
     * after the batch in hand, and is woken here. NULL for engines that do not stream: the
     * core's hand-over of the finished result pauses instead. */
    void (*resume)(keel_conn *c);
    /* Starts opening a server-side cursor over a statement (keel_conn_cursor_open), fetching
     * prefetch rows per round trip: the statement runs, its result stays on the server, and the
     * operation completes with a result of its columns and no rows. The engine keeps its
     * statement in cur->impl as soon as it has one (the cursor owns it, also when the open then
     * fails). NULL on engines without server-side cursors. */
    keel_status (*cursor_open)(keel_conn *c, keel_cursor *cur, const keel__stmt *stmt,
                               size_t prefetch, keel_error *err);
    /* Starts reading the next n rows of an open cursor of c: they complete the operation in its
     * result (fewer than n only at the end) or, when c->rows_cb is set, go to it as a
     * keel_conn_query_rows statement's do. */
    keel_status (*cursor_fetch)(keel_conn *c, keel_cursor *cur, size_t n, keel_error *err);
    /* Lets go of cur's statement (cur->impl, not NULL): it is closed on the server without a
     * round trip of its own, whatever runs on c meanwhile (not an operation of cur). */
    void (*cursor_close)(keel_conn *c, keel_cursor *cur);
    /* Asks the server to stop the running operation; it then completes with
     * KEEL_ERR_CANCELLED. Must not block the loop thread. No-op when idle. */
    void (*cancel)(keel_conn *c);
    /* Transaction state known locally, without a round trip. */
    keel_txn_status (*txn_status)(const keel_conn *c);
    /* Closes now and frees c->impl. An operation in flight is abandoned: nothing is reported
     * after close (an engine using the worker pool lets the job finish and drops its result). */
    void (*close)(keel_conn *c);
} keel__engine;

/* The engine registry. NULL when no engine has that name / URL scheme. */
const keel__engine *keel__engine_find(const char *name);
const keel__engine *keel__engine_for_scheme(const char *scheme);

extern const keel__engine keel__engine_postgresql;
extern const keel__engine keel__engine_sqlite;
extern const keel__engine keel__engine_mongodb;
extern const keel__engine keel__engine_mysql;

/*
 * The engine → core calls below must never be made from inside the engine's own start function
 * (connect, query, transaction): report from a later watch, timer or worker callback. They may
 * close and free c (and its impl) before returning: the engine must return right after calling
 * them without touching c or its state again.
 */
/* Engine → core: the connect started by engine->connect finished (err NULL or code OK: ready). */
void keel__conn_connected(keel_conn *c, const keel_error *err);
/* Engine → core: the running operation finished. res (may be NULL on error) passes to the core. */
void keel__conn_complete(keel_conn *c, keel_result *res, const keel_error *err);
/*
 * Engine → core: a batch of the running statement's rows, for a statement started by
 * keel_conn_query_rows (c->rows_cb set; engines that cannot stream leave the rows in the result
 * they complete with, and the core hands them over in slices, a turn budget at a time, before
 * the query callback). The engine then empties res (keel__result_clear_rows) and goes on
 * filling it. Unlike the calls below, it never closes c. An engine that decodes or streams rows
 * stops once keel__turn_spent says so and goes on from a later turn (keel__defer).
 */
void keel__conn_rows(keel_conn *c, const keel_result *res);
/*
 * Engine → core: a notification arrived on c (engines with notifications: PostgreSQL). Handed to
 * the handler of a leased connection, dropped otherwise. Called while no operation runs, or when
 * one ends just before keel__conn_complete; never closes c.
 */
void keel__conn_notify(keel_conn *c, const keel_notification *n);
/* Engine → core: the connection died outside an operation (e.g. the server closed it while idle). */
void keel__conn_broken(keel_conn *c);
/* The db's worker pool, created on first use; NULL when it cannot be created. */
keel__workers *keel__conn_workers(keel_conn *c);

/* SQL for a transaction operation on SQL engines ("BEGIN", "SAVEPOINT keel_sp_2"…) into out. */
int keel__txn_sql(keel_txn_op op, unsigned depth, keel__buf *out);

/* The ping of SQL engines: SELECT 1 through the engine's query. */
keel_status keel__ping_sql(keel_conn *c, keel_error *err);

/*
 * The copy_in of SQL engines whose fastest atomic bulk path is their batch: one generated
 * INSERT (in the engine's placeholder style, in c->sql) run as a batch of every row through the
 * engine's query, which those engines make atomic. A load of no rows still checks the table
 * and columns, with an INSERT … SELECT that selects nothing.
 */
keel_status keel__copy_as_batch(keel_conn *c, const keel__copy *copy, keel_error *err);

/* Appends name as a quoted identifier (quote doubled inside). 0, or -1 when out of memory. */
int keel__quote_ident(keel__buf *out, const char *name, char quote);
/* Appends the target of a bulk load: the quoted, optionally schema-qualified table, then when
 * with_columns and the load names its columns, " (col, …)". 0, or -1 when out of memory. */
int keel__copy_target(keel__buf *out, const keel__copy *copy, char quote, int with_columns);

#endif
