/* tests/c/core/test_config_refusals.c - configuration calls a caller gets wrong: sections set as values, oversized secret files, missing arguments; each named. */
#include <stdio.h>
#include <unistd.h>

#include "core/config_int.h"
#include "support.h"

/* A section of the configuration is not a value: setting one names it and says what to set. */
TEST(a_section_set_as_a_value_is_refused_naming_it) {
    keel_config *cfg = NULL;
    keel_error err;
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    static const char *const sections[] = { "pool", "databases", "databases.main.pool",
                                            "databases.main.options" };
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        CHECK_INT(keel_config_set(cfg, sections[i], "x", &err), KEEL_ERR_CONFIG);
        char want[160];
        snprintf(want, sizeof want,
                 "configuration key '%s' is a section, not a value: set one of its keys",
                 sections[i]);
        CHECK_CONTAINS(err.message, want);
    }
    /* The configuration is untouched: a database set afterwards validates. */
    CHECK_INT(keel_config_set(cfg, "databases.main.url", "sqlite::memory:", &err), KEEL_OK);
    CHECK_INT(keel_config_validate(cfg, &err), KEEL_OK);
    keel_config_free(cfg);
}

/* A ${file:…} secret is read whole when it is resolved; a file larger than a megabyte is not a
 * secret but a mistake (a log, a dump), refused naming the key and the file. */
TEST(a_secret_file_larger_than_a_megabyte_is_refused) {
    char path[] = "/tmp/keel-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    static char block[64 * 1024];
    memset(block, 'x', sizeof block);
    for (int i = 0; i < 17; i++)
        CHECK_INT(write(fd, block, sizeof block), (long long)sizeof block);
    close(fd);
    char ref[64];
    snprintf(ref, sizeof ref, "${file:%s}", path);
    char *out = NULL;
    keel_error err;
    CHECK_INT(keel__config_resolve(ref, "databases.main.password", &out, &err), KEEL_ERR_CONFIG);
    CHECK(out == NULL);
    CHECK_CONTAINS(err.message, "databases.main.password: secret file '");
    CHECK_CONTAINS(err.message, "' is larger than 1048576 bytes");
    /* Under the limit, the same file is the secret. */
    CHECK_INT(truncate(path, 1000), 0);
    CHECK_INT(keel__config_resolve(ref, "databases.main.password", &out, &err), KEEL_OK);
    CHECK(out && strlen(out) == 1000);
    free(out);
    unlink(path);
}

/* Calls without the object they work on say which argument is missing. */
TEST(calls_without_their_configuration_are_refused) {
    keel_error err;
    CHECK_INT(keel_config_new(NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "keel_config_new: out must not be NULL");
    CHECK_INT(keel_config_apply_env(NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "keel_config_apply_env: cfg must not be NULL");
    CHECK_INT(keel_config_validate(NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "keel_config_validate: cfg must not be NULL");
    char *out = NULL;
    CHECK_INT(keel__config_resolve("x", "k", NULL, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(keel__config_resolve(NULL, "k", &out, &err), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL);
}

int main(void) {
    RUN(a_section_set_as_a_value_is_refused_naming_it);
    RUN(a_secret_file_larger_than_a_megabyte_is_refused);
    RUN(calls_without_their_configuration_are_refused);
    return TEST_SUMMARY();
}
