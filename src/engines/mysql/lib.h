/* src/engines/mysql/lib.h - libmariadb, loaded when the MySQL/MariaDB engine is first used. */
#ifndef KEEL_ENGINES_MYSQL_LIB_H
#define KEEL_ENGINES_MYSQL_LIB_H

#include <stddef.h>

#include <mysql.h>

/*
 * The functions of libmariadb the engine uses (see engines/lazylib.h). mysql.h's macros need no
 * entry of their own: mysql_library_init, for one, expands to mysql_server_init, which then
 * expands to the table entry below. The engine uses none of libmariadb's variables.
 */
#define KEEL__MYSQL_LIB_FUNCTIONS(X)                                                               \
    X(mariadb_field_attr)                                                                          \
    X(mariadb_get_infov)                                                                           \
    X(mariadb_stmt_fetch_fields)                                                                   \
    X(mysql_affected_rows)                                                                         \
    X(mysql_close)                                                                                 \
    X(mysql_errno)                                                                                 \
    X(mysql_error)                                                                                 \
    X(mysql_fetch_fields)                                                                          \
    X(mysql_fetch_lengths)                                                                         \
    X(mysql_fetch_row_cont)                                                                        \
    X(mysql_fetch_row_start)                                                                       \
    X(mysql_field_count)                                                                           \
    X(mysql_free_result)                                                                           \
    X(mysql_get_client_version)                                                                    \
    X(mysql_get_socket)                                                                            \
    X(mysql_get_ssl_cipher)                                                                        \
    X(mysql_get_timeout_value_ms)                                                                  \
    X(mysql_init)                                                                                  \
    X(mysql_more_results)                                                                          \
    X(mysql_next_result_cont)                                                                      \
    X(mysql_next_result_start)                                                                     \
    X(mysql_num_fields)                                                                            \
    X(mysql_options)                                                                               \
    X(mysql_options4)                                                                              \
    X(mysql_real_connect)                                                                          \
    X(mysql_real_connect_cont)                                                                     \
    X(mysql_real_connect_start)                                                                    \
    X(mysql_real_query)                                                                            \
    X(mysql_real_query_cont)                                                                       \
    X(mysql_real_query_start)                                                                      \
    X(mysql_server_init)                                                                           \
    X(mysql_sqlstate)                                                                              \
    X(mysql_stmt_affected_rows)                                                                    \
    X(mysql_stmt_attr_set)                                                                         \
    X(mysql_stmt_bind_param)                                                                       \
    X(mysql_stmt_bind_result)                                                                      \
    X(mysql_stmt_close)                                                                            \
    X(mysql_stmt_close_cont)                                                                       \
    X(mysql_stmt_close_start)                                                                      \
    X(mysql_stmt_errno)                                                                            \
    X(mysql_stmt_error)                                                                            \
    X(mysql_stmt_execute_cont)                                                                     \
    X(mysql_stmt_execute_start)                                                                    \
    X(mysql_stmt_fetch_column)                                                                     \
    X(mysql_stmt_fetch_cont)                                                                       \
    X(mysql_stmt_fetch_start)                                                                      \
    X(mysql_stmt_field_count)                                                                      \
    X(mysql_stmt_free_result)                                                                      \
    X(mysql_stmt_init)                                                                             \
    X(mysql_stmt_more_results)                                                                     \
    X(mysql_stmt_next_result_cont)                                                                 \
    X(mysql_stmt_next_result_start)                                                                \
    X(mysql_stmt_param_count)                                                                      \
    X(mysql_stmt_prepare_cont)                                                                     \
    X(mysql_stmt_prepare_start)                                                                    \
    X(mysql_stmt_sqlstate)                                                                         \
    X(mysql_stmt_store_result_cont)                                                                \
    X(mysql_stmt_store_result_start)                                                               \
    X(mysql_use_result)                                                                            \
    X(mysql_thread_id)

#define KEEL__MYSQL_LIB_ENTRY(name) __typeof__(name) *name;
typedef struct keel__mysql_lib_table {
    KEEL__MYSQL_LIB_FUNCTIONS(KEEL__MYSQL_LIB_ENTRY)
    /* OpenSSL's ERR_clear_error when libmariadb uses OpenSSL (it is looked up among the
     * libraries libmariadb loaded), else NULL: with another TLS library there is no error queue
     * to clear. */
    void (*err_clear)(void);
} keel__mysql_lib_table;
#undef KEEL__MYSQL_LIB_ENTRY

extern keel__mysql_lib_table keel__mysql_lib;

/*
 * Loads KEEL_MARIADB_SONAME and fills keel__mysql_lib, once per process; thread-safe. Returns 0,
 * or -1 with the reason in why (the same on every call). Blocks while the library is mapped.
 */
int keel__mysql_lib_load(char *why, size_t size);

/* The engine's calls go through the table: every name below is the table entry from here on
 * (except in lib.c, which fills it). */
