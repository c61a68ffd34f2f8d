/* python/keel/_native/bson.c - the BSON codec (dict ⇄ bytes) and the Regex, Timestamp and RawDocument types. */
#include "module.h"

#include <datetime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

/*
 * BSON (bsonspec.org) is a little-endian, length-prefixed encoding: a document is an int32 total
 * size, elements (a type byte, a NUL-terminated key, a value) and a NUL byte. The codec maps:
 *
 *   None ⇄ null (0x0A)            bool ⇄ boolean (0x08)        float ⇄ double (0x01)
 *   int → int32 (0x10) when it fits, else int64 (0x12); both decode to int
 *   str ⇄ string (0x02)           dict (any Mapping) ⇄ document (0x03)
 *   list, tuple → array (0x04); arrays decode to list
 *   bytes, bytearray, memoryview → binary subtype 0; binary subtypes 0 and 2 decode to bytes
 *   uuid.UUID ⇄ binary subtype 4  keel.ObjectId ⇄ ObjectId (0x07)
 *   datetime ⇄ UTC datetime (0x09): naive datetimes are taken as UTC, aware ones converted;
 *       decoded as UTC-aware datetimes; precision is the millisecond (microseconds truncated)
 *   decimal.Decimal ⇄ Decimal128 (0x13), exactly, or DataError
 *   keel.Regex ⇄ regular expression (0x0B); re.Pattern is encoded too (flags i, m, s, x)
 *   keel.Timestamp ⇄ timestamp (0x11)
 *   RawDocument (already encoded bytes) → document, embedded as is
 *   pymongo's bson.ObjectId, Decimal128, Regex, Timestamp, Binary → as keel's (by class name)
 *
 * Every other type, and on decode every other BSON type or binary subtype, is a DataError naming
 * the key path. Key order is kept both ways (commands need their name first). The datetime C API
 * is per translation unit, which is why every datetime conversion of the BSON side lives here.
 */

#define MAX_DEPTH 512

/* The key path of the value being converted, as a chain on the C stack, for error messages. */
typedef struct kpy_path {
    const struct kpy_path *parent;
    const char *key; /* UTF-8; NULL for an array index */
    size_t keylen;
    size_t index;
} kpy_path;

/* Writes the dotted path ("a.b.3") into out, truncating it with "…" when it does not fit. */
static size_t path_write(const kpy_path *p, char *out, size_t cap) {
    if (p == NULL || cap == 0)
        return 0;
    size_t n = path_write(p->parent, out, cap);
    if (n >= cap - 1)
        return n;
    if (p->parent != NULL)
        out[n++] = '.';
    int w;
    if (p->key != NULL)
        w = snprintf(out + n, cap - n, "%.*s", (int)(p->keylen > 200 ? 200 : p->keylen), p->key);
    else
        w = snprintf(out + n, cap - n, "%zu", p->index);
    if (w < 0)
        return n;
    n += (size_t)w;
    return n < cap ? n : cap - 1;
}

/* " at 'a.b'" for a path, or "" at the top level. */
static void path_where(const kpy_path *p, char *out, size_t cap) {
    char path[256];
    out[0] = '\0';
    if (p == NULL)
        return;
    path[0] = '\0';
    path_write(p, path, sizeof path);
    snprintf(out, cap, " at '%s'", path);
}

/* Raises DataError with a message followed by the path. Returns -1. */
static int data_error(kpy_state *st, const kpy_path *p, const char *what) {
    char where[300];
    path_where(p, where, sizeof where);
    keel__py_raise(st, KEEL_ERR_DATA, NULL, "%s%s", what, where);
    return -1;
}

