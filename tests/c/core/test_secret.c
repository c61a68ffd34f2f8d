/* tests/c/core/test_secret.c - secrets are wiped before their memory is freed, in the core and in every engine. */
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <keel/keel.h>

#include "core/config_int.h"
#include "core/secret.h"
#include "core/url.h"
#include "support.h"
#include "test.h"

/*
 * This test is linked with -Wl,--wrap=free,--wrap=realloc: every free and realloc called by
 * libkeel (linked statically into it) comes here first, while the client libraries' own calls
 * (shared objects) do not. A block handed back that still contains the secret watched for is
 * counted: a realloc is counted too, since it may move the block and free the old one as is.
 */
void __real_free(void *p);
void *__real_realloc(void *p, size_t n);

static const char *watched;
static int residues;

static void inspect(void *p) {
    if (!p || !watched)
        return;
    size_t n = malloc_usable_size(p), w = strlen(watched);
    if (memmem(p, n, watched, w))
        residues++;
}

void __wrap_free(void *p) {
    inspect(p);
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n) {
    inspect(p);
    return __real_realloc(p, n);
}

/* A secret long enough that buffers holding it grow while it is written. */
static char secret[600];

static void watch(void) {
    residues = 0;
    watched = secret;
}

static int stop_watching(void) {
    watched = NULL;
    return residues;
}

TEST(secret_free_wipes) {
    char *s = strdup(secret);
    watch();
    keel__secret_free(s);
    keel__secret_free(NULL);
    keel__buf b = { .secret = 1 };
    for (int i = 0; i < 4; i++)
        CHECK_INT(keel__buf_puts(&b, secret), 0);
    keel__secret_buf_free(&b);
    CHECK_INT(stop_watching(), 0);
}

TEST(configuration_wipes_passwords_and_urls) {
    char url[1400];
    snprintf(url, sizeof url, "postgresql://app:%s@db/app?sslpassword=%s", secret, secret);
    watch();
    keel_config *cfg = NULL;
    keel_error err;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", url, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.password", secret, &err), KEEL_OK);
    /* Replacing a value frees the old one. */
    CHECK_INT(keel_config_set(cfg, "databases.main.password", "other", &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", "sqlite::memory:", &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.url", url, &err), KEEL_OK);
    CHECK_INT(keel_config_set(cfg, "databases.main.options.sslpassword", secret, &err), KEEL_OK);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_OK);
    keel_config *clone = keel__config_clone(cfg);
    CHECK(clone != NULL);
    keel_config_free(clone);
    keel_config_free(cfg);
    keel__url u;
    CHECK_INT(keel__url_parse(url, &u, &err), KEEL_OK);
    keel__url_free(&u);
    CHECK_INT(stop_watching(), 0);
}

TEST(resolved_references_are_wiped) {
    char path[] = "/tmp/keel-test-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    for (int i = 0; i < 10; i++)
        CHECK(write(fd, secret, strlen(secret)) == (ssize_t)strlen(secret));
    close(fd);
    setenv("KEEL_TEST_WIPE_PW", secret, 1);
    char ref[128];
    snprintf(ref, sizeof ref, "${file:%s}", path);
    watch();
    keel_error err;
    char *out = NULL;
    CHECK_INT(keel__config_resolve("pw=${env:KEEL_TEST_WIPE_PW};", "x", &out, &err), KEEL_OK);
    keel__secret_free(out);
    CHECK_INT(keel__config_resolve(ref, "x", &out, &err), KEEL_OK);
    CHECK_INT(strlen(out), 10 * strlen(secret));
    keel__secret_free(out);
    /* A YAML file with the password written inline. */
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "databases:\n  main:\n    url: \"sqlite::memory:\"\n    password: %s\n", secret);
        fclose(f);
    }
    keel_config *cfg = NULL;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_load_file(cfg, path, &err), KEEL_OK);
    keel_config_free(cfg);
    CHECK_INT(stop_watching(), 0);
    unlink(path);
}

/* Connects to url with the password given by reference, runs one statement when the login
 * succeeds (PostgreSQL trusts; MariaDB and MongoDB refuse the password), and closes. */
static void connect_with_secret(const char *url, const char *user) {
    const char *extra[] = { "databases.default.password", "${env:KEEL_TEST_WIPE_PW}",
                            user ? "databases.default.user" : NULL, user, NULL };
    watch();
    keel_db *db = open_url(url, extra);
    if (db) {
        keel_conn *c = NULL;
        keel_error err;
        if (keel_db_acquire_sync(db, NULL, &c, &err) == KEEL_OK) {
            keel_conn_ping_sync(c, &err);
            keel_conn_release(c);
        } else {
            CHECK(strstr(err.message, secret) == NULL);
        }
        keel_db_close(db);
    }
    int found = stop_watching();
    if (found)
        fprintf(stderr, "    %d blocks freed with the password in them (%s)\n", found, url);
    CHECK_INT(found, 0);
}

TEST(engines_wipe_their_copies_of_secrets) {
    setenv("KEEL_TEST_WIPE_PW", secret, 1);
    connect_with_secret(pg_url(), NULL);
    connect_with_secret(my_url(), NULL);
    connect_with_secret(mongo_url(), "wipe_user");
    connect_with_secret("sqlite::memory:", NULL);
}

int main(void) {
    for (size_t i = 0; i + 1 < sizeof secret; i++)
        secret[i] = "Wipe0123456789abcdefghijklmnopqrstuvwxyz"[i % 40];
    RUN(secret_free_wipes);
    RUN(configuration_wipes_passwords_and_urls);
    RUN(resolved_references_are_wiped);
    RUN(engines_wipe_their_copies_of_secrets);
    return TEST_SUMMARY();
}
