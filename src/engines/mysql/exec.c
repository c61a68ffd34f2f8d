/* src/engines/mysql/exec.c - running MySQL statements (text and prepared) and reporting results. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "core/value_int.h"
#include "engines/mysql/bulk.h"
#include "engines/mysql/codec.h"
#include "engines/mysql/connect.h"
#include "engines/mysql/exec.h"
#include "engines/mysql/stmtcache.h"

static int my_text_done(my_impl *p);
static int my_text_more(my_impl *p);
static int my_stmt_done(my_impl *p);
static int my_stmt_more(my_impl *p);
static void my_remeta_end(my_impl *p);

/* ---------------------------------------------------------------------------------------- */
/* The call driver                                                                          */

static int my_call_start(my_impl *p) {
    if (p->set.ssl_mode != SSL_DISABLED)
        keel__my_tls_errors_clear();
    switch (p->call) {
    case C_CONNECT: {
        const char *host = p->set.unix_socket ? MY_DEFAULT_HOST : p->set.addr;
        return mysql_real_connect_start(
            &p->r_mysql, p->m, host, p->set.user, p->set.password, p->database, p->set.port,
            p->set.unix_socket, CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_FOUND_ROWS);
    }
    case C_QUERY:
        return mysql_real_query_start(&p->r_int, p->m, p->qsql, p->qlen);
    case C_NEXT:
        return mysql_next_result_start(&p->r_int, p->m);
    case C_PREPARE:
        return mysql_stmt_prepare_start(&p->r_int, p->cur, p->ssql, (unsigned long)p->slen);
    case C_EXECUTE:
        return mysql_stmt_execute_start(&p->r_int, p->cur);
    case C_STMT_NEXT:
        return mysql_stmt_next_result_start(&p->r_int, p->cur);
    case C_STMT_CLOSE:
        return mysql_stmt_close_start(&p->r_bool, p->closing);
    case C_FETCH:
        return mysql_fetch_row_start(&p->r_row, p->dsrc);
    case C_STMT_FETCH:
        return mysql_stmt_fetch_start(&p->r_int, p->cur);
    case C_NONE:
        break;
    }
    return 0;
}

static int my_call_cont(my_impl *p, int ready) {
    if (p->set.ssl_mode != SSL_DISABLED)
        keel__my_tls_errors_clear();
    switch (p->call) {
    case C_CONNECT:
        return mysql_real_connect_cont(&p->r_mysql, p->m, ready);
    case C_QUERY:
        return mysql_real_query_cont(&p->r_int, p->m, ready);
    case C_NEXT:
        return mysql_next_result_cont(&p->r_int, p->m, ready);
    case C_PREPARE:
        return mysql_stmt_prepare_cont(&p->r_int, p->cur, ready);
    case C_EXECUTE:
        return mysql_stmt_execute_cont(&p->r_int, p->cur, ready);
    case C_STMT_NEXT:
        return mysql_stmt_next_result_cont(&p->r_int, p->cur, ready);
    case C_STMT_CLOSE:
        return mysql_stmt_close_cont(&p->r_bool, p->closing, ready);
    case C_FETCH:
        return mysql_fetch_row_cont(&p->r_row, p->dsrc, ready);
    case C_STMT_FETCH:
        return mysql_stmt_fetch_cont(&p->r_int, p->cur, ready);
    case C_NONE:
        break;
    }
    return 0;
}

/*
 * Waits for what libmariadb asked: the socket for reading or writing (MYSQL_WAIT_EXCEPT is
 * only used on Windows; a read wakes us for errors too), and a timer for MYSQL_WAIT_TIMEOUT.
 * Returns 0, or -1 when the loop refused.
 */
static int my_wait(my_impl *p, int status) {
    int fd = (int)mysql_get_socket(p->m);
    int ev = 0;
    if (status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT))
        ev |= KEEL_READ;
    if (status & MYSQL_WAIT_WRITE)
        ev |= KEEL_WRITE;
    if (ev && keel__my_watch_socket(p, fd) != 0)
        return -1;
    if (p->watch && keel__watch_set(p->watch, ev) != 0)
        return -1;
    int64_t at = -1;
    /* A handle connected by my_wconn keeps the read and write timeouts that bounded its
     * blocking handshake, and libmariadb would apply them to every wait for the socket: a
     * statement running longer would fail. Such waits are left unbounded, as on every other
     * handle (keel's own deadlines bound operations). */
    if ((status & MYSQL_WAIT_TIMEOUT) && !(p->no_io_timeouts && ev))
        at = keel_now_ms() + (int64_t)mysql_get_timeout_value_ms(p->m);
    return keel__timer_arm(p->libtimer, at) == 0 ? 0 : -1;
}