/* As data_error, appending the text of the Python exception being raised (kept as cause). */
static int data_error_from(kpy_state *st, const kpy_path *p, const char *what) {
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
    const char *s = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    if (s == NULL)
        PyErr_Clear();
    char msg[400];
    snprintf(msg, sizeof msg, "%s (%s)", what, s != NULL ? s : "conversion failed");
    data_error(st, p, msg);
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

/* ---- little-endian integers ---- */

static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put_le64(unsigned char *p, uint64_t v) {
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p) {
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- datetimes ---- */

int keel__py_bson_init(kpy_state *st) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return -1;
    st->epoch_naive = PyDateTime_FromDateAndTime(1970, 1, 1, 0, 0, 0, 0);
    if (st->epoch_naive == NULL)
        return -1;
    st->epoch_utc = PyDateTimeAPI->DateTime_FromDateAndTime(
        1970, 1, 1, 0, 0, 0, 0, PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
    return st->epoch_utc != NULL ? 0 : -1;
}

PyObject *keel__py_datetime_from_millis(kpy_state *st, int64_t ms) {
    /* keel's timestamptz values are microseconds: reuse their conversion (and range check). */
    if (ms > INT64_MAX / 1000 || ms < INT64_MIN / 1000)
        return keel__py_raise(st, KEEL_ERR_DATA, NULL,
                              "datetime %lld ms is out of the range of Python's datetime",
                              (long long)ms);
    keel_value v;
    v.type = KEEL_TYPE_TIMESTAMPTZ;
    v.u.micros = ms * 1000;
    return keel__py_value_to_py(st, &v);
}

int keel__py_datetime_to_millis(kpy_state *st, PyObject *dt, int64_t *ms) {
    /*
     * Subtracting the epoch lets datetime do the calendar and the time zone: an aware datetime
     * minus the aware epoch is its UTC offset from it. A tzinfo whose utcoffset() is None makes
     * the datetime naive, as Python defines it.
     */
    PyObject *epoch = st->epoch_naive;
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(dt);
    if (tz == PyDateTime_TimeZone_UTC) {
        epoch = st->epoch_utc;
    } else if (tz != Py_None) {
        PyObject *off = PyObject_CallMethodNoArgs(dt, st->s_utcoffset);
        if (off == NULL)
            return -1;
        if (off != Py_None)
            epoch = st->epoch_utc;
        Py_DECREF(off);
    }
    PyObject *delta = PyNumber_Subtract(dt, epoch);
    if (delta == NULL)
        return -1;
    if (!PyDelta_Check(delta)) {
        Py_DECREF(delta);
        PyErr_SetString(PyExc_TypeError, "datetime subtraction did not give a timedelta");
        return -1;
    }
    /* timedelta normalises seconds and microseconds to be non-negative, so this floors. */
    *ms = (int64_t)PyDateTime_DELTA_GET_DAYS(delta) * 86400000 +
          (int64_t)PyDateTime_DELTA_GET_SECONDS(delta) * 1000 +
          PyDateTime_DELTA_GET_MICROSECONDS(delta) / 1000;
    Py_DECREF(delta);
    return 0;
}

/* ---- Decimal128 (IEEE 754-2008 decimal128, binary integer significand) ---- */

#define DEC128_BIAS 6176
#define DEC128_EMIN (-6176) /* smallest exponent of the coefficient */
#define DEC128_EMAX 6111    /* largest exponent of the coefficient */
#define DEC128_DIGITS 34
#define DEC128_SIGN UINT64_C(0x8000000000000000)
#define DEC128_INF UINT64_C(0x7800000000000000)
#define DEC128_NAN UINT64_C(0x7C00000000000000)
#define DEC128_SNAN UINT64_C(0x7E00000000000000)

/* A 128-bit unsigned integer as four 32-bit limbs, least significant first. */
typedef struct u128 {
    uint32_t w[4];
} u128;

static void u128_mul_add(u128 *x, uint32_t mul, uint32_t add) {
    uint64_t carry = add;
    for (int i = 0; i < 4; i++) {
        uint64_t t = (uint64_t)x->w[i] * mul + carry;
        x->w[i] = (uint32_t)t;
        carry = t >> 32;
    }
}

/* Divides x by div in place and returns the remainder. */
static uint32_t u128_div(u128 *x, uint32_t div) {
    uint64_t rem = 0;
    for (int i = 3; i >= 0; i--) {
        uint64_t t = rem << 32 | x->w[i];
        x->w[i] = (uint32_t)(t / div);
        rem = t % div;
    }
    return (uint32_t)rem;
}

static int u128_is_zero(const u128 *x) { return (x->w[0] | x->w[1] | x->w[2] | x->w[3]) == 0; }

/* 10^34 - 1, the largest canonical coefficient, as limbs. */
static int u128_gt_max_coefficient(const u128 *x) {
    static const u128 max = { { 0xFFFFFFFFu, 0x378D8E63u, 0xBEAD87C0u, 0x0001ED09u } };
    for (int i = 3; i >= 0; i--) {
        if (x->w[i] != max.w[i])
            return x->w[i] > max.w[i];
    }
    return 0;
}

/* Encodes a decimal.Decimal into the 16 bytes of a Decimal128, exactly, or fails. */
static int decimal_to_128(kpy_state *st, PyObject *obj, const kpy_path *path,
                          unsigned char out[16]) {
    PyObject *t = PyObject_CallMethodNoArgs(obj, st->s_as_tuple);
    if (t == NULL)
        return data_error_from(st, path, "Decimal.as_tuple() failed");
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(t, 1))) {
        Py_DECREF(t);
        return data_error(st, path, "Decimal.as_tuple() did not return (sign, digits, exponent)");
    }
    int rc = -1;
    long sign = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    PyObject *digits = PyTuple_GET_ITEM(t, 1);
    PyObject *expo = PyTuple_GET_ITEM(t, 2);
    uint64_t high, low = 0;
    if (sign == -1 && PyErr_Occurred()) {
        data_error_from(st, path, "Decimal sign is not an int");
        goto done;
    }
    if (PyUnicode_Check(expo)) {
        /* NaN payloads (diagnostic digits) are not kept: MongoDB has a single NaN of each kind. */
        const char *e = PyUnicode_AsUTF8(expo);
        if (e == NULL)
            goto done;
        if (strcmp(e, "F") == 0)
            high = DEC128_INF;
        else if (strcmp(e, "n") == 0)
            high = DEC128_NAN;
        else if (strcmp(e, "N") == 0)
            high = DEC128_SNAN;
        else {
            data_error(st, path, "Decimal has an unknown special exponent");
            goto done;
        }
    } else {
        int overflow;
        long long exp = PyLong_AsLongLongAndOverflow(expo, &overflow);
        if (exp == -1 && PyErr_Occurred()) {
            data_error_from(st, path, "Decimal exponent is not an int");
            goto done;
        }
        Py_ssize_t ndig = PyTuple_GET_SIZE(digits);
        Py_ssize_t first = 0, last = -1; /* first and last nonzero digits */
        for (Py_ssize_t i = 0; i < ndig; i++) {
            long d = PyLong_AsLong(PyTuple_GET_ITEM(digits, i));
            if (d < 0 || d > 9) {
                if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
                    PyErr_Clear();
                    data_error(st, path, "Decimal digits are not 0-9");
                } else {
                    data_error_from(st, path, "Decimal digits are not ints");
                }
                goto done;
            }
            if (d != 0) {
                if (last < 0)
                    first = i;
                last = i;
            }
        }
        u128 coef = { { 0, 0, 0, 0 } };
        if (overflow != 0) {
            data_error(st, path, "Decimal exponent is out of the Decimal128 range");
            goto done;
        }
        if (last < 0) {
            /* Zero: only the exponent matters, and any exponent names the same value. */
            if (exp < DEC128_EMIN)
                exp = DEC128_EMIN;
            if (exp > DEC128_EMAX)
                exp = DEC128_EMAX;
        } else {
            /* n digits from `first`; digits past the end of the tuple are zeros we add. */
            long long n = (long long)(ndig - first);
            long long trailing = (long long)(ndig - 1 - last);
            if (n > DEC128_DIGITS) {
                long long drop = n - DEC128_DIGITS;
                if (drop > trailing) {
                    data_error(st, path,
                               "Decimal has more than 34 significant digits: a Decimal128 "
                               "cannot hold it exactly");
                    goto done;
                }
                n -= drop;
                trailing -= drop;
                exp += drop;
            }
            while (exp > DEC128_EMAX && n < DEC128_DIGITS) {
                n++;
                exp--;
            }
            if (exp > DEC128_EMAX) {
                data_error(st, path, "Decimal is too large for a Decimal128 (overflow)");
                goto done;
            }
            if (exp < DEC128_EMIN) {
                long long drop = DEC128_EMIN - exp;
                if (drop > trailing) {
                    data_error(st, path,
                               "Decimal is too small for a Decimal128 to hold exactly "
                               "(underflow)");
                    goto done;
                }
                n -= drop;
                exp += drop;
            }
            for (long long i = 0; i < n; i++) {
                Py_ssize_t at = first + (Py_ssize_t)i;
                long d = at < ndig ? PyLong_AsLong(PyTuple_GET_ITEM(digits, at)) : 0;
                u128_mul_add(&coef, 10, (uint32_t)d);
            }
        }
        uint64_t bexp = (uint64_t)(exp + DEC128_BIAS);
        high = bexp << 49 | ((uint64_t)coef.w[3] << 32 | coef.w[2]);
        low = (uint64_t)coef.w[1] << 32 | coef.w[0];
    }
    if (sign)
        high |= DEC128_SIGN;
    put_le64(out, low);
    put_le64(out + 8, high);
    rc = 0;
done:
    Py_DECREF(t);
    return rc;
}

/* Decodes the 16 bytes of a Decimal128 into a decimal.Decimal. */
static PyObject *decimal_from_128(kpy_state *st, const unsigned char *p) {
    uint64_t low = get_le64(p), high = get_le64(p + 8);
    const char *sign = (high & DEC128_SIGN) ? "-" : "";
    char text[64];
    if ((high & DEC128_NAN) == DEC128_NAN) {
        snprintf(text, sizeof text, "%s%s", sign,
                 (high & DEC128_SNAN) == DEC128_SNAN ? "sNaN" : "NaN");
    } else if ((high & DEC128_INF) == DEC128_INF) {
        snprintf(text, sizeof text, "%sInfinity", sign);
    } else {
        u128 coef;
        int exp;
        if ((high & UINT64_C(0x6000000000000000)) == UINT64_C(0x6000000000000000)) {
            /* The second form implies a coefficient of at least 2^113: never canonical, so it
             * is zero (IEEE 754-2008, 3.5.2). */
            exp = (int)((high >> 47) & 0x3FFF) - DEC128_BIAS;
            memset(&coef, 0, sizeof coef);
        } else {
            exp = (int)((high >> 49) & 0x3FFF) - DEC128_BIAS;
            uint64_t chigh = high & UINT64_C(0x1FFFFFFFFFFFF);
            coef.w[0] = (uint32_t)low;
            coef.w[1] = (uint32_t)(low >> 32);
            coef.w[2] = (uint32_t)chigh;
            coef.w[3] = (uint32_t)(chigh >> 32);
            if (u128_gt_max_coefficient(&coef))
                memset(&coef, 0, sizeof coef);
        }
        /* At most 34 digits, produced from the least significant end. */
        char digits[48];
        size_t nd = 0;
        if (u128_is_zero(&coef))
            digits[nd++] = '0';
        while (!u128_is_zero(&coef))
            digits[nd++] = (char)('0' + u128_div(&coef, 10));
        size_t n = 0;
        n += (size_t)snprintf(text + n, sizeof text - n, "%s", sign);
        while (nd > 0)
            text[n++] = digits[--nd];
        snprintf(text + n, sizeof text - n, "E%d", exp);
    }
    PyObject *s = PyUnicode_FromString(text);
    if (s == NULL)
        return NULL;
    PyObject *d = PyObject_CallOneArg(st->Decimal, s);
    Py_DECREF(s);
    return d;
}

/* ---- Regex ---- */

typedef struct kpy_regex {
    PyObject_HEAD PyObject *pattern; /* str */
    PyObject *flags;                 /* str of sorted, distinct ASCII letters */
} kpy_regex;

