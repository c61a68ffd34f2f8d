/* python/keel/_native/record.c - keel.Record: an immutable row with tuple and mapping access. */
#include "module.h"

#include <string.h>

/*
 * A Record stores its values inline (like a tuple) and points at a description shared by every
 * Record of the same result: a 2-tuple (names, index) where names is a tuple of column names and
 * index a dict mapping each name to its first position.
 */
typedef struct kpy_record {
    PyObject_VAR_HEAD PyObject *desc;
    PyObject *values[1];
} kpy_record;

#define REC_NAMES(r) PyTuple_GET_ITEM((r)->desc, 0)
#define REC_INDEX(r) PyTuple_GET_ITEM((r)->desc, 1)

PyObject *keel__py_record_desc(const keel_result *res) {
    size_t n = keel_result_ncols(res);
    PyObject *names = PyTuple_New((Py_ssize_t)n);
    PyObject *index = PyDict_New();
    if (names == NULL || index == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const char *s = keel_result_colname(res, i);
        PyObject *name = PyUnicode_DecodeUTF8(s != NULL ? s : "",
                                              s != NULL ? (Py_ssize_t)strlen(s) : 0, "replace");
        if (name == NULL)
            goto fail;
        PyUnicode_InternInPlace(&name);
        PyTuple_SET_ITEM(names, (Py_ssize_t)i, name);
        PyObject *pos = PyLong_FromSize_t(i);
        if (pos == NULL)
            goto fail;
        /* With duplicate column names, the first one wins, as in a SQL ORDER BY name. */
        PyObject *had = PyDict_SetDefault(index, name, pos);
        Py_DECREF(pos);
        if (had == NULL)
            goto fail;
    }
    PyObject *desc = PyTuple_Pack(2, names, index);
    Py_DECREF(names);
    Py_DECREF(index);
    return desc;
fail:
    Py_XDECREF(names);
    Py_XDECREF(index);
    return NULL;
}

PyObject *keel__py_record_from_row(kpy_state *st, PyObject *desc, const keel_result *res,
                                   size_t row) {
    size_t n = keel_result_ncols(res);
    const keel_value *vals = keel_result_row(res, row);
    kpy_record *r = PyObject_GC_NewVar(kpy_record, st->RecordType, (Py_ssize_t)n);
    if (r == NULL)
        return NULL;
    r->desc = Py_NewRef(desc);
    for (size_t i = 0; i < n; i++)
        r->values[i] = NULL;
    int containers = 0;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = keel__py_column_to_py(st, &vals[i], i);
        if (v == NULL) {
            Py_DECREF(r);
            return NULL;
        }
        r->values[i] = v;
        containers |= PyObject_IS_GC(v);
    }
    /* A record is immutable and its description is private, so a record that holds no object
     * the collector can see (numbers, strings, dates… but not JSON's dicts and lists) can never
     * be part of a reference cycle: it stays untracked, as CPython leaves such tuples, and
     * collections never visit it. */
    if (containers)
        PyObject_GC_Track(r);
    return (PyObject *)r;
}

/* One Record of a subclass of keel.Record (record_class=): allocated by the class, so that a
 * __dict__ it adds is set up, and tracked by the collector like any instance of a Python class. */
static PyObject *record_of_class(kpy_state *st, PyTypeObject *cls, PyObject *desc,
                                 const keel_result *res, size_t row) {
    size_t n = keel_result_ncols(res);
    const keel_value *vals = keel_result_row(res, row);
    kpy_record *r = (kpy_record *)cls->tp_alloc(cls, (Py_ssize_t)n);
    if (r == NULL)
        return NULL;
    r->desc = Py_NewRef(desc);
    for (size_t i = 0; i < n; i++) {
        PyObject *v = keel__py_column_to_py(st, &vals[i], i);
        if (v == NULL) {
            Py_DECREF(r);
            return NULL;
        }
        r->values[i] = v;
    }
    return (PyObject *)r;
}

/* The row called into (into=): into(**{column: value}), through vectorcall with the column names
 * as keyword names, without a dict or a Record in between. */
