/* keel/error.h - status codes and the caller-provided error struct. */
#ifndef KEEL_ERROR_H
#define KEEL_ERROR_H

#include <stdint.h>
#include <keel/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every fallible call returns a keel_status; KEEL_OK is 0. Codes only ever grow: a value, once
 * published, keeps its number and meaning.
 */
typedef enum keel_status {
    KEEL_OK = 0,
    KEEL_ERR_NOMEM = 1,            /* an allocation failed */
    KEEL_ERR_INVALID_ARGUMENT = 2, /* the caller passed something unusable (NULL, bad enum…) */
    KEEL_ERR_CONFIG = 3,           /* the configuration is invalid; message names the key path */
    KEEL_ERR_URL = 4,              /* a database URL is malformed; message says where */
    KEEL_ERR_UNKNOWN_DATABASE = 5, /* no database of that name is configured */
    KEEL_ERR_CONNECT = 6,          /* could not connect or authenticate */
    KEEL_ERR_CONNECTION_LOST = 7,  /* the server went away during an operation */
    KEEL_ERR_POOL_TIMEOUT = 8,     /* no connection became free within acquire_timeout */
    KEEL_ERR_TIMEOUT = 9,          /* a connect or statement deadline passed */
    KEEL_ERR_CANCELLED = 10,       /* the operation was cancelled by the caller */
    KEEL_ERR_PROGRAMMING = 11,     /* syntax error, unknown table or column, bad SQL */
    KEEL_ERR_INTEGRITY = 12,       /* unique, foreign key, not-null or check violation */
    KEEL_ERR_DATA = 13,            /* a value is invalid or out of range for its type */
    KEEL_ERR_PARAMETERS = 14,      /* wrong number or type of statement parameters */
    KEEL_ERR_TRANSACTION = 15,     /* the transaction is aborted or in the wrong state */
    KEEL_ERR_DATABASE = 16,        /* any other error reported by the server */
    KEEL_ERR_UNSUPPORTED = 17,     /* the engine or build does not support this */
    KEEL_ERR_CLOSED = 18,          /* the database or connection handle is closed */
    KEEL_ERR_BUSY = 19,            /* the connection is already running an operation */
    KEEL_ERR_IO = 20,              /* reading a file (config, secret) failed */
    KEEL_ERR_INTERNAL = 21,        /* a bug in keel; please report it */
    KEEL_ERR_OPERATIONAL = 22      /* server-side operational failure (shutdown, resources) */
} keel_status;

/*
 * Which kind of integrity constraint a KEEL_ERR_INTEGRITY error violated (keel_error.violation),
 * the same on every engine: from PostgreSQL's and SQLite's SQLSTATE (23505, 23503, 23502, 23514,
 * 23P01), from MySQL/MariaDB's error number (where the SQLSTATE is 23000 for all of them) and
 * from MongoDB's error code. Values only ever grow.
 */
typedef enum keel_violation {
    KEEL_VIOLATION_NONE = 0,        /* not a constraint violation, or one of no known kind */
    KEEL_VIOLATION_UNIQUE = 1,      /* a primary key, unique constraint or unique index */
    KEEL_VIOLATION_FOREIGN_KEY = 2, /* a foreign key, from either side */
    KEEL_VIOLATION_NOT_NULL = 3,    /* a NULL in a NOT NULL column */
    KEEL_VIOLATION_CHECK = 4,       /* a CHECK constraint (MongoDB: a collection's validator) */
    KEEL_VIOLATION_EXCLUSION = 5    /* a PostgreSQL exclusion constraint */
} keel_violation;

/* The engine a keel_error came from; "keel" for errors raised by the library itself. */
#define KEEL_ERROR_ENGINE_MAX 16
#define KEEL_ERROR_DATABASE_MAX 64
#define KEEL_ERROR_MESSAGE_MAX 512
#define KEEL_ERROR_DETAIL_MAX 512
#define KEEL_ERROR_HINT_MAX 256
/* Room for a server's object name: PostgreSQL's are at most 63 bytes, MySQL's 64 characters. */
#define KEEL_ERROR_NAME_MAX 128

/*
 * Filled by a failing call. The caller owns it (usually on the stack); keel never keeps a pointer
 * to it. Passwords and secret values never appear in message, detail or hint. Every field but
 * code, server_code, violation and reserved is a NUL-terminated string (possibly empty).
 *
 * What the server said about a failed statement, beyond its message: PostgreSQL's error fields
 * (DETAIL, HINT, and the schema, table, column, constraint and data type names it reports, as
 * libpq's PG_DIAG_… fields); MySQL/MariaDB's duplicate key (1062: constraint_name is the key
 * name, "PRIMARY" for the primary key), foreign key (1451, 1452: constraint_name, schema_name,
 * table_name), NOT NULL (1048: column_name) and CHECK (3819, 4025: constraint_name) failures,
 * parsed from their messages; SQLite's UNIQUE, PRIMARY KEY and NOT NULL failures (table_name,
 * and column_name when one column is named; constraint_name for a unique index on
 * expressions); MongoDB's duplicate key (11000: constraint_name is the unique index, table_name
 * the collection, schema_name the database). A field the server did not report is "". detail and hint are truncated to
 * their size.
 *
 * ABI: the caller allocates this struct, so its size and the offset of every field are part of
 * the ABI and, from the first release (0.1.0) on, never change. New fields are only ever added
 * by taking space from the start of reserved (which shrinks by as much); keel zeroes reserved
 * whenever it fills the struct, so a field added later reads 0 from a keel that predates it.
 * Callers must not use reserved. (Before 0.1.0 was released the struct grew by the fields from
 * detail to datatype_name; programs built against an earlier header must be rebuilt.)
 */
typedef struct keel_error {
    keel_status code;
    char sqlstate[6];                       /* five-character SQLSTATE, or "" */
    char engine[KEEL_ERROR_ENGINE_MAX];     /* "postgresql", "sqlite", "keel"… */
    char database[KEEL_ERROR_DATABASE_MAX]; /* the configured database name, or "" */
    char message[KEEL_ERROR_MESSAGE_MAX];
    char detail[KEEL_ERROR_DETAIL_MAX];        /* the server's DETAIL, or "" */
    char hint[KEEL_ERROR_HINT_MAX];            /* the server's HINT, or "" */
    char schema_name[KEEL_ERROR_NAME_MAX];     /* the object's schema (MySQL: database) */
    char table_name[KEEL_ERROR_NAME_MAX];      /* the table the error is about */
    char column_name[KEEL_ERROR_NAME_MAX];     /* the column the error is about */
    char constraint_name[KEEL_ERROR_NAME_MAX]; /* the constraint or unique key violated */
    char datatype_name[KEEL_ERROR_NAME_MAX];   /* the data type the error is about */
    /* The server's own error number: MySQL/MariaDB's error number, SQLite's extended result
     * code, MongoDB's error code; 0 when there is none (PostgreSQL reports only sqlstate). */
    int64_t server_code;
    int32_t violation;    /* a keel_violation; KEEL_VIOLATION_NONE for other errors */
    uint64_t reserved[6]; /* room for fields added later; zero */
} keel_error;

/* The constant name of a status ("KEEL_ERR_POOL_TIMEOUT"). Never NULL; never blocks. */
KEEL_API const char *keel_status_name(keel_status status);

/* A short English description of a status. Never NULL; never blocks. */
KEEL_API const char *keel_strerror(keel_status status);

/* Resets err to KEEL_OK with empty fields. Accepts NULL. */
KEEL_API void keel_error_clear(keel_error *err);

#ifdef __cplusplus
}
#endif
#endif
