/* keel/db.h - the database manager: pools of connections to named databases, and queries. */
#ifndef KEEL_DB_H
#define KEEL_DB_H

#include <stddef.h>
#include <stdint.h>
#include <keel/export.h>
#include <keel/error.h>
#include <keel/value.h>
#include <keel/result.h>
#include <keel/config.h>
#include <keel/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A keel_db owns one pool per configured database and belongs to one keel_loop: every call on it,
 * and every callback it makes, happens on the loop's thread, so it needs no locks. Blocking
 * engines (SQLite) run on a small worker pool owned by the db; their completions are delivered on
 * the loop thread like every other.
 *
 * Asynchronous calls take a callback. If the call itself returns an error, the callback is never
 * called; otherwise it is called exactly once, later, from the loop (never from inside the call).
 * The synchronous variants (…_sync) spin the db's blocking loop until done: they may only be used
 * on a db opened with a blocking loop (or with loop == NULL), outside keel's callbacks, and return
 * KEEL_ERR_INVALID_ARGUMENT otherwise.
 *
 * Callbacks (acquire, query, rows) run on the loop thread, one at a time, never nested. From an
 * acquire or query callback every asynchronous call is allowed, on any db and connection of the
 * loop (the one handed over included), and so is keel_db_close, deferred (see there). A rows
 * callback runs in the middle of its statement: it starts, releases and cancels nothing (its own
 * connection is busy: an operation started on it fails with KEEL_ERR_BUSY) and may close the db.
 * docs/c-api.md "Calling keel from a callback" has the table.
 */
typedef struct keel_db keel_db;

/* A connection leased from a pool. Give it back with keel_conn_release. */
typedef struct keel_conn keel_conn;

/* A server-side cursor opened on a connection (keel_conn_cursor_open). */
typedef struct keel_cursor keel_cursor;

/* Transaction state of a connection as last reported by the engine, without a round trip. */
typedef enum keel_txn_status {
    KEEL_TXN_IDLE = 0,   /* not in a transaction */
    KEEL_TXN_ACTIVE = 1, /* inside a transaction block */
    KEEL_TXN_FAILED = 2, /* inside a failed transaction block: only ROLLBACK works */
    KEEL_TXN_UNKNOWN = 3 /* a statement is running, or the connection is broken */
} keel_txn_status;

/* Transaction control; savepoints are named after their depth (keel_sp_1, keel_sp_2…). */
typedef enum keel_txn_op {
    KEEL_TXN_BEGIN = 0,
    KEEL_TXN_COMMIT = 1,
    KEEL_TXN_ROLLBACK = 2,
    KEEL_TXN_SAVEPOINT = 3,
    KEEL_TXN_RELEASE = 4,
    KEEL_TXN_ROLLBACK_TO = 5
} keel_txn_op;

/*
 * Snapshot of a pool, for health and metrics. ABI: caller-allocated like keel_error, and under
 * the same rule: new fields only ever take space from the start of reserved, which
 * keel_db_pool_stats zeroes, so the size and every field's offset never change.
 */
typedef struct keel_pool_stats {
    size_t size; /* open connections, idle or leased, plus those being opened */
    size_t idle;
    size_t leased;
    size_t waiting; /* acquire requests queued */
    size_t min_size;
    size_t max_size;
    double acquire_timeout; /* seconds */
    /* Totals since keel_db_open. */
    uint64_t connects;         /* connections opened */
    uint64_t connect_failures; /* connects that failed */
    uint64_t acquires;         /* requests that got a connection (keel_db_try_acquire too) */
    uint64_t acquire_timeouts; /* KEEL_ERR_POOL_TIMEOUT: acquire_timeout passed or max_waiters */
    /* Seconds the latest 1024 served requests waited for their connection, by nearest rank
     * (keel_db_try_acquire counts 0); 0 before any. */
    double acquire_wait_p50;
    double acquire_wait_p99;
    uint64_t reserved[2]; /* room for fields added later; zero */
} keel_pool_stats;

/* Called once with a leased connection and err == NULL, or with conn == NULL and err set. */
typedef void (*keel_acquire_cb)(keel_conn *conn, const keel_error *err, void *arg);

/*
 * Called once with the result (owned by the callee: free it with keel_result_free) and
 * err == NULL, or with res == NULL and err set. err is valid only during the call.
 */
