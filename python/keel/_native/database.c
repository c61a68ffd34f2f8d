/* python/keel/_native/database.c - the native Database: configuration, start, queries, pools and close. */
#include "module.h"

#include <string.h>
#include <structmember.h>

/*
 * A Database is configured (and validated) by its constructor, binds to the running asyncio loop
 * on start (explicit, or implied by the first query) and opens one keel_db there. close() stops
 * new work, waits until every leased connection and every database-level operation is back,
 * closes the keel_db and frees the loop adapter once keel has let go of every watch and timer.
 */

static void warm_cb(keel_conn *conn, const keel_error *err, void *arg) {
    /* Warming is best effort: a database that is down is reported by queries and health. */
    (void)conn;
    (void)err;
    (void)arg;
}

/* ---- construction ---- */

static PyObject *db_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    PyObject *m = PyType_GetModuleByDef(type, &keel__py_moduledef);
    if (m == NULL)
        return NULL;
    kpy_db *self = (kpy_db *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->st = PyModule_GetState(m);
    self->module = Py_NewRef(m);
    self->phase = KPY_DB_NEW;
    return (PyObject *)self;
}

static int db_init(kpy_db *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = { "url", "path", "settings", "json_serializer", "json_deserializer",
                              NULL };
    PyObject *url = Py_None, *path = Py_None, *settings = Py_None, *dumps = Py_None,
             *loads = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOOO:Database", kwlist, &url, &path, &settings,
                                     &dumps, &loads))
        return -1;
    if ((dumps != Py_None && !PyCallable_Check(dumps)) ||
        (loads != Py_None && !PyCallable_Check(loads))) {
        PyErr_Format(
            PyExc_TypeError, "%s must be callable or None, not %.100s",
            dumps != Py_None && !PyCallable_Check(dumps) ? "json_serializer" : "json_deserializer",
            Py_TYPE(dumps != Py_None && !PyCallable_Check(dumps) ? dumps : loads)->tp_name);
        return -1;
    }
    if (self->cfg != NULL || self->phase != KPY_DB_NEW) {
        PyErr_SetString(PyExc_RuntimeError, "Database is already initialised");
        return -1;
    }
    kpy_state *st = self->st;
    keel_error err;
    keel_config *cfg = NULL;
    keel_status s = keel_config_new(&cfg, &err);
    if (s != KEEL_OK) {
        keel__py_error_raise(st, &err);
        return -1;
    }
    PyObject *seq = NULL;
    if (path != Py_None) {
        PyObject *bytes = NULL;
        if (!PyUnicode_FSConverter(path, &bytes))
            goto fail;
        const char *p = PyBytes_AS_STRING(bytes);
        /* Reading the file blocks; other threads may run meanwhile. */
        Py_BEGIN_ALLOW_THREADS s = keel_config_load_file(cfg, p, &err);
        Py_END_ALLOW_THREADS Py_DECREF(bytes);
        if (s != KEEL_OK) {
            if (err.code == KEEL_ERR_IO)
                err.code = KEEL_ERR_CONFIG;
            keel__py_error_raise(st, &err);
            goto fail;
        }
    }
    if ((s = keel_config_apply_env(cfg, &err)) != KEEL_OK) {
        keel__py_error_raise(st, &err);
        goto fail;
    }
    if (settings != Py_None) {
        seq = PySequence_Fast(settings, "settings must be a sequence of (path, value) pairs");
        if (seq == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
            PyObject *k, *v;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_Check(k = PyTuple_GET_ITEM(pair, 0)) ||
                !PyUnicode_Check(v = PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "settings must be (str, str) pairs");
                goto fail;
            }
            const char *ks = PyUnicode_AsUTF8(k), *vs = PyUnicode_AsUTF8(v);
            if (ks == NULL || vs == NULL)
                goto fail;
            if ((s = keel_config_set(cfg, ks, vs, &err)) != KEEL_OK) {
                keel__py_error_raise(st, &err);
                goto fail;
            }
        }
    }
    if (url != Py_None) {
        const char *us = PyUnicode_Check(url) ? PyUnicode_AsUTF8(url) : NULL;
        if (us == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "url must be a str");
            goto fail;
        }
        if ((s = keel_config_set_url(cfg, us, &err)) != KEEL_OK) {
            keel__py_error_raise(st, &err);
            goto fail;
        }
    }
    if ((s = keel_config_validate(cfg, &err)) != KEEL_OK) {
        keel__py_error_raise(st, &err);
        goto fail;
    }
    Py_XDECREF(seq);
    self->cfg = cfg;
    Py_XSETREF(self->json_dumps, dumps != Py_None ? Py_NewRef(dumps) : NULL);
    Py_XSETREF(self->json_loads, loads != Py_None ? Py_NewRef(loads) : NULL);
    return 0;
