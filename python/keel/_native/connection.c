/* python/keel/_native/connection.c - the native Connection: one leased keel_conn and its operations. */
#include "module.h"

#include <string.h>
#include <structmember.h>

/*
 * A Connection runs one operation at a time. When the running one was cancelled but keel has not
 * reported its end yet, later operations wait in a queue and start as soon as it ends, so a
 * connection stays usable right after a cancelled query. Using one connection from two tasks at
 * once is an error (InterfaceError), as with every driver.
 */

PyObject *keel__py_conn_new(kpy_db *db, keel_conn *conn) {
    PyTypeObject *cls = db->st->connection_class;
    kpy_conn *c = (kpy_conn *)cls->tp_alloc(cls, 0);
    if (c == NULL) {
        keel_conn_release(conn);
        return NULL;
    }
    c->db = (kpy_db *)Py_NewRef(db);
    c->conn = conn;
    db->nleased++;
    c->lnext = db->leased;
    if (db->leased != NULL)
        db->leased->lprev = c;
    db->leased = c;
    const char *name = keel_conn_database(conn);
    const char *engine = keel_conn_engine(conn);
    c->database = PyUnicode_FromString(name != NULL ? name : "");
    c->engine = PyUnicode_FromString(engine != NULL ? engine : "");
    if (c->database == NULL || c->engine == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

void keel__py_conn_release(kpy_conn *c) {
    keel_conn *conn = c->conn;
    if (conn == NULL)
        return;
    c->conn = NULL;
    while (c->qhead != NULL) {
        kpy_op *op = c->qhead;
        c->qhead = op->next;
        op->next = NULL;
        if (c->qhead == NULL)
            c->qtail = NULL;
        keel__py_op_abandon(op, "the connection was released before the operation could run");
    }
    /* A running operation is cancelled by keel, and its callback still completes it. keel drops
     * the notify handler, and unlistens before the connection goes back to the pool. */
    keel_conn_release(conn);
    if (c->lprev != NULL)
        c->lprev->lnext = c->lnext;
    else
        c->db->leased = c->lnext;
    if (c->lnext != NULL)
        c->lnext->lprev = c->lprev;
    c->lprev = c->lnext = NULL;
    keel__py_db_conn_released(c->db);
    Py_CLEAR(c->notify);
}

void keel__py_conn_op_done(kpy_conn *c, kpy_op *op) {
    if (c->running == op)
        c->running = NULL;
    if (c->conn != NULL && keel_conn_txn_status(c->conn) == KEEL_TXN_IDLE)
        c->txn_epoch++;
    while (c->running == NULL && c->qhead != NULL && c->conn != NULL) {
        kpy_op *next = c->qhead;
        c->qhead = next->next;
        next->next = NULL;
        if (c->qhead == NULL)
            c->qtail = NULL;
        keel__py_op_submit_queued(c, next);
    }
}

static int conn_traverse(kpy_conn *c, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->db);
    Py_VISIT(c->database);
    Py_VISIT(c->engine);
    Py_VISIT(c->notify);
    for (kpy_op *op = c->qhead; op != NULL; op = op->next)
        Py_VISIT(op);
    return 0;
}

static void conn_dealloc(kpy_conn *c) {
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)c);
    /* Dropped without release: give it back so the pool (and close()) do not wait forever. */
    if (c->conn != NULL) {
        kpy_exc_save saved;
        kpy_exc_stash(&saved);
        keel__py_conn_release(c);
        kpy_exc_unstash(&saved);
    }
    Py_CLEAR(c->database);
    Py_CLEAR(c->engine);
    Py_CLEAR(c->notify);
    Py_CLEAR(c->db);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static PyObject *released_error(kpy_conn *c) {
    return keel__py_raise(c->db->st, KEEL_ERR_CLOSED, NULL, "the connection has been released");
}