typedef void (*keel_query_cb)(keel_result *res, const keel_error *err, void *arg);

/*
 * Receives one batch of a statement's rows (keel_conn_query_rows): rows has the statement's
 * columns and at least one row. rows and every value in it belong to keel and are valid only
 * during the call. Runs on the loop thread, in the middle of the operation: it must not start,
 * release or cancel operations (record what it needs and act on it in the query callback). It
 * may close the db: the close is deferred (see keel_db_close).
 */
typedef void (*keel_rows_cb)(const keel_result *rows, void *arg);

/* A notification (PostgreSQL's NOTIFY) received on a connection; its strings belong to keel and
 * are valid only during the keel_notify_cb call. */
typedef struct keel_notification {
    const char *channel;
    const char *payload; /* "" when the NOTIFY carried none */
    int64_t pid;         /* the server process of the session that sent it */
} keel_notification;

/*
 * Receives the notifications of a connection (keel_conn_set_notify_handler): once per
 * notification, in the order the server sent them, with n set and err NULL; and once, last,
 * with n NULL and err set (KEEL_ERR_CONNECTION_LOST) when the connection is found lost while no
 * operation runs on it (an operation running then fails with that error itself). Runs on the
 * loop thread, possibly in the middle of keel's handling of an operation's end: it may call
 * keel_conn_set_notify_handler on conn (to remove itself, say) and may close the db (deferred,
 * see keel_db_close), but must not start, release or cancel operations: record what it needs
 * and act on it later (from a timer, say).
 */
typedef void (*keel_notify_cb)(keel_conn *conn, const keel_notification *n, const keel_error *err,
                               void *arg);

/*
 * Opens a manager for cfg (validated and copied; NULL means the configuration file named by
 * $KEEL_CONFIG when that is set, as `keel check` reads it, else the default configuration, with
 * KEEL_… environment overrides applied). loop NULL makes a private blocking loop. Does not
 * connect: pools fill on demand or with keel_db_warm. The caller owns *out and frees it with
 * keel_db_close. Errors: KEEL_ERR_CONFIG (a KEEL_CONFIG file that cannot be read or is invalid
 * too, its message starting "KEEL_CONFIG: "), KEEL_ERR_URL, KEEL_ERR_NOMEM. Never blocks, but
 * for reading the KEEL_CONFIG file when cfg is NULL.
 */
KEEL_API keel_status keel_db_open(keel_db **out, const keel_config *cfg, keel_loop *loop,
                                  keel_error *err);

/*
 * Closes every pool and frees the db. Queued acquires and warms complete with KEEL_ERR_CLOSED;
 * every connection is closed; an operation still running on a leased connection is abandoned
 * and its callback completes with KEEL_ERR_CLOSED (all these callbacks run inside the close,
 * after the db is detached from them; closing the db again from one of them does nothing). A
 * connection still leased becomes a closed handle: every call on it fails with KEEL_ERR_CLOSED
 * and keel_conn_release frees it. The caller must not use db after the call. Accepts NULL.
 *
 * Called from anywhere else than a callback, it does all that before returning. It may also be
 * called from inside a callback keel makes on the db's loop (an acquire, query or rows
 * callback, of this db or another one on the loop): the close is then deferred until keel is
 * done with the loop event that made the callback. keel_db_close marks the db closed and
 * returns at once; from then on acquires and warms on the db, and operations started on its
 * connections, fail with KEEL_ERR_CLOSED, while what already runs goes on and the other
 * callbacks of the same event are still delivered. The close itself, callbacks included, runs
 * when the outermost keel_watch_ready or keel_timer_fire of that event has finished its work,
 * before it returns to the host loop (on a blocking loop, inside keel_loop_run); the db's
 * memory is freed there. A db opened with loop NULL frees its private loop when the
 * keel_loop_run in progress on it returns.
 *
 * Statements still running on the server are cancelled (PostgreSQL's cancel request, MySQL's
 * KILL QUERY, MongoDB's killOp), without waiting for the answer. Blocks at most about two
 * seconds, for SQLite and MongoDB jobs already running on worker threads (a statement being
 * interrupted, a connection closing); a deferred close does so inside that keel_watch_ready /
 * keel_timer_fire. It never waits for host-name lookups, TLS handshakes or cancel requests. A
 * worker thread still inside a blocking library call after that is left to finish on its own:
 * it touches nothing of the db, frees what its job owned and exits (the process may exit
 * meanwhile).
 */
