/* tests/fuzz/fuzz_json.c - libFuzzer target: the extension's JSON decoder of server output, against json.loads. */
#include "embed.h"

/*
 * JSON and JSONB columns (PostgreSQL, MySQL) reach Python through python/keel/_native/json.c, a
 * direct decoder for the common shape of server output that promises never to disagree with
 * json.loads: for anything it does not handle it declines (NULL without an exception) and the
 * conversion falls back to json's scanner, then to json.loads (convert.c). The input is the
 * text of a JSON value as a server would send it. Checked, besides sanitizer reports:
 *  - the direct decoder either declines, or gives exactly what json.loads gives (same types and
 *    values: compared through repr, which tells 1 from 1.0 and True, and -0.0 from 0.0), and it
 *    declines whatever json.loads refuses or is not UTF-8;
 *  - the whole conversion of a JSON value (keel__py_value_to_py) gives json.loads' value, or an
 *    error when json.loads has one;
 *  - no Python object leaks (embed_check_leaks).
 */

static PyObject *loads;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    embed_start();
    loads = embed_attr("json", "loads");
    return 0;
}

/* repr(o) as a new str, aborting on failure. */
static PyObject *repr_of(PyObject *o) {
    PyObject *r = PyObject_Repr(o);
    if (!r)
        python_failure("repr failed");
    return r;
}

static void same_value(PyObject *got, PyObject *want, const char *what) {
    PyObject *a = repr_of(got), *b = repr_of(want);
    int same = PyUnicode_Compare(a, b) == 0;
    if (!same) {
        fprintf(stderr, "fuzz_json: %s gives %s, json.loads %s\n", what, PyUnicode_AsUTF8(a),
                PyUnicode_AsUTF8(b));
        abort();
    }
    Py_DECREF(a);
    Py_DECREF(b);
}

static void check(const uint8_t *data, size_t size) {
    /* What json.loads makes of the text (NULL when it refuses it or it is not UTF-8). */
    PyObject *want = NULL;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)data, (Py_ssize_t)size, NULL);
    if (text) {
        want = PyObject_CallOneArg(loads, text);
        Py_DECREF(text);
    }
    if (!want) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError) ||
            PyErr_ExceptionMatches(PyExc_RecursionError))
            python_failure("json.loads could not run");
        PyErr_Clear();
    }

    PyObject *fast = keel__py_json_decode(embed_state, (const char *)data, size);
    if (!fast && PyErr_Occurred())
        python_failure("the direct decoder raised");
    if (fast) {
        if (!want) {
            fprintf(stderr, "fuzz_json: the direct decoder accepts what json.loads refuses\n");
            abort();
        }
        same_value(fast, want, "the direct decoder");
        Py_DECREF(fast);
    }

    keel_value v;
    memset(&v, 0, sizeof v);
    v.type = KEEL_TYPE_JSON;
    v.u.str.ptr = (const char *)data;
    v.u.str.len = size;
    PyObject *got = keel__py_value_to_py(embed_state, &v);
    if (got) {
        if (!want) {
            fprintf(stderr, "fuzz_json: a JSON value converts although json.loads refuses it\n");
            abort();
        }
        same_value(got, want, "the conversion of a JSON value");
        Py_DECREF(got);
    } else {
        if (want) {
            fprintf(stderr, "fuzz_json: a JSON value json.loads reads does not convert\n");
            python_failure("conversion failed");
        }
        PyErr_Clear();
    }
    Py_XDECREF(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    embed_check_leaks(check, data, size);
    return 0;
}