fail:
    Py_XDECREF(seq);
    keel_config_free(cfg);
    return -1;
}

static int db_traverse(kpy_db *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->aloop);
    Py_VISIT(self->close_waiters);
    Py_VISIT(self->json_dumps);
    Py_VISIT(self->json_loads);
    Py_VISIT(self->decoders);
    return 0;
}

static int db_clear(kpy_db *self) {
    Py_CLEAR(self->close_waiters);
    Py_CLEAR(self->json_dumps);
    Py_CLEAR(self->json_loads);
    Py_CLEAR(self->decoders);
    return 0;
}

/* ---- closing what a Database dropped while open left behind ---- */

/* The keel_db of a Database that went away open, and the adapter of its loop. */
typedef struct kpy_orphan {
    keel_db *db; /* NULL once closed */
    kpy_loop *loop;
} kpy_orphan;

static void orphan_close(kpy_orphan *o) {
    if (o->db == NULL)
        return;
    keel_db *db = o->db;
    o->db = NULL;
    keel__py_loop_close_db(o->loop, db);
    keel__py_loop_detach(o->loop, NULL, NULL);
}

static void orphan_deferred(PyObject *capsule) {
    kpy_orphan *o = PyCapsule_GetPointer(capsule, "keel.orphan");
    if (o != NULL)
        orphan_close(o);
}

/* The capsule goes once the deferred call has run, or without it having run when the asyncio
 * loop is closed first (its pending callbacks are dropped then): the db is closed either way. */
static void orphan_capsule_free(PyObject *capsule) {
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    kpy_orphan *o = PyCapsule_GetPointer(capsule, "keel.orphan");
    if (o != NULL) {
        orphan_close(o);
        PyMem_Free(o);
    }
    kpy_exc_unstash(&saved);
}

/*
 * Closes db, whose Database is being freed, on the next iteration of the asyncio loop. The last
 * reference to a Database often goes inside a keel callback (the completion of an operation
 * nobody awaits any more holds the Database until it runs), where keel's frames up the stack
 * still use the db: keel would postpone the close itself, but then wait for the worker threads
 * there, with the GIL held. From the asyncio loop, the close releases the GIL while it waits.
 */
static void close_orphan(kpy_loop *L, keel_db *db) {
    kpy_orphan *o = PyMem_Malloc(sizeof *o);
    PyObject *capsule = NULL;
    if (o != NULL) {
        o->db = db;
        o->loop = L;
        capsule = PyCapsule_New(o, "keel.orphan", orphan_capsule_free);
        if (capsule == NULL)
            PyMem_Free(o);
    }
    if (capsule != NULL && keel__py_loop_call_soon(L, orphan_deferred, capsule) == 0) {
        Py_DECREF(capsule);
        return;
    }
    /* Out of memory, or the asyncio loop is closed (then no keel callback can be running):
     * close here. The capsule, if any, already owns the db and closes it as it goes. */
    PyErr_Clear();
    if (capsule != NULL) {
        Py_DECREF(capsule);
        return;
    }
    kpy_orphan now = { db, L };
    orphan_close(&now);
}