KEEL_API void keel_db_close(keel_db *db);

/* The loop the db was opened on (the private blocking one when loop was NULL). */
KEEL_API keel_loop *keel_db_loop(const keel_db *db);

/* Configured database names and the default, valid as long as db. */
KEEL_API size_t keel_db_database_count(const keel_db *db);
KEEL_API const char *keel_db_database_name(const keel_db *db, size_t index);
KEEL_API const char *keel_db_default_database(const keel_db *db);
/* Engine name of a database ("postgresql", "sqlite"), or NULL if no such database. */
KEEL_API const char *keel_db_database_engine(const keel_db *db, const char *database);

/*
 * Opens connections until the pool of database (NULL: the default) holds min_size, then calls cb
 * with conn == NULL and err == NULL, or with the first connect error (during the wait after a
 * failed connect, see keel_db_acquire, with that failure's error, without connecting). Sync errors:
 * KEEL_ERR_UNKNOWN_DATABASE, KEEL_ERR_CLOSED, KEEL_ERR_INTERNAL (the event loop refused a timer).
 */
KEEL_API keel_status keel_db_warm(keel_db *db, const char *database, keel_acquire_cb cb, void *arg,
                                  keel_error *err);

/*
 * Leases a connection from the pool of database (NULL: the default). Requests are served in the
 * order they arrive; one that waits longer than acquire_timeout completes with
 * KEEL_ERR_POOL_TIMEOUT naming the database and pool size. A connect that fails completes the
 * oldest request with its error at once; the pool then waits before its next connect (50 ms,
 * doubling with each failure in a row up to 2 s, with jitter; none after a connect that works),
 * so requests arriving meanwhile wait for that attempt. An idle connection past ping_after_idle
 * is pinged first and, when it does not answer, replaced by a new one within the request's
 * acquire_timeout. Sync errors: KEEL_ERR_UNKNOWN_DATABASE (naming it), KEEL_ERR_CLOSED,
 * KEEL_ERR_INTERNAL (the event loop refused a timer), KEEL_ERR_POOL_TIMEOUT when max_waiters
 * requests wait for a release already (the message says the queue is full).
 */
KEEL_API keel_status keel_db_acquire(keel_db *db, const char *database, keel_acquire_cb cb,
                                     void *arg, keel_error *err);

/*
 * Withdraws a request queued by keel_db_acquire with the same cb and arg (a caller that gave up
 * waiting): it leaves the queue now and its callback is never called. Returns 1 when a request
 * was withdrawn, 0 when none is queued (its callback already ran). Never blocks, never calls back.
 */
KEEL_API int keel_db_acquire_cancel(keel_db *db, keel_acquire_cb cb, void *arg);

/*
 * Fast path: leases an idle connection right now if the pool has one and nobody is queued (one
 * that must be pinged first, past ping_after_idle, or is past max_lifetime is left to
 * keel_db_acquire).
 * Returns KEEL_OK with *out set, KEEL_ERR_BUSY when the caller must use keel_db_acquire, or the
 * sync errors of keel_db_acquire. Never blocks, never calls back.
 */
KEEL_API keel_status keel_db_try_acquire(keel_db *db, const char *database, keel_conn **out,
                                         keel_error *err);

/* Pool snapshot. KEEL_ERR_UNKNOWN_DATABASE if there is no such database. */
KEEL_API keel_status keel_db_pool_stats(const keel_db *db, const char *database,
                                        keel_pool_stats *out, keel_error *err);

/*
 * Gives a connection back. If an operation is still running it is cancelled and the connection
 * returns when it ends (its callback still runs; a server that leaves the cancel unanswered has
 * the connection closed, as keel_conn_cancel says). A connection left inside a transaction is
 * rolled back first, within command_timeout (10 seconds when none is set), else closed; a broken
 * one is closed and replaced on demand. The happy path costs no round trip. Accepts NULL. Never
 * blocks.
 */
KEEL_API void keel_conn_release(keel_conn *conn);

/*
 * Runs one statement with $1…$n placeholders bound to params (copied before the call returns).
 * Sync errors: KEEL_ERR_BUSY (an operation is already running on conn), KEEL_ERR_PARAMETERS (the
 * statement uses a different number of placeholders than nparams), KEEL_ERR_CLOSED.
 */
