/* python/keel/_native/convert.c - conversions between Python objects and keel_value, both ways. */
#include "module.h"

#include <datetime.h>
#include <stdlib.h>
#include <string.h>

/*
 * datetime.h declares PyDateTimeAPI as a static of each translation unit, so every use of the
 * datetime C API stays in this file and keel__py_convert_init imports it here.
 */
int keel__py_convert_init(void) {
    PyDateTime_IMPORT;
    return PyDateTimeAPI != NULL ? 0 : -1;
}

/*
 * What the conversion of the current result uses, per thread (see keel__py_json_loads_swap):
 * the Database's json_deserializer and its columns' decoders (borrowed / held by the caller).
 */
static _Thread_local PyObject *cur_json_loads;
static _Thread_local PyObject **cur_decoders;
static _Thread_local size_t cur_ndecoders;
/* The result being converted between keel__py_decoders_begin and _end, and the column at hand,
 * for messages of values that cannot be decoded (NULL outside). */
static _Thread_local const keel_result *cur_res;
static _Thread_local size_t cur_col;

PyObject *keel__py_json_loads_swap(PyObject *loads) {
    PyObject *prev = cur_json_loads;
    cur_json_loads = loads;
    return prev;
}

/* ---- JSON encoding of what json does not know ---- */

/*
 * The attribute name of obj's type into *out (a new reference), or NULL when it has none. 0, or
 * -1 with an exception (PyObject_GetOptionalAttrString is Python 3.13's).
 */
static int type_attr(PyObject *obj, const char *name, PyObject **out) {
    *out = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), name);
    if (*out != NULL)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return 0;
}

/* The default of keel's JSON encoder: what JSON cannot hold natively, as pydantic's JSON mode
 * writes it. */
static PyObject *json_default(PyObject *module, PyObject *obj) {
    kpy_state *st = PyModule_GetState(module);
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->Decimal) ||
        PyObject_TypeCheck(obj, (PyTypeObject *)st->UUID))
        return PyObject_Str(obj);
    if (PyDateTime_Check(obj) || PyDate_Check(obj) || PyTime_Check(obj))
        return PyObject_CallMethod(obj, "isoformat", NULL);
    PyObject *dump = NULL;
    if (type_attr(obj, "model_dump", &dump) < 0)
        return NULL;
    if (dump != NULL && PyCallable_Check(dump)) {
        Py_DECREF(dump);
        PyObject *meth = PyObject_GetAttrString(obj, "model_dump");
        if (meth == NULL)
            return NULL;
        PyObject *kw = Py_BuildValue("{s:s}", "mode", "json");
        PyObject *out = kw != NULL ? PyObject_Call(meth, st->empty_tuple, kw) : NULL;
        Py_XDECREF(kw);
        Py_DECREF(meth);
        return out;
    }
    Py_XDECREF(dump);
    PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable",
                 Py_TYPE(obj)->tp_name);
    return NULL;
}

static PyMethodDef json_default_def = { "_json_default", json_default, METH_O,
                                        "keel's JSON encoder's default." };

int keel__py_json_encoder_init(PyObject *module, kpy_state *st) {
    PyObject *json = PyImport_ImportModule("json");
    PyObject *cls = json != NULL ? PyObject_GetAttrString(json, "JSONEncoder") : NULL;
    Py_XDECREF(json);
    PyObject *fn = cls != NULL ? PyCFunction_NewEx(&json_default_def, module, NULL) : NULL;
    /* allow_nan=False: NaN and the infinities are no JSON (json.dumps would write NaN). */
    PyObject *kw =
        fn != NULL ? Py_BuildValue("{s:O,s:O}", "default", fn, "allow_nan", Py_False) : NULL;
    PyObject *enc = kw != NULL ? PyObject_Call(cls, st->empty_tuple, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(fn);
    Py_XDECREF(cls);
    if (enc == NULL)
        return -1;
    st->json_dumps = PyObject_GetAttrString(enc, "encode");
    Py_DECREF(enc);
    return st->json_dumps != NULL ? 0 : -1;
}

/* ---- calendar arithmetic (proleptic Gregorian, days counted from 1970-01-01) ---- */

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY INT64_C(86400000000)

/*
 * Works in 400-year eras of 146097 days, with years starting on March 1st so the leap day is the
 * last day of a year; that makes the day-of-year formula independent of leap years.
 */
static int64_t days_from_civil(int64_t y, int m, int d) {
    if (m <= 2)
        y -= 1;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468; /* 719468: days from 0000-03-01 to 1970-01-01 */
}

static void civil_from_days(int64_t z, int64_t *year, int *month, int *day) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

/* Splits micros into whole days (floored) and the microseconds within that day. */
static void split_micros(int64_t micros, int64_t *days, int64_t *rem) {
    int64_t d = micros / US_PER_DAY;
    int64_t r = micros % US_PER_DAY;
    if (r < 0) {
        r += US_PER_DAY;
        d -= 1;
    }
    *days = d;
    *rem = r;
}

/* ---- result values → Python ---- */

static PyObject *out_of_range(kpy_state *st, const keel_value *v) {
    return keel__py_raise(st, KEEL_ERR_DATA, NULL, "%s value is out of the range of Python's %s",
                          keel_type_name(v->type),
                          v->type == KEEL_TYPE_DATE   ? "date"
                          : v->type == KEEL_TYPE_TIME ? "time"
                                                      : "datetime");
}

static PyObject *date_to_py(kpy_state *st, const keel_value *v) {
    int64_t y;
    int m, d;
    civil_from_days(v->u.date, &y, &m, &d);
    if (y < 1 || y > 9999)
        return out_of_range(st, v);
    return PyDate_FromDate((int)y, m, d);
}

static PyObject *time_to_py(kpy_state *st, const keel_value *v) {
    int64_t us = v->u.micros;
    if (us < 0 || us >= US_PER_DAY)
        return out_of_range(st, v);
    int64_t s = us / US_PER_SEC;
    return PyTime_FromTime((int)(s / 3600), (int)(s / 60 % 60), (int)(s % 60),
                           (int)(us % US_PER_SEC));
}

static PyObject *timestamp_to_py(kpy_state *st, const keel_value *v, PyObject *tz) {
    int64_t days, rem, y;
    int m, d;
    split_micros(v->u.micros, &days, &rem);
    civil_from_days(days, &y, &m, &d);
    if (y < 1 || y > 9999)
        return out_of_range(st, v);
    int64_t s = rem / US_PER_SEC;
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        (int)y, m, d, (int)(s / 3600), (int)(s / 60 % 60), (int)(s % 60), (int)(rem % US_PER_SEC),
        tz, PyDateTimeAPI->DateTimeType);
}

