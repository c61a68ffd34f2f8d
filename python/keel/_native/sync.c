/* python/keel/_native/sync.c - the synchronous Database and Connection (keel.sync): calls that block on keel's own loop with the GIL released, never touching asyncio. */
#include "module.h"

#include <math.h>
#include <stdatomic.h>
#include <pythread.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

/*
 * A SyncDatabase opens its keel_db on a private blocking loop (keel_db_open with loop NULL),
 * starts each operation with keel's asynchronous calls and spins that loop until the operation
 * is done (swait). No asyncio loop is needed, and one that runs in the thread (a notebook's) is
 * never touched. The GIL is released around every call into keel; a lock per database makes the
 * calls of several threads take turns, since a keel_db and its loop are used by one thread at a
 * time. A call waits in short slices of the loop and lets go of the lock between them, so the
 * threads interleave their statements (each one's loop run delivers the others' completions),
 * and it looks at signals between them, so that Ctrl-C stops a long call. The lock is only ever
 * held with the GIL released, so no Python code (a finaliser, another thread) can run while
 * holding it.
 */

typedef struct kpy_sdb {
    PyObject_HEAD kpy_state *st;
    PyObject *module;        /* keeps st alive */
    keel_db *db;             /* NULL once closed */
    PyThread_type_lock lock; /* one call into db at a time */
    atomic_int waiting;      /* threads waiting for lock (sdb_lock) */
    int active;              /* calls in swait (under lock): close() waits for them */
    int closing;             /* close(timeout=) waits for leases to end: no new ones */
    size_t nleased;          /* SyncConnections not yet released (changed with the GIL held) */
    PyObject *weakreflist;
    PyObject *json_dumps; /* json_serializer= of the keel.Database it was made from, or NULL */
    PyObject *json_loads; /* json_deserializer= likewise */
    PyObject *config;     /* that keel.Database: its set_type_codec decoders are this one's */
} kpy_sdb;

typedef struct scur scur;

/* A notification received on a listening connection: channel, then payload, in text. */
typedef struct snote {
    struct snote *next;
    int64_t pid;
    size_t channel_len;
    char text[]; /* channel NUL payload NUL */
} snote;

typedef struct kpy_sconn {
    PyObject_HEAD kpy_sdb *sdb; /* strong */
    scur *cur;                  /* the cursor (_cursor) that streams on it, or NULL */
    keel_conn *conn;            /* NULL once released */
    PyObject *database;         /* str */
    PyObject *engine;           /* str */
    int depth;                  /* transaction nesting, maintained by keel.sync.Transaction */
    int timeout_set;            /* conn runs under an earlier call's timeout=, not the config's */
    /* An operation Ctrl-C cancelled that had not ended within CANCEL_GRACE_S (its scall), or
     * NULL; idle is 0 while it runs (under the lock, as pending). */
    struct scall *pending;
    int idle;
    /* _listen: the notifications received and not taken yet, oldest first; then, when the
     * connection was found lost while it listened, that error (lost). Changed by the notify
     * handler inside the loop, read by _notifications: under the database's lock. */
    snote *notes, **notes_tail;
    int notified; /* notes or lost: what _notifications waits for (swait's flag) */
    int lost;
    keel_error lost_err;
    PyObject *weakreflist;
} kpy_sconn;

/* Kinds of job besides those of op.c (KPY_OP_QUERY …). */
enum { SJOB_PING = 100 };

/* One operation: what to run, its converted arguments, and what it returned. */
typedef struct sjob {
    int kind;
    int mode;
    const char *sql;   /* QUERY, MANY: the statement; COPY: the table; COMMAND: dbname or NULL */
    kpy_params params; /* QUERY, MANY, COPY */
    const char *schema;
    const char **cols; /* COPY: ncols column names, or NULL for every column */
    size_t ncols;
    const char *cmd; /* COMMAND: BSON */
    size_t cmdlen;
    keel_txn_op txn;
    unsigned depth;
    /* results */
    keel_result *res;
    int64_t loaded;
    int acquire_failed; /* the error is the connect's (a ConnectError when it is a deadline) */
    int interrupted;    /* a signal handler raised during the wait: its exception is set */
    PyObject *rowtype;  /* fetch/fetchrow: what rows become (keel__py_row_new); NULL: Record */
} sjob;

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sjob_init(sjob *j, int kind) {
    memset(j, 0, sizeof *j);
    j->kind = kind;
    keel__py_params_init(&j->params);
}

static void sjob_clear(sjob *j) {
    keel__py_params_clear(&j->params);
    keel_result_free(j->res);
    j->res = NULL;
    if (j->cols != NULL)
        PyMem_Free((void *)j->cols);
    j->cols = NULL;
}

/* ---- waiting: the blocking loop in slices ---- */

static keel_status closed_error(keel_error *err) {
    keel_error_clear(err);
    err->code = KEEL_ERR_CLOSED;
    snprintf(err->message, sizeof err->message, "the database is closed");
    return KEEL_ERR_CLOSED;
}

/* Takes the database's lock (GIL released), counted in s->waiting meanwhile so that a thread
 * whose wait holds it lets go soon. */
static void sdb_lock(kpy_sdb *s) {
    atomic_fetch_add(&s->waiting, 1);
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    atomic_fetch_sub(&s->waiting, 1);
}

/* Lets go of the lock for the threads that wait for it, and takes it again once one of them got
 * it (or after about a millisecond): PyThread locks are not fair, and a waiter woken by the
 * release could otherwise find it taken again every time. */
static void sdb_yield(kpy_sdb *s) {
    int waiting = atomic_load(&s->waiting);
    PyThread_release_lock(s->lock);
    for (int i = 0; i < 100 && waiting > 0 && atomic_load(&s->waiting) >= waiting; i++) {
        struct timespec pause = { 0, 10000 }; /* 10 µs */
        nanosleep(&pause, NULL);
    }
    sdb_lock(s);
}

/* The outcome of one asynchronous call (an acquire or an operation), filled by its callback.
 * On the heap: a waiter that gives up on a call that cannot be withdrawn (the loop failed)
 * leaves it to the callback, which frees it then (orphan). */
typedef struct scall {
    int done;
    int orphan;
    keel_conn *conn;  /* an acquire's */
    keel_result *res; /* an operation's */
    keel_error err;
    kpy_sconn *owner; /* an orphan still running on a connection object: told when it ends */
} scall;

static void scall_acquired(keel_conn *conn, const keel_error *err, void *arg) {
    scall *c = arg;
    if (c->orphan) {
        keel_conn_release(conn);
        PyMem_RawFree(c);
        return;
    }
    c->conn = conn;
    if (err != NULL)
        c->err = *err;
    c->done = 1;
}

static void scall_queried(keel_result *res, const keel_error *err, void *arg) {
    scall *c = arg;
    if (c->orphan) {
        if (c->owner != NULL) {
            c->owner->pending = NULL;
            c->owner->idle = 1;
        }
        keel_result_free(res);
        PyMem_RawFree(c);
        return;
    }
    c->res = res;
    if (err != NULL)
        c->err = *err;
    c->done = 1;
}

/* swait's status when a signal handler raised (the exception, KeyboardInterrupt for Ctrl-C, is
 * set on the thread): the call stops and raises it. */
#define SWAIT_INTERRUPTED KEEL_ERR_CANCELLED

/* How long a slice of a wait holds the lock: short when other threads wait for it. */
#define SLICE_MS 20
#define SLICE_BUSY_MS 1
/* How often a wait runs the signal handlers (Ctrl-C takes effect within about this). */
#define SIGNAL_CHECK_S 0.05

/* swait's flags: run the signal handlers between slices; a wait close() does not wait for (it
 * ends with KEEL_ERR_CLOSED then: a listener's). */
enum { SWAIT_SIGNALS = 1, SWAIT_CLOSABLE = 2 };

/* One slice of swait: KEEL_OK to go on (or *done), else how the wait ends. */
static keel_status swait_slice(kpy_sdb *s, const int *done, double deadline, int flags,
                               double *checked, PyThreadState **ts, keel_error *err) {
    if (s->db == NULL)
        return closed_error(err);
    int64_t now_ms = keel_now_ms();
    int64_t until = now_ms + (atomic_load(&s->waiting) > 0 ? SLICE_BUSY_MS : SLICE_MS);
    if (!isinf(deadline)) {
        /* A deadline already passed still gets one look (a poll that does not wait). */
        double left = deadline - monotonic_now();
        int64_t left_ms = left > 0 ? (int64_t)(left * 1000.0 + 0.999) : 0;
        if (now_ms + left_ms < until)
            until = now_ms + left_ms;
    }
    keel_status st = keel_loop_run_until(keel_db_loop(s->db), done, until);
    if (st != KEEL_OK) {
        keel_error_clear(err);
        err->code = st;
        snprintf(err->message, sizeof err->message, "the blocking loop failed: %s",
                 keel_strerror(st));
        return st;
    }
    if (*done)
        return KEEL_OK;
    if (!isinf(deadline) && monotonic_now() >= deadline)
        return KEEL_ERR_TIMEOUT;
    if (atomic_load(&s->waiting) > 0)
        sdb_yield(s);
    if ((flags & SWAIT_SIGNALS) && monotonic_now() - *checked >= SIGNAL_CHECK_S) {
        PyThread_release_lock(s->lock);
        PyEval_RestoreThread(*ts);
        int rc = PyErr_CheckSignals();
        *ts = PyEval_SaveThread();
        sdb_lock(s);
        *checked = monotonic_now();
        if (rc < 0)
            return SWAIT_INTERRUPTED;
    }
    return KEEL_OK;
}