KEEL_API keel_status keel_conn_query(keel_conn *conn, const char *sql, const keel_value *params,
                                     size_t nparams, keel_query_cb cb, void *arg, keel_error *err);

/*
 * Like keel_conn_query, but hands the rows to on_rows in batches, in order, while they arrive,
 * instead of collecting them into the result: the memory keel holds stays at one batch whatever
 * the size of the result, and the caller can convert each batch while the next one is on the
 * wire. on_rows runs zero or more times (never with an empty batch), then cb exactly once, with
 * the same arg: with a result that has the columns and keel_result_affected but no rows, or with
 * an error (batches delivered before an error stay delivered). PostgreSQL, MySQL and SQLite
 * stream a single statement as it arrives (SQLite: as its worker steps it), in batches of at
 * most 256 rows; a string of several statements (whose result is the last statement that
 * returned rows) hands its rows over once the statement is done, in batches of at most 256 rows over as many loop turns
 * as on_rows needs, just before cb (a cancel or release meanwhile ends that with
 * KEEL_ERR_CANCELLED). keel_conn_pause stops the rows, from on_rows too (a cursor's flow
 * control). No call into keel runs
 * longer than a few milliseconds for it: what on_rows spends counts against the same budget
 * (docs/c-api.md, "The loop is never held long").
 * Sync errors: those of keel_conn_query, and KEEL_ERR_INVALID_ARGUMENT when on_rows is NULL.
 */
KEEL_API keel_status keel_conn_query_rows(keel_conn *conn, const char *sql,
                                          const keel_value *params, size_t nparams,
                                          keel_rows_cb on_rows, keel_query_cb cb, void *arg,
                                          keel_error *err);

/*
 * Prepares sql ($1…$n placeholders) without running it, and completes like keel_conn_query with
 * its description: a result with no rows whose columns are the statement's (name, keel type,
 * and the engine's type name: keel_result_coltype_name) and whose parameters say what the
 * statement takes (keel_result_nparams, _paramtype, _paramtype_name; MySQL and SQLite do not
 * type parameters). The statement stays prepared in the connection's statement cache (when it
 * has one), so running the same sql on conn later skips the server's parse; it goes when conn
 * is closed. A statement the server cannot prepare (a syntax error, an unknown table) fails with
 * the server's error. Sync errors: those of keel_conn_query (but any number of placeholders),
 * KEEL_ERR_UNSUPPORTED on document engines. Never blocks.
 */
KEEL_API keel_status keel_conn_prepare(keel_conn *conn, const char *sql, keel_query_cb cb,
                                       void *arg, keel_error *err);

/*
 * Flow control of a statement streamed by keel_conn_query_rows (a cursor): after pause, keel
 * hands over at most the batch in hand (up to 256 rows) and then stops reading the statement's
 * rows: they wait on the server's side
 * of the socket (PostgreSQL, MySQL) or in the statement (SQLite), so the memory keel holds stays
 * at one batch however large the result. resume goes on. pause may be called from the rows
 * callback (it is the one call on its busy connection that may), and is a no-op when no
 * streamed statement runs on conn; resume likewise. The statement stays running while paused:
 * its deadline (keel_conn_set_timeout) counts the paused time, conn stays busy (other
 * operations fail with KEEL_ERR_BUSY), and keel_conn_cancel or keel_conn_release end it
 * (pausing no more). Never block, never call back.
 */
KEEL_API void keel_conn_pause(keel_conn *conn);
KEEL_API void keel_conn_resume(keel_conn *conn);

/*
 * Runs one statement once per row of params (nrows rows of nparams values, row-major), in as few
 * round trips as the engine allows. keel_result_affected is the total. A statement that returns
 * rows (INSERT … RETURNING) has them in the result, with its columns, every parameter row's in
 * turn (MariaDB then runs the rows one execution each); for others the result has no columns
 * and no rows. Errors as keel_conn_query; a failing row stops the batch and names its index in
 * the message, and no rows are returned.
 */
KEEL_API keel_status keel_conn_query_many(keel_conn *conn, const char *sql,
                                          const keel_value *params, size_t nrows, size_t nparams,
                                          keel_query_cb cb, void *arg, keel_error *err);

