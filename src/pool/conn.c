/* src/pool/conn.c - operations on a leased connection: statements, batches, transactions, cancel. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error_int.h"
#include "pool/pool.h"

static const char *conn_name(const keel_conn *c) { return c->config ? c->config->name : ""; }

/* The checks every operation makes before it starts. */
static keel_status check_ready(keel_conn *c, keel_error *err) {
    if (!c->pool || c->state != KEEL__CONN_LEASED || c->release_pending ||
        keel__pool_closing(c->pool))
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, conn_name(c),
                               "the connection was released or its database closed");
    if (c->busy)
        return keel__error_set(err, KEEL_ERR_BUSY, NULL, conn_name(c),
                               "another operation is in progress on this connection");
    if (c->abandoned)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, c->engine->name, conn_name(c),
                               "the connection to database '%s' was closed: the server did not "
                               "answer the cancel of an operation",
                               conn_name(c));
    if (c->broken)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, c->engine->name, conn_name(c),
                               "the connection to database '%s' was lost", conn_name(c));
    return KEEL_OK;
}

/* The user's operation starts on c: cb(…, arg) is its completion, rows_cb (or NULL) where a
 * streamed statement's rows go. Fails only when its deadline cannot be armed. */
static keel_status op_begin(keel_conn *c, keel_rows_cb rows_cb, keel_query_cb cb, void *arg,
                            keel_error *err) {
    keel_status st = keel__conn_deadline_start(c, err);
    if (st != KEEL_OK)
        return st;
    c->busy = 1;
    c->cb = cb;
    c->rows_cb = rows_cb;
    c->cb_arg = arg;
    return KEEL_OK;
}

/* What the engine's start function returned: when it refused, it reports nothing and c is free
 * for another operation. Returns st. */
static keel_status op_started(keel_conn *c, keel_status st) {
    if (st != KEEL_OK) {
        keel__conn_deadline_stop(c);
        c->busy = 0;
        c->cb = NULL;
        c->rows_cb = NULL;
        c->cb_arg = NULL;
    }
    return st;
}

/* Rewrites sql into c->sql for the engine and checks the placeholder count (any count when
 * nparams is SIZE_MAX; *used, when not NULL, receives it). */
static keel_status prepare_sql(keel_conn *c, const char *sql, size_t nparams, size_t *used,
                               keel_error *err) {
    size_t max_index = 0, nmap = 0, *map = NULL;
    keel_status st = keel__placeholders_rewrite(sql, c->engine->placeholder_style, &c->sql,
                                                &max_index, &map, &nmap, err);
    if (st != KEEL_OK) {
        if (err) /* the lexer does not know the database: name it in the error */
            snprintf(err->database, sizeof err->database, "%s", conn_name(c));
        return st;
    }
    free(c->map);
    c->map = map;
    c->nmap = nmap;
    if (used)
        *used = max_index;
    if (nparams != SIZE_MAX && max_index != nparams) {
        if (max_index == 0)
            return keel__error_set(err, KEEL_ERR_PARAMETERS, NULL, conn_name(c),
                                   "the statement has no placeholders but %zu parameter%s given",
                                   nparams, nparams == 1 ? " was" : "s were");
        return keel__error_set(err, KEEL_ERR_PARAMETERS, NULL, conn_name(c),
                               "the statement uses $1…$%zu but %zu parameter%s given", max_index,
                               nparams, nparams == 1 ? " was" : "s were");
    }
    return KEEL_OK;
}

/*
 * True when sql's first keyword is LISTEN (after spaces and comments): a connection that ran one
 * unlistens when released, as one with a notify handler does, whoever ran it.
 */
static int starts_with_listen(const char *s) {
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f')
            s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            if (!end)
                return 0;
            s = end + 2;
        } else {
            break;
        }
    }
    if (strncasecmp(s, "listen", 6) != 0)
        return 0;
    char next = s[6];
    return !(next == '_' || next == '$' || (next >= '0' && next <= '9') ||
             ((next | 0x20) >= 'a' && (next | 0x20) <= 'z') || (unsigned char)next >= 0x80);
}

