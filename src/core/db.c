/* src/core/db.c - the keel_db manager: named pools on one loop, and the synchronous API. */
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#include "core/config_int.h"
#include "core/db_int.h"
#include "core/error_int.h"
#include "loop/loop_int.h"
#include "pool/pool.h"

/* Worker threads of the ENGINE class: enough for every SQLite connection to run at once.
 * MongoDB connections have a thread each (a lane); lookups, TLS handshakes and cancels have
 * threads of their own (loop/worker.h). */
#define MAX_ENGINE_WORKERS 32

struct keel_db {
    keel_loop *loop;
    int owns_loop;
    keel_config *cfg;   /* our validated copy; the pools point into it */
    keel__pool **pools; /* one per database, in configuration order */
    size_t npools;
    keel__workers *workers;
    size_t max_workers;
    int closing;              /* keel_db_close was called: no new work is taken */
    keel__unwind close_later; /* the close, when it was called from inside a callback */
};

static void close_now(void *arg);

const char *keel_version(void) { return KEEL_VERSION_STRING; }

/*
 * Loads into cfg the configuration file named by $KEEL_CONFIG, when it is set and not empty, as
 * the keel command does: so that `keel check` and an application opened with no configuration
 * read the same file. Its errors are KEEL_ERR_CONFIG (or NOMEM), naming the variable.
 */
static keel_status load_keel_config(keel_config *cfg, keel_error *err) {
    const char *path = getenv("KEEL_CONFIG");
    if (!path || !*path)
        return KEEL_OK;
    keel_error local;
    keel_error_clear(&local);
    keel_status st = keel_config_load_file(cfg, path, &local);
    if (st == KEEL_OK)
        return KEEL_OK;
    if (st != KEEL_ERR_NOMEM)
        st = KEEL_ERR_CONFIG;
    return keel__error_set(err, st, NULL, NULL, "KEEL_CONFIG: %s", local.message);
}

keel_status keel_db_open(keel_db **out, const keel_config *cfg, keel_loop *loop, keel_error *err) {
    if (!out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL, "out is NULL");
    *out = NULL;
    keel_config *own = NULL;
    keel_status st;
    if (cfg) {
        own = keel__config_clone(cfg);
        if (!own)
            return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory");
    } else {
        st = keel_config_new(&own, err);
        if (st != KEEL_OK)
            return st;
        st = load_keel_config(own, err);
        if (st == KEEL_OK)
            st = keel_config_apply_env(own, err);
        if (st != KEEL_OK) {
            keel_config_free(own);
            return st;
        }
    }
    st = keel_config_validate(own, err);
    if (st != KEEL_OK) {
        keel_config_free(own);
        return st;
    }
    keel_db *db = calloc(1, sizeof *db);
    if (!db) {
        keel_config_free(own);
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory");
    }
    db->cfg = own;
    if (loop) {
        db->loop = loop;
    } else {
        db->loop = keel_loop_new_blocking();
        db->owns_loop = 1;
        if (!db->loop)
            goto nomem;
    }
    db->npools = keel_config_database_count(own);
    db->pools = calloc(db->npools ? db->npools : 1, sizeof *db->pools);
    if (!db->pools)
        goto nomem;
    size_t blocking_conns = 0;
    for (size_t i = 0; i < db->npools; i++) {
        const keel__dbconfig *dbc = keel__config_database_at(own, i);
        const keel__engine *engine = keel__engine_find(dbc->engine);
        if (!engine) {
            keel__error_set(err, KEEL_ERR_CONFIG, NULL, dbc->name,
                            "databases.%s.engine: engine '%s' is not available in this build",
                            dbc->name, dbc->engine);
            close_now(db);
            return KEEL_ERR_CONFIG;
        }
        /* MongoDB connections run on lanes of their own (src/loop/worker.h). */
        if (engine == &keel__engine_sqlite)
            blocking_conns += dbc->max_size;
        db->pools[i] = keel__pool_new(db, db->loop, dbc, engine);
        if (!db->pools[i])
            goto nomem;
    }
    db->max_workers = blocking_conns < 1                    ? 1
                      : blocking_conns > MAX_ENGINE_WORKERS ? MAX_ENGINE_WORKERS
                                                            : blocking_conns;
    *out = db;
    return KEEL_OK;
nomem:
    close_now(db);
    return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory");
}

/* Closes every pool and frees the db. The callbacks of the close run in here. */
static void close_now(void *arg) {
    keel_db *db = arg;
    db->closing = 1;
    for (size_t i = 0; db->pools && i < db->npools; i++) {
        /* Unlisted first: a callback of the close may still ask the db about its pools. */
        keel__pool *p = db->pools[i];
        db->pools[i] = NULL;
        keel__pool_free(p);
    }
    free(db->pools);
    /* Engines that close on the worker pool have queued their last jobs: let them finish. */
    keel__workers_free(db->workers);
    keel_config_free(db->cfg);
    if (db->owns_loop)
        keel_loop_free(db->loop); /* freed later when a keel_loop_run on it is in progress */
    free(db);
}