static PyObject *row_into(kpy_state *st, PyObject *into, PyObject *desc, const keel_result *res,
                          size_t row) {
    PyObject *names = PyTuple_GET_ITEM(desc, 0);
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (PyDict_GET_SIZE(PyTuple_GET_ITEM(desc, 1)) != n) {
        /* Two columns of one name: keyword arguments cannot carry both. */
        for (Py_ssize_t i = 0; i < n; i++)
            for (Py_ssize_t j = i + 1; j < n; j++)
                if (PyUnicode_Compare(PyTuple_GET_ITEM(names, i), PyTuple_GET_ITEM(names, j)) ==
                    0) {
                    const char *dup = PyUnicode_AsUTF8(PyTuple_GET_ITEM(names, i));
                    if (dup == NULL)
                        return NULL;
                    return keel__py_raise(st, KEEL_ERR_PROGRAMMING, NULL,
                                          "into= builds objects from column names, and column "
                                          "'%.200s' appears twice in the result: give the "
                                          "columns distinct names (AS …)",
                                          dup);
                }
    }
    const keel_value *vals = keel_result_row(res, row);
    PyObject *small[16];
    PyObject **args = small;
    if ((size_t)n > sizeof small / sizeof small[0] &&
        (args = PyMem_Malloc((size_t)n * sizeof *args)) == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    Py_ssize_t made = 0;
    for (; made < n; made++)
        if ((args[made] = keel__py_column_to_py(st, &vals[made], (size_t)made)) == NULL)
            goto done;
    out = PyObject_Vectorcall(into, args, 0, names);
done:
    for (Py_ssize_t i = 0; i < made; i++)
        Py_DECREF(args[i]);
    if (args != small)
        PyMem_Free(args);
    return out;
}

PyObject *keel__py_row_new(kpy_state *st, PyObject *desc, const keel_result *res, size_t row,
                           PyObject *rowtype) {
    if (rowtype == NULL || rowtype == (PyObject *)st->RecordType)
        return keel__py_record_from_row(st, desc, res, row);
    if (PyType_Check(rowtype) && PyType_IsSubtype((PyTypeObject *)rowtype, st->RecordType))
        return record_of_class(st, (PyTypeObject *)rowtype, desc, res, row);
    return row_into(st, rowtype, desc, res, row);
}

static int record_traverse(kpy_record *r, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->desc);
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++)
        Py_VISIT(r->values[i]);
    return 0;
}

static int record_clear(kpy_record *r) {
    Py_CLEAR(r->desc);
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++)
        Py_CLEAR(r->values[i]);
    return 0;
}

/*
 * The trashcan may defer this call (deeply nested containers): then the body is skipped and the
 * call is repeated later, so everything a real deallocation does, dropping the reference to the
 * heap type included, belongs inside it; code after Py_TRASHCAN_END runs on both calls.
 */
static void record_dealloc(kpy_record *r) {
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    Py_TRASHCAN_BEGIN(r, record_dealloc)
    record_clear(r);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
    Py_TRASHCAN_END
}

static Py_ssize_t record_length(kpy_record *r) { return Py_SIZE(r); }

static PyObject *record_item(kpy_record *r, Py_ssize_t i) {
    if (i < 0 || i >= Py_SIZE(r)) {
        PyErr_SetString(PyExc_IndexError, "record index out of range");
        return NULL;
    }
    return Py_NewRef(r->values[i]);
}

/* Position of column key, or -1 (no exception) when there is none. */
static Py_ssize_t record_find(kpy_record *r, PyObject *key) {
    PyObject *pos = PyDict_GetItemWithError(REC_INDEX(r), key);
    if (pos == NULL)
        return -1;
    return PyLong_AsSsize_t(pos);
}

static PyObject *record_values_tuple(kpy_record *r) {
    PyObject *t = PyTuple_New(Py_SIZE(r));
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(r->values[i]));
    return t;
}