/* The flags as BSON stores them: sorted and without repeats. NULL with ValueError when bad. */
static PyObject *regex_normal_flags(PyObject *flags) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(flags, &n);
    if (s == NULL)
        return NULL;
    int seen[26] = { 0 };
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 'a' || s[i] > 'z') {
            PyErr_Format(PyExc_ValueError,
                         "regular expression flags are lower-case letters, not %R", flags);
            return NULL;
        }
        seen[s[i] - 'a'] = 1;
    }
    char out[27];
    size_t k = 0;
    for (int c = 0; c < 26; c++)
        if (seen[c])
            out[k++] = (char)('a' + c);
    return PyUnicode_FromStringAndSize(out, (Py_ssize_t)k);
}

static int has_nul(PyObject *str) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL)
        return -1;
    return strlen(s) != (size_t)n;
}

static PyObject *regex_make(PyTypeObject *type, PyObject *pattern, PyObject *flags) {
    PyObject *nf = regex_normal_flags(flags);
    if (nf == NULL)
        return NULL;
    int nul = has_nul(pattern);
    if (nul != 0) {
        if (nul > 0)
            PyErr_SetString(PyExc_ValueError,
                            "a BSON regular expression cannot contain a NUL character");
        Py_DECREF(nf);
        return NULL;
    }
    kpy_regex *r = (kpy_regex *)type->tp_alloc(type, 0);
    if (r == NULL) {
        Py_DECREF(nf);
        return NULL;
    }
    r->pattern = Py_NewRef(pattern);
    r->flags = nf;
    return (PyObject *)r;
}

static PyObject *regex_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = { "pattern", "flags", NULL };
    PyObject *pattern, *flags = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|U:Regex", kwlist, &pattern, &flags))
        return NULL;
    if (flags == NULL) {
        flags = PyUnicode_New(0, 0);
        if (flags == NULL)
            return NULL;
    } else {
        Py_INCREF(flags);
    }
    PyObject *r = regex_make(type, pattern, flags);
    Py_DECREF(flags);
    return r;
}