static keel_status start_statement(keel_conn *c, const char *sql, const keel_value *params,
                                   size_t nrows, size_t nparams, int many, keel_rows_cb rows_cb,
                                   keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !sql || !cb || (nparams && !params))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, sql and callback are required");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if (!c->engine->query)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' uses the %s engine, which takes document "
                               "commands, not SQL: use collection(…)",
                               conn_name(c), c->engine->name);
    if (many && nrows == 0)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "a batch needs at least one row of parameters");
    st = prepare_sql(c, sql, nparams, NULL, err);
    if (st != KEEL_OK)
        return st;
    keel__stmt stmt = {
        .sql = c->sql.data,
        .sql_len = c->sql.len,
        .map = c->map,
        .nmap = c->nmap,
        .params = params,
        .nparams = nparams,
        .nrows = nrows,
        .many = many,
    };
    if ((st = op_begin(c, rows_cb, cb, arg, err)) != KEEL_OK)
        return st;
    if (c->engine->notifications && starts_with_listen(sql))
        c->listened = 1;
    return op_started(c, c->engine->query(c, &stmt, err));
}

keel_status keel_conn_query(keel_conn *c, const char *sql, const keel_value *params, size_t nparams,
                            keel_query_cb cb, void *arg, keel_error *err) {
    return start_statement(c, sql, params, 1, nparams, 0, NULL, cb, arg, err);
}

keel_status keel_conn_query_rows(keel_conn *c, const char *sql, const keel_value *params,
                                 size_t nparams, keel_rows_cb on_rows, keel_query_cb cb, void *arg,
                                 keel_error *err) {
    if (!on_rows)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "a rows callback is required");
    return start_statement(c, sql, params, 1, nparams, 0, on_rows, cb, arg, err);
}

keel_status keel_conn_query_many(keel_conn *c, const char *sql, const keel_value *params,
                                 size_t nrows, size_t nparams, keel_query_cb cb, void *arg,
                                 keel_error *err) {
    return start_statement(c, sql, params, nrows, nparams, 1, NULL, cb, arg, err);
}

keel_status keel_conn_prepare(keel_conn *c, const char *sql, keel_query_cb cb, void *arg,
                              keel_error *err) {
    if (!c || !sql || !cb)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, sql and callback are required");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if (!c->engine->describe)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' uses the %s engine, which takes document "
                               "commands, not SQL statements to prepare",
                               conn_name(c), c->engine->name);
    size_t nparams = 0;
    if ((st = prepare_sql(c, sql, SIZE_MAX, &nparams, err)) != KEEL_OK)
        return st;
    keel__stmt stmt = {
        .sql = c->sql.data,
        .sql_len = c->sql.len,
        .map = c->map,
        .nmap = c->nmap,
        .nparams = nparams,
    };
    if ((st = op_begin(c, NULL, cb, arg, err)) != KEEL_OK)
        return st;
    return op_started(c, c->engine->describe(c, &stmt, err));
}

keel_status keel_conn_copy_in(keel_conn *c, const char *schema, const char *table,
                              const char *const *columns, size_t ncols, const keel_value *rows,
                              size_t nrows, keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !table || !cb || (nrows && !rows))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, table, rows and callback are required");
    if (!*table || (schema && !*schema))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "the %s name is empty", *table ? "schema" : "table");
    if (columns && ncols == 0)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "a column list must name at least one column");
    for (size_t i = 0; columns && i < ncols; i++)
        if (!columns[i] || !*columns[i])
            return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                                   "column %zu of the column list has no name", i);
    if (nrows && ncols == 0)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "rows to load need at least one value each");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    keel__copy copy = { schema, table, columns, ncols, rows, nrows };
    if (!c->engine->copy_in)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' uses the %s engine, which has no tables to "
                               "load rows into: use collection(…).insert_many",
                               conn_name(c), c->engine->name);
    if ((st = op_begin(c, NULL, cb, arg, err)) != KEEL_OK)
        return st;
    return op_started(c, c->engine->copy_in(c, &copy, err));
}

keel_status keel_conn_command(keel_conn *c, const char *dbname, const void *cmd, size_t len,
                              keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !cmd || !cb || len < 5)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, a BSON command and callback are required");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if (!c->engine->command)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' is a %s database: document commands need a "
                               "document engine such as MongoDB",
                               conn_name(c), c->engine->name);
    if ((st = op_begin(c, NULL, cb, arg, err)) != KEEL_OK)
        return st;
    return op_started(c, c->engine->command(c, dbname, cmd, len, err));
}