static PyObject *record_subscript(kpy_record *r, PyObject *key) {
    if (PyUnicode_Check(key)) {
        Py_ssize_t i = record_find(r, key);
        if (i < 0) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        return Py_NewRef(r->values[i]);
    }
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (i < 0)
            i += Py_SIZE(r);
        return record_item(r, i);
    }
    if (PySlice_Check(key)) {
        PyObject *t = record_values_tuple(r);
        if (t == NULL)
            return NULL;
        PyObject *s = PyObject_GetItem(t, key);
        Py_DECREF(t);
        return s;
    }
    PyErr_Format(PyExc_TypeError, "record keys are str, int or slice, not %.100s",
                 Py_TYPE(key)->tp_name);
    return NULL;
}

/*
 * Attribute access to columns (row.name), for code and libraries that read objects by attribute
 * (pydantic's from_attributes=True). What the class defines comes first: keel.Record's methods
 * (get, keys, values, items) and dunders, and on a record_class everything it and its instances
 * define; a column is only looked up when no attribute has that name.
 */
/* True for the names of keel.Record's methods, which columns never hide. */
static int is_record_method(PyObject *name) {
    /* Most names are ruled out by their length and first letter, without a comparison. */
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (n < 3 || n > 6)
        return 0;
    Py_UCS4 first = PyUnicode_READ_CHAR(name, 0);
    if (first != 'g' && first != 'k' && first != 'v' && first != 'i')
        return 0;
    return (PyUnicode_CompareWithASCIIString(name, "get") == 0) ||
           (PyUnicode_CompareWithASCIIString(name, "keys") == 0) ||
           (PyUnicode_CompareWithASCIIString(name, "values") == 0) ||
           (PyUnicode_CompareWithASCIIString(name, "items") == 0);
}

