/* python/keel/_native/module.h - declarations shared by the files of the keel._native extension. */
#ifndef KEEL_PY_MODULE_H
#define KEEL_PY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <keel/keel.h>

/*
 * Naming: types private to the extension are kpy_*; functions shared between its files are
 * keel__py_* (internal symbols of keel start with keel__, and the py_ part keeps them apart from
 * the static libkeel linked into the same module).
 */

/* What a query completion turns its result into. */
enum {
    KPY_MODE_FETCH = 0,    /* list of Records */
    KPY_MODE_FETCHROW = 1, /* first Record or None */
    KPY_MODE_FETCHVAL = 2, /* one value of the first row, or None */
    KPY_MODE_EXECUTE = 3,  /* rows affected, as int */
    KPY_MODE_CURSOR = 4    /* rows buffered for a cursor (Op._take), the statement paused while
                              prefetch of them wait; the future yields None at the end */
};

/* Per-module state: everything the extension creates or caches lives here. */
/* JSON object keys of up to KPY_JSON_KEY_MAX ASCII bytes are shared through a cache of
 * KPY_JSON_KEYS strings in the module state (json.c). */
#define KPY_JSON_KEYS 256
#define KPY_JSON_KEY_MAX 32

typedef struct kpy_state {
    /* The PEP 249 exception hierarchy. */
    PyObject *Error;
    PyObject *InterfaceError;
    PyObject *ConfigError;
    PyObject *UnknownDatabaseError;
    PyObject *DatabaseError;
    PyObject *OperationalError;
    PyObject *PoolTimeout;
    PyObject *ConnectionLost;
    PyObject *ConnectError;
    PyObject *QueryCanceledError;
    PyObject *QueryTimeout;
    PyObject *IntegrityError;
    PyObject *UniqueViolationError;
    PyObject *ForeignKeyViolationError;
    PyObject *NotNullViolationError;
    PyObject *CheckViolationError;
    PyObject *ExclusionViolationError;
    PyObject *ProgrammingError;
    PyObject *DataError;
    PyObject *InternalError;
    PyObject *NotSupportedError;

    /* Types of the extension (heap types bound to the module). */
    PyTypeObject *RecordType;
    PyTypeObject *DatabaseType;
    PyTypeObject *ConnectionType;
    PyTypeObject *OpType;
    PyTypeObject *WatcherType;
    PyTypeObject *TimerType;
    PyTypeObject *DeferredType;
    PyTypeObject *ObjectIdType;
    PyTypeObject *RegexType;
    PyTypeObject *TimestampType;
    PyTypeObject *RawDocumentType;
    /* The class instantiated for leased connections: ConnectionType or a subclass of it. */
    PyTypeObject *connection_class;

    /* Objects from other modules, looked up once. */
    PyObject *Decimal;
    PyObject *UUID;
    PyObject *uuid_unknown; /* uuid.SafeUUID.unknown */
    PyObject *json_loads;
    PyObject *json_scan;  /* json's default decoder scan_once(str, idx) -> (value, end) */
    PyObject *json_dumps; /* json.JSONEncoder(default=keel's).encode: dicts and lists to JSON */
    /* ipaddress: the constructors of results, and the classes parameters are checked against
     * (addresses and interfaces, networks); enum.Enum, whose members go as their value. */
    PyObject *ip_address;
    PyObject *ip_interface;
    PyObject *ip_network;
    PyObject *ip_hosts;    /* (IPv4Address, IPv6Address, IPv4Interface, IPv6Interface) */
    PyObject *ip_networks; /* (IPv4Network, IPv6Network) */
    PyObject *Enum;
    PyObject *Range;  /* keel._range.Range, once keel__py_range_type has imported it */
    PyObject *Future; /* asyncio.Future */
    PyObject *future_set_result;
    PyObject *future_set_exception;
    PyObject *get_running_loop; /* asyncio._get_running_loop: the running loop or None */
    PyObject *empty_tuple;
    PyObject *kw_loop;     /* ("loop",), keyword names for Future(loop=…) */
    PyObject *Mapping;     /* collections.abc.Mapping, for BSON documents that are not dicts */
    PyObject *re_Pattern;  /* re.Pattern, encoded as a BSON regular expression */
    PyObject *epoch_naive; /* datetime(1970, 1, 1) */
    PyObject *epoch_utc;   /* datetime(1970, 1, 1, tzinfo=timezone.utc) */
    /* Offsets of uuid.UUID's `int` and `is_safe` slots in an instance, or 0 when the class does
     * not store them as plain object slots (then they are set through setattr). */
    Py_ssize_t uuid_int_offset;
    Py_ssize_t uuid_safe_offset;

    /* Interned attribute and method names. */
    PyObject *s_add_reader;
    PyObject *s_remove_reader;
    PyObject *s_add_writer;
    PyObject *s_remove_writer;
    PyObject *s_call_at;
    PyObject *s_call_soon;
    PyObject *s_time;
    PyObject *s_cancel;
    PyObject *s_int;
    PyObject *s_is_safe;
    PyObject *s_utcoffset;
    PyObject *s_as_tuple;
    PyObject *s_bytes;
    PyObject *s_pattern;
    PyObject *s_flags;

    /* Recently decoded JSON object keys, by a hash of their bytes (json.c). */
    PyObject *json_keys[KPY_JSON_KEYS];
} kpy_state;