keel_status keel_conn_ping(keel_conn *c, keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !cb)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection and callback are required");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if ((st = op_begin(c, NULL, cb, arg, err)) != KEEL_OK)
        return st;
    return op_started(c, c->engine->ping(c, err));
}

keel_status keel_conn_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_query_cb cb,
                                  void *arg, keel_error *err) {
    if (!c || !cb || (unsigned)op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, a valid transaction operation and callback are "
                               "required");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if ((st = op_begin(c, NULL, cb, arg, err)) != KEEL_OK)
        return st;
    return op_started(c, c->engine->transaction(c, op, depth, err));
}

keel_status keel_conn_set_timeout(keel_conn *c, double seconds, keel_error *err) {
    if (!c || !(seconds == KEEL_TIMEOUT_CONFIGURED || (seconds >= 0 && seconds <= 1e9)))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               c ? "a timeout is a number of seconds from 0 (none) to 1e9, or "
                                   "KEEL_TIMEOUT_CONFIGURED (the database's command_timeout)"
                                 : "a connection is required");
    if (!c->pool || c->state != KEEL__CONN_LEASED || c->release_pending)
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, conn_name(c),
                               "the connection was released or its database closed");
    c->timeout = seconds;
    return KEEL_OK;
}

void keel_conn_pause(keel_conn *c) {
    if (c && c->pool && c->busy && c->rows_cb && c->state == KEEL__CONN_LEASED &&
        !c->cancel_requested)
        c->paused = 1;
}

void keel_conn_resume(keel_conn *c) {
    if (c && c->pool && c->busy && c->state == KEEL__CONN_LEASED)
        keel__conn_unpause(c);
}

void keel__conn_forget(keel_conn *c) {
    c->cb = NULL;
    c->rows_cb = NULL;
    c->cb_arg = NULL;
    keel_conn_cancel(c);
}

void keel_conn_cancel(keel_conn *c) {
    if (!c || !c->pool || !c->busy || c->state != KEEL__CONN_LEASED)
        return;
    keel__conn_request_cancel(c);
}

keel_status keel_conn_set_notify_handler(keel_conn *c, keel_notify_cb cb, void *arg,
                                         keel_error *err) {
    if (!c)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, "",
                               "a connection is required");
    if (!c->pool || c->state != KEEL__CONN_LEASED || c->release_pending)
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, conn_name(c),
                               "the connection was released or its database closed");
    if (!c->engine->notifications)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' uses the %s engine, which has no notifications: "
                               "LISTEN/NOTIFY is PostgreSQL's",
                               conn_name(c), c->engine->name);
    c->notify_cb = cb;
    c->notify_arg = cb ? arg : NULL;
    if (cb)
        c->listened = 1;
    return KEEL_OK;
}

keel_txn_status keel_conn_txn_status(const keel_conn *c) {
    if (!c || !c->pool || c->busy || c->broken)
        return KEEL_TXN_UNKNOWN;
    return c->engine->txn_status(c);
}

const char *keel_conn_database(const keel_conn *c) { return c ? conn_name(c) : ""; }

const char *keel_conn_engine(const keel_conn *c) { return c ? c->engine->name : ""; }

void keel_conn_release(keel_conn *c) {
    if (c)
        keel__pool_release(c);
}

/* ---- server-side cursors ---- */

/* The cursor's open or fetch ended: cur records it, then the caller's callback runs. */
static void cursor_done(keel_result *res, const keel_error *err, void *arg) {
    keel_cursor *cur = arg;
    keel_query_cb cb = cur->cb;
    void *cb_arg = cur->arg;
    int failed = err != NULL && err->code != KEEL_OK;
    cur->running = 0;
    cur->cb = NULL;
    cur->rows_cb = NULL;
    cur->arg = NULL;
    if (cur->opening) {
        cur->opening = 0;
        cur->open = !failed;
    }
    if (cur->dropped)
        keel_cursor_close(cur);
    cb(res, err, cb_arg);
}

