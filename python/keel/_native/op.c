/* python/keel/_native/op.c - one awaitable operation: acquire, query, batch or transaction step. */
#include "module.h"

#include <math.h>
#include <string.h>
#include <time.h>

/*
 * An Op is what the query methods return: it is awaitable (its __await__ returns itself and it
 * delegates to the iterator of an asyncio.Future), so it sees the awaiting coroutine fail or be
 * closed. That is how cancellation reaches the server: when the task awaiting an Op is
 * cancelled, the future raises CancelledError through the Op, which then calls keel_conn_cancel
 * (or, while still waiting for a connection, marks itself so the connection is released the
 * moment it arrives). keel holds a reference to the Op from submission until its callback ran.
 */

/* ---- life cycle ---- */

static kpy_op *op_new(kpy_db *db, kpy_conn *cobj, int kind) {
    kpy_state *st = db->st;
    kpy_op *op = PyObject_GC_New(kpy_op, st->OpType);
    if (op == NULL)
        return NULL;
    op->db = (kpy_db *)Py_NewRef(db);
    op->cobj = (kpy_conn *)Py_XNewRef(cobj);
    op->conn = NULL;
    op->fut = NULL;
    op->futiter = NULL;
    op->sql = NULL;
    op->args = NULL;
    op->params = NULL;
    op->acquired = NULL;
    op->next = NULL;
    op->kind = kind;
    op->mode = KPY_MODE_EXECUTE;
    op->state = KPY_OP_NEW;
    op->cancelled = 0;
    op->delivered = 0;
    op->column = 0;
    op->txn = KEEL_TXN_BEGIN;
    op->depth = 0;
    op->timeout = 0;
    op->started = 0;
    op->waited = 0;
    op->timer = NULL;
    op->database = NULL;
    op->rows = NULL;
    op->desc = NULL;
    op->rowtype = NULL;
    op->rows_exc.type = op->rows_exc.value = op->rows_exc.tb = NULL;
    op->prefetch = 0;
    op->paused = 0;
    op->dropped = 0;
    op->waiter = NULL;
    op->reply = NULL;
    op->slices = NULL;
    op->kcur = NULL;
    PyObject_GC_Track(op);
    op->fut = keel__py_future_new(st, db->aloop);
    if (op->fut == NULL) {
        Py_DECREF(op);
        return NULL;
    }
    return op;
}

/* Drops what op kept to start later. */
static void op_forget_submission(kpy_op *op) {
    Py_CLEAR(op->sql);
    Py_CLEAR(op->args);
    keel__py_params_free(op->params);
    op->params = NULL;
}

/* Cancels the asyncio handle of op's deadline while waiting for a connection, if armed. */
static void op_disarm(kpy_op *op) {
    PyObject *timer = op->timer;
    if (timer == NULL)
        return;
    op->timer = NULL;
    PyObject *r = PyObject_CallMethodNoArgs(timer, op->db->st->s_cancel);
    if (r == NULL)
        PyErr_WriteUnraisable(timer);
    Py_XDECREF(r);
    Py_DECREF(timer);
}

/* keel__py_let_go on op's asyncio loop. */
static void op_let_go(PyObject *list, void *ctx) {
    kpy_op *op = ctx;
    keel__py_let_go(op->db->st, op->db->module, op->db->aloop, list, 0);
}

/* Drops a command's reply and what its decoding has built so far (a little at a time when
 * the decoding was abandoned with much built). */
static void op_forget_reply(kpy_op *op) {
    kpy_bson_slices *slices = op->slices;
    op->slices = NULL;
    keel__py_bson_slices_free(slices, op_let_go, op);
    keel_result_free(op->reply);
    op->reply = NULL;
}

/* Completes the future a cursor waits on for rows (Op._more), if any. */
static void op_wake(kpy_op *op) {
    PyObject *w = op->waiter;
    if (w == NULL)
        return;
    op->waiter = NULL;
    keel__py_future_set_result(op->db->st, w, Py_None);
    Py_DECREF(w);
}

/* op is over: drop what was kept for it; a database-level one no longer delays a close. */
static void op_done(kpy_op *op) {
    op->state = KPY_OP_DONE;
    op_disarm(op);
    op_forget_submission(op);
    op_forget_reply(op);
    op_wake(op);
    /* The Records of a fetch() that failed or was cancelled midway (a million, say); a
     * cursor's stay buffered for it to take, unless it was closed. */
    if (op->rows != NULL && (op->mode != KPY_MODE_CURSOR || op->cancelled)) {
        PyObject *rows = op->rows;
        op->rows = NULL;
        op_let_go(rows, op);
    }
    /* A cursor whose open failed or was cancelled: nobody will hold it. */
    keel_cursor_close(op->kcur);
    op->kcur = NULL;
    if (op->cobj == NULL)
        keel__py_db_op_finished(op->db);
}

/* keel is done with op: op_done, and drop the reference keel held. */
static void op_finish(kpy_op *op) {
    op_done(op);
    Py_DECREF(op);
}

static int op_traverse(kpy_op *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(op->db);
    Py_VISIT(op->cobj);
    Py_VISIT(op->fut);
    Py_VISIT(op->futiter);
    Py_VISIT(op->sql);
    Py_VISIT(op->args);
    int r = keel__py_params_traverse(op->params, visit, arg);
    if (r != 0)
        return r;
    Py_VISIT(op->acquired);
    Py_VISIT(op->timer);
    Py_VISIT(op->database);
    Py_VISIT(op->rows);
    Py_VISIT(op->desc);
    Py_VISIT(op->rowtype);
    Py_VISIT(op->waiter);
    Py_VISIT(op->rows_exc.type);
    Py_VISIT(op->rows_exc.value);
    Py_VISIT(op->rows_exc.tb);
    return keel__py_bson_slices_traverse(op->slices, visit, arg);
}

static int op_clear(kpy_op *op) {
    Py_CLEAR(op->fut);
    Py_CLEAR(op->futiter);
    op_forget_submission(op);
    /* Released here and now: a collection or a dealloc is no place to schedule calls from. */
    keel__py_bson_slices_free(op->slices, NULL, NULL);
    op->slices = NULL;
    op_forget_reply(op);
    Py_CLEAR(op->acquired);
    Py_CLEAR(op->timer);
    Py_CLEAR(op->database);
    Py_CLEAR(op->rows);
    Py_CLEAR(op->desc);
    Py_CLEAR(op->rowtype);
    Py_CLEAR(op->waiter);
    Py_CLEAR(op->rows_exc.type);
    Py_CLEAR(op->rows_exc.value);
    Py_CLEAR(op->rows_exc.tb);
    Py_CLEAR(op->cobj);
    Py_CLEAR(op->db);
    return 0;
}

static void op_dealloc(kpy_op *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    op_clear(op);
    tp->tp_free((PyObject *)op);
    Py_DECREF(tp);
}

/* ---- submission ---- */

/* The UTF-8 of a statement, refusing non-str and embedded NULs. */
static const char *sql_utf8(kpy_state *st, PyObject *sql) {
    if (!PyUnicode_Check(sql)) {
        PyErr_Format(PyExc_TypeError, "the statement must be a str, not %.100s",
                     Py_TYPE(sql)->tp_name);
        return NULL;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(sql, &n);
    if (s == NULL)
        return NULL;
    if (strlen(s) != (size_t)n) {
        keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL, "the statement contains a NUL character");
        return NULL;
    }
    return s;
}