static void db_dealloc(kpy_db *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* Dropped while open: no connection is leased and no operation runs (both would hold a
     * reference), so nothing of the db is needed any more. */
    if (self->db != NULL) {
        kpy_exc_save saved;
        kpy_exc_stash(&saved);
        close_orphan(self->loop, self->db);
        self->db = NULL;
        self->loop = NULL;
        kpy_exc_unstash(&saved);
    }
    keel_config_free(self->cfg);
    self->cfg = NULL;
    db_clear(self);
    Py_CLEAR(self->aloop);
    Py_CLEAR(self->module);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- start ---- */

static int check_initialised(kpy_db *self) {
    if (self->cfg == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Database.__init__ was not called");
        return -1;
    }
    return 0;
}

int keel__py_db_ensure_open(kpy_db *self) {
    kpy_state *st = self->st;
    if (self->phase == KPY_DB_OPEN) {
        PyObject *running = PyObject_CallNoArgs(st->get_running_loop);
        if (running == NULL)
            return -1;
        Py_DECREF(running);
        if (running == self->aloop)
            return 0;
        if (running == Py_None) {
            keel__py_raise(st, KEEL_ERR_INVALID_ARGUMENT, NULL,
                           "keel.Database must be used from a coroutine on its event loop");
            return -1;
        }
        keel__py_raise(st, KEEL_ERR_INVALID_ARGUMENT, NULL,
                       "this keel.Database is bound to another event loop (the one it was "
                       "started on); use one Database per event loop");
        return -1;
    }
    if (self->phase != KPY_DB_NEW) {
        keel__py_raise(st, KEEL_ERR_CLOSED, NULL, "the database has been closed");
        return -1;
    }
    if (check_initialised(self) < 0)
        return -1;
    PyObject *running = PyObject_CallNoArgs(st->get_running_loop);
    if (running == NULL)
        return -1;
    if (running == Py_None) {
        Py_DECREF(running);
        keel__py_raise(st, KEEL_ERR_INVALID_ARGUMENT, NULL,
                       "keel.Database must be started from a coroutine running on an asyncio "
                       "event loop");
        return -1;
    }
    kpy_loop *L = keel__py_loop_new(st, self->module, running);
    if (L == NULL) {
        Py_DECREF(running);
        return -1;
    }
    keel_error err;
    keel_db *db = NULL;
    keel_status s = keel_db_open(&db, self->cfg, keel__py_loop_keel(L), &err);
    if (s != KEEL_OK) {
        keel__py_loop_detach(L, NULL, NULL);
        Py_DECREF(running);
        keel__py_error_raise(st, &err);
        return -1;
    }
    self->db = db;
    self->loop = L;
    self->aloop = running;
    self->phase = KPY_DB_OPEN;
    /* Fill every pool to min_size in the background; failures surface on use. */
    for (size_t i = 0; i < keel_db_database_count(db); i++)
        keel_db_warm(db, keel_db_database_name(db, i), warm_cb, NULL, &err);
    return 0;
}

static PyObject *db_start(kpy_db *self, PyObject *unused) {
    (void)unused;
    if (keel__py_db_ensure_open(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- close ---- */

static void resolve_waiters(kpy_db *self) {
    PyObject *waiters = self->close_waiters;
    self->close_waiters = NULL;
    if (waiters == NULL)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiters); i++)
        keel__py_future_set_result(self->st, PyList_GET_ITEM(waiters, i), Py_None);
    Py_DECREF(waiters);
}

/* The loop adapter is gone: the close is complete. */
static void db_loop_freed(PyObject *arg) {
    kpy_db *self = (kpy_db *)arg;
    self->phase = KPY_DB_CLOSED;
    resolve_waiters(self);
}

/*
 * Closes the keel_db and lets the loop adapter go; the close is complete (close()'s futures done)
 * once the adapter is freed. What still used the db gets keel's KEEL_ERR_CLOSED: the callbacks of
 * its operations and connection waits run in here.
 */
static void close_keel_db(kpy_db *self) {
    keel_db *db = self->db;
    kpy_loop *L = self->loop;
    self->db = NULL;
    /* self->loop stays set during the close: the callbacks of operations it ends take the GIL
     * back through it. */
    keel__py_loop_close_db(L, db);
    self->loop = NULL;
    keel__py_loop_detach(L, db_loop_freed, Py_NewRef(self));
}

/* Closes the keel_db once nothing of it is in use any more. */
static void db_try_close(kpy_db *self) {
    if (self->phase != KPY_DB_CLOSING || self->db == NULL || self->nleased != 0 || self->nops != 0)
        return;
    close_keel_db(self);
}

static void db_try_close_deferred(PyObject *arg) {
    kpy_db *self = (kpy_db *)arg;
    self->close_scheduled = 0;
    db_try_close(self);
}

/*
 * Called whenever a count drops, often from inside a keel callback: the close itself runs on the
 * next loop iteration, outside of keel.
 */
static void db_maybe_close(kpy_db *self) {
    if (self->phase != KPY_DB_CLOSING || self->db == NULL || self->nleased != 0 ||
        self->nops != 0 || self->close_scheduled)
        return;
    if (keel__py_loop_call_soon(self->loop, db_try_close_deferred, (PyObject *)self) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
        return;
    }
    self->close_scheduled = 1;
}

void keel__py_db_conn_released(kpy_db *self) {
    self->nleased--;
    db_maybe_close(self);
}

void keel__py_db_op_finished(kpy_db *self) {
    self->nops--;
    db_maybe_close(self);
}

static PyObject *db_close(kpy_db *self, PyObject *unused) {
    (void)unused;
    if (self->phase == KPY_DB_NEW) {
        self->phase = KPY_DB_CLOSED;
        Py_RETURN_NONE;
    }
    if (self->phase == KPY_DB_CLOSED)
        Py_RETURN_NONE;
    self->phase = KPY_DB_CLOSING;
    PyObject *fut = keel__py_future_new(self->st, self->aloop);
    if (fut == NULL)
        return NULL;
    if (self->close_waiters == NULL && (self->close_waiters = PyList_New(0)) == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    if (PyList_Append(self->close_waiters, fut) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    if (!self->close_scheduled)
        db_try_close(self);
    return fut;
}

/*
 * Tells the listener of c (its notify handler, as for a lost connection) that the database was
 * closed under it, so that an iteration waiting for notifications ends. What the handler raises
 * is reported as unraisable.
 */
static void tell_listener(kpy_db *self, kpy_conn *c) {
    keel_error err;
    keel_error_clear(&err);
    err.code = KEEL_ERR_CLOSED;
    const char *name = PyUnicode_AsUTF8(c->database);
    if (name == NULL) {
        PyErr_Clear();
        name = "?";
    }
    snprintf(err.database, sizeof err.database, "%s", name);
    snprintf(err.message, sizeof err.message,
             "database '%s' was closed while this connection listened (Database.close(timeout=) "
             "did not wait for it)",
             name);
    PyObject *exc = keel__py_error_new(self->st, &err);
    PyObject *res =
        exc != NULL ? PyObject_CallFunctionObjArgs(c->notify, Py_None, Py_None, Py_None, exc, NULL)
                    : NULL;
    if (res == NULL)
        PyErr_WriteUnraisable(c->notify);
    Py_XDECREF(res);
    Py_XDECREF(exc);
}

/*
 * _close_now(): a close in progress (after _close) stops waiting: the keel_db is closed with
 * connections still leased and operations still running. keel cancels their statements on the
 * server and fails them with KEEL_ERR_CLOSED; leased Connections stay with their holders as
 * closed handles (every later call raises InterfaceError until they are released); listeners
 * are told through their notify handlers. A no-op when nothing is left to close.
 */
static PyObject *db_close_now(kpy_db *self, PyObject *unused) {
    (void)unused;
    if (self->phase != KPY_DB_CLOSING || self->db == NULL)
        Py_RETURN_NONE;
    /* The handlers are called once the db is closed, so that what they wake finds it closed;
     * the Connections are held meanwhile, since a handler may release one. */
    PyObject *listening = PyList_New(0);
    if (listening == NULL)
        return NULL;
    for (kpy_conn *c = self->leased; c != NULL; c = c->lnext) {
        if (c->notify != NULL && PyList_Append(listening, (PyObject *)c) < 0) {
            Py_DECREF(listening);
            return NULL;
        }
    }
    close_keel_db(self);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(listening); i++) {
        kpy_conn *c = (kpy_conn *)PyList_GET_ITEM(listening, i);
        if (c->notify != NULL)
            tell_listener(self, c);
    }
    Py_DECREF(listening);
    Py_RETURN_NONE;
}

/* ---- queries ---- */

/* _query(mode, sql, args, database, column[, timeout[, rowtype]]) */
static PyObject *db_query(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *rowtype = nargs == 7 ? args[6] : NULL;
    if (keel__py_args_timeout(args, rowtype ? 6 : nargs, 5,
                              "_query(mode, sql, args, database, column[, timeout[, rowtype]])",
                              &timeout) < 0)
        return NULL;
    int mode = (int)PyLong_AsLong(args[0]);
    Py_ssize_t column = PyLong_AsSsize_t(args[4]);
    if ((mode == -1 || column == -1) && PyErr_Occurred())
        return NULL;
    PyObject *op =
        keel__py_db_query(self, KPY_OP_QUERY, mode, args[1], args[2], args[3], column, timeout);
    if (op != NULL && rowtype != NULL)
        keel__py_op_set_rowtype(op, rowtype);
    return op;
}

/* _executemany(sql, rows, database[, timeout]) */
static PyObject *db_executemany(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 3, "_executemany(sql, rows, database[, timeout])",
                              &timeout) < 0)
        return NULL;
    return keel__py_db_query(self, KPY_OP_MANY, KPY_MODE_EXECUTE, args[0], args[1], args[2], 0,
                             timeout);
}

/* _copy(table, records, columns, schema, database[, timeout]): acquire, bulk load, release. */
static PyObject *db_copy(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 5,
                              "_copy(table, records, columns, schema, database[, timeout])",
                              &timeout) < 0)
        return NULL;
    if (check_initialised(self) < 0)
        return NULL;
    PyObject *params = keel__py_copy_args(self->st, args[0], args[1], args[2], args[3]);
    if (params == NULL)
        return NULL;
    PyObject *op = keel__py_db_query(self, KPY_OP_COPY, KPY_MODE_EXECUTE, args[0], params, args[4],
                                     0, timeout);
    Py_DECREF(params);
    return op;
}

