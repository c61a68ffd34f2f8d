/* python/keel/_native/module.c - multi-phase initialisation, module state, exceptions and error mapping. */
#include "module.h"

#include <structmember.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

kpy_state *keel__py_state_of_type(PyTypeObject *tp) {
    PyObject *m = PyType_GetModuleByDef(tp, &keel__py_moduledef);
    if (m == NULL)
        return NULL;
    return (kpy_state *)PyModule_GetState(m);
}

/* ---- errors ---- */

/* The exception class for a status, following the table of the Python API contract. */
static PyObject *error_class(kpy_state *st, keel_status code) {
    switch (code) {
    case KEEL_ERR_NOMEM:
        return PyExc_MemoryError;
    case KEEL_ERR_INVALID_ARGUMENT:
    case KEEL_ERR_CLOSED:
    case KEEL_ERR_BUSY:
        return st->InterfaceError;
    case KEEL_ERR_CONFIG:
    case KEEL_ERR_URL:
        return st->ConfigError;
    case KEEL_ERR_UNKNOWN_DATABASE:
        return st->UnknownDatabaseError;
    case KEEL_ERR_CONNECT:
        return st->ConnectError;
    case KEEL_ERR_CONNECTION_LOST:
        return st->ConnectionLost;
    case KEEL_ERR_POOL_TIMEOUT:
        return st->PoolTimeout;
    case KEEL_ERR_TIMEOUT:
        return st->QueryTimeout;
    case KEEL_ERR_IO:
    case KEEL_ERR_OPERATIONAL:
        return st->OperationalError;
    case KEEL_ERR_CANCELLED:
        return st->QueryCanceledError;
    case KEEL_ERR_PROGRAMMING:
    case KEEL_ERR_PARAMETERS:
        return st->ProgrammingError;
    case KEEL_ERR_INTEGRITY:
        return st->IntegrityError;
    case KEEL_ERR_DATA:
        return st->DataError;
    case KEEL_ERR_TRANSACTION:
    case KEEL_ERR_INTERNAL:
        return st->InternalError;
    case KEEL_ERR_UNSUPPORTED:
        return st->NotSupportedError;
    case KEEL_ERR_DATABASE:
    case KEEL_OK:
        break;
    }
    return st->DatabaseError;
}