static PyObject *int_from_uuid_bytes(const unsigned char b[16]) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(b, 16, Py_ASNATIVEBYTES_BIG_ENDIAN);
#else
    return _PyLong_FromByteArray(b, 16, 0, 0);
#endif
}

/*
 * uuid.UUID(int=…) runs a Python __init__ that validates its arguments; the value is known to be
 * 128 bits here, so the instance is made the way that __init__ ends: object.__new__ and the two
 * slots set with object.__setattr__ (UUID.__setattr__ forbids assignment).
 */
static PyObject *uuid_to_py(kpy_state *st, const keel_value *v) {
    PyObject *i = int_from_uuid_bytes(v->u.uuid);
    if (i == NULL)
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)st->UUID;
    PyObject *u = tp->tp_new(tp, st->empty_tuple, NULL);
    if (u != NULL && st->uuid_int_offset > 0 && st->uuid_safe_offset > 0) {
        /* What object.__setattr__ does for a slot, without looking the name up each time. */
        PyObject **int_slot = (PyObject **)((char *)u + st->uuid_int_offset);
        PyObject **safe_slot = (PyObject **)((char *)u + st->uuid_safe_offset);
        Py_XSETREF(*int_slot, i);
        Py_XSETREF(*safe_slot, Py_NewRef(st->uuid_unknown));
        return u;
    }
    if (u == NULL || PyObject_GenericSetAttr(u, st->s_int, i) < 0 ||
        PyObject_GenericSetAttr(u, st->s_is_safe, st->uuid_unknown) < 0) {
        Py_XDECREF(u);
        Py_DECREF(i);
        return NULL;
    }
    Py_DECREF(i);
    return u;
}

/* Turns a decoding failure of a server value into DataError (memory errors stay what they are). */
static PyObject *decode_failed(kpy_state *st, const keel_value *v) {
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
    const char *s = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        s = "invalid value";
    }
    const char *col = cur_res != NULL ? keel_result_colname(cur_res, cur_col) : NULL;
    if (col != NULL)
        keel__py_raise(st, KEEL_ERR_DATA, NULL, "column \"%.100s\": cannot decode %s value: %s",
                       col, keel_type_name(v->type), s);
    else
        keel__py_raise(st, KEEL_ERR_DATA, NULL, "cannot decode %s value: %s",
                       keel_type_name(v->type), s);
    Py_XDECREF(text);
    /* Keep the original error as the cause, so nothing about it is lost. */
    if (value != NULL) {
        PyObject *t2, *v2, *tb2;
        PyErr_Fetch(&t2, &v2, &tb2);
        PyErr_NormalizeException(&t2, &v2, &tb2);
        PyException_SetCause(v2, Py_NewRef(value));
        PyErr_Restore(t2, v2, tb2);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return NULL;
}

static int json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/*
 * What json.c does not decode goes to the C scanner of json's default decoder: json.loads(s)
 * runs three Python frames and two whitespace regexes around it. A server sends well-formed
 * JSON, so the scanner is called directly, from the first non-space character; whenever it
 * does not consume the whole text but trailing spaces, or fails, json.loads runs instead, so
 * results and errors are exactly those of json.loads.
 */
static PyObject *json_to_py(kpy_state *st, const keel_value *v) {
    const char *p = v->u.str.ptr;
    size_t n = v->u.str.len, lead = 0, trail = 0;
    if (cur_json_loads != NULL) { /* json_deserializer= */
        PyObject *text = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, NULL);
        PyObject *o = text != NULL ? PyObject_CallOneArg(cur_json_loads, text) : NULL;
        Py_XDECREF(text);
        return o != NULL ? o : decode_failed(st, v);
    }
    /* Most documents never need more than the direct decoder of json.c. */
    PyObject *fast = keel__py_json_decode(st, p, n);
    if (fast != NULL || PyErr_Occurred())
        return fast;
    PyObject *s = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, NULL);
    if (s == NULL)
        return decode_failed(st, v);
    /* The spaces are ASCII, so their byte counts are also character counts. */
    while (lead < n && json_space(p[lead]))
        lead++;
    while (trail < n - lead && json_space(p[n - 1 - trail]))
        trail++;
    if (lead < n) {
        PyObject *idx = PyLong_FromSize_t(lead);
        PyObject *r = NULL;
        if (idx != NULL) {
            PyObject *args[2] = { s, idx };
            r = PyObject_Vectorcall(st->json_scan, args, 2, NULL);
            Py_DECREF(idx);
        }
        if (r != NULL && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
            Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1));
            if (end >= 0 && end + (Py_ssize_t)trail == PyUnicode_GET_LENGTH(s)) {
                PyObject *o = Py_NewRef(PyTuple_GET_ITEM(r, 0));
                Py_DECREF(r);
                Py_DECREF(s);
                return o;
            }
        }
        Py_XDECREF(r);
        if (PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
                Py_DECREF(s);
                return NULL;
            }
            PyErr_Clear();
        }
    }
    PyObject *o = PyObject_CallOneArg(st->json_loads, s);
    Py_DECREF(s);
    return o != NULL ? o : decode_failed(st, v);
}