#ifndef KEEL__MYSQL_LIB_FILLING
#define mariadb_field_attr (keel__mysql_lib.mariadb_field_attr)
#define mariadb_get_infov (keel__mysql_lib.mariadb_get_infov)
#define mariadb_stmt_fetch_fields (keel__mysql_lib.mariadb_stmt_fetch_fields)
#define mysql_affected_rows (keel__mysql_lib.mysql_affected_rows)
#define mysql_close (keel__mysql_lib.mysql_close)
#define mysql_errno (keel__mysql_lib.mysql_errno)
#define mysql_error (keel__mysql_lib.mysql_error)
#define mysql_fetch_fields (keel__mysql_lib.mysql_fetch_fields)
#define mysql_fetch_lengths (keel__mysql_lib.mysql_fetch_lengths)
#define mysql_fetch_row_cont (keel__mysql_lib.mysql_fetch_row_cont)
#define mysql_fetch_row_start (keel__mysql_lib.mysql_fetch_row_start)
#define mysql_field_count (keel__mysql_lib.mysql_field_count)
#define mysql_free_result (keel__mysql_lib.mysql_free_result)
#define mysql_get_client_version (keel__mysql_lib.mysql_get_client_version)
#define mysql_get_socket (keel__mysql_lib.mysql_get_socket)
#define mysql_get_ssl_cipher (keel__mysql_lib.mysql_get_ssl_cipher)
#define mysql_get_timeout_value_ms (keel__mysql_lib.mysql_get_timeout_value_ms)
#define mysql_init (keel__mysql_lib.mysql_init)
#define mysql_more_results (keel__mysql_lib.mysql_more_results)
#define mysql_next_result_cont (keel__mysql_lib.mysql_next_result_cont)
#define mysql_next_result_start (keel__mysql_lib.mysql_next_result_start)
#define mysql_num_fields (keel__mysql_lib.mysql_num_fields)
#define mysql_options (keel__mysql_lib.mysql_options)
#define mysql_options4 (keel__mysql_lib.mysql_options4)
#define mysql_real_connect (keel__mysql_lib.mysql_real_connect)
#define mysql_real_connect_cont (keel__mysql_lib.mysql_real_connect_cont)
#define mysql_real_connect_start (keel__mysql_lib.mysql_real_connect_start)
#define mysql_real_query (keel__mysql_lib.mysql_real_query)
#define mysql_real_query_cont (keel__mysql_lib.mysql_real_query_cont)
#define mysql_real_query_start (keel__mysql_lib.mysql_real_query_start)
#define mysql_server_init (keel__mysql_lib.mysql_server_init)
#define mysql_sqlstate (keel__mysql_lib.mysql_sqlstate)
#define mysql_stmt_affected_rows (keel__mysql_lib.mysql_stmt_affected_rows)
#define mysql_stmt_attr_set (keel__mysql_lib.mysql_stmt_attr_set)
#define mysql_stmt_bind_param (keel__mysql_lib.mysql_stmt_bind_param)
#define mysql_stmt_bind_result (keel__mysql_lib.mysql_stmt_bind_result)
#define mysql_stmt_close (keel__mysql_lib.mysql_stmt_close)
#define mysql_stmt_close_cont (keel__mysql_lib.mysql_stmt_close_cont)
#define mysql_stmt_close_start (keel__mysql_lib.mysql_stmt_close_start)
#define mysql_stmt_errno (keel__mysql_lib.mysql_stmt_errno)
#define mysql_stmt_error (keel__mysql_lib.mysql_stmt_error)
#define mysql_stmt_execute_cont (keel__mysql_lib.mysql_stmt_execute_cont)
#define mysql_stmt_execute_start (keel__mysql_lib.mysql_stmt_execute_start)
#define mysql_stmt_fetch_column (keel__mysql_lib.mysql_stmt_fetch_column)
#define mysql_stmt_fetch_cont (keel__mysql_lib.mysql_stmt_fetch_cont)
#define mysql_stmt_fetch_start (keel__mysql_lib.mysql_stmt_fetch_start)
#define mysql_stmt_field_count (keel__mysql_lib.mysql_stmt_field_count)
#define mysql_stmt_free_result (keel__mysql_lib.mysql_stmt_free_result)
#define mysql_stmt_init (keel__mysql_lib.mysql_stmt_init)
#define mysql_stmt_more_results (keel__mysql_lib.mysql_stmt_more_results)
#define mysql_stmt_next_result_cont (keel__mysql_lib.mysql_stmt_next_result_cont)
#define mysql_stmt_next_result_start (keel__mysql_lib.mysql_stmt_next_result_start)
#define mysql_stmt_param_count (keel__mysql_lib.mysql_stmt_param_count)
#define mysql_stmt_prepare_cont (keel__mysql_lib.mysql_stmt_prepare_cont)
#define mysql_stmt_prepare_start (keel__mysql_lib.mysql_stmt_prepare_start)
#define mysql_stmt_sqlstate (keel__mysql_lib.mysql_stmt_sqlstate)
#define mysql_stmt_store_result_cont (keel__mysql_lib.mysql_stmt_store_result_cont)
#define mysql_stmt_store_result_start (keel__mysql_lib.mysql_stmt_store_result_start)
#define mysql_use_result (keel__mysql_lib.mysql_use_result)
#define mysql_thread_id (keel__mysql_lib.mysql_thread_id)
#endif

#endif