extern PyModuleDef keel__py_moduledef;

/* The state of the module that defined tp (or a base of it); NULL with an exception if none. */
kpy_state *keel__py_state_of_type(PyTypeObject *tp);

/* keel.Range (keel._range), imported on its first use: the package imports this module, so its
 * own modules cannot be imported while this one is created (and the fuzz targets embed this
 * module without the package). A borrowed reference, or NULL with an exception set. */
PyObject *keel__py_range_type(kpy_state *st);

/* ---- errors (module.c) ---- */

/* A new exception instance for err, of the class the contract maps its code to. */
PyObject *keel__py_error_new(kpy_state *st, const keel_error *err);
/* Raises the exception for err; returns NULL for `return keel__py_error_raise(...)`. */
PyObject *keel__py_error_raise(kpy_state *st, const keel_error *err);
/* Raises an error made by the binding itself, with a code and an optional database name. */
PyObject *keel__py_raise(kpy_state *st, keel_status code, const char *database, const char *fmt,
                         ...);
/*
 * An exception for an error that ended the wait for a connection: as keel__py_error_new, except
 * that KEEL_ERR_TIMEOUT there is a connect deadline (connect_timeout), a ConnectError, not a
 * QueryTimeout (which is for the deadline of an operation).
 */
PyObject *keel__py_connect_error_new(kpy_state *st, const keel_error *err);

/* ---- timeouts (op.c) ---- */

/*
 * The timeout= argument of a query method: None (*seconds = 0: the database's command_timeout),
 * or a real number of seconds > 0 (math.inf: no deadline). 0, or -1 with TypeError / ValueError
 * naming timeout.
 */
int keel__py_timeout_arg(PyObject *obj, double *seconds);
/*
 * The arguments of a private method taking n positional arguments and then an optional timeout
 * (usage is the TypeError for another count): *timeout as keel__py_timeout_arg. 0, or -1.
 */
int keel__py_args_timeout(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t n, const char *usage,
                          double *timeout);

/* ---- conversions (convert.c) ---- */

/* Imports the datetime C API into convert.c. 0, or -1 with an exception. */
int keel__py_convert_init(void);

/*
 * Makes st->json_dumps: json.JSONEncoder(default=…).encode, whose default writes what json does
 * not (Decimal and UUID as str, dates and times in ISO 8601, pydantic models through
 * model_dump(mode="json")). 0, or -1 with an exception.
 */
int keel__py_json_encoder_init(PyObject *module, kpy_state *st);

/* A Python object for one result value; NULL with an exception (DataError when out of range). */
PyObject *keel__py_value_to_py(kpy_state *st, const keel_value *v);

/* As keel__py_value_to_py for a value of column col: through the column's decoder (its text) when
 * set_type_codec gave its type one. */
PyObject *keel__py_column_to_py(kpy_state *st, const keel_value *v, size_t col);