PyObject *keel__py_value_to_py(kpy_state *st, const keel_value *v) {
    PyObject *o, *s;
    switch (v->type) {
    case KEEL_TYPE_NULL:
        Py_RETURN_NONE;
    case KEEL_TYPE_BOOL:
        return PyBool_FromLong(v->u.boolean);
    case KEEL_TYPE_INT:
        return PyLong_FromLongLong(v->u.i64);
    case KEEL_TYPE_FLOAT:
        return PyFloat_FromDouble(v->u.f64);
    case KEEL_TYPE_TEXT:
        o = PyUnicode_DecodeUTF8(v->u.str.ptr, (Py_ssize_t)v->u.str.len, NULL);
        return o != NULL ? o : decode_failed(st, v);
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_DOCUMENT: /* a BSON document is handed over as its raw bytes */
        return PyBytes_FromStringAndSize(v->u.str.ptr, (Py_ssize_t)v->u.str.len);
    case KEEL_TYPE_NUMERIC:
        s = PyUnicode_DecodeUTF8(v->u.str.ptr, (Py_ssize_t)v->u.str.len, NULL);
        if (s == NULL)
            return decode_failed(st, v);
        o = PyObject_CallOneArg(st->Decimal, s);
        Py_DECREF(s);
        return o != NULL ? o : decode_failed(st, v);
    case KEEL_TYPE_JSON:
        return json_to_py(st, v);
    case KEEL_TYPE_DATE:
        return date_to_py(st, v);
    case KEEL_TYPE_TIME:
        return time_to_py(st, v);
    case KEEL_TYPE_TIMESTAMP:
        return timestamp_to_py(st, v, Py_None);
    case KEEL_TYPE_TIMESTAMPTZ:
        return timestamp_to_py(st, v, PyDateTime_TimeZone_UTC);
    case KEEL_TYPE_UUID:
        return uuid_to_py(st, v);
    case KEEL_TYPE_INTERVAL: {
        /* As asyncpg: a month is 30 days (timedelta has no months). */
        int64_t days = (int64_t)v->u.interval.months * 30 + v->u.interval.days;
        int64_t us = v->u.interval.micros, d = us / US_PER_DAY, r = us % US_PER_DAY;
        days += d;
        if (days > 999999999 || days < -999999999)
            return keel__py_raise(st, KEEL_ERR_DATA, NULL,
                                  "interval value is out of the range of Python's timedelta");
        return PyDelta_FromDSU((int)days, (int)(r / US_PER_SEC), (int)(r % US_PER_SEC));
    }
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
        s = PyUnicode_DecodeUTF8(v->u.str.ptr, (Py_ssize_t)v->u.str.len, NULL);
        if (s == NULL)
            return decode_failed(st, v);
        o = PyObject_CallOneArg(v->type == KEEL_TYPE_CIDR                         ? st->ip_network
                                : memchr(v->u.str.ptr, '/', v->u.str.len) != NULL ? st->ip_interface
                                                                                  : st->ip_address,
                                s);
        Py_DECREF(s);
        return o != NULL ? o : decode_failed(st, v);
    case KEEL_TYPE_RANGE: {
        int empty = (v->u.range.flags & KEEL_RANGE_EMPTY) || v->u.range.bounds == NULL;
        PyObject *lo = empty ? Py_NewRef(Py_None) : keel__py_value_to_py(st, &v->u.range.bounds[0]);
        PyObject *hi = lo == NULL ? NULL
                       : empty    ? Py_NewRef(Py_None)
                                  : keel__py_value_to_py(st, &v->u.range.bounds[1]);
        PyObject *kw =
            hi != NULL
                ? Py_BuildValue("{s:O,s:O,s:O}", "lower_inc",
                                (v->u.range.flags & KEEL_RANGE_LOWER_INC) ? Py_True : Py_False,
                                "upper_inc",
                                (v->u.range.flags & KEEL_RANGE_UPPER_INC) ? Py_True : Py_False,
                                "empty", empty ? Py_True : Py_False)
                : NULL;
        PyObject *args = kw != NULL ? PyTuple_Pack(2, lo, hi) : NULL;
        PyObject *range = args != NULL ? keel__py_range_type(st) : NULL;
        o = range != NULL ? PyObject_Call(range, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kw);
        Py_XDECREF(hi);
        Py_XDECREF(lo);
        return o;
    }
    case KEEL_TYPE_ARRAY:
        o = PyList_New((Py_ssize_t)v->u.array.n);
        for (size_t i = 0; o != NULL && i < v->u.array.n; i++) {
            PyObject *e = keel__py_value_to_py(st, &v->u.array.items[i]);
            if (e == NULL)
                Py_CLEAR(o);
            else
                PyList_SET_ITEM(o, (Py_ssize_t)i, e);
        }
        return o;
    }
    return keel__py_raise(st, KEEL_ERR_UNSUPPORTED, NULL, "result value of unknown type %d",
                          (int)v->type);
}

