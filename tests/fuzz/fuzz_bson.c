/* tests/fuzz/fuzz_bson.c - libFuzzer target: the extension's BSON decoder, in an embedded CPython. */
#include "module.h"

#include "fuzz.h"

/*
 * BSON bytes become values in one place in keel: python/keel/_native/bson.c, which turns the
 * documents libmongoc hands over into dicts (libkeel passes them through as opaque bytes, and
 * libbson, which reads the server's replies, is libmongoc's). So this target links the
 * extension's sources with libkeel and an embedded interpreter, creates keel._native from its
 * module definition, and feeds bson_decode.
 *
 * Besides sanitizer reports: a malformed document must raise keel.DataError and nothing else
 * (no SystemError, OverflowError, UnicodeDecodeError…); a document that decodes must encode
 * again, and encoding is a fixed point from there: encode(decode(encode(d))) == encode(d); and
 * no Python object may leak. LeakSanitizer cannot tell an interpreter's long-lived objects from
 * leaks, so it is off here; instead the interpreter's own count of allocated blocks must not grow
 * when the same input is processed again once caches and free lists are warm (and, when it
 * did grow, once more after a garbage collection: the decimal module leaves cyclic garbage).
 */

static PyObject *module, *encode_fn, *data_error, *allocated_blocks, *gc_collect;
static kpy_state *state;

/* The interpreter keeps objects alive on purpose until it exits: leaks are counted above. */
const char *__asan_default_options(void) { return "detect_leaks=0"; }

/* Aborts with the Python exception printed. */
static void python_failure(const char *what) {
    fprintf(stderr, "fuzz_bson: %s\n", what);
    PyErr_Print();
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, KEEL_FUZZ_PYTHONHOME);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    PyObject *machinery = PyImport_ImportModule("importlib.machinery");
    PyObject *spec =
        machinery ? PyObject_CallMethod(machinery, "ModuleSpec", "sO", "keel._native", Py_None)
                  : NULL;
    module = spec ? PyModule_FromDefAndSpec(&keel__py_moduledef, spec) : NULL;
    if (!module || PyModule_ExecDef(module, &keel__py_moduledef) < 0)
        python_failure("cannot create keel._native");
    state = PyModule_GetState(module);
    encode_fn = PyObject_GetAttrString(module, "bson_encode");
    data_error = PyObject_GetAttrString(module, "DataError");
    if (!encode_fn || !data_error)
        python_failure("keel._native lacks bson_encode or DataError");
    PyObject *sys = PyImport_ImportModule("sys");
    allocated_blocks = sys ? PyObject_GetAttrString(sys, "getallocatedblocks") : NULL;
    if (!allocated_blocks)
        python_failure("no sys.getallocatedblocks");
    Py_DECREF(sys);
    PyObject *gc = PyImport_ImportModule("gc");
    gc_collect = gc ? PyObject_GetAttrString(gc, "collect") : NULL;
    if (!gc_collect)
        python_failure("no gc.collect");
    Py_DECREF(gc);
    Py_DECREF(spec);
    Py_DECREF(machinery);
    return 0;
}

/* The number of memory blocks the interpreter has allocated (sys.getallocatedblocks()). */
static Py_ssize_t blocks(void) {
    PyObject *n = PyObject_CallNoArgs(allocated_blocks);
    if (!n)
        python_failure("sys.getallocatedblocks failed");
    Py_ssize_t v = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return v;
}

/* Decodes len bytes; on an exception, requires keel.DataError, clears it and returns NULL. */
static PyObject *decode(const char *data, size_t len) {
    PyObject *r = keel__py_bson_decode(state, data, len);
    if (!r) {
        if (!PyErr_ExceptionMatches(data_error))
            python_failure("an exception other than keel.DataError");
        PyErr_Clear();
    }
    return r;
}

static PyObject *encode(PyObject *doc, const char *what) {
    PyObject *b = PyObject_CallOneArg(encode_fn, doc);
    if (!b)
        python_failure(what);
    return b;
}

/* One round: decode the input (the fuzzer's own buffer, so ASan sees any read past its end),
 * and when it is a document, encode, decode and encode again. */
static void round_trip(const uint8_t *data, size_t size) {
    PyObject *doc = decode((const char *)data, size);
    if (!doc)
        return;
    FUZZ_ASSERT(PyDict_Check(doc));
    PyObject *b1 = encode(doc, "a decoded document does not encode");
    PyObject *doc2 = decode(PyBytes_AS_STRING(b1), (size_t)PyBytes_GET_SIZE(b1));
    if (!doc2)
        python_failure("an encoded document does not decode");
    PyObject *b2 = encode(doc2, "a decoded document does not encode the second time");
    FUZZ_ASSERT(PyBytes_GET_SIZE(b1) == PyBytes_GET_SIZE(b2));
    FUZZ_ASSERT(
        memcmp(PyBytes_AS_STRING(b1), PyBytes_AS_STRING(b2), (size_t)PyBytes_GET_SIZE(b1)) == 0);
    Py_DECREF(b2);
    Py_DECREF(doc2);
    Py_DECREF(b1);
    Py_DECREF(doc);
}

static void collect(void) {
    PyObject *r = PyObject_CallNoArgs(gc_collect);
    if (!r)
        python_failure("gc.collect failed");
    Py_DECREF(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    round_trip(data, size);
    round_trip(data, size);
    Py_ssize_t warm = blocks();
    round_trip(data, size);
    Py_ssize_t after = blocks();
    if (after != warm) {
        collect();
        warm = blocks();
        round_trip(data, size);
        collect();
        after = blocks();
    }
    if (after != warm)
        fprintf(stderr, "fuzz_bson: %zd Python blocks leaked\n", after - warm);
    FUZZ_ASSERT(after == warm);
    return 0;
}