/* _command(dbname, cmd, database[, timeout]): acquire, run one document command, release. */
static PyObject *db_command(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 3, "_command(dbname, cmd, database[, timeout])",
                              &timeout) < 0)
        return NULL;
    if (check_initialised(self) < 0)
        return NULL;
    PyObject *name, *bson;
    if (keel__py_command_args(self->st, args[0], args[1], &name, &bson) < 0)
        return NULL;
    PyObject *op =
        keel__py_db_query(self, KPY_OP_COMMAND, KPY_MODE_EXECUTE, name, bson, args[2], 0, timeout);
    Py_XDECREF(name);
    Py_DECREF(bson);
    return op;
}

/* _acquire(database[, timeout]) */
static PyObject *db_acquire(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    if (keel__py_args_timeout(args, nargs, 1, "_acquire(database[, timeout])", &timeout) < 0)
        return NULL;
    return keel__py_db_acquire(self, args[0], timeout);
}

static PyObject *db_release(kpy_db *self, PyObject *conn) {
    if (!PyObject_TypeCheck(conn, self->st->ConnectionType)) {
        PyErr_Format(PyExc_TypeError, "release() expects a keel.Connection, not %.100s",
                     Py_TYPE(conn)->tp_name);
        return NULL;
    }
    kpy_conn *c = (kpy_conn *)conn;
    if (c->db != self)
        return keel__py_raise(self->st, KEEL_ERR_INVALID_ARGUMENT, NULL,
                              "the connection belongs to another Database");
    keel__py_conn_release(c);
    Py_RETURN_NONE;
}