static PyObject *decoded(kpy_state *st, PyObject *dec, const keel_value *v);

/* An array whose elements keel kept the text of, each through dec (None for NULL, nested
 * lists for dimensions). */
static PyObject *decoded_array(kpy_state *st, PyObject *dec, const keel_value *v) {
    PyObject *o = PyList_New((Py_ssize_t)v->u.array.n);
    for (size_t i = 0; o != NULL && i < v->u.array.n; i++) {
        PyObject *e = decoded(st, dec, &v->u.array.items[i]);
        if (e == NULL)
            Py_CLEAR(o);
        else
            PyList_SET_ITEM(o, (Py_ssize_t)i, e);
    }
    return o;
}

/* v through dec when keel kept its text (or its elements'), else as keel converts it. */
static PyObject *decoded(kpy_state *st, PyObject *dec, const keel_value *v) {
    if (v == NULL || v->type == KEEL_TYPE_NULL)
        return keel__py_value_to_py(st, v);
    switch (v->type) { /* the types keel keeps the server's text of */
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_JSON:
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR: {
        PyObject *text = PyUnicode_DecodeUTF8(v->u.str.ptr, (Py_ssize_t)v->u.str.len, NULL);
        PyObject *o = text != NULL ? PyObject_CallOneArg(dec, text) : NULL;
        Py_XDECREF(text);
        return o != NULL ? o : decode_failed(st, v);
    }
    case KEEL_TYPE_ARRAY: /* a codec's type's array: the decoder is its elements' */
        return decoded_array(st, dec, v);
    default:
        return keel__py_value_to_py(st, v);
    }
}

PyObject *keel__py_column_to_py(kpy_state *st, const keel_value *v, size_t col) {
    PyObject *dec = cur_decoders != NULL && col < cur_ndecoders ? cur_decoders[col] : NULL;
    cur_col = col;
    if (dec == NULL)
        return keel__py_value_to_py(st, v);
    return decoded(st, dec, v);
}

int keel__py_decoders_begin(kpy_state *st, PyObject *decoders, const keel_result *res,
                            kpy_decoders *d) {
    d->prev = cur_decoders;
    d->nprev = cur_ndecoders;
    d->prev_res = cur_res;
    cur_res = res;
    d->mine = NULL;
    d->nmine = 0;
    size_t n = keel_result_ncols(res);
    if (decoders == NULL || PyDict_GET_SIZE(decoders) == 0 || n == 0)
        return 0;
    PyObject **mine = PyMem_Calloc(n, sizeof *mine);
    if (mine == NULL) {
        cur_res = d->prev_res;
        PyErr_NoMemory();
        return -1;
    }
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t oid = keel_result_coltype_id(res, i);
        if (oid == 0)
            continue;
        PyObject *key = PyLong_FromUnsignedLong(oid);
        if (key == NULL) {
            d->mine = mine;
            d->nmine = i;
            keel__py_decoders_end(st, d);
            return -1;
        }
        /* Held: a decoder may change the dict while the result is converted. */
        mine[i] = Py_XNewRef(PyDict_GetItemWithError(decoders, key));
        Py_DECREF(key);
        if (mine[i] == NULL && PyErr_Occurred()) {
            d->mine = mine;
            d->nmine = i;
            keel__py_decoders_end(st, d);
            return -1;
        }
        any |= mine[i] != NULL;
    }
    if (!any) { /* no column has a decoder: only cur_res stays in force until _end */
        PyMem_Free(mine);
        return 0;
    }
    d->mine = mine;
    d->nmine = n;
    cur_decoders = mine;
    cur_ndecoders = n;
    return 0;
}

void keel__py_decoders_end(kpy_state *st, kpy_decoders *d) {
    (void)st;
    cur_decoders = d->prev;
    cur_ndecoders = d->nprev;
    cur_res = d->prev_res;
    for (size_t i = 0; d->mine != NULL && i < d->nmine; i++)
        Py_XDECREF(d->mine[i]);
    PyMem_Free(d->mine);
    d->mine = NULL;
}

/* ---- parameters: Python → keel_value ---- */

void keel__py_params_init(kpy_params *p) {
    p->values = p->stack_values;
    p->nvalues = 0;
    p->nrows = 0;
    p->ncols = 0;
    p->holds = p->stack_holds;
    p->nholds = 0;
    p->capholds = KPY_STACK_HOLDS;
    p->what = NULL;
    p->names = NULL;
    p->arrays = 0;
    p->ranges = 0;
    p->depth = 0;
    p->json_dumps = NULL;
}

void keel__py_params_clear(kpy_params *p) {
    for (size_t i = 0; i < p->nholds; i++)
        Py_XDECREF(p->holds[i]);
    if (p->holds != p->stack_holds)
        PyMem_Free(p->holds);
    if (p->values != p->stack_values)
        PyMem_Free(p->values);
    keel__py_params_init(p);
}