/* Sets attribute name of exc to s, or None when s is empty. */
static int set_str_attr(PyObject *exc, const char *name, const char *s) {
    PyObject *v;
    if (s == NULL || s[0] == '\0') {
        v = Py_NewRef(Py_None);
    } else {
        v = PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
        if (v == NULL)
            return -1;
    }
    int rc = PyObject_SetAttrString(exc, name, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *error_new_of(PyObject *cls, const keel_error *err) {
    const char *text = err->message[0] != '\0' ? err->message : keel_strerror(err->code);
    PyObject *msg = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (msg == NULL)
        return NULL;
    PyObject *exc = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (exc == NULL)
        return NULL;
    if (cls == PyExc_MemoryError)
        return exc;
    if (set_str_attr(exc, "sqlstate", err->sqlstate) < 0 ||
        set_str_attr(exc, "database", err->database) < 0 ||
        set_str_attr(exc, "engine", err->engine) < 0 ||
        set_str_attr(exc, "code", keel_status_name(err->code)) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    if (err->server_code != 0) {
        PyObject *code = PyLong_FromLongLong(err->server_code);
        if (code == NULL || PyObject_SetAttrString(exc, "server_code", code) < 0) {
            Py_XDECREF(code);
            Py_DECREF(exc);
            return NULL;
        }
        Py_DECREF(code);
    }
    /* The server's fields: only those it reported, the class's None standing for the rest. */
    const struct {
        const char *name;
        const char *value;
    } fields[] = {
        { "detail", err->detail },
        { "hint", err->hint },
        { "schema_name", err->schema_name },
        { "table_name", err->table_name },
        { "column_name", err->column_name },
        { "constraint_name", err->constraint_name },
        { "datatype_name", err->datatype_name },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].value[0] != '\0' && set_str_attr(exc, fields[i].name, fields[i].value) < 0) {
            Py_DECREF(exc);
            return NULL;
        }
    return exc;
}

/* The class of a failed statement's error: IntegrityError's subclass for the kind of constraint
 * violated, when the engine said which. */
static PyObject *statement_error_class(kpy_state *st, const keel_error *err) {
    if (err->code == KEEL_ERR_INTEGRITY)
        switch (err->violation) {
        case KEEL_VIOLATION_UNIQUE:
            return st->UniqueViolationError;
        case KEEL_VIOLATION_FOREIGN_KEY:
            return st->ForeignKeyViolationError;
        case KEEL_VIOLATION_NOT_NULL:
            return st->NotNullViolationError;
        case KEEL_VIOLATION_CHECK:
            return st->CheckViolationError;
        case KEEL_VIOLATION_EXCLUSION:
            return st->ExclusionViolationError;
        default:
            break;
        }
    return error_class(st, err->code);
}

PyObject *keel__py_error_new(kpy_state *st, const keel_error *err) {
    return error_new_of(statement_error_class(st, err), err);
}

PyObject *keel__py_connect_error_new(kpy_state *st, const keel_error *err) {
    /* Catching ConnectError must catch every failure to get a connection, a silent server's
     * included; the code (KEEL_ERR_TIMEOUT) still tells a deadline apart. */
    PyObject *cls = err->code == KEEL_ERR_TIMEOUT ? st->ConnectError : error_class(st, err->code);
    return error_new_of(cls, err);
}

PyObject *keel__py_error_raise(kpy_state *st, const keel_error *err) {
    PyObject *exc = keel__py_error_new(st, err);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *keel__py_raise(kpy_state *st, keel_status code, const char *database, const char *fmt,
                         ...) {
    keel_error err;
    keel_error_clear(&err);
    err.code = code;
    if (database != NULL)
        snprintf(err.database, sizeof err.database, "%s", database);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    return keel__py_error_raise(st, &err);
}

/* ---- module functions ---- */

static PyObject *mod_set_connection_class(PyObject *module, PyObject *cls) {
    kpy_state *st = PyModule_GetState(module);
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, st->ConnectionType)) {
        PyErr_SetString(PyExc_TypeError, "expected a subclass of keel._native.Connection");
        return NULL;
    }
    Py_INCREF(cls);
    Py_SETREF(st->connection_class, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

static PyObject *mod_libkeel_version(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(keel_version());
}

static PyObject *mod_check_timeout(PyObject *module, PyObject *timeout) {
    (void)module;
    double seconds;
    if (keel__py_timeout_arg(timeout, &seconds) < 0)
        return NULL;
    if (seconds == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(seconds);
}

static PyMethodDef module_methods[] = {
    { "set_connection_class", mod_set_connection_class, METH_O,
      "Sets the class instantiated for leased connections (a subclass of Connection)." },
    { "check_timeout", mod_check_timeout, METH_O,
      "check_timeout(timeout) -> float | None: a timeout= argument checked as the query methods "
      "check it (TypeError / ValueError naming timeout)." },
    { "libkeel_version", mod_libkeel_version, METH_NOARGS,
      "The version of the libkeel linked into the extension." },
    { "bson_encode", keel__py_mod_bson_encode, METH_O,
      "bson_encode(doc: dict) -> bytes: one BSON document (at most 16 MiB); DataError naming the "
      "key path of a value that cannot be encoded." },
    { "bson_decode", keel__py_mod_bson_decode, METH_O,
      "bson_decode(data: bytes) -> dict: one BSON document; DataError when it is malformed or "
      "holds an unsupported type." },
    { "_let_go", keel__py_mod_let_go, METH_O,
      "_let_go(list): empties a list the caller drops a slice at a time from later iterations "
      "of the running loop (cursors' buffered documents)." },
    { "_bson_decode_sliced", (PyCFunction)(void (*)(void))keel__py_mod_bson_decode_sliced,
      METH_FASTCALL,
      "_bson_decode_sliced(data, budget_us) -> (dict, steps): bson_decode as a command's reply "
      "is decoded, in steps of budget_us microseconds (tests)." },
    { NULL, NULL, 0, NULL },
};

/* ---- initialisation ---- */

/* Creates exception class "keel.<name>" deriving from base and adds it to the module. */
static PyObject *new_exception(PyObject *m, const char *name, PyObject *base, PyObject *dict,
                               const char *doc) {
    char qual[64];
    snprintf(qual, sizeof qual, "keel.%s", name);
    PyObject *cls = PyErr_NewExceptionWithDoc(qual, doc, base, dict);
    if (cls == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, name, cls) < 0) {
        Py_DECREF(cls);
        return NULL;
    }
    return cls;
}

static int init_exceptions(PyObject *m, kpy_state *st) {
    /* Class-level defaults make the attributes exist on instances raised from Python code. */
    PyObject *dict =
        Py_BuildValue("{sOsOsOsOsOsOsOsOsOsOsOsO}", "sqlstate", Py_None, "database", Py_None,
                      "engine", Py_None, "code", Py_None, "server_code", Py_None, "detail", Py_None,
                      "hint", Py_None, "schema_name", Py_None, "table_name", Py_None, "column_name",
                      Py_None, "constraint_name", Py_None, "datatype_name", Py_None);
    if (dict == NULL)
        return -1;
    st->Error = new_exception(m, "Error", PyExc_Exception, dict,
                              "Base class of every keel error (PEP 249). Attributes: sqlstate, "
                              "database, engine, code, and what the server reported (None "
                              "otherwise): server_code, detail, hint, schema_name, table_name, "
                              "column_name, constraint_name, datatype_name.");
    Py_DECREF(dict);
    if (st->Error == NULL)
        return -1;
#define EXC(field, name, base, doc)                                                                \
    do {                                                                                           \
        st->field = new_exception(m, name, st->base, NULL, doc);                                   \
        if (st->field == NULL)                                                                     \
            return -1;                                                                             \
    } while (0)
    EXC(InterfaceError, "InterfaceError", Error,
        "Misuse of the interface: closed handles, busy connections, bad arguments.");
    EXC(ConfigError, "ConfigError", InterfaceError,
        "The configuration is invalid; the message names the key path.");
    EXC(UnknownDatabaseError, "UnknownDatabaseError", InterfaceError,
        "No database of that name is configured.");
    EXC(DatabaseError, "DatabaseError", Error, "An error reported by or about the database.");
    EXC(OperationalError, "OperationalError", DatabaseError,
        "An operational failure: connection, timeout, server resources.");
    EXC(PoolTimeout, "PoolTimeout", OperationalError,
        "No connection became free within the pool's acquire_timeout.");
    EXC(ConnectionLost, "ConnectionLost", OperationalError,
        "The server went away during an operation.");
    EXC(ConnectError, "ConnectError", OperationalError, "Could not connect or authenticate.");
    EXC(QueryCanceledError, "QueryCanceledError", OperationalError, "The statement was cancelled.");
    /* Also a built-in TimeoutError, as asyncio.timeout() and wait_for raise, so that code
     * catching timeouts of any kind catches keel's. */
    PyObject *bases = PyTuple_Pack(2, st->OperationalError, PyExc_TimeoutError);
    if (bases == NULL)
        return -1;
    st->QueryTimeout = new_exception(m, "QueryTimeout", bases, NULL,
                                     "An operation did not finish within its timeout (timeout= "
                                     "or the database's command_timeout); keel cancelled it.");
    Py_DECREF(bases);
    if (st->QueryTimeout == NULL)
        return -1;
    EXC(IntegrityError, "IntegrityError", DatabaseError,
        "A unique, foreign key, not-null or check constraint was violated.");
    /* asyncpg's names, raised on every engine: MySQL reports SQLSTATE 23000 for all of them. */
    EXC(UniqueViolationError, "UniqueViolationError", IntegrityError,
        "A primary key, unique constraint or unique index was violated.");
    EXC(ForeignKeyViolationError, "ForeignKeyViolationError", IntegrityError,
        "A foreign key constraint was violated.");
    EXC(NotNullViolationError, "NotNullViolationError", IntegrityError,
        "A NULL was written to a NOT NULL column.");
    EXC(CheckViolationError, "CheckViolationError", IntegrityError,
        "A CHECK constraint (MongoDB: a collection's validator) was violated.");
    EXC(ExclusionViolationError, "ExclusionViolationError", IntegrityError,
        "A PostgreSQL exclusion constraint was violated.");
    EXC(ProgrammingError, "ProgrammingError", DatabaseError,
        "Bad SQL, unknown table or column, wrong number of parameters.");
    EXC(DataError, "DataError", DatabaseError, "A value is invalid or out of range for its type.");
    EXC(InternalError, "InternalError", DatabaseError,
        "The transaction is out of sync, or an internal error of keel.");
    EXC(NotSupportedError, "NotSupportedError", DatabaseError,
        "The engine or build does not support this.");
#undef EXC
    return 0;
}

static PyObject *import_attr(const char *module, const char *name) {
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL)
        return NULL;
    PyObject *attr = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return attr;
}

PyObject *keel__py_range_type(kpy_state *st) {
    if (st->Range == NULL)
        st->Range = import_attr("keel._range", "Range");
    return st->Range;
}

/*
 * The offset in an instance of cls of the __slots__ attribute name, when cls itself declares it
 * as a plain object slot; 0 otherwise (no exception). Results store UUIDs through it.
 */
static Py_ssize_t slot_offset(PyObject *cls, PyObject *name) {
    if (!PyType_Check(cls))
        return 0;
    PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type))
        return 0;
    PyMemberDef *mb = ((PyMemberDescrObject *)d)->d_member;
    if (mb->type != T_OBJECT_EX || (mb->flags & READONLY) || mb->offset <= 0)
        return 0;
    return mb->offset;
}