static void regex_dealloc(kpy_regex *r) {
    PyTypeObject *tp = Py_TYPE(r);
    Py_CLEAR(r->pattern);
    Py_CLEAR(r->flags);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static PyObject *regex_repr(kpy_regex *r) {
    return PyUnicode_FromFormat("Regex(%R, %R)", r->pattern, r->flags);
}

static PyObject *regex_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    kpy_regex *x = (kpy_regex *)a, *y = (kpy_regex *)b;
    int eq = PyUnicode_Compare(x->pattern, y->pattern) == 0 &&
             PyUnicode_Compare(x->flags, y->flags) == 0;
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t regex_hash(kpy_regex *r) {
    Py_hash_t a = PyObject_Hash(r->pattern), b = PyObject_Hash(r->flags);
    if (a == -1 || b == -1)
        return -1;
    /* Unsigned arithmetic: the multiplication wraps instead of overflowing. */
    Py_hash_t h = (Py_hash_t)((Py_uhash_t)a * 1000003u ^ (Py_uhash_t)b);
    return h == -1 ? -2 : h;
}

static PyObject *regex_reduce(kpy_regex *r, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(OO)", (PyObject *)Py_TYPE(r), r->pattern, r->flags);
}

static PyMethodDef regex_methods[] = {
    { "__reduce__", (PyCFunction)regex_reduce, METH_NOARGS, NULL },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef regex_members[] = {
    { "pattern", T_OBJECT, offsetof(kpy_regex, pattern), READONLY,
      "The pattern, as MongoDB reads it." },
    { "flags", T_OBJECT, offsetof(kpy_regex, flags), READONLY,
      "The option letters (\"i\", \"m\", \"s\", \"x\"…), sorted." },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot regex_slots[] = {
    { Py_tp_doc, "Regex(pattern, flags='') - a BSON regular expression, as MongoDB stores it.\n\n"
                 "Decoded BSON regular expressions become Regex (not re.Pattern: MongoDB's PCRE "
                 "syntax and options differ from Python's). re.Pattern values are encoded too." },
    { Py_tp_new, regex_new },
    { Py_tp_dealloc, regex_dealloc },
    { Py_tp_repr, regex_repr },
    { Py_tp_richcompare, regex_richcompare },
    { Py_tp_hash, regex_hash },
    { Py_tp_methods, regex_methods },
    { Py_tp_members, regex_members },
    { 0, NULL },
};

PyType_Spec keel__py_regex_spec = {
    .name = "keel.Regex",
    .basicsize = sizeof(kpy_regex),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = regex_slots,
};

/* ---- Timestamp ---- */

typedef struct kpy_timestamp {
    PyObject_HEAD uint32_t time;
    uint32_t inc;
} kpy_timestamp;

static PyObject *timestamp_make(PyTypeObject *type, uint32_t time, uint32_t inc) {
    kpy_timestamp *t = (kpy_timestamp *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->time = time;
    t->inc = inc;
    return (PyObject *)t;
}

static int uint32_arg(PyObject *o, const char *name, uint32_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "Timestamp %s must be an int, not %.100s", name,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if ((v == (unsigned long long)-1 && PyErr_Occurred()) || v > UINT32_MAX) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "Timestamp %s must be in [0, 2**32), not %R", name, o);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *timestamp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = { "time", "inc", NULL };
    PyObject *time, *inc;
    uint32_t t, i;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Timestamp", kwlist, &time, &inc))
        return NULL;
    if (uint32_arg(time, "time", &t) < 0 || uint32_arg(inc, "inc", &i) < 0)
        return NULL;
    return timestamp_make(type, t, i);
}

static void timestamp_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *timestamp_repr(kpy_timestamp *t) {
    return PyUnicode_FromFormat("Timestamp(%lu, %lu)", (unsigned long)t->time,
                                (unsigned long)t->inc);
}

static uint64_t timestamp_value(const kpy_timestamp *t) { return (uint64_t)t->time << 32 | t->inc; }

static PyObject *timestamp_richcompare(PyObject *a, PyObject *b, int op) {
    if (Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    uint64_t x = timestamp_value((kpy_timestamp *)a), y = timestamp_value((kpy_timestamp *)b);
    Py_RETURN_RICHCOMPARE(x, y, op);
}

static Py_hash_t timestamp_hash(kpy_timestamp *t) {
    uint64_t v = timestamp_value(t);
    Py_hash_t h = (Py_hash_t)(v ^ (v >> 29));
    return h == -1 ? -2 : h;
}

static PyObject *timestamp_reduce(kpy_timestamp *t, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(kk)", (PyObject *)Py_TYPE(t), (unsigned long)t->time,
                         (unsigned long)t->inc);
}

static PyMethodDef timestamp_methods[] = {
    { "__reduce__", (PyCFunction)timestamp_reduce, METH_NOARGS, NULL },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef timestamp_members[] = {
    { "time", T_UINT, offsetof(kpy_timestamp, time), READONLY, "Seconds since the epoch." },
    { "inc", T_UINT, offsetof(kpy_timestamp, inc), READONLY, "Ordinal within the second." },
    { NULL, 0, 0, 0, NULL },
};

static PyType_Slot timestamp_slots[] = {
    { Py_tp_doc, "Timestamp(time, inc) - a BSON timestamp (MongoDB's internal clock: cluster "
                 "and operation times). Ordered by (time, inc)." },
    { Py_tp_new, timestamp_new },
    { Py_tp_dealloc, timestamp_dealloc },
    { Py_tp_repr, timestamp_repr },
    { Py_tp_richcompare, timestamp_richcompare },
    { Py_tp_hash, timestamp_hash },
    { Py_tp_methods, timestamp_methods },
    { Py_tp_members, timestamp_members },
    { 0, NULL },
};

PyType_Spec keel__py_timestamp_spec = {
    .name = "keel.Timestamp",
    .basicsize = sizeof(kpy_timestamp),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = timestamp_slots,
};

/* ---- RawDocument ---- */

/* A bytes subclass: its size and slots are inherited from bytes. */
static PyType_Slot rawdocument_slots[] = {
    { Py_tp_doc, "RawDocument(data) - bytes holding one encoded BSON document, embedded as is "
                 "when it is a value of a document being encoded." },
    { 0, NULL },
};

PyType_Spec keel__py_rawdocument_spec = {
    .name = "keel._native.RawDocument",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = rawdocument_slots,
};

/* ---- encoding ---- */

typedef struct enc {
    kpy_state *st;
    unsigned char *buf;
    size_t len;
    size_t cap;
    size_t limit; /* the whole output */
    int depth;
} enc;

/* The output passed its limit while the value at path was written. */
static int overflow(enc *e, const kpy_path *path) {
    char msg[200];
    if (e->limit > KPY_BSON_MAX_DOCUMENT)
        snprintf(msg, sizeof msg, "the command is larger than MongoDB's limit of %zu bytes",
                 e->limit);
    else
        snprintf(msg, sizeof msg, "the document is larger than the %zu-byte BSON limit", e->limit);
    if (path != NULL) {
        char where[300];
        path_where(path, where, sizeof where);
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof msg - n, " (while encoding the value%s)", where);
    }
    return data_error(e->st, NULL, msg);
}

/* An embedded document larger than BSON allows. */
static int too_large(enc *e, const kpy_path *path, size_t size) {
    char msg[200];
    snprintf(msg, sizeof msg, "the document is %zu bytes, more than the %zu-byte BSON limit", size,
             KPY_BSON_MAX_DOCUMENT);
    return data_error(e->st, path, msg);
}

/* Room for n more bytes; fails with DataError past the limit, so nothing huge is built. */
static int reserve(enc *e, size_t n, const kpy_path *path) {
    if (n > e->limit || e->len > e->limit - n)
        return overflow(e, path);
    if (e->len + n <= e->cap)
        return 0;
    size_t cap = e->cap != 0 ? e->cap : 256;
    while (cap < e->len + n)
        cap *= 2;
    if (cap > e->limit)
        cap = e->limit;
    unsigned char *b = PyMem_Realloc(e->buf, cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->buf = b;
    e->cap = cap;
    return 0;
}

static int put(enc *e, const void *p, size_t n, const kpy_path *path) {
    if (reserve(e, n, path) < 0)
        return -1;
    memcpy(e->buf + e->len, p, n);
    e->len += n;
    return 0;
}

static int put_byte(enc *e, unsigned char b, const kpy_path *path) { return put(e, &b, 1, path); }

static int put_i32(enc *e, uint32_t v, const kpy_path *path) {
    unsigned char b[4];
    put_le32(b, v);
    return put(e, b, 4, path);
}

static int put_i64(enc *e, uint64_t v, const kpy_path *path) {
    unsigned char b[8];
    put_le64(b, v);
    return put(e, b, 8, path);
}

/* An element header: type byte and key (a cstring). */
static int put_head(enc *e, unsigned char type, const kpy_path *path) {
    if (put_byte(e, type, path) < 0)
        return -1;
    if (path->key != NULL) {
        if (put(e, path->key, path->keylen, path) < 0)
            return -1;
    } else {
        char num[24];
        int n = snprintf(num, sizeof num, "%zu", path->index);
        if (put(e, num, (size_t)n, path) < 0)
            return -1;
    }
    return put_byte(e, 0, path);
}

/*
 * A BSON string: int32 length (with the NUL), bytes, NUL. Reserving the whole first means the
 * length fits in an int32, since every limit is far below 2 GiB.
 */
static int put_string(enc *e, const char *s, size_t n, const kpy_path *path) {
    if (reserve(e, n + 5, path) < 0) /* n is a Python size: n + 5 cannot wrap */
        return -1;
    put_i32(e, (uint32_t)(n + 1), path);
    put(e, s, n, path);
    return put_byte(e, 0, path);
}

/* Binary data: int32 length, subtype, bytes (reserved first, as for strings). */
static int put_binary(enc *e, const void *p, size_t n, unsigned char subtype,
                      const kpy_path *path) {
    if (reserve(e, n + 5, path) < 0) /* n is a Python size: n + 5 cannot wrap */
        return -1;
    put_i32(e, (uint32_t)n, path);
    put_byte(e, subtype, path);
    return put(e, p, n, path);
}

/* A cstring value (regular expressions): no NUL allowed inside. */
static int put_cstring(enc *e, PyObject *str, const char *what, const kpy_path *path) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL)
        return data_error_from(e->st, path, "cannot encode a string as UTF-8");
    if (strlen(s) != (size_t)n) {
        char msg[100];
        snprintf(msg, sizeof msg, "%s contains a NUL character", what);
        return data_error(e->st, path, msg);
    }
    if (put(e, s, (size_t)n, path) < 0)
        return -1;
    return put_byte(e, 0, path);
}

static int enc_value(enc *e, PyObject *obj, const kpy_path *path);

/* Appends the element key: value of a document at path parent. */
static int enc_item(enc *e, PyObject *key, PyObject *value, const kpy_path *parent) {
    kpy_path node = { parent, NULL, 0, 0 };
    if (!PyUnicode_Check(key)) {
        char msg[160];
        snprintf(msg, sizeof msg, "document keys must be str, not %.100s", Py_TYPE(key)->tp_name);
        return data_error(e->st, parent, msg);
    }
    Py_ssize_t n;
    const char *k = PyUnicode_AsUTF8AndSize(key, &n);
    if (k == NULL)
        return data_error_from(e->st, parent, "a document key cannot be encoded as UTF-8");
    node.key = k;
    node.keylen = (size_t)n;
    if (strlen(k) != (size_t)n)
        return data_error(e->st, &node, "document keys cannot contain a NUL character");
    /* The key must outlive the value's encoding, which may run Python code (utcoffset…). */
    Py_INCREF(key);
    Py_INCREF(value);
    int rc = enc_value(e, value, &node);
    Py_DECREF(value);
    Py_DECREF(key);
    return rc;
}

/* Writes a document's elements between its length and its final NUL; checks its size. */
static int enc_document_body(enc *e, PyObject *obj, const kpy_path *path) {
    size_t start = e->len;
    if (put_i32(e, 0, path) < 0)
        return -1;
    if (++e->depth > MAX_DEPTH) {
        e->depth--;
        return data_error(e->st, path, "documents are nested more than 512 levels deep");
    }
    int rc = 0;
    if (PyDict_Check(obj)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (rc == 0 && PyDict_Next(obj, &pos, &k, &v))
            rc = enc_item(e, k, v, path);
    } else {
        PyObject *items = PyMapping_Items(obj);
        if (items == NULL) {
            rc = data_error_from(e->st, path, "cannot read the items of a mapping");
        } else {
            for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
                PyObject *it = PyList_GET_ITEM(items, i);
                if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2)
                    rc = data_error(e->st, path, "mapping items() did not give pairs");
                else
                    rc = enc_item(e, PyTuple_GET_ITEM(it, 0), PyTuple_GET_ITEM(it, 1), path);
            }
            Py_DECREF(items);
        }
    }
    e->depth--;
    if (rc < 0 || put_byte(e, 0, path) < 0)
        return -1;
    size_t size = e->len - start;
    /* The top level is bounded by e->limit (a command may be a little larger than a document). */
    if (path != NULL && size > KPY_BSON_MAX_DOCUMENT)
        return too_large(e, path, size);
    put_le32(e->buf + start, (uint32_t)size);
    return 0;
}

static int enc_array_body(enc *e, PyObject *seq, const kpy_path *path) {
    size_t start = e->len;
    if (put_i32(e, 0, path) < 0)
        return -1;
    if (++e->depth > MAX_DEPTH) {
        e->depth--;
        return data_error(e->st, path, "documents are nested more than 512 levels deep");
    }
    int rc = 0;
    /* Indexing each time (rather than holding the item array) tolerates a list that the
     * encoding of one of its items changes. */
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(seq); i++) {
        kpy_path node = { path, NULL, 0, (size_t)i };
        PyObject *v = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        rc = enc_value(e, v, &node);
        Py_DECREF(v);
    }
    e->depth--;
    if (rc < 0 || put_byte(e, 0, path) < 0)
        return -1;
    put_le32(e->buf + start, (uint32_t)(e->len - start));
    return 0;
}