kpy_params *keel__py_params_keep(kpy_params *p) {
    kpy_params *kept = PyMem_Malloc(sizeof *kept);
    if (kept == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *kept = *p;
    /* Arrays still in the struct moved with it; only the pointers to them change. */
    if (p->values == p->stack_values)
        kept->values = kept->stack_values;
    if (p->holds == p->stack_holds)
        kept->holds = kept->stack_holds;
    kept->what = NULL;
    kept->names = NULL;
    keel__py_params_init(p);
    return kept;
}

void keel__py_params_free(kpy_params *p) {
    if (p == NULL)
        return;
    keel__py_params_clear(p);
    PyMem_Free(p);
}

int keel__py_params_traverse(const kpy_params *p, visitproc visit, void *arg) {
    for (size_t i = 0; p != NULL && i < p->nholds; i++)
        Py_VISIT(p->holds[i]);
    return 0;
}

/* Keeps obj (a new reference, stolen; NULL with an exception is passed through) alive as long
 * as p; returns it, borrowed, or NULL with an exception. */
static PyObject *hold(kpy_params *p, PyObject *obj) {
    if (obj == NULL)
        return NULL;
    if (p->nholds == p->capholds) {
        size_t cap = p->capholds * 2;
        PyObject **h = PyMem_Malloc(cap * sizeof *h);
        if (h == NULL) {
            Py_DECREF(obj);
            PyErr_NoMemory();
            return NULL;
        }
        memcpy(h, p->holds, p->nholds * sizeof *h);
        if (p->holds != p->stack_holds)
            PyMem_Free(p->holds);
        p->holds = h;
        p->capholds = cap;
    }
    p->holds[p->nholds++] = obj;
    return obj;
}

/* Room for n values. */
static int reserve_values(kpy_params *p, size_t n) {
    if (n > KPY_STACK_VALUES) {
        if (n > PY_SSIZE_T_MAX / sizeof(keel_value)) {
            PyErr_NoMemory();
            return -1;
        }
        p->values = PyMem_Malloc(n * sizeof(keel_value));
        if (p->values == NULL) {
            p->values = p->stack_values;
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

/* Raises DataError about parameter pos (1-based, $pos in SQL) of row (or not, when row < 0). */
static int param_error(kpy_state *st, const kpy_params *p, Py_ssize_t row, size_t pos,
                       PyObject *obj, const char *why) {
    char where[160];
    PyObject *name = p->names != NULL && pos - 1 < (size_t)PyTuple_GET_SIZE(p->names)
                         ? PyTuple_GET_ITEM(p->names, (Py_ssize_t)pos - 1)
                         : NULL;
    const char *text = name != NULL ? PyUnicode_AsUTF8(name) : NULL;
    if (text != NULL)
        snprintf(where, sizeof where, "row %zd, column \"%.100s\"", row, text);
    else if (row >= 0 && p->what != NULL)
        snprintf(where, sizeof where, "row %zd, value %zu", row, pos);
    else if (row >= 0)
        snprintf(where, sizeof where, "row %zd, parameter $%zu", row, pos);
    else
        snprintf(where, sizeof where, "parameter $%zu", pos);
    /* In an array: which element ("element [1]", "[0][2]" in a multi-dimensional one). */
    char elem[16 + KEEL_ARRAY_MAX_DIMS * 24] = "";
    if (p->depth > 0) {
        size_t n = (size_t)snprintf(elem, sizeof elem, "element ");
        for (int d = 0; d < p->depth && d < KEEL_ARRAY_MAX_DIMS && n < sizeof elem; d++)
            n += (size_t)snprintf(elem + n, sizeof elem - n, "[%zd]", p->index[d]);
        if (n < sizeof elem)
            snprintf(elem + n, sizeof elem - n, ": ");
    }
    keel__py_raise(st, KEEL_ERR_DATA, NULL, "%s: %s%s (type %s)", where, elem, why,
                   Py_TYPE(obj)->tp_name);
    return -1;
}

/* As param_error, keeping the Python exception that caused it as __cause__. */
static int param_error_from(kpy_state *st, const kpy_params *p, Py_ssize_t row, size_t pos,
                            PyObject *obj, const char *why) {
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
    const char *s = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    if (s == NULL)
        PyErr_Clear();
    char msg[320];
    snprintf(msg, sizeof msg, "%s: %s", why, s != NULL ? s : "conversion failed");
    param_error(st, p, row, pos, obj, msg);
    Py_XDECREF(text);
    if (value != NULL) {
        PyObject *t2, *v2, *tb2;
        PyErr_Fetch(&t2, &v2, &tb2);
        PyErr_NormalizeException(&t2, &v2, &tb2);
        PyException_SetCause(v2, Py_NewRef(value));
        PyErr_Restore(t2, v2, tb2);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return -1;
}

/* UTF-8 of a str; the pointer lives as long as the str (CPython caches it in the object). */
static int str_value(kpy_state *st, const kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                     keel_value *out, keel_type type) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
    if (s == NULL)
        return param_error_from(st, p, row, pos, obj, "cannot encode as UTF-8");
    out->type = type;
    out->u.str.ptr = s;
    out->u.str.len = (size_t)n;
    return 0;
}

static int64_t time_micros(PyObject *obj) {
    return ((int64_t)PyDateTime_TIME_GET_HOUR(obj) * 3600 +
            (int64_t)PyDateTime_TIME_GET_MINUTE(obj) * 60 + PyDateTime_TIME_GET_SECOND(obj)) *
               US_PER_SEC +
           PyDateTime_TIME_GET_MICROSECOND(obj);
}

static int datetime_value(kpy_state *st, const kpy_params *p, Py_ssize_t row, size_t pos,
                          PyObject *obj, keel_value *out) {
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(obj), PyDateTime_GET_MONTH(obj),
                                   PyDateTime_GET_DAY(obj));
    int64_t micros =
        days * US_PER_DAY +
        ((int64_t)PyDateTime_DATE_GET_HOUR(obj) * 3600 +
         (int64_t)PyDateTime_DATE_GET_MINUTE(obj) * 60 + PyDateTime_DATE_GET_SECOND(obj)) *
            US_PER_SEC +
        PyDateTime_DATE_GET_MICROSECOND(obj);
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(obj);
    if (tz == Py_None) {
        out->type = KEEL_TYPE_TIMESTAMP;
        out->u.micros = micros;
        return 0;
    }
    if (tz != PyDateTime_TimeZone_UTC) {
        PyObject *off = PyObject_CallMethodNoArgs(obj, st->s_utcoffset);
        if (off == NULL)
            return param_error_from(st, p, row, pos, obj, "utcoffset() failed");
        if (PyDelta_Check(off)) {
            micros -= ((int64_t)PyDateTime_DELTA_GET_DAYS(off) * 86400 +
                       PyDateTime_DELTA_GET_SECONDS(off)) *
                          US_PER_SEC +
                      PyDateTime_DELTA_GET_MICROSECONDS(off);
        } else if (off != Py_None) {
            Py_DECREF(off);
            return param_error(st, p, row, pos, obj, "utcoffset() did not return a timedelta");
        }
        Py_DECREF(off);
    }
    out->type = KEEL_TYPE_TIMESTAMPTZ;
    out->u.micros = micros;
    return 0;
}

static int uuid_value(kpy_state *st, const kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                      keel_value *out) {
    PyObject *i = PyObject_GetAttr(obj, st->s_int);
    if (i == NULL)
        return param_error_from(st, p, row, pos, obj, "UUID has no int");
    if (!PyLong_Check(i)) {
        Py_DECREF(i);
        return param_error(st, p, row, pos, obj, "UUID.int is not an int");
    }
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t r =
        PyLong_AsNativeBytes(i, out->u.uuid, 16,
                             Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
                                 Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    int rc = r < 0 || r > 16 ? -1 : 0;
#else
    int rc = _PyLong_AsByteArray((PyLongObject *)i, out->u.uuid, 16, 0, 0);
#endif
    Py_DECREF(i);
    if (rc < 0) {
        if (PyErr_Occurred())
            return param_error_from(st, p, row, pos, obj, "UUID out of range");
        return param_error(st, p, row, pos, obj, "UUID out of range");
    }
    out->type = KEEL_TYPE_UUID;
    return 0;
}

static int to_value(kpy_state *st, kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                    keel_value *out);

/*
 * data (obj's dict, list or model dump) as JSON text, made by the Database's json_serializer
 * (str or bytes) or keel's encoder (str).
 */
static int json_value(kpy_state *st, kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                      PyObject *data, keel_value *out) {
    PyObject *fn = p->json_dumps != NULL ? p->json_dumps : st->json_dumps;
    PyObject *text = hold(p, PyObject_CallOneArg(fn, data));
    if (text == NULL)
        return param_error_from(st, p, row, pos, obj, "cannot serialise as JSON");
    if (PyBytes_Check(text)) {
        out->type = KEEL_TYPE_JSON;
        out->u.str.ptr = PyBytes_AS_STRING(text);
        out->u.str.len = (size_t)PyBytes_GET_SIZE(text);
        return 0;
    }
    if (!PyUnicode_Check(text)) {
        char why[160];
        snprintf(why, sizeof why, "json_serializer returned %.60s, not str or bytes",
                 Py_TYPE(text)->tp_name);
        return param_error(st, p, row, pos, obj, why);
    }
    return str_value(st, p, row, pos, text, out, KEEL_TYPE_JSON);
}

/*
 * A list or tuple as an array (PostgreSQL): its elements converted like parameters, a list
 * inside a list being a dimension. The elements live in a bytes object that p holds.
 */
static int array_value(kpy_state *st, kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                       keel_value *out) {
    if (p->depth >= KEEL_ARRAY_MAX_DIMS)
        return param_error(st, p, row, pos, obj, "arrays have at most 6 dimensions");
    /* A tuple cannot change while the conversion of an element runs Python code. */
    PyObject *items = PyTuple_Check(obj) ? obj : hold(p, PyList_AsTuple(obj));
    if (items == NULL)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    keel_value *vals = NULL;
    if (n > 0) {
        if ((size_t)n > PY_SSIZE_T_MAX / sizeof(keel_value)) {
            PyErr_NoMemory();
            return -1;
        }
        PyObject *mem =
            hold(p, PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((size_t)n * sizeof *vals)));
        if (mem == NULL)
            return -1;
        vals = (keel_value *)(void *)PyBytes_AS_STRING(mem);
    }
    p->depth++;
    for (Py_ssize_t i = 0; i < n; i++) {
        p->index[p->depth - 1] = i;
        memset(&vals[i], 0, sizeof vals[i]);
        if (to_value(st, p, row, pos, PyTuple_GET_ITEM(items, i), &vals[i]) < 0) {
            p->depth--;
            return -1;
        }
    }
    p->depth--;
    *out = keel_array(vals, (size_t)n);
    return 0;
}

/*
 * A keel.Range as a RANGE value for a bulk load: its bounds converted like parameters (None,
 * an unbounded side, is a NULL bound), in a bytes object that p holds.
 */
static int range_value(kpy_state *st, kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                       keel_value *out) {
    static const char *const attrs[] = { "isempty", "lower_inc", "upper_inc" };
    int flag[3];
    for (int i = 0; i < 3; i++) {
        PyObject *a = hold(p, PyObject_GetAttrString(obj, attrs[i]));
        flag[i] = a == NULL ? -1 : PyObject_IsTrue(a);
        if (flag[i] < 0)
            return param_error_from(st, p, row, pos, obj, "unreadable Range");
    }
    out->type = KEEL_TYPE_RANGE;
    out->u.range.bounds = NULL;
    out->u.range.flags = KEEL_RANGE_EMPTY;
    if (flag[0])
        return 0;
    PyObject *mem = hold(p, PyBytes_FromStringAndSize(NULL, 2 * sizeof(keel_value)));
    if (mem == NULL)
        return -1;
    keel_value *bounds = (keel_value *)(void *)PyBytes_AS_STRING(mem);
    static const char *const sides[] = { "lower", "upper" };
    for (int i = 0; i < 2; i++) {
        memset(&bounds[i], 0, sizeof bounds[i]);
        PyObject *b = hold(p, PyObject_GetAttrString(obj, sides[i]));
        if (b == NULL)
            return param_error_from(st, p, row, pos, obj, "unreadable Range");
        if (to_value(st, p, row, pos, b, &bounds[i]) < 0)
            return -1;
    }
    out->u.range.bounds = bounds;
    out->u.range.flags =
        (flag[1] ? KEEL_RANGE_LOWER_INC : 0) | (flag[2] ? KEEL_RANGE_UPPER_INC : 0);
    return 0;
}

/* Converts one parameter. row < 0 for a single statement. */
static int to_value(kpy_state *st, kpy_params *p, Py_ssize_t row, size_t pos, PyObject *obj,
                    keel_value *out) {
    /* Most parameters are exactly one of these; test them first, bool before int. */
    if (obj == Py_None) {
        out->type = KEEL_TYPE_NULL;
        return 0;
    }
    if (PyLong_CheckExact(obj)) {
    integer:;
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow != 0)
            return param_error(st, p, row, pos, obj, "integer out of the int64 range");
        if (v == -1 && PyErr_Occurred())
            return param_error_from(st, p, row, pos, obj, "not an integer");
        out->type = KEEL_TYPE_INT;
        out->u.i64 = v;
        return 0;
    }
    if (PyUnicode_CheckExact(obj))
        return str_value(st, p, row, pos, obj, out, KEEL_TYPE_TEXT);
    if (obj == Py_True || obj == Py_False) {
        out->type = KEEL_TYPE_BOOL;
        out->u.boolean = obj == Py_True;
        return 0;
    }
    if (PyFloat_Check(obj)) {
        out->type = KEEL_TYPE_FLOAT;
        out->u.f64 = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    if (PyBytes_Check(obj)) {
        out->type = KEEL_TYPE_BYTES;
        out->u.str.ptr = PyBytes_AS_STRING(obj);
        out->u.str.len = (size_t)PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyDateTime_Check(obj))
        return datetime_value(st, p, row, pos, obj, out);
    if (PyDate_Check(obj)) {
        out->type = KEEL_TYPE_DATE;
        out->u.date = (int32_t)days_from_civil(PyDateTime_GET_YEAR(obj), PyDateTime_GET_MONTH(obj),
                                               PyDateTime_GET_DAY(obj));
        return 0;
    }
    if (PyTime_Check(obj)) {
        if (PyDateTime_TIME_GET_TZINFO(obj) != Py_None)
            return param_error(st, p, row, pos, obj, "time with a tzinfo is not supported");
        out->type = KEEL_TYPE_TIME;
        out->u.micros = time_micros(obj);
        return 0;
    }
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->UUID))
        return uuid_value(st, p, row, pos, obj, out);
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->Decimal)) {
        PyObject *text = hold(p, PyObject_Str(obj));
        if (text == NULL)
            return param_error_from(st, p, row, pos, obj, "str() failed");
        return str_value(st, p, row, pos, text, out, KEEL_TYPE_NUMERIC);
    }
    if (p->arrays && (PyList_Check(obj) || PyTuple_Check(obj)))
        return array_value(st, p, row, pos, obj, out);
    if (PyDict_Check(obj) || PyList_Check(obj))
        return json_value(st, p, row, pos, obj, obj, out);
    if (PyLong_Check(obj)) /* int subclasses such as IntEnum (bool was handled above) */
        goto integer;
    if (PyDelta_Check(obj)) {
        /* PostgreSQL's interval, MySQL's TIME, SQLite's duration text (the engines say). */
        out->type = KEEL_TYPE_INTERVAL;
        out->u.interval.months = 0;
        out->u.interval.days = PyDateTime_DELTA_GET_DAYS(obj);
        out->u.interval.micros = (int64_t)PyDateTime_DELTA_GET_SECONDS(obj) * US_PER_SEC +
                                 PyDateTime_DELTA_GET_MICROSECONDS(obj);
        return 0;
    }
    int ip = PyObject_IsInstance(obj, st->ip_hosts);
    int net = ip == 0 ? PyObject_IsInstance(obj, st->ip_networks) : 0;
    if (ip < 0 || net < 0)
        return param_error_from(st, p, row, pos, obj, "isinstance() failed");
    if (ip || net) {
        PyObject *text = hold(p, PyObject_Str(obj));
        if (text == NULL)
            return param_error_from(st, p, row, pos, obj, "str() failed");
        /* inet and cidr on PostgreSQL; text elsewhere. */
        return str_value(st, p, row, pos, text, out,
                         !p->arrays ? KEEL_TYPE_TEXT
                         : ip       ? KEEL_TYPE_INET
                                    : KEEL_TYPE_CIDR);
    }
    PyObject *range = keel__py_range_type(st);
    if (range == NULL)
        return -1;
    if (PyObject_TypeCheck(obj, (PyTypeObject *)range)) {
        if (!p->arrays)
            return param_error(st, p, row, pos, obj, "unsupported parameter type");
        if (p->ranges)
            return range_value(st, p, row, pos, obj, out);
        /* Its literal, which the server reads as the range type the statement gives it. */
        PyObject *text = hold(p, PyObject_CallMethod(obj, "_keel_text", NULL));
        if (text == NULL || !PyUnicode_Check(text))
            return text == NULL ? param_error_from(st, p, row, pos, obj, "Range text failed")
                                : param_error(st, p, row, pos, obj, "Range text is not a str");
        return str_value(st, p, row, pos, text, out, KEEL_TYPE_TEXT);
    }
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->Enum)) {
        /* An enum member goes as its value (a str for PostgreSQL's enums). */
        PyObject *value = hold(p, PyObject_GetAttrString(obj, "value"));
        if (value == NULL)
            return param_error_from(st, p, row, pos, obj, "enum member without a value");
        if (PyObject_TypeCheck(value, (PyTypeObject *)st->Enum))
            return param_error(st, p, row, pos, obj, "an enum member whose value is a member");
        return to_value(st, p, row, pos, value, out);
    }
    if (PyUnicode_Check(obj))
        return str_value(st, p, row, pos, obj, out, KEEL_TYPE_TEXT);
    if (PyObject_CheckBuffer(obj) && (PyByteArray_Check(obj) || PyMemoryView_Check(obj))) {
        /* Copied: its contents can change after the call, and a held buffer would also stop
         * the caller from resizing the bytearray while the operation waits. */
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return param_error_from(st, p, row, pos, obj, "unusable buffer");
        PyObject *copy = hold(p, PyBytes_FromStringAndSize(view.buf, view.len));
        PyBuffer_Release(&view);
        if (copy == NULL)
            return -1;
        out->type = KEEL_TYPE_BYTES;
        out->u.str.ptr = PyBytes_AS_STRING(copy);
        out->u.str.len = (size_t)PyBytes_GET_SIZE(copy);
        return 0;
    }
    /* A pydantic model: its JSON mode dump, as JSON. */
    PyObject *dump = NULL;
    if (type_attr(obj, "model_dump", &dump) < 0)
        return param_error_from(st, p, row, pos, obj, "cannot serialise as JSON");
    if (dump != NULL) {
        Py_DECREF(dump);
        PyObject *meth = PyObject_GetAttrString(obj, "model_dump");
        PyObject *kw = meth != NULL ? Py_BuildValue("{s:s}", "mode", "json") : NULL;
        PyObject *data = kw != NULL ? hold(p, PyObject_Call(meth, st->empty_tuple, kw)) : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(meth);
        if (data == NULL)
            return param_error_from(st, p, row, pos, obj, "model_dump(mode=\"json\") failed");
        return json_value(st, p, row, pos, obj, data, out);
    }
    return param_error(st, p, row, pos, obj, "unsupported parameter type");
}