/*
 * Runs the database's loop until *done, called with s->lock held and the GIL released (*ts
 * the thread state Py_BEGIN_ALLOW_THREADS saved), and returns with the lock held. The loop runs
 * in slices: between them the lock goes to the threads that wait for it (their statements
 * start and the loop they run delivers this call's completion too, so a transaction waiting for
 * SQLite's write lock does not keep the one holding it from committing), and every
 * SIGNAL_CHECK_S, with SWAIT_SIGNALS, the GIL is taken to run the signal handlers
 * (PyErr_CheckSignals: the main thread's only, as Python does), without the lock, so that a
 * handler may use the database. Returns KEEL_OK once *done; SWAIT_INTERRUPTED when a handler
 * raised; KEEL_ERR_TIMEOUT (no message) once deadline (monotonic_now seconds, INFINITY: none)
 * has passed; KEEL_ERR_CLOSED when the database was closed meanwhile; or the loop's failure
 * (err set for these two). Unless SWAIT_CLOSABLE, s->active counts it while it runs: close()
 * waits for it.
 */
static keel_status swait(kpy_sdb *s, const int *done, double deadline, int flags,
                         PyThreadState **ts, keel_error *err) {
    double checked = monotonic_now();
    keel_status st = KEEL_OK;
    int counted = !(flags & SWAIT_CLOSABLE);
    s->active += counted;
    while (!*done && st == KEEL_OK)
        st = swait_slice(s, done, deadline, flags, &checked, ts, err);
    s->active -= counted;
    return st;
}

/* Starts j on conn, its completion going to c. Called with the lock held. */
static keel_status sjob_start(sjob *j, keel_conn *conn, scall *c, keel_error *err) {
    kpy_params *p = &j->params;
    switch (j->kind) {
    case KPY_OP_QUERY:
        return keel_conn_query(conn, j->sql, p->values, p->nvalues, scall_queried, c, err);
    case KPY_OP_MANY:
        return keel_conn_query_many(conn, j->sql, p->values, p->nrows, p->ncols, scall_queried, c,
                                    err);
    case KPY_OP_COPY:
        return keel_conn_copy_in(conn, j->schema, j->sql, j->cols, p->ncols, p->values, p->nrows,
                                 scall_queried, c, err);
    case KPY_OP_COMMAND:
        return keel_conn_command(conn, j->sql, j->cmd, j->cmdlen, scall_queried, c, err);
    case KPY_OP_TXN:
        return keel_conn_transaction(conn, j->txn, j->depth, scall_queried, c, err);
    case KPY_OP_PREPARE:
        return keel_conn_prepare(conn, j->sql, scall_queried, c, err);
    case SJOB_PING:
        return keel_conn_ping(conn, scall_queried, c, err);
    default:
        break;
    }
    keel_error_clear(err);
    err->code = KEEL_ERR_INTERNAL;
    snprintf(err->message, sizeof err->message, "operation of kind %d cannot run", j->kind);
    return KEEL_ERR_INTERNAL;
}

/* How long Ctrl-C waits for a cancelled operation to end before it leaves it running. */
#define CANCEL_GRACE_S 0.25

/* Runs j on conn until it ends, in swait's slices. Called with the GIL released (*ts) and the
 * lock held. Ctrl-C (a signal handler raising) cancels the operation on the server and waits
 * CANCEL_GRACE_S for its end, then returns SWAIT_INTERRUPTED with j->interrupted set. An
 * operation that has not ended by then (a server slow to honour the cancel) goes on without a
 * waiter: the connection of a database-level call is released (its pool takes it back when the
 * operation ends); on a connection object (owner), the next operation waits for it first
 * (sconn_idle). */
static keel_status sjob_run(kpy_sdb *s, sjob *j, keel_conn *conn, kpy_sconn *owner,
                            PyThreadState **ts, keel_error *err) {
    scall *c = PyMem_RawCalloc(1, sizeof *c);
    if (c == NULL) {
        keel_error_clear(err);
        err->code = KEEL_ERR_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
        return KEEL_ERR_NOMEM;
    }
    keel_status st = sjob_start(j, conn, c, err);
    if (st != KEEL_OK) {
        PyMem_RawFree(c);
        return st;
    }
    st = swait(s, &c->done, INFINITY, SWAIT_SIGNALS, ts, err);
    if (st == SWAIT_INTERRUPTED) {
        j->interrupted = 1;
        if (!c->done && s->db != NULL)
            keel_conn_cancel(conn);
        keel_error ignored;
        swait(s, &c->done, monotonic_now() + CANCEL_GRACE_S, 0, ts, &ignored);
    }
    if (!c->done) {
        /* Interrupted, or the loop failed: the callback frees it, if it ever runs. */
        c->orphan = 1;
        if (owner != NULL) {
            c->owner = owner;
            owner->pending = c;
            owner->idle = 0;
        }
        return st;
    }
    if (st == KEEL_OK && c->err.code != KEEL_OK) {
        *err = c->err;
        st = c->err.code;
    }
    if (st == KEEL_OK && j->kind == KPY_OP_COPY)
        j->loaded = keel_result_affected(c->res) < 0 ? 0 : keel_result_affected(c->res);
    if (st == KEEL_OK && j->kind != KPY_OP_COPY && j->kind != KPY_OP_TXN && j->kind != SJOB_PING)
        j->res = c->res;
    else
        keel_result_free(c->res);
    PyMem_RawFree(c);
    return st;
}

/* The error of a call whose timeout= ran out while it waited for a connection (as op.c's). */
static keel_status wait_timeout_error(kpy_sdb *s, const char *database, double timeout,
                                      keel_error *err) {
    const char *name = database != NULL ? database : keel_db_default_database(s->db);
    const char *engine = keel_db_database_engine(s->db, name);
    keel_error_clear(err);
    err->code = KEEL_ERR_TIMEOUT;
    snprintf(err->sqlstate, sizeof err->sqlstate, "57014");
    snprintf(err->database, sizeof err->database, "%s", name != NULL ? name : "");
    snprintf(err->engine, sizeof err->engine, "%s", engine != NULL ? engine : "");
    snprintf(err->message, sizeof err->message,
             "timeout: the operation did not finish within %g s (timeout=) on database '%s': "
             "it was still waiting for a connection",
             timeout, name != NULL ? name : "?");
    return KEEL_ERR_TIMEOUT;
}

/*
 * Leases a connection of database (NULL: the default) into *conn; called with s->lock held and
 * the GIL released (*ts), and returns with the lock held. timeout as sdb_run's: with seconds,
 * the wait ends then (KEEL_ERR_TIMEOUT, SQLSTATE 57014, naming timeout=); else the pool's
 * acquire_timeout ends it (KEEL_ERR_POOL_TIMEOUT). The request waits in the pool's queue, in
 * order, while the wait runs in swait's slices: the connections other threads hold need the
 * lock for their next statement and to come back. SWAIT_INTERRUPTED (*interrupted set) when
 * Ctrl-C stopped the wait; the request has left the queue then.
 */
static keel_status sdb_lease(kpy_sdb *s, const char *database, double timeout, keel_conn **conn,
                             int *interrupted, PyThreadState **ts, keel_error *err) {
    double started = monotonic_now();
    *conn = NULL;
    if (s->db == NULL || s->closing)
        return closed_error(err);
    keel_status st = keel_db_try_acquire(s->db, database, conn, err);
    if (st != KEEL_ERR_BUSY)
        return st;
    scall *c = PyMem_RawCalloc(1, sizeof *c);
    if (c == NULL) {
        keel_error_clear(err);
        err->code = KEEL_ERR_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
        return KEEL_ERR_NOMEM;
    }
    st = keel_db_acquire(s->db, database, scall_acquired, c, err);
    if (st != KEEL_OK) {
        PyMem_RawFree(c);
        return st;
    }
    int bounded = timeout > 0 && !isinf(timeout);
    st = swait(s, &c->done, bounded ? started + timeout : INFINITY, SWAIT_SIGNALS, ts, err);
    if (!c->done) {
        if (s->db != NULL && keel_db_acquire_cancel(s->db, scall_acquired, c))
            PyMem_RawFree(c);
        else
            c->orphan = 1;
        *interrupted = st == SWAIT_INTERRUPTED;
        return st == KEEL_ERR_TIMEOUT ? wait_timeout_error(s, database, timeout, err) : st;
    }
    if (st == SWAIT_INTERRUPTED) {
        /* Leased as the signal came: the interrupt wins, the connection goes back. */
        keel_conn_release(c->conn);
        *interrupted = 1;
    } else if (c->err.code != KEEL_OK) {
        *err = c->err;
        st = c->err.code;
    } else {
        *conn = c->conn;
        st = KEEL_OK;
    }
    PyMem_RawFree(c);
    return st;
}

/*
 * Runs j on a connection leased for it from database (NULL: the default), then gives it back.
 * timeout as keel__py_timeout_arg: 0 (the database's command_timeout, and the pool's
 * acquire_timeout for the wait), seconds (for the wait and the operation together) or INFINITY.
 * Releases the GIL and takes the database's lock.
 */