void keel_db_close(keel_db *db) {
    if (!db || db->closing)
        return; /* a second close, e.g. from a callback of the first, changes nothing */
    db->closing = 1;
    /* Inside a callback of keel, the frames up the stack (an engine reporting its outcome, the
     * worker pool's drain, the pool serving waiters, the loop itself) still use what the close
     * frees: it runs once that callback has returned. */
    if (keel__loop_dispatching(db->loop)) {
        db->close_later.fn = close_now;
        db->close_later.arg = db;
        keel__loop_after_dispatch(db->loop, &db->close_later);
        return;
    }
    close_now(db);
}

int keel__db_closing(const keel_db *db) { return db->closing; }

keel__workers *keel__db_workers(keel_db *db) {
    if (!db->workers)
        db->workers = keel__workers_new(db->loop, db->max_workers);
    return db->workers;
}

keel_loop *keel_db_loop(const keel_db *db) { return db ? db->loop : NULL; }

size_t keel_db_database_count(const keel_db *db) { return db ? db->npools : 0; }

const char *keel_db_database_name(const keel_db *db, size_t index) {
    /* The pools are in configuration order. */
    return db && index < db->npools ? keel_config_database_name(db->cfg, index) : NULL;
}

const char *keel_db_default_database(const keel_db *db) {
    return db ? keel_config_default_database(db->cfg) : NULL;
}

/*
 * The pool serving a database name (NULL: the default) in *out; KEEL_ERR_UNKNOWN_DATABASE, or
 * KEEL_ERR_CLOSED once keel_db_close was called (even from a callback, before the close runs).
 */
static keel_status find_pool(const keel_db *db, const char *database, keel__pool **out,
                             keel_error *err) {
    *out = NULL;
    if (!database)
        database = keel_config_default_database(db->cfg);
    if (db->closing)
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, database,
                               "the database manager was closed");
    for (size_t i = 0; i < db->npools; i++) {
        if (strcmp(keel__pool_name(db->pools[i]), database) == 0) {
            *out = db->pools[i];
            return KEEL_OK;
        }
    }
    keel__buf names = { 0 };
    for (size_t i = 0; i < db->npools; i++) {
        keel__buf_puts(&names, i ? ", " : "");
        keel__buf_puts(&names, keel__pool_name(db->pools[i]));
    }
    keel__error_set(err, KEEL_ERR_UNKNOWN_DATABASE, NULL, database,
                    "unknown database '%s' (configured: %s)", database,
                    names.data ? names.data : "none");
    keel__buf_free(&names);
    return KEEL_ERR_UNKNOWN_DATABASE;
}

const char *keel_db_database_engine(const keel_db *db, const char *database) {
    keel__pool *p;
    if (!db || find_pool(db, database, &p, NULL) != KEEL_OK)
        return NULL;
    return keel_config_database_engine(db->cfg, keel__pool_name(p));
}

static keel_status check_args(const keel_db *db, const void *cb, keel_error *err) {
    if (!db || !cb)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "db and callback are required");
    return KEEL_OK;
}

keel_status keel_db_warm(keel_db *db, const char *database, keel_acquire_cb cb, void *arg,
                         keel_error *err) {
    keel_status st = check_args(db, (const void *)cb, err);
    if (st != KEEL_OK)
        return st;
    keel__pool *p;
    st = find_pool(db, database, &p, err);
    return st == KEEL_OK ? keel__pool_warm(p, cb, arg, err) : st;
}

keel_status keel_db_acquire(keel_db *db, const char *database, keel_acquire_cb cb, void *arg,
                            keel_error *err) {
    keel_status st = check_args(db, (const void *)cb, err);
    if (st != KEEL_OK)
        return st;
    keel__pool *p;
    st = find_pool(db, database, &p, err);
    return st == KEEL_OK ? keel__pool_acquire(p, cb, arg, err) : st;
}

keel_status keel_db_try_acquire(keel_db *db, const char *database, keel_conn **out,
                                keel_error *err) {
    if (!db || !out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "db and out are required");
    keel__pool *p;
    keel_status st = find_pool(db, database, &p, err);
    return st == KEEL_OK ? keel__pool_try_acquire(p, out, err) : st;
}

