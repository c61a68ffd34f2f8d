/* python/keel/_native/objectid.c - keel.ObjectId: MongoDB's 12-byte object id, generated as the BSON spec describes. */
#include "module.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/*
 * A generated id is a 4-byte big-endian Unix time in seconds, 5 random bytes chosen once per
 * process, and a 3-byte big-endian counter starting at a random value; so ids made by one process
 * increase, and ids of different processes differ. The process state is reset in a forked child
 * (pthread_atfork), so parent and child never hand out the same id. The GIL serialises access.
 */
static struct {
    int ready;
    unsigned char random[5];
    uint32_t counter;
} gen;

static void after_fork_child(void) { gen.ready = 0; }

/* Fills gen once per process. 0, or -1 with OSError. */
static int gen_prepare(void) {
    static int atfork_registered;
    if (gen.ready)
        return 0;
    if (!atfork_registered) {
        int e = pthread_atfork(NULL, NULL, after_fork_child);
        if (e != 0) {
            errno = e;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        atfork_registered = 1;
    }
    unsigned char seed[8];
    size_t got = 0;
    while (got < sizeof seed) {
        ssize_t n = getrandom(seed + got, sizeof seed - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        got += (size_t)n;
    }
    memcpy(gen.random, seed, 5);
    gen.counter = (uint32_t)seed[5] << 16 | (uint32_t)seed[6] << 8 | seed[7];
    gen.ready = 1;
    return 0;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int generate(unsigned char oid[12]) {
    if (gen_prepare() < 0)
        return -1;
    put_be32(oid, (uint32_t)time(NULL));
    memcpy(oid + 4, gen.random, 5);
    uint32_t c = gen.counter;
    gen.counter = (c + 1) & 0xFFFFFF;
    oid[9] = (unsigned char)(c >> 16);
    oid[10] = (unsigned char)(c >> 8);
    oid[11] = (unsigned char)c;
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Parses what ObjectId() accepts: None (generate), an ObjectId, 24 hexadecimal characters or 12
 * bytes. Returns 1 on success, 0 for a value of an accepted type that is not a valid id, -1 with
 * TypeError for other types (or another exception).
 */
static int parse(PyTypeObject *tp, PyObject *obj, unsigned char oid[12]) {
    if (obj == Py_None)
        return generate(oid) < 0 ? -1 : 1;
    if (PyObject_TypeCheck(obj, tp)) {
        memcpy(oid, ((kpy_objectid *)obj)->oid, 12);
        return 1;
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (n != 24)
            return 0;
        for (int i = 0; i < 12; i++) {
            int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return 0;
            oid[i] = (unsigned char)(hi << 4 | lo);
        }
        return 1;
    }
    if (PyBytes_Check(obj) || PyByteArray_Check(obj) || PyMemoryView_Check(obj)) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return -1;
        int ok = view.len == 12;
        if (ok)
            memcpy(oid, view.buf, 12);
        PyBuffer_Release(&view);
        return ok;
    }
    PyErr_Format(PyExc_TypeError,
                 "ObjectId() takes a 24-character hex str, 12 bytes or an ObjectId, not %.100s",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *make(PyTypeObject *tp, const unsigned char oid[12]) {
    kpy_objectid *o = (kpy_objectid *)tp->tp_alloc(tp, 0);
    if (o != NULL)
        memcpy(o->oid, oid, 12);
    return (PyObject *)o;
}

PyObject *keel__py_objectid_new(kpy_state *st, const unsigned char oid[12]) {
    return make(st->ObjectIdType, oid);
}

static PyObject *oid_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = { "oid", NULL };
    PyObject *obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:ObjectId", kwlist, &obj))
        return NULL;
    unsigned char oid[12];
    int r = parse(tp, obj, oid);
    if (r < 0)
        return NULL;
    if (r == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%R is not a valid ObjectId: it must be 24 hexadecimal characters or 12 "
                     "bytes",
                     obj);
        return NULL;
    }
    return make(tp, oid);
}

static void oid_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *oid_str(kpy_objectid *o) {
    static const char digits[] = "0123456789abcdef";
    char hex[24];
    for (int i = 0; i < 12; i++) {
        hex[2 * i] = digits[o->oid[i] >> 4];
        hex[2 * i + 1] = digits[o->oid[i] & 15];
    }
    return PyUnicode_FromStringAndSize(hex, 24);
}

static PyObject *oid_repr(kpy_objectid *o) {
    PyObject *s = oid_str(o);
    if (s == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("ObjectId('%U')", s);
    Py_DECREF(s);
    return r;
}

static PyObject *oid_richcompare(PyObject *a, PyObject *b, int op) {
    /* The type cannot be subclassed: anything of another type is not an ObjectId. */
    if (Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    int c = memcmp(((kpy_objectid *)a)->oid, ((kpy_objectid *)b)->oid, 12);
    Py_RETURN_RICHCOMPARE(c, 0, op);
}

static Py_hash_t oid_hash(kpy_objectid *o) {
    /* FNV-1a over the 12 bytes. */
    uint64_t h = UINT64_C(1469598103934665603);
    for (int i = 0; i < 12; i++) {
        h ^= o->oid[i];
        h *= UINT64_C(1099511628211);
    }
    Py_hash_t r = (Py_hash_t)h;
    return r == -1 ? -2 : r;
}

static PyObject *oid_bytes(kpy_objectid *o, PyObject *unused) {
    (void)unused;
    return PyBytes_FromStringAndSize((const char *)o->oid, 12);
}

static PyObject *oid_get_binary(kpy_objectid *o, void *closure) {
    (void)closure;
    return oid_bytes(o, NULL);
}

static PyObject *oid_get_generation_time(kpy_objectid *o, void *closure) {
    (void)closure;
    kpy_state *st = keel__py_state_of_type(Py_TYPE(o));
    if (st == NULL)
        return NULL;
    return keel__py_datetime_from_millis(st, (int64_t)get_be32(o->oid) * 1000);
}

static PyObject *oid_reduce(kpy_objectid *o, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(y#)", (PyObject *)Py_TYPE(o), (const char *)o->oid, (Py_ssize_t)12);
}

static PyObject *oid_is_valid(PyObject *cls, PyObject *obj) {
    unsigned char oid[12];
    if (obj == Py_None)
        Py_RETURN_FALSE;
    int r = parse((PyTypeObject *)cls, obj, oid);
    if (r < 0) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        r = 0;
    }
    return PyBool_FromLong(r);
}

static PyObject *oid_from_datetime(PyObject *cls, PyObject *dt) {
    kpy_state *st = keel__py_state_of_type((PyTypeObject *)cls);
    if (st == NULL)
        return NULL;
    /* keel__py_datetime_to_millis reads dt's fields as a datetime's: anything else is refused
     * first (epoch_naive is a datetime, so its type is datetime.datetime). */
    if (!PyObject_TypeCheck(dt, Py_TYPE(st->epoch_naive)))
        return PyErr_Format(PyExc_TypeError, "from_datetime() takes a datetime, not %.100s",
                            Py_TYPE(dt)->tp_name);
    int64_t ms;
    if (keel__py_datetime_to_millis(st, dt, &ms) < 0)
        return NULL;
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    if (secs < 0 || secs > (int64_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "an ObjectId holds times from 1970 to 2106 (4-byte Unix seconds)");
        return NULL;
    }
    unsigned char oid[12] = { 0 };
    put_be32(oid, (uint32_t)secs);
    return make((PyTypeObject *)cls, oid);
}

static PyMethodDef oid_methods[] = {
    { "__bytes__", (PyCFunction)oid_bytes, METH_NOARGS, "The 12 bytes of the id." },
    { "__reduce__", (PyCFunction)oid_reduce, METH_NOARGS, NULL },
    { "is_valid", (PyCFunction)oid_is_valid, METH_O | METH_CLASS,
      "is_valid(oid) -> bool: True when ObjectId(oid) would succeed (None is not valid)." },
    { "from_datetime", (PyCFunction)oid_from_datetime, METH_O | METH_CLASS,
      "from_datetime(dt) -> ObjectId whose time is dt (naive means UTC) and whose other bytes "
      "are zero: a bound for range queries on _id, never an id to insert." },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef oid_getset[] = {
    { "binary", (getter)oid_get_binary, NULL, "The 12 bytes of the id.", NULL },
    { "generation_time", (getter)oid_get_generation_time, NULL,
      "The creation time in the id, as a UTC-aware datetime (second precision).", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyType_Slot oid_slots[] = {
    { Py_tp_doc, "ObjectId(oid=None) - a MongoDB ObjectId.\n\n"
                 "ObjectId() generates a new id (4-byte time, 5 bytes random per process, 3-byte "
                 "counter); ObjectId('24 hex digits') and ObjectId(12 bytes) parse one (ValueError "
                 "when invalid, TypeError for other types). str() gives the hex form, bytes() the "
                 "12 bytes; ids compare and hash by their bytes." },
    { Py_tp_new, oid_new },
    { Py_tp_dealloc, oid_dealloc },
    { Py_tp_str, oid_str },
    { Py_tp_repr, oid_repr },
    { Py_tp_richcompare, oid_richcompare },
    { Py_tp_hash, oid_hash },
    { Py_tp_methods, oid_methods },
    { Py_tp_getset, oid_getset },
    { 0, NULL },
};

PyType_Spec keel__py_objectid_spec = {
    .name = "keel.ObjectId",
    .basicsize = sizeof(kpy_objectid),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = oid_slots,
};