static keel_status sdb_run(kpy_sdb *s, const char *database, double timeout, sjob *j,
                           keel_error *err) {
    keel_status st;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    keel_conn *conn = NULL;
    double started = monotonic_now();
    st = sdb_lease(s, database, timeout, &conn, &j->interrupted, &_save, err);
    if (st != KEEL_OK) {
        j->acquire_failed = st != KEEL_ERR_CLOSED &&
                            !(st == KEEL_ERR_TIMEOUT && strcmp(err->sqlstate, "57014") == 0);
    } else {
        if (timeout != 0) {
            double left = isinf(timeout) ? 0 : timeout - (monotonic_now() - started);
            st = !isinf(timeout) && left <= 0 ? wait_timeout_error(s, database, timeout, err)
                                              : keel_conn_set_timeout(conn, left, err);
        }
        if (st == KEEL_OK)
            st = sjob_run(s, j, conn, NULL, &_save, err);
        keel_conn_release(conn);
    }
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS return st;
}

/* Waits for the operation an earlier Ctrl-C left running on c (sjob_run) to end: the lock held,
 * the GIL released (*ts). KEEL_OK, or how swait ended (*interrupted set for a new Ctrl-C). */
static keel_status sconn_idle(kpy_sconn *c, int *interrupted, PyThreadState **ts, keel_error *err) {
    if (c->idle)
        return KEEL_OK;
    keel_status st = swait(c->sdb, &c->idle, INFINITY, SWAIT_SIGNALS, ts, err);
    *interrupted = st == SWAIT_INTERRUPTED;
    return st;
}

/* Runs j on the leased connection of c under its timeout= (as keel__py_timeout_arg). */
static keel_status sconn_run(kpy_sconn *c, double timeout, sjob *j, keel_error *err) {
    keel_status st = KEEL_OK;
    kpy_sdb *s = c->sdb;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    if (timeout != 0)
        st = keel_conn_set_timeout(c->conn, isinf(timeout) ? 0 : timeout, err);
    else if (c->timeout_set)
        st = keel_conn_set_timeout(c->conn, KEEL_TIMEOUT_CONFIGURED, err);
    if (st == KEEL_OK)
        st = sconn_idle(c, &j->interrupted, &_save, err);
    if (st == KEEL_OK) {
        c->timeout_set = timeout != 0;
        st = sjob_run(s, j, c->conn, c, &_save, err);
    }
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS return st;
}

/* ---- results ---- */

