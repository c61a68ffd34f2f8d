/* src/core/config_int.h - the validated configuration as engines and pools read it. */
#ifndef KEEL_CORE_CONFIG_INT_H
#define KEEL_CORE_CONFIG_INT_H

#include <stddef.h>
#include <keel/config.h>

/* One engine option (databases.NAME.options.KEY or a URL query parameter the engine owns). */
typedef struct keel__option {
    char *key;
    char *value; /* may hold ${env:…} / ${file:…} references */
} keel__option;

/*
 * One configured database after keel_config_validate. Strings are owned by the config; NULL when
 * unset. Any string may hold secret references: resolve with keel__config_resolve at connect time.
 */
typedef struct keel__dbconfig {
    char *name;
    char *engine;   /* "postgresql" or "sqlite" (later: "mysql", "mongodb") */
    char *url;      /* as given, or NULL */
    char *host;     /* PostgreSQL: host name, IP or socket directory */
    int port;       /* 0 = engine default */
    char *database; /* PostgreSQL: database name; SQLite: file path or ":memory:" */
    char *user;
    char *password;
    double connect_timeout; /* seconds; 0 = engine default (10 s) */
    double command_timeout; /* seconds each operation may take; 0 = no deadline */
    keel__option *options;
    size_t noptions;
    /* pool */
    size_t min_size;        /* default 1 */
    size_t max_size;        /* default 10 */
    double acquire_timeout; /* seconds; default 30 */
    double idle_timeout;    /* seconds an idle connection above min_size is kept; 0 = forever */
    double max_lifetime;    /* seconds a connection lives (less up to 10 % jitter); 0 = forever */
    double ping_after_idle; /* seconds idle after which an acquire pings first; 0 = never */
    size_t max_waiters;     /* requests that may wait for a release; SIZE_MAX = no limit */
} keel__dbconfig;

/* Database config by name, or NULL. cfg must be validated. */
const keel__dbconfig *keel__config_database(const keel_config *cfg, const char *name);
/* Database config by index (0 … keel_config_database_count-1). */
const keel__dbconfig *keel__config_database_at(const keel_config *cfg, size_t index);

/* Value of an engine option, or NULL when not set. */
const char *keel__dbconfig_option(const keel__dbconfig *dbc, const char *key);

/*
 * Deep copy of a validated config (keel_db_open keeps its own). NULL when out of memory.
 */
keel_config *keel__config_clone(const keel_config *cfg);

/*
 * Resolves ${env:NAME} and ${file:/path} references in value into a newly malloc'ed string the
 * caller frees with keel__secret_free (core/secret.h): it may be a password. A value without references is copied as is. Errors: KEEL_ERR_CONFIG
 * naming the variable or file when it is missing (never the value), KEEL_ERR_NOMEM. keypath is
 * used in messages. Reads files: may block briefly.
 */
keel_status keel__config_resolve(const char *value, const char *keypath, char **out,
                                 keel_error *err);

/*
 * Reads a YAML document of len bytes (text need not be NUL-terminated) into cfg, as
 * keel_config_load_file does for a file's content; name stands for the file in messages.
 * Errors as keel_config_load_file, except that nothing is read from disk.
 */
keel_status keel__config_load_yaml(keel_config *cfg, const char *name, const char *text, size_t len,
                                   keel_error *err);

#endif