int keel_db_acquire_cancel(keel_db *db, keel_acquire_cb cb, void *arg) {
    if (!db || !cb)
        return 0;
    /* Pools already closed (a callback of the close withdrawing) are gone from the list. */
    for (size_t i = 0; i < db->npools; i++)
        if (db->pools[i] && keel__pool_acquire_cancel(db->pools[i], cb, arg))
            return 1;
    return 0;
}

keel_status keel_db_pool_stats(const keel_db *db, const char *database, keel_pool_stats *out,
                               keel_error *err) {
    if (!db || !out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "db and out are required");
    keel__pool *p;
    keel_status st = find_pool(db, database, &p, err);
    if (st != KEEL_OK)
        return st;
    keel__pool_stats(p, out);
    return KEEL_OK;
}

/* State shared by a synchronous call and the callback that ends it. */
typedef struct sync_call {
    int done;
    int timed_out; /* keel_db_acquire_within_sync: the deadline passed first */
    keel_conn *conn;
    keel_result *res;
    keel_error err;
} sync_call;

static void sync_acquired(keel_conn *conn, const keel_error *err, void *arg) {
    sync_call *s = arg;
    s->conn = conn;
    if (err)
        s->err = *err;
    s->done = 1;
}

static void sync_queried(keel_result *res, const keel_error *err, void *arg) {
    sync_call *s = arg;
    s->res = res;
    if (err)
        s->err = *err;
    s->done = 1;
}

static keel_status sync_check(keel_loop *loop, keel_error *err) {
    if (!keel_loop_is_blocking(loop))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "synchronous calls need a db opened on a blocking loop");
    /* Running the loop again from inside one of its callbacks would deliver other callbacks
     * while the one in progress, and keel's frames under it, are half way through. */
    if (keel__loop_dispatching(loop))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "a synchronous call cannot be made from inside a callback of its "
                               "loop; use the asynchronous call");
    return KEEL_OK;
}

/*
 * Spins the blocking loop until the call completes, then hands over its outcome. The call is an
 * acquire on db, or an operation running on conn. s is in the caller's frame: when the loop
 * fails first, the call is withdrawn before returning (the request leaves the pool's queue; the
 * operation is cancelled and its callback dropped), so that nothing writes into s afterwards.
 */
static keel_status sync_wait(keel_loop *loop, sync_call *s, keel_db *db, keel_conn *conn,
                             keel_error *err) {
    keel_status st = keel_loop_run(loop, &s->done);
    if (st != KEEL_OK && !s->done) {
        if (conn)
            keel__conn_forget(conn);
        else
            keel_db_acquire_cancel(db, sync_acquired, s);
        return keel__error_set(err, st, NULL, NULL, "the blocking loop failed: %s",
                               keel_strerror(st));
    }
    if (s->err.code != KEEL_OK) {
        keel__error_copy(err, &s->err);
        return s->err.code;
    }
    return KEEL_OK;
}

/* The deadline of keel_db_acquire_within_sync passed: ends the wait unless the lease came. */
static void sync_wait_over(void *arg) {
    sync_call *s = arg;
    if (!s->done) {
        s->timed_out = 1;
        s->done = 1;
    }
}