/*
 * The json_deserializer of the Database whose result the calling thread converts, or NULL:
 * sets it and returns the one it replaces, to be put back when the conversion is over. Kept
 * per thread (keel.sync converts on its callers' threads, and Python code run meanwhile may
 * switch threads).
 */
PyObject *keel__py_json_loads_swap(PyObject *loads);

/* The decoders of a result's columns, in force on the calling thread between begin and end. */
typedef struct kpy_decoders {
    PyObject **prev;
    size_t nprev;
    PyObject **mine; /* strong references, nmine of them (NULL for columns without one) */
    size_t nmine;
    const keel_result *prev_res; /* the result converted before (nested conversions) */
} kpy_decoders;
/* decoders is the Database's {OID: decoder} dict, or NULL. 0, or -1 with MemoryError. */
/* A statement's description (keel_conn_prepare's result) as ((type name, keel type) per
 * parameter, (column name, type name, keel type) per column), None where the engine does not
 * say. Returns a new reference, or NULL with an exception set. Does not block. */
PyObject *keel__py_description_of(const keel_result *res);
int keel__py_decoders_begin(kpy_state *st, PyObject *decoders, const keel_result *res,
                            kpy_decoders *d);
void keel__py_decoders_end(kpy_state *st, kpy_decoders *d);

/*
 * JSON text (n bytes of UTF-8) decoded straight into Python objects, for the common shape of
 * server output (json.c). NULL with an exception when out of memory; NULL without one when the
 * text is not handled here, and json.loads has to decode it (its result or error is then the
 * answer: this decoder never disagrees with it).
 */
PyObject *keel__py_json_decode(kpy_state *st, const char *s, size_t n);

#define KPY_STACK_VALUES 16
#define KPY_STACK_HOLDS 4

/*
 * Parameters converted for one submission: the snapshot of its arguments, taken when the call
 * is made (DESIGN: never later). Every object a value points into (a str's UTF-8, a bytes
 * object, the text json.dumps or str(Decimal) made, the tuple of arguments, rows copied into
 * tuples) is held by a strong reference in holds, so the values stay valid whatever Python code
 * runs afterwards: the conversion of a later value, or the caller changing its lists while the
 * operation waits for a connection. Small sets live in the struct itself (on the caller's
 * stack) so the hot path does not allocate.
 */
typedef struct kpy_params {
    keel_value *values;
    size_t nvalues;
    size_t nrows;
    size_t ncols;
    PyObject **holds;
    size_t nholds;
    size_t capholds;
    keel_value stack_values[KPY_STACK_VALUES];
    PyObject *stack_holds[KPY_STACK_HOLDS];
    /* For messages about rows: the call converting them (NULL: executemany, whose values are
     * parameters $n), and the column names of the values (a tuple of str, or NULL). */
    const char *what;
    PyObject *names;
    /* Lists (and tuples) become arrays (PostgreSQL) rather than JSON; depth counts the arrays
     * being converted, for nesting limits and messages. */
    int arrays;
    /* With arrays, for a bulk load: a keel.Range becomes a RANGE value (its bounds converted),
     * which COPY's binary encoder needs, rather than its text, which parameters send. */
    int ranges;
    int depth;
    /* The index of the element being converted in each of those arrays, for messages. */
    Py_ssize_t index[KEEL_ARRAY_MAX_DIMS];
    /* The serializer of dicts (and lists that are not arrays): json_serializer= (borrowed), or
     * NULL for keel's. */
    PyObject *json_dumps;
} kpy_params;

void keel__py_params_init(kpy_params *p);
/* Converts a tuple of arguments into one row of parameters. 0, or -1 with DataError. */
int keel__py_params_from_args(kpy_state *st, kpy_params *p, PyObject *args);
/*
 * Converts rows (a tuple of sequences) into nrows × ncols parameters; a row that is not a tuple
 * is copied into one first. 0, or -1 with DataError / ProgrammingError (rows of different
 * lengths).
 */