static int enc_int(enc *e, PyObject *obj, const kpy_path *path) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow != 0)
        return data_error(e->st, path, "integer is out of the int64 range of BSON");
    if (v == -1 && PyErr_Occurred())
        return data_error_from(e->st, path, "not an integer");
    if (v >= INT32_MIN && v <= INT32_MAX) {
        if (put_head(e, 0x10, path) < 0)
            return -1;
        return put_i32(e, (uint32_t)(int32_t)v, path);
    }
    if (put_head(e, 0x12, path) < 0)
        return -1;
    return put_i64(e, (uint64_t)v, path);
}

static int enc_uuid(enc *e, PyObject *obj, const kpy_path *path) {
    PyObject *b = PyObject_GetAttr(obj, e->st->s_bytes);
    if (b == NULL)
        return data_error_from(e->st, path, "UUID.bytes failed");
    if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != 16) {
        Py_DECREF(b);
        return data_error(e->st, path, "UUID.bytes is not 16 bytes");
    }
    int rc = put_head(e, 0x05, path);
    if (rc == 0)
        rc = put_binary(e, PyBytes_AS_STRING(b), 16, 4, path);
    Py_DECREF(b);
    return rc;
}

/* re.Pattern: the pattern as a str and the flags MongoDB knows (re.U is Python's default). */
static int enc_pattern(enc *e, PyObject *obj, const kpy_path *path) {
    PyObject *pattern = PyObject_GetAttr(obj, e->st->s_pattern);
    if (pattern == NULL)
        return data_error_from(e->st, path, "re.Pattern has no pattern");
    if (!PyUnicode_Check(pattern)) {
        Py_DECREF(pattern);
        return data_error(e->st, path,
                          "bytes regular expressions cannot be encoded: use a str "
                          "pattern");
    }
    PyObject *fobj = PyObject_GetAttr(obj, e->st->s_flags);
    long flags = fobj != NULL ? PyLong_AsLong(fobj) : -1;
    Py_XDECREF(fobj);
    if (flags == -1 && PyErr_Occurred()) {
        Py_DECREF(pattern);
        return data_error_from(e->st, path, "re.Pattern flags are not an int");
    }
    /* re.IGNORECASE 2, re.LOCALE 4, re.MULTILINE 8, re.DOTALL 16, re.UNICODE 32, re.VERBOSE 64,
     * re.ASCII 256, re.DEBUG 128 (which only prints while compiling). */
    if (flags & (4 | 256)) {
        Py_DECREF(pattern);
        return data_error(e->st, path, "re.ASCII and re.LOCALE have no BSON equivalent");
    }
    char letters[8];
    size_t n = 0;
    if (flags & 2)
        letters[n++] = 'i';
    if (flags & 8)
        letters[n++] = 'm';
    if (flags & 16)
        letters[n++] = 's';
    if (flags & 64)
        letters[n++] = 'x';
    int rc = put_head(e, 0x0B, path);
    if (rc == 0)
        rc = put_cstring(e, pattern, "a regular expression", path);
    if (rc == 0)
        rc = put(e, letters, n, path);
    if (rc == 0)
        rc = put_byte(e, 0, path);
    Py_DECREF(pattern);
    return rc;
}

static int enc_raw(enc *e, PyObject *obj, const kpy_path *path) {
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(obj);
    size_t n = (size_t)PyBytes_GET_SIZE(obj);
    if (n < 5 || get_le32(p) != n || p[n - 1] != 0)
        return data_error(e->st, path, "a RawDocument does not hold one BSON document");
    if (n > KPY_BSON_MAX_DOCUMENT)
        return too_large(e, path, n);
    if (put_head(e, 0x03, path) < 0)
        return -1;
    return put(e, p, n, path);
}

/*
 * The name of a class of pymongo's bson package ("ObjectId" for bson.objectid.ObjectId) into
 * out, or 0 when obj's class is not one (bson.X or bson.x.X). Duck-typed: no import of bson.
 */
static int pymongo_class(PyObject *obj, char *out, size_t cap) {
    PyTypeObject *type = Py_TYPE(obj);
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    const char *m = module != NULL && PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : NULL;
    int found = m != NULL && (strcmp(m, "bson") == 0 || strncmp(m, "bson.", 5) == 0);
    if (m == NULL)
        PyErr_Clear();
    Py_XDECREF(module);
    if (!found)
        return 0;
    const char *name = strrchr(type->tp_name, '.');
    snprintf(out, cap, "%s", name != NULL ? name + 1 : type->tp_name);
    return 1;
}

/* bytes attribute attr of obj, exactly n bytes long, into out; -1 with DataError otherwise. */
static int pymongo_bytes(kpy_state *st, PyObject *obj, const char *attr, size_t n,
                         unsigned char *out, const char *what, const kpy_path *path) {
    PyObject *b = PyObject_GetAttrString(obj, attr);
    if (b == NULL)
        return data_error_from(st, path, what);
    int ok = PyBytes_Check(b) && (size_t)PyBytes_GET_SIZE(b) == n;
    if (ok)
        memcpy(out, PyBytes_AS_STRING(b), n);
    Py_DECREF(b);
    return ok ? 0 : data_error(st, path, what);
}

/* bson.regex.Regex: pattern (str) and flags (an int of re flags), as pymongo encodes them. */
static int enc_pymongo_regex(enc *e, PyObject *obj, const kpy_path *path) {
    kpy_state *st = e->st;
    PyObject *pattern = PyObject_GetAttr(obj, st->s_pattern);
    if (pattern == NULL)
        return data_error_from(st, path, "bson.Regex (pymongo's) has no pattern");
    if (!PyUnicode_Check(pattern)) {
        Py_DECREF(pattern);
        return data_error(st, path, "bson.Regex (pymongo's) with a bytes pattern: use a str");
    }
    PyObject *fobj = PyObject_GetAttr(obj, st->s_flags);
    long flags = fobj != NULL ? PyLong_AsLong(fobj) : -1;
    Py_XDECREF(fobj);
    if (flags == -1 && PyErr_Occurred()) {
        Py_DECREF(pattern);
        return data_error_from(st, path, "bson.Regex (pymongo's) flags are not an int");
    }
    /* pymongo's letters: re.I 2 i, re.L 4 l, re.M 8 m, re.S 16 s, re.U 32 u, re.X 64 x. */
    static const struct {
        long bit;
        char letter;
    } map[] = { { 2, 'i' }, { 4, 'l' }, { 8, 'm' }, { 16, 's' }, { 32, 'u' }, { 64, 'x' } };
    char letters[8];
    size_t n = 0;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (flags & map[i].bit)
            letters[n++] = map[i].letter;
    int rc = put_head(e, 0x0B, path);
    if (rc == 0)
        rc = put_cstring(e, pattern, "a regular expression", path);
    if (rc == 0)
        rc = put(e, letters, n, path);
    if (rc == 0)
        rc = put_byte(e, 0, path);
    Py_DECREF(pattern);
    return rc;
}

/*
 * The values of pymongo's bson package that keel has types for: ObjectId (its 12 .binary
 * bytes), Decimal128 (its 16 .bid bytes, BSON's own), Regex and Timestamp (.time, .inc).
 * 1 when obj is none of them (nothing raised), 0 when encoded, -1 on error.
 */
