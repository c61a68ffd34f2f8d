/* python/keel/_native/loop.c - keel_loop_ops over the running asyncio loop, and future helpers. */
#include "module.h"

#include <stdio.h>
#include <time.h>
#include <structmember.h>

/*
 * The adapter of one keel_loop. keel asks it to watch descriptors (loop.add_reader/add_writer)
 * and to arm timers (loop.call_at); each keel_watch / keel_timer gets a small callable object,
 * stored as keel's host data, that asyncio calls back. The adapter is plain C memory: its
 * lifetime is not tied to any Python object, since keel may still use the loop after the
 * keel.Database that made it is gone (the core frees a closed db once its last connection is
 * back). `live` counts the watches and armed timers keel holds; once the owner has detached and
 * live drops to zero, the keel_loop is freed on a later loop iteration, never from inside a keel
 * call.
 */
struct kpy_loop {
    keel_loop *kloop;
    kpy_state *st;
    PyObject *module; /* keeps st alive */
    PyObject *aloop;  /* the asyncio loop */
    PyObject *add_reader, *remove_reader, *add_writer, *remove_writer, *call_at, *call_soon,
        *time; /* bound methods of aloop */
    size_t live;
    int detached;
    int free_scheduled;
    void (*on_freed)(PyObject *arg);
    PyObject *on_freed_arg;
    /* The thread state saved while the GIL is released around a keel_db_close; what keel calls
     * meanwhile takes the GIL back with it (keel__py_gil_take). NULL the rest of the time. */
    PyThreadState *released;
};

/* ---- Deferred: a callable running fn(arg) once, for call_soon ---- */

typedef struct kpy_deferred {
    PyObject_HEAD vectorcallfunc vectorcall;
    void (*fn)(PyObject *arg);
    PyObject *arg;
} kpy_deferred;

static PyObject *deferred_call(PyObject *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    (void)args;
    (void)nargsf;
    (void)kwnames;
    kpy_deferred *d = (kpy_deferred *)self;
    void (*fn)(PyObject *) = d->fn;
    PyObject *arg = d->arg;
    d->fn = NULL;
    d->arg = NULL;
    if (fn != NULL)
        fn(arg);
    Py_XDECREF(arg);
    Py_RETURN_NONE;
}

static int deferred_traverse(kpy_deferred *d, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(d));
    Py_VISIT(d->arg);
    return 0;
}

static int deferred_clear(kpy_deferred *d) {
    Py_CLEAR(d->arg);
    return 0;
}

static void deferred_dealloc(kpy_deferred *d) {
    PyTypeObject *tp = Py_TYPE(d);
    PyObject_GC_UnTrack(d);
    deferred_clear(d);
    tp->tp_free((PyObject *)d);
    Py_DECREF(tp);
}