int keel__py_params_from_rows(kpy_state *st, kpy_params *p, PyObject *rows);
/* Releases what p holds. Safe to call on an initialised, partly filled or cleared p. */
void keel__py_params_clear(kpy_params *p);
/*
 * Moves the converted parameters of p to the heap, for an operation that starts later; p is
 * left empty. NULL with MemoryError (p keeps them then).
 */
kpy_params *keel__py_params_keep(kpy_params *p);
/* Releases and frees parameters kept by keel__py_params_keep. Accepts NULL. */
void keel__py_params_free(kpy_params *p);
/* Visits the objects p holds, for tp_traverse. Accepts NULL. */
int keel__py_params_traverse(const kpy_params *p, visitproc visit, void *arg);

/* ---- records (record.c) ---- */

extern PyType_Spec keel__py_record_spec;

/* The shared description (column names and name → index) of every Record of res. */
PyObject *keel__py_record_desc(const keel_result *res);
/* One Record of row `row` of res, values converted. NULL with an exception. */
PyObject *keel__py_record_from_row(kpy_state *st, PyObject *desc, const keel_result *res,
                                   size_t row);
/*
 * Row `row` of res as rowtype says: NULL or keel.Record, a Record; a subclass of keel.Record
 * (record_class=), an instance of it; anything else (into=) is called with one keyword argument
 * per column (ProgrammingError when two columns share a name). NULL with an exception.
 */
PyObject *keel__py_row_new(kpy_state *st, PyObject *desc, const keel_result *res, size_t row,
                           PyObject *rowtype);

/* ---- the asyncio loop adapter (loop.c) ---- */

typedef struct kpy_loop kpy_loop;

extern PyType_Spec keel__py_watcher_spec;
extern PyType_Spec keel__py_timer_spec;
extern PyType_Spec keel__py_deferred_spec;

/* Binds a new keel_loop to the asyncio loop aloop. NULL with an exception. */
kpy_loop *keel__py_loop_new(kpy_state *st, PyObject *module, PyObject *aloop);
keel_loop *keel__py_loop_keel(const kpy_loop *L);

/*
 * Gives up the adapter once the keel_db using it is closed: the keel_loop is freed as soon as
 * keel has released every watch and timer (on a later loop iteration if some remain), then
 * done(arg) runs. done may run before this returns. arg is a new reference, released after done.
 */
void keel__py_loop_detach(kpy_loop *L, void (*done)(PyObject *arg), PyObject *arg);

/* Runs fn(arg) on the next iteration of the asyncio loop (arg referenced until then). 0 / -1. */
int keel__py_loop_call_soon(kpy_loop *L, void (*fn)(PyObject *arg), PyObject *arg);
/*
 * Runs fn(arg) on the asyncio loop in delay seconds (arg referenced until then, or until the
 * handle is cancelled). The asyncio TimerHandle (a new reference: cancel it with its cancel()),
 * or NULL with an exception.
 */
PyObject *keel__py_loop_call_later(kpy_loop *L, double delay, void (*fn)(PyObject *arg),
                                   PyObject *arg);
/* The same on the asyncio loop aloop, for work that may outlive the adapter (a Database's
 * close frees it): -1 with an exception when aloop is closed or memory is short. */
int keel__py_call_soon(kpy_state *st, PyObject *aloop, void (*fn)(PyObject *arg), PyObject *arg);

/*
 * Releases list (stealing the reference): a large list that nothing else holds (or that the
 * caller says is its own: owned) is emptied a slice at a time from later iterations of the
 * asyncio loop aloop, so that freeing a million Records never holds the loop; others (and all
 * when aloop is NULL or closed) are released now. Keeps any pending exception.
 */
void keel__py_let_go(kpy_state *st, PyObject *module, PyObject *aloop, PyObject *list, int owned);
/* keel._native._let_go(list): keel__py_let_go of a list the caller owns and drops, on the
 * running loop (Cursor's buffered documents). */
PyObject *keel__py_mod_let_go(PyObject *module, PyObject *list);

/* What one callback into Python may spend on work that grows with a result before it goes on
 * from the next loop iteration: keel's own budget per call (docs/c-api.md). */
#define KPY_SLICE_BUDGET_US 4000