static PyObject *records_of(kpy_state *st, const keel_result *res, size_t limit,
                            PyObject *rowtype) {
    size_t nrows = keel_result_nrows(res);
    if (nrows > limit)
        nrows = limit;
    PyObject *list = PyList_New((Py_ssize_t)nrows);
    if (list == NULL || nrows == 0)
        return list;
    PyObject *desc = keel__py_record_desc(res);
    if (desc == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    for (size_t i = 0; i < nrows; i++) {
        PyObject *r = keel__py_row_new(st, desc, res, i, rowtype);
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

/* The Python value of what j returned; column is fetchval's. */
static PyObject *sjob_result(kpy_state *st, sjob *j, Py_ssize_t column) {
    const keel_result *res = j->res;
    switch (j->kind) {
    case KPY_OP_COPY:
        return PyLong_FromLongLong(j->loaded);
    case KPY_OP_MANY:
        if (res != NULL && keel_result_ncols(res) > 0)
            return records_of(st, res, (size_t)-1, NULL); /* executemany(… RETURNING …) */
        Py_RETURN_NONE;
    case KPY_OP_COMMAND: {
        const keel_value *v = res != NULL ? keel_result_value(res, 0, 0) : NULL;
        if (v == NULL || v->type != KEEL_TYPE_DOCUMENT)
            return keel__py_raise(st, KEEL_ERR_INTERNAL, NULL, "a command result holds no reply");
        return keel__py_bson_decode(st, v->u.str.ptr, v->u.str.len);
    }
    case KPY_OP_PREPARE:
        if (res == NULL)
            return keel__py_raise(st, KEEL_ERR_INTERNAL, NULL, "a prepare returned no description");
        return keel__py_description_of(res);
    case KPY_OP_QUERY:
        break;
    default:
        Py_RETURN_NONE;
    }
    size_t nrows = res != NULL ? keel_result_nrows(res) : 0;
    switch (j->mode) {
    case KPY_MODE_FETCH:
        return records_of(st, res, (size_t)-1, j->rowtype);
    case KPY_MODE_FETCHROW: {
        if (nrows == 0)
            Py_RETURN_NONE;
        PyObject *list = records_of(st, res, 1, j->rowtype);
        if (list == NULL)
            return NULL;
        PyObject *r = Py_NewRef(PyList_GET_ITEM(list, 0));
        Py_DECREF(list);
        return r;
    }
    case KPY_MODE_FETCHVAL: {
        if (nrows == 0)
            Py_RETURN_NONE;
        size_t ncols = keel_result_ncols(res);
        Py_ssize_t col = column;
        if (col < 0)
            col += (Py_ssize_t)ncols;
        if (col < 0 || (size_t)col >= ncols) {
            PyErr_Format(PyExc_IndexError, "column %zd is out of range: the result has %zu", column,
                         ncols);
            return NULL;
        }
        return keel__py_column_to_py(st, keel_result_value(res, 0, (size_t)col), (size_t)col);
    }
    default: {
        int64_t n = res != NULL ? keel_result_affected(res) : 0;
        return PyLong_FromLongLong(n < 0 ? 0 : n);
    }
    }
}

/* Raises the error of j (err), or returns its result. Clears j. */
static PyObject *sjob_finish(kpy_sdb *s, sjob *j, keel_status status, const keel_error *err,
                             Py_ssize_t column) {
    kpy_state *st = s->st;
    PyObject *out = NULL;
    if (status != KEEL_OK && j->interrupted && PyErr_Occurred()) {
        /* Ctrl-C: KeyboardInterrupt (or what the signal handler raised) is the call's error. */
    } else if (status != KEEL_OK) {
        PyObject *exc =
            j->acquire_failed ? keel__py_connect_error_new(st, err) : keel__py_error_new(st, err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    } else {
        /* json_deserializer= of the Database it was made from */
        PyObject *prev = keel__py_json_loads_swap(s->json_loads);
        /* The decoders set_type_codec put on it (set on the keel.Database it was made from),
         * and the result in force, so that a value that cannot be decoded is named by its
         * column. */
        PyObject *decoders = s->config != NULL ? ((kpy_db *)s->config)->decoders : NULL;
        kpy_decoders dec;
        if (j->res == NULL) {
            out = sjob_result(st, j, column);
        } else if (keel__py_decoders_begin(st, decoders, j->res, &dec) == 0) {
            out = sjob_result(st, j, column);
            keel__py_decoders_end(st, &dec);
        }
        keel__py_json_loads_swap(prev);
    }
    sjob_clear(j);
    return out;
}

/* ---- arguments ---- */

/* A tuple of obj's items (the snapshot executemany and copy take at the call). */
static PyObject *snapshot(PyObject *obj, const char *msg) {
    PyObject *seq = PySequence_Fast(obj, msg);
    if (seq != NULL && !PyTuple_Check(seq))
        Py_SETREF(seq, PyList_AsTuple(seq));
    return seq;
}

/* The UTF-8 of a database name argument: NULL for None (the default), or -1 with TypeError. */
static int name_arg(PyObject *obj, const char **out) {
    *out = NULL;
    if (obj == Py_None)
        return 0;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "database must be a str or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return (*out = PyUnicode_AsUTF8(obj)) != NULL ? 0 : -1;
}

static int sql_arg(PyObject *obj, const char **out) {
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "the statement must be a str, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return (*out = PyUnicode_AsUTF8(obj)) != NULL ? 0 : -1;
}

/* Whether lists are arrays (PostgreSQL) for the database named (NULL: the default). */
static int sdb_arrays(const kpy_sdb *self, const char *database) {
    const char *engine = self->db != NULL ? keel_db_database_engine(self->db, database) : NULL;
    return engine != NULL && strcmp(engine, "postgresql") == 0;
}

static int sconn_arrays(const kpy_sconn *c) {
    return c->engine != NULL && PyUnicode_Check(c->engine) &&
           PyUnicode_CompareWithASCIIString(c->engine, "postgresql") == 0;
}

/* Fills j for a query (mode, sql, args tuple). 0, or -1 with an exception. */
static int query_job(kpy_state *st, sjob *j, PyObject *mode, PyObject *sql, PyObject *args,
                     int arrays, PyObject *dumps) {
    int m = PyLong_Check(mode) ? (int)PyLong_AsLong(mode) : -1;
    if (m < KPY_MODE_FETCH || m > KPY_MODE_EXECUTE) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "unknown query mode");
        return -1;
    }
    if (!PyTuple_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "args must be a tuple");
        return -1;
    }
    sjob_init(j, KPY_OP_QUERY);
    j->params.arrays = arrays;
    j->params.json_dumps = dumps;
    j->mode = m;
    if (sql_arg(sql, &j->sql) < 0 || keel__py_params_from_args(st, &j->params, args) < 0)
        return -1;
    return 0;
}

/* Fills j for executemany (sql, rows); *hold keeps the rows' snapshot. 0, or -1. */
static int many_job(kpy_state *st, sjob *j, PyObject *sql, PyObject *rows, PyObject **hold,
                    int arrays, PyObject *dumps) {
    sjob_init(j, KPY_OP_MANY);
    j->params.arrays = arrays;
    j->params.json_dumps = dumps;
    if (sql_arg(sql, &j->sql) < 0)
        return -1;
    if ((*hold = snapshot(rows, "executemany: the rows must be an iterable of sequences")) == NULL)
        return -1;
    return keel__py_params_from_rows(st, &j->params, *hold);
}

/* Fills j for copy_records_to_table; *hold keeps the checked arguments. 0, or -1. */
static int copy_job(kpy_state *st, sjob *j, PyObject *const *args, PyObject **hold, int arrays,
                    PyObject *dumps) {
    sjob_init(j, KPY_OP_COPY);
    j->params.arrays = arrays;
    j->params.json_dumps = dumps;
    if ((*hold = keel__py_copy_args(st, args[0], args[1], args[2], args[3])) == NULL)
        return -1;
    PyObject *recs = PyTuple_GET_ITEM(*hold, 0), *cols = PyTuple_GET_ITEM(*hold, 1),
             *schema = PyTuple_GET_ITEM(*hold, 2);
    j->sql = PyUnicode_AsUTF8(args[0]);
    j->schema = schema != Py_None ? PyUnicode_AsUTF8(schema) : NULL;
    j->params.what = "copy_records_to_table";
    j->params.ranges = 1;
    j->params.names = cols != Py_None ? cols : NULL;
    if (keel__py_params_from_rows(st, &j->params, recs) < 0)
        return -1;
    if (cols == Py_None)
        return 0;
    size_t ncols = (size_t)PyTuple_GET_SIZE(cols);
    if (j->params.nrows > 0 && j->params.ncols != ncols) {
        keel__py_raise(st, KEEL_ERR_PARAMETERS, NULL,
                       "copy_records_to_table: each record has %zu values but %zu columns "
                       "were named",
                       j->params.ncols, ncols);
        return -1;
    }
    j->params.ncols = ncols;
    j->ncols = ncols;
    if ((j->cols = PyMem_Malloc(ncols * sizeof *j->cols)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Checked by keel__py_copy_args: every name is a str. */
    for (size_t i = 0; i < ncols; i++)
        if ((j->cols[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(cols, (Py_ssize_t)i))) == NULL)
            return -1;
    return 0;
}

/* Fills j for a document command (dbname, cmd); *name and *bson keep what it points into. */
static int command_job(kpy_state *st, sjob *j, PyObject *dbname, PyObject *cmd, PyObject **name,
                       PyObject **bson) {
    sjob_init(j, KPY_OP_COMMAND);
    if (keel__py_command_args(st, dbname, cmd, name, bson) < 0)
        return -1;
    if (*name != NULL && (j->sql = PyUnicode_AsUTF8(*name)) == NULL)
        return -1;
    j->cmd = PyBytes_AS_STRING(*bson);
    j->cmdlen = (size_t)PyBytes_GET_SIZE(*bson);
    return 0;
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t n, const char *usage) {
    if (nargs == n)
        return 0;
    PyErr_SetString(PyExc_TypeError, usage);
    return -1;
}

/* The arguments of _query, whose plain and prepared statements (keel.sync.PreparedStatement)
 * both run through it, on a database or a connection: n positional ones ending with column and
 * timeout, then rowtype optionally (None: Records). 0, or -1 with TypeError (usage) or the
 * error of a bad column or timeout. */
static int query_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t n, const char *usage,
                      Py_ssize_t *column, double *timeout, PyObject **rowtype) {
    *rowtype = nargs == n + 1 && args[n] != Py_None ? args[n] : NULL;
    if (check_nargs(nargs == n + 1 ? n : nargs, n, usage) < 0 ||
        keel__py_timeout_arg(args[n - 1], timeout) < 0)
        return -1;
    *column = PyLong_AsSsize_t(args[n - 2]);
    return *column == -1 && PyErr_Occurred() ? -1 : 0;
}

/* ---- SyncDatabase ---- */

static int sdb_check(kpy_sdb *self) {
    if (self->lock == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SyncDatabase is not initialised");
        return -1;
    }
    return 0;
}

static PyObject *sdb_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    PyObject *m = PyType_GetModuleByDef(type, &keel__py_moduledef);
    if (m == NULL)
        return NULL;
    kpy_sdb *self = (kpy_sdb *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->st = PyModule_GetState(m);
    self->module = Py_NewRef(m);
    return (PyObject *)self;
}

/* SyncDatabase(config): config is a keel._native.Database (never started) whose validated
 * configuration is copied; the decoders its _set_type_decoder sets are this one's too. */
static int sdb_init(kpy_sdb *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = { "config", NULL };
    PyObject *config;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:SyncDatabase", kwlist, &config))
        return -1;
    if (self->lock != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SyncDatabase is already initialised");
        return -1;
    }
    if (!PyObject_TypeCheck(config, self->st->DatabaseType) || ((kpy_db *)config)->cfg == NULL) {
        PyErr_Format(PyExc_TypeError, "SyncDatabase takes a configured keel.Database, not %.100s",
                     Py_TYPE(config)->tp_name);
        return -1;
    }
    keel_error err;
    keel_db *db = NULL;
    if (keel_db_open(&db, ((kpy_db *)config)->cfg, NULL, &err) != KEEL_OK) {
        keel__py_error_raise(self->st, &err);
        return -1;
    }
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        keel_db_close(db);
        PyErr_NoMemory();
        return -1;
    }
    self->db = db;
    Py_XSETREF(self->json_dumps, Py_XNewRef(((kpy_db *)config)->json_dumps));
    Py_XSETREF(self->json_loads, Py_XNewRef(((kpy_db *)config)->json_loads));
    Py_XSETREF(self->config, Py_NewRef(config));
    return 0;
}

/* Closes the keel_db (idempotent): leased connections become closed handles. */
static void sdb_close_db(kpy_sdb *self) {
    if (self->db == NULL || self->lock == NULL)
        return;
    Py_BEGIN_ALLOW_THREADS sdb_lock(self);
    /* A call of another thread between two slices of its wait ends first (keel.sync.Database:
     * close() waits for it). */
    while (self->active > 0) {
        PyThread_release_lock(self->lock);
        struct timespec pause = { 0, 1000000 }; /* 1 ms */
        nanosleep(&pause, NULL);
        sdb_lock(self);
    }
    keel_db_close(self->db);
    self->db = NULL;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
}

static void sdb_dealloc(kpy_sdb *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    sdb_close_db(self);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Py_CLEAR(self->module);
    Py_CLEAR(self->json_dumps);
    Py_CLEAR(self->json_loads);
    Py_CLEAR(self->config);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int sdb_traverse(kpy_sdb *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->json_dumps);
    Py_VISIT(self->json_loads);
    Py_VISIT(self->config);
    return 0;
}

static PyObject *sdb_close(kpy_sdb *self, PyObject *unused) {
    (void)unused;
    sdb_close_db(self);
    Py_RETURN_NONE;
}

/* _query(mode, sql, args, database, column, timeout[, rowtype]) */
static PyObject *sdb_query(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    sjob j;
    Py_ssize_t column;
    PyObject *rowtype;
    if (sdb_check(self) < 0 ||
        query_args(args, nargs, 6, "_query(mode, sql, args, database, column, timeout[, rowtype])",
                   &column, &timeout, &rowtype) < 0 ||
        name_arg(args[3], &database) < 0)
        return NULL;
    if (query_job(self->st, &j, args[0], args[1], args[2], sdb_arrays(self, database),
                  self->json_dumps) < 0) {
        sjob_clear(&j);
        return NULL;
    }
    j.rowtype = rowtype;
    keel_error err;
    keel_status s = sdb_run(self, database, timeout, &j, &err);
    return sjob_finish(self, &j, s, &err, column);
}

/* _executemany(sql, rows, database, timeout) */
static PyObject *sdb_executemany(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    PyObject *hold = NULL;
    sjob j;
    if (sdb_check(self) < 0 ||
        check_nargs(nargs, 4, "_executemany(sql, rows, database, timeout)") < 0 ||
        name_arg(args[2], &database) < 0 || keel__py_timeout_arg(args[3], &timeout) < 0)
        return NULL;
    if (many_job(self->st, &j, args[0], args[1], &hold, sdb_arrays(self, database),
                 self->json_dumps) < 0) {
        sjob_clear(&j);
        Py_XDECREF(hold);
        return NULL;
    }
    keel_error err;
    keel_status s = sdb_run(self, database, timeout, &j, &err);
    PyObject *out = sjob_finish(self, &j, s, &err, 0);
    Py_DECREF(hold);
    return out;
}

/* _copy(table, records, columns, schema, database, timeout) */
static PyObject *sdb_copy(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    PyObject *hold = NULL;
    sjob j;
    if (sdb_check(self) < 0 ||
        check_nargs(nargs, 6, "_copy(table, records, columns, schema, database, timeout)") < 0 ||
        name_arg(args[4], &database) < 0 || keel__py_timeout_arg(args[5], &timeout) < 0)
        return NULL;
    if (copy_job(self->st, &j, args, &hold, sdb_arrays(self, database), self->json_dumps) < 0) {
        sjob_clear(&j);
        Py_XDECREF(hold);
        return NULL;
    }
    keel_error err;
    keel_status s = sdb_run(self, database, timeout, &j, &err);
    PyObject *out = sjob_finish(self, &j, s, &err, 0);
    Py_DECREF(hold);
    return out;
}

/* _command(dbname, cmd, database, timeout) */
static PyObject *sdb_command(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    PyObject *name = NULL, *bson = NULL;
    sjob j;
    if (sdb_check(self) < 0 ||
        check_nargs(nargs, 4, "_command(dbname, cmd, database, timeout)") < 0 ||
        name_arg(args[2], &database) < 0 || keel__py_timeout_arg(args[3], &timeout) < 0)
        return NULL;
    if (command_job(self->st, &j, args[0], args[1], &name, &bson) < 0) {
        sjob_clear(&j);
        Py_XDECREF(name);
        Py_XDECREF(bson);
        return NULL;
    }
    keel_error err;
    keel_status s = sdb_run(self, database, timeout, &j, &err);
    PyObject *out = sjob_finish(self, &j, s, &err, 0);
    Py_XDECREF(name);
    Py_DECREF(bson);
    return out;
}

/* _ping(database, timeout) */
static PyObject *sdb_ping(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    sjob j;
    if (sdb_check(self) < 0 || check_nargs(nargs, 2, "_ping(database, timeout)") < 0 ||
        name_arg(args[0], &database) < 0 || keel__py_timeout_arg(args[1], &timeout) < 0)
        return NULL;
    sjob_init(&j, SJOB_PING);
    keel_error err;
    keel_status s = sdb_run(self, database, timeout, &j, &err);
    return sjob_finish(self, &j, s, &err, 0);
}

static PyTypeObject *sconn_type(kpy_sdb *self) {
    PyObject *tp = PyObject_GetAttrString(self->module, "SyncConnection");
    if (tp != NULL && !PyType_Check(tp)) {
        Py_DECREF(tp);
        PyErr_SetString(PyExc_RuntimeError, "keel._native.SyncConnection is not a type");
        return NULL;
    }
    return (PyTypeObject *)tp;
}

/* _acquire(database, timeout, cls) -> cls (a SyncConnection class): a leased connection. */
static PyObject *sdb_acquire(kpy_sdb *self, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *database;
    if (sdb_check(self) < 0 || check_nargs(nargs, 3, "_acquire(database, timeout, cls)") < 0 ||
        name_arg(args[0], &database) < 0 || keel__py_timeout_arg(args[1], &timeout) < 0)
        return NULL;
    PyTypeObject *base = sconn_type(self);
    if (base == NULL)
        return NULL;
    int ok = PyType_Check(args[2]) && PyType_IsSubtype((PyTypeObject *)args[2], base);
    Py_DECREF(base);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "cls must be a subclass of keel._native.SyncConnection");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[2];
    kpy_sconn *c = (kpy_sconn *)cls->tp_alloc(cls, 0);
    if (c == NULL)
        return NULL;
    c->notes_tail = &c->notes;
    c->idle = 1;
    c->sdb = (kpy_sdb *)Py_NewRef(self);
    keel_error err;
    keel_status st;
    keel_conn *conn = NULL;
    int interrupted = 0;
    Py_BEGIN_ALLOW_THREADS sdb_lock(self);
    st = sdb_lease(self, database, timeout, &conn, &interrupted, &_save, &err);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS if (st != KEEL_OK) {
        PyObject *exc = NULL;
        if (interrupted && PyErr_Occurred()) {
            /* Ctrl-C: its exception stands */
        } else if (st == KEEL_ERR_TIMEOUT && strcmp(err.sqlstate, "57014") == 0) {
            wait_timeout_error(self, database, timeout, &err);
            exc = keel__py_error_new(self->st, &err);
        } else {
            exc = st == KEEL_ERR_CLOSED ? keel__py_error_new(self->st, &err)
                                        : keel__py_connect_error_new(self->st, &err);
        }
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        Py_DECREF(c);
        return NULL;
    }
    c->conn = conn;
    self->nleased++;
    if ((c->database = PyUnicode_FromString(keel_conn_database(conn))) == NULL ||
        (c->engine = PyUnicode_FromString(keel_conn_engine(conn))) == NULL) {
        Py_DECREF(c); /* gives conn back */
        return NULL;
    }
    return (PyObject *)c;
}