/*
 * Loads rows into a table in one atomic bulk operation, like asyncpg's copy_records_to_table:
 * either every row is loaded or none is. table (and schema, NULL for the search path /
 * the connection's database) and the column names are taken as they are stored, quoted, so
 * mixed case and spaces need no escaping. columns names ncols columns; NULL means every column
 * of the table in order (generated ones excepted), and then ncols is the number of values per
 * row, which must match. rows holds nrows * ncols values, row-major (copied or encoded before
 * the call returns); nrows may be 0, which still checks the table and columns.
 *
 * PostgreSQL runs COPY … FROM STDIN (FORMAT binary), streamed as the socket takes it: each
 * value is encoded for its column's type (see docs/engines.md for the accepted kinds), and a
 * value that does not fit its column fails the load with KEEL_ERR_DATA naming the row index,
 * the column and both types. Other SQL engines run their atomic batch of an INSERT.
 *
 * Completes like keel_conn_query; the result has no rows and keel_result_affected is the
 * number of rows loaded. Inside a transaction the load is part of it. keel_conn_cancel stops
 * it (nothing is loaded). Sync errors: KEEL_ERR_INVALID_ARGUMENT (no table, an empty name, an
 * empty column list, rows without values), KEEL_ERR_UNSUPPORTED on document engines, and those
 * of keel_conn_query. Never blocks.
 */
KEEL_API keel_status keel_conn_copy_in(keel_conn *conn, const char *schema, const char *table,
                                       const char *const *columns, size_t ncols,
                                       const keel_value *rows, size_t nrows, keel_query_cb cb,
                                       void *arg, keel_error *err);

/*
 * Opens a server-side cursor over sql ($1…$n placeholders bound to params, copied before the call
 * returns): the statement runs, its result stays on the server, and keel_cursor_fetch reads it a
 * few rows at a time while other operations run on conn between the fetches. MySQL/MariaDB: a
 * read-only cursor of the prepared-statement protocol, prefetch (≥ 1) rows per round trip
 * (MariaDB materialises the result in a temporary table as the statement runs, so the open
 * takes as long as the whole query). Completes like keel_conn_query, with a result of the
 * statement's columns and no rows; a statement that returns no rows (it ran) fails with
 * KEEL_ERR_UNSUPPORTED. *out receives the cursor when the call returns KEEL_OK, and belongs to
 * the caller, who frees it with keel_cursor_close, whether the open succeeded or not. Sync
 * errors: those of keel_conn_query, KEEL_ERR_INVALID_ARGUMENT (out NULL, prefetch 0),
 * KEEL_ERR_UNSUPPORTED on engines without such cursors (PostgreSQL has SQL's DECLARE … CURSOR
 * inside a transaction; SQLite and MongoDB). Never blocks.
 */
KEEL_API keel_status keel_conn_cursor_open(keel_conn *conn, const char *sql,
                                           const keel_value *params, size_t nparams,
                                           size_t prefetch, keel_cursor **out, keel_query_cb cb,
                                           void *arg, keel_error *err);

/*
 * Reads the next n (≥ 1) rows of cur, opened on conn, as an operation of conn: it completes
 * like keel_conn_query with a result of up to n rows, fewer only at the end (none after it);
 * with on_rows not NULL the rows go to it instead, as keel_conn_query_rows hands them over.
 * An error (a cancel, a timeout) leaves the cursor usable when the server kept it. Sync errors:
 * those of keel_conn_query, KEEL_ERR_INVALID_ARGUMENT (n 0, cur NULL, not open: its open failed
 * or has not completed, or opened on another connection), KEEL_ERR_CLOSED (its connection was
 * closed). Never blocks.
 */
KEEL_API keel_status keel_cursor_fetch(keel_conn *conn, keel_cursor *cur, size_t n,
                                       keel_rows_cb on_rows, keel_query_cb cb, void *arg,
                                       keel_error *err);

/*
 * Closes cur and frees it; its statement on the server is closed without a round trip of its
 * own (MySQL: before the next prepared statement of the connection, or with the connection). A
 * cursor whose open or fetch is running is freed when that ends (its callback still runs).
 * Also valid after the connection was released or closed, which leave cursors open until
 * closed. Accepts NULL. Never blocks, never calls back.
 */
KEEL_API void keel_cursor_close(keel_cursor *cur);