static int enc_pymongo(enc *e, PyObject *obj, const kpy_path *path) {
    kpy_state *st = e->st;
    char name[64];
    if (!pymongo_class(obj, name, sizeof name))
        return 1;
    unsigned char b[16];
    if (strcmp(name, "ObjectId") == 0) {
        if (pymongo_bytes(st, obj, "binary", 12, b,
                          "bson.ObjectId (pymongo's) has no 12-byte .binary", path) < 0 ||
            put_head(e, 0x07, path) < 0)
            return -1;
        return put(e, b, 12, path);
    }
    if (strcmp(name, "Decimal128") == 0) {
        if (pymongo_bytes(st, obj, "bid", 16, b, "bson.Decimal128 (pymongo's) has no 16-byte .bid",
                          path) < 0 ||
            put_head(e, 0x13, path) < 0)
            return -1;
        return put(e, b, 16, path);
    }
    if (strcmp(name, "Regex") == 0)
        return enc_pymongo_regex(e, obj, path);
    if (strcmp(name, "Timestamp") == 0) {
        PyObject *t = PyObject_GetAttrString(obj, "time");
        PyObject *i = t != NULL ? PyObject_GetAttrString(obj, "inc") : NULL;
        unsigned long long tv = i != NULL ? PyLong_AsUnsignedLongLong(t) : (unsigned long long)-1;
        unsigned long long iv =
            i != NULL && !PyErr_Occurred() ? PyLong_AsUnsignedLongLong(i) : (unsigned long long)-1;
        Py_XDECREF(t);
        Py_XDECREF(i);
        if (PyErr_Occurred() || tv > 0xFFFFFFFFu || iv > 0xFFFFFFFFu) {
            if (PyErr_Occurred())
                return data_error_from(st, path, "bson.Timestamp (pymongo's) has no time and inc");
            return data_error(st, path, "bson.Timestamp (pymongo's) time or inc is out of range");
        }
        if (put_head(e, 0x11, path) < 0)
            return -1;
        return put_i64(e, (uint64_t)tv << 32 | iv, path);
    }
    char msg[200];
    snprintf(msg, sizeof msg,
             "cannot encode bson.%.60s (pymongo's) as BSON: keel takes pymongo's ObjectId, "
             "Decimal128, Regex, Timestamp, Binary and Int64",
             name);
    return data_error(st, path, msg);
}

static int enc_value(enc *e, PyObject *obj, const kpy_path *path) {
    kpy_state *st = e->st;
    /* The common types first, exact checks before subclass checks; bool before int. */
    if (obj == Py_None)
        return put_head(e, 0x0A, path);
    if (obj == Py_True || obj == Py_False) {
        if (put_head(e, 0x08, path) < 0)
            return -1;
        return put_byte(e, obj == Py_True, path);
    }
    if (PyLong_CheckExact(obj))
        return enc_int(e, obj, path);
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL)
            return data_error_from(st, path, "cannot encode a string as UTF-8");
        if (put_head(e, 0x02, path) < 0)
            return -1;
        return put_string(e, s, (size_t)n, path);
    }
    if (PyFloat_Check(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (put_head(e, 0x01, path) < 0)
            return -1;
        return put_i64(e, bits, path);
    }
    if (PyDict_Check(obj)) {
        if (put_head(e, 0x03, path) < 0)
            return -1;
        return enc_document_body(e, obj, path);
    }
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        if (put_head(e, 0x04, path) < 0)
            return -1;
        return enc_array_body(e, obj, path);
    }
    if (Py_IS_TYPE(obj, st->ObjectIdType)) {
        if (put_head(e, 0x07, path) < 0)
            return -1;
        return put(e, ((kpy_objectid *)obj)->oid, 12, path);
    }
    if (PyDateTime_Check(obj)) {
        int64_t ms;
        if (keel__py_datetime_to_millis(st, obj, &ms) < 0)
            return data_error_from(st, path, "cannot convert the datetime to UTC");
        if (put_head(e, 0x09, path) < 0)
            return -1;
        return put_i64(e, (uint64_t)ms, path);
    }
    if (PyBytes_Check(obj) && !Py_IS_TYPE(obj, st->RawDocumentType)) {
        /* pymongo's bson.Binary is a bytes subclass with a .subtype. */
        long subtype = 0;
        char name[64];
        if (!PyBytes_CheckExact(obj) && pymongo_class(obj, name, sizeof name) &&
            strcmp(name, "Binary") == 0) {
            PyObject *sub = PyObject_GetAttrString(obj, "subtype");
            subtype = sub != NULL ? PyLong_AsLong(sub) : -1;
            Py_XDECREF(sub);
            if (subtype < 0 || subtype > 255) {
                if (PyErr_Occurred())
                    return data_error_from(st, path, "bson.Binary (pymongo's) has no subtype");
                return data_error(st, path, "bson.Binary (pymongo's) subtype is not 0-255");
            }
        }
        if (put_head(e, 0x05, path) < 0)
            return -1;
        return put_binary(e, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj),
                          (unsigned char)subtype, path);
    }
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->UUID))
        return enc_uuid(e, obj, path);
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->Decimal)) {
        unsigned char d[16];
        if (decimal_to_128(st, obj, path, d) < 0 || put_head(e, 0x13, path) < 0)
            return -1;
        return put(e, d, 16, path);
    }
    if (PyLong_Check(obj)) /* int subclasses such as IntEnum */
        return enc_int(e, obj, path);
    if (Py_IS_TYPE(obj, st->RawDocumentType))
        return enc_raw(e, obj, path);
    if (Py_IS_TYPE(obj, st->RegexType)) {
        kpy_regex *r = (kpy_regex *)obj;
        if (put_head(e, 0x0B, path) < 0 ||
            put_cstring(e, r->pattern, "a regular expression", path) < 0)
            return -1;
        return put_cstring(e, r->flags, "regular expression flags", path);
    }
    if (Py_IS_TYPE(obj, st->TimestampType)) {
        if (put_head(e, 0x11, path) < 0)
            return -1;
        return put_i64(e, timestamp_value((kpy_timestamp *)obj), path);
    }
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->re_Pattern))
        return enc_pattern(e, obj, path);
    if (PyByteArray_Check(obj) || PyMemoryView_Check(obj)) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return data_error_from(st, path, "unusable buffer");
        int rc = put_head(e, 0x05, path);
        if (rc == 0)
            rc = put_binary(e, view.buf, (size_t)view.len, 0, path);
        PyBuffer_Release(&view);
        return rc;
    }
    int is_mapping = PyObject_IsInstance(obj, st->Mapping);
    if (is_mapping < 0)
        return -1;
    if (is_mapping) {
        if (put_head(e, 0x03, path) < 0)
            return -1;
        return enc_document_body(e, obj, path);
    }
    int pm = enc_pymongo(e, obj, path);
    if (pm <= 0)
        return pm;
    char msg[200];
    if (PyDate_Check(obj))
        snprintf(msg, sizeof msg,
                 "cannot encode a datetime.date: BSON has datetimes only "
                 "(use datetime.datetime)");
    else
        snprintf(msg, sizeof msg, "cannot encode an object of type %.100s as BSON",
                 Py_TYPE(obj)->tp_name);
    return data_error(st, path, msg);
}

PyObject *keel__py_bson_encode(kpy_state *st, PyObject *doc, size_t limit) {
    if (!PyDict_Check(doc)) {
        char msg[160];
        snprintf(msg, sizeof msg, "a BSON document must be a dict, not %.100s",
                 Py_TYPE(doc)->tp_name);
        data_error(st, NULL, msg);
        return NULL;
    }
    enc e = { st, NULL, 0, 0, limit, 0 };
    PyObject *out = NULL;
    Py_INCREF(doc);
    if (enc_document_body(&e, doc, NULL) == 0)
        out = PyBytes_FromStringAndSize((const char *)e.buf, (Py_ssize_t)e.len);
    Py_DECREF(doc);
    PyMem_Free(e.buf);
    return out;
}

PyObject *keel__py_mod_bson_encode(PyObject *module, PyObject *doc) {
    return keel__py_bson_encode(PyModule_GetState(module), doc, KPY_BSON_MAX_DOCUMENT);
}

/* ---- decoding ---- */

struct slice_array;

typedef struct dec {
    kpy_state *st;
    int depth;
    /* Decoding in slices: large arrays near the top are left to keel__py_bson_slices_step. */
    struct kpy_bson_slices *slices;
} dec;

static int slices_defer(dec *d, const unsigned char *p, size_t len, const kpy_path *path,
                        PyObject **out);

static PyObject *malformed(dec *d, const kpy_path *path, const char *why) {
    char msg[200];
    snprintf(msg, sizeof msg, "malformed BSON: %s", why);
    data_error(d->st, path, msg);
    return NULL;
}

