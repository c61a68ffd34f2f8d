/* src/engines/sqlite/lib.h - libsqlite3, loaded when the SQLite engine is first used. */
#ifndef KEEL_ENGINES_SQLITE_LIB_H
#define KEEL_ENGINES_SQLITE_LIB_H

#include <stddef.h>

#include <sqlite3.h>

/* The functions of libsqlite3 the engine uses (see engines/lazylib.h). */
#define KEEL__SQLITE_LIB_FUNCTIONS(X)                                                              \
    X(sqlite3_bind_blob64)                                                                         \
    X(sqlite3_bind_double)                                                                         \
    X(sqlite3_bind_int)                                                                            \
    X(sqlite3_bind_int64)                                                                          \
    X(sqlite3_bind_null)                                                                           \
    X(sqlite3_bind_parameter_count)                                                                \
    X(sqlite3_bind_text)                                                                           \
    X(sqlite3_bind_text64)                                                                         \
    X(sqlite3_busy_handler)                                                                        \
    X(sqlite3_busy_timeout)                                                                        \
    X(sqlite3_changes64)                                                                           \
    X(sqlite3_clear_bindings)                                                                      \
    X(sqlite3_close_v2)                                                                            \
    X(sqlite3_column_blob)                                                                         \
    X(sqlite3_column_bytes)                                                                        \
    X(sqlite3_column_count)                                                                        \
    X(sqlite3_column_decltype)                                                                     \
    X(sqlite3_column_double)                                                                       \
    X(sqlite3_column_int64)                                                                        \
    X(sqlite3_column_name)                                                                         \
    X(sqlite3_column_text)                                                                         \
    X(sqlite3_column_type)                                                                         \
    X(sqlite3_errcode)                                                                             \
    X(sqlite3_errmsg)                                                                              \
    X(sqlite3_errstr)                                                                              \
    X(sqlite3_exec)                                                                                \
    X(sqlite3_extended_result_codes)                                                               \
    X(sqlite3_finalize)                                                                            \
    X(sqlite3_get_autocommit)                                                                      \
    X(sqlite3_interrupt)                                                                           \
    X(sqlite3_open_v2)                                                                             \
    X(sqlite3_prepare_v3)                                                                          \
    X(sqlite3_progress_handler)                                                                    \
    X(sqlite3_reset)                                                                               \
    X(sqlite3_step)                                                                                \
    X(sqlite3_stmt_readonly)                                                                       \
    X(sqlite3_stmt_status)

#define KEEL__SQLITE_LIB_ENTRY(name) __typeof__(name) *name;
typedef struct keel__sqlite_lib_table {
    KEEL__SQLITE_LIB_FUNCTIONS(KEEL__SQLITE_LIB_ENTRY)
} keel__sqlite_lib_table;
#undef KEEL__SQLITE_LIB_ENTRY

extern keel__sqlite_lib_table keel__sqlite_lib;

/*
 * Loads KEEL_SQLITE3_SONAME and fills keel__sqlite_lib, once per process; thread-safe. Returns 0, or -1
 * with the reason in why (the same on every call). Blocks while the library is mapped.
 */
int keel__sqlite_lib_load(char *why, size_t size);

/* The engine's calls go through the table: every name below is the table entry from here on
 * (except in lib.c, which fills it). */
#ifndef KEEL__SQLITE_LIB_FILLING
#define sqlite3_bind_blob64 (keel__sqlite_lib.sqlite3_bind_blob64)
#define sqlite3_bind_double (keel__sqlite_lib.sqlite3_bind_double)
#define sqlite3_bind_int (keel__sqlite_lib.sqlite3_bind_int)
#define sqlite3_bind_int64 (keel__sqlite_lib.sqlite3_bind_int64)
#define sqlite3_bind_null (keel__sqlite_lib.sqlite3_bind_null)
#define sqlite3_bind_parameter_count (keel__sqlite_lib.sqlite3_bind_parameter_count)
#define sqlite3_bind_text (keel__sqlite_lib.sqlite3_bind_text)
#define sqlite3_bind_text64 (keel__sqlite_lib.sqlite3_bind_text64)
#define sqlite3_busy_handler (keel__sqlite_lib.sqlite3_busy_handler)
#define sqlite3_busy_timeout (keel__sqlite_lib.sqlite3_busy_timeout)
#define sqlite3_changes64 (keel__sqlite_lib.sqlite3_changes64)
#define sqlite3_clear_bindings (keel__sqlite_lib.sqlite3_clear_bindings)
#define sqlite3_close_v2 (keel__sqlite_lib.sqlite3_close_v2)
#define sqlite3_column_blob (keel__sqlite_lib.sqlite3_column_blob)
#define sqlite3_column_bytes (keel__sqlite_lib.sqlite3_column_bytes)
#define sqlite3_column_count (keel__sqlite_lib.sqlite3_column_count)
#define sqlite3_column_decltype (keel__sqlite_lib.sqlite3_column_decltype)
#define sqlite3_column_double (keel__sqlite_lib.sqlite3_column_double)
#define sqlite3_column_int64 (keel__sqlite_lib.sqlite3_column_int64)
#define sqlite3_column_name (keel__sqlite_lib.sqlite3_column_name)
#define sqlite3_column_text (keel__sqlite_lib.sqlite3_column_text)
#define sqlite3_column_type (keel__sqlite_lib.sqlite3_column_type)
#define sqlite3_errcode (keel__sqlite_lib.sqlite3_errcode)
#define sqlite3_errmsg (keel__sqlite_lib.sqlite3_errmsg)
#define sqlite3_errstr (keel__sqlite_lib.sqlite3_errstr)
#define sqlite3_exec (keel__sqlite_lib.sqlite3_exec)
#define sqlite3_extended_result_codes (keel__sqlite_lib.sqlite3_extended_result_codes)
#define sqlite3_finalize (keel__sqlite_lib.sqlite3_finalize)
#define sqlite3_get_autocommit (keel__sqlite_lib.sqlite3_get_autocommit)
#define sqlite3_interrupt (keel__sqlite_lib.sqlite3_interrupt)
#define sqlite3_open_v2 (keel__sqlite_lib.sqlite3_open_v2)
#define sqlite3_prepare_v3 (keel__sqlite_lib.sqlite3_prepare_v3)
#define sqlite3_progress_handler (keel__sqlite_lib.sqlite3_progress_handler)
#define sqlite3_reset (keel__sqlite_lib.sqlite3_reset)
#define sqlite3_step (keel__sqlite_lib.sqlite3_step)
#define sqlite3_stmt_readonly (keel__sqlite_lib.sqlite3_stmt_readonly)
#define sqlite3_stmt_status (keel__sqlite_lib.sqlite3_stmt_status)
#endif

#endif
