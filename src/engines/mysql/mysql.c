/* src/engines/mysql/mysql.c - the MySQL/MariaDB engine: libmariadb's non-blocking API. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "engines/mysql/connect.h"
#include "engines/mysql/exec.h"
#include "engines/mysql/mysql.h"

typedef struct my_kill my_kill;

/*
 * A KILL QUERY request, sent from the worker pool. It holds copies of everything it needs, so
 * the connection may close meanwhile.
 */
struct my_kill {
    my_settings set;
    unsigned long thread_id;
    unsigned timeout_s;
};

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */
const char *keel__my_dbname(const keel_conn *c) { return c && c->config ? c->config->name : ""; }

static pthread_once_t my_lib_once = PTHREAD_ONCE_INIT;
static char my_load_error[256]; /* why libmariadb could not be loaded; written only in the once */

static void my_lib_init(void) {
    if (keel__mysql_lib_load(my_load_error, sizeof my_load_error) == 0)
        mysql_library_init(0, NULL, NULL);
}

keel_status keel__my_library(const char *name, keel_error *err) {
    pthread_once(&my_lib_once, my_lib_init);
    if (!my_load_error[0])
        return KEEL_OK;
    return keel__error_set(err, KEEL_ERR_UNSUPPORTED, MY_ENGINE, name,
                           "database '%s' needs libmariadb, which could not be loaded: %s", name,
                           my_load_error);
}

void keel__my_tls_errors_clear(void) {
    if (keel__mysql_lib.err_clear)
        keel__mysql_lib.err_clear();
}

/* Status of a MySQL error: by number first, since many errors carry the generic HY000. */
static keel_status my_status_of(unsigned no, const char *state) {
    switch (no) {
    case ER_DUP_ENTRY:
    case ER_DUP_KEY:
    case ER_DUP_ENTRY_WITH_KEY_NAME:
    case ER_ROW_IS_REFERENCED:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW:
    case ER_NO_REFERENCED_ROW_2:
    case ER_BAD_NULL_ERROR:
    case ER_NO_DEFAULT_FOR_FIELD:
    case ER_CONSTRAINT_FAILED:
    case 3819: /* MySQL 8: check constraint violated */
        return KEEL_ERR_INTEGRITY;
    case ER_QUERY_INTERRUPTED:
        return KEEL_ERR_CANCELLED;
    case ER_STATEMENT_TIMEOUT:
    case 3024: /* MySQL: max_execution_time exceeded */
        return KEEL_ERR_TIMEOUT;
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_LOCK_DEADLOCK:
    case ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION:
    case ER_XAER_RMFAIL:
        return KEEL_ERR_TRANSACTION;
    case ER_WARN_DATA_OUT_OF_RANGE:
    case WARN_DATA_TRUNCATED:
    case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:
    case ER_TRUNCATED_WRONG_VALUE:
    case ER_DATA_TOO_LONG:
    case ER_DIVISION_BY_ZERO:
    case ER_ILLEGAL_VALUE_FOR_TYPE:
    case ER_WRONG_VALUE_FOR_TYPE:
    case ER_DATA_OUT_OF_RANGE:
    case ER_BAD_DATA:
    case ER_WARN_NULL_TO_NOTNULL:
    case 3140: /* MySQL: invalid JSON text */
        return KEEL_ERR_DATA;
    case ER_WRONG_ARGUMENTS:
    case CR_PARAMS_NOT_BOUND:
    case CR_INVALID_PARAMETER_NO:
    case CR_UNSUPPORTED_PARAM_TYPE:
        return KEEL_ERR_PARAMETERS;
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_PACKET_TOO_LARGE:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_WRITE_INTERRUPTED:
    case ER_ABORTING_CONNECTION:
    case 4031: /* MySQL 8: the client was disconnected for inactivity */
        return KEEL_ERR_CONNECTION_LOST;
    case ER_CON_COUNT_ERROR:
    case ER_TOO_MANY_USER_CONNECTIONS:
    case ER_OUT_OF_RESOURCES:
        return KEEL_ERR_OPERATIONAL;
    case ER_UNSUPPORTED_PS:
    case ER_NOT_SUPPORTED_YET:
        return KEEL_ERR_UNSUPPORTED;
    case CR_OUT_OF_MEMORY:
        return KEEL_ERR_NOMEM;
    default:
        break;
    }
    if (state && strlen(state) == 5 && strcmp(state, "HY000") != 0 && strcmp(state, "00000") != 0)
        return keel__status_from_sqlstate(state);
    return KEEL_ERR_DATABASE;
}