static int my_after(my_impl *p, my_call done);

void keel__my_run(my_impl *p, int cont, int ready) {
    for (;;) {
        int w = cont ? my_call_cont(p, ready) : my_call_start(p);
        cont = 0;
        if (w) {
            if (my_wait(p, w) == 0)
                return;
            /* libmariadb is suspended inside the call and nothing will wake it: give up.
             * p->call stays set, so that close knows the socket is mid-operation. */
            p->c->broken = 1;
            if (p->phase == MY_CONNECTING) {
                keel__my_connect_error(p, KEEL_ERR_INTERNAL,
                                       "the event loop refused to watch the connection");
                return;
            }
            keel__my_fail(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
            keel__my_finish(p);
            return;
        }
        keel__timer_arm(p->libtimer, -1);
        my_call done = p->call;
        p->call = C_NONE;
        if (my_after(p, done) != 0)
            return;
    }
}

void keel__my_on_libtimer(void *arg) {
    my_impl *p = arg;
    if (p->call != C_NONE && p->phase != MY_DEAD)
        keel__my_run(p, 1, MYSQL_WAIT_TIMEOUT);
}

/*
 * Keeps the result of one statement of the operation: of several, the last one that returned
 * columns wins, else the last command (as the PostgreSQL engine does).
 */
static void my_keep(my_impl *p, keel_result *res, int rows) {
    if (!rows && p->keep_rows) {
        keel_result_free(res);
        return;
    }
    keel_result_free(p->keep);
    p->keep = res;
    p->keep_rows = rows;
}

static void my_keep_command(my_impl *p, my_ulonglong affected) {
    if (p->keep_rows || p->op == OP_MANY) /* a batch reports its own total */
        return;
    keel_result *res = keel__result_new(0);
    if (!res) {
        keel__my_nomem(p, &p->err);
        p->failed = 1;
        return;
    }
    keel__result_set_affected(res, affected == (my_ulonglong)-1 ? -1 : (int64_t)affected);
    my_keep(p, res, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Reporting                                                                                */

/* Rows read between two looks at the turn's budget. */
#define MY_BUDGET_EVERY 64
/* A statement streamed to keel__conn_rows hands its rows over every this many rows. */
#define MY_STREAM_BATCH_ROWS 256

/* Drops the rows decoded so far. */
static void my_rows_drop(my_impl *p) {
    keel_result_free(p->dres);
    p->dres = NULL;
}

/*
 * Fetches the next row (fetch: C_FETCH or C_STMT_FETCH) now, or, once the turn's budget is
 * spent, from a later turn (keel__my_on_slice). Returns as my_after does.
 */
static int my_next_row(my_impl *p, my_call fetch) {
    if (p->stream && p->c->paused) {
        /* Paused (keel_conn_pause): the rest waits on the server's side of the socket until
         * keel__my_unpause. */
        p->dnext = fetch;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return 1;
    }
    if (++p->dcount % MY_BUDGET_EVERY == 0 && keel__turn_spent(p->c->loop) &&
        keel__defer_schedule(p->slice) == 0) {
        /* Nothing is read meanwhile: the rest waits on the server's side of the socket. */
        p->dnext = fetch;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return 1;
    }
    p->call = fetch;
    return 0;
}

void keel__my_unpause(keel_conn *c) {
    my_impl *p = c->impl;
    if (p && p->stream && p->dnext != C_NONE)
        (void)keel__defer_schedule(p->slice);
}

void keel__my_on_slice(void *arg) {
    my_impl *p = arg;
    if (p->dnext == C_NONE)
        return;
    p->call = p->dnext;
    p->dnext = C_NONE;
    keel__my_run(p, 0, 0);
}

/*
 * Decodes the row just read into dres, unless the operation was cancelled meanwhile: its rows
 * are still read to the end (they must leave the socket), but dropped.
 */
static void my_take_row(my_impl *p) {
    if (!p->dres)
        return;
    keel_error e;
    if (p->cancel_wanted) {
        my_rows_drop(p);
        keel__my_fail(p, KEEL_ERR_CANCELLED, "cancelled while its rows were read");
        return;
    }
    if (p->dsrc ? keel__my_row_text(p, p->r_row) != 0 : keel__my_row_stmt(p, &e) != KEEL_OK) {
        if (p->dsrc)
            keel__my_nomem(p, &e);
        my_rows_drop(p);
        if (!p->failed) {
            p->err = e;
            p->failed = 1;
        }
        return;
    }
    if (p->stream && keel_result_nrows(p->dres) >= MY_STREAM_BATCH_ROWS) {
        keel__conn_rows(p->c, p->dres);
        keel__result_clear_rows(p->dres);
    }
}

void keel__my_rows_abandon(my_impl *p) {
    my_rows_drop(p);
    p->dnext = C_NONE;
    if (p->slice)
        keel__defer_cancel(p->slice);
    if (p->dsrc) {
        /* mysql_free_result would read the rest of the rows first, blocking: the rows are left
         * unread and the connection, mid-result, is given up. */
        if (p->m)
            p->m->status = MYSQL_STATUS_READY;
        mysql_free_result(p->dsrc);
        p->dsrc = NULL;
        p->c->broken = 1;
    }
    if (p->dstmt) {
        p->dstmt = 0;
        p->c->broken = 1;
    }
}

void keel__my_op_clear(my_impl *p) {
    keel__my_rows_abandon(p);
    my_remeta_end(p);
    if (p->cur && p->cur_new) {
        /* Never prepared on the server: closing it sends nothing. */
        mysql_stmt_close(p->cur);
    } else if (p->cur && p->cur_uncached && keel__my_evict_push(p, p->cur) != 0) {
        mysql_stmt_close(p->cur); /* out of memory: a blocking close of a few bytes */
    }
    p->cur = NULL;
    p->cur_new = p->cur_uncached = 0;
    p->ccur = NULL;
    p->cleft = 0;
    keel__values_free(p->pcopy);
    p->pcopy = NULL;
    p->prow = NULL;
    keel__arena_free(&p->barena);
    keel_result_free(p->keep);
    p->keep = NULL;
    p->keep_rows = 0;
    p->op = OP_NONE;
    p->cleanup = 0;
    p->nsplit = 0;
    p->map = NULL;
    p->nmap = 0;
}

void keel__my_op_report(my_impl *p) {
    if (keel__cancel_hold(&p->cancel)) {
        p->report = R_HELD;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return;
    }
    keel_conn *c = p->c;
    keel_result *res = NULL;
    keel_error e;
    int failed = p->failed;
    p->report = R_NONE;
    if (!failed) {
        if (p->op == OP_MANY) {
            /* The rows the batch's statements returned, if any. */
            res = p->keep ? p->keep : keel__result_new(0);
            p->keep = NULL;
            if (res)
                keel__result_set_affected(res, p->baffected);
        } else {
            res = p->keep;
            p->keep = NULL;
            if (!res && (res = keel__result_new(0)) != NULL)
                keel__result_set_affected(res, -1);
        }
        if (!res) {
            keel__my_nomem(p, &p->err);
            failed = 1;
        }
    }
    if (failed)
        e = p->err;
    keel__my_op_clear(p);
    if (c->broken) {
        p->phase = MY_DEAD;
        if (p->watch)
            keel__watch_set(p->watch, 0);
    } else {
        p->phase = MY_IDLE;
        if (keel__watch_set(p->watch, KEEL_READ) != 0) {
            c->broken = 1;
            p->phase = MY_DEAD;
        }
    }
    keel__conn_complete(c, failed ? NULL : res, failed ? &e : NULL);
}

int keel__my_finish(my_impl *p) {
    if (p->in_start) {
        p->report = R_OP;
        if (keel__defer_schedule(p->kick) != 0) {
            /* Without the timer nothing could report; the connection is given up and the
             * start function fails instead. */
            p->report = R_NONE;
            p->c->broken = 1;
            p->phase = MY_DEAD;
        }
        return 1;
    }
    keel__my_op_report(p);
    return 1;
}

void keel__my_on_kick(void *arg) {
    my_impl *p = arg;
    my_report r = p->report;
    p->report = R_NONE;
    if (r == R_OP) {
        keel__my_op_report(p);
    } else if (r == R_CONNECT) {
        keel_error e = p->err;
        int failed = p->failed;
        p->failed = 0;
        keel__conn_connected(p->c, failed ? &e : NULL);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Text protocol                                                                            */

int keel__my_text_start(my_impl *p, const char *sql, size_t len) {
    p->qsql = sql;
    p->qlen = len;
    p->call = C_QUERY;
    return 0;
}

static int my_text_more(my_impl *p) {
    if (mysql_more_results(p->m)) {
        p->call = C_NEXT;
        return 0;
    }
    return my_text_done(p);
}

/* A statement of the text protocol produced a result (rows to read, or a command status). */
static int my_text_result(my_impl *p) {
    if (mysql_field_count(p->m) == 0) {
        my_keep_command(p, mysql_affected_rows(p->m));
        return my_text_more(p);
    }
    MYSQL_RES *r = mysql_use_result(p->m);
    if (!r) {
        keel__my_fail_mysql(p);
        return my_text_done(p);
    }
    p->dsrc = r;
    p->dcount = 0;
    keel_error e;
    if (keel__my_rows_begin_text(p, r, &e) != KEEL_OK && !p->failed) {
        p->err = e; /* the rows are read all the same, and dropped */
        p->failed = 1;
    }
    p->call = C_FETCH;
    return 0;
}

/* A row of a text result was read, or its end (or an error) reached. */
static int my_text_row(my_impl *p) {
    if (p->r_row) {
        my_take_row(p);
        return my_next_row(p, C_FETCH);
    }
    MYSQL_RES *r = p->dsrc;
    p->dsrc = NULL;
    int failed = mysql_errno(p->m) != 0;
    if (failed) {
        keel__my_fail_mysql(p);
        my_rows_drop(p);
    }
    mysql_free_result(r); /* every row is read: it reads nothing more */
    if (p->dres) {
        my_keep(p, p->dres, 1);
        p->dres = NULL;
    }
    return failed ? my_text_done(p) : my_text_more(p);
}

static int my_text_failed(my_impl *p) {
    if (mysql_errno(p->m) == ER_EMPTY_QUERY) {
        /* Nothing but whitespace or comments: an empty result, as other engines give. */
        my_keep_command(p, (my_ulonglong)-1);
        return my_text_more(p);
    }
    keel__my_fail_mysql(p);
    return my_text_done(p);
}

/* ---------------------------------------------------------------------------------------- */
/* Prepared statements                                                                      */

/*
 * The table behind a cached statement changed (ALTER TABLE added or dropped a column): the
 * server prepared the statement again, executed it and sent the result with its new columns,
 * but libmariadb refuses to read it (CR_NEW_STMT_METADATA) because the statement's metadata,
 * fixed when it was prepared, has a different number of columns. The statement has run, so it
 * is not executed again (it may have side effects): its result is read with the metadata the
 * server just sent (held by the handle until the next command), set in the statement in place
 * of its own until the result is read. The statement then leaves the cache, so that the next
 * execution prepares it afresh. Returns 0 when the result can be read; -1 when the rows cannot
 * be read (nor skipped without blocking), and the connection is given up.
 */
static int my_remeta_begin(my_impl *p) {
    MYSQL_STMT *st = p->cur;
    unsigned n = p->m->field_count;
    keel__my_cache_drop_cur(p);
    MYSQL_FIELD *fields = NULL;
    MYSQL_BIND *bind = NULL;
    if (st->state == MYSQL_STMT_WAITING_USE_OR_STORE && n > 0 && p->m->fields &&
        !st->cursor_exists) {
        fields = calloc(n, sizeof *fields);
        bind = calloc(n, sizeof *bind);
    }
    if (!fields || !bind) {
        free(fields);
        free(bind);
        p->c->broken = 1;
        keel__my_fail(
            p, KEEL_ERR_DATABASE,
            "the columns of the statement's result changed (the table was altered) and the "
            "new result could not be read; the statement will be prepared again, and the "
            "connection was closed");
        return -1;
    }
    memcpy(fields, p->m->fields, n * sizeof *fields);
    p->rm_fields = st->fields;
    p->rm_bind = st->bind;
    p->rm_count = st->field_count;
    p->rm_on = 1;
    st->fields = fields;
    st->bind = bind;
    st->field_count = n;
    st->bind_result_done = 0;
    st->last_errno = 0;
    st->last_error[0] = '\0';
    memcpy(st->sqlstate, "00000", sizeof "00000");
    return 0;
}

/* The changed result was read (or given up): cur gets its own metadata back. */
static void my_remeta_end(my_impl *p) {
    if (!p->rm_on)
        return;
    MYSQL_STMT *st = p->cur;
    free(st->fields);
    free(st->bind);
    st->fields = p->rm_fields;
    st->bind = p->rm_bind;
    st->field_count = p->rm_count;
    st->bind_result_done = 0;
    p->rm_fields = NULL;
    p->rm_bind = NULL;
    p->rm_on = 0;
}

/* Closes the queued statements, then prepares the operation's statement if it is new. */
static int my_stmt_begin(my_impl *p) {
    if (p->nevict) {
        p->closing = p->evict[--p->nevict];
        p->call = C_STMT_CLOSE;
        return 0;
    }
    if (p->cur_new) {
        p->call = C_PREPARE;
        return 0;
    }
    if (p->op == OP_MANY)
        return keel__my_batch_start(p);
    if (p->op == OP_DESCRIBE) {
        keel_result *res = keel__my_describe_result(p, p->nparams);
        if (!res) {
            keel__my_nomem(p, &p->err);
            p->failed = 1;
        } else {
            my_keep(p, res, 1);
        }
        return keel__my_finish(p);
    }
    if (keel__my_bind_row(p, p->prow) != 0) {
        keel__my_fail_stmt(p, p->cur, 0, 0);
        return my_stmt_done(p);
    }
    p->call = C_EXECUTE;
    return 0;
}

static int my_after_prepare(my_impl *p) {
    p->cur_new = 0;
    if (p->r_int != 0) {
        keel__my_fail_stmt(p, p->cur, 0, 0);
        /* Never prepared on the server: closing it sends nothing. */
        mysql_stmt_close(p->cur);
        p->cur = NULL;
        return my_stmt_done(p);
    }
    my_bool yes = 1;
    mysql_stmt_attr_set(p->cur, STMT_ATTR_UPDATE_MAX_LENGTH, &yes);
    if (p->op == OP_COPEN) {
        /* A cursor's statement is its own, never cached: the cursor owns it from here, and
         * executes it with a read-only cursor that fetches cprefetch rows per round trip. */
        p->ccur->impl = p->cur;
        unsigned long type = CURSOR_TYPE_READ_ONLY, rows = (unsigned long)p->cprefetch;
        mysql_stmt_attr_set(p->cur, STMT_ATTR_CURSOR_TYPE, &type);
        mysql_stmt_attr_set(p->cur, STMT_ATTR_PREFETCH_ROWS, &rows);
    } else {
        keel__my_cache_add(p, p->cur, p->ssql, p->slen);
    }
    unsigned long n = mysql_stmt_param_count(p->cur);
    if (n != p->nmap) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the statement has %lu placeholder%s but %zu value%s bound (a literal '?' in "
                 "the SQL counts as one)",
                 n, n == 1 ? "" : "s", p->nmap, p->nmap == 1 ? " was" : "s were");
        keel__my_fail(p, KEEL_ERR_PARAMETERS, msg);
        return my_stmt_done(p);
    }
    return my_stmt_begin(p);
}

static int my_stmt_more(my_impl *p) {
    if (mysql_stmt_more_results(p->cur)) {
        p->call = C_STMT_NEXT;
        return 0;
    }
    return my_stmt_done(p);
}

/*
 * A cursor's statement was executed, or (after C_STMT_NEXT) gave its next result. The server
 * keeps its rows when it opened a cursor (it does for a query); otherwise (a procedure's) they
 * follow on the socket, and are read and dropped with every later result, the open failing.
 */
static int my_cursor_opened(my_impl *p) {
    int rows = mysql_stmt_field_count(p->cur) > 0;
    if (!rows) {
        /* The first result, or the last of a procedure's (its status): read, nothing kept. */
        if (!p->failed)
            keel__my_fail(p, KEEL_ERR_UNSUPPORTED,
                          "a cursor's statement must return rows: this one returned none (it "
                          "ran; run such statements with query)");
        return my_stmt_more(p);
    }
    unsigned status = 0;
    mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_STATUS, &status);
    if (p->failed || !(status & SERVER_STATUS_CURSOR_EXISTS)) {
        if (!p->failed)
            keel__my_fail(p, KEEL_ERR_UNSUPPORTED,
                          "the server opened no cursor for this statement (it does for "
                          "queries): stream its rows with query_rows instead");
        p->dstmt = 1;
        p->dcount = 0;
        p->call = C_STMT_FETCH;
        return 0;
    }
    keel_error e;
    if (keel__my_rows_begin_stmt(p, &e) != KEEL_OK) {
        p->err = e;
        p->failed = 1;
    } else {
        my_keep(p, p->dres, 1); /* the columns, no rows */
        p->dres = NULL;
    }
    return my_stmt_done(p);
}

/* A fetch of a cursor has its rows: the rest stays on the server for the next one. */
static int my_cursor_fetched(my_impl *p) {
    p->dstmt = 0;
    if (p->dres) {
        my_keep(p, p->dres, 1);
        p->dres = NULL;
    }
    return my_stmt_done(p);
}

static int my_stmt_result(my_impl *p) {
    if (p->op == OP_COPEN)
        return my_cursor_opened(p);
    if (mysql_stmt_field_count(p->cur) > 0) {
        p->dstmt = 1;
        p->dcount = 0;
        keel_error e;
        if (keel__my_rows_begin_stmt(p, &e) != KEEL_OK && !p->failed) {
            p->err = e; /* the rows are read all the same, and dropped */
            p->failed = 1;
        } else if (p->op == OP_MANY && p->keep && p->dres &&
                   keel_result_ncols(p->keep) == keel_result_ncols(p->dres)) {
            /* A batch's rows go on in the result of the rows before. */
            keel_result_free(p->dres);
            p->dres = p->keep;
            p->keep = NULL;
            p->keep_rows = 0;
        }
        p->bfrom = p->dres ? keel_result_nrows(p->dres) : 0;
        p->call = C_STMT_FETCH;
        return 0;
    }
    my_ulonglong n = mysql_stmt_affected_rows(p->cur);
    if (p->op == OP_MANY) {
        if (n != (my_ulonglong)-1)
            p->baffected += (int64_t)n;
    } else {
        my_keep_command(p, n);
    }
    return my_stmt_more(p);
}

/* A row of cur's result was read, or its end (or an error) reached. */
static int my_stmt_row(my_impl *p) {
    if (p->r_int == 0 || p->r_int == MYSQL_DATA_TRUNCATED) {
        /* A truncated string is fetched again whole by keel__my_row_stmt. */
        my_take_row(p);
        if (p->op == OP_CFETCH && --p->cleft == 0)
            return my_cursor_fetched(p);
        return my_next_row(p, C_STMT_FETCH);
    }
    p->dstmt = 0;
    if (p->r_int != MYSQL_NO_DATA) {
        /* Reading the rows failed (the statement was stopped, the connection lost). */
        keel__my_fail_stmt(p, p->cur, p->ra, p->rb);
        my_rows_drop(p);
        my_remeta_end(p);
        return my_stmt_done(p);
    }
    /* MariaDB reports no affected count with the rows of a RETURNING: each row it returns is
     * one the statement wrote. */
    if (p->op == OP_MANY && p->dres)
        p->baffected += (int64_t)(keel_result_nrows(p->dres) - p->bfrom);
    if (p->dres) {
        my_keep(p, p->dres, 1);
        p->dres = NULL;
    }
    mysql_stmt_free_result(p->cur); /* every row is read: it reads nothing more */
    my_remeta_end(p);
    return my_stmt_more(p);
}

/* A prepared statement (or one range of a batch) is over. */
static int my_stmt_done(my_impl *p) {
    if (p->op != OP_MANY)
        return keel__my_finish(p);
    if (p->failed)
        return keel__my_batch_failed(p);
    return keel__my_batch_next(p);
}

/* A text-protocol statement is over: the operation, or a step of a batch. */
static int my_text_done(my_impl *p) {
    if (p->op != OP_MANY)
        return keel__my_finish(p);
    switch (p->stage) {
    case MS_BEGIN:
        if (p->failed)
            return keel__my_finish(p);
        p->wrapped = 1;
        return keel__my_batch_exec(p);
    case MS_ROLLBACK:
        /* The batch's error is what the caller hears about, whatever the rollback did. */
        p->err = p->berr;
        p->failed = 1;
        return keel__my_finish(p);
    case MS_BODY:
    case MS_COMMIT:
        break;
    }
    return keel__my_finish(p);
}

/* Decides what follows the call that just finished. 0: p->call is the next call; 1: done. */
static int my_after(my_impl *p, my_call done) {
    switch (done) {
    case C_CONNECT:
        return keel__my_after_connect(p);
    case C_QUERY:
        return p->r_int ? my_text_failed(p) : my_text_result(p);
    case C_NEXT:
        if (p->r_int > 0)
            return my_text_failed(p);
        return p->r_int < 0 ? my_text_done(p) : my_text_result(p);
    case C_PREPARE:
        return my_after_prepare(p);
    case C_EXECUTE:
        if (p->r_int && mysql_stmt_errno(p->cur) == CR_NEW_STMT_METADATA) {
            if (my_remeta_begin(p) != 0)
                return my_stmt_done(p);
            return my_stmt_result(p);
        }
        if (p->r_int) {
            keel__my_fail_stmt(p, p->cur, p->ra, p->rb);
            return my_stmt_done(p);
        }
        return my_stmt_result(p);
    case C_STMT_NEXT:
        if (p->r_int > 0) {
            keel__my_fail_stmt(p, p->cur, p->ra, p->rb);
            return my_stmt_done(p);
        }
        return p->r_int < 0 ? my_stmt_done(p) : my_stmt_result(p);
    case C_STMT_CLOSE:
        p->closing = NULL;
        return my_stmt_begin(p);
    case C_FETCH:
        return my_text_row(p);
    case C_STMT_FETCH:
        return my_stmt_row(p);
    case C_NONE:
        break;
    }
    return keel__my_finish(p);
}

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                   */

/*
 * Idle and readable: the server closed the connection, or sent its last words (an error such
 * as ER_CONNECTION_KILLED, or a TLS alert) before closing it; a server never speaks first
 * otherwise. TLS session tickets, the one other thing a server may send unasked, arrive during
 * the handshake and are consumed by the authentication that follows it.
 */
static void my_idle_input(my_impl *p) {
    char b;
    ssize_t n = recv(p->watch_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    p->phase = MY_DEAD;
    keel__watch_set(p->watch, 0);
    p->c->broken = 1;
    keel__conn_broken(p->c);
}

void keel__my_on_ready(void *arg, int events) {
    my_impl *p = arg;
    if (p->call != C_NONE && p->phase != MY_DEAD) {
        int ready = 0;
        if (events & KEEL_READ)
            ready |= MYSQL_WAIT_READ;
        if (events & KEEL_WRITE)
            ready |= MYSQL_WAIT_WRITE;
        keel__my_run(p, 1, ready);
        return;
    }
    if (p->phase == MY_IDLE) {
        my_idle_input(p);
        return;
    }
    keel__watch_set(p->watch, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Starting operations                                                                      */

static keel_status my_check_idle(my_impl *p, keel_conn *c, keel_error *err) {
    if (!p || p->phase == MY_DEAD || c->broken)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, MY_ENGINE, keel__my_dbname(c),
                               "the connection to database '%s' was lost", keel__my_dbname(c));
    if (p->phase != MY_IDLE)
        return keel__error_set(err, KEEL_ERR_BUSY, MY_ENGINE, keel__my_dbname(c),
                               "another operation is in progress on this connection");
    return KEEL_OK;
}

static void my_op_begin(my_impl *p, my_op op) {
    p->op_seq++;
    p->op = op;
    p->failed = 0;
    keel_error_clear(&p->err);
    keel_result_free(p->keep);
    p->keep = NULL;
    p->keep_rows = 0;
    p->cleanup = 0;
    p->cancel_wanted = 0;
    p->nsplit = 0;
    p->ra = p->rb = 0;
    p->stream = 0;
}

/* True when sql is one statement (nothing but blanks and ';' after its first ';'): only then are
 * its rows the result, and may be streamed before it ends. A ';' inside a string literal makes
 * it look like several, which only costs the streaming. */
static int my_one_statement(const char *sql, size_t len) {
    const char *end = sql + len, *semi = memchr(sql, ';', len);
    if (!semi)
        return 1;
    for (const char *s = semi; s < end; s++)
        if (*s != ';' && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    return 1;
}

/* Runs the first calls of an operation from inside its start function. */
static keel_status my_op_start(my_impl *p, int done, keel_error *err) {
    p->phase = MY_BUSY;
    if (!done)
        keel__my_run(p, 0, 0);
    p->in_start = 0;
    if (p->phase == MY_DEAD && p->report == R_NONE) {
        /* The outcome could not be deferred (the loop refused the timer): nothing will be
         * reported, so the start function fails. */
        keel_error e = p->err;
        keel__my_op_clear(p);
        if (e.code == KEEL_OK)
            keel__error_set(&e, KEEL_ERR_INTERNAL, MY_ENGINE, keel__my_dbname(p->c),
                            "the event loop refused a timer");
        keel__error_copy(err, &e);
        return e.code;
    }
    return KEEL_OK;
}

keel_status keel__my_query(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    size_t n = stmt->many ? stmt->nrows * stmt->nparams : stmt->nparams;
    if (stmt->many && stmt->nparams && n / stmt->nparams != stmt->nrows)
        return keel__my_nomem(p, err);
    for (size_t i = 0; i < n; i++) {
        size_t k = stmt->nparams ? i % stmt->nparams : 0;
        st = keel__my_param_check(p, &stmt->params[i], stmt->nparams ? i / stmt->nparams : 0,
                                  stmt->many, k, err);
        if (st != KEEL_OK)
            return st;
    }
    if (!stmt->many && stmt->nparams == 0) {
        my_op_begin(p, OP_TEXT);
        p->stream = c->rows_cb != NULL && my_one_statement(stmt->sql, stmt->sql_len);
        p->in_start = 1;
        return my_op_start(p, keel__my_text_start(p, stmt->sql, stmt->sql_len), err);
    }
    my_op_begin(p, stmt->many ? OP_MANY : OP_STMT);
    p->stream = !stmt->many && c->rows_cb != NULL;
    p->ssql = stmt->sql;
    p->slen = stmt->sql_len;
    p->map = stmt->map;
    p->nmap = stmt->nmap;
    p->nparams = stmt->nparams;
    my_cached *e = keel__my_cache_find(p, stmt->sql, stmt->sql_len);
    if (e) {
        p->cur = e->stmt;
        p->cur_new = 0;
    } else {
        p->cur = mysql_stmt_init(p->m);
        p->cur_new = 1;
        if (!p->cur) {
            keel__my_op_clear(p);
            return keel__my_nomem(p, err);
        }
    }
    if (stmt->many || !e || p->nevict) {
        /* The execution starts after this call returns: the parameters are copied. */
        st = keel__my_copy_params(p, stmt->params, n, err);
        if (st != KEEL_OK) {
            keel__my_op_clear(p);
            return st;
        }
        p->prow = p->pcopy;
    } else {
        /* libmariadb builds the request from the parameters inside this call. */
        p->prow = stmt->params;
    }
    p->in_start = 1;
    if (!stmt->many)
        return my_op_start(p, my_stmt_begin(p), err);
    p->brows = stmt->nrows;
    p->bnext = 0;
    p->baffected = 0;
    p->stage = MS_BODY;
    p->wrapped = 0;
    unsigned status = 0;
    mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_STATUS, &status);
    p->own_txn = !(status & SERVER_STATUS_IN_TRANS);
    return my_op_start(p, my_stmt_begin(p), err);
}

keel_status keel__my_describe(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    my_op_begin(p, OP_DESCRIBE);
    p->ssql = stmt->sql;
    p->slen = stmt->sql_len;
    p->map = stmt->map;
    p->nmap = stmt->nmap;
    p->nparams = stmt->nparams;
    p->prow = NULL;
    my_cached *e = keel__my_cache_find(p, stmt->sql, stmt->sql_len);
    p->cur = e ? e->stmt : mysql_stmt_init(p->m);
    p->cur_new = e == NULL;
    if (!p->cur) {
        keel__my_op_clear(p);
        return keel__my_nomem(p, err);
    }
    p->in_start = 1;
    return my_op_start(p, my_stmt_begin(p), err);
}

keel_status keel__my_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if ((unsigned)op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MY_ENGINE, keel__my_dbname(c),
                               "unknown transaction operation %d", (int)op);
    if (keel__txn_sql(op, depth, &p->sqlbuf) != 0)
        return keel__my_nomem(p, err);
    my_op_begin(p, OP_TEXT);
    p->in_start = 1;
    return my_op_start(p, keel__my_text_start(p, p->sqlbuf.data, p->sqlbuf.len), err);
}

keel_status keel__my_cursor_open(keel_conn *c, keel_cursor *cur, const keel__stmt *stmt,
                                 size_t prefetch, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    for (size_t i = 0; i < stmt->nparams; i++) {
        st = keel__my_param_check(p, &stmt->params[i], 0, 0, i, err);
        if (st != KEEL_OK)
            return st;
    }
    my_op_begin(p, OP_COPEN);
    p->ssql = stmt->sql;
    p->slen = stmt->sql_len;
    p->map = stmt->map;
    p->nmap = stmt->nmap;
    p->nparams = stmt->nparams;
    p->ccur = cur;
    p->cprefetch = prefetch > ULONG_MAX ? ULONG_MAX : prefetch;
    p->cur = mysql_stmt_init(p->m);
    p->cur_new = 1;
    if (!p->cur) {
        keel__my_op_clear(p);
        return keel__my_nomem(p, err);
    }
    /* The execution follows the prepare's round trip: the parameters are copied. */
    st = keel__my_copy_params(p, stmt->params, stmt->nparams, err);
    if (st != KEEL_OK) {
        keel__my_op_clear(p);
        return st;
    }
    p->prow = p->pcopy;
    p->in_start = 1;
    return my_op_start(p, my_stmt_begin(p), err);
}

keel_status keel__my_cursor_fetch(keel_conn *c, keel_cursor *cur, size_t n, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    my_op_begin(p, OP_CFETCH);
    p->cur = cur->impl;
    p->stream = c->rows_cb != NULL;
    p->cleft = n;
    /* The result columns are bound again: another statement may have used their buffers. */
    st = keel__my_rows_begin_stmt(p, err);
    if (st != KEEL_OK) {
        keel__my_op_clear(p);
        return st;
    }
    p->dstmt = 1;
    p->dcount = 0;
    p->call = C_STMT_FETCH;
    p->in_start = 1;
    return my_op_start(p, 0, err);
}

void keel__my_cursor_close(keel_conn *c, keel_cursor *cur) {
    my_impl *p = c->impl;
    MYSQL_STMT *st = cur->impl;
    cur->impl = NULL;
    if (p && keel__my_evict_push(p, st) == 0)
        return; /* closed before the next prepared statement, or with the connection */
    if (p && p->phase == MY_IDLE) {
        mysql_stmt_close(st); /* out of memory: a blocking close of a few bytes */
        return;
    }
    /* Out of memory while the connection is busy: the statement stays attached to the handle,
     * which closes it (the server with the session); its memory is not given back. */
}