keel_status keel_db_acquire_within_sync(keel_db *db, const char *database, double seconds,
                                        keel_conn **out, keel_error *err) {
    if (!db || !out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "db and out are required");
    *out = NULL;
    if (!(seconds > 0) || seconds > 1e9)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_db_acquire_within_sync: seconds must be > 0 and at most 1e9");
    keel_status st = sync_check(db->loop, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    keel_timer *t = keel__timer_new(db->loop, sync_wait_over, &s);
    if (!t)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory");
    if (keel__timer_arm(t, keel_now_ms() + (int64_t)(seconds * 1000.0 + 0.999)) != 0) {
        keel__timer_free(t);
        return keel__error_set(err, KEEL_ERR_INTERNAL, NULL, database,
                               "the event loop refused the timer of a connection wait");
    }
    st = keel_db_acquire(db, database, sync_acquired, &s, err);
    if (st != KEEL_OK) {
        keel__timer_free(t);
        return st;
    }
    st = keel_loop_run(db->loop, &s.done);
    keel__timer_free(t);
    if (st != KEEL_OK && !s.done) {
        keel_db_acquire_cancel(db, sync_acquired, &s);
        return keel__error_set(err, st, NULL, NULL, "the blocking loop failed: %s",
                               keel_strerror(st));
    }
    if (s.timed_out && !s.conn && s.err.code == KEEL_OK) {
        /* Still queued: it leaves the queue, and its callback will never run. (A lease or an
         * error delivered in the same loop turn as the deadline is taken as it is.) */
        keel_db_acquire_cancel(db, sync_acquired, &s);
        const char *name = database ? database : keel_db_default_database(db);
        keel__error_set(err, KEEL_ERR_TIMEOUT, keel_db_database_engine(db, name), name,
                        "no connection to database '%s' became free within %g s", name, seconds);
        keel__error_set_sqlstate(err, "57014");
        return KEEL_ERR_TIMEOUT;
    }
    if (s.err.code != KEEL_OK) {
        keel__error_copy(err, &s.err);
        return s.err.code;
    }
    *out = s.conn;
    return KEEL_OK;
}

keel_status keel_db_acquire_sync(keel_db *db, const char *database, keel_conn **out,
                                 keel_error *err) {
    if (!db || !out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "db and out are required");
    keel_status st = sync_check(db->loop, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_db_acquire(db, database, sync_acquired, &s, err);
    if (st != KEEL_OK)
        return st;
    st = sync_wait(db->loop, &s, db, NULL, err);
    *out = st == KEEL_OK ? s.conn : NULL;
    return st;
}

/*
 * The checks every synchronous call on a leased connection makes before it starts: *out (when
 * not NULL) is cleared first, so that it is NULL on every error; then KEEL_ERR_CLOSED for a
 * connection released or closed with its db, and sync_check's errors for its loop.
 */
static keel_status sync_conn_begin(keel_conn *conn, keel_result **out, keel_error *err) {
    if (out)
        *out = NULL;
    if (!conn || !conn->pool)
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, NULL, "the connection is closed");
    return sync_check(conn->loop, err);
}

static keel_status finish_query(keel_conn *conn, sync_call *s, keel_result **out, keel_error *err) {
    keel_status st = sync_wait(conn->loop, s, NULL, conn, err);
    if (out)
        *out = s->res;
    else
        keel_result_free(s->res);
    return st;
}

keel_status keel_conn_query_sync(keel_conn *conn, const char *sql, const keel_value *params,
                                 size_t nparams, keel_result **out, keel_error *err) {
    keel_status st = sync_conn_begin(conn, out, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_query(conn, sql, params, nparams, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, out, err);
}

keel_status keel_conn_query_many_sync(keel_conn *conn, const char *sql, const keel_value *params,
                                      size_t nrows, size_t nparams, keel_result **out,
                                      keel_error *err) {
    keel_status st = sync_conn_begin(conn, out, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_query_many(conn, sql, params, nrows, nparams, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, out, err);
}

keel_status keel_conn_prepare_sync(keel_conn *conn, const char *sql, keel_result **out,
                                   keel_error *err) {
    keel_status st = sync_conn_begin(conn, out, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_prepare(conn, sql, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, out, err);
}

keel_status keel_conn_copy_in_sync(keel_conn *conn, const char *schema, const char *table,
                                   const char *const *columns, size_t ncols, const keel_value *rows,
                                   size_t nrows, int64_t *loaded, keel_error *err) {
    if (loaded)
        *loaded = 0;
    keel_status st = sync_conn_begin(conn, NULL, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    keel_result *res = NULL;
    st = keel_conn_copy_in(conn, schema, table, columns, ncols, rows, nrows, sync_queried, &s, err);
    if (st == KEEL_OK)
        st = finish_query(conn, &s, &res, err);
    if (st == KEEL_OK && loaded)
        *loaded = keel_result_affected(res) < 0 ? 0 : keel_result_affected(res);
    keel_result_free(res);
    return st;
}

keel_status keel_conn_transaction_sync(keel_conn *conn, keel_txn_op op, unsigned depth,
                                       keel_error *err) {
    keel_status st = sync_conn_begin(conn, NULL, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_transaction(conn, op, depth, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, NULL, err);
}

keel_status keel_conn_command_sync(keel_conn *conn, const char *dbname, const void *cmd, size_t len,
                                   keel_result **out, keel_error *err) {
    keel_status st = sync_conn_begin(conn, out, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_command(conn, dbname, cmd, len, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, out, err);
}

keel_status keel_conn_ping_sync(keel_conn *conn, keel_error *err) {
    keel_status st = sync_conn_begin(conn, NULL, err);
    if (st != KEEL_OK)
        return st;
    sync_call s = { 0 };
    st = keel_conn_ping(conn, sync_queried, &s, err);
    return st != KEEL_OK ? st : finish_query(conn, &s, NULL, err);
}

keel_status keel_db_query_sync(keel_db *db, const char *database, const char *sql,
                               const keel_value *params, size_t nparams, keel_result **out,
                               keel_error *err) {
    if (out)
        *out = NULL;
    keel_conn *conn = NULL;
    keel_status st = keel_db_acquire_sync(db, database, &conn, err);
    if (st != KEEL_OK)
        return st;
    st = keel_conn_query_sync(conn, sql, params, nparams, out, err);
    keel_conn_release(conn);
    return st;
}