/*
 * Runs one command on a document engine (MongoDB). cmd is a BSON document of len bytes (copied
 * before the call returns), run against the engine database dbname (NULL: the one configured
 * for this connection's database). The result has one row with one column "reply" of type
 * KEEL_TYPE_DOCUMENT: the server's reply document. A transaction begun with
 * keel_conn_transaction applies to it. Sync errors: KEEL_ERR_UNSUPPORTED on SQL engines,
 * KEEL_ERR_INVALID_ARGUMENT for a malformed document, and those of keel_conn_query.
 */
KEEL_API keel_status keel_conn_command(keel_conn *conn, const char *dbname, const void *cmd,
                                       size_t len, keel_query_cb cb, void *arg, keel_error *err);

/*
 * Checks that the server answers, with the cheapest round trip the engine has (SELECT 1 on SQL
 * engines, the ping command on MongoDB). Completes like keel_conn_query; the result has no use.
 * Sync errors: those of keel_conn_query.
 */
KEEL_API keel_status keel_conn_ping(keel_conn *conn, keel_query_cb cb, void *arg, keel_error *err);

/*
 * Begins, commits, rolls back or manages a savepoint. Completes like keel_conn_query.
 * PostgreSQL, after a statement failed in the block: KEEL_TXN_COMMIT ends it rolled back and
 * completes with KEEL_ERR_TRANSACTION (sqlstate 25P02, "the transaction was rolled back: …");
 * KEEL_TXN_RELEASE rolls back to the savepoint, releases it, and completes with the same error
 * ("the savepoint was rolled back: …"), the enclosing block usable again; COMMIT or END run as
 * a statement (keel_conn_query) fails as KEEL_TXN_COMMIT does. MySQL and SQLite undo only the
 * failed statement: their COMMIT keeps the rest.
 */
KEEL_API keel_status keel_conn_transaction(keel_conn *conn, keel_txn_op op, unsigned depth,
                                           keel_query_cb cb, void *arg, keel_error *err);

/*
 * Asks the server to stop the running operation of conn; its callback then completes with
 * KEEL_ERR_CANCELLED (or normally, if it finished first) and the connection stays usable.
 * When the server does not answer the cancel (within the operation's deadline and its grace,
 * see keel_conn_set_timeout, or 10 seconds for an operation without one), keel closes the
 * connection and the callback completes with KEEL_ERR_CANCELLED then; the connection is unusable
 * from there on (KEEL_ERR_CONNECTION_LOST) and keel_conn_release discards it.
 * A no-op when nothing runs. Never blocks (engines that need a blocking call use the worker pool).
 */
KEEL_API void keel_conn_cancel(keel_conn *conn);

/* keel_conn_set_timeout: the deadline of the database's command_timeout (none when unset). */
#define KEEL_TIMEOUT_CONFIGURED (-1.0)

/*
 * Sets the deadline of every operation started on conn from now on, until conn is released
 * (the next lease starts from the database's command_timeout again): seconds > 0 is the time
 * each operation (statement, batch, bulk load, document command, ping, transaction control)
 * may take from its start; 0 means no deadline; KEEL_TIMEOUT_CONFIGURED goes back to the
 * database's command_timeout. An operation already running keeps the deadline it started with.
 *
 * When a deadline passes, keel asks the server to stop the operation, as keel_conn_cancel
 * does, and the operation completes with KEEL_ERR_TIMEOUT (SQLSTATE 57014) naming the timeout
 * and the database; the connection stays usable. When the server does not answer the cancel
 * within a grace of the timeout again, capped at one second (a silent server, a network that
 * drops packets), keel closes the connection and completes the operation with KEEL_ERR_TIMEOUT
 * then: an operation never outlives twice its deadline, and never one second more. The
 * connection is then unusable (every operation fails with KEEL_ERR_CONNECTION_LOST) and
 * keel_conn_release discards it; the pool opens another one on demand. An operation that
 * finishes after the deadline but before its cancel took effect completes normally.
 *
 * Errors: KEEL_ERR_INVALID_ARGUMENT (conn NULL, seconds negative other than
 * KEEL_TIMEOUT_CONFIGURED, NaN or over 1e9), KEEL_ERR_CLOSED. Never blocks, never calls back.
 */
KEEL_API keel_status keel_conn_set_timeout(keel_conn *conn, double seconds, keel_error *err);