static const char *type_name(unsigned char t) {
    switch (t) {
    case 0x06:
        return "undefined";
    case 0x0C:
        return "DBPointer";
    case 0x0D:
        return "JavaScript code";
    case 0x0E:
        return "symbol";
    case 0x0F:
        return "JavaScript code with scope";
    case 0x7F:
        return "MaxKey";
    case 0xFF:
        return "MinKey";
    default:
        return "unknown";
    }
}

static PyObject *dec_document(dec *d, const unsigned char *p, size_t len, const kpy_path *path,
                              int array);

/* The length of a cstring starting at p (without its NUL), or -1 when unterminated. */
static Py_ssize_t cstring_len(const unsigned char *p, size_t avail) {
    const unsigned char *z = memchr(p, 0, avail);
    return z != NULL ? (Py_ssize_t)(z - p) : -1;
}

static PyObject *dec_utf8(dec *d, const unsigned char *s, size_t n, const kpy_path *path) {
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, NULL);
    if (o == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        data_error_from(d->st, path, "a string is not valid UTF-8");
        return NULL;
    }
    return o;
}

/* Decodes the value of type t at p (avail bytes left); *used is set to its size. */
static PyObject *dec_value(dec *d, unsigned char t, const unsigned char *p, size_t avail,
                           const kpy_path *path, size_t *used) {
    kpy_state *st = d->st;
    switch (t) {
    case 0x01: {
        if (avail < 8)
            return malformed(d, path, "truncated double");
        uint64_t bits = get_le64(p);
        double v;
        memcpy(&v, &bits, 8);
        *used = 8;
        return PyFloat_FromDouble(v);
    }
    case 0x02: {
        if (avail < 5)
            return malformed(d, path, "truncated string");
        uint32_t n = get_le32(p);
        if (n < 1 || n > INT32_MAX || n > avail - 4 || p[4 + n - 1] != 0)
            return malformed(d, path, "bad string length");
        *used = 4 + (size_t)n;
        return dec_utf8(d, p + 4, n - 1, path);
    }
    case 0x03:
    case 0x04: {
        if (avail < 5)
            return malformed(d, path, "truncated document");
        uint32_t n = get_le32(p);
        if (n < 5 || n > INT32_MAX || n > avail)
            return malformed(d, path, "bad document length");
        *used = n;
        if (t == 0x04 && d->slices != NULL) {
            PyObject *list = NULL;
            int r = slices_defer(d, p, n, path, &list);
            if (r != 0)
                return r < 0 ? NULL : list;
        }
        return dec_document(d, p, n, path, t == 0x04);
    }
    case 0x05: {
        if (avail < 5)
            return malformed(d, path, "truncated binary");
        uint32_t n = get_le32(p);
        unsigned char sub = p[4];
        if (n > INT32_MAX || n > avail - 5)
            return malformed(d, path, "bad binary length");
        *used = 5 + (size_t)n;
        const unsigned char *data = p + 5;
        if (sub == 0)
            return PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)n);
        if (sub == 2) {
            /* The old binary subtype repeats the length inside the data. */
            if (n < 4 || get_le32(data) != n - 4)
                return malformed(d, path, "bad length inside binary subtype 2");
            return PyBytes_FromStringAndSize((const char *)data + 4, (Py_ssize_t)n - 4);
        }
        if (sub == 4) {
            if (n != 16)
                return malformed(d, path, "a UUID (binary subtype 4) is not 16 bytes");
            keel_value v;
            v.type = KEEL_TYPE_UUID;
            memcpy(v.u.uuid, data, 16);
            return keel__py_value_to_py(st, &v);
        }
        char msg[120];
        snprintf(msg, sizeof msg, "unsupported BSON binary subtype 0x%02X", sub);
        data_error(st, path, msg);
        return NULL;
    }
    case 0x07:
        if (avail < 12)
            return malformed(d, path, "truncated ObjectId");
        *used = 12;
        return keel__py_objectid_new(st, p);
    case 0x08:
        if (avail < 1)
            return malformed(d, path, "truncated boolean");
        if (p[0] > 1)
            return malformed(d, path, "a boolean is neither 0 nor 1");
        *used = 1;
        return PyBool_FromLong(p[0]);
    case 0x09: {
        if (avail < 8)
            return malformed(d, path, "truncated datetime");
        *used = 8;
        PyObject *o = keel__py_datetime_from_millis(st, (int64_t)get_le64(p));
        if (o == NULL)
            data_error_from(st, path, "cannot decode a datetime");
        return o;
    }
    case 0x0A:
        *used = 0;
        Py_RETURN_NONE;
    case 0x0B: {
        Py_ssize_t n1 = cstring_len(p, avail);
        if (n1 < 0)
            return malformed(d, path, "unterminated regular expression");
        Py_ssize_t n2 = cstring_len(p + n1 + 1, avail - (size_t)n1 - 1);
        if (n2 < 0)
            return malformed(d, path, "unterminated regular expression flags");
        *used = (size_t)n1 + (size_t)n2 + 2;
        PyObject *pat = dec_utf8(d, p, (size_t)n1, path);
        if (pat == NULL)
            return NULL;
        PyObject *flags = dec_utf8(d, p + n1 + 1, (size_t)n2, path);
        if (flags == NULL) {
            Py_DECREF(pat);
            return NULL;
        }
        PyObject *r = regex_make(st->RegexType, pat, flags);
        Py_DECREF(pat);
        Py_DECREF(flags);
        if (r == NULL && PyErr_ExceptionMatches(PyExc_ValueError))
            data_error_from(st, path, "bad regular expression");
        return r;
    }
    case 0x10:
        if (avail < 4)
            return malformed(d, path, "truncated int32");
        *used = 4;
        return PyLong_FromLong((long)(int32_t)get_le32(p));
    case 0x11:
        if (avail < 8)
            return malformed(d, path, "truncated timestamp");
        *used = 8;
        return timestamp_make(st->TimestampType, get_le32(p + 4), get_le32(p));
    case 0x12:
        if (avail < 8)
            return malformed(d, path, "truncated int64");
        *used = 8;
        return PyLong_FromLongLong((long long)(int64_t)get_le64(p));
    case 0x13:
        if (avail < 16)
            return malformed(d, path, "truncated Decimal128");
        *used = 16;
        return decimal_from_128(st, p);
    default: {
        char msg[120];
        snprintf(msg, sizeof msg, "unsupported BSON type 0x%02X (%s)", t, type_name(t));
        data_error(st, path, msg);
        return NULL;
    }
    }
}

static PyObject *dec_document(dec *d, const unsigned char *p, size_t len, const kpy_path *path,
                              int array) {
    /* The caller checked len >= 5 and that the int32 prefix is len. */
    if (get_le32(p) != len)
        return malformed(d, path, "document length mismatch");
    if (p[len - 1] != 0)
        return malformed(d, path, "document not terminated by NUL");
    if (++d->depth > MAX_DEPTH) {
        d->depth--;
        return malformed(d, path, "documents are nested more than 512 levels deep");
    }
    PyObject *out = array ? PyList_New(0) : PyDict_New();
    size_t off = 4, index = 0;
    if (out == NULL)
        goto fail;
    while (off < len - 1) {
        unsigned char t = p[off++];
        Py_ssize_t klen = cstring_len(p + off, len - 1 - off);
        if (klen < 0) {
            malformed(d, path, "unterminated key");
            goto fail;
        }
        kpy_path node = { path, (const char *)p + off, (size_t)klen, 0 };
        if (array) {
            node.key = NULL;
            node.index = index;
        }
        PyObject *key = NULL;
        if (!array && (key = dec_utf8(d, p + off, (size_t)klen, path)) == NULL)
            goto fail;
        off += (size_t)klen + 1;
        size_t used = 0;
        PyObject *v = dec_value(d, t, p + off, len - 1 - off, &node, &used);
        if (v == NULL) {
            Py_XDECREF(key);
            goto fail;
        }
        off += used;
        int rc = array ? PyList_Append(out, v) : PyDict_SetItem(out, key, v);
        Py_DECREF(v);
        Py_XDECREF(key);
        if (rc < 0)
            goto fail;
        index++;
    }
    if (off != len - 1) {
        malformed(d, path, "an element runs past the end of its document");
        goto fail;
    }
    d->depth--;
    return out;
fail:
    d->depth--;
    Py_XDECREF(out);
    return NULL;
}