static int init_imports(kpy_state *st) {
    if ((st->Decimal = import_attr("decimal", "Decimal")) == NULL ||
        (st->UUID = import_attr("uuid", "UUID")) == NULL ||
        (st->json_loads = import_attr("json", "loads")) == NULL ||
        (st->json_scan = import_attr("json", "_default_decoder")) == NULL ||
        (st->Future = import_attr("asyncio", "Future")) == NULL ||
        (st->get_running_loop = import_attr("asyncio", "_get_running_loop")) == NULL ||
        (st->ip_address = import_attr("ipaddress", "ip_address")) == NULL ||
        (st->ip_interface = import_attr("ipaddress", "ip_interface")) == NULL ||
        (st->ip_network = import_attr("ipaddress", "ip_network")) == NULL ||
        (st->Enum = import_attr("enum", "Enum")) == NULL)
        return -1;
    PyObject *ipa4 = import_attr("ipaddress", "IPv4Address"),
             *ipa6 = import_attr("ipaddress", "IPv6Address"),
             *ipi4 = import_attr("ipaddress", "IPv4Interface"),
             *ipi6 = import_attr("ipaddress", "IPv6Interface"),
             *ipn4 = import_attr("ipaddress", "IPv4Network"),
             *ipn6 = import_attr("ipaddress", "IPv6Network");
    if (ipa4 && ipa6 && ipi4 && ipi6 && ipn4 && ipn6) {
        st->ip_hosts = PyTuple_Pack(4, ipa4, ipa6, ipi4, ipi6);
        st->ip_networks = PyTuple_Pack(2, ipn4, ipn6);
    }
    Py_XDECREF(ipa4);
    Py_XDECREF(ipa6);
    Py_XDECREF(ipi4);
    Py_XDECREF(ipi6);
    Py_XDECREF(ipn4);
    Py_XDECREF(ipn6);
    if (st->ip_hosts == NULL || st->ip_networks == NULL)
        return -1;
    /* json.loads(s) is _default_decoder.decode(s): its scanner alone, without the Python frames
     * and whitespace regexes around it, is what decoding a server's JSON needs. */
    PyObject *decoder = st->json_scan;
    st->json_scan = PyObject_GetAttrString(decoder, "scan_once");
    Py_DECREF(decoder);
    if (st->json_scan == NULL)
        return -1;
    PyObject *safe = import_attr("uuid", "SafeUUID");
    if (safe == NULL)
        return -1;
    st->uuid_unknown = PyObject_GetAttrString(safe, "unknown");
    Py_DECREF(safe);
    if (st->uuid_unknown == NULL)
        return -1;
    if ((st->Mapping = import_attr("collections.abc", "Mapping")) == NULL ||
        (st->re_Pattern = import_attr("re", "Pattern")) == NULL)
        return -1;
    if ((st->future_set_result = PyObject_GetAttrString(st->Future, "set_result")) == NULL ||
        (st->future_set_exception = PyObject_GetAttrString(st->Future, "set_exception")) == NULL)
        return -1;
    if ((st->empty_tuple = PyTuple_New(0)) == NULL ||
        (st->kw_loop = Py_BuildValue("(s)", "loop")) == NULL)
        return -1;
#define INTERN(field, text)                                                                        \
    if ((st->field = PyUnicode_InternFromString(text)) == NULL)                                    \
        return -1;
    INTERN(s_add_reader, "add_reader");
    INTERN(s_remove_reader, "remove_reader");
    INTERN(s_add_writer, "add_writer");
    INTERN(s_remove_writer, "remove_writer");
    INTERN(s_call_at, "call_at");
    INTERN(s_call_soon, "call_soon");
    INTERN(s_time, "time");
    INTERN(s_cancel, "cancel");
    INTERN(s_int, "int");
    INTERN(s_is_safe, "is_safe");
    INTERN(s_utcoffset, "utcoffset");
    INTERN(s_as_tuple, "as_tuple");
    INTERN(s_bytes, "bytes");
    INTERN(s_pattern, "pattern");
    INTERN(s_flags, "flags");
#undef INTERN
    st->uuid_int_offset = slot_offset(st->UUID, st->s_int);
    st->uuid_safe_offset = slot_offset(st->UUID, st->s_is_safe);
    if (PyErr_Occurred())
        return -1;
    return 0;
}