/* ---- introspection ---- */

/* The configured name for `name` (None: the default); raises UnknownDatabaseError. */
static const char *resolve_name(kpy_db *self, PyObject *name) {
    if (check_initialised(self) < 0)
        return NULL;
    if (name == NULL || name == Py_None)
        return keel_config_default_database(self->cfg);
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "database name must be a str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL)
        return NULL;
    if (keel_config_database_engine(self->cfg, s) == NULL) {
        keel__py_raise(self->st, KEEL_ERR_UNKNOWN_DATABASE, s, "unknown database '%s'", s);
        return NULL;
    }
    return s;
}

/* Parses the single optional argument `name` of engine(), pool_stats() and stats(). */
static int parse_name(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
                      PyObject **name) {
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "name") != 0)) {
        PyErr_Format(PyExc_TypeError, "%s(name=None) takes one optional argument", fname);
        return -1;
    }
    *name = nargs + nkw == 1 ? args[0] : Py_None;
    return 0;
}

static PyObject *db_engine(kpy_db *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    PyObject *name;
    if (parse_name(args, nargs, kwnames, "engine", &name) < 0)
        return NULL;
    const char *n = resolve_name(self, name);
    if (n == NULL)
        return NULL;
    return PyUnicode_FromString(keel_config_database_engine(self->cfg, n));
}