PyObject *keel__py_bson_decode(kpy_state *st, const char *data, size_t len) {
    dec d = { st, 0, NULL };
    const unsigned char *p = (const unsigned char *)data;
    if (len < 5 || get_le32(p) != len)
        return malformed(&d, NULL, "the document length does not match the data");
    return dec_document(&d, p, len, NULL, 0);
}

PyObject *keel__py_mod_bson_decode(PyObject *module, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = keel__py_bson_decode(PyModule_GetState(module), view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return r;
}

/* ---- decoding in slices ---- */

/*
 * A reply of 100,000 small documents takes some 100 ms to turn into dicts: done in one go inside
 * a completion, that holds the asyncio loop as long. The arrays that hold a reply's bulk (a
 * cursor's firstBatch / nextBatch, a distinct's values) sit at its first two levels, so those
 * arrays, when large, are decoded element by element, in as many steps as a deadline allows. The
 * dict of the whole reply is built first, with each deferred array as an empty list at its place
 * (so key order is kept); the steps fill them in order. The result equals keel__py_bson_decode's.
 */

/* Arrays at these levels (1: the document's own fields) and of this size or more are deferred. */
#define SLICE_MAX_LEVEL 2
#define SLICE_MIN_BYTES 16384
/* More deferred arrays than this are decoded in place (a reply has one or two). */
#define SLICE_MAX_ARRAYS 16

typedef struct slice_array {
    PyObject *list;         /* the list being filled (untracked until complete): strong */
    const unsigned char *p; /* the array document, inside the data */
    size_t len, off, index;
    int depth;                      /* the decoder's depth inside the array */
    kpy_path path[SLICE_MAX_LEVEL]; /* the array's key path, root first (keys in the data) */
    int npath;
} slice_array;

struct kpy_bson_slices {
    kpy_state *st;
    const unsigned char *data;
    size_t len;
    PyObject *result; /* the dict, once its first level is decoded */
    slice_array arrays[SLICE_MAX_ARRAYS];
    int narrays, next; /* arrays[next] is the one being filled */
};

/* 1 with *out a new empty list when the array at p is deferred, 0 to decode it in place, -1. */
static int slices_defer(dec *d, const unsigned char *p, size_t len, const kpy_path *path,
                        PyObject **out) {
    kpy_bson_slices *s = d->slices;
    if (d->depth > SLICE_MAX_LEVEL || len < SLICE_MIN_BYTES || s->narrays == SLICE_MAX_ARRAYS)
        return 0;
    /* The checks dec_document makes before it reads an element (the length is p's own). */
    if (p[len - 1] != 0) {
        malformed(d, path, "document not terminated by NUL");
        return -1;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return -1;
    /* Untracked while it is filled, so that a full collection in the middle of a slice does not
     * walk the documents so far (as op.c does with fetch()'s list); tracked again once complete
     * (or freed). Nothing else refers to it before the reply is handed over. */
    PyObject_GC_UnTrack(list);
    slice_array *a = &s->arrays[s->narrays++];
    a->list = Py_NewRef(list);
    a->p = p;
    a->len = len;
    a->off = 4;
    a->index = 0;
    a->depth = d->depth + 1;
    /* The path is a chain on the C stack, leaf first: copy it root first, re-linked. */
    int n = 0;
    for (const kpy_path *q = path; q != NULL && n < SLICE_MAX_LEVEL; q = q->parent)
        n++;
    a->npath = n;
    const kpy_path *q = path;
    for (int i = n - 1; i >= 0; i--, q = q->parent) {
        a->path[i] = *q;
        a->path[i].parent = i > 0 ? &a->path[i - 1] : NULL;
    }
    *out = list;
    return 1;
}

static int64_t slices_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

kpy_bson_slices *keel__py_bson_slices_new(kpy_state *st, const char *data, size_t len) {
    kpy_bson_slices *s = PyMem_Calloc(1, sizeof *s);
    if (s == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    s->st = st;
    s->data = (const unsigned char *)data;
    s->len = len;
    return s;
}

/* Decodes elements of arrays[next] and those after it until done or past deadline_us. */
static int slices_fill(kpy_bson_slices *s, int64_t deadline_us) {
    dec d = { s->st, 0, NULL };
    while (s->next < s->narrays) {
        slice_array *a = &s->arrays[s->next];
        const unsigned char *p = a->p;
        size_t len = a->len;
        const kpy_path *path = a->npath > 0 ? &a->path[a->npath - 1] : NULL;
        d.depth = a->depth;
        while (a->off < len - 1) {
            size_t off = a->off;
            unsigned char t = p[off++];
            Py_ssize_t klen = cstring_len(p + off, len - 1 - off);
            if (klen < 0) {
                malformed(&d, path, "unterminated key");
                return -1;
            }
            kpy_path node = { path, NULL, 0, a->index };
            off += (size_t)klen + 1;
            size_t used = 0;
            PyObject *v = dec_value(&d, t, p + off, len - 1 - off, &node, &used);
            if (v == NULL)
                return -1;
            int rc = PyList_Append(a->list, v);
            Py_DECREF(v);
            if (rc < 0)
                return -1;
            a->off = off + used;
            a->index++;
            /* Checked after an element, so that every step makes progress. */
            if (a->off < len - 1 && slices_now_us() >= deadline_us)
                return 0;
        }
        if (a->off != len - 1) {
            malformed(&d, path, "an element runs past the end of its document");
            return -1;
        }
        PyObject_GC_Track(a->list);
        s->next++;
    }
    return 1;
}

int keel__py_bson_slices_step(kpy_bson_slices *s, int64_t budget_us) {
    int64_t deadline = slices_now_us() + budget_us;
    if (s->result == NULL) {
        dec d = { s->st, 0, s };
        if (s->len < 5 || get_le32(s->data) != s->len) {
            malformed(&d, NULL, "the document length does not match the data");
            return -1;
        }
        if ((s->result = dec_document(&d, s->data, s->len, NULL, 0)) == NULL)
            return -1;
    }
    return slices_fill(s, deadline);
}

PyObject *keel__py_bson_slices_result(kpy_bson_slices *s) { return Py_XNewRef(s->result); }

int keel__py_bson_slices_traverse(kpy_bson_slices *s, visitproc visit, void *arg) {
    if (s == NULL)
        return 0;
    Py_VISIT(s->result);
    for (int i = 0; i < s->narrays; i++)
        Py_VISIT(s->arrays[i].list);
    return 0;
}

void keel__py_bson_slices_free(kpy_bson_slices *s, void (*let_go)(PyObject *list, void *ctx),
                               void *ctx) {
    if (s == NULL)
        return;
    /* The dict first: a list it no longer holds is the decoding's alone, for let_go to free. */
    Py_CLEAR(s->result);
    for (int i = 0; i < s->narrays; i++) {
        PyObject *list = s->arrays[i].list;
        s->arrays[i].list = NULL;
        if (list == NULL)
            continue;
        if (let_go != NULL)
            let_go(list, ctx);
        else
            Py_DECREF(list);
    }
    PyMem_Free(s);
}

PyObject *keel__py_mod_bson_decode_sliced(PyObject *module, PyObject *const *args,
                                          Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_bson_decode_sliced(data, budget_us)");
        return NULL;
    }
    long long budget = PyLong_AsLongLong(args[1]);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    kpy_bson_slices *s =
        keel__py_bson_slices_new(PyModule_GetState(module), view.buf, (size_t)view.len);
    if (s != NULL) {
        long steps = 0;
        int r;
        do
            steps++;
        while ((r = keel__py_bson_slices_step(s, budget)) == 0);
        PyObject *doc = r > 0 ? keel__py_bson_slices_result(s) : NULL;
        if (doc != NULL) {
            out = Py_BuildValue("(Nl)", doc, steps);
        }
        keel__py_bson_slices_free(s, NULL, NULL);
    }
    PyBuffer_Release(&view);
    return out;
}