/* A name for copy_records_to_table: a non-empty str without NUL characters. */
static int copy_name_ok(kpy_state *st, PyObject *name, const char *what) {
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "copy_records_to_table: %s must be a str, not %.100s", what,
                     Py_TYPE(name)->tp_name);
        return 0;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (s == NULL)
        return 0;
    if (n == 0 || strlen(s) != (size_t)n) {
        keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL,
                       "copy_records_to_table: %s must be a non-empty name without NUL "
                       "characters",
                       what);
        return 0;
    }
    return 1;
}

/*
 * The items of an iterable, in a tuple: a copy of a list, so that what the caller does with its
 * list after the call changes nothing of an operation still waiting to start. msg is the
 * TypeError for what is not iterable. NULL with an exception.
 */
static PyObject *snapshot(PyObject *obj, const char *msg) {
    PyObject *seq = PySequence_Fast(obj, msg);
    if (seq != NULL && !PyTuple_Check(seq))
        Py_SETREF(seq, PyList_AsTuple(seq));
    return seq;
}

PyObject *keel__py_copy_args(kpy_state *st, PyObject *table, PyObject *records, PyObject *columns,
                             PyObject *schema) {
    if (!copy_name_ok(st, table, "the table name") ||
        (schema != Py_None && !copy_name_ok(st, schema, "schema_name")))
        return NULL;
    PyObject *cols = Py_NewRef(Py_None);
    if (columns != Py_None) {
        if (PyUnicode_Check(columns)) {
            PyErr_SetString(PyExc_TypeError,
                            "copy_records_to_table: columns must be a sequence of names, not a "
                            "str");
            Py_DECREF(cols);
            return NULL;
        }
        Py_SETREF(cols, snapshot(columns, "copy_records_to_table: columns must be a sequence "
                                          "of names"));
        if (cols == NULL)
            return NULL;
        if (PyTuple_GET_SIZE(cols) == 0) {
            Py_DECREF(cols);
            return keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL,
                                  "copy_records_to_table: columns must name at least one column");
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cols); i++) {
            if (!copy_name_ok(st, PyTuple_GET_ITEM(cols, i), "every column name")) {
                Py_DECREF(cols);
                return NULL;
            }
        }
    }
    PyObject *recs = snapshot(records, "copy_records_to_table: records must be an iterable of "
                                       "sequences");
    if (recs == NULL) {
        Py_DECREF(cols);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(3, recs, cols, schema);
    Py_DECREF(recs);
    Py_DECREF(cols);
    return t;
}

/* True for an engine whose lists are arrays (PostgreSQL); lists are JSON elsewhere. */
static int engine_has_arrays(const char *engine) {
    return engine != NULL && strcmp(engine, "postgresql") == 0;
}

/* Converts the parameters of an operation of kind: a statement's tuple, executemany's rows, or
 * the records of a bulk load (checked against its column list), all tuples. */
static int convert_params(kpy_state *st, int kind, PyObject *params, kpy_params *p) {
    if (kind == KPY_OP_QUERY || kind == KPY_OP_CURSOR_OPEN)
        return keel__py_params_from_args(st, p, params);
    if (kind == KPY_OP_MANY)
        return keel__py_params_from_rows(st, p, params);
    if (kind != KPY_OP_COPY)
        return 0;
    PyObject *cols = PyTuple_GET_ITEM(params, 1);
    p->what = "copy_records_to_table";
    p->ranges = 1;
    p->names = cols != Py_None ? cols : NULL;
    if (keel__py_params_from_rows(st, p, PyTuple_GET_ITEM(params, 0)) < 0)
        return -1;
    if (p->names == NULL)
        return 0;
    size_t ncols = (size_t)PyTuple_GET_SIZE(cols);
    if (p->nrows > 0 && p->ncols != ncols) {
        keel__py_raise(st, KEEL_ERR_PARAMETERS, NULL,
                       "copy_records_to_table: each record has %zu values but %zu columns "
                       "were named",
                       p->ncols, ncols);
        return -1;
    }
    p->ncols = ncols;
    return 0;
}

/* Starts a bulk load of the converted records p on conn. */
static keel_status copy_start(kpy_op *op, keel_conn *conn, const kpy_params *p, keel_query_cb cb,
                              keel_error *err) {
    PyObject *cols = PyTuple_GET_ITEM(op->args, 1);
    PyObject *schema = PyTuple_GET_ITEM(op->args, 2);
    const char *names_local[16];
    const char **names = NULL;
    size_t ncols = cols != Py_None ? (size_t)PyTuple_GET_SIZE(cols) : 0;
    if (ncols > 0) {
        names = ncols <= 16 ? names_local : PyMem_Malloc(ncols * sizeof *names);
        if (names == NULL) {
            keel_error_clear(err);
            err->code = KEEL_ERR_NOMEM;
            snprintf(err->message, sizeof err->message, "out of memory");
            return KEEL_ERR_NOMEM;
        }
        /* Checked by keel__py_copy_args: every name is a str whose UTF-8 is cached. */
        for (size_t i = 0; i < ncols; i++)
            names[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(cols, (Py_ssize_t)i));
    }
    keel_status s = keel_conn_copy_in(conn, schema != Py_None ? PyUnicode_AsUTF8(schema) : NULL,
                                      PyUnicode_AsUTF8(op->sql), names, p->ncols, p->values,
                                      p->nrows, cb, op, err);
    if (names != names_local)
        PyMem_Free(names);
    return s;
}

static void query_cb(keel_result *res, const keel_error *err, void *arg);
static void rows_cb(const keel_result *batch, void *arg);

/* ---- timeouts ---- */

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int keel__py_timeout_arg(PyObject *obj, double *seconds) {
    *seconds = 0;
    if (obj == NULL || obj == Py_None)
        return 0;
    /* True would be one second: a flag passed in the wrong place, not a duration. */
    if (PyBool_Check(obj) || !PyNumber_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred()) {
        if (PyLong_Check(obj) && PyErr_ExceptionMatches(PyExc_OverflowError)) {
            /* An int too large for a double: as math.inf (or -math.inf, refused below). */
            PyErr_Clear();
            int positive = PyObject_RichCompareBool(obj, Py_False, Py_GT);
            if (positive < 0)
                return -1;
            d = positive ? INFINITY : -INFINITY;
        } else if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, not %.100s",
                         Py_TYPE(obj)->tp_name);
            return -1;
        } else {
            return -1;
        }
    }
    if (isnan(d) || d <= 0) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be a number of seconds > 0 (or None for the database's "
                     "command_timeout), not %R",
                     obj);
        return -1;
    }
    /* keel takes deadlines up to 1e9 s (31 years); anything longer is no deadline at all. */
    *seconds = d > 1e9 ? INFINITY : d;
    return 0;
}

int keel__py_args_timeout(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t n, const char *usage,
                          double *timeout) {
    if (nargs != n && nargs != n + 1) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    return keel__py_timeout_arg(nargs > n ? args[n] : NULL, timeout);
}

void keel__py_op_set_rowtype(PyObject *op, PyObject *rowtype) {
    kpy_op *o = (kpy_op *)op;
    Py_XSETREF(o->rowtype, rowtype == Py_None ? NULL : Py_XNewRef(rowtype));
}

/* Seconds left of op's timeout= (INFINITY when it has no deadline). */
static double op_remaining(const kpy_op *op) {
    if (isinf(op->timeout))
        return INFINITY;
    return op->timeout - (monotonic_now() - op->started);
}