static PyObject *db_pool_stats(kpy_db *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    PyObject *name;
    if (parse_name(args, nargs, kwnames, "pool_stats", &name) < 0)
        return NULL;
    const char *n = resolve_name(self, name);
    if (n == NULL)
        return NULL;
    if (keel__py_db_ensure_open(self) < 0)
        return NULL;
    keel_pool_stats ps;
    keel_error err;
    if (keel_db_pool_stats(self->db, n, &ps, &err) != KEEL_OK)
        return keel__py_error_raise(self->st, &err);
    return Py_BuildValue("{snsnsnsnsnsnsd}", "size", (Py_ssize_t)ps.size, "idle",
                         (Py_ssize_t)ps.idle, "leased", (Py_ssize_t)ps.leased, "waiting",
                         (Py_ssize_t)ps.waiting, "min_size", (Py_ssize_t)ps.min_size, "max_size",
                         (Py_ssize_t)ps.max_size, "acquire_timeout", ps.acquire_timeout);
}

PyObject *keel__py_stats_dict(const keel_pool_stats *ps) {
    return Py_BuildValue("{snsnsnsnsnsnsKsKsKsKsdsd}", "size", (Py_ssize_t)ps->size, "idle",
                         (Py_ssize_t)ps->idle, "in_use", (Py_ssize_t)ps->leased, "waiting",
                         (Py_ssize_t)ps->waiting, "min_size", (Py_ssize_t)ps->min_size, "max_size",
                         (Py_ssize_t)ps->max_size, "connects", (unsigned long long)ps->connects,
                         "connect_failures", (unsigned long long)ps->connect_failures, "acquires",
                         (unsigned long long)ps->acquires, "acquire_timeouts",
                         (unsigned long long)ps->acquire_timeouts, "acquire_wait_p50",
                         ps->acquire_wait_p50, "acquire_wait_p99", ps->acquire_wait_p99);
}

static PyObject *db_stats(kpy_db *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    PyObject *name;
    if (parse_name(args, nargs, kwnames, "stats", &name) < 0)
        return NULL;
    const char *n = resolve_name(self, name);
    if (n == NULL)
        return NULL;
    if (keel__py_db_ensure_open(self) < 0)
        return NULL;
    keel_pool_stats ps;
    keel_error err;
    if (keel_db_pool_stats(self->db, n, &ps, &err) != KEEL_OK)
        return keel__py_error_raise(self->st, &err);
    return keel__py_stats_dict(&ps);
}

static PyObject *db_get_databases(kpy_db *self, void *closure) {
    (void)closure;
    if (check_initialised(self) < 0)
        return NULL;
    size_t n = keel_config_database_count(self->cfg);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(keel_config_database_name(self->cfg, i));
        if (s == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    return list;
}

static PyObject *db_get_default(kpy_db *self, void *closure) {
    (void)closure;
    if (check_initialised(self) < 0)
        return NULL;
    return PyUnicode_FromString(keel_config_default_database(self->cfg));
}

static PyObject *db_get_started(kpy_db *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->phase == KPY_DB_OPEN);
}

static PyObject *db_get_closed(kpy_db *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->phase == KPY_DB_CLOSED);
}

