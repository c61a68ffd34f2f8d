/* tests/c/core/test_config.c - configuration keys, validation, environment, secrets and YAML. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config_int.h"
#include "engines/engine.h"
#include "test.h"

/* Records a failure with the error message when a call that should succeed does not. */
#define OK(call)                                                                                   \
    do {                                                                                           \
        keel_status ok__st = (call);                                                               \
        if (ok__st != KEEL_OK) {                                                                   \
            fprintf(stderr, "  FAIL %s (%s:%d): %s -> %d: %s\n", test__current, __FILE__,          \
                    __LINE__, #call, (int)ok__st, err.message);                                    \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

/* True when the message does not contain the secret; reports it otherwise. */
#define CHECK_NO_SECRET(msg, secret)                                                               \
    do {                                                                                           \
        if (strstr((msg), (secret))) {                                                             \
            fprintf(stderr, "  FAIL %s (%s:%d): message leaks '%s': %s\n", test__current,          \
                    __FILE__, __LINE__, (secret), (msg));                                          \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

static keel_config *new_config(void) {
    keel_config *cfg = NULL;
    keel_error err;
    if (keel_config_new(&cfg, &err) != KEEL_OK) {
        fprintf(stderr, "keel_config_new failed: %s\n", err.message);
        exit(2);
    }
    return cfg;
}

/* Writes text to a new temporary file; the path is stored in path (at least 64 bytes). */
static void write_temp(char *path, const char *text) {
    strcpy(path, "/tmp/keel_test_config_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        perror("write");
        exit(2);
    }
    close(fd);
}

/* Sets path=value expecting the given error code; returns the message in err. */
static keel_status set_err(keel_config *cfg, const char *path, const char *value, keel_error *err) {
    keel_error_clear(err);
    return keel_config_set(cfg, path, value, err);
}

TEST(url_with_query_parameters) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.main.url",
                       "postgresql://app:s3cret@db.internal:6543/orders?min_size=2&max_size=5&"
                       "acquire_timeout=1.5&connect_timeout=3&application_name=svc&sslmode=disable",
                       &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_database_count(cfg), 1);
    CHECK_STR(keel_config_database_name(cfg, 0), "main");
    CHECK(keel_config_database_name(cfg, 1) == NULL);
    CHECK_STR(keel_config_default_database(cfg), "main");
    CHECK_STR(keel_config_database_engine(cfg, "main"), "postgresql");
    CHECK(keel_config_database_engine(cfg, "other") == NULL);
    const keel__dbconfig *d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    CHECK(d == keel__config_database_at(cfg, 0));
    CHECK(keel__config_database(cfg, "other") == NULL);
    CHECK(keel__config_database_at(cfg, 1) == NULL);
    if (d) {
        CHECK_STR(d->name, "main");
        CHECK_STR(d->engine, "postgresql");
        CHECK_STR(d->host, "db.internal");
        CHECK_INT(d->port, 6543);
        CHECK_STR(d->database, "orders");
        CHECK_STR(d->user, "app");
        CHECK_STR(d->password, "s3cret");
        CHECK(d->url != NULL);
        CHECK_INT(d->min_size, 2);
        CHECK_INT(d->max_size, 5);
        CHECK(d->acquire_timeout == 1.5);
        CHECK(d->connect_timeout == 3.0);
        CHECK_INT(d->noptions, 2);
        CHECK_STR(keel__dbconfig_option(d, "application_name"), "svc");
        CHECK_STR(keel__dbconfig_option(d, "sslmode"), "disable");
        CHECK(keel__dbconfig_option(d, "min_size") == NULL);
        CHECK(keel__dbconfig_option(d, "connect_timeout") == NULL);
    }
    keel_config_free(cfg);
}

TEST(explicit_keys_and_defaults) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.pg.engine", "postgres", &err));
    OK(keel_config_set(cfg, "databases.pg.host", "127.0.0.1", &err));
    OK(keel_config_set(cfg, "databases.pg.port", "5432", &err));
    OK(keel_config_set(cfg, "databases.pg.database", "keel_test", &err));
    OK(keel_config_set(cfg, "databases.pg.user", "postgres", &err));
    OK(keel_config_set(cfg, "databases.pg.connect_timeout", "2.5", &err));
    OK(keel_config_set(cfg, "databases.pg.options.application_name", "tests", &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "pg");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "postgresql");
        CHECK(d->url == NULL);
        CHECK(d->password == NULL);
        CHECK_INT(d->port, 5432);
        CHECK(d->connect_timeout == 2.5);
        CHECK_INT(d->min_size, 1);
        CHECK_INT(d->max_size, 10);
        CHECK(d->acquire_timeout == 30.0);
        CHECK_STR(keel__dbconfig_option(d, "application_name"), "tests");
    }
    keel_config_free(cfg);
}

TEST(no_config_is_default_sqlite) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_database_count(cfg), 1);
    CHECK_STR(keel_config_database_name(cfg, 0), "default");
    CHECK_STR(keel_config_default_database(cfg), "default");
    CHECK_STR(keel_config_database_engine(cfg, "default"), "sqlite");
    const keel__dbconfig *d = keel__config_database(cfg, "default");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "sqlite");
        CHECK_STR(d->database, "./keel.db");
        CHECK_INT(d->min_size, 1);
        CHECK_INT(d->max_size, 10);
    }
    CHECK_INT(keel_config_is_builtin_default(cfg), 1);
    /* Validating again keeps the same result. */
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_database_count(cfg), 1);
    CHECK_INT(keel_config_is_builtin_default(cfg), 1);
    keel_config *copy = keel__config_clone(cfg);
    CHECK_INT(keel_config_is_builtin_default(copy), 1);
    keel_config_free(copy);
    /* Global pool settings configure no database; a database key or the default does. */
    OK(keel_config_set(cfg, "pool.max_size", "3", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_builtin_default(cfg), 1);
    OK(keel_config_set(cfg, "databases.default.database", "./other.db", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_builtin_default(cfg), 0);
    keel_config_free(cfg);

    /* A configured database is not the built-in default, nor is an unvalidated config. */
    cfg = new_config();
    CHECK_INT(keel_config_is_builtin_default(cfg), 0);
    OK(keel_config_set(cfg, "databases.default.url", "sqlite::memory:", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_builtin_default(cfg), 0);
    keel_config_free(cfg);
    CHECK_INT(keel_config_is_builtin_default(NULL), 0);
}

/* DATABASE_URL configures databases.default when no source configured a database. */
TEST(database_url_when_nothing_else_is_configured) {
    keel_error err;
    setenv("DATABASE_URL", "postgresql://envuser@envhost:5544/envdb", 1);
    keel_config *cfg = new_config();
    OK(keel_config_apply_env(cfg, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_builtin_default(cfg), 0);
    CHECK_INT(keel_config_is_from_database_url(cfg), 1);
    CHECK_INT(keel_config_database_count(cfg), 1);
    CHECK_STR(keel_config_default_database(cfg), "default");
    const keel__dbconfig *d = keel__config_database(cfg, "default");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "postgresql");
        CHECK_STR(d->host, "envhost");
        CHECK_INT(d->port, 5544);
    }
    keel_config *copy = keel__config_clone(cfg);
    CHECK(copy != NULL && keel_config_database_count(copy) == 1);
    CHECK_INT(keel_config_is_from_database_url(copy), 1);
    keel_config_free(copy);
    OK(keel_config_set(cfg, "databases.default.port", "5545", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_from_database_url(cfg), 0);
    keel_config_free(cfg);

    /* A configured database wins: DATABASE_URL adds nothing. */
    cfg = new_config();
    OK(keel_config_set(cfg, "databases.main.url", "sqlite::memory:", &err));
    OK(keel_config_apply_env(cfg, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_from_database_url(cfg), 0);
    CHECK_INT(keel_config_database_count(cfg), 1);
    CHECK_STR(keel_config_default_database(cfg), "main");
    keel_config_free(cfg);

    /* Without keel_config_apply_env the environment plays no part. */
    cfg = new_config();
    OK(keel_config_validate(cfg, &err));
    CHECK_STR(keel_config_database_engine(cfg, "default"), "sqlite");
    keel_config_free(cfg);

    /* An empty DATABASE_URL is no URL. */
    setenv("DATABASE_URL", "", 1);
    cfg = new_config();
    OK(keel_config_apply_env(cfg, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_is_builtin_default(cfg), 1);
    keel_config_free(cfg);

    /* A bad one is an error naming the variable, never the password. */
    setenv("DATABASE_URL", "postgresql://u:hunter2@h:port/db", 1);
    cfg = new_config();
    OK(keel_config_apply_env(cfg, &err));
    keel_error_clear(&err);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_URL);
    CHECK_CONTAINS(err.message, "environment variable DATABASE_URL: ");
    CHECK_NO_SECRET(err.message, "hunter2");
    keel_config_free(cfg);
    setenv("DATABASE_URL", "oracle://h/db", 1);
    cfg = new_config();
    OK(keel_config_apply_env(cfg, &err));
    keel_error_clear(&err);
    CHECK(keel_config_validate(cfg, &err) != KEEL_OK);
    CHECK_CONTAINS(err.message, "environment variable DATABASE_URL: ");
    keel_config_free(cfg);
    unsetenv("DATABASE_URL");
}

TEST(set_url_convenience) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set_url(cfg, "sqlite:///:memory:?busy_timeout=5000", &err));
    OK(keel_config_set(cfg, "databases.other.url", "sqlite:////tmp/other.db", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_STR(keel_config_default_database(cfg), "default");
    const keel__dbconfig *d = keel__config_database(cfg, "default");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "sqlite");
        CHECK_STR(d->database, ":memory:");
        CHECK_STR(keel__dbconfig_option(d, "busy_timeout"), "5000");
    }
    d = keel__config_database(cfg, "other");
    CHECK(d != NULL);
    if (d)
        CHECK_STR(d->database, "/tmp/other.db");
    keel_config_free(cfg);
}

TEST(pool_override_order) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "pool.min_size", "2", &err));
    OK(keel_config_set(cfg, "pool.max_size", "20", &err));
    OK(keel_config_set(cfg, "pool.acquire_timeout", "7", &err));
    OK(keel_config_set(cfg, "databases.a.url", "sqlite:///a.db?max_size=8", &err));
    OK(keel_config_set(cfg, "databases.b.url", "sqlite:///b.db?max_size=8", &err));
    /* Of a key and the url, the one set last wins. */
    OK(keel_config_set(cfg, "databases.b.pool.max_size", "5", &err));
    OK(keel_config_set(cfg, "databases.c.pool.acquire_timeout", "0.25", &err));
    OK(keel_config_set(cfg, "databases.c.url", "sqlite:///c.db?acquire_timeout=9", &err));
    OK(keel_config_set(cfg, "default", "a", &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *a = keel__config_database(cfg, "a");
    const keel__dbconfig *b = keel__config_database(cfg, "b");
    const keel__dbconfig *c = keel__config_database(cfg, "c");
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK_INT(a->min_size, 2);
        CHECK_INT(a->max_size, 8);
        CHECK(a->acquire_timeout == 7.0);
        CHECK_INT(b->max_size, 5);
        CHECK_INT(c->max_size, 20);
        CHECK(c->acquire_timeout == 9.0);
    }
    keel_config_free(cfg);
}

