/* keel/config.h - the configuration schema: named databases, pools, sources and validation. */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include <stddef.h>
#include <keel/export.h>
#include <keel/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A configuration is a tree of string values addressed by dotted key paths. Every source goes
 * through the same setter, so every error names the key path that was wrong:
 *
 *   default                              name of the default database ("default" when unset)
 *   databases.NAME.url                   postgresql://… postgres://… sqlite:///path sqlite::memory:
 *   databases.NAME.engine                postgresql | sqlite (implied by url)
 *   databases.NAME.host / port / database / user / password
 *   databases.NAME.connect_timeout       seconds (float)
 *   databases.NAME.command_timeout       seconds (float) each operation may take; none when unset
 *   databases.NAME.options.KEY           engine options (sslmode, application_name, busy_timeout…)
 *   databases.NAME.pool.min_size / max_size / acquire_timeout   (acquire_timeout in seconds)
 *   databases.NAME.pool.idle_timeout / max_lifetime / ping_after_idle   seconds; 0 or "none"
 *                                        disables (defaults 600, 3600, 30)
 *   databases.NAME.pool.max_waiters      requests that may queue for a release; "none" (the
 *                                        default) for no limit
 *   pool.KEY                             the same pool keys: defaults for every database
 *
 * Values may reference secrets, resolved at connect time and re-read on every new connection so
 * rotation works: ${env:NAME} and ${file:/path} (trailing newline stripped).
 *
 * Sources, in order: keel_config_load_file (YAML, or an SQLite database file), then
 * keel_config_apply_env (KEEL_… variables, "__" separating levels: KEEL_DATABASES__MAIN__URL
 * sets databases.main.url; KEEL_DEFAULT sets default), then explicit keel_config_set calls.
 * Later sources override earlier ones.
 *
 * With no database configured at all, keel_config_validate adds databases.default: the URL in
 * DATABASE_URL when keel_config_apply_env found one, else the SQLite file ./keel.db (the
 * built-in default, see keel_config_is_builtin_default).
 *
 * A keel_config is owned by its creator and freed with keel_config_free; keel_db_open copies what
 * it needs, so the config may be freed right after. No function here blocks except
 * keel_config_load_file, which reads a file.
 */
typedef struct keel_config keel_config;

/* Creates an empty configuration. KEEL_ERR_NOMEM on allocation failure. */
KEEL_API keel_status keel_config_new(keel_config **out, keel_error *err);

/*
 * Sets one key path to a value (copied). Returns KEEL_ERR_CONFIG naming the path when the key is
 * unknown or the value is invalid for it, KEEL_ERR_URL when a url is malformed.
 */
KEEL_API keel_status keel_config_set(keel_config *cfg, const char *path, const char *value,
                                     keel_error *err);

/*
 * Convenience: databases.default.url = url and default = "default". Same errors as
 * keel_config_set.
 */
KEEL_API keel_status keel_config_set_url(keel_config *cfg, const char *url, keel_error *err);

/*
 * Reads a configuration file: a YAML file, whose every scalar is set by its key path, or an
 * SQLite database, which becomes databases.default (engine sqlite, database path) and the
 * default. A path is an SQLite database when its name ends in .db, .sqlite or .sqlite3 (in any
 * case; the file need not exist yet: SQLite creates it on the first connection) or when the file
 * starts with SQLite's header ("SQLite format 3"); only the header is read then. Blocks while
 * reading. KEEL_ERR_IO when the file cannot be read, KEEL_ERR_CONFIG with the line and key path
 * when the YAML is malformed or a key is invalid.
 */
KEEL_API keel_status keel_config_load_file(keel_config *cfg, const char *path, keel_error *err);

/*
 * Applies KEEL_… overrides from the process environment. Only variables that name configuration
 * keys are read: KEEL_DEFAULT, and KEEL_DATABASES__…, KEEL_POOL__…, KEEL_MIGRATIONS__…,
 * KEEL_CACHE__…, KEEL_SECURITY__…, KEEL_OBSERVABILITY__… (any case). Others are ignored and
 * listed by keel_config_ignored_env (KEEL_CONFIG, the keel command's configuration file, is not
 * listed): Kubernetes defines KEEL_PORT, KEEL_SERVICE_HOST … in every pod of a namespace with a
 * Service named keel. Also notes DATABASE_URL for keel_config_validate. Errors as
 * keel_config_set, naming the variable.
 */
KEEL_API keel_status keel_config_apply_env(keel_config *cfg, keel_error *err);

/*
 * The KEEL_… variables the last keel_config_apply_env found and ignored, by name (never their
 * values), sorted; valid until the next apply_env on cfg or keel_config_free. Never blocks.
 */
KEEL_API size_t keel_config_ignored_env_count(const keel_config *cfg);
KEEL_API const char *keel_config_ignored_env(const keel_config *cfg, size_t index);

/*
 * Checks the whole configuration (every database has an engine and what it needs, the default
 * exists, min_size <= max_size…) and fills defaults. Call once after the sources;
 * keel_db_open calls it too. KEEL_ERR_CONFIG naming the key path on failure.
 */
KEEL_API keel_status keel_config_validate(keel_config *cfg, keel_error *err);

/* After validation: the configured database names, in the order they were first set. */
KEEL_API size_t keel_config_database_count(const keel_config *cfg);
KEEL_API const char *keel_config_database_name(const keel_config *cfg, size_t index);
KEEL_API const char *keel_config_default_database(const keel_config *cfg);
/* The engine name ("postgresql", "sqlite") of a database, or NULL if unknown. */
KEEL_API const char *keel_config_database_engine(const keel_config *cfg, const char *name);
/*
 * After validation: 1 when no source configured any database (no file, no KEEL_… database
 * variable, no DATABASE_URL, no keel_config_set) and keel_config_validate supplied the built-in
 * default, the SQLite file ./keel.db; else 0. keel check refuses to run on it.
 */
KEEL_API int keel_config_is_builtin_default(const keel_config *cfg);
/* After validation: 1 when databases.default is DATABASE_URL's because no source configured a
 * database; else 0. */
KEEL_API int keel_config_is_from_database_url(const keel_config *cfg);

/* Frees cfg. Accepts NULL. */
KEEL_API void keel_config_free(keel_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