/*
 * Hands the notifications that arrive on conn to cb(conn, …, arg) from now on (cb NULL: no
 * longer; what arrives then is dropped). Subscribing is the caller's: run LISTEN channel (and
 * UNLISTEN) as statements on conn. Notifications are read whenever the socket has data: while
 * no operation runs (keel watches the socket of an idle connection), and those that arrive during
 * an operation are delivered when it ends, just before its callback.
 *
 * A connection that listens stays with its caller until released. keel_conn_release drops the
 * handler (cb is never called after it), and a connection on which a handler was ever set, or
 * that ran a statement starting with LISTEN, runs UNLISTEN * before it goes back to the pool (within command_timeout, 10 seconds when none is
 * set, or it is closed), so the next user of it receives nothing of this one's channels.
 * Errors: KEEL_ERR_INVALID_ARGUMENT (conn NULL), KEEL_ERR_UNSUPPORTED (an engine without
 * notifications: SQLite, MySQL/MariaDB, MongoDB), KEEL_ERR_CLOSED (released, or its database
 * closed). Never blocks, never calls back.
 */
KEEL_API keel_status keel_conn_set_notify_handler(keel_conn *conn, keel_notify_cb cb, void *arg,
                                                  keel_error *err);

KEEL_API keel_txn_status keel_conn_txn_status(const keel_conn *conn);
/* Database name and engine name of a leased connection, valid while it is leased. */
KEEL_API const char *keel_conn_database(const keel_conn *conn);
KEEL_API const char *keel_conn_engine(const keel_conn *conn);

/*
 * Synchronous variants: block until done on a db with a blocking loop (see above). When that
 * loop fails (keel_loop_run returns an error), they return its status after withdrawing their
 * operation: a queued acquire leaves the queue; a running one is cancelled and ends unreported,
 * the connection staying busy until it has (keel_conn_release still gives it back then).
 */
KEEL_API keel_status keel_db_acquire_sync(keel_db *db, const char *database, keel_conn **out,
                                          keel_error *err);
/*
 * keel_db_acquire_sync waiting at most seconds (> 0, at most 1e9) for the lease: when they pass
 * first, the request leaves the pool's queue and the call returns KEEL_ERR_TIMEOUT (SQLSTATE
 * 57014) naming the database; acquire_timeout and connect_timeout still apply within them.
 * KEEL_ERR_INVALID_ARGUMENT for other seconds; otherwise errors as keel_db_acquire_sync.
 */
KEEL_API keel_status keel_db_acquire_within_sync(keel_db *db, const char *database, double seconds,
                                                 keel_conn **out, keel_error *err);
KEEL_API keel_status keel_conn_query_sync(keel_conn *conn, const char *sql,
                                          const keel_value *params, size_t nparams,
                                          keel_result **out, keel_error *err);
KEEL_API keel_status keel_conn_query_many_sync(keel_conn *conn, const char *sql,
                                               const keel_value *params, size_t nrows,
                                               size_t nparams, keel_result **out, keel_error *err);
/* keel_conn_copy_in, blocking; *loaded (may be NULL) receives the number of rows loaded. */
KEEL_API keel_status keel_conn_copy_in_sync(keel_conn *conn, const char *schema, const char *table,
                                            const char *const *columns, size_t ncols,
                                            const keel_value *rows, size_t nrows, int64_t *loaded,
                                            keel_error *err);
/* keel_conn_prepare, blocking: the description in *out (free it with keel_result_free). */
KEEL_API keel_status keel_conn_prepare_sync(keel_conn *conn, const char *sql, keel_result **out,
                                            keel_error *err);
KEEL_API keel_status keel_conn_transaction_sync(keel_conn *conn, keel_txn_op op, unsigned depth,
                                                keel_error *err);
/* keel_conn_command, blocking; *out (may be NULL to discard it) receives the reply. */
KEEL_API keel_status keel_conn_command_sync(keel_conn *conn, const char *dbname, const void *cmd,
                                            size_t len, keel_result **out, keel_error *err);
KEEL_API keel_status keel_conn_ping_sync(keel_conn *conn, keel_error *err);
/* Acquire, run one statement, release. *out may be NULL to discard the result. */
KEEL_API keel_status keel_db_query_sync(keel_db *db, const char *database, const char *sql,
                                        const keel_value *params, size_t nparams, keel_result **out,
                                        keel_error *err);

#ifdef __cplusplus
}
#endif
#endif
