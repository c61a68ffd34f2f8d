/* src/engines/mongo/lib.h - libmongoc and libbson, loaded when the MongoDB engine is first used. */
#ifndef KEEL_ENGINES_MONGO_LIB_H
#define KEEL_ENGINES_MONGO_LIB_H

#include <stddef.h>

#include <mongoc/mongoc.h>

/* The functions of libmongoc and libbson the engine uses (see engines/lazylib.h). */
#define KEEL__MONGO_LIB_FUNCTIONS(X)                                                               \
    X(bson_append_int32)                                                                           \
    X(bson_append_iter)                                                                            \
    X(bson_append_utf8)                                                                            \
    X(bson_append_value)                                                                           \
    X(bson_destroy)                                                                                \
    X(bson_get_data)                                                                               \
    X(bson_init)                                                                                   \
    X(bson_init_static)                                                                            \
    X(bson_iter_as_int64)                                                                          \
    X(bson_iter_find)                                                                              \
    X(bson_iter_find_descendant)                                                                   \
    X(bson_iter_init)                                                                              \
    X(bson_iter_init_find)                                                                         \
    X(bson_iter_key)                                                                               \
    X(bson_iter_next)                                                                              \
    X(bson_iter_recurse)                                                                           \
    X(bson_iter_type)                                                                              \
    X(bson_iter_utf8)                                                                              \
    X(bson_iter_value)                                                                             \
    X(bson_iter_visit_all)                                                                         \
    X(bson_utf8_validate)                                                                          \
    X(bson_validate_with_error)                                                                    \
    X(bson_value_copy)                                                                             \
    X(bson_value_destroy)                                                                          \
    X(mongoc_client_command_simple)                                                                \
    X(mongoc_client_command_with_opts)                                                             \
    X(mongoc_client_destroy)                                                                       \
    X(mongoc_client_get_read_prefs)                                                                \
    X(mongoc_client_get_server_descriptions)                                                       \
    X(mongoc_client_new_from_uri_with_error)                                                       \
    X(mongoc_client_read_command_with_opts)                                                        \
    X(mongoc_client_read_write_command_with_opts)                                                  \
    X(mongoc_client_select_server)                                                                 \
    X(mongoc_client_session_abort_transaction)                                                     \
    X(mongoc_client_session_append)                                                                \
    X(mongoc_client_session_commit_transaction)                                                    \
    X(mongoc_client_session_destroy)                                                               \
    X(mongoc_client_session_in_transaction)                                                        \
    X(mongoc_client_session_start_transaction)                                                     \
    X(mongoc_client_set_error_api)                                                                 \
    X(mongoc_client_start_session)                                                                 \
    X(mongoc_client_write_command_with_opts)                                                       \
    X(mongoc_error_has_label)                                                                      \
    X(mongoc_init)                                                                                 \
    X(mongoc_log_set_handler)                                                                      \
    X(mongoc_read_prefs_get_mode)                                                                  \
    X(mongoc_server_description_destroy)                                                           \
    X(mongoc_server_description_hello_response)                                                    \
    X(mongoc_server_description_id)                                                                \
    X(mongoc_server_description_type)                                                              \
    X(mongoc_server_descriptions_destroy_all)                                                      \
    X(mongoc_uri_copy)                                                                             \
    X(mongoc_uri_destroy)                                                                          \
    X(mongoc_uri_get_appname)                                                                      \
    X(mongoc_uri_get_option_as_int32)                                                              \
    X(mongoc_uri_get_hosts)                                                                        \
    X(mongoc_uri_get_srv_hostname)                                                                 \
    X(mongoc_uri_has_option)                                                                       \
    X(mongoc_uri_new_with_error)                                                                   \
    X(mongoc_uri_option_is_bool)                                                                   \
    X(mongoc_uri_option_is_int32)                                                                  \
    X(mongoc_uri_option_is_int64)                                                                  \
    X(mongoc_uri_option_is_utf8)                                                                   \
    X(mongoc_uri_set_appname)                                                                      \
    X(mongoc_uri_set_option_as_int32)

#define KEEL__MONGO_LIB_ENTRY(name) __typeof__(name) *name;
typedef struct keel__mongo_lib_table {
    KEEL__MONGO_LIB_FUNCTIONS(KEEL__MONGO_LIB_ENTRY)
} keel__mongo_lib_table;
#undef KEEL__MONGO_LIB_ENTRY

extern keel__mongo_lib_table keel__mongo_lib;

/*
 * Loads KEEL_MONGOC_SONAME and fills keel__mongo_lib, once per process; thread-safe. Returns 0, or -1
 * with the reason in why (the same on every call). Blocks while the library is mapped.
 */
int keel__mongo_lib_load(char *why, size_t size);

/* The engine's calls go through the table: every name below is the table entry from here on
 * (except in lib.c, which fills it). */