/* _query(mode, sql, args, column[, timeout[, rowtype]]) */
static PyObject *conn_query(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *rowtype = nargs == 6 ? args[5] : NULL;
    if (keel__py_args_timeout(args, rowtype ? 5 : nargs, 4,
                              "_query(mode, sql, args, column[, timeout[, rowtype]])",
                              &timeout) < 0)
        return NULL;
    int mode = (int)PyLong_AsLong(args[0]);
    Py_ssize_t column = PyLong_AsSsize_t(args[3]);
    if ((mode == -1 || column == -1) && PyErr_Occurred())
        return NULL;
    PyObject *op = keel__py_conn_query(c, KPY_OP_QUERY, mode, args[1], args[2], column,
                                       KEEL_TXN_BEGIN, 0, timeout);
    if (op != NULL && rowtype != NULL)
        keel__py_op_set_rowtype(op, rowtype);
    return op;
}

/* _executemany(sql, rows[, timeout]) */
static PyObject *conn_executemany(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 2, "_executemany(sql, rows[, timeout])", &timeout) < 0)
        return NULL;
    return keel__py_conn_query(c, KPY_OP_MANY, KPY_MODE_EXECUTE, args[0], args[1], 0,
                               KEEL_TXN_BEGIN, 0, timeout);
}

/* _cursor(sql, args, prefetch[, timeout[, rowtype]]) */
static PyObject *conn_cursor(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *rowtype = nargs == 5 ? args[4] : NULL;
    if (keel__py_args_timeout(args, rowtype ? 4 : nargs, 3,
                              "_cursor(sql, args, prefetch[, timeout[, rowtype]])", &timeout) < 0)
        return NULL;
    Py_ssize_t prefetch = PyLong_AsSsize_t(args[2]);
    if (prefetch == -1 && PyErr_Occurred())
        return NULL;
    if (prefetch < 1) {
        PyErr_Format(PyExc_ValueError, "prefetch must be at least 1, not %zd", prefetch);
        return NULL;
    }
    PyObject *op = keel__py_conn_query(c, KPY_OP_QUERY, KPY_MODE_CURSOR, args[0], args[1], prefetch,
                                       KEEL_TXN_BEGIN, 0, timeout);
    if (op != NULL && rowtype != NULL)
        keel__py_op_set_rowtype(op, rowtype);
    return op;
}

/* _cursor_open(sql, args, prefetch[, timeout]) */
static PyObject *conn_cursor_open(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 3, "_cursor_open(sql, args, prefetch[, timeout])",
                              &timeout) < 0)
        return NULL;
    Py_ssize_t prefetch = PyLong_AsSsize_t(args[2]);
    if (prefetch == -1 && PyErr_Occurred())
        return NULL;
    if (prefetch < 1) {
        PyErr_Format(PyExc_ValueError, "prefetch must be at least 1, not %zd", prefetch);
        return NULL;
    }
    return keel__py_conn_query(c, KPY_OP_CURSOR_OPEN, KPY_MODE_EXECUTE, args[0], args[1], prefetch,
                               KEEL_TXN_BEGIN, 0, timeout);
}

/* _cursor_fetch(cursor, n[, timeout[, rowtype]]) */
static PyObject *conn_cursor_fetch(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *rowtype = nargs == 4 ? args[3] : NULL;
    if (keel__py_args_timeout(args, rowtype ? 3 : nargs, 2,
                              "_cursor_fetch(cursor, n[, timeout[, rowtype]])", &timeout) < 0)
        return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "n must be at least 1, not %zd", n);
        return NULL;
    }
    PyObject *op = keel__py_conn_query(c, KPY_OP_CURSOR_FETCH, KPY_MODE_FETCH, NULL, args[0], n,
                                       KEEL_TXN_BEGIN, 0, timeout);
    if (op != NULL && rowtype != NULL)
        keel__py_op_set_rowtype(op, rowtype);
    return op;
}