static PyObject *record_getattro(PyObject *self, PyObject *name) {
    kpy_record *r = (kpy_record *)self;
    if (!PyUnicode_Check(name))
        return PyObject_GenericGetAttr(self, name);
    /* keel.Record itself (whose base is object; a record_class's is keel.Record) has no
     * attribute but its methods and dunders: a column is looked up first, without the cost of
     * an AttributeError. */
    int exact = Py_TYPE(self)->tp_base == &PyBaseObject_Type;
    if (exact) {
        Py_ssize_t i = record_find(r, name);
        if (i >= 0 && !is_record_method(name) &&
            !(PyUnicode_GET_LENGTH(name) > 1 && PyUnicode_READ_CHAR(name, 0) == '_' &&
              PyUnicode_READ_CHAR(name, 1) == '_'))
            return Py_NewRef(r->values[i]);
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v != NULL || exact || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    /* A record_class defines no attribute of that name: a column may have it. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_ssize_t i = record_find(r, name);
    if (i >= 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return Py_NewRef(r->values[i]);
    }
    if (PyErr_Occurred()) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return NULL;
    }
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* `name in record` tests the column names, as for a mapping. */
static int record_contains(kpy_record *r, PyObject *key) {
    if (!PyUnicode_Check(key))
        return 0;
    return PyDict_Contains(REC_INDEX(r), key);
}

static PyObject *record_get(kpy_record *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t i = PyUnicode_Check(args[0]) ? record_find(r, args[0]) : -1;
    if (i < 0) {
        if (PyErr_Occurred())
            return NULL;
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    return Py_NewRef(r->values[i]);
}

static PyObject *record_keys(kpy_record *r, PyObject *unused) {
    (void)unused;
    return PySequence_List(REC_NAMES(r));
}

static PyObject *record_values(kpy_record *r, PyObject *unused) {
    (void)unused;
    PyObject *l = PyList_New(Py_SIZE(r));
    if (l == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++)
        PyList_SET_ITEM(l, i, Py_NewRef(r->values[i]));
    return l;
}

static PyObject *record_items(kpy_record *r, PyObject *unused) {
    (void)unused;
    PyObject *names = REC_NAMES(r);
    PyObject *l = PyList_New(Py_SIZE(r));
    if (l == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++) {
        PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(names, i), r->values[i]);
        if (pair == NULL) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, pair);
    }
    return l;
}

/* Iteration yields the values, like a tuple (the sequence iterator stops at IndexError). */
static PyObject *record_iter(kpy_record *r) { return PySeqIter_New((PyObject *)r); }

/* Records compare like the tuples of their values, with each other and with tuples. */
static PyObject *record_richcompare(PyObject *a, PyObject *b, int op);

/* The values of o as a new tuple if o is a Record or a tuple; NULL without exception otherwise. */
static PyObject *comparable(PyObject *o) {
    if (Py_TYPE(o)->tp_richcompare == record_richcompare)
        return record_values_tuple((kpy_record *)o);
    if (PyTuple_Check(o))
        return Py_NewRef(o);
    return NULL;
}

static PyObject *record_richcompare(PyObject *a, PyObject *b, int op) {
    PyObject *ta = comparable(a);
    if (ta == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *tb = comparable(b);
    if (tb == NULL) {
        Py_DECREF(ta);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *res = PyObject_RichCompare(ta, tb, op);
    Py_DECREF(ta);
    Py_DECREF(tb);
    return res;
}

static Py_hash_t record_hash(kpy_record *r) {
    PyObject *t = record_values_tuple(r);
    if (t == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(t);
    Py_DECREF(t);
    return h;
}

/* <Record id=1 name='x'> */
static PyObject *record_repr(kpy_record *r) {
    int rc = Py_ReprEnter((PyObject *)r);
    if (rc != 0)
        return rc > 0 ? PyUnicode_FromString("<Record ...>") : NULL;
    PyObject *result = NULL, *sep = NULL, *body = NULL;
    PyObject *parts = PyList_New(Py_SIZE(r));
    if (parts == NULL)
        goto done;
    PyObject *names = REC_NAMES(r);
    for (Py_ssize_t i = 0; i < Py_SIZE(r); i++) {
        PyObject *part = PyUnicode_FromFormat(" %U=%R", PyTuple_GET_ITEM(names, i), r->values[i]);
        if (part == NULL)
            goto done;
        PyList_SET_ITEM(parts, i, part);
    }
    if ((sep = PyUnicode_New(0, 0)) == NULL || (body = PyUnicode_Join(sep, parts)) == NULL)
        goto done;
    result = PyUnicode_FromFormat("<Record%U>", body);
done:
    Py_XDECREF(parts);
    Py_XDECREF(sep);
    Py_XDECREF(body);
    Py_ReprLeave((PyObject *)r);
    return result;
}

static PyMethodDef record_methods[] = {
    { "get", (PyCFunction)(void (*)(void))record_get, METH_FASTCALL,
      "get(key, default=None): the value of column key, or default when there is none." },
    { "keys", (PyCFunction)record_keys, METH_NOARGS, "The column names, in order." },
    { "values", (PyCFunction)record_values, METH_NOARGS, "The values, in column order." },
    { "items", (PyCFunction)record_items, METH_NOARGS, "(name, value) pairs, in column order." },
    { NULL, NULL, 0, NULL },
};

static PyType_Slot record_slots[] = {
    { Py_tp_doc, "A row of a result: r[0], r[-1], r['col'], r.col, r.get('col'), dict(r), "
                 "iteration over values like a tuple. A collections.abc.Mapping (by registration), "
                 "so pydantic's Model.model_validate(r) reads it; subclass it for record_class=." },
    { Py_tp_dealloc, record_dealloc },
    { Py_tp_traverse, record_traverse },
    { Py_tp_clear, record_clear },
    { Py_tp_repr, record_repr },
    { Py_tp_getattro, record_getattro },
    { Py_tp_hash, record_hash },
    { Py_tp_richcompare, record_richcompare },
    { Py_tp_iter, record_iter },
    { Py_tp_methods, record_methods },
    { Py_sq_length, record_length },
    { Py_sq_item, record_item },
    { Py_sq_contains, record_contains },
    { Py_mp_length, record_length },
    { Py_mp_subscript, record_subscript },
    { 0, NULL },
};

PyType_Spec keel__py_record_spec = {
    .name = "keel.Record",
    .basicsize = (int)offsetof(kpy_record, values),
    .itemsize = (int)sizeof(PyObject *),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_BASETYPE,
    .slots = record_slots,
};