static PyTypeObject *new_type(PyObject *m, PyType_Spec *spec, PyObject *base, int add) {
    PyObject *tp = PyType_FromModuleAndSpec(m, spec, base);
    if (tp == NULL)
        return NULL;
    if (add) {
        const char *dot = strrchr(spec->name, '.');
        if (PyModule_AddObjectRef(m, dot != NULL ? dot + 1 : spec->name, tp) < 0) {
            Py_DECREF(tp);
            return NULL;
        }
    }
    return (PyTypeObject *)tp;
}

static int module_exec(PyObject *m) {
    kpy_state *st = PyModule_GetState(m);
    if (keel__py_convert_init() < 0)
        return -1;
    if (init_exceptions(m, st) < 0 || init_imports(st) < 0 || keel__py_json_encoder_init(m, st) < 0)
        return -1;
    if ((st->RecordType = new_type(m, &keel__py_record_spec, NULL, 1)) == NULL ||
        (st->DatabaseType = new_type(m, &keel__py_database_spec, NULL, 1)) == NULL ||
        (st->ConnectionType = new_type(m, &keel__py_connection_spec, NULL, 1)) == NULL ||
        (st->OpType = new_type(m, &keel__py_op_spec, NULL, 1)) == NULL ||
        (st->WatcherType = new_type(m, &keel__py_watcher_spec, NULL, 0)) == NULL ||
        (st->TimerType = new_type(m, &keel__py_timer_spec, NULL, 0)) == NULL ||
        (st->DeferredType = new_type(m, &keel__py_deferred_spec, NULL, 0)) == NULL ||
        (st->ObjectIdType = new_type(m, &keel__py_objectid_spec, NULL, 1)) == NULL ||
        (st->RegexType = new_type(m, &keel__py_regex_spec, NULL, 1)) == NULL ||
        (st->TimestampType = new_type(m, &keel__py_timestamp_spec, NULL, 1)) == NULL ||
        (st->RawDocumentType =
             new_type(m, &keel__py_rawdocument_spec, (PyObject *)&PyBytes_Type, 1)) == NULL)
        return -1;
    if (keel__py_bson_init(st) < 0 || keel__py_sync_init(m) < 0)
        return -1;
    /* A Record is a read-only mapping of column names to values (it iterates over its values,
     * like asyncpg's): registered, so that what accepts any Mapping (pydantic's model_validate)
     * accepts a Record. */
    PyObject *registered = PyObject_CallMethod(st->Mapping, "register", "O", st->RecordType);
    if (registered == NULL)
        return -1;
    Py_DECREF(registered);
    st->connection_class = (PyTypeObject *)Py_NewRef(st->ConnectionType);

    struct {
        const char *name;
        long value;
    } consts[] = {
        { "MODE_FETCH", KPY_MODE_FETCH },
        { "MODE_FETCHROW", KPY_MODE_FETCHROW },
        { "MODE_FETCHVAL", KPY_MODE_FETCHVAL },
        { "MODE_EXECUTE", KPY_MODE_EXECUTE },
        { "MODE_CURSOR", KPY_MODE_CURSOR },
        { "TXN_BEGIN", KEEL_TXN_BEGIN },
        { "TXN_COMMIT", KEEL_TXN_COMMIT },
        { "TXN_ROLLBACK", KEEL_TXN_ROLLBACK },
        { "TXN_SAVEPOINT", KEEL_TXN_SAVEPOINT },
        { "TXN_RELEASE", KEEL_TXN_RELEASE },
        { "TXN_ROLLBACK_TO", KEEL_TXN_ROLLBACK_TO },
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0)
            return -1;
    return 0;
}