int keel__py_params_from_args(kpy_state *st, kpy_params *p, PyObject *args) {
    size_t n = (size_t)PyTuple_GET_SIZE(args);
    /* The tuple holds the arguments whose memory the values point into. */
    if (hold(p, Py_NewRef(args)) == NULL || reserve_values(p, n) < 0)
        return -1;
    p->nrows = 1;
    p->ncols = n;
    for (size_t i = 0; i < n; i++) {
        if (to_value(st, p, -1, i + 1, PyTuple_GET_ITEM(args, i), &p->values[i]) < 0)
            return -1;
        p->nvalues = i + 1;
    }
    return 0;
}

/* The call that converts rows, for messages. */
static const char *rows_what(const kpy_params *p) {
    return p->what != NULL ? p->what : "executemany";
}

int keel__py_params_from_rows(kpy_state *st, kpy_params *p, PyObject *rows) {
    /* A tuple cannot change, so the rows and their values stay as they are while the
     * conversion of a value runs Python code (utcoffset(), __str__…), whatever that code does
     * to the caller's lists. */
    if (hold(p, Py_NewRef(rows)) == NULL)
        return -1;
    Py_ssize_t nrows = PyTuple_GET_SIZE(rows);
    p->nrows = (size_t)nrows;
    if (nrows == 0)
        return 0;
    size_t ncols = 0;
    for (Py_ssize_t r = 0; r < nrows; r++) {
        PyObject *row = PyTuple_GET_ITEM(rows, r);
        if (!PyTuple_Check(row)) {
            if (!PyList_Check(row) &&
                (PyUnicode_Check(row) || PyBytes_Check(row) || !PySequence_Check(row))) {
                keel__py_raise(st, KEEL_ERR_PARAMETERS, NULL,
                               "%s: row %zd is a %s, not a sequence of %s", rows_what(p), r,
                               Py_TYPE(row)->tp_name, p->what ? "values" : "parameters");
                return -1;
            }
            if ((row = hold(p, PySequence_Tuple(row))) == NULL)
                return -1;
        }
        size_t n = (size_t)PyTuple_GET_SIZE(row);
        if (r == 0) {
            ncols = n;
            if (ncols != 0 && (size_t)nrows > PY_SSIZE_T_MAX / sizeof(keel_value) / ncols) {
                PyErr_NoMemory();
                return -1;
            }
            if (reserve_values(p, (size_t)nrows * ncols) < 0)
                return -1;
            p->ncols = ncols;
        } else if (n != ncols) {
            keel__py_raise(st, KEEL_ERR_PARAMETERS, NULL, "%s: row %zd has %zu %s, row 0 has %zu",
                           rows_what(p), r, n, p->what ? "values" : "parameters", ncols);
            return -1;
        }
        for (size_t c = 0; c < ncols; c++) {
            if (to_value(st, p, r, c + 1, PyTuple_GET_ITEM(row, (Py_ssize_t)c),
                         &p->values[(size_t)r * ncols + c]) < 0)
                return -1;
        }
        p->nvalues = ((size_t)r + 1) * ncols;
    }
    return 0;
}