static PyMemberDef deferred_members[] = {
    { "__vectorcalloffset__", T_PYSSIZET, offsetof(kpy_deferred, vectorcall), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot deferred_slots[] = {
    { Py_tp_call, PyVectorcall_Call },     { Py_tp_members, deferred_members },
    { Py_tp_traverse, deferred_traverse }, { Py_tp_clear, deferred_clear },
    { Py_tp_dealloc, deferred_dealloc },   { 0, NULL },
};

PyType_Spec keel__py_deferred_spec = {
    .name = "keel._native._Deferred",
    .basicsize = sizeof(kpy_deferred),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = deferred_slots,
};

static int call_soon_raw(kpy_state *st, PyObject *call_soon, void (*fn)(PyObject *),
                         PyObject *arg) {
    kpy_deferred *d = PyObject_GC_New(kpy_deferred, st->DeferredType);
    if (d == NULL)
        return -1;
    d->vectorcall = deferred_call;
    d->fn = fn;
    d->arg = Py_XNewRef(arg);
    PyObject_GC_Track(d);
    PyObject *h = PyObject_CallOneArg(call_soon, (PyObject *)d);
    Py_DECREF(d);
    if (h == NULL)
        return -1;
    Py_DECREF(h);
    return 0;
}

int keel__py_loop_call_soon(kpy_loop *L, void (*fn)(PyObject *arg), PyObject *arg) {
    return call_soon_raw(L->st, L->call_soon, fn, arg);
}

/* loop.call_at(loop.time() + delay, callback): its handle, or NULL with an exception. */
static PyObject *call_after(kpy_loop *L, double delay, PyObject *callback) {
    PyObject *now = PyObject_CallNoArgs(L->time);
    if (now == NULL)
        return NULL;
    double when = PyFloat_AsDouble(now);
    Py_DECREF(now);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *whenobj = PyFloat_FromDouble(when + delay);
    if (whenobj == NULL)
        return NULL;
    PyObject *args[2] = { whenobj, callback };
    PyObject *handle = PyObject_Vectorcall(L->call_at, args, 2, NULL);
    Py_DECREF(whenobj);
    return handle;
}

PyObject *keel__py_loop_call_later(kpy_loop *L, double delay, void (*fn)(PyObject *arg),
                                   PyObject *arg) {
    kpy_deferred *d = PyObject_GC_New(kpy_deferred, L->st->DeferredType);
    if (d == NULL)
        return NULL;
    d->vectorcall = deferred_call;
    d->fn = fn;
    d->arg = Py_XNewRef(arg);
    PyObject_GC_Track(d);
    PyObject *handle = call_after(L, delay, (PyObject *)d);
    Py_DECREF(d);
    return handle;
}

int keel__py_call_soon(kpy_state *st, PyObject *aloop, void (*fn)(PyObject *arg), PyObject *arg) {
    PyObject *call_soon = PyObject_GetAttr(aloop, st->s_call_soon);
    if (call_soon == NULL)
        return -1;
    int rc = call_soon_raw(st, call_soon, fn, arg);
    Py_DECREF(call_soon);
    return rc;
}

/* ---- letting go of large lists a slice at a time ---- */

/*
 * Freeing a million Records or 100,000 dicts takes 20-50 ms: a fetch() that fails or is
 * cancelled near its end, or a reply whose decoding is abandoned, would spend that inside one
 * callback. Lists nobody else holds are emptied from their end instead, a budget per iteration
 * of the asyncio loop. The scheduled call holds a tuple (list, module, aloop).
 */
#define LET_GO_MIN 4096
#define LET_GO_CHUNK 1024

static int64_t let_go_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void let_go_step(PyObject *job) {
    PyObject *list = PyTuple_GET_ITEM(job, 0);
    kpy_state *st = PyModule_GetState(PyTuple_GET_ITEM(job, 1));
    int64_t deadline = let_go_now_us() + KPY_SLICE_BUDGET_US;
    Py_ssize_t n;
    while ((n = PyList_GET_SIZE(list)) > 0) {
        Py_ssize_t k = n < LET_GO_CHUNK ? n : LET_GO_CHUNK;
        /* Shrinking a list cannot fail; if it did, the rest goes with the job. */
        if (PyList_SetSlice(list, n - k, n, NULL) < 0)
            break;
        if (n > k && let_go_now_us() >= deadline) {
            if (keel__py_call_soon(st, PyTuple_GET_ITEM(job, 2), let_go_step, job) == 0)
                return;
            break;
        }
    }
    if (PyErr_Occurred())
        PyErr_Clear();
}

void keel__py_let_go(kpy_state *st, PyObject *module, PyObject *aloop, PyObject *list, int owned) {
    if (list == NULL)
        return;
    /* Small, or held elsewhere too (then it is not ours to empty): an ordinary release. */
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) < LET_GO_MIN ||
        (!owned && Py_REFCNT(list) > 1) || aloop == NULL) {
        Py_DECREF(list);
        return;
    }
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    PyObject *job = PyTuple_Pack(3, list, module, aloop);
    Py_DECREF(list);
    if (job == NULL || keel__py_call_soon(st, aloop, let_go_step, job) < 0)
        PyErr_Clear(); /* the asyncio loop is closed: everything goes now, with the job */
    Py_XDECREF(job);
    kpy_exc_unstash(&saved);
}