/* The error of an operation whose timeout= ran out before it could start on a connection. */
static keel_status op_timeout_error(const kpy_op *op, const char *database, keel_error *err) {
    keel_error_clear(err);
    err->code = KEEL_ERR_TIMEOUT;
    /* As keel's own timeouts: query_canceled, the class PostgreSQL gives statement_timeout. */
    snprintf(err->sqlstate, sizeof err->sqlstate, "57014");
    if (database != NULL) {
        snprintf(err->database, sizeof err->database, "%s", database);
        const char *engine =
            op->db->cfg != NULL ? keel_config_database_engine(op->db->cfg, database) : NULL;
        if (engine != NULL)
            snprintf(err->engine, sizeof err->engine, "%s", engine);
    }
    snprintf(err->message, sizeof err->message,
             "timeout: the operation did not finish within %g s (timeout=) on database '%s': "
             "it was still waiting for a connection",
             op->timeout, database != NULL ? database : "?");
    return KEEL_ERR_TIMEOUT;
}

/*
 * Puts op's timeout= in force on conn before op starts there: the time left of it, or the
 * database's command_timeout again after an earlier operation of the same Connection set one.
 * KEEL_ERR_TIMEOUT when the wait for conn used the whole timeout up.
 */
static keel_status op_set_timeout(kpy_op *op, keel_conn *conn, keel_error *err) {
    kpy_conn *c = op->cobj;
    double seconds;
    if (op->timeout == 0) {
        /* A database-level operation has a fresh lease, under the command_timeout already. */
        if (c == NULL || !c->timeout_set)
            return KEEL_OK;
        seconds = KEEL_TIMEOUT_CONFIGURED;
    } else {
        /* Started right at the call, it has the whole timeout (and keel's message names it as
         * given); after a wait, what is left of it. */
        seconds = op->waited ? op_remaining(op) : op->timeout;
        if (seconds <= 0)
            return op_timeout_error(op, keel_conn_database(conn), err);
        if (isinf(seconds))
            seconds = 0; /* no deadline, whatever command_timeout says */
    }
    keel_status s = keel_conn_set_timeout(conn, seconds, err);
    if (s == KEEL_OK && c != NULL)
        c->timeout_set = op->timeout != 0;
    return s;
}

/* Starts op on conn with its converted parameters p (NULL for kinds that have none). The
 * statement's UTF-8 is cached in the str, so it is not recomputed. */
static keel_status op_start(kpy_op *op, keel_conn *conn, const kpy_params *p, keel_error *err) {
    keel_status s = op_set_timeout(op, conn, err);
    if (s != KEEL_OK)
        return s;
    const char *sql = op->sql != NULL ? PyUnicode_AsUTF8(op->sql) : NULL;
    switch (op->kind) {
    case KPY_OP_QUERY:
        /* fetch() builds its Records batch by batch while the rest of the result is still
         * arriving, so neither libpq nor keel ever holds the whole result besides the list;
         * a cursor takes them from the same list, pausing the statement while it is full. */
        if (op->mode == KPY_MODE_FETCH || op->mode == KPY_MODE_CURSOR)
            return keel_conn_query_rows(conn, sql, p->values, p->nvalues, rows_cb, query_cb, op,
                                        err);
        return keel_conn_query(conn, sql, p->values, p->nvalues, query_cb, op, err);
    case KPY_OP_MANY:
        /* No rows: nothing runs, but the statement is described, so that one returning rows
         * (INSERT … RETURNING) yields [] rather than None, and a wrong one fails as with rows. */
        if (p->nrows == 0)
            return keel_conn_prepare(conn, sql, query_cb, op, err);
        return keel_conn_query_many(conn, sql, p->values, p->nrows, p->ncols, query_cb, op, err);
    case KPY_OP_TXN:
        return keel_conn_transaction(conn, op->txn, op->depth, query_cb, op, err);
    case KPY_OP_COMMAND:
        return keel_conn_command(conn, sql, PyBytes_AS_STRING(op->args),
                                 (size_t)PyBytes_GET_SIZE(op->args), query_cb, op, err);
    case KPY_OP_COPY:
        return copy_start(op, conn, p, query_cb, err);
    case KPY_OP_PREPARE:
        return keel_conn_prepare(conn, sql, query_cb, op, err);
    case KPY_OP_CURSOR_OPEN:
        return keel_conn_cursor_open(conn, sql, p->values, p->nvalues, (size_t)op->column,
                                     &op->kcur, query_cb, op, err);
    case KPY_OP_CURSOR_FETCH:
        /* The rows become Records batch by batch, as fetch()'s do. */
        return keel_cursor_fetch(conn, PyCapsule_GetPointer(op->args, KPY_CURSOR_CAPSULE),
                                 (size_t)op->column, rows_cb, query_cb, op, err);
    default:
        break;
    }
    keel_error_clear(err);
    err->code = KEEL_ERR_INTERNAL;
    snprintf(err->message, sizeof err->message, "operation of kind %d cannot run", op->kind);
    return KEEL_ERR_INTERNAL;
}

/* ---- completion ---- */

