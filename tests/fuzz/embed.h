/* tests/fuzz/embed.h - what the targets of the extension's decoders share: an embedded CPython with keel._native. */
#ifndef KEEL_TESTS_FUZZ_EMBED_H
#define KEEL_TESTS_FUZZ_EMBED_H

#include "module.h"

#include "fuzz.h"

/*
 * The targets link the extension's sources (python/keel/_native) with libkeel and an embedded
 * interpreter, and create keel._native from its module definition, as an import would.
 *
 * LeakSanitizer cannot tell an interpreter's long-lived objects from leaks, so it is off in these
 * targets; embed_check_leaks counts the interpreter's own allocated blocks instead.
 */
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static PyObject *embed_module, *embed_allocated_blocks, *embed_gc_collect;
static kpy_state *embed_state;

/* Aborts with the Python exception printed. */
static void python_failure(const char *what) {
    fprintf(stderr, "fuzz: %s\n", what);
    if (PyErr_Occurred())
        PyErr_Print();
    abort();
}

static PyObject *embed_attr(const char *module, const char *name) {
    PyObject *m = PyImport_ImportModule(module);
    PyObject *a = m ? PyObject_GetAttrString(m, name) : NULL;
    Py_XDECREF(m);
    if (!a)
        python_failure(name);
    return a;
}

/* Starts the interpreter (isolated, with the build's Python installation) and keel._native. */
static void embed_start(void) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    /* A fixed hash seed: with random ones, set and dict internals differ from run to run, and
     * with them what the extension's code does, so a smoke run (tests/fuzz/run) would not repeat
     * itself. */
    config.use_hash_seed = 1;
    config.hash_seed = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, KEEL_FUZZ_PYTHONHOME);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    PyObject *spec_type = embed_attr("importlib.machinery", "ModuleSpec");
    PyObject *spec = PyObject_CallFunction(spec_type, "sO", "keel._native", Py_None);
    embed_module = spec ? PyModule_FromDefAndSpec(&keel__py_moduledef, spec) : NULL;
    if (!embed_module || PyModule_ExecDef(embed_module, &keel__py_moduledef) < 0)
        python_failure("cannot create keel._native");
    embed_state = PyModule_GetState(embed_module);
    embed_allocated_blocks = embed_attr("sys", "getallocatedblocks");
    embed_gc_collect = embed_attr("gc", "collect");
    Py_DECREF(spec);
    Py_DECREF(spec_type);
}

/* The number of memory blocks the interpreter has allocated (sys.getallocatedblocks()). */
static Py_ssize_t embed_blocks(void) {
    PyObject *n = PyObject_CallNoArgs(embed_allocated_blocks);
    if (!n)
        python_failure("sys.getallocatedblocks failed");
    Py_ssize_t v = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return v;
}

static void embed_collect(void) {
    PyObject *r = PyObject_CallNoArgs(embed_gc_collect);
    if (!r)
        python_failure("gc.collect failed");
    Py_DECREF(r);
}

/*
 * Runs round(data, size) three times: twice to warm caches and free lists, then once more, after
 * which the interpreter must not hold more blocks than before it; when it does, once more after
 * a garbage collection (the decimal module, for one, leaves cyclic garbage).
 */
static void embed_check_leaks(void (*round)(const uint8_t *, size_t), const uint8_t *data,
                              size_t size) {
    round(data, size);
    round(data, size);
    Py_ssize_t warm = embed_blocks();
    round(data, size);
    Py_ssize_t after = embed_blocks();
    if (after != warm) {
        embed_collect();
        warm = embed_blocks();
        round(data, size);
        embed_collect();
        after = embed_blocks();
    }
    if (after != warm)
        fprintf(stderr, "fuzz: %zd Python blocks leaked\n", after - warm);
    FUZZ_ASSERT(after == warm);
}

#endif