/* A snapshot of the pool of database name into ps: 0, or -1 with an exception. */
static int sdb_snapshot(kpy_sdb *self, PyObject *name, keel_pool_stats *ps) {
    const char *database;
    if (sdb_check(self) < 0 || name_arg(name, &database) < 0)
        return -1;
    keel_error err;
    keel_status st;
    Py_BEGIN_ALLOW_THREADS sdb_lock(self);
    st = self->db == NULL ? closed_error(&err) : keel_db_pool_stats(self->db, database, ps, &err);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS if (st != KEEL_OK) {
        keel__py_error_raise(self->st, &err);
        return -1;
    }
    return 0;
}

static PyObject *sdb_stats(kpy_sdb *self, PyObject *name) {
    keel_pool_stats ps;
    if (sdb_snapshot(self, name, &ps) < 0)
        return NULL;
    return keel__py_stats_dict(&ps);
}

static PyObject *sdb_pool_stats(kpy_sdb *self, PyObject *name) {
    keel_pool_stats ps;
    if (sdb_snapshot(self, name, &ps) < 0)
        return NULL;
    return Py_BuildValue("{snsnsnsnsnsnsd}", "size", (Py_ssize_t)ps.size, "idle",
                         (Py_ssize_t)ps.idle, "leased", (Py_ssize_t)ps.leased, "waiting",
                         (Py_ssize_t)ps.waiting, "min_size", (Py_ssize_t)ps.min_size, "max_size",
                         (Py_ssize_t)ps.max_size, "acquire_timeout", ps.acquire_timeout);
}

static PyObject *sdb_get_closed(kpy_sdb *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->db == NULL);
}

/* _close_begin(): refuses new leases (and so every call but those on leased connections), for
 * close(timeout=) to wait for the leased ones. Set under the lock, which sdb_lease reads it in. */