/* Every row of res as a list of Records. NULL with an exception. */
static PyObject *records_of(kpy_state *st, const keel_result *res) {
    size_t nrows = keel_result_nrows(res);
    PyObject *list = PyList_New((Py_ssize_t)nrows);
    if (list == NULL || nrows == 0)
        return list;
    PyObject *desc = keel__py_record_desc(res);
    if (desc == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    for (size_t i = 0; i < nrows; i++) {
        PyObject *r = keel__py_record_from_row(st, desc, res, i);
        if (r == NULL) {
            Py_DECREF(desc);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, r);
    }
    Py_DECREF(desc);
    return list;
}

/* A str, or None for NULL. */
static PyObject *str_or_none(const char *s) {
    return s != NULL ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
}

/* keel's name of a type, or None when the engine does not say. */
static PyObject *kind_or_none(keel_type t) {
    return t != KEEL_TYPE_NULL ? PyUnicode_FromString(keel_type_name(t)) : Py_NewRef(Py_None);
}

/* A statement's description (keel_conn_prepare) as ((type name, keel type) per parameter,
 * (column name, type name, keel type) per column), None where the engine does not say. */
PyObject *keel__py_description_of(const keel_result *res) {
    size_t np = keel_result_nparams(res), nc = keel_result_ncols(res);
    PyObject *params = PyTuple_New((Py_ssize_t)np);
    PyObject *cols = PyTuple_New((Py_ssize_t)nc);
    if (params == NULL || cols == NULL)
        goto fail;
    for (size_t i = 0; i < np; i++) {
        PyObject *t = Py_BuildValue("(NN)", str_or_none(keel_result_paramtype_name(res, i)),
                                    kind_or_none(keel_result_paramtype(res, i)));
        if (t == NULL)
            goto fail;
        PyTuple_SET_ITEM(params, (Py_ssize_t)i, t);
    }
    for (size_t i = 0; i < nc; i++) {
        PyObject *t = Py_BuildValue("(sNN)", keel_result_colname(res, i),
                                    str_or_none(keel_result_coltype_name(res, i)),
                                    kind_or_none(keel_result_coltype(res, i)));
        if (t == NULL)
            goto fail;
        PyTuple_SET_ITEM(cols, (Py_ssize_t)i, t);
    }
    return Py_BuildValue("(NN)", params, cols);
fail:
    Py_XDECREF(params);
    Py_XDECREF(cols);
    return NULL;
}

/* What a server-side cursor's capsule does when it goes: the cursor is closed (the server's
 * statement with it, without a round trip of its own). */
static void cursor_capsule_free(PyObject *cap) {
    keel_cursor_close(PyCapsule_GetPointer(cap, KPY_CURSOR_CAPSULE));
}

/* The Python value of a successful result, by mode. */
static PyObject *build_result(kpy_op *op, const keel_result *res) {
    kpy_state *st = op->db->st;
    if (op->kind == KPY_OP_COPY) {
        int64_t n = keel_result_affected(res);
        return PyLong_FromLongLong(n < 0 ? 0 : n);
    }
    if (op->kind == KPY_OP_PREPARE)
        return keel__py_description_of(res);
    if (op->kind == KPY_OP_CURSOR_OPEN) {
        PyObject *cap = PyCapsule_New(op->kcur, KPY_CURSOR_CAPSULE, cursor_capsule_free);
        if (cap != NULL)
            op->kcur = NULL; /* the capsule closes it */
        return cap;
    }
    if (op->kind == KPY_OP_MANY && keel_result_ncols(res) > 0)
        return records_of(st, res); /* the rows of executemany(… RETURNING …) */
    if (op->kind != KPY_OP_QUERY && op->kind != KPY_OP_CURSOR_FETCH)
        Py_RETURN_NONE;
    size_t nrows = keel_result_nrows(res);
    switch (op->mode) {
    case KPY_MODE_CURSOR:
        /* The rows stay in op->rows for the cursor to take. */
        if (op->rows_exc.type != NULL) {
            PyErr_Restore(op->rows_exc.type, op->rows_exc.value, op->rows_exc.tb);
            op->rows_exc.type = op->rows_exc.value = op->rows_exc.tb = NULL;
            return NULL;
        }
        if (op->dropped)
            /* The statement ended before the cancel that woke it took effect: rows were lost. */
            return keel__py_raise(st, KEEL_ERR_CANCELLED, NULL,
                                  "the cursor's statement was stopped while its rows waited "
                                  "(a cancel or its timeout); the rows after that were dropped");
        Py_RETURN_NONE;
    case KPY_MODE_FETCH: {
        /* The rows came through rows_cb; res only closes the statement. */
        if (op->rows_exc.type != NULL) {
            PyErr_Restore(op->rows_exc.type, op->rows_exc.value, op->rows_exc.tb);
            op->rows_exc.type = op->rows_exc.value = op->rows_exc.tb = NULL;
            return NULL;
        }
        PyObject *list = op->rows != NULL ? op->rows : PyList_New(0);
        op->rows = NULL;
        Py_CLEAR(op->desc);
        if (list != NULL && !PyObject_GC_IsTracked(list))
            PyObject_GC_Track(list);
        return list;
    }
    case KPY_MODE_FETCHROW: {
        if (nrows == 0)
            Py_RETURN_NONE;
        PyObject *desc = keel__py_record_desc(res);
        if (desc == NULL)
            return NULL;
        PyObject *r = keel__py_row_new(st, desc, res, 0, op->rowtype);
        Py_DECREF(desc);
        return r;
    }
    case KPY_MODE_FETCHVAL: {
        if (nrows == 0)
            Py_RETURN_NONE;
        size_t ncols = keel_result_ncols(res);
        Py_ssize_t col = op->column;
        if (col < 0)
            col += (Py_ssize_t)ncols;
        if (col < 0 || (size_t)col >= ncols) {
            PyErr_Format(PyExc_IndexError, "column %zd is out of range: the result has %zu",
                         op->column, ncols);
            return NULL;
        }
        return keel__py_column_to_py(st, keel_result_value(res, 0, (size_t)col), (size_t)col);
    }
    default: {
        int64_t n = keel_result_affected(res);
        return PyLong_FromLongLong(n < 0 ? 0 : n);
    }
    }
}

/* Completes op's future with the result or the error. */
static void op_complete(kpy_op *op, const keel_result *res, const keel_error *err) {
    kpy_state *st = op->db->st;
    /* Nobody waits for the outcome of a cancelled operation: do not build it. */
    if (op->cancelled)
        return;
    if (op->mode == KPY_MODE_CURSOR && op->rows_exc.type != NULL) {
        /* The cursor's rows failed to convert and its statement was stopped for it
         * (cursor_stop_soon): that failure, not the cancel, is the outcome. */
        PyErr_Restore(op->rows_exc.type, op->rows_exc.value, op->rows_exc.tb);
        op->rows_exc.type = op->rows_exc.value = op->rows_exc.tb = NULL;
        keel__py_future_set_raised(st, op->fut);
        return;
    }
    if (res == NULL || (err != NULL && err->code != KEEL_OK)) {
        keel_error fallback;
        if (err == NULL) {
            keel_error_clear(&fallback);
            fallback.code = KEEL_ERR_INTERNAL;
            snprintf(fallback.message, sizeof fallback.message, "operation ended without result");
            err = &fallback;
        }
        PyObject *exc = keel__py_error_new(st, err);
        if (exc == NULL) {
            keel__py_future_set_raised(st, op->fut);
            return;
        }
        keel__py_future_set_exception(st, op->fut, exc);
        Py_DECREF(exc);
        return;
    }
    PyObject *prev = keel__py_json_loads_swap(op->db->json_loads);
    kpy_decoders dec;
    PyObject *value = NULL;
    if (keel__py_decoders_begin(st, op->db->decoders, res, &dec) == 0) {
        value = build_result(op, res);
        keel__py_decoders_end(st, &dec);
    }
    keel__py_json_loads_swap(prev);
    if (value == NULL) {
        keel__py_future_set_raised(st, op->fut);
        return;
    }
    keel__py_future_set_result(st, op->fut, value);
    Py_DECREF(value);
}

/* Appends a batch of rows to op->rows as Records. 0, or -1 with an exception. */
static int rows_extend(kpy_op *op, const keel_result *batch) {
    kpy_state *st = op->db->st;
    size_t n = keel_result_nrows(batch);
    if (op->desc == NULL && (op->desc = keel__py_record_desc(batch)) == NULL)
        return -1;
    if (op->rows == NULL) {
        if ((op->rows = PyList_New(0)) == NULL)
            return -1;
        /* Untracked while it grows: a full collection, which allocating a million Records
         * triggers, would otherwise walk every Record in it (some 10-30 ms for a million) in
         * the middle of a slice. Only op refers to it meanwhile, so it cannot be in a cycle;
         * Records holding containers are tracked themselves. Tracked again when handed over. */
        PyObject_GC_UnTrack(op->rows);
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *r = keel__py_row_new(st, op->desc, batch, i, op->rowtype);
        if (r == NULL)
            return -1;
        int rc = PyList_Append(op->rows, r);
        Py_DECREF(r);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The deferred half of cursor_stop_soon: asks the server to stop the statement, which then
 * completes (with the conversion error, op_complete) and frees the connection. */
static void cursor_stop(PyObject *arg) {
    kpy_op *op = (kpy_op *)arg;
    if (op->state == KPY_OP_RUNNING && !op->cancelled && op->cobj != NULL && op->cobj->conn != NULL)
        keel_conn_cancel(op->cobj->conn);
}

/*
 * A cursor's rows failed to convert: none after them will be taken, so the statement stops now
 * rather than running to its end with the connection busy, however long the cursor is kept
 * unread. It is paused at once (allowed in rows_cb), and cancelled from the next iteration of
 * the asyncio loop (keel_conn_cancel is not allowed in a rows callback). Its future then gets
 * the conversion error, and a cursor waiting for rows is woken to raise it.
 */
static void cursor_stop_soon(kpy_op *op) {
    if (!op->paused) {
        op->paused = 1;
        keel_conn_pause(op->cobj->conn);
    }
    if (keel__py_loop_call_soon(op->db->loop, cursor_stop, (PyObject *)op) < 0)
        /* Not scheduled (out of memory): the statement ends when the cursor is closed. */
        PyErr_WriteUnraisable((PyObject *)op);
    op_wake(op);
}

static void rows_cb(const keel_result *batch, void *arg) {
    kpy_op *op = arg;
    /* Nobody waits for a cancelled operation's rows, and after a failure none are needed. */
    if (op->cancelled || op->rows_exc.type != NULL)
        return;
    /* Rows of a paused cursor: keel went on only to end the statement (a cancel, its deadline,
     * a release), so they are dropped as they come, unconverted, for the end to come soon. */
    if (op->mode == KPY_MODE_CURSOR && op->paused) {
        op->dropped = 1;
        return;
    }
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    kpy_state *st = op->db->st;
    PyObject *prev = keel__py_json_loads_swap(op->db->json_loads);
    kpy_decoders dec;
    int failed = keel__py_decoders_begin(st, op->db->decoders, batch, &dec) < 0;
    if (!failed) {
        failed = rows_extend(op, batch) < 0;
        keel__py_decoders_end(st, &dec);
    }
    keel__py_json_loads_swap(prev);
    if (failed) {
        kpy_exc_stash(&op->rows_exc);
        if (op->mode == KPY_MODE_CURSOR) {
            /* The rows before the one that failed stay for the cursor to take, as those
             * before a server's error do. */
            cursor_stop_soon(op);
        } else {
            PyObject *rows = op->rows;
            op->rows = NULL;
            op_let_go(rows, op);
        }
    } else if (op->mode == KPY_MODE_CURSOR) {
        /* Enough rows wait for the cursor: the statement stops until it takes them. */
        if (PyList_GET_SIZE(op->rows) >= op->prefetch && !op->paused) {
            op->paused = 1;
            keel_conn_pause(op->cobj->conn);
        }
        op_wake(op);
    }
    kpy_exc_unstash(&saved);
}

/*
 * A command's reply is turned into a dict in slices of KPY_SLICE_BUDGET_US (bson.c decodes the
 * large arrays of its first levels, a cursor's batch, element by element), each slice in its own
 * iteration of the asyncio loop: 100,000 small documents took some 100 ms in one go. The first
 * slice runs in keel's completion, the others from loop.call_soon; the future gets the reply (or
 * the error) when the last is done. The decoding holds the reply, and the scheduled call holds
 * op. A cancel stops it at the next slice (op_cancel).
 */
static void reply_decode_continue(PyObject *arg);

/* Decodes one slice of op's reply. 1 when the next is scheduled; 0 when op's future is completed,
 * the reply and its decoding freed. */
static int reply_decode_step(kpy_op *op) {
    kpy_state *st = op->db->st;
    int r = keel__py_bson_slices_step(op->slices, KPY_SLICE_BUDGET_US);
    if (r == 0) {
        if (keel__py_call_soon(st, op->db->aloop, reply_decode_continue, (PyObject *)op) == 0)
            return 1;
        /* No way back to the loop (closed, or out of memory): nobody would be woken by a later
         * slice either, so finish here. */
        PyErr_Clear();
        while ((r = keel__py_bson_slices_step(op->slices, KPY_SLICE_BUDGET_US)) == 0)
            ;
    }
    PyObject *value = r > 0 ? keel__py_bson_slices_result(op->slices) : NULL;
    if (value != NULL) {
        keel__py_future_set_result(st, op->fut, value);
        Py_DECREF(value);
    } else {
        keel__py_future_set_raised(st, op->fut);
    }
    op_forget_reply(op);
    return 0;
}

/* Starts decoding res, the reply of the command op (taking res). 1 when it goes on from later
 * loop iterations, 0 when op's future is already completed. */
static int reply_decode_start(kpy_op *op, keel_result *res) {
    kpy_state *st = op->db->st;
    const keel_value *v = keel_result_value(res, 0, 0);
    op->reply = res;
    if (v == NULL || v->type != KEEL_TYPE_DOCUMENT) {
        keel__py_raise(st, KEEL_ERR_INTERNAL, NULL, "a command result holds no reply");
        keel__py_future_set_raised(st, op->fut);
        op_forget_reply(op);
        return 0;
    }
    if ((op->slices = keel__py_bson_slices_new(st, v->u.str.ptr, v->u.str.len)) == NULL) {
        keel__py_future_set_raised(st, op->fut);
        op_forget_reply(op);
        return 0;
    }
    return reply_decode_step(op);
}

static void reply_decode_continue(PyObject *arg) {
    kpy_op *op = (kpy_op *)arg;
    /* Cancelled (or cleared) since this call was scheduled: nothing is left to do. */
    if (op->state != KPY_OP_DECODING || op->slices == NULL)
        return;
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    if (!reply_decode_step(op))
        op_done(op);
    kpy_exc_unstash(&saved);
}

static void query_cb(keel_result *res, const keel_error *err, void *arg) {
    kpy_op *op = arg;
    kpy_loop *L = op->db->loop; /* op and its Database may go in here; the adapter stays */
    PyThreadState *gil = keel__py_gil_take(L);
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    /* A database-level operation gives its connection back before anything else, so a waiter
     * can have it as soon as possible. */
    if (op->cobj == NULL && op->conn != NULL) {
        keel_conn *c = op->conn;
        op->conn = NULL;
        keel_conn_release(c);
    }
    int decoding = 0;
    if (op->kind == KPY_OP_COMMAND && !op->cancelled && res != NULL &&
        (err == NULL || err->code == KEEL_OK)) {
        decoding = reply_decode_start(op, res);
    } else {
        op_complete(op, res, err);
        keel_result_free(res);
    }
    op->state = decoding ? KPY_OP_DECODING : KPY_OP_DONE;
    if (op->cobj != NULL)
        keel__py_conn_op_done(op->cobj, op);
    /* A reply still being decoded is held by the call scheduled for its next slice. */
    if (decoding)
        Py_DECREF(op);
    else
        op_finish(op);
    kpy_exc_unstash(&saved);
    keel__py_gil_give(L, gil);
}

static void op_fail_with(kpy_op *op, const keel_error *err) {
    PyObject *exc = keel__py_error_new(op->db->st, err);
    if (exc == NULL) {
        keel__py_future_set_raised(op->db->st, op->fut);
        return;
    }
    keel__py_future_set_exception(op->db->st, op->fut, exc);
    Py_DECREF(exc);
}

/* Runs a database-level op on the connection it waited for, with the parameters converted when
 * it was called. */
static void start_on_acquired(kpy_op *op, keel_conn *conn) {
    keel_error err;
    op->conn = conn;
    op->state = KPY_OP_RUNNING;
    keel_status s = op_start(op, conn, op->params, &err);
    /* Once running, keel has its own copy of the parameters. */
    op_forget_submission(op);
    if (s != KEEL_OK) {
        op->conn = NULL;
        keel_conn_release(conn);
        op_fail_with(op, &err);
        op_finish(op);
    }
}

static void acquire_cb(keel_conn *conn, const keel_error *err, void *arg) {
    kpy_op *op = arg;
    kpy_loop *L = op->db->loop; /* op and its Database may go in here; the adapter stays */
    PyThreadState *gil = keel__py_gil_take(L);
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    op_disarm(op);
    if (conn == NULL) {
        if (!op->cancelled) {
            /* What ends the wait for a connection is the pool's: a failed connect. */
            PyObject *exc = keel__py_connect_error_new(op->db->st, err);
            if (exc == NULL) {
                keel__py_future_set_raised(op->db->st, op->fut);
            } else {
                keel__py_future_set_exception(op->db->st, op->fut, exc);
                Py_DECREF(exc);
            }
        }
        op_finish(op);
    } else if (op->cancelled) {
        keel_conn_release(conn);
        op_finish(op);
    } else if (op->kind == KPY_OP_ACQUIRE) {
        PyObject *c = keel__py_conn_new(op->db, conn);
        if (c == NULL) {
            keel__py_future_set_raised(op->db->st, op->fut);
        } else {
            op->acquired = c;
            keel__py_future_set_result(op->db->st, op->fut, c);
        }
        op_finish(op);
    } else {
        start_on_acquired(op, conn);
    }
    kpy_exc_unstash(&saved);
    keel__py_gil_give(L, gil);
}

/* The deadline of a database-level operation passed while it waited for a connection. */
static void acquire_deadline(PyObject *arg) {
    kpy_op *op = (kpy_op *)arg;
    Py_CLEAR(op->timer);
    if (op->state != KPY_OP_ACQUIRING || op->cancelled || op->db->db == NULL)
        return;
    /* 0: the connection was handed over already and acquire_cb has run (or fails it itself). */
    if (!keel_db_acquire_cancel(op->db->db, acquire_cb, op))
        return;
    const char *name = NULL;
    if (op->database != NULL && op->database != Py_None)
        name = PyUnicode_AsUTF8(op->database);
    else if (op->db->cfg != NULL)
        name = keel_config_default_database(op->db->cfg);
    if (name == NULL)
        PyErr_Clear();
    keel_error err;
    op_timeout_error(op, name, &err);
    op_fail_with(op, &err);
    op_finish(op);
}

/* Bounds the wait of op (ACQUIRING) for a connection by its timeout=. 0, or -1 with an
 * exception (the op then waits without a deadline; the caller reports the error). */
static int arm_acquire_deadline(kpy_op *op, PyObject *database) {
    if (op->timeout == 0 || isinf(op->timeout))
        return 0;
    double left = op_remaining(op);
    op->database = Py_NewRef(database != NULL ? database : Py_None);
    op->timer = keel__py_loop_call_later(op->db->loop, left > 0 ? left : 0, acquire_deadline,
                                         (PyObject *)op);
    return op->timer != NULL ? 0 : -1;
}

/* ---- entry points ---- */

PyObject *keel__py_db_query(kpy_db *db, int kind, int mode, PyObject *sql, PyObject *args,
                            PyObject *database, Py_ssize_t column, double timeout) {
    kpy_state *st = db->st;
    double started = timeout != 0 ? monotonic_now() : 0;
    if (keel__py_db_ensure_open(db) < 0)
        return NULL;
    /* A command's sql is its engine database name (or NULL), checked by the caller. */
    if (kind != KPY_OP_COMMAND && sql_utf8(st, sql) == NULL)
        return NULL;
    const char *dbname = NULL;
    if (database != NULL && database != Py_None) {
        if (!PyUnicode_Check(database)) {
            PyErr_Format(PyExc_TypeError, "database must be a str, not %.100s",
                         Py_TYPE(database)->tp_name);
            return NULL;
        }
        if ((dbname = PyUnicode_AsUTF8(database)) == NULL)
            return NULL;
    }
    PyObject *params;
    if (kind == KPY_OP_MANY) {
        params = snapshot(args, "executemany: the rows must be an iterable of sequences");
        if (params == NULL)
            return NULL;
    } else if (kind == KPY_OP_COMMAND) {
        params = Py_NewRef(args);
    } else {
        if (!PyTuple_Check(args)) {
            PyErr_SetString(PyExc_TypeError, "query parameters must be a tuple");
            return NULL;
        }
        params = Py_NewRef(args);
    }
    kpy_params p;
    keel__py_params_init(&p);
    p.arrays = engine_has_arrays(keel_db_database_engine(db->db, dbname));
    p.json_dumps = db->json_dumps;
    kpy_op *op = NULL;
    if (convert_params(st, kind, params, &p) < 0)
        goto fail;
    if ((op = op_new(db, NULL, kind)) == NULL)
        goto fail;
    op->mode = mode;
    op->column = column;
    op->timeout = timeout;
    op->started = started;
    op->sql = Py_XNewRef(sql);
    /* A command's BSON, and a bulk load's column names and schema, are read as it starts. */
    if (kind == KPY_OP_COMMAND || kind == KPY_OP_COPY)
        op->args = Py_NewRef(params);
    keel_error err;
    keel_conn *conn = NULL;
    keel_status s = keel_db_try_acquire(db->db, dbname, &conn, &err);
    if (s == KEEL_OK) {
        op->conn = conn;
        op->state = KPY_OP_RUNNING;
        s = op_start(op, conn, &p, &err);
        if (s != KEEL_OK) {
            op->conn = NULL;
            keel_conn_release(conn);
            keel__py_error_raise(st, &err);
            goto fail;
        }
        /* Once running, keel has its own copy of the parameters. */
        op_forget_submission(op);
    } else if (s == KEEL_ERR_BUSY) {
        /* The op starts when a connection comes, with the arguments as they are now. */
        if ((op->params = keel__py_params_keep(&p)) == NULL)
            goto fail;
        s = keel_db_acquire(db->db, dbname, acquire_cb, op, &err);
        if (s != KEEL_OK) {
            keel__py_error_raise(st, &err);
            goto fail;
        }
        op->state = KPY_OP_ACQUIRING;
        op->waited = 1;
        if (arm_acquire_deadline(op, database) < 0) {
            keel_db_acquire_cancel(db->db, acquire_cb, op);
            goto fail;
        }
    } else {
        keel__py_error_raise(st, &err);
        goto fail;
    }
    Py_INCREF(op); /* held by keel until the callback */
    db->nops++;
    keel__py_params_clear(&p);
    Py_DECREF(params);
    return (PyObject *)op;
fail:
    if (op != NULL)
        op->state = KPY_OP_DONE;
    keel__py_params_clear(&p);
    Py_DECREF(params);
    Py_XDECREF(op);
    return NULL;
}

PyObject *keel__py_db_acquire(kpy_db *db, PyObject *database, double timeout) {
    kpy_state *st = db->st;
    double started = timeout != 0 ? monotonic_now() : 0;
    if (keel__py_db_ensure_open(db) < 0)
        return NULL;
    const char *dbname = NULL;
    if (database != NULL && database != Py_None) {
        if (!PyUnicode_Check(database)) {
            PyErr_Format(PyExc_TypeError, "database must be a str, not %.100s",
                         Py_TYPE(database)->tp_name);
            return NULL;
        }
        if ((dbname = PyUnicode_AsUTF8(database)) == NULL)
            return NULL;
    }
    kpy_op *op = op_new(db, NULL, KPY_OP_ACQUIRE);
    if (op == NULL)
        return NULL;
    op->timeout = timeout;
    op->started = started;
    keel_error err;
    keel_conn *conn = NULL;
    keel_status s = keel_db_try_acquire(db->db, dbname, &conn, &err);
    if (s == KEEL_OK) {
        op->state = KPY_OP_DONE;
        PyObject *c = keel__py_conn_new(db, conn);
        if (c == NULL) {
            Py_DECREF(op);
            return NULL;
        }
        op->acquired = c;
        keel__py_future_set_result(st, op->fut, c);
        return (PyObject *)op;
    }
    if (s == KEEL_ERR_BUSY)
        s = keel_db_acquire(db->db, dbname, acquire_cb, op, &err);
    if (s != KEEL_OK) {
        op->state = KPY_OP_DONE;
        Py_DECREF(op);
        return keel__py_error_raise(st, &err);
    }
    op->state = KPY_OP_ACQUIRING;
    if (arm_acquire_deadline(op, database) < 0) {
        keel_db_acquire_cancel(db->db, acquire_cb, op);
        op->state = KPY_OP_DONE;
        Py_DECREF(op);
        return NULL;
    }
    Py_INCREF(op);
    db->nops++;
    return (PyObject *)op;
}

PyObject *keel__py_conn_query(kpy_conn *c, int kind, int mode, PyObject *sql, PyObject *args,
                              Py_ssize_t column, keel_txn_op txn, unsigned depth, double timeout) {
    kpy_state *st = c->db->st;
    double started = timeout != 0 ? monotonic_now() : 0;
    if (c->conn == NULL)
        return keel__py_raise(st, KEEL_ERR_CLOSED, NULL, "the connection has been released");
    if (c->db->db == NULL) {
        /* close(timeout=) ran out while the connection was leased: keel closed it. */
        const char *name = PyUnicode_AsUTF8(c->database);
        return keel__py_raise(st, KEEL_ERR_CLOSED, name,
                              "database '%s' was closed while this connection was leased "
                              "(Database.close(timeout=) did not wait for it); release it",
                              name != NULL ? name : "?");
    }
    if (c->running != NULL && !c->running->cancelled && c->running->mode == KPY_MODE_CURSOR &&
        c->running->kind == KPY_OP_QUERY)
        return keel__py_raise(st, KEEL_ERR_BUSY, PyUnicode_AsUTF8(c->database),
                              "a cursor is open on this connection: its statement runs until "
                              "its rows are read or it is closed (await cursor.close(), or "
                              "async with); run other statements on another connection");
    if ((c->running != NULL && !c->running->cancelled) || c->qhead != NULL)
        return keel__py_raise(st, KEEL_ERR_BUSY, PyUnicode_AsUTF8(c->database),
                              "another operation is in progress on this connection");
    PyObject *params = NULL;
    if (kind == KPY_OP_COPY) {
        params = Py_NewRef(args);
    } else if (kind == KPY_OP_PREPARE) {
        if (sql_utf8(st, sql) == NULL)
            return NULL;
    } else if (kind == KPY_OP_CURSOR_FETCH) {
        if (!PyCapsule_IsValid(args, KPY_CURSOR_CAPSULE)) {
            PyErr_SetString(PyExc_TypeError, "_cursor_fetch needs a cursor of _cursor_open");
            return NULL;
        }
    } else if (kind == KPY_OP_QUERY || kind == KPY_OP_MANY || kind == KPY_OP_CURSOR_OPEN) {
        if (sql_utf8(st, sql) == NULL)
            return NULL;
        if (kind == KPY_OP_MANY) {
            params = snapshot(args, "executemany: the rows must be an iterable of sequences");
            if (params == NULL)
                return NULL;
        } else if (!PyTuple_Check(args)) {
            PyErr_SetString(PyExc_TypeError, "query parameters must be a tuple");
            return NULL;
        } else {
            params = Py_NewRef(args);
        }
    }
    kpy_params p;
    keel__py_params_init(&p);
    p.arrays = engine_has_arrays(keel_conn_engine(c->conn));
    p.json_dumps = c->db->json_dumps;
    kpy_op *op = NULL;
    if (convert_params(st, kind, params, &p) < 0)
        goto fail;
    if ((op = op_new(c->db, c, kind)) == NULL)
        goto fail;
    op->mode = mode;
    op->column = column;
    if (mode == KPY_MODE_CURSOR)
        op->prefetch = column; /* a cursor's column argument is its prefetch */
    op->txn = txn;
    op->depth = depth;
    op->timeout = timeout;
    op->started = started;
    if (kind == KPY_OP_COMMAND || kind == KPY_OP_CURSOR_FETCH) {
        op->sql = Py_XNewRef(sql);
        op->args = Py_NewRef(args);
    } else if (kind != KPY_OP_TXN) {
        op->sql = Py_NewRef(sql);
        /* A bulk load's column names and schema are read as it starts. */
        if (kind == KPY_OP_COPY)
            op->args = Py_NewRef(params);
    }
    if (c->running != NULL) {
        /* The running operation was cancelled and has not ended yet: run after it, with the
         * arguments as they are now. */
        if ((op->params = keel__py_params_keep(&p)) == NULL)
            goto fail;
        op->state = KPY_OP_QUEUED;
        op->waited = 1;
        Py_INCREF(op); /* held by the queue, then by keel */
        if (c->qtail != NULL)
            c->qtail->next = op;
        else
            c->qhead = op;
        c->qtail = op;
    } else {
        keel_error err;
        op->state = KPY_OP_RUNNING;
        keel_status s = op_start(op, c->conn, &p, &err);
        if (s != KEEL_OK) {
            keel__py_error_raise(st, &err);
            goto fail;
        }
        op_forget_submission(op);
        Py_INCREF(op);
        c->running = op;
    }
    keel__py_params_clear(&p);
    Py_XDECREF(params);
    return (PyObject *)op;
fail:
    if (op != NULL)
        op->state = KPY_OP_DONE;
    keel__py_params_clear(&p);
    Py_XDECREF(params);
    Py_XDECREF(op);
    return NULL;
}

void keel__py_op_submit_queued(kpy_conn *c, kpy_op *op) {
    keel_error err;
    op->state = KPY_OP_RUNNING;
    keel_status s = op_start(op, c->conn, op->params, &err);
    op_forget_submission(op);
    if (s != KEEL_OK) {
        op_fail_with(op, &err);
        op_finish(op);
        return;
    }
    c->running = op;
}

void keel__py_op_abandon(kpy_op *op, const char *why) {
    keel_error err;
    keel_error_clear(&err);
    err.code = KEEL_ERR_CLOSED;
    snprintf(err.message, sizeof err.message, "%s", why);
    op_fail_with(op, &err);
    op_finish(op);
}

/* ---- cancellation ---- */

static void unqueue(kpy_conn *c, kpy_op *op) {
    kpy_op **pp = &c->qhead;
    kpy_op *prev = NULL;
    while (*pp != NULL && *pp != op) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = op->next;
    if (c->qtail == op)
        c->qtail = prev;
    op->next = NULL;
}

/* The awaiting coroutine gave up on op: stop what it started, or drop what it obtained. */
static void op_cancel(kpy_op *op) {
    if (op->state == KPY_OP_DONE) {
        /* A connection acquired for a task that was cancelled before it could take it. */
        if (op->acquired != NULL && !op->delivered) {
            PyObject *c = op->acquired;
            op->acquired = NULL;
            keel__py_conn_release((kpy_conn *)c);
            Py_DECREF(c);
        }
        return;
    }
    if (op->cancelled)
        return;
    op->cancelled = 1;
    switch (op->state) {
    case KPY_OP_QUEUED:
        unqueue(op->cobj, op);
        op_finish(op);
        break;
    case KPY_OP_RUNNING:
        keel_conn_cancel(op->cobj != NULL ? op->cobj->conn : op->conn);
        break;
    case KPY_OP_DECODING:
        /* keel is done: stop decoding; the call scheduled for the next slice finds op done. */
        op_done(op);
        break;
    case KPY_OP_ACQUIRING:
        /* Leave the pool's queue now; if the request was already served, acquire_cb releases
         * the connection when it runs. */
        if (op->db->db != NULL && keel_db_acquire_cancel(op->db->db, acquire_cb, op))
            op_finish(op);
        break;
    default:
        break;
    }
}

/* Runs op_cancel while an exception is being propagated, keeping that exception. */
static void op_cancel_keeping_error(kpy_op *op) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    op_cancel(op);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)op);
    PyErr_Restore(type, value, tb);
}