/* _prepare(sql[, timeout]) */
static PyObject *conn_prepare(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 1, "_prepare(sql[, timeout])", &timeout) < 0)
        return NULL;
    return keel__py_conn_query(c, KPY_OP_PREPARE, KPY_MODE_EXECUTE, args[0], NULL, 0,
                               KEEL_TXN_BEGIN, 0, timeout);
}

/* _copy(table, records, columns, schema[, timeout]) */
static PyObject *conn_copy(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 4, "_copy(table, records, columns, schema[, timeout])",
                              &timeout) < 0)
        return NULL;
    PyObject *params = keel__py_copy_args(c->db->st, args[0], args[1], args[2], args[3]);
    if (params == NULL)
        return NULL;
    PyObject *op = keel__py_conn_query(c, KPY_OP_COPY, KPY_MODE_EXECUTE, args[0], params, 0,
                                       KEEL_TXN_BEGIN, 0, timeout);
    Py_DECREF(params);
    return op;
}

/* _txn(op, depth) */
static PyObject *conn_txn(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_txn(op, depth)");
        return NULL;
    }
    long op = PyLong_AsLong(args[0]);
    long depth = PyLong_AsLong(args[1]);
    if ((op == -1 || depth == -1) && PyErr_Occurred())
        return NULL;
    if (op < KEEL_TXN_BEGIN || op > KEEL_TXN_ROLLBACK_TO || depth < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid transaction operation");
        return NULL;
    }
    return keel__py_conn_query(c, KPY_OP_TXN, KPY_MODE_EXECUTE, NULL, NULL, 0, (keel_txn_op)op,
                               (unsigned)depth, 0);
}

int keel__py_command_args(kpy_state *st, PyObject *dbname, PyObject *cmd, PyObject **name_out,
                          PyObject **bson_out) {
    *name_out = NULL;
    *bson_out = NULL;
    if (dbname != Py_None) {
        if (!PyUnicode_Check(dbname)) {
            PyErr_Format(PyExc_TypeError, "dbname must be a str or None, not %.100s",
                         Py_TYPE(dbname)->tp_name);
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(dbname, &n);
        if (s == NULL)
            return -1;
        if (n == 0 || strlen(s) != (size_t)n) {
            keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL,
                           "dbname must be a non-empty name without NUL characters");
            return -1;
        }
        *name_out = Py_NewRef(dbname);
    }
    if (!PyDict_Check(cmd) || PyDict_GET_SIZE(cmd) == 0) {
        Py_CLEAR(*name_out);
        keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL,
                       "a command is a non-empty dict whose first key is the command name");
        return -1;
    }
    *bson_out = keel__py_bson_encode(st, cmd, KPY_BSON_MAX_COMMAND);
    if (*bson_out == NULL) {
        Py_CLEAR(*name_out);
        return -1;
    }
    return 0;
}

/* _command(dbname, cmd[, timeout]) */
static PyObject *conn_command(kpy_conn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 2, "_command(dbname, cmd[, timeout])", &timeout) < 0)
        return NULL;
    PyObject *name, *bson;
    if (keel__py_command_args(c->db->st, args[0], args[1], &name, &bson) < 0)
        return NULL;
    PyObject *op = keel__py_conn_query(c, KPY_OP_COMMAND, KPY_MODE_EXECUTE, name, bson, 0,
                                       KEEL_TXN_BEGIN, 0, timeout);
    Py_XDECREF(name);
    Py_DECREF(bson);
    return op;
}

/*
 * keel's notify handler (keel_notify_cb) of a Connection with _set_notify_handler: calls its
 * callable with (pid, channel, payload, None), or (None, None, None, exc) when the connection was
 * lost while it listened. Runs on the loop thread with the GIL held (keel calls back from the
 * loop adapter's callbacks); the callable only queues work (keel.Listener, add_listener), and
 * what it raises is reported as unraisable.
 */