/* Every object reference of the state, for traverse and clear. */
#define STATE_FIELDS(X)                                                                            \
    X(Error)                                                                                       \
    X(InterfaceError)                                                                              \
    X(ConfigError)                                                                                 \
    X(UnknownDatabaseError)                                                                        \
    X(DatabaseError)                                                                               \
    X(OperationalError)                                                                            \
    X(PoolTimeout)                                                                                 \
    X(ConnectionLost)                                                                              \
    X(ConnectError)                                                                                \
    X(QueryCanceledError)                                                                          \
    X(QueryTimeout)                                                                                \
    X(IntegrityError)                                                                              \
    X(UniqueViolationError)                                                                        \
    X(ForeignKeyViolationError)                                                                    \
    X(NotNullViolationError)                                                                       \
    X(CheckViolationError)                                                                         \
    X(ExclusionViolationError)                                                                     \
    X(ProgrammingError)                                                                            \
    X(DataError)                                                                                   \
    X(InternalError)                                                                               \
    X(NotSupportedError)                                                                           \
    X(RecordType)                                                                                  \
    X(DatabaseType)                                                                                \
    X(ConnectionType)                                                                              \
    X(OpType)                                                                                      \
    X(WatcherType)                                                                                 \
    X(TimerType)                                                                                   \
    X(DeferredType)                                                                                \
    X(connection_class)                                                                            \
    X(Decimal)                                                                                     \
    X(UUID)                                                                                        \
    X(uuid_unknown)                                                                                \
    X(json_loads)                                                                                  \
    X(json_scan)                                                                                   \
    X(json_dumps)                                                                                  \
    X(Future)                                                                                      \
    X(future_set_result)                                                                           \
    X(future_set_exception)                                                                        \
    X(get_running_loop)                                                                            \
    X(empty_tuple)                                                                                 \
    X(kw_loop)                                                                                     \
    X(s_add_reader)                                                                                \
    X(s_remove_reader)                                                                             \
    X(s_add_writer)                                                                                \
    X(s_remove_writer)                                                                             \
    X(s_call_at)                                                                                   \
    X(s_call_soon)                                                                                 \
    X(s_time)                                                                                      \
    X(s_cancel)                                                                                    \
    X(s_int)                                                                                       \
    X(s_is_safe)                                                                                   \
    X(s_utcoffset)                                                                                 \
    X(ObjectIdType)                                                                                \
    X(RegexType)                                                                                   \
    X(TimestampType)                                                                               \
    X(RawDocumentType)                                                                             \
    X(Mapping)                                                                                     \
    X(re_Pattern)                                                                                  \
    X(epoch_naive)                                                                                 \
    X(epoch_utc)                                                                                   \
    X(s_as_tuple)                                                                                  \
    X(s_bytes)                                                                                     \
    X(s_pattern)                                                                                   \
    X(s_flags)                                                                                     \
    X(ip_address)                                                                                  \
    X(ip_interface)                                                                                \
    X(ip_network)                                                                                  \
    X(ip_hosts)                                                                                    \
    X(ip_networks)                                                                                 \
    X(Enum)                                                                                        \
    X(Range)

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
    kpy_state *st = PyModule_GetState(m);
    if (st == NULL)
        return 0;
#define VISIT(f) Py_VISIT(st->f);
    STATE_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int module_clear(PyObject *m) {
    kpy_state *st = PyModule_GetState(m);
    if (st == NULL)
        return 0;
#define CLEAR(f) Py_CLEAR(st->f);
    STATE_FIELDS(CLEAR)
#undef CLEAR
    /* The cached JSON keys are str objects, which the collector does not track: no traverse. */
    for (size_t i = 0; i < KPY_JSON_KEYS; i++)
        Py_CLEAR(st->json_keys[i]);
    return 0;
}

static void module_free(void *m) { module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {
    { Py_mod_exec, (void *)module_exec },
    { 0, NULL },
};

PyModuleDef keel__py_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keel._native",
    .m_doc = "The C core of keel: databases, connections and records over libkeel.",
    .m_size = sizeof(kpy_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&keel__py_moduledef); }