/* ---- the awaitable protocol ---- */

static int op_ensure_iter(kpy_op *op) {
    if (op->futiter != NULL)
        return 0;
    if (op->fut == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation has already been awaited");
        return -1;
    }
    op->futiter = Py_TYPE(op->fut)->tp_as_async->am_await(op->fut);
    return op->futiter != NULL ? 0 : -1;
}

static PyObject *op_await(kpy_op *op) {
    if (op->futiter != NULL || op->delivered) {
        PyErr_SetString(PyExc_RuntimeError, "an operation can only be awaited once");
        return NULL;
    }
    if (op_ensure_iter(op) < 0)
        return NULL;
    return Py_NewRef(op);
}

/* The outcome reached the coroutine: nothing is left to undo on cancellation. */
static void op_delivered(kpy_op *op) {
    op->delivered = 1;
    Py_CLEAR(op->futiter);
    Py_CLEAR(op->acquired);
}

static PySendResult op_am_send(kpy_op *op, PyObject *arg, PyObject **result) {
    if (op_ensure_iter(op) < 0) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    PySendResult r = PyIter_Send(op->futiter, arg, result);
    if (r == PYGEN_RETURN) {
        op_delivered(op);
    } else if (r == PYGEN_ERROR) {
        op_cancel_keeping_error(op);
        op->delivered = 1;
        Py_CLEAR(op->futiter);
    }
    return r;
}