/*
 * keel_db_close(db) for the db bound to L, with the GIL released: the close may wait for worker
 * threads to end their jobs, and other Python threads run meanwhile. Everything keel calls in
 * the extension during the close (the loop ops, the callbacks of operations) takes the GIL back
 * while it runs: it starts with keel__py_gil_take(L) and ends with keel__py_gil_give. Never from
 * inside a keel callback, where keel would postpone the close (and the wait) until it returns.
 */
void keel__py_loop_close_db(kpy_loop *L, keel_db *db);
/* Takes the GIL back when L released it around a close (see above); NULL when it was held. L
 * may be NULL. Pass the result to keel__py_gil_give once done with Python. */
PyThreadState *keel__py_gil_take(kpy_loop *L);
void keel__py_gil_give(kpy_loop *L, PyThreadState *taken);

/* A new asyncio.Future on the asyncio loop aloop. */
PyObject *keel__py_future_new(kpy_state *st, PyObject *aloop);
/* Completes fut unless it is already done (e.g. cancelled). Never fails; steals nothing. */
void keel__py_future_set_result(kpy_state *st, PyObject *fut, PyObject *value);
void keel__py_future_set_exception(kpy_state *st, PyObject *fut, PyObject *exc);
/* Completes fut with the exception currently set (which is cleared). */
void keel__py_future_set_raised(kpy_state *st, PyObject *fut);

/* ---- BSON (bson.c) and ObjectId (objectid.c) ---- */

/* The largest BSON document MongoDB stores, and the largest command it accepts (a document plus
 * room for the command around it, as the server allows). */
#define KPY_BSON_MAX_DOCUMENT ((size_t)16 * 1024 * 1024)
#define KPY_BSON_MAX_COMMAND (KPY_BSON_MAX_DOCUMENT + (size_t)16 * 1024)

extern PyType_Spec keel__py_objectid_spec;
extern PyType_Spec keel__py_regex_spec;
extern PyType_Spec keel__py_timestamp_spec;
extern PyType_Spec keel__py_rawdocument_spec;

/* keel.ObjectId: the 12 bytes of a MongoDB object id. */
typedef struct kpy_objectid {
    PyObject_HEAD unsigned char oid[12];
} kpy_objectid;

/* A new ObjectId holding oid. */
PyObject *keel__py_objectid_new(kpy_state *st, const unsigned char oid[12]);

/* Imports the datetime C API into bson.c and creates its cached objects. 0, or -1. */
int keel__py_bson_init(kpy_state *st);
/*
 * Encodes the dict doc as BSON bytes, keeping key order. Every embedded document must fit in
 * KPY_BSON_MAX_DOCUMENT and the whole in limit bytes. NULL with DataError naming the key path.
 */
PyObject *keel__py_bson_encode(kpy_state *st, PyObject *doc, size_t limit);
/* Decodes one BSON document into a dict. NULL with DataError when it is malformed. */
PyObject *keel__py_bson_decode(kpy_state *st, const char *data, size_t len);
/*
 * Decoding one BSON document in slices, so that a large reply never holds the loop: the large
 * arrays of its first two levels (a cursor's batch) are filled a step at a time. data must stay
 * valid and unchanged until the slices are freed. NULL with an exception.
 */
typedef struct kpy_bson_slices kpy_bson_slices;
kpy_bson_slices *keel__py_bson_slices_new(kpy_state *st, const char *data, size_t len);
/* Decodes for about budget_us microseconds of wall time (at least one element): 1 when the
 * document is complete, 0 when more steps are needed, -1 with DataError or another exception
 * (the slices are then only good for freeing). */
int keel__py_bson_slices_step(kpy_bson_slices *s, int64_t budget_us);
/* The decoded dict once a step returned 1 (new reference); NULL before the first step. */
PyObject *keel__py_bson_slices_result(kpy_bson_slices *s);
/* For the tp_traverse of their holder. */
int keel__py_bson_slices_traverse(kpy_bson_slices *s, visitproc visit, void *arg);
/* Frees s (NULL is fine). The large arrays it filled are handed to let_go(list, ctx), which
 * takes the reference (a decoding abandoned midway leaves them to nobody else), or released
 * when let_go is NULL. */