static void conn_notified(keel_conn *conn, const keel_notification *n, const keel_error *err,
                          void *arg) {
    (void)conn;
    kpy_conn *c = arg;
    if (c->notify == NULL)
        return;
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    PyObject *fn = Py_NewRef(c->notify);
    PyObject *res = NULL;
    if (n != NULL) {
        PyObject *pid = PyLong_FromLongLong((long long)n->pid);
        PyObject *channel =
            PyUnicode_DecodeUTF8(n->channel, (Py_ssize_t)strlen(n->channel), "replace");
        PyObject *payload =
            PyUnicode_DecodeUTF8(n->payload, (Py_ssize_t)strlen(n->payload), "replace");
        if (pid != NULL && channel != NULL && payload != NULL)
            res = PyObject_CallFunctionObjArgs(fn, pid, channel, payload, Py_None, NULL);
        Py_XDECREF(pid);
        Py_XDECREF(channel);
        Py_XDECREF(payload);
    } else {
        PyObject *exc = keel__py_error_new(c->db->st, err);
        if (exc != NULL)
            res = PyObject_CallFunctionObjArgs(fn, Py_None, Py_None, Py_None, exc, NULL);
        Py_XDECREF(exc);
    }
    if (res == NULL)
        PyErr_WriteUnraisable(fn);
    Py_XDECREF(res);
    Py_DECREF(fn);
    kpy_exc_unstash(&saved);
}