/* Turns a send result into the iterator protocol (StopIteration carries the return value). */
static PyObject *send_to_iter(PySendResult r, PyObject *result) {
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_RETURN) {
        if (result != Py_None) {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, result);
            if (e != NULL) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *op_iternext(kpy_op *op) {
    PyObject *result;
    PySendResult r = op_am_send(op, Py_None, &result);
    return send_to_iter(r, result);
}

static PyObject *op_send(kpy_op *op, PyObject *value) {
    PyObject *result;
    PySendResult r = op_am_send(op, value, &result);
    return send_to_iter(r, result);
}

static PyObject *op_throw(kpy_op *op, PyObject *const *args, Py_ssize_t nargs) {
    /* Something is thrown into the awaiting coroutine (e.g. a cancellation): give up first. */
    op_cancel(op);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)op);
    if (op->futiter == NULL) {
        if (nargs < 1) {
            PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
            return NULL;
        }
        PyObject *typ = args[0];
        PyObject *val = nargs > 1 ? args[1] : NULL;
        if (PyExceptionInstance_Check(typ))
            PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
        else
            PyErr_SetObject(typ, val != NULL ? val : Py_None);
        return NULL;
    }
    PyObject *meth = PyObject_GetAttrString(op->futiter, "throw");
    if (meth == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
    Py_DECREF(meth);
    if (r == NULL) {
        op->delivered = 1;
        Py_CLEAR(op->futiter);
    }
    return r;
}