static PyObject *sdb_close_begin(kpy_sdb *self, PyObject *unused) {
    (void)unused;
    if (sdb_check(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS sdb_lock(self);
    self->closing = 1;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *sdb_get_leased(kpy_sdb *self, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(self->nleased);
}

static PyMethodDef sdb_methods[] = {
    { "close", (PyCFunction)sdb_close, METH_NOARGS,
      "Closes every pool (idempotent); connections still leased become closed handles." },
    { "_query", (PyCFunction)(void (*)(void))sdb_query, METH_FASTCALL,
      "_query(mode, sql, args, database, column, timeout[, rowtype])" },
    { "_executemany", (PyCFunction)(void (*)(void))sdb_executemany, METH_FASTCALL,
      "_executemany(sql, rows, database, timeout)" },
    { "_copy", (PyCFunction)(void (*)(void))sdb_copy, METH_FASTCALL,
      "_copy(table, records, columns, schema, database, timeout) -> int" },
    { "_command", (PyCFunction)(void (*)(void))sdb_command, METH_FASTCALL,
      "_command(dbname, cmd, database, timeout) -> dict" },
    { "_ping", (PyCFunction)(void (*)(void))sdb_ping, METH_FASTCALL, "_ping(database, timeout)" },
    { "_acquire", (PyCFunction)(void (*)(void))sdb_acquire, METH_FASTCALL,
      "_acquire(database, timeout, cls) -> a leased connection of class cls" },
    { "_pool_stats", (PyCFunction)sdb_pool_stats, METH_O, "_pool_stats(name) -> dict" },
    { "_close_begin", (PyCFunction)sdb_close_begin, METH_NOARGS,
      "_close_begin(): no new leases from now on (close(timeout=) waits for the leased ones)." },
    { "_stats", (PyCFunction)sdb_stats, METH_O, "_stats(name) -> dict" },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef sdb_getset[] = {
    { "closed", (getter)sdb_get_closed, NULL, "True once closed.", NULL },
    { "_leased", (getter)sdb_get_leased, NULL, "Connections leased and not yet released.", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMemberDef sdb_members[] = {
    { "__weaklistoffset__", T_PYSSIZET, offsetof(kpy_sdb, weakreflist), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot sdb_slots[] = {
    { Py_tp_doc, "The synchronous database of keel.sync: keel's blocking loop, no asyncio." },
    { Py_tp_new, sdb_new },
    { Py_tp_init, sdb_init },
    { Py_tp_dealloc, sdb_dealloc },
    { Py_tp_traverse, sdb_traverse },
    { Py_tp_methods, sdb_methods },
    { Py_tp_getset, sdb_getset },
    { Py_tp_members, sdb_members },
    { 0, NULL },
};

static PyType_Spec sdb_spec = {
    .name = "keel._native.SyncDatabase",
    .basicsize = sizeof(kpy_sdb),
    .flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = sdb_slots,
};

/* ---- SyncConnection ---- */

static void scur_close(kpy_sconn *c);

/* Drops the notifications not taken (under the lock, or when nothing else can see c). */
static void snotes_clear(kpy_sconn *c) {
    while (c->notes != NULL) {
        snote *n = c->notes;
        c->notes = n->next;
        PyMem_RawFree(n);
    }
    c->notes_tail = &c->notes;
    c->notified = c->lost = 0;
}

/* Gives the connection back (idempotent). */
static void sconn_release(kpy_sconn *c) {
    keel_conn *conn = c->conn;
    if (conn == NULL)
        return;
    if (c->cur != NULL) {
        scur_close(c); /* cancels a statement still streaming, and waits for its end */
    }
    c->conn = NULL;
    kpy_sdb *s = c->sdb;
    s->nleased--;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    if (c->pending != NULL) { /* left running by Ctrl-C: it ends on its own */
        c->pending->owner = NULL;
        c->pending = NULL;
        c->idle = 1;
    }
    keel_conn_release(conn); /* drops the notify handler; keel unlistens */
    snotes_clear(c);
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS
}

static int sconn_check(kpy_sconn *c) {
    if (c->conn != NULL)
        return 0;
    keel__py_raise(c->sdb->st, KEEL_ERR_CLOSED, NULL, "the connection was released");
    return -1;
}

static void sconn_dealloc(kpy_sconn *c) {
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)c);
    if (c->sdb != NULL)
        sconn_release(c);
    Py_CLEAR(c->sdb);
    Py_CLEAR(c->database);
    Py_CLEAR(c->engine);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static int sconn_traverse(kpy_sconn *c, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->sdb);
    return 0;
}

/* _query(mode, sql, args, column, timeout[, rowtype]) */
static PyObject *sconn_query(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    sjob j;
    Py_ssize_t column;
    PyObject *rowtype;
    if (query_args(args, nargs, 5, "_query(mode, sql, args, column, timeout[, rowtype])", &column,
                   &timeout, &rowtype) < 0)
        return NULL;
    if (query_job(c->sdb->st, &j, args[0], args[1], args[2], sconn_arrays(c), c->sdb->json_dumps) <
            0 ||
        sconn_check(c) < 0) {
        sjob_clear(&j);
        return NULL;
    }
    j.rowtype = rowtype;
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    return sjob_finish(c->sdb, &j, s, &err, column);
}

/* _executemany(sql, rows, timeout) */
static PyObject *sconn_executemany(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *hold = NULL;
    sjob j;
    if (check_nargs(nargs, 3, "_executemany(sql, rows, timeout)") < 0 ||
        keel__py_timeout_arg(args[2], &timeout) < 0)
        return NULL;
    if (many_job(c->sdb->st, &j, args[0], args[1], &hold, sconn_arrays(c), c->sdb->json_dumps) <
            0 ||
        sconn_check(c) < 0) {
        sjob_clear(&j);
        Py_XDECREF(hold);
        return NULL;
    }
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    PyObject *out = sjob_finish(c->sdb, &j, s, &err, 0);
    Py_DECREF(hold);
    return out;
}

/* _copy(table, records, columns, schema, timeout) */
static PyObject *sconn_copy(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *hold = NULL;
    sjob j;
    if (check_nargs(nargs, 5, "_copy(table, records, columns, schema, timeout)") < 0 ||
        keel__py_timeout_arg(args[4], &timeout) < 0)
        return NULL;
    if (copy_job(c->sdb->st, &j, args, &hold, sconn_arrays(c), c->sdb->json_dumps) < 0 ||
        sconn_check(c) < 0) {
        sjob_clear(&j);
        Py_XDECREF(hold);
        return NULL;
    }
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    PyObject *out = sjob_finish(c->sdb, &j, s, &err, 0);
    Py_DECREF(hold);
    return out;
}

/* _command(dbname, cmd, timeout) */
static PyObject *sconn_command(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    PyObject *name = NULL, *bson = NULL;
    sjob j;
    if (check_nargs(nargs, 3, "_command(dbname, cmd, timeout)") < 0 ||
        keel__py_timeout_arg(args[2], &timeout) < 0)
        return NULL;
    if (command_job(c->sdb->st, &j, args[0], args[1], &name, &bson) < 0 || sconn_check(c) < 0) {
        sjob_clear(&j);
        Py_XDECREF(name);
        Py_XDECREF(bson);
        return NULL;
    }
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    PyObject *out = sjob_finish(c->sdb, &j, s, &err, 0);
    Py_XDECREF(name);
    Py_DECREF(bson);
    return out;
}

/* _txn(op, depth): BEGIN, COMMIT, ROLLBACK or a savepoint step, under command_timeout. */
static PyObject *sconn_txn(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    sjob j;
    if (check_nargs(nargs, 2, "_txn(op, depth)") < 0)
        return NULL;
    long op = PyLong_AsLong(args[0]);
    long depth = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (op < KEEL_TXN_BEGIN || op > KEEL_TXN_ROLLBACK_TO || depth < 0 || depth > 100000) {
        PyErr_SetString(PyExc_ValueError, "_txn: unknown operation or depth");
        return NULL;
    }
    if (sconn_check(c) < 0)
        return NULL;
    sjob_init(&j, KPY_OP_TXN);
    j.txn = (keel_txn_op)op;
    j.depth = (unsigned)depth;
    keel_error err;
    keel_status s = sconn_run(c, 0, &j, &err);
    return sjob_finish(c->sdb, &j, s, &err, 0);
}

/* _prepare(sql, timeout): the statement's description (see keel__py_description_of). */
static PyObject *sconn_prepare(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    sjob j;
    const char *sql;
    if (check_nargs(nargs, 2, "_prepare(sql, timeout)") < 0 ||
        keel__py_timeout_arg(args[1], &timeout) < 0 || sql_arg(args[0], &sql) < 0 ||
        sconn_check(c) < 0)
        return NULL;
    sjob_init(&j, KPY_OP_PREPARE);
    j.sql = sql;
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    return sjob_finish(c->sdb, &j, s, &err, 0);
}

/* ---- cursors: a statement's rows streamed (keel_conn_query_rows), prefetch at a time ---- */

/* A cursor's state. Its callbacks run inside keel_loop_run, on the calling thread with the GIL
 * released: they take the GIL to convert rows. Freed by its connection, or, when the connection
 * was released first, by its completion callback (orphan). */
struct scur {
    kpy_state *st;
    keel_conn *conn;
    PyObject *sql;       /* str: keeps the statement's text alive */
    kpy_params *params;  /* kept until the statement is over */
    PyObject *rowtype;   /* or NULL: Records */
    PyObject *decoders;  /* set_type_codec's {OID: decoder} (strong), or NULL */
    PyObject *loads;     /* json_deserializer= (strong), or NULL */
    PyObject *rows;      /* list: rows converted and not taken yet */
    Py_ssize_t prefetch; /* pause once this many rows wait */
    int stop;            /* keel_loop_run's flag: rows enough, an error, or the end */
    int done;            /* the completion callback ran */
    int orphan;          /* its connection was released: the callback frees it */
    keel_error err;      /* the statement's error (err.code != KEEL_OK) */
    PyObject *exc;       /* a row that could not be converted: its exception */
};

static void scur_free(scur *k) {
    Py_CLEAR(k->sql);
    keel__py_params_free(k->params);
    Py_CLEAR(k->rowtype);
    Py_CLEAR(k->decoders);
    Py_CLEAR(k->loads);
    Py_CLEAR(k->rows);
    Py_CLEAR(k->exc);
    PyMem_RawFree(k);
}

static void scur_on_rows(const keel_result *res, void *arg) {
    scur *k = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    if (k->exc == NULL && !k->orphan) {
        PyObject *prev = keel__py_json_loads_swap(k->loads);
        kpy_decoders dec;
        if (keel__py_decoders_begin(k->st, k->decoders, res, &dec) == 0) {
            PyObject *desc = keel__py_record_desc(res);
            size_t n = keel_result_nrows(res);
            for (size_t i = 0; desc != NULL && i < n; i++) {
                PyObject *r = keel__py_row_new(k->st, desc, res, i, k->rowtype);
                if (r == NULL || PyList_Append(k->rows, r) < 0) {
                    Py_XDECREF(r);
                    break;
                }
                Py_DECREF(r);
            }
            Py_XDECREF(desc);
            keel__py_decoders_end(k->st, &dec);
        }
        keel__py_json_loads_swap(prev);
        if (PyErr_Occurred()) {
            /* Raised once the rows before it are taken; the statement is cancelled then. */
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            if (v != NULL && tb != NULL)
                PyException_SetTraceback(v, tb);
            Py_XDECREF(t);
            Py_XDECREF(tb);
            k->exc = v != NULL ? v : Py_NewRef(PyExc_MemoryError);
        }
    }
    if (k->exc != NULL || k->orphan || PyList_GET_SIZE(k->rows) >= k->prefetch) {
        keel_conn_pause(k->conn);
        k->stop = 1;
    }
    PyGILState_Release(g);
}

static void scur_done(keel_result *res, const keel_error *err, void *arg) {
    scur *k = arg;
    keel_result_free(res);
    if (err != NULL)
        k->err = *err;
    k->done = 1;
    k->stop = 1;
    if (k->orphan) {
        PyGILState_STATE g = PyGILState_Ensure();
        scur_free(k);
        PyGILState_Release(g);
    }
}

/* Runs the loop until k has rows enough, an error or its end (cancel first: until its end).
 * Called with the GIL held. Ctrl-C meanwhile stops the statement (the cursor is over) and
 * returns SWAIT_INTERRUPTED with its exception set. */
static keel_status scur_run(kpy_sconn *c, scur *k, int cancel, keel_error *err) {
    keel_status st = KEEL_OK;
    kpy_sdb *s = c->sdb;
    keel_error_clear(err);
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    if (s->db == NULL) {
        st = closed_error(err);
    } else if (cancel) {
        keel_conn_cancel(k->conn);
        st = swait(s, &k->done, INFINITY, 0, &_save, err);
    } else if (!k->done) {
        k->stop = 0;
        keel_conn_resume(k->conn);
        st = swait(s, &k->stop, INFINITY, SWAIT_SIGNALS, &_save, err);
        if (st == SWAIT_INTERRUPTED) {
            if (!k->done && s->db != NULL)
                keel_conn_cancel(k->conn);
            keel_error ignored;
            swait(s, &k->done, INFINITY, 0, &_save, &ignored);
        }
    }
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS return st;
}

/* Ends c's cursor: cancels its statement when it still runs (the connection serves on). */
static void scur_close(kpy_sconn *c) {
    scur *k = c->cur;
    if (k == NULL)
        return;
    keel_error err;
    keel_error_clear(&err);
    if (!k->done && c->conn != NULL && scur_run(c, k, 1, &err) != KEEL_OK && !k->done) {
        /* The loop failed: the callback frees it if it ever runs. */
        k->orphan = 1;
        c->cur = NULL;
        return;
    }
    c->cur = NULL;
    if (k->done)
        scur_free(k);
    else
        k->orphan = 1;
}

/* _cursor(sql, args, prefetch, timeout[, rowtype]): starts the statement and reads up to
 * prefetch rows. */
static PyObject *sconn_cursor(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    double timeout;
    const char *sql;
    PyObject *rowtype = nargs == 5 ? args[4] : NULL;
    if (check_nargs(rowtype != NULL ? 4 : nargs, 4,
                    "_cursor(sql, args, prefetch, timeout[, rowtype])") < 0 ||
        sql_arg(args[0], &sql) < 0 || keel__py_timeout_arg(args[3], &timeout) < 0)
        return NULL;
    if (!PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "args must be a tuple");
        return NULL;
    }
    Py_ssize_t prefetch = PyLong_AsSsize_t(args[2]);
    if (prefetch == -1 && PyErr_Occurred())
        return NULL;
    if (prefetch < 1) {
        PyErr_Format(PyExc_ValueError, "prefetch must be at least 1, not %zd", prefetch);
        return NULL;
    }
    if (sconn_check(c) < 0)
        return NULL;
    if (c->cur != NULL)
        return keel__py_raise(c->sdb->st, KEEL_ERR_BUSY, NULL,
                              "the connection is busy: a cursor is open on it (read it to its "
                              "end or close it first)");
    kpy_sdb *s = c->sdb;
    kpy_params p;
    keel__py_params_init(&p);
    p.arrays = sconn_arrays(c);
    p.json_dumps = s->json_dumps;
    if (keel__py_params_from_args(s->st, &p, args[1]) < 0) {
        keel__py_params_clear(&p);
        return NULL;
    }
    scur *k = PyMem_RawCalloc(1, sizeof *k);
    if (k == NULL || (k->rows = PyList_New(0)) == NULL ||
        (k->params = keel__py_params_keep(&p)) == NULL) {
        keel__py_params_clear(&p);
        if (k != NULL)
            scur_free(k);
        return PyErr_NoMemory();
    }
    k->st = s->st;
    k->conn = c->conn;
    k->sql = Py_NewRef(args[0]);
    k->rowtype = rowtype != NULL && rowtype != Py_None ? Py_NewRef(rowtype) : NULL;
    k->decoders = s->config != NULL ? Py_XNewRef(((kpy_db *)s->config)->decoders) : NULL;
    k->loads = Py_XNewRef(s->json_loads);
    k->prefetch = prefetch;
    keel_error err;
    keel_status st = KEEL_OK;
    int interrupted = 0;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    if (timeout != 0)
        st = keel_conn_set_timeout(c->conn, isinf(timeout) ? 0 : timeout, &err);
    else if (c->timeout_set)
        st = keel_conn_set_timeout(c->conn, KEEL_TIMEOUT_CONFIGURED, &err);
    if (st == KEEL_OK)
        st = sconn_idle(c, &interrupted, &_save, &err);
    if (st == KEEL_OK) {
        c->timeout_set = timeout != 0;
        st = keel_conn_query_rows(c->conn, sql, k->params->values, k->params->nvalues, scur_on_rows,
                                  scur_done, k, &err);
    }
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS if (st != KEEL_OK) {
        scur_free(k);
        if (interrupted && PyErr_Occurred())
            return NULL; /* Ctrl-C while an earlier cancelled statement was ending */
        PyObject *exc = keel__py_error_new(s->st, &err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    c->cur = k;
    keel_error_clear(&err);
    if (scur_run(c, k, 0, &err) != KEEL_OK) {
        if (PyErr_Occurred()) { /* Ctrl-C: the statement was stopped */
            scur_close(c);
            return NULL;
        }
        PyObject *exc = keel__py_error_new(s->st, &err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Up to n rows of the cursor (fewer only at its end); its error once the rows before it are
 * taken. */
static PyObject *cursor_take(kpy_sconn *c, Py_ssize_t n) {
    scur *k = c->cur;
    if (k == NULL)
        return PyList_New(0);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    keel_error err;
    keel_error_clear(&err);
    while (PyList_GET_SIZE(out) < n) {
        Py_ssize_t have = PyList_GET_SIZE(k->rows);
        Py_ssize_t take = have < n - PyList_GET_SIZE(out) ? have : n - PyList_GET_SIZE(out);
        if (take > 0) {
            PyObject *part = PyList_GetSlice(k->rows, 0, take);
            int bad = part == NULL ||
                      PyList_SetSlice(out, PyList_GET_SIZE(out), PyList_GET_SIZE(out), part) < 0 ||
                      PyList_SetSlice(k->rows, 0, take, NULL) < 0;
            Py_XDECREF(part);
            if (bad) {
                Py_DECREF(out);
                return NULL;
            }
            continue;
        }
        if (k->exc != NULL) {
            /* A row could not be converted: the rows before it first, then its error; the
             * statement is stopped. */
            if (PyList_GET_SIZE(out) > 0)
                return out;
            PyObject *exc = k->exc;
            k->exc = NULL;
            scur_close(c);
            Py_DECREF(out);
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
            return NULL;
        }
        if (k->done) {
            if (k->err.code != KEEL_OK && PyList_GET_SIZE(out) == 0) {
                PyObject *exc = keel__py_error_new(c->sdb->st, &k->err);
                scur_close(c);
                Py_DECREF(out);
                if (exc != NULL) {
                    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                    Py_DECREF(exc);
                }
                return NULL;
            }
            if (k->err.code == KEEL_OK)
                scur_close(c);
            return out;
        }
        if (c->conn == NULL) {
            Py_DECREF(out);
            return keel__py_raise(c->sdb->st, KEEL_ERR_CLOSED, NULL, "the connection was released");
        }
        if (scur_run(c, k, 0, &err) != KEEL_OK) {
            Py_DECREF(out);
            if (PyErr_Occurred()) { /* Ctrl-C: the statement was stopped */
                scur_close(c);
                return NULL;
            }
            PyObject *exc = keel__py_error_new(c->sdb->st, &err);
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            return NULL;
        }
    }
    if (k->done && k->err.code == KEEL_OK && k->exc == NULL && PyList_GET_SIZE(k->rows) == 0)
        scur_close(c); /* every row taken: the connection is free */
    return out;
}

/* _cursor_take(n) -> (rows, more): up to n rows, and whether the cursor has more to say (rows
 * or its error); False once it is over (the connection free). */
static PyObject *sconn_cursor_take(kpy_sconn *c, PyObject *n_arg) {
    Py_ssize_t n = PyLong_AsSsize_t(n_arg);
    if ((n == -1 && PyErr_Occurred()) || sconn_check(c) < 0)
        return NULL;
    PyObject *rows = cursor_take(c, n);
    if (rows == NULL)
        return NULL;
    return Py_BuildValue("(NO)", rows, c->cur != NULL ? Py_True : Py_False);
}

/* _cursor_close(): stops the cursor's statement (idempotent). */
static PyObject *sconn_cursor_close(kpy_sconn *c, PyObject *unused) {
    (void)unused;
    scur_close(c);
    Py_RETURN_NONE;
}

/* _ping(timeout) */
static PyObject *sconn_ping(kpy_sconn *c, PyObject *timeout_arg) {
    double timeout;
    sjob j;
    if (keel__py_timeout_arg(timeout_arg, &timeout) < 0 || sconn_check(c) < 0)
        return NULL;
    sjob_init(&j, SJOB_PING);
    keel_error err;
    keel_status s = sconn_run(c, timeout, &j, &err);
    return sjob_finish(c->sdb, &j, s, &err, 0);
}

/* ---- notifications (PostgreSQL's LISTEN/NOTIFY) ---- */

/* keel's notify handler of a listening connection: queues what arrives for _notifications. Runs
 * inside the loop, on whichever thread runs it, with the database's lock held and the GIL
 * released: no Python object is touched. A notification that cannot be queued for lack of
 * memory is dropped. */
static void sconn_notified(keel_conn *conn, const keel_notification *n, const keel_error *err,
                           void *arg) {
    (void)conn;
    kpy_sconn *c = arg;
    if (n == NULL) {
        c->lost = 1;
        c->lost_err = *err;
        c->notified = 1;
        return;
    }
    size_t clen = strlen(n->channel), plen = strlen(n->payload);
    snote *note = PyMem_RawMalloc(sizeof *note + clen + plen + 2);
    if (note == NULL)
        return;
    note->next = NULL;
    note->pid = n->pid;
    note->channel_len = clen;
    memcpy(note->text, n->channel, clen + 1);
    memcpy(note->text + clen + 1, n->payload, plen + 1);
    if (c->notes_tail == NULL)
        c->notes_tail = &c->notes;
    *c->notes_tail = note;
    c->notes_tail = &note->next;
    c->notified = 1;
}

/* _listen(on): hands the notifications of the connection to its queue (on) or no longer (the
 * queue is emptied). NotSupportedError on engines without notifications. */
static PyObject *sconn_listen(kpy_sconn *c, PyObject *on_arg) {
    int on = PyObject_IsTrue(on_arg);
    if (on < 0 || sconn_check(c) < 0)
        return NULL;
    kpy_sdb *s = c->sdb;
    keel_error err;
    keel_status st;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    st = keel_conn_set_notify_handler(c->conn, on ? sconn_notified : NULL, c, &err);
    if (!on)
        snotes_clear(c);
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS if (st != KEEL_OK) return keel__py_error_raise(s->st, &err);
    Py_RETURN_NONE;
}

/* A notification as (pid, channel, payload); called with the GIL, on a note detached from its
 * connection's queue. */
static PyObject *snote_tuple(const snote *n) {
    return Py_BuildValue("(LNN)", (long long)n->pid,
                         PyUnicode_DecodeUTF8(n->text, (Py_ssize_t)n->channel_len, "replace"),
                         PyUnicode_DecodeUTF8(n->text + n->channel_len + 1,
                                              (Py_ssize_t)strlen(n->text + n->channel_len + 1),
                                              "replace"));
}

/*
 * _notifications(timeout, limit) -> [(pid, channel, payload)…]: up to limit notifications of a
 * listening connection, oldest first, waiting at most timeout seconds (negative: without end)
 * for the first one; [] when none came in time. Once those before it are taken, the error of a
 * connection lost while it listened is raised (once). Ctrl-C stops the wait (KeyboardInterrupt);
 * closing the database ends it with InterfaceError.
 */
static PyObject *sconn_notifications(kpy_sconn *c, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 2, "_notifications(timeout, limit)") < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(args[0]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if ((timeout == -1.0 || limit == -1) && PyErr_Occurred())
        return NULL;
    if (isnan(timeout) || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "_notifications: timeout is a number, limit >= 1");
        return NULL;
    }
    if (sconn_check(c) < 0)
        return NULL;
    kpy_sdb *s = c->sdb;
    keel_error err;
    keel_status st = KEEL_OK;
    snote *taken = NULL;
    int lost = 0;
    double deadline = timeout < 0 || isinf(timeout) ? INFINITY : monotonic_now() + timeout;
    Py_BEGIN_ALLOW_THREADS sdb_lock(s);
    if (!c->notified)
        st = swait(s, &c->notified, deadline, SWAIT_SIGNALS | SWAIT_CLOSABLE, &_save, &err);
    if (st == KEEL_ERR_TIMEOUT)
        st = KEEL_OK;
    if (st == KEEL_OK && c->notes != NULL) {
        /* Detach up to limit of them: they are converted with the GIL, without the lock. */
        snote **end = &c->notes;
        for (Py_ssize_t i = 0; i < limit && *end != NULL; i++)
            end = &(*end)->next;
        taken = c->notes;
        c->notes = *end;
        *end = NULL;
        if (c->notes == NULL)
            c->notes_tail = &c->notes;
    } else if (st == KEEL_OK && c->lost) {
        lost = 1;
        err = c->lost_err;
        c->lost = 0;
    }
    c->notified = c->notes != NULL || c->lost;
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS if (st == SWAIT_INTERRUPTED && PyErr_Occurred()) return NULL;
    if (st != KEEL_OK || lost)
        return keel__py_error_raise(s->st, &err);
    PyObject *out = PyList_New(0);
    while (taken != NULL) {
        snote *n = taken;
        taken = n->next;
        PyObject *t = out != NULL ? snote_tuple(n) : NULL;
        if (out != NULL && (t == NULL || PyList_Append(out, t) < 0))
            Py_CLEAR(out);
        Py_XDECREF(t);
        PyMem_RawFree(n);
    }
    return out;
}

static PyObject *sconn_release_method(kpy_sconn *c, PyObject *unused) {
    (void)unused;
    sconn_release(c);
    Py_RETURN_NONE;
}

static PyObject *sconn_get_in_transaction(kpy_sconn *c, void *closure) {
    (void)closure;
    if (sconn_check(c) < 0)
        return NULL;
    return keel__py_conn_in_transaction(c->conn, c->depth);
}

static PyObject *sconn_get_busy(kpy_sconn *c, void *closure) {
    (void)closure;
    return PyBool_FromLong(!c->idle);
}

static PyObject *sconn_get_db(kpy_sconn *c, void *closure) {
    (void)closure;
    return Py_NewRef((PyObject *)c->sdb);
}

static PyObject *sconn_get_released(kpy_sconn *c, void *closure) {
    (void)closure;
    return PyBool_FromLong(c->conn == NULL);
}

static PyObject *sconn_repr(kpy_sconn *c) {
    return keel__py_conn_repr((PyObject *)c, c->database, c->engine, c->conn == NULL);
}

static PyMethodDef sconn_methods[] = {
    { "_query", (PyCFunction)(void (*)(void))sconn_query, METH_FASTCALL,
      "_query(mode, sql, args, column, timeout[, rowtype])" },
    { "_executemany", (PyCFunction)(void (*)(void))sconn_executemany, METH_FASTCALL,
      "_executemany(sql, rows, timeout)" },
    { "_copy", (PyCFunction)(void (*)(void))sconn_copy, METH_FASTCALL,
      "_copy(table, records, columns, schema, timeout) -> int" },
    { "_command", (PyCFunction)(void (*)(void))sconn_command, METH_FASTCALL,
      "_command(dbname, cmd, timeout) -> dict" },
    { "_txn", (PyCFunction)(void (*)(void))sconn_txn, METH_FASTCALL, "_txn(op, depth)" },
    { "_cursor", (PyCFunction)(void (*)(void))sconn_cursor, METH_FASTCALL,
      "_cursor(sql, args, prefetch, timeout[, rowtype]): starts a cursor's statement." },
    { "_cursor_take", (PyCFunction)sconn_cursor_take, METH_O,
      "_cursor_take(n) -> (rows, more): up to n rows of the cursor; more: False once it is over." },
    { "_cursor_close", (PyCFunction)sconn_cursor_close, METH_NOARGS,
      "_cursor_close(): stops the cursor's statement (idempotent)." },
    { "_prepare", (PyCFunction)(void (*)(void))sconn_prepare, METH_FASTCALL,
      "_prepare(sql, timeout) -> ((type name, keel type) per parameter, (name, type name, keel "
      "type) per column): prepares a statement without running it." },
    { "_ping", (PyCFunction)sconn_ping, METH_O, "_ping(timeout)" },
    { "_listen", (PyCFunction)sconn_listen, METH_O,
      "_listen(on): queues the notifications (PostgreSQL's NOTIFY) of the connection for "
      "_notifications (on), or no longer. NotSupportedError on other engines." },
    { "_notifications", (PyCFunction)(void (*)(void))sconn_notifications, METH_FASTCALL,
      "_notifications(timeout, limit) -> [(pid, channel, payload)…]: up to limit notifications, "
      "waiting at most timeout seconds (negative: without end) for the first; [] when none came." },
    { "_release", (PyCFunction)sconn_release_method, METH_NOARGS,
      "Gives the connection back to its pool (idempotent)." },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef sconn_getset[] = {
    { "in_transaction", (getter)sconn_get_in_transaction, NULL, "True inside a transaction block.",
      NULL },
    { "released", (getter)sconn_get_released, NULL, "True once given back to the pool.", NULL },
    { "_db", (getter)sconn_get_db, NULL, "The SyncDatabase that leased it.", NULL },
    { "_busy", (getter)sconn_get_busy, NULL,
      "True while an operation Ctrl-C cancelled still runs (the next one waits for it).", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMemberDef sconn_members[] = {
    { "database", T_OBJECT, offsetof(kpy_sconn, database), READONLY,
      "Name of the database of the connection." },
    { "engine", T_OBJECT, offsetof(kpy_sconn, engine), READONLY,
      "Engine name (\"postgresql\", \"sqlite\"…)." },
    { "_depth", T_INT, offsetof(kpy_sconn, depth), 0, "Transaction nesting depth." },
    { "__weaklistoffset__", T_PYSSIZET, offsetof(kpy_sconn, weakreflist), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot sconn_slots[] = {
    { Py_tp_doc, "A connection leased by a SyncDatabase (see keel.sync.Connection)." },
    { Py_tp_dealloc, sconn_dealloc },
    { Py_tp_traverse, sconn_traverse },
    { Py_tp_repr, sconn_repr },
    { Py_tp_methods, sconn_methods },
    { Py_tp_getset, sconn_getset },
    { Py_tp_members, sconn_members },
    { 0, NULL },
};

static PyType_Spec sconn_spec = {
    .name = "keel._native.SyncConnection",
    .basicsize = sizeof(kpy_sconn),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sconn_slots,
};

int keel__py_sync_init(PyObject *module) {
    const PyType_Spec *specs[] = { &sdb_spec, &sconn_spec };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        PyObject *tp = PyType_FromModuleAndSpec(module, (PyType_Spec *)specs[i], NULL);
        if (tp == NULL)
            return -1;
        int rc = PyModule_AddObjectRef(module, strrchr(specs[i]->name, '.') + 1, tp);
        Py_DECREF(tp);
        if (rc < 0)
            return -1;
    }
    return 0;
}