#ifndef KEEL__MONGO_LIB_FILLING
#define bson_append_int32 (keel__mongo_lib.bson_append_int32)
#define bson_append_iter (keel__mongo_lib.bson_append_iter)
#define bson_append_utf8 (keel__mongo_lib.bson_append_utf8)
#define bson_append_value (keel__mongo_lib.bson_append_value)
#define bson_destroy (keel__mongo_lib.bson_destroy)
#define bson_get_data (keel__mongo_lib.bson_get_data)
#define bson_init (keel__mongo_lib.bson_init)
#define bson_init_static (keel__mongo_lib.bson_init_static)
#define bson_iter_as_int64 (keel__mongo_lib.bson_iter_as_int64)
#define bson_iter_find (keel__mongo_lib.bson_iter_find)
#define bson_iter_find_descendant (keel__mongo_lib.bson_iter_find_descendant)
#define bson_iter_init (keel__mongo_lib.bson_iter_init)
#define bson_iter_init_find (keel__mongo_lib.bson_iter_init_find)
#define bson_iter_key (keel__mongo_lib.bson_iter_key)
#define bson_iter_next (keel__mongo_lib.bson_iter_next)
#define bson_iter_recurse (keel__mongo_lib.bson_iter_recurse)
#define bson_iter_type (keel__mongo_lib.bson_iter_type)
#define bson_iter_utf8 (keel__mongo_lib.bson_iter_utf8)
#define bson_iter_value (keel__mongo_lib.bson_iter_value)
#define bson_iter_visit_all (keel__mongo_lib.bson_iter_visit_all)
#define bson_utf8_validate (keel__mongo_lib.bson_utf8_validate)
#define bson_validate_with_error (keel__mongo_lib.bson_validate_with_error)
#define bson_value_copy (keel__mongo_lib.bson_value_copy)
#define bson_value_destroy (keel__mongo_lib.bson_value_destroy)
#define mongoc_client_command_simple (keel__mongo_lib.mongoc_client_command_simple)
#define mongoc_client_command_with_opts (keel__mongo_lib.mongoc_client_command_with_opts)
#define mongoc_client_destroy (keel__mongo_lib.mongoc_client_destroy)
#define mongoc_client_get_read_prefs (keel__mongo_lib.mongoc_client_get_read_prefs)
#define mongoc_client_get_server_descriptions                                                      \
    (keel__mongo_lib.mongoc_client_get_server_descriptions)
#define mongoc_client_new_from_uri_with_error                                                      \
    (keel__mongo_lib.mongoc_client_new_from_uri_with_error)
#define mongoc_client_read_command_with_opts (keel__mongo_lib.mongoc_client_read_command_with_opts)
#define mongoc_client_read_write_command_with_opts                                                 \
    (keel__mongo_lib.mongoc_client_read_write_command_with_opts)
#define mongoc_client_select_server (keel__mongo_lib.mongoc_client_select_server)
#define mongoc_client_session_abort_transaction                                                    \
    (keel__mongo_lib.mongoc_client_session_abort_transaction)
#define mongoc_client_session_append (keel__mongo_lib.mongoc_client_session_append)
#define mongoc_client_session_commit_transaction                                                   \
    (keel__mongo_lib.mongoc_client_session_commit_transaction)
#define mongoc_client_session_destroy (keel__mongo_lib.mongoc_client_session_destroy)
#define mongoc_client_session_in_transaction (keel__mongo_lib.mongoc_client_session_in_transaction)
#define mongoc_client_session_start_transaction                                                    \
    (keel__mongo_lib.mongoc_client_session_start_transaction)
#define mongoc_client_set_error_api (keel__mongo_lib.mongoc_client_set_error_api)
#define mongoc_client_start_session (keel__mongo_lib.mongoc_client_start_session)
#define mongoc_client_write_command_with_opts                                                      \
    (keel__mongo_lib.mongoc_client_write_command_with_opts)
#define mongoc_error_has_label (keel__mongo_lib.mongoc_error_has_label)
#define mongoc_init (keel__mongo_lib.mongoc_init)
#define mongoc_log_set_handler (keel__mongo_lib.mongoc_log_set_handler)
#define mongoc_read_prefs_get_mode (keel__mongo_lib.mongoc_read_prefs_get_mode)
#define mongoc_server_description_destroy (keel__mongo_lib.mongoc_server_description_destroy)
#define mongoc_server_description_hello_response                                                   \
    (keel__mongo_lib.mongoc_server_description_hello_response)
#define mongoc_server_description_id (keel__mongo_lib.mongoc_server_description_id)
#define mongoc_server_description_type (keel__mongo_lib.mongoc_server_description_type)
#define mongoc_server_descriptions_destroy_all                                                     \
    (keel__mongo_lib.mongoc_server_descriptions_destroy_all)
#define mongoc_uri_copy (keel__mongo_lib.mongoc_uri_copy)
#define mongoc_uri_destroy (keel__mongo_lib.mongoc_uri_destroy)
#define mongoc_uri_get_appname (keel__mongo_lib.mongoc_uri_get_appname)
#define mongoc_uri_get_option_as_int32 (keel__mongo_lib.mongoc_uri_get_option_as_int32)
#define mongoc_uri_get_hosts (keel__mongo_lib.mongoc_uri_get_hosts)
#define mongoc_uri_get_srv_hostname (keel__mongo_lib.mongoc_uri_get_srv_hostname)
#define mongoc_uri_has_option (keel__mongo_lib.mongoc_uri_has_option)
#define mongoc_uri_new_with_error (keel__mongo_lib.mongoc_uri_new_with_error)
#define mongoc_uri_option_is_bool (keel__mongo_lib.mongoc_uri_option_is_bool)
#define mongoc_uri_option_is_int32 (keel__mongo_lib.mongoc_uri_option_is_int32)
#define mongoc_uri_option_is_int64 (keel__mongo_lib.mongoc_uri_option_is_int64)
#define mongoc_uri_option_is_utf8 (keel__mongo_lib.mongoc_uri_option_is_utf8)
#define mongoc_uri_set_appname (keel__mongo_lib.mongoc_uri_set_appname)
#define mongoc_uri_set_option_as_int32 (keel__mongo_lib.mongoc_uri_set_option_as_int32)
#endif

#endif