static PyObject *op_close(kpy_op *op, PyObject *unused) {
    (void)unused;
    op_cancel(op);
    op->delivered = 1;
    Py_CLEAR(op->futiter);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *op_cancel_method(kpy_op *op, PyObject *unused) {
    (void)unused;
    op_cancel(op);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* _take(n): up to n of a cursor's buffered Records; the statement reads on once fewer than
 * prefetch wait. */
static PyObject *op_take(kpy_op *op, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (op->rows == NULL || n <= 0)
        return PyList_New(0);
    Py_ssize_t have = PyList_GET_SIZE(op->rows);
    Py_ssize_t k = n < have ? n : have;
    PyObject *out = PyList_GetSlice(op->rows, 0, k);
    if (out == NULL || PyList_SetSlice(op->rows, 0, k, NULL) < 0) {
        Py_XDECREF(out);
        return NULL;
    }
    /* A statement stopped for a conversion failure (cursor_stop_soon) stays paused. */
    if (op->paused && op->rows_exc.type == NULL && PyList_GET_SIZE(op->rows) < op->prefetch) {
        op->paused = 0;
        if (op->state == KPY_OP_RUNNING && op->cobj != NULL && op->cobj->conn != NULL)
            keel_conn_resume(op->cobj->conn);
    }
    return out;
}

/* _more(): a future completed when more rows are buffered or the statement ended. */
static PyObject *op_more(kpy_op *op, PyObject *unused) {
    (void)unused;
    if (op->state == KPY_OP_DONE || op->state == KPY_OP_DECODING || op->cancelled) {
        PyObject *f = keel__py_future_new(op->db->st, op->db->aloop);
        if (f != NULL)
            keel__py_future_set_result(op->db->st, f, Py_None);
        return f;
    }
    if (op->waiter == NULL && (op->waiter = keel__py_future_new(op->db->st, op->db->aloop)) == NULL)
        return NULL;
    return Py_NewRef(op->waiter);
}

static PyMethodDef op_methods[] = {
    { "_take", (PyCFunction)op_take, METH_O,
      "_take(n) -> list: up to n Records a cursor buffered (the statement then reads on)." },
    { "_more", (PyCFunction)op_more, METH_NOARGS,
      "_more() -> Future: completed when a cursor has more rows buffered or its statement "
      "ended." },
    { "send", (PyCFunction)op_send, METH_O, "Resumes the awaiting of the operation." },
    { "throw", (PyCFunction)(void (*)(void))op_throw, METH_FASTCALL,
      "Raises an exception at the await: the operation is cancelled first." },
    { "close", (PyCFunction)op_close, METH_NOARGS, "Abandons the operation (cancelling it)." },
    { "cancel", (PyCFunction)op_cancel_method, METH_NOARGS,
      "Cancels the operation: on the server if it runs, or releases its connection." },
    { NULL, NULL, 0, NULL },
};

static PyObject *op_get_decoding(kpy_op *op, void *unused) {
    (void)unused;
    return PyBool_FromLong(op->state == KPY_OP_DECODING);
}

static PyObject *op_get_future(kpy_op *op, void *unused) {
    (void)unused;
    return Py_NewRef(op->fut != NULL ? op->fut : Py_None);
}

static PyObject *op_get_buffered(kpy_op *op, void *unused) {
    (void)unused;
    return PyLong_FromSsize_t(op->rows != NULL ? PyList_GET_SIZE(op->rows) : 0);
}

static PyGetSetDef op_getset[] = {
    { "_future", (getter)op_get_future, NULL,
      "The future of the outcome (a cursor's: None at the end of its rows, or the error).", NULL },
    { "_buffered", (getter)op_get_buffered, NULL, "Records a cursor holds, not yet taken.", NULL },
    { "_decoding", (getter)op_get_decoding, NULL,
      "True while keel is done and the reply is being decoded in slices (tests).", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyType_Slot op_slots[] = {
    { Py_tp_doc, "An operation in flight; await it for its result." },
    { Py_tp_dealloc, op_dealloc },
    { Py_tp_traverse, op_traverse },
    { Py_tp_clear, op_clear },
    { Py_tp_iter, PyObject_SelfIter },
    { Py_tp_iternext, op_iternext },
    { Py_tp_methods, op_methods },
    { Py_tp_getset, op_getset },
    { Py_am_await, op_await },
    { Py_am_send, op_am_send },
    { 0, NULL },
};

PyType_Spec keel__py_op_spec = {
    .name = "keel._native.Op",
    .basicsize = sizeof(kpy_op),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = op_slots,
};