PyObject *keel__py_mod_let_go(PyObject *module, PyObject *list) {
    if (!PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_TypeError, "_let_go takes a list");
        return NULL;
    }
    kpy_state *st = PyModule_GetState(module);
    PyObject *running = PyObject_CallNoArgs(st->get_running_loop);
    if (running == NULL)
        return NULL;
    keel__py_let_go(st, module, running != Py_None ? running : NULL, Py_NewRef(list), 1);
    Py_DECREF(running);
    Py_RETURN_NONE;
}

/* ---- the GIL around keel_db_close ---- */

PyThreadState *keel__py_gil_take(kpy_loop *L) {
    PyThreadState *ts = L != NULL ? L->released : NULL;
    if (ts != NULL) {
        L->released = NULL;
        PyEval_RestoreThread(ts);
    }
    return ts;
}

void keel__py_gil_give(kpy_loop *L, PyThreadState *taken) {
    if (taken != NULL)
        L->released = PyEval_SaveThread();
}

void keel__py_loop_close_db(kpy_loop *L, keel_db *db) {
    L->released = PyEval_SaveThread();
    keel_db_close(db);
    PyThreadState *ts = L->released;
    L->released = NULL;
    PyEval_RestoreThread(ts);
}

/* ---- freeing the adapter ---- */

static void loop_free_now(kpy_loop *L) {
    void (*done)(PyObject *) = L->on_freed;
    PyObject *arg = L->on_freed_arg;
    keel_loop_free(L->kloop);
    Py_XDECREF(L->add_reader);
    Py_XDECREF(L->remove_reader);
    Py_XDECREF(L->add_writer);
    Py_XDECREF(L->remove_writer);
    Py_XDECREF(L->call_at);
    Py_XDECREF(L->call_soon);
    Py_XDECREF(L->time);
    Py_XDECREF(L->aloop);
    PyObject *module = L->module;
    PyMem_Free(L);
    if (done != NULL)
        done(arg);
    Py_XDECREF(arg);
    Py_XDECREF(module);
}

/* Runs on a loop iteration after the last watch or timer went away. */
static void loop_free_deferred(PyObject *capsule) {
    kpy_loop *L = PyCapsule_GetPointer(capsule, "keel.loop");
    if (L == NULL) {
        PyErr_WriteUnraisable(NULL);
        return;
    }
    L->free_scheduled = 0;
    /* keel may have started watching something again in between; then wait for it too. */
    if (L->live == 0)
        loop_free_now(L);
}

static void loop_maybe_free(kpy_loop *L) {
    if (!L->detached || L->live != 0 || L->free_scheduled)
        return;
    PyObject *cap = PyCapsule_New(L, "keel.loop", NULL);
    if (cap == NULL || call_soon_raw(L->st, L->call_soon, loop_free_deferred, cap) < 0) {
        /*
         * The asyncio loop is closed: nothing will ever run on it again, and freeing here could
         * pull the keel_loop from under the keel call in progress. The adapter stays allocated;
         * this only happens when a program drops an open Database after its loop ended.
         */
        PyErr_Clear();
    } else {
        L->free_scheduled = 1;
    }
    Py_XDECREF(cap);
}

void keel__py_loop_detach(kpy_loop *L, void (*done)(PyObject *arg), PyObject *arg) {
    L->detached = 1;
    L->on_freed = done;
    L->on_freed_arg = arg;
    if (L->live == 0)
        loop_free_now(L);
    else
        loop_maybe_free(L);
}

/* ---- watches ---- */

typedef struct kpy_watcher {
    PyObject_HEAD vectorcallfunc vectorcall;
    keel_watch *w; /* NULL once keel stopped watching */
    int fd;
    int events; /* what is registered with asyncio */
} kpy_watcher;

/* Called by asyncio with one argument, the event (KEEL_READ or KEEL_WRITE) that fired. */
static PyObject *watcher_call(PyObject *self, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames) {
    (void)kwnames;
    kpy_watcher *wt = (kpy_watcher *)self;
    if (PyVectorcall_NARGS(nargsf) != 1) {
        PyErr_SetString(PyExc_TypeError, "watcher expects one argument");
        return NULL;
    }
    int ev = (int)PyLong_AsLong(args[0]);
    if (ev == -1 && PyErr_Occurred())
        return NULL;
    /* A callback already queued when keel changed its mind is stale: ignore it. */
    if (wt->w == NULL || !(wt->events & ev))
        Py_RETURN_NONE;
    Py_INCREF(self);
    keel_watch_ready(wt->w, ev);
    Py_DECREF(self);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(self);
    Py_RETURN_NONE;
}