void keel__py_bson_slices_free(kpy_bson_slices *s, void (*let_go)(PyObject *list, void *ctx),
                               void *ctx);
/* A UTC-aware datetime for milliseconds since the epoch; DataError when out of range. */
PyObject *keel__py_datetime_from_millis(kpy_state *st, int64_t ms);
/* Milliseconds since the epoch of dt, which must be a datetime (naive ones are UTC): its fields
 * are read as a datetime's, so callers check the type first. 0, or -1 with an exception. */
int keel__py_datetime_to_millis(kpy_state *st, PyObject *dt, int64_t *ms);
/* keel._native.bson_encode(doc) and bson_decode(data), for module_methods. */
PyObject *keel__py_mod_bson_encode(PyObject *module, PyObject *doc);
PyObject *keel__py_mod_bson_decode(PyObject *module, PyObject *data);
/* keel._native._bson_decode_sliced(data, budget_us) -> (dict, steps), for the tests. */
PyObject *keel__py_mod_bson_decode_sliced(PyObject *module, PyObject *const *args,
                                          Py_ssize_t nargs);

/* ---- databases, connections and operations (database.c, connection.c, op.c) ---- */

extern PyType_Spec keel__py_database_spec;
extern PyType_Spec keel__py_connection_spec;
extern PyType_Spec keel__py_op_spec;

/* The native Database. */
typedef struct kpy_db {
    PyObject_HEAD kpy_state *st;
    PyObject *module; /* keeps st alive */
    keel_config *cfg; /* validated; kept for names and engines */
    keel_db *db;      /* open between start and close */
    kpy_loop *loop;   /* the adapter of the loop db is bound to, until closed */
    PyObject *aloop;  /* that asyncio loop, kept after close for the futures of close() */
    int phase;        /* KPY_DB_NEW … KPY_DB_CLOSED */
    int close_scheduled;
    size_t nleased;          /* Connection objects not yet released */
    struct kpy_conn *leased; /* those Connections, a list through their lnext (borrowed) */
    size_t nops;             /* database-level operations in flight */
    PyObject *json_dumps;    /* json_serializer=, or NULL for keel's JSON encoder */
    PyObject *json_loads;    /* json_deserializer=, or NULL for keel's JSON decoder */
    PyObject *decoders;      /* set_type_codec: {type OID: decoder}, or NULL */
    PyObject *close_waiters; /* list of futures completed when closed */
    PyObject *weakreflist;
} kpy_db;

enum { KPY_DB_NEW = 0, KPY_DB_OPEN = 1, KPY_DB_CLOSING = 2, KPY_DB_CLOSED = 3 };

struct kpy_op;

/* The native Connection: one leased keel_conn. */
typedef struct kpy_conn {
    PyObject_HEAD kpy_db *db; /* strong */
    keel_conn *conn;          /* NULL once released */
    PyObject *database;       /* name, str */
    PyObject *engine;         /* engine name, str */
    struct kpy_op *running;   /* the operation on conn (keel holds its reference) */
    struct kpy_op *qhead;     /* operations waiting behind a cancelled one (strong) */
    struct kpy_op *qtail;
    int depth;        /* transaction nesting, maintained by keel.Transaction */
    int timeout_set;  /* conn runs under a timeout= of an earlier operation, not the config's */
    PyObject *notify; /* _set_notify_handler: called (pid, channel, payload, exc); NULL: none */
    struct kpy_conn *lprev, *lnext; /* the db's list of leased Connections, until released */
    PyObject *weakreflist;
    /* Counts the operations that ended outside a transaction: a server-side cursor (ServerCursor
     * in _cursor.py) whose count moved on knows its transaction ended, without asking. */
    unsigned long long txn_epoch;
} kpy_conn;

