/* tests/fuzz/fuzz_bson.c - libFuzzer target: the extension's BSON decoder, in an embedded CPython. */
#include "embed.h"

/*
 * BSON bytes become values in one place in keel: python/keel/_native/bson.c, which turns the
 * documents libmongoc hands over into dicts (libkeel passes them through as opaque bytes, and
 * libbson, which reads the server's replies, is libmongoc's). So this target runs the
 * extension's decoder in an embedded interpreter (embed.h).
 *
 * Besides sanitizer reports: a malformed document must raise keel.DataError and nothing else
 * (no SystemError, OverflowError, UnicodeDecodeError…); a document that decodes must encode
 * again, and encoding is a fixed point from there: encode(decode(encode(d))) == encode(d); and
 * no Python object may leak (embed_check_leaks).
 */

static PyObject *encode_fn, *data_error;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    embed_start();
    encode_fn = PyObject_GetAttrString(embed_module, "bson_encode");
    data_error = PyObject_GetAttrString(embed_module, "DataError");
    if (!encode_fn || !data_error)
        python_failure("keel._native lacks bson_encode or DataError");
    return 0;
}

/* Decodes len bytes; on an exception, requires keel.DataError, clears it and returns NULL. */
static PyObject *decode(const char *data, size_t len) {
    PyObject *r = keel__py_bson_decode(embed_state, data, len);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    embed_check_leaks(round_trip, data, size);
    return 0;
}