static PyObject *db_repr(kpy_db *self) {
    static const char *const phases[] = { "new", "open", "closing", "closed" };
    PyObject *names = self->cfg != NULL ? db_get_databases(self, NULL) : PyList_New(0);
    if (names == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat(
        "<%s databases=%R default=%s %s>", Py_TYPE(self)->tp_name, names,
        self->cfg != NULL ? keel_config_default_database(self->cfg) : "?", phases[self->phase]);
    Py_DECREF(names);
    return r;
}

/* _set_type_decoder(oid, decoder): the decoder of a type's columns (None removes it). */
static PyObject *db_set_type_decoder(kpy_db *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_set_type_decoder(oid: int, decoder)");
        return NULL;
    }
    if (self->decoders == NULL && (self->decoders = PyDict_New()) == NULL)
        return NULL;
    /* A decoder runs while a result is converted: the dict changes only between results. */
    if (args[1] == Py_None) {
        if (PyDict_DelItem(self->decoders, args[0]) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return NULL;
            PyErr_Clear();
        }
        Py_RETURN_NONE;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "decoder must be callable, not %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    if (PyDict_SetItem(self->decoders, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef db_methods[] = {
    { "_set_type_decoder", (PyCFunction)(void (*)(void))db_set_type_decoder, METH_FASTCALL,
      "_set_type_decoder(oid, decoder): decodes columns of type oid from their text (None "
      "removes it)." },
    { "_start", (PyCFunction)db_start, METH_NOARGS,
      "Binds to the running loop and opens the pools (idempotent)." },
    { "_close", (PyCFunction)db_close, METH_NOARGS,
      "Starts closing; returns a future done when closed, or None when already closed." },
    { "_close_now", (PyCFunction)db_close_now, METH_NOARGS,
      "A close in progress stops waiting: leased connections and running operations are closed "
      "(InterfaceError for their holders); listeners are told." },
    { "_query", (PyCFunction)(void (*)(void))db_query, METH_FASTCALL,
      "_query(mode, sql, args, database, column[, timeout[, rowtype]]) -> awaitable (rowtype: "
      "see Connection._query)" },
    { "_executemany", (PyCFunction)(void (*)(void))db_executemany, METH_FASTCALL,
      "_executemany(sql, rows, database[, timeout]) -> awaitable" },
    { "_copy", (PyCFunction)(void (*)(void))db_copy, METH_FASTCALL,
      "_copy(table, records, columns, schema, database[, timeout]) -> awaitable int: a bulk "
      "load on a connection of database, leased for it." },
    { "_command", (PyCFunction)(void (*)(void))db_command, METH_FASTCALL,
      "_command(dbname, cmd, database[, timeout]) -> awaitable dict: a document command on a "
      "connection of database, leased for it." },
    { "_acquire", (PyCFunction)(void (*)(void))db_acquire, METH_FASTCALL,
      "_acquire(database[, timeout]) -> awaitable Connection; timeout bounds the wait" },
    { "_release", (PyCFunction)db_release, METH_O, "_release(connection)" },
    { "engine", (PyCFunction)(void (*)(void))db_engine, METH_FASTCALL | METH_KEYWORDS,
      "engine(name=None): the engine name of a database (\"postgresql\", \"sqlite\")." },
    { "pool_stats", (PyCFunction)(void (*)(void))db_pool_stats, METH_FASTCALL | METH_KEYWORDS,
      "pool_stats(name=None): size, idle, leased, waiting, min_size, max_size, acquire_timeout." },
    { "stats", (PyCFunction)(void (*)(void))db_stats, METH_FASTCALL | METH_KEYWORDS,
      "stats(name=None): a pool's size, idle, in_use, waiting, min_size, max_size, connects, "
      "connect_failures, acquires, acquire_timeouts, acquire_wait_p50 and acquire_wait_p99." },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef db_getset[] = {
    { "databases", (getter)db_get_databases, NULL, "Configured database names, in order.", NULL },
    { "default_database", (getter)db_get_default, NULL, "Name of the default database.", NULL },
    { "started", (getter)db_get_started, NULL, "True between start and close.", NULL },
    { "closed", (getter)db_get_closed, NULL, "True once close has completed.", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMemberDef db_members[] = {
    { "__weaklistoffset__", T_PYSSIZET, offsetof(kpy_db, weakreflist), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot db_slots[] = {
    { Py_tp_doc, "The native manager of named, pooled databases (see keel.Database)." },
    { Py_tp_new, db_new },
    { Py_tp_init, db_init },
    { Py_tp_dealloc, db_dealloc },
    { Py_tp_traverse, db_traverse },
    { Py_tp_clear, db_clear },
    { Py_tp_repr, db_repr },
    { Py_tp_methods, db_methods },
    { Py_tp_getset, db_getset },
    { Py_tp_members, db_members },
    { 0, NULL },
};

PyType_Spec keel__py_database_spec = {
    .name = "keel._native.Database",
    .basicsize = sizeof(kpy_db),
    .flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = db_slots,
};