/*
 * Copies the identifier quoted by q ('`' or '\'') that starts at s (after its opening quote) into
 * the field, a doubled quote standing for one. Returns the byte after the closing quote, or NULL
 * when there is none.
 */
static const char *my_quoted(const char *s, char q, keel_error *err, keel__error_field field) {
    char name[KEEL_ERROR_NAME_MAX];
    size_t n = 0;
    for (; *s; s++) {
        if (*s == q) {
            if (s[1] != q)
                break;
            s++;
        }
        if (n + 1 < sizeof name)
            name[n++] = *s;
    }
    if (*s != q)
        return NULL;
    if (err)
        keel__error_set_field(err, field, name, n);
    return s + 1;
}

/* Reads "`schema`.`table`" at s into the schema and table fields. */
static void my_qualified(const char *s, keel_error *err) {
    if (!s || *s != '`')
        return;
    const char *dot = my_quoted(s + 1, '`', NULL, KEEL__ERRF_SCHEMA);
    if (!dot || dot[0] != '.' || dot[1] != '`')
        return;
    my_quoted(s + 1, '`', err, KEEL__ERRF_SCHEMA);
    my_quoted(dot + 2, '`', err, KEEL__ERRF_TABLE);
}

/* The last occurrence of needle in s, or NULL. */
static const char *my_last(const char *s, const char *needle) {
    const char *last = NULL;
    for (const char *f = strstr(s, needle); f; f = strstr(f + 1, needle))
        last = f;
    return last;
}

/*
 * Fills err's object names from the messages whose shape is fixed: the server's error fields are
 * not sent by the protocol. A duplicate key names the key last ("… for key 'k'"; MySQL 8 writes
 * 'table.k', MariaDB 'k'), after the entry, which may hold anything.
 */
static void my_error_names(const my_impl *p, unsigned no, const char *msg, keel_error *err) {
    if (!msg)
        return;
    const char *f;
    switch (no) {
    case ER_DUP_ENTRY:
    case ER_DUP_ENTRY_WITH_KEY_NAME: {
        f = my_last(msg, " for key '");
        if (!f)
            return;
        f += strlen(" for key '");
        const char *end = strrchr(f, '\'');
        if (!end)
            return;
        const char *type = NULL;
        if (p && p->m)
            mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_TYPE, &type);
        const char *dot = memchr(f, '.', (size_t)(end - f));
        if (dot && type && strcmp(type, "MySQL") == 0) {
            keel__error_set_field(err, KEEL__ERRF_TABLE, f, (size_t)(dot - f));
            f = dot + 1;
        }
        keel__error_set_field(err, KEEL__ERRF_CONSTRAINT, f, (size_t)(end - f));
        return;
    }
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW_2:
        /* "… a foreign key constraint fails (`db`.`child`, CONSTRAINT `fk` FOREIGN KEY …)" */
        f = strstr(msg, "constraint fails (");
        if (f)
            my_qualified(f + strlen("constraint fails ("), err);
        f = strstr(msg, ", CONSTRAINT `");
        if (f)
            my_quoted(f + strlen(", CONSTRAINT `"), '`', err, KEEL__ERRF_CONSTRAINT);
        return;
    case ER_BAD_NULL_ERROR:
        /* "Column 'c' cannot be null" */
        if (strncmp(msg, "Column '", 8) == 0)
            my_quoted(msg + 8, '\'', err, KEEL__ERRF_COLUMN);
        return;
    case 3819: /* MySQL 8: "Check constraint 'c' is violated." */
        if (strncmp(msg, "Check constraint '", 18) == 0)
            my_quoted(msg + 18, '\'', err, KEEL__ERRF_CONSTRAINT);
        return;
    case 4025: /* MariaDB: "CONSTRAINT `c` failed for `db`.`t`" */
        if (strncmp(msg, "CONSTRAINT `", 12) == 0) {
            f = my_quoted(msg + 12, '`', err, KEEL__ERRF_CONSTRAINT);
            if (f && strncmp(f, " failed for ", 12) == 0)
                my_qualified(f + 12, err);
        }
        return;
    default:
        return;
    }
}

/* The kind of constraint a MySQL/MariaDB error number reports: their SQLSTATE is 23000 (or
 * HY000) for every kind, so the number tells them apart. */