/* Ensures db is open on the running loop (lazy start). 0, or -1 with an exception. */
int keel__py_db_ensure_open(kpy_db *db);
/* The dict of Database.stats() and keel.sync.Database.stats() for a pool snapshot. */
PyObject *keel__py_stats_dict(const keel_pool_stats *ps);
/* Bookkeeping when a leased Connection or an operation of db ends; may finish a close. */
void keel__py_db_conn_released(kpy_db *db);
void keel__py_db_op_finished(kpy_db *db);
/* A Connection object for a freshly leased conn (counted as leased). NULL with an exception,
 * in which case conn has been released. */
PyObject *keel__py_conn_new(kpy_db *db, keel_conn *conn);
/* Releases the connection of c (idempotent). */
void keel__py_conn_release(kpy_conn *c);
/* The in_transaction attribute of a leased conn (keel.Connection's and keel.sync.Connection's):
 * True inside a transaction block; while a statement runs (the state unknown), whether the
 * holder opened transactions (depth > 0). A new reference, never NULL. */
PyObject *keel__py_conn_in_transaction(const keel_conn *conn, int depth);
/* The repr of a connection object of either API: its class, database and engine names (NULL:
 * None), and whether it was released. */
PyObject *keel__py_conn_repr(PyObject *self, PyObject *database, PyObject *engine, int released);
/*
 * Checks the arguments of a document command: dbname (None, or a name: a new reference in
 * *name_out, NULL for None) and cmd (a non-empty dict, encoded into BSON bytes in *bson_out).
 * 0, or -1 with an exception and nothing to release.
 */
int keel__py_command_args(kpy_state *st, PyObject *dbname, PyObject *cmd, PyObject **name_out,
                          PyObject **bson_out);
/*
 * Checks the arguments of copy_records_to_table: the table and schema names (str, not empty,
 * schema may be None), the column names (None or a sequence of such str) and records (any
 * iterable of sequences). Returns (records, columns or None, schema or None), records and
 * columns copied into tuples, for KPY_OP_COPY; NULL with an exception.
 */
PyObject *keel__py_copy_args(kpy_state *st, PyObject *table, PyObject *records, PyObject *columns,
                             PyObject *schema);
/* Adds SyncDatabase and SyncConnection, keel.sync's types, to the module (sync.c). 0, or -1. */
int keel__py_sync_init(PyObject *module);

/* Called by op.c when the running operation of c has completed: starts the next queued one. */
void keel__py_conn_op_done(kpy_conn *c, struct kpy_op *op);

/* Operations (op.c). kinds: */
enum {
    KPY_OP_QUERY = 0,
    KPY_OP_MANY = 1,
    KPY_OP_TXN = 2,
    KPY_OP_ACQUIRE = 3,
    KPY_OP_COMMAND = 4,     /* sql: the engine database name or NULL; args: the BSON bytes */
    KPY_OP_COPY = 5,        /* sql: the table name; args: (records, columns or None, schema or
                              None), records and columns as tuples */
    KPY_OP_PREPARE = 6,     /* sql: the statement; yields its description (keel_conn_prepare) */
    KPY_OP_CURSOR_OPEN = 7, /* sql, args: a server-side cursor's statement; column: prefetch;
                               yields the cursor (a capsule; keel_conn_cursor_open) */
    KPY_OP_CURSOR_FETCH = 8 /* args: the cursor's capsule; column: how many rows; yields them
                               as fetch does (keel_cursor_fetch) */
};
/* states: */
enum {
    KPY_OP_NEW = 0,
    KPY_OP_QUEUED = 1,
    KPY_OP_ACQUIRING = 2,
    KPY_OP_RUNNING = 3,
    KPY_OP_DONE = 4,
    KPY_OP_DECODING = 5 /* keel is done; the reply is turned into Python objects in slices */
};

/* Saves and restores a pending exception around Python calls made from keel callbacks. */
typedef struct kpy_exc_save {
    PyObject *type, *value, *tb;
} kpy_exc_save;

static inline void kpy_exc_stash(kpy_exc_save *s) { PyErr_Fetch(&s->type, &s->value, &s->tb); }

static inline void kpy_exc_unstash(kpy_exc_save *s) {
    /* Whatever a callback left behind is reported, never silently turned into a later error. */
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(NULL);
    PyErr_Restore(s->type, s->value, s->tb);
}