/* The lifecycle keys of a pool: their defaults, "none", the order of their sources (key, url,
 * pool.*, environment) and errors that name the key path. */
TEST(pool_lifecycle_keys) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.a.url", "sqlite:///a.db", &err));
    OK(keel_config_set(cfg, "databases.b.url", "sqlite:///b.db?idle_timeout=5&max_waiters=3",
                       &err));
    OK(keel_config_set(cfg, "databases.c.url", "sqlite:///c.db", &err));
    OK(keel_config_set(cfg, "databases.c.pool.max_lifetime", "none", &err));
    OK(keel_config_set(cfg, "databases.c.pool.ping_after_idle", "0", &err));
    OK(keel_config_set(cfg, "databases.c.pool.max_waiters", "0", &err));
    OK(keel_config_set(cfg, "pool.idle_timeout", "60", &err));
    OK(keel_config_set(cfg, "default", "a", &err));
    setenv("KEEL_DATABASES__A__POOL__PING_AFTER_IDLE", "2.5", 1);
    setenv("KEEL_POOL__MAX_LIFETIME", "120", 1);
    OK(keel_config_apply_env(cfg, &err));
    unsetenv("KEEL_DATABASES__A__POOL__PING_AFTER_IDLE");
    unsetenv("KEEL_POOL__MAX_LIFETIME");
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *a = keel__config_database(cfg, "a");
    const keel__dbconfig *b = keel__config_database(cfg, "b");
    const keel__dbconfig *c = keel__config_database(cfg, "c");
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK(a->idle_timeout == 60.0);
        CHECK(a->max_lifetime == 120.0);
        CHECK(a->ping_after_idle == 2.5);
        CHECK(a->max_waiters == SIZE_MAX);
        CHECK(b->idle_timeout == 5.0);
        CHECK_INT(b->max_waiters, 3);
        CHECK(b->ping_after_idle == 30.0);
        CHECK(c->max_lifetime == 0.0);
        CHECK(c->ping_after_idle == 0.0);
        CHECK_INT(c->max_waiters, 0);
        CHECK(keel__dbconfig_option(b, "idle_timeout") == NULL);
    }
    keel_config_free(cfg);

    cfg = new_config();
    OK(keel_config_set(cfg, "databases.d.url", "sqlite:///d.db", &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "d");
    CHECK(d != NULL);
    if (d) {
        CHECK(d->idle_timeout == 600.0);
        CHECK(d->max_lifetime == 3600.0);
        CHECK(d->ping_after_idle == 30.0);
        CHECK(d->max_waiters == SIZE_MAX);
    }
    CHECK_INT(set_err(cfg, "databases.d.pool.idle_timeout", "-1", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "databases.d.pool.idle_timeout: expected a non-negative number of "
                           "seconds (e.g. 2.5), or 0 or 'none' to disable it, got '-1'");
    CHECK_STR(err.database, "d");
    CHECK_INT(set_err(cfg, "pool.max_waiters", "many", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message,
              "pool.max_waiters: expected a non-negative integer, or 'none' for no limit, got "
              "'many'");
    CHECK_INT(set_err(cfg, "databases.d.url", "sqlite:///d.db?ping_after_idle=soon", &err),
              KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "query parameter 'ping_after_idle': expected a non-negative "
                                "number of seconds");
    /* "none" is for the settings that can be switched off, not for the pool's size. */
    CHECK_INT(set_err(cfg, "pool.max_size", "none", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "pool.acquire_timeout", "none", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "pool.max_lifetim", "1", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "did you mean 'pool.max_lifetime'?");
    keel_config_free(cfg);
}

TEST(later_values_win_field_by_field) {
    keel_config *cfg = new_config();
    keel_error err;
    /* A url without a password keeps a password key, in either order. */
    OK(keel_config_set(cfg, "databases.main.password", "from-key", &err));
    OK(keel_config_set(cfg, "databases.main.url", "postgresql://u@h/db?sslmode=require", &err));
    OK(keel_config_set(cfg, "databases.main.options.sslmode", "disable", &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->password, "from-key");
        CHECK_STR(d->user, "u");
        CHECK_STR(d->host, "h");
        CHECK_STR(keel__dbconfig_option(d, "sslmode"), "disable");
        CHECK_INT(d->noptions, 1);
    }
    /* A later url replaces every part of the previous one and overrides older keys. */
    OK(keel_config_set(cfg, "databases.main.host", "key-host", &err));
    OK(keel_config_set(cfg, "databases.main.url",
                       "postgresql://:from-url@other:5433/db2?sslmode=verify-full", &err));
    CHECK(keel__config_database(cfg, "main") == NULL); /* not validated since the change */
    OK(keel_config_validate(cfg, &err));
    d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK(d->user == NULL);
        CHECK_STR(d->host, "other");
        CHECK_INT(d->port, 5433);
        CHECK_STR(d->database, "db2");
        CHECK_STR(d->password, "from-url");
        CHECK_STR(keel__dbconfig_option(d, "sslmode"), "verify-full");
    }
    /* And a key set after the url overrides that part only. */
    OK(keel_config_set(cfg, "databases.main.port", "6000", &err));
    OK(keel_config_validate(cfg, &err));
    d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK_INT(d->port, 6000);
        CHECK_STR(d->host, "other");
    }
    keel_config_free(cfg);
}

TEST(database_order_is_first_mention) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.zeta.url", "sqlite:///z.db", &err));
    OK(keel_config_set(cfg, "databases.alpha.url", "sqlite:///a.db", &err));
    OK(keel_config_set(cfg, "databases.zeta.pool.max_size", "3", &err));
    /* A rejected value does not create a database. */
    CHECK_INT(set_err(cfg, "databases.ghost.port", "x", &err), KEEL_ERR_CONFIG);
    OK(keel_config_set(cfg, "databases.mid-1.url", "sqlite:///m.db", &err));
    OK(keel_config_set(cfg, "default", "alpha", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_database_count(cfg), 3);
    CHECK_STR(keel_config_database_name(cfg, 0), "zeta");
    CHECK_STR(keel_config_database_name(cfg, 1), "alpha");
    CHECK_STR(keel_config_database_name(cfg, 2), "mid-1");
    CHECK_STR(keel_config_default_database(cfg), "alpha");
    keel_config_free(cfg);
}

TEST(value_errors_name_the_key) {
    keel_config *cfg = new_config();
    keel_error err;
    CHECK_INT(set_err(cfg, "databases.main.pool.max_size", "ten", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message,
              "databases.main.pool.max_size: expected a non-negative integer, got 'ten'");
    CHECK_STR(err.database, "main");
    CHECK_INT(set_err(cfg, "databases.main.pool.min_size", "-1", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "databases.main.pool.min_size: expected a non-negative integer, got '-1'");
    CHECK_INT(set_err(cfg, "pool.max_size", "99999999999999999999999", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "pool.max_size: expected a non-negative integer");
    CHECK_INT(set_err(cfg, "databases.main.port", "abc", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "databases.main.port: expected a port number from 1 to 65535, got 'abc'");
    CHECK_INT(set_err(cfg, "databases.main.port", "0", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "databases.main.port", "65536", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "databases.main.connect_timeout", "soon", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "databases.main.connect_timeout: expected a non-negative number of seconds");
    CHECK_INT(set_err(cfg, "pool.acquire_timeout", "-2", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "pool.acquire_timeout", "1e3", &err), KEEL_ERR_CONFIG);
    CHECK_INT(set_err(cfg, "databases.main.engine", "oracle", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.engine: unknown engine 'oracle'");
    CHECK_INT(set_err(cfg, "default", "not a name", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "default: invalid database name 'not a name'");
    CHECK_INT(set_err(cfg, "databases.main.url", "postgresql://u:hunter2@h:abc/db", &err),
              KEEL_ERR_URL);
    CHECK_CONTAINS(err.message, "databases.main.url: invalid port 'abc'");
    CHECK_NO_SECRET(err.message, "hunter2");
    CHECK_INT(set_err(cfg, "databases.main.url", "postgresql://h/db?max_size=many", &err),
              KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "query parameter 'max_size': expected a non-negative integer, got 'many'");
    CHECK_INT(set_err(cfg, "databases.main.url", "${env:DATABASE_URL}", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "a reference cannot stand for the whole URL");
    CHECK_INT(set_err(cfg, "databases.main.password", "ab${env:X", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.password: unterminated '${' reference");
    CHECK_NO_SECRET(err.message, "ab${env:X");
    CHECK_INT(set_err(cfg, "databases.main.password", "${vault:kv/db}", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "unknown reference '${vault:");
    CHECK_NO_SECRET(err.message, "kv/db");
    CHECK_INT(set_err(cfg, "databases.main.password", "${env:}", &err), KEEL_ERR_CONFIG);
    /* None of these created a database. */
    CHECK_INT(keel_config_database_count(cfg), 0);
    CHECK_INT(keel_config_set(NULL, "default", "x", &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel_config_set(cfg, "default", NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    keel_config_free(cfg);
}

/* The suggestion for a misspelt key is a key that exists, of the same shape; when none fits,
 * the message names the key alone. */
TEST(unknown_keys_are_corrected_only_into_keys_of_their_shape) {
    keel_config *cfg = new_config();
    keel_error err;
    static const char *const suggested[][2] = {
        { "defualt", "default" },
        { "databses.main.optons.application_name", "databases.main.options.application_name" },
        { "pol.acquire_timeout", "pool.acquire_timeout" },
    };
    for (size_t i = 0; i < sizeof suggested / sizeof suggested[0]; i++) {
        char want[300];
        snprintf(want, sizeof want, "unknown configuration key '%s' (did you mean '%s'?)",
                 suggested[i][0], suggested[i][1]);
        CHECK_INT(set_err(cfg, suggested[i][0], "1", &err), KEEL_ERR_CONFIG);
        CHECK_STR(err.message, want);
    }
    static const char *const alone[] = {
        "defualt.x",             /* default has no sub-keys */
        "pol.max_size.x",        /* pool keys have two parts */
        "pool.nothing_like_it",  /* no pool key is close */
        "databses.main",         /* a database needs a key */
        "databses.m a i n.url",  /* not a database name */
        "databses.main.pol.x.y", /* pool keys of a database have four parts */
        "databses.main.optons",  /* options need a name */
        "databses.main.urll.x",  /* other database keys have three parts */
        "a.b.c.d.e.f.g",         /* longer than any key */
    };
    for (size_t i = 0; i < sizeof alone / sizeof alone[0]; i++) {
        char want[300];
        snprintf(want, sizeof want, "unknown configuration key '%s'", alone[i]);
        CHECK_INT(set_err(cfg, alone[i], "1", &err), KEEL_ERR_CONFIG);
        if (strcmp(err.message, want) != 0)
            fprintf(stderr, "  %s: %s\n", alone[i], err.message);
        CHECK_STR(err.message, want);
    }
    CHECK_INT(keel_config_database_count(cfg), 0);
    keel_config_free(cfg);
}

TEST(unknown_keys) {
    keel_config *cfg = new_config();
    keel_error err;
    CHECK_INT(set_err(cfg, "databases.main.pol.max_size", "3", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "unknown configuration key 'databases.main.pol.max_size' (did you mean "
                           "'databases.main.pool.max_size'?)");
    CHECK_INT(set_err(cfg, "database.main.url", "sqlite://", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "did you mean 'databases.main.url'?");
    CHECK_INT(set_err(cfg, "pool.maxsize", "3", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "did you mean 'pool.max_size'?");
    CHECK_INT(set_err(cfg, "databases.main.pasword", "x", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "did you mean 'databases.main.password'?");
    CHECK_INT(set_err(cfg, "frobnicate", "1", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "unknown configuration key 'frobnicate'");
    CHECK_INT(set_err(cfg, "databases.main.url.extra", "1", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "unknown configuration key 'databases.main.url.extra'");
    CHECK_INT(set_err(cfg, "databases.main", "1", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "'databases.main' is a section");
    CHECK_INT(set_err(cfg, "databases.my db.url", "sqlite://", &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "invalid database name 'my db'");
    CHECK_INT(set_err(cfg, "databases..url", "sqlite://", &err), KEEL_ERR_CONFIG);
    /* The sections kept for later features accept any key below them. */
    OK(keel_config_set(cfg, "migrations.directory", "migrations", &err));
    OK(keel_config_set(cfg, "cache.redis.url", "redis://127.0.0.1:6379/0", &err));
    OK(keel_config_set(cfg, "security.audit", "true", &err));
    OK(keel_config_set(cfg, "observability.metrics.enabled", "yes", &err));
    CHECK_INT(set_err(cfg, "cache", "1", &err), KEEL_ERR_CONFIG);
    CHECK_INT(keel_config_database_count(cfg), 0);
    keel_config_free(cfg);
}

TEST(validation_errors) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.main.url", "sqlite:///x.db?min_size=5", &err));
    OK(keel_config_set(cfg, "databases.main.pool.max_size", "2", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.url (min_size) (5) is greater than "
                                "databases.main.pool.max_size (2)");
    OK(keel_config_set(cfg, "databases.main.pool.min_size", "3", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.pool.min_size (3) is greater than "
                                "databases.main.pool.max_size (2)");
    OK(keel_config_set(cfg, "databases.main.pool.max_size", "0", &err));
    OK(keel_config_set(cfg, "databases.main.pool.min_size", "0", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.pool.max_size: must be at least 1");
    keel_config_free(cfg);

    cfg = new_config();
    OK(keel_config_set(cfg, "pool.min_size", "50", &err));
    OK(keel_config_set(cfg, "databases.main.url", "sqlite:///x.db", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "pool.min_size (50) is greater than the default pool.max_size (10)");
    keel_config_free(cfg);

    cfg = new_config();
    OK(keel_config_set(cfg, "databases.main.pool.max_size", "4", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main: no engine configured");
    OK(keel_config_set(cfg, "databases.main.engine", "postgresql", &err));
    OK(keel_config_set(cfg, "databases.main.url", "sqlite:///x.db", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.main.engine: 'postgresql' does not match");
    keel_config_free(cfg);
}

TEST(default_database_rules) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.main.url", "sqlite:///m.db", &err));
    OK(keel_config_set(cfg, "default", "missing", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "default: database 'missing' is not configured (configured: main)");
    keel_config_free(cfg);

    /* Several databases and no default: one must be called "default". */
    cfg = new_config();
    OK(keel_config_set(cfg, "databases.a.url", "sqlite:///a.db", &err));
    OK(keel_config_set(cfg, "databases.b.url", "sqlite:///b.db", &err));
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "default: not set, and no database is named 'default' (configured: a, b)");
    OK(keel_config_set(cfg, "databases.default.url", "sqlite:///d.db", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_STR(keel_config_default_database(cfg), "default");
    keel_config_free(cfg);

    /* Default set but no database at all: the embedded SQLite one is "default", not "x". */
    cfg = new_config();
    OK(keel_config_set(cfg, "default", "x", &err));
    CHECK_STR(keel_config_default_database(cfg), "x");
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "default: database 'x' is not configured");
    keel_config_free(cfg);
}

TEST(engines_missing_from_the_build) {
    keel_config *cfg = new_config();
    keel_error err;
    keel_status st = set_err(cfg, "databases.my.url", "mysql://root:hunter2@127.0.0.1/shop", &err);
    if (keel__engine_find("mysql")) {
        CHECK_INT(st, KEEL_OK);
        CHECK_STR(keel_config_database_engine(cfg, "my"), "mysql");
    } else {
        CHECK_INT(st, KEEL_ERR_CONFIG);
        CHECK_CONTAINS(err.message,
                       "databases.my.url: engine 'mysql' is not available in this build");
        CHECK_NO_SECRET(err.message, "hunter2");
    }
    st = set_err(cfg, "databases.mongo.engine", "mongodb", &err);
    if (keel__engine_find("mongodb")) {
        CHECK_INT(st, KEEL_OK);
    } else {
        CHECK_INT(st, KEEL_ERR_CONFIG);
        CHECK_CONTAINS(err.message,
                       "databases.mongo.engine: engine 'mongodb' is not available in this build");
    }
    st = set_err(cfg, "databases.maria.url", "mariadb://root@h/shop", &err);
    CHECK_INT(st, keel__engine_for_scheme("mariadb") ? KEEL_OK : KEEL_ERR_CONFIG);
    keel_config_free(cfg);
}

TEST(validate_calls_engine_check) {
    const keel__engine *sqlite = keel__engine_find("sqlite");
    if (!sqlite || !sqlite->check_config)
        return; /* nothing to call in this build */
    keel_config *cfg = new_config();
    keel_error err;
    /* The core accepts a SQLite database without a path; the engine's own check does not. */
    OK(keel_config_set(cfg, "databases.lite.engine", "sqlite", &err));
    keel_error_clear(&err);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.lite");
    CHECK(keel__config_database(cfg, "lite") == NULL);
    OK(keel_config_set(cfg, "databases.lite.database", ":memory:", &err));
    OK(keel_config_validate(cfg, &err));
    CHECK(keel__config_database(cfg, "lite") != NULL);
    keel_config_free(cfg);
}

TEST(environment_overrides) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.main.url", "sqlite:///from-code.db", &err));
    OK(keel_config_set(cfg, "databases.main.password", "file-pw", &err));
    setenv("KEEL_DATABASES__MAIN__URL", "postgresql://envuser@envhost:5544/envdb", 1);
    setenv("KEEL_DATABASES__MAIN__POOL__MAX_SIZE", "7", 1);
    setenv("KEEL_POOL__MIN_SIZE", "3", 1);
    setenv("KEEL_DEFAULT", "main", 1);
    setenv("KEEL_TEST_SOMETHING", "ignored: not a key", 1);
    setenv("KEEL_CONFIG", "/nonexistent/keel.yaml", 1);
    /* What Kubernetes defines for a service named keel: not key paths (no __), so ignored. */
    setenv("KEEL_PORT", "tcp://10.0.0.7:5432", 1);
    setenv("KEEL_PORT_5432_TCP_ADDR", "10.0.0.7", 1);
    setenv("KEEL_SERVICE_HOST", "10.0.0.7", 1);
    setenv("KEEL_X", "y__z", 1); /* the __ of a value does not count */
    /* Levels under a name that is no section are someone else's too. */
    setenv("KEEL_FEATURE__FLAGS", "a", 1);
    setenv("KEEL_POOL", "p", 1);           /* a section without a level */
    setenv("KEEL_DEFAULTS", "x", 1);       /* not KEEL_DEFAULT */
    setenv("KEEL_DATABASES_HOST", "h", 1); /* KEEL_DATABASES followed by one _ */
    OK(keel_config_apply_env(cfg, &err));
    /* Ignored variables are listed by name, sorted; KEEL_CONFIG is keel's own and not listed. */
    const char *want[] = { "KEEL_DATABASES_HOST", "KEEL_DEFAULTS",       "KEEL_FEATURE__FLAGS",
                           "KEEL_POOL",           "KEEL_PORT",           "KEEL_PORT_5432_TCP_ADDR",
                           "KEEL_SERVICE_HOST",   "KEEL_TEST_SOMETHING", "KEEL_X" };
    size_t nwant = sizeof want / sizeof want[0], found = 0;
    for (size_t i = 0; i < keel_config_ignored_env_count(cfg); i++) {
        const char *name = keel_config_ignored_env(cfg, i);
        CHECK(strncmp(name, "KEEL_", 5) == 0 && !strchr(name, '='));
        CHECK(strcmp(name, "KEEL_CONFIG") != 0 && strcmp(name, "KEEL_DEFAULT") != 0);
        if (i > 0)
            CHECK(strcmp(keel_config_ignored_env(cfg, i - 1), name) < 0);
        for (size_t j = 0; j < nwant; j++)
            found += strcmp(name, want[j]) == 0;
    }
    CHECK_INT(found, nwant);
    CHECK(keel_config_ignored_env(cfg, keel_config_ignored_env_count(cfg)) == NULL);
    keel_config *copy = keel__config_clone(cfg);
    CHECK_INT(keel_config_ignored_env_count(copy), keel_config_ignored_env_count(cfg));
    keel_config_free(copy);
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "postgresql");
        CHECK_STR(d->host, "envhost");
        CHECK_INT(d->port, 5544);
        CHECK_STR(d->user, "envuser");
        CHECK_STR(d->password, "file-pw"); /* the environment's url has none */
        CHECK_INT(d->max_size, 7);
        CHECK_INT(d->min_size, 3);
    }
    CHECK_STR(keel_config_default_database(cfg), "main");

    unsetenv("KEEL_PORT");
    unsetenv("KEEL_PORT_5432_TCP_ADDR");
    unsetenv("KEEL_SERVICE_HOST");
    unsetenv("KEEL_X");
    unsetenv("KEEL_FEATURE__FLAGS");
    unsetenv("KEEL_POOL");
    unsetenv("KEEL_DEFAULTS");
    unsetenv("KEEL_DATABASES_HOST");

    /* A key path with a typo is still an error, with the suggestion. */
    setenv("KEEL_DATABASES__MAIN__POL__MAX_SIZE", "7", 1);
    CHECK_INT(keel_config_apply_env(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "environment variable KEEL_DATABASES__MAIN__POL__MAX_SIZE: unknown "
                                "configuration key 'databases.main.pol.max_size'");
    unsetenv("KEEL_DATABASES__MAIN__POL__MAX_SIZE");

    setenv("KEEL_DATABASES__MAIN__PORT", "none", 1);
    CHECK_INT(keel_config_apply_env(cfg, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message,
                   "environment variable KEEL_DATABASES__MAIN__PORT: databases.main.port:");
    unsetenv("KEEL_DATABASES__MAIN__PORT");

    setenv("KEEL_DATABASES__MAIN__URL", "postgresql://u:hunter2@h:port/db", 1);
    CHECK_INT(keel_config_apply_env(cfg, &err), KEEL_ERR_URL);
    CHECK_CONTAINS(err.message, "KEEL_DATABASES__MAIN__URL");
    CHECK_NO_SECRET(err.message, "hunter2");

    unsetenv("KEEL_DATABASES__MAIN__URL");
    unsetenv("KEEL_DATABASES__MAIN__POOL__MAX_SIZE");
    unsetenv("KEEL_POOL__MIN_SIZE");
    unsetenv("KEEL_DEFAULT");
    unsetenv("KEEL_TEST_SOMETHING");
    unsetenv("KEEL_CONFIG");
    keel_config_free(cfg);
}

TEST(resolve_env_references) {
    keel_error err;
    char *out = NULL;
    setenv("KEEL_TEST_DB_PASS", "pa$$word", 1);
    setenv("KEEL_TEST_DB_USER", "svc", 1);
    OK(keel__config_resolve("${env:KEEL_TEST_DB_PASS}", "databases.main.password", &out, &err));
    CHECK_STR(out, "pa$$word");
    free(out);
    OK(keel__config_resolve("user=${env:KEEL_TEST_DB_USER};pw=${env:KEEL_TEST_DB_PASS}!", "k", &out,
                            &err));
    CHECK_STR(out, "user=svc;pw=pa$$word!");
    free(out);
    OK(keel__config_resolve("literal $${env:KEEL_TEST_DB_PASS} and $5 and $$", "k", &out, &err));
    CHECK_STR(out, "literal ${env:KEEL_TEST_DB_PASS} and $5 and $$");
    free(out);
    OK(keel__config_resolve("plain", "k", &out, &err));
    CHECK_STR(out, "plain");
    free(out);
    OK(keel__config_resolve("", "k", &out, &err));
    CHECK_STR(out, "");
    free(out);

    unsetenv("KEEL_TEST_MISSING_PASS");
    keel_error_clear(&err);
    CHECK_INT(keel__config_resolve("x${env:KEEL_TEST_DB_PASS}${env:KEEL_TEST_MISSING_PASS}",
                                   "databases.main.password", &out, &err),
              KEEL_ERR_CONFIG);
    CHECK(out == NULL);
    CHECK_STR(err.message,
              "databases.main.password: environment variable 'KEEL_TEST_MISSING_PASS' is "
              "not set");
    CHECK_NO_SECRET(err.message, "pa$$word");
    keel_error_clear(&err);
    CHECK_INT(keel__config_resolve("${env:KEEL_TEST_DB_PASS", "k", &out, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "k: unterminated '${' reference");
    unsetenv("KEEL_TEST_DB_PASS");
    unsetenv("KEEL_TEST_DB_USER");
}

TEST(resolve_file_references) {
    keel_error err;
    char path[64], path2[64], ref[128], ref2[160];
    char *out = NULL;
    write_temp(path, "file-secret-42\n\n");
    snprintf(ref, sizeof ref, "${file:%s}", path);
    OK(keel__config_resolve(ref, "databases.main.password", &out, &err));
    CHECK_STR(out, "file-secret-42");
    free(out);

    write_temp(path2, "line1\nline2\r\n");
    snprintf(ref2, sizeof ref2, "[${file:%s}]", path2);
    OK(keel__config_resolve(ref2, "k", &out, &err));
    CHECK_STR(out, "[line1\nline2]");
    free(out);

    unlink(path);
    keel_error_clear(&err);
    CHECK_INT(keel__config_resolve(ref, "databases.main.password", &out, &err), KEEL_ERR_CONFIG);
    CHECK(out == NULL);
    CHECK_CONTAINS(err.message, "databases.main.password: cannot read secret file '");
    CHECK_CONTAINS(err.message, path);
    CHECK_CONTAINS(err.message, "No such file or directory");
    keel_error_clear(&err);
    CHECK_INT(keel__config_resolve("${file:/tmp}", "k", &out, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "'/tmp'");

    /* Through the config: stored unresolved, resolved when asked, errors free of the secret. */
    keel_config *cfg = new_config();
    char refpw[96];
    snprintf(refpw, sizeof refpw, "${file:%s}", path2);
    OK(keel_config_set(cfg, "databases.main.url", "postgresql://app@h/db", &err));
    OK(keel_config_set(cfg, "databases.main.password", refpw, &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->password, refpw);
        OK(keel__config_resolve(d->password, "databases.main.password", &out, &err));
        CHECK_STR(out, "line1\nline2");
        free(out);
    }
    /* A file that cannot be a secret (it holds a NUL byte) is rejected without showing it. */
    write_temp(path, "topsecret");
    FILE *f = fopen(path, "ab");
    CHECK(f != NULL);
    if (f) {
        fputc('\0', f);
        fputs("tail", f);
        fclose(f);
    }
    snprintf(ref, sizeof ref, "${file:%s}", path);
    keel_error_clear(&err);
    CHECK_INT(keel__config_resolve(ref, "x", &out, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "contains a NUL byte");
    CHECK_NO_SECRET(err.message, "topsecret");
    unlink(path);
    unlink(path2);
    keel_config_free(cfg);
}

TEST(password_reference_inside_url) {
    keel_config *cfg = new_config();
    keel_error err;
    setenv("KEEL_TEST_URL_PW", "p@ss", 1);
    OK(keel_config_set(cfg, "databases.main.url", "postgresql://app:${env:KEEL_TEST_URL_PW}@h/db",
                       &err));
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "main");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->password, "${env:KEEL_TEST_URL_PW}");
        char *out = NULL;
        OK(keel__config_resolve(d->password, "databases.main.password", &out, &err));
        CHECK_STR(out, "p@ss");
        free(out);
    }
    unsetenv("KEEL_TEST_URL_PW");
    keel_config_free(cfg);
}

TEST(yaml_good_file) {
    char path[64];
    write_temp(path, "# keel configuration\n"
                     "default: main\n"
                     "pool:\n"
                     "  max_size: 12\n"
                     "databases:\n"
                     "  main:\n"
                     "    url: \"postgresql://app@db:5432/orders?application_name=svc\"\n"
                     "    password: ${env:KEEL_TEST_YAML_PW}\n"
                     "    connect_timeout: 2.5\n"
                     "    pool:\n"
                     "      min_size: 2\n"
                     "    options:\n"
                     "      sslmode: disable\n"
                     "  local:\n"
                     "    engine: sqlite\n"
                     "    database: ':memory:'\n"
                     "    host:\n"
                     "  local.pool.max_size: 3\n"
                     "migrations:\n"
                     "  directory: migrations\n"
                     "  enabled: true\n"
                     "cache: ~\n");
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_load_file(cfg, path, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_INT(keel_config_database_count(cfg), 2);
    CHECK_STR(keel_config_database_name(cfg, 0), "main");
    CHECK_STR(keel_config_database_name(cfg, 1), "local");
    CHECK_STR(keel_config_default_database(cfg), "main");
    const keel__dbconfig *m = keel__config_database(cfg, "main");
    const keel__dbconfig *l = keel__config_database(cfg, "local");
    CHECK(m && l);
    if (m && l) {
        CHECK_STR(m->host, "db");
        CHECK_STR(m->password, "${env:KEEL_TEST_YAML_PW}");
        CHECK(m->connect_timeout == 2.5);
        CHECK_INT(m->min_size, 2);
        CHECK_INT(m->max_size, 12);
        CHECK_STR(keel__dbconfig_option(m, "sslmode"), "disable");
        CHECK_STR(keel__dbconfig_option(m, "application_name"), "svc");
        CHECK_STR(l->engine, "sqlite");
        CHECK_STR(l->database, ":memory:");
        CHECK(l->host == NULL); /* a YAML null leaves the key unset */
        CHECK_INT(l->max_size, 3);
    }
    unlink(path);
    keel_config_free(cfg);
}

/* A path to an SQLite database, by its name or by its header, configures databases.default. */
TEST(sqlite_database_as_configuration_file) {
    keel_error err;
    const char *names[] = { "/nonexistent/dir/notes.db", "./data/app.sqlite3", "x.SQLite",
                            "rel.DB" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        keel_config *cfg = new_config();
        /* By name: nothing is read (the file need not exist). */
        OK(keel_config_load_file(cfg, names[i], &err));
        OK(keel_config_validate(cfg, &err));
        CHECK_INT(keel_config_is_builtin_default(cfg), 0);
        CHECK_STR(keel_config_default_database(cfg), "default");
        const keel__dbconfig *d = keel__config_database(cfg, "default");
        CHECK(d != NULL);
        if (d) {
            CHECK_STR(d->engine, "sqlite");
            CHECK_STR(d->database, names[i]);
        }
        keel_config_free(cfg);
    }
    /* By its header, whatever its name. */
    char path[64];
    static const char db[] = "SQLite format 3\0\x10\0\x01\x01";
    strcpy(path, "/tmp/keel_test_config_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, db, sizeof db) == (ssize_t)sizeof db);
    close(fd);
    keel_config *cfg = new_config();
    OK(keel_config_load_file(cfg, path, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_STR(keel_config_database_engine(cfg, "default"), "sqlite");
    const keel__dbconfig *d = keel__config_database(cfg, "default");
    CHECK(d && strcmp(d->database, path) == 0);
    keel_config_free(cfg);
    unlink(path);
    /* A YAML file that merely mentions it, a file shorter than the header, a directory named
     * like a database: not taken for one. */
    write_temp(path, "# SQLite format 3\ndatabases:\n  y:\n    url: \"sqlite::memory:\"\n");
    cfg = new_config();
    OK(keel_config_load_file(cfg, path, &err));
    OK(keel_config_validate(cfg, &err));
    CHECK_STR(keel_config_default_database(cfg), "y");
    keel_config_free(cfg);
    unlink(path);
    write_temp(path, "SQLite format");
    cfg = new_config();
    keel_error_clear(&err);
    CHECK_INT(keel_config_load_file(cfg, path, &err), KEEL_ERR_CONFIG);
    keel_config_free(cfg);
    unlink(path);
    cfg = new_config();
    CHECK_INT(keel_config_load_file(cfg, "/tmp/", &err), KEEL_ERR_IO);
    CHECK_INT(keel_config_load_file(cfg, "/nonexistent/keel.yaml.db/", &err), KEEL_ERR_IO);
    keel_config_free(cfg);
}

/*
 * The SQLite database named as the configuration is its default database's URL: the
 * environment's KEEL_DATABASES__DEFAULT__URL replaces it (as it replaces a YAML file's url), and
 * a path with URL syntax in it ('?', '#', '%') still names that file.
 */
TEST(sqlite_database_as_configuration_file_yields_to_the_environment) {
    keel_error err;
    keel_config *cfg = new_config();
    OK(keel_config_load_file(cfg, "notes.db", &err));
    setenv("KEEL_DATABASES__DEFAULT__URL", "postgresql://app@db.internal/app", 1);
    setenv("KEEL_DATABASES__DEFAULT__POOL__MAX_SIZE", "4", 1);
    keel_status st = keel_config_apply_env(cfg, &err);
    unsetenv("KEEL_DATABASES__DEFAULT__URL");
    unsetenv("KEEL_DATABASES__DEFAULT__POOL__MAX_SIZE");
    OK(st);
    OK(keel_config_validate(cfg, &err));
    const keel__dbconfig *d = keel__config_database(cfg, "default");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->engine, "postgresql");
        CHECK_STR(d->database, "app");
        CHECK_STR(d->host, "db.internal");
        CHECK_INT(d->max_size, 4);
    }
    keel_config_free(cfg);

    const char *odd[] = { "/tmp/a?b#c%41.db", "rel dir/x%y.sqlite", "/abs/z.sqlite3",
                          "./d\xc3\xa9j\xc3\xa0 vu/n:o@t+e=s;.DB" };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        cfg = new_config();
        OK(keel_config_load_file(cfg, odd[i], &err));
        OK(keel_config_validate(cfg, &err));
        d = keel__config_database(cfg, "default");
        CHECK(d != NULL);
        if (d) {
            CHECK_STR(d->engine, "sqlite");
            CHECK_STR(d->database, odd[i]);
        }
        keel_config_free(cfg);
    }
}

TEST(yaml_empty_file) {
    char path[64];
    keel_config *cfg = new_config();
    keel_error err;
    write_temp(path, "");
    OK(keel_config_load_file(cfg, path, &err));
    unlink(path);
    write_temp(path, "# only a comment\n---\n");
    OK(keel_config_load_file(cfg, path, &err));
    unlink(path);
    CHECK_INT(keel_config_database_count(cfg), 0);
    keel_config_free(cfg);
}

/* Loads text from a temporary file named like the user's; the error message is left in err. */
static keel_status load_text(const char *text, char *path, keel_error *err) {
    write_temp(path, text);
    keel_config *cfg = new_config();
    keel_error_clear(err);
    keel_status st = keel_config_load_file(cfg, path, err);
    keel_config_free(cfg);
    unlink(path);
    return st;
}

TEST(yaml_bad_files) {
    char path[64], want[160];
    keel_error err;
    CHECK_INT(load_text("databases:\n"
                        "  main:\n"
                        "    url: sqlite:///x.db\n"
                        "    pool:\n"
                        "      min_size: 1\n"
                        "\n"
                        "      max_size: x\n",
                        path, &err),
              KEEL_ERR_CONFIG);
    snprintf(want, sizeof want,
             "%s:7: databases.main.pool.max_size: expected a non-negative integer, got 'x'", path);
    CHECK_STR(err.message, want);

    CHECK_INT(load_text("databases:\n  main:\n    hosts:\n      - a\n      - b\n", path, &err),
              KEEL_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:4: databases.main.hosts: lists are not supported", path);
    CHECK_CONTAINS(err.message, want);

    CHECK_INT(load_text("pool:\n  max_sise: 3\n", path, &err), KEEL_ERR_CONFIG);
    snprintf(want, sizeof want,
             "%s:2: unknown configuration key 'pool.max_sise' (did you mean 'pool.max_size'?)",
             path);
    CHECK_STR(err.message, want);

    CHECK_INT(
        load_text("databases:\n  main:\n    url: postgresql://u:hunter2@h:99999/db\n", path, &err),
        KEEL_ERR_URL);
    snprintf(want, sizeof want, "%s:3: databases.main.url: invalid port '99999'", path);
    CHECK_CONTAINS(err.message, want);
    CHECK_NO_SECRET(err.message, "hunter2");

    CHECK_INT(load_text("databases:\n  main:\n    url: \"sqlite://\n", path, &err),
              KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "invalid YAML");
    CHECK_CONTAINS(err.message, path);

    CHECK_INT(load_text("- a\n- b\n", path, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "top level must be a mapping");

    CHECK_INT(load_text("pool:\n  min_size: &x 1\n  max_size: *x\n", path, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "aliases");

    CHECK_INT(load_text("default: a\n---\ndefault: b\n", path, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "only one YAML document");

    /* A value holding NUL (YAML's \0 escape) would be cut short in C: refused. */
    CHECK_INT(load_text("databases:\n  main:\n    password: \"ab\\0cd\"\n", path, &err),
              KEEL_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:3: databases.main.password: value contains a NUL character",
             path);
    CHECK_STR(err.message, want);
    CHECK_INT(load_text("databases:\n  \"\": {url: \"sqlite::memory:\"}\n", path, &err),
              KEEL_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: databases: empty or invalid key", path);
    CHECK_STR(err.message, want);
    CHECK_INT(load_text("databases:\n  ? [a, b]\n  : 1\n", path, &err), KEEL_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: databases: mapping keys must be plain text", path);
    CHECK_STR(err.message, want);
    /* Deeper than any key goes, before the key is looked at: a bounded walk of any input. */
    char deep[400] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "a: {");
    strcat(deep, "b: 1");
    for (int i = 0; i < 40; i++)
        strcat(deep, "}");
    strcat(deep, "\n");
    CHECK_INT(load_text(deep, path, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "nested too deeply");
}

TEST(yaml_unreadable_file) {
    keel_config *cfg = new_config();
    keel_error err;
    keel_error_clear(&err);
    CHECK_INT(keel_config_load_file(cfg, "/nonexistent/dir/keel.yaml", &err), KEEL_ERR_IO);
    CHECK_STR(
        err.message,
        "cannot read configuration file '/nonexistent/dir/keel.yaml': No such file or directory");
    keel_error_clear(&err);
    CHECK_INT(keel_config_load_file(cfg, "/tmp", &err), KEEL_ERR_IO);
    CHECK_CONTAINS(err.message, "'/tmp': Is a directory");
    keel_config_free(cfg);
}

TEST(clone_is_equal_and_independent) {
    keel_config *cfg = new_config();
    keel_error err;
    OK(keel_config_set(cfg, "databases.main.url",
                       "postgresql://u:pw@h:5433/db?application_name=a&max_size=4", &err));
    OK(keel_config_set(cfg, "databases.main.options.sslmode", "disable", &err));
    OK(keel_config_set(cfg, "databases.aux.url", "sqlite:///aux.db", &err));
    OK(keel_config_set(cfg, "pool.acquire_timeout", "3", &err));
    OK(keel_config_set(cfg, "default", "main", &err));
    OK(keel_config_set(cfg, "migrations.directory", "m", &err));
    OK(keel_config_validate(cfg, &err));
    keel_config *copy = keel__config_clone(cfg);
    CHECK(copy != NULL);
    if (!copy) {
        keel_config_free(cfg);
        return;
    }
    CHECK_INT(keel_config_database_count(copy), 2);
    CHECK_STR(keel_config_database_name(copy, 0), "main");
    CHECK_STR(keel_config_database_name(copy, 1), "aux");
    CHECK_STR(keel_config_default_database(copy), "main");
    const keel__dbconfig *a = keel__config_database(cfg, "main");
    const keel__dbconfig *b = keel__config_database(copy, "main");
    CHECK(a && b && a != b);
    if (a && b) {
        CHECK_STR(b->url, a->url);
        CHECK(b->url != a->url);
        CHECK_STR(b->host, "h");
        CHECK_INT(b->port, 5433);
        CHECK_STR(b->password, "pw");
        CHECK_INT(b->max_size, 4);
        CHECK(b->acquire_timeout == 3.0);
        CHECK_INT(b->noptions, a->noptions);
        CHECK_STR(keel__dbconfig_option(b, "application_name"), "a");
        CHECK_STR(keel__dbconfig_option(b, "sslmode"), "disable");
    }
    /* Changing or freeing the original leaves the copy intact. */
    OK(keel_config_set(cfg, "databases.main.host", "changed", &err));
    OK(keel_config_validate(cfg, &err));
    a = keel__config_database(cfg, "main");
    CHECK(a != NULL);
    if (a)
        CHECK_STR(a->host, "changed");
    keel_config_free(cfg);
    b = keel__config_database(copy, "main");
    CHECK(b != NULL);
    if (b)
        CHECK_STR(b->host, "h");
    OK(keel_config_set(copy, "databases.third.url", "sqlite://", &err));
    OK(keel_config_validate(copy, &err));
    CHECK_INT(keel_config_database_count(copy), 3);
    keel_config_free(copy);

    /* An unvalidated config clones too, and stays unvalidated. */
    cfg = new_config();
    OK(keel_config_set(cfg, "databases.x.url", "sqlite://", &err));
    copy = keel__config_clone(cfg);
    CHECK(copy != NULL);
    CHECK(keel__config_database(copy, "x") == NULL);
    OK(keel_config_validate(copy, &err));
    CHECK(keel__config_database(copy, "x") != NULL);
    keel_config_free(copy);
    keel_config_free(cfg);
    CHECK(keel__config_clone(NULL) == NULL);
    keel_config_free(NULL);
}

int main(void) {
    RUN(url_with_query_parameters);
    RUN(explicit_keys_and_defaults);
    RUN(no_config_is_default_sqlite);
    RUN(database_url_when_nothing_else_is_configured);
    RUN(set_url_convenience);
    RUN(pool_override_order);
    RUN(pool_lifecycle_keys);
    RUN(later_values_win_field_by_field);
    RUN(database_order_is_first_mention);
    RUN(value_errors_name_the_key);
    RUN(unknown_keys);
    RUN(unknown_keys_are_corrected_only_into_keys_of_their_shape);
    RUN(validation_errors);
    RUN(default_database_rules);
    RUN(engines_missing_from_the_build);
    RUN(validate_calls_engine_check);
    RUN(environment_overrides);
    RUN(resolve_env_references);
    RUN(resolve_file_references);
    RUN(password_reference_inside_url);
    RUN(yaml_good_file);
    RUN(yaml_empty_file);
    RUN(sqlite_database_as_configuration_file);
    RUN(sqlite_database_as_configuration_file_yields_to_the_environment);
    RUN(yaml_bad_files);
    RUN(yaml_unreadable_file);
    RUN(clone_is_equal_and_independent);
    return TEST_SUMMARY();
}