static int watcher_traverse(kpy_watcher *wt, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(wt));
    return 0;
}

static void watcher_dealloc(kpy_watcher *wt) {
    PyTypeObject *tp = Py_TYPE(wt);
    PyObject_GC_UnTrack(wt);
    tp->tp_free((PyObject *)wt);
    Py_DECREF(tp);
}

static PyMemberDef watcher_members[] = {
    { "__vectorcalloffset__", T_PYSSIZET, offsetof(kpy_watcher, vectorcall), READONLY, NULL },
    { "fd", T_INT, offsetof(kpy_watcher, fd), READONLY, "The watched descriptor." },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot watcher_slots[] = {
    { Py_tp_call, PyVectorcall_Call },
    { Py_tp_members, watcher_members },
    { Py_tp_traverse, watcher_traverse },
    { Py_tp_dealloc, watcher_dealloc },
    { 0, NULL },
};

PyType_Spec keel__py_watcher_spec = {
    .name = "keel._native._Watcher",
    .basicsize = sizeof(kpy_watcher),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = watcher_slots,
};

/* loop.add_reader(fd, wt, KEEL_READ) and friends. 0, or -1 with an exception. */
static int register_fd(PyObject *method, kpy_watcher *wt, int ev) {
    PyObject *fd = PyLong_FromLong(wt->fd);
    if (fd == NULL)
        return -1;
    PyObject *evo = PyLong_FromLong(ev);
    if (evo == NULL) {
        Py_DECREF(fd);
        return -1;
    }
    PyObject *args[3] = { fd, (PyObject *)wt, evo };
    PyObject *r = PyObject_Vectorcall(method, args, 3, NULL);
    Py_DECREF(fd);
    Py_DECREF(evo);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int unregister_fd(PyObject *method, int fd_num) {
    PyObject *fd = PyLong_FromLong(fd_num);
    if (fd == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(method, fd);
    Py_DECREF(fd);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int op_watch(void *host, keel_watch *w, int fd, int events) {
    kpy_loop *L = host;
    PyThreadState *gil = keel__py_gil_take(L);
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    int rc = 0;
    kpy_watcher *wt = keel_watch_get_host_data(w);
    if (wt == NULL) {
        if (events == 0)
            goto out;
        wt = PyObject_GC_New(kpy_watcher, L->st->WatcherType);
        if (wt == NULL) {
            rc = -1;
            goto out;
        }
        wt->vectorcall = watcher_call;
        wt->w = w;
        wt->fd = fd;
        wt->events = 0;
        PyObject_GC_Track(wt);
        keel_watch_set_host_data(w, wt);
        L->live++;
    }
    int old = wt->events;
    /*
     * Removals cannot meaningfully fail (asyncio ignores unknown descriptors, and a closed loop
     * has nothing registered any more), so their errors are dropped; additions report -1.
     */
    if ((old & KEEL_READ) && !(events & KEEL_READ)) {
        if (unregister_fd(L->remove_reader, wt->fd) < 0)
            PyErr_Clear();
        wt->events &= ~KEEL_READ;
    }
    if ((old & KEEL_WRITE) && !(events & KEEL_WRITE)) {
        if (unregister_fd(L->remove_writer, wt->fd) < 0)
            PyErr_Clear();
        wt->events &= ~KEEL_WRITE;
    }
    if (!(old & KEEL_READ) && (events & KEEL_READ)) {
        if (register_fd(L->add_reader, wt, KEEL_READ) < 0) {
            PyErr_WriteUnraisable((PyObject *)wt);
            rc = -1;
        } else {
            wt->events |= KEEL_READ;
        }
    }
    if (!(old & KEEL_WRITE) && (events & KEEL_WRITE)) {
        if (register_fd(L->add_writer, wt, KEEL_WRITE) < 0) {
            PyErr_WriteUnraisable((PyObject *)wt);
            rc = -1;
        } else {
            wt->events |= KEEL_WRITE;
        }
    }
    if (events == 0) {
        wt->w = NULL;
        keel_watch_set_host_data(w, NULL);
        L->live--;
        Py_DECREF(wt);
        loop_maybe_free(L);
    }
out:
    kpy_exc_unstash(&saved);
    keel__py_gil_give(L, gil);
    return rc;
}

/* ---- timers ---- */

typedef struct kpy_timer {
    PyObject_HEAD vectorcallfunc vectorcall;
    kpy_loop *loop;   /* valid while t != NULL */
    keel_timer *t;    /* NULL once fired or disarmed */
    PyObject *handle; /* asyncio handle of the armed deadline (call_at, or call_soon if due) */
} kpy_timer;

/* Ends the association of tm with its keel_timer (which stays usable for keel). */
static void timer_detach(kpy_timer *tm) {
    kpy_loop *L = tm->loop;
    keel_timer_set_host_data(tm->t, NULL);
    tm->t = NULL;
    L->live--;
    Py_DECREF(tm);
    loop_maybe_free(L);
}

static PyObject *timer_call(PyObject *self, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames) {
    (void)args;
    (void)nargsf;
    (void)kwnames;
    kpy_timer *tm = (kpy_timer *)self;
    keel_timer *t = tm->t;
    if (t == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self);
    Py_CLEAR(tm->handle);
    /* A fired timer is disarmed: if keel re-arms it, it gets a fresh host object. */
    timer_detach(tm);
    keel_timer_fire(t);
    Py_DECREF(self);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(self);
    Py_RETURN_NONE;
}

static int timer_traverse(kpy_timer *tm, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(tm));
    Py_VISIT(tm->handle);
    return 0;
}

static int timer_clear(kpy_timer *tm) {
    Py_CLEAR(tm->handle);
    return 0;
}

static void timer_dealloc(kpy_timer *tm) {
    PyTypeObject *tp = Py_TYPE(tm);
    PyObject_GC_UnTrack(tm);
    timer_clear(tm);
    tp->tp_free((PyObject *)tm);
    Py_DECREF(tp);
}

static PyMemberDef timer_members[] = {
    { "__vectorcalloffset__", T_PYSSIZET, offsetof(kpy_timer, vectorcall), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot timer_slots[] = {
    { Py_tp_call, PyVectorcall_Call },  { Py_tp_members, timer_members },
    { Py_tp_traverse, timer_traverse }, { Py_tp_clear, timer_clear },
    { Py_tp_dealloc, timer_dealloc },   { 0, NULL },
};

PyType_Spec keel__py_timer_spec = {
    .name = "keel._native._Timer",
    .basicsize = sizeof(kpy_timer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = timer_slots,
};

static void cancel_handle(kpy_loop *L, kpy_timer *tm) {
    if (tm->handle == NULL)
        return;
    PyObject *r = PyObject_CallMethodNoArgs(tm->handle, L->st->s_cancel);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(tm->handle);
}

/* Schedules tm on the asyncio loop for deadline_ms; its handle, or NULL with an exception. */
static PyObject *schedule(kpy_loop *L, kpy_timer *tm, int64_t deadline_ms) {
    int64_t delay_ms = deadline_ms - keel_now_ms();
    /* Already due (keel arms deadline 0 to act on the next iteration, e.g. to report an inline
     * SQLite read): call_soon costs a fraction of call_at, which reads the loop's clock and
     * goes through the timer heap. Its handle cancels the same way. */
    if (delay_ms <= 0)
        return PyObject_CallOneArg(L->call_soon, (PyObject *)tm);
    /* keel_now_ms and asyncio's loop.time() both read CLOCK_MONOTONIC; convert via the delay
     * anyway, so a loop with another clock still fires on time. */
    return call_after(L, (double)delay_ms / 1000.0, (PyObject *)tm);
}

static int op_timer(void *host, keel_timer *t, int64_t deadline_ms) {
    kpy_loop *L = host;
    PyThreadState *gil = keel__py_gil_take(L);
    kpy_exc_save saved;
    kpy_exc_stash(&saved);
    int rc = 0;
    kpy_timer *tm = keel_timer_get_host_data(t);
    if (deadline_ms < 0) {
        if (tm != NULL) {
            cancel_handle(L, tm);
            timer_detach(tm);
        }
        goto out;
    }
    if (tm == NULL) {
        tm = PyObject_GC_New(kpy_timer, L->st->TimerType);
        if (tm == NULL) {
            rc = -1;
            goto out;
        }
        tm->vectorcall = timer_call;
        tm->loop = L;
        tm->t = t;
        tm->handle = NULL;
        PyObject_GC_Track(tm);
        keel_timer_set_host_data(t, tm);
        L->live++;
    } else {
        cancel_handle(L, tm);
    }
    tm->handle = schedule(L, tm, deadline_ms);
    if (tm->handle == NULL) {
        PyErr_WriteUnraisable((PyObject *)tm);
        timer_detach(tm);
        rc = -1;
    }
out:
    kpy_exc_unstash(&saved);
    keel__py_gil_give(L, gil);
    return rc;
}

static const keel_loop_ops asyncio_ops = {
    .watch = op_watch,
    .timer = op_timer,
};

kpy_loop *keel__py_loop_new(kpy_state *st, PyObject *module, PyObject *aloop) {
    kpy_loop *L = PyMem_Calloc(1, sizeof *L);
    if (L == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    L->st = st;
    L->module = Py_NewRef(module);
    L->aloop = Py_NewRef(aloop);
    if ((L->add_reader = PyObject_GetAttr(aloop, st->s_add_reader)) == NULL ||
        (L->remove_reader = PyObject_GetAttr(aloop, st->s_remove_reader)) == NULL ||
        (L->add_writer = PyObject_GetAttr(aloop, st->s_add_writer)) == NULL ||
        (L->remove_writer = PyObject_GetAttr(aloop, st->s_remove_writer)) == NULL ||
        (L->call_at = PyObject_GetAttr(aloop, st->s_call_at)) == NULL ||
        (L->call_soon = PyObject_GetAttr(aloop, st->s_call_soon)) == NULL ||
        (L->time = PyObject_GetAttr(aloop, st->s_time)) == NULL)
        goto fail;
    L->kloop = keel_loop_new(&asyncio_ops, L);
    if (L->kloop == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    return L;
fail:
    loop_free_now(L);
    return NULL;
}

keel_loop *keel__py_loop_keel(const kpy_loop *L) { return L->kloop; }

/* ---- futures ---- */

PyObject *keel__py_future_new(kpy_state *st, PyObject *aloop) {
    PyObject *args[1] = { aloop };
    return PyObject_Vectorcall(st->Future, args, 0, st->kw_loop);
}

/* fut.set_result(value) / fut.set_exception(exc); a done future raises InvalidStateError,
 * which only means the awaiting task was cancelled first: nothing is lost by dropping it. */
static void future_complete(PyObject *method, PyObject *fut, PyObject *value) {
    PyObject *args[2] = { fut, value };
    PyObject *r = PyObject_Vectorcall(method, args, 2, NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
}

void keel__py_future_set_result(kpy_state *st, PyObject *fut, PyObject *value) {
    future_complete(st->future_set_result, fut, value);
}

void keel__py_future_set_exception(kpy_state *st, PyObject *fut, PyObject *exc) {
    future_complete(st->future_set_exception, fut, exc);
}

void keel__py_future_set_raised(kpy_state *st, PyObject *fut) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        /* Never leave the awaiting task pending: report the missing error as a bug of keel. */
        keel_error err;
        keel_error_clear(&err);
        err.code = KEEL_ERR_INTERNAL;
        snprintf(err.message, sizeof err.message, "an operation failed without an error");
        PyObject *exc = keel__py_error_new(st, &err);
        if (exc == NULL) {
            PyErr_WriteUnraisable(fut);
            return;
        }
        keel__py_future_set_exception(st, fut, exc);
        Py_DECREF(exc);
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return;
    }
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    keel__py_future_set_exception(st, fut, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}