/* _set_notify_handler(fn or None) */
static PyObject *conn_set_notify_handler(kpy_conn *c, PyObject *fn) {
    if (c->conn == NULL)
        return released_error(c);
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "a notify handler is callable or None, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    keel_error err;
    if (keel_conn_set_notify_handler(c->conn, fn == Py_None ? NULL : conn_notified, c, &err) !=
        KEEL_OK)
        return keel__py_error_raise(c->db->st, &err);
    Py_XSETREF(c->notify, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

PyObject *keel__py_conn_in_transaction(const keel_conn *conn, int depth) {
    switch (keel_conn_txn_status(conn)) {
    case KEEL_TXN_ACTIVE:
    case KEEL_TXN_FAILED:
        Py_RETURN_TRUE;
    case KEEL_TXN_UNKNOWN:
        /* A statement is running: the transactions this object opened are what is known. */
        return PyBool_FromLong(depth > 0);
    default:
        Py_RETURN_FALSE;
    }
}

PyObject *keel__py_conn_repr(PyObject *self, PyObject *database, PyObject *engine, int released) {
    return PyUnicode_FromFormat("<%s database=%R engine=%R%s>", Py_TYPE(self)->tp_name,
                                database != NULL ? database : Py_None,
                                engine != NULL ? engine : Py_None, released ? " released" : "");
}

static PyObject *conn_get_in_transaction(kpy_conn *c, void *closure) {
    (void)closure;
    if (c->conn == NULL)
        return released_error(c);
    return keel__py_conn_in_transaction(c->conn, c->depth);
}

static PyObject *conn_get_released(kpy_conn *c, void *closure) {
    (void)closure;
    return PyBool_FromLong(c->conn == NULL);
}

static PyObject *conn_repr(kpy_conn *c) {
    return keel__py_conn_repr((PyObject *)c, c->database, c->engine, c->conn == NULL);
}

static PyMethodDef conn_methods[] = {
    { "_query", (PyCFunction)(void (*)(void))conn_query, METH_FASTCALL,
      "_query(mode, sql, args, column[, timeout[, rowtype]]) -> awaitable; rowtype: what rows "
      "become (None: Record; a Record subclass; a callable taking the columns as keywords)" },
    { "_executemany", (PyCFunction)(void (*)(void))conn_executemany, METH_FASTCALL,
      "_executemany(sql, rows[, timeout]) -> awaitable" },
    { "_cursor", (PyCFunction)(void (*)(void))conn_cursor, METH_FASTCALL,
      "_cursor(sql, args, prefetch[, timeout[, rowtype]]) -> Op: a statement whose rows a cursor "
      "takes "
      "(Op._take, Op._more), paused while prefetch of them wait." },
    { "_cursor_open", (PyCFunction)(void (*)(void))conn_cursor_open, METH_FASTCALL,
      "_cursor_open(sql, args, prefetch[, timeout]) -> Op: opens a server-side cursor (MySQL); "
      "its result is the cursor, for _cursor_fetch" },
    { "_cursor_fetch", (PyCFunction)(void (*)(void))conn_cursor_fetch, METH_FASTCALL,
      "_cursor_fetch(cursor, n[, timeout[, rowtype]]) -> Op: the next n rows of a server-side "
      "cursor, as fetch returns rows (fewer only at its end)" },
    { "_prepare", (PyCFunction)(void (*)(void))conn_prepare, METH_FASTCALL,
      "_prepare(sql[, timeout]) -> awaitable ((type name, keel type) per parameter, (name, type "
      "name, keel type) per column): prepares a statement without running it." },
    { "_copy", (PyCFunction)(void (*)(void))conn_copy, METH_FASTCALL,
      "_copy(table, records, columns, schema[, timeout]) -> awaitable int: a bulk load (COPY on "
      "PostgreSQL) returning the rows loaded." },
    { "_txn", (PyCFunction)(void (*)(void))conn_txn, METH_FASTCALL,
      "_txn(op, depth) -> awaitable: BEGIN, COMMIT, ROLLBACK or a savepoint step." },
    { "_set_notify_handler", (PyCFunction)conn_set_notify_handler, METH_O,
      "_set_notify_handler(fn or None): fn(pid, channel, payload, None) for each notification "
      "(PostgreSQL's NOTIFY) that arrives, fn(None, None, None, exc) once if the connection is "
      "lost while it listens. NotSupportedError on other engines." },
    { "_command", (PyCFunction)(void (*)(void))conn_command, METH_FASTCALL,
      "_command(dbname, cmd[, timeout]) -> awaitable dict: runs a document command (MongoDB) "
      "against the engine database dbname (None: the configured one) and returns the server's "
      "reply." },
    { NULL, NULL, 0, NULL },
};

static PyObject *conn_get_db(kpy_conn *c, void *closure) {
    (void)closure;
    return Py_NewRef((PyObject *)c->db);
}

static PyGetSetDef conn_getset[] = {
    { "_db", (getter)conn_get_db, NULL, "The Database the connection was leased from.", NULL },
    { "in_transaction", (getter)conn_get_in_transaction, NULL, "True inside a transaction block.",
      NULL },
    { "released", (getter)conn_get_released, NULL, "True once given back to the pool.", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMemberDef conn_members[] = {
    { "database", T_OBJECT, offsetof(kpy_conn, database), READONLY,
      "Name of the database of the connection." },
    { "engine", T_OBJECT, offsetof(kpy_conn, engine), READONLY,
      "Engine name (\"postgresql\", \"sqlite\")." },
    { "_depth", T_INT, offsetof(kpy_conn, depth), 0, "Transaction nesting depth." },
    { "_txn_epoch", T_ULONGLONG, offsetof(kpy_conn, txn_epoch), READONLY,
      "How many operations ended outside a transaction." },
    { "__weaklistoffset__", T_PYSSIZET, offsetof(kpy_conn, weakreflist), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot conn_slots[] = {
    { Py_tp_doc, "A connection leased from a pool (see keel.Connection)." },
    { Py_tp_dealloc, conn_dealloc },
    { Py_tp_traverse, conn_traverse },
    { Py_tp_repr, conn_repr },
    { Py_tp_methods, conn_methods },
    { Py_tp_getset, conn_getset },
    { Py_tp_members, conn_members },
    { 0, NULL },
};

PyType_Spec keel__py_connection_spec = {
    .name = "keel._native.Connection",
    .basicsize = sizeof(kpy_conn),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = conn_slots,
};