/* The name of a server-side cursor's capsule (KPY_OP_CURSOR_OPEN's result). */
#define KPY_CURSOR_CAPSULE "keel._native.cursor"

typedef struct kpy_op {
    PyObject_HEAD kpy_db *db; /* strong */
    kpy_conn *cobj;           /* strong; NULL for database-level operations */
    keel_conn *conn;          /* database-level: the connection leased for the operation */
    PyObject *fut;            /* asyncio.Future carrying the outcome */
    PyObject *futiter;        /* the future's iterator while the op is awaited */
    PyObject *sql;            /* str; kept while the op may still have to be submitted */
    PyObject *args;           /* KPY_OP_COMMAND / KPY_OP_COPY: see their kinds below */
    kpy_params *params;       /* parameters converted at the call, while the op waits to start */
    PyObject *acquired;       /* KPY_OP_ACQUIRE: the Connection handed out */
    struct kpy_op *next;      /* queue of a Connection */
    int kind;
    int mode;
    int state;
    int cancelled;
    int delivered; /* the awaiting coroutine has received the result */
    Py_ssize_t column;
    keel_txn_op txn;
    unsigned depth;
    /* timeout=: 0 (None: the database's command_timeout), seconds > 0, or INFINITY (none);
     * measured from started (CLOCK_MONOTONIC seconds at the call), so that the wait for a
     * connection, or behind a cancelled operation, counts too. */
    double timeout;
    double started;
    int waited;            /* it waited for a connection, or behind a cancelled operation */
    PyObject *timer;       /* asyncio handle ending the wait for a connection at the deadline */
    PyObject *database;    /* database-level with a deadline: the name asked for (str or None) */
    PyObject *rows;        /* KPY_MODE_FETCH: the Records built so far, batch by batch */
    PyObject *desc;        /* KPY_MODE_FETCH: their shared description */
    PyObject *rowtype;     /* fetch/fetchrow: what rows become (keel__py_row_new); NULL: Record */
    kpy_exc_save rows_exc; /* KPY_MODE_FETCH: why building a batch failed (type NULL: it did not) */
    Py_ssize_t prefetch;   /* KPY_MODE_CURSOR: the statement pauses with this many buffered */
    int paused;            /* KPY_MODE_CURSOR: keel_conn_pause is in force */
    int dropped;           /* KPY_MODE_CURSOR: rows came while paused (a cancel or deadline
                              woke the statement to end it) and were dropped unconverted */
    PyObject *waiter;      /* KPY_MODE_CURSOR: future completed when rows come or the end */
    keel_result *reply;    /* KPY_OP_DECODING: the command's reply, owned */
    kpy_bson_slices *slices; /* KPY_OP_DECODING: its decoding, a slice per loop iteration */
    keel_cursor *kcur;       /* KPY_OP_CURSOR_OPEN: the cursor until its capsule holds it */
} kpy_op;

/*
 * Creates a database-level query / executemany / acquire operation and starts it. timeout is
 * the checked timeout= (keel__py_timeout_arg): it covers the wait for a connection too.
 */
PyObject *keel__py_db_query(kpy_db *db, int kind, int mode, PyObject *sql, PyObject *args,
                            PyObject *database, Py_ssize_t column, double timeout);
PyObject *keel__py_db_acquire(kpy_db *db, PyObject *database, double timeout);
/* Creates an operation on a leased connection and starts it (or queues it). */
PyObject *keel__py_conn_query(kpy_conn *c, int kind, int mode, PyObject *sql, PyObject *args,
                              Py_ssize_t column, keel_txn_op txn, unsigned depth, double timeout);
/* Sets what the rows of the query operation op (as returned by keel__py_db_query or
 * keel__py_conn_query, before it completes) become: see keel__py_row_new. */
void keel__py_op_set_rowtype(PyObject *op, PyObject *rowtype);
/* Submits a queued operation now that c is free; on failure completes it with the error. */
void keel__py_op_submit_queued(kpy_conn *c, kpy_op *op);
/* Completes a queued operation that will never run (its connection was released). */
void keel__py_op_abandon(kpy_op *op, const char *why);

#endif