static keel_violation my_violation_of(unsigned no) {
    switch (no) {
    case ER_DUP_ENTRY:
    case ER_DUP_KEY:
    case ER_DUP_ENTRY_WITH_KEY_NAME:
        return KEEL_VIOLATION_UNIQUE;
    case ER_ROW_IS_REFERENCED:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW:
    case ER_NO_REFERENCED_ROW_2:
        return KEEL_VIOLATION_FOREIGN_KEY;
    case ER_BAD_NULL_ERROR:
    case ER_NO_DEFAULT_FOR_FIELD: /* strict mode: a NOT NULL column given no value */
        return KEEL_VIOLATION_NOT_NULL;
    case ER_CONSTRAINT_FAILED:
    case 3819: /* MySQL 8: check constraint violated */
        return KEEL_VIOLATION_CHECK;
    default:
        return KEEL_VIOLATION_NONE;
    }
}

void keel__my_error(my_impl *p, unsigned no, const char *state, const char *msg, size_t a, size_t b,
                    keel_error *err) {
    char raw[KEEL_ERROR_MESSAGE_MAX * 2], clean[KEEL_ERROR_MESSAGE_MAX];
    int n = 0;
    if (b == a + 1)
        n = snprintf(raw, sizeof raw, "row %zu: ", a);
    else if (b > a + 1)
        n = snprintf(raw, sizeof raw, "rows %zu-%zu: ", a, b - 1);
    snprintf(raw + n, sizeof raw - (size_t)n, "%s", msg && *msg ? msg : "unknown MySQL error");
    for (char *s = raw; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
    keel__redact(clean, sizeof clean, raw);
    keel_status code = my_status_of(no, state);
    if (code == KEEL_ERR_CONNECTION_LOST)
        p->c->broken = 1;
    keel__error_set(err, code, MY_ENGINE, keel__my_dbname(p->c), "%s", clean);
    keel__error_set_sqlstate(err, state && strcmp(state, "00000") != 0 ? state : "");
    keel__error_set_server_code(err, no, my_violation_of(no));
    my_error_names(p, no, msg, err);
}

void keel__my_fail(my_impl *p, keel_status code, const char *msg) {
    if (p->failed)
        return;
    keel__error_set(&p->err, code, MY_ENGINE, keel__my_dbname(p->c), "%s", msg);
    p->failed = 1;
}

void keel__my_fail_mysql(my_impl *p) {
    if (p->failed)
        return;
    keel__my_error(p, mysql_errno(p->m), mysql_sqlstate(p->m), mysql_error(p->m), 0, 0, &p->err);
    p->failed = 1;
}

void keel__my_fail_stmt(my_impl *p, MYSQL_STMT *st, size_t a, size_t b) {
    if (p->failed)
        return;
    unsigned no = mysql_stmt_errno(st);
    if (no)
        keel__my_error(p, no, mysql_stmt_sqlstate(st), mysql_stmt_error(st), a, b, &p->err);
    else
        keel__my_error(p, mysql_errno(p->m), mysql_sqlstate(p->m), mysql_error(p->m), a, b,
                       &p->err);
    p->failed = 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Cancellation                                                                             */

static int my_cancellable(const my_impl *p) {
    return p->phase == MY_BUSY && p->op != OP_NONE && !p->cleanup && p->report == R_NONE;
}

static int my_cancel_running(void *owner, uint64_t seq) {
    const my_impl *p = owner;
    return my_cancellable(p) && p->op_seq == seq;
}

/* A KILL QUERY request for the running statement: the session's settings and thread id. */
static void *my_cancel_prepare(void *owner) {
    my_impl *p = owner;
    my_kill *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->thread_id = p->thread_id;
    k->timeout_s =
        p->timeout_s < MY_KILL_TIMEOUT_S ? (unsigned)ceil(p->timeout_s) : MY_KILL_TIMEOUT_S;
    if (keel__my_settings_copy(&k->set, &p->set) != 0) {
        free(k);
        return NULL;
    }
    return k;
}

/* Runs on a worker: a short-lived session of its own asks the server to stop the statement. */
static void my_cancel_send(void *req) {
    my_kill *k = req;
    /* The connection being cancelled loaded the library; this orders the worker after that. */
    if (keel__my_library("", NULL) != KEEL_OK)
        return;
    if (k->set.ssl_mode != SSL_DISABLED)
        keel__my_tls_errors_clear();
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return;
    unsigned t = k->timeout_s;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &t);
    if (keel__my_apply(m, &k->set) == 0 &&
        mysql_real_connect(m, k->set.unix_socket ? MY_DEFAULT_HOST : k->set.addr, k->set.user,
                           k->set.password, NULL, k->set.port, k->set.unix_socket, 0)) {
        char sql[48];
        int n = snprintf(sql, sizeof sql, "KILL QUERY %lu", k->thread_id);
        mysql_real_query(m, sql, (unsigned long)n);
    }
    mysql_close(m);
}

static void my_cancel_release(void *req) {
    my_kill *k = req;
    keel__my_settings_free(&k->set);
    free(k);
}

/*
 * The KILL QUERY that held back the end of the operation, or the batch's closing statement,
 * returned: that goes on now. When it did not return in time it may still reach the server, so
 * nothing more is sent on the session and the connection is given up after this operation (a
 * batch's transaction then ends with the session, rolled back).
 */
static void my_cancel_settled(void *owner, int answered) {
    my_impl *p = owner;
    my_report r = p->report;
    if (r != R_HELD && r != R_STEP)
        return;
    p->report = R_NONE;
    if (!answered)
        p->c->broken = 1;
    if (r == R_HELD) {
        keel__my_op_report(p);
        return;
    }
    if (!answered) {
        if (p->stage == MS_ROLLBACK) {
            p->err = p->berr;
            p->failed = 1;
        } else {
            keel__my_fail(
                p, KEEL_ERR_CONNECTION_LOST,
                "the batch could not be committed: a cancel request to the server did not "
                "return, so the connection was given up");
        }
        keel__my_finish(p);
        return;
    }
    p->call = C_QUERY;
    keel__my_run(p, 0, 0);
}

const keel__cancel_ops keel__my_cancel_ops = {
    .running = my_cancel_running,
    .prepare = my_cancel_prepare,
    .send = my_cancel_send,
    .release = my_cancel_release,
    .settled = my_cancel_settled,
};

static void my_cancel(keel_conn *c) {
    my_impl *p = c->impl;
    if (p && p->phase == MY_BUSY && p->op != OP_NONE)
        p->cancel_wanted = 1;
    if (!p || !my_cancellable(p))
        return;
    keel__cancel_start(&p->cancel, keel__conn_workers(c), p->op_seq);
}

static keel_txn_status my_txn_status(const keel_conn *c) {
    const my_impl *p = c->impl;
    if (!p || !p->m || p->phase != MY_IDLE)
        return KEEL_TXN_UNKNOWN;
    unsigned status = 0;
    if (mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0)
        return KEEL_TXN_UNKNOWN;
    /* MySQL has no failed-transaction state: after an error the transaction goes on. */
    return (status & SERVER_STATUS_IN_TRANS) ? KEEL_TXN_ACTIVE : KEEL_TXN_IDLE;
}

static void my_close(keel_conn *c) {
    my_impl *p = c->impl;
    if (!p)
        return;
    c->impl = NULL;
    /* A statement still running would go on on the server after the session is gone: it is
     * stopped with a KILL QUERY that outlives the connection and that nothing waits for. */
    if (p->m && p->phase == MY_BUSY && p->op != OP_NONE && p->thread_id)
        keel__cancel_fire(&p->cancel, keel__conn_workers(c));
    keel__my_destroy(p);
    /* The handle is closed: the cursors' statements, detached from it, close without a round
     * trip, and the cursors outlive the connection until keel_cursor_close frees them. */
    for (keel_cursor *k = c->cursors, *next; k; k = next) {
        next = k->next;
        if (k->impl)
            mysql_stmt_close(k->impl);
        k->impl = NULL;
        k->conn = NULL;
        k->prev = k->next = NULL;
    }
    c->cursors = NULL;
}

const keel__engine keel__engine_mysql = {
    .name = MY_ENGINE,
    .placeholder_style = KEEL__PH_MYSQL,
    .ident_quote = '`',
    .check_config = keel__my_check_config,
    .connect = keel__my_connect,
    .query = keel__my_query,
    .describe = keel__my_describe,
    .resume = keel__my_unpause,
    .copy_in = keel__copy_as_batch,
    .ping = keel__ping_sql,
    .transaction = keel__my_transaction,
    .cursor_open = keel__my_cursor_open,
    .cursor_fetch = keel__my_cursor_fetch,
    .cursor_close = keel__my_cursor_close,
    .cancel = my_cancel,
    .txn_status = my_txn_status,
    .close = my_close,
};