/* A fetch's rows, handed on to the caller's rows callback. */
static void cursor_rows(const keel_result *rows, void *arg) {
    keel_cursor *cur = arg;
    cur->rows_cb(rows, cur->arg);
}

/* Takes cur off its connection's list. */
static void cursor_unlink(keel_cursor *cur) {
    keel_conn *c = cur->conn;
    if (!c)
        return;
    if (cur->prev)
        cur->prev->next = cur->next;
    else
        c->cursors = cur->next;
    if (cur->next)
        cur->next->prev = cur->prev;
    cur->prev = cur->next = NULL;
}

keel_status keel_conn_cursor_open(keel_conn *c, const char *sql, const keel_value *params,
                                  size_t nparams, size_t prefetch, keel_cursor **out,
                                  keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !sql || !cb || !out || (nparams && !params))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, sql, out and callback are required");
    if (prefetch == 0)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "a cursor fetches at least 1 row at a time (prefetch is 0)");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if (!c->engine->cursor_open)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, c->engine->name, conn_name(c),
                               "database '%s' uses the %s engine, which has no server-side "
                               "cursors in keel: stream the rows with keel_conn_query_rows%s",
                               conn_name(c), c->engine->name,
                               strcmp(c->engine->name, "postgresql") == 0
                                   ? ", or run DECLARE … CURSOR and FETCH inside a transaction"
                                   : "");
    if ((st = prepare_sql(c, sql, nparams, NULL, err)) != KEEL_OK)
        return st;
    keel_cursor *cur = calloc(1, sizeof *cur);
    if (!cur)
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, conn_name(c), "out of memory");
    keel__stmt stmt = {
        .sql = c->sql.data,
        .sql_len = c->sql.len,
        .map = c->map,
        .nmap = c->nmap,
        .params = params,
        .nparams = nparams,
        .nrows = 1,
    };
    if ((st = op_begin(c, NULL, cursor_done, cur, err)) != KEEL_OK) {
        free(cur);
        return st;
    }
    cur->conn = c;
    cur->cb = cb;
    cur->arg = arg;
    cur->opening = 1;
    cur->running = 1;
    cur->next = c->cursors;
    if (c->cursors)
        c->cursors->prev = cur;
    c->cursors = cur;
    st = op_started(c, c->engine->cursor_open(c, cur, &stmt, prefetch, err));
    if (st != KEEL_OK) {
        /* The engine reported nothing, and kept no statement when it refused. */
        cur->running = 0;
        keel_cursor_close(cur);
        return st;
    }
    *out = cur;
    return KEEL_OK;
}

keel_status keel_cursor_fetch(keel_conn *c, keel_cursor *cur, size_t n, keel_rows_cb on_rows,
                              keel_query_cb cb, void *arg, keel_error *err) {
    if (!c || !cur || !cb)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, c ? conn_name(c) : "",
                               "connection, cursor and callback are required");
    if (!cur->conn)
        return keel__error_set(err, KEEL_ERR_CLOSED, NULL, conn_name(c),
                               "the cursor's connection was closed");
    if (cur->conn != c)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "the cursor was opened on another connection");
    if (!cur->open || cur->dropped)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "the cursor is not open: its open failed or has not completed");
    if (n == 0)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, conn_name(c),
                               "a fetch reads at least 1 row (n is 0)");
    keel_status st = check_ready(c, err);
    if (st != KEEL_OK)
        return st;
    if ((st = op_begin(c, on_rows ? cursor_rows : NULL, cursor_done, cur, err)) != KEEL_OK)
        return st;
    cur->cb = cb;
    cur->rows_cb = on_rows;
    cur->arg = arg;
    cur->running = 1;
    st = op_started(c, c->engine->cursor_fetch(c, cur, n, err));
    if (st != KEEL_OK) {
        cur->running = 0;
        cur->cb = NULL;
        cur->rows_cb = NULL;
        cur->arg = NULL;
    }
    return st;
}

void keel_cursor_close(keel_cursor *cur) {
    if (!cur)
        return;
    if (cur->running) {
        cur->dropped = 1;
        return;
    }
    keel_conn *c = cur->conn;
    cursor_unlink(cur);
    if (c && cur->impl)
        c->engine->cursor_close(c, cur);
    free(cur);
}
