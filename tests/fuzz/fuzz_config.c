/* tests/fuzz/fuzz_config.c - libFuzzer target: configuration key paths and values. */
#include "fuzz.h"

#include <keel/config.h>

#include "core/config_int.h"
#include "core/error_int.h"

/*
 * The input is a list of "key.path=value" lines, applied in order with keel_config_set (a line
 * without '=' sets its whole text as the value of "default"); the configuration is then
 * validated, cloned and read back. A password given under a key ending in "password" must
 * never appear in an error message.
 */

/* A value long and distinctive enough that finding it in a message means it was echoed. */
static int distinctive(const char *input, const char *v) {
    return strlen(v) >= 4 && !strpbrk(v, "$*{}:@'\"") && fuzz_count(input, v) == 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void check_message(const keel_error *err, char *const *secrets, size_t nsecrets) {
    FUZZ_ASSERT(memchr(err->message, '\0', sizeof err->message) != NULL);
    for (size_t i = 0; i < nsecrets; i++)
        FUZZ_ASSERT(strstr(err->message, secrets[i]) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *input = fuzz_cstring(data, size);
    keel_config *cfg = NULL;
    keel_error err;
    FUZZ_ASSERT(keel_config_new(&cfg, &err) == KEEL_OK);
    char *secrets[64];
    size_t nsecrets = 0;
    /* First pass: collect the passwords, so that an earlier line's error cannot echo a later
     * line's password either. */
    char *copy = strdup(input);
    FUZZ_ASSERT(copy != NULL);
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        if (ends_with(line, "password") && distinctive(input, eq + 1) && nsecrets < 64)
            secrets[nsecrets++] = eq + 1;
    }
    char *work = strdup(input);
    FUZZ_ASSERT(work != NULL);
    for (char *line = work, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        const char *path = "default", *value = line;
        if (eq) {
            *eq = '\0';
            path = line;
            value = eq + 1;
        }
        keel_error_clear(&err);
        keel_status st = keel_config_set(cfg, path, value, &err);
        if (st != KEEL_OK) {
            FUZZ_ASSERT(err.code == st);
            check_message(&err, secrets, nsecrets);
        } else if (!strstr(value, "file:")) {
            /* Resolving reads the environment only (files could block: a FIFO, /dev/stdin). */
            char *resolved = NULL;
            keel_error rerr;
            if (keel__config_resolve(value, path, &resolved, &rerr) == KEEL_OK)
                FUZZ_ASSERT(resolved != NULL);
            else
                check_message(&rerr, secrets, nsecrets);
            free(resolved);
        }
    }
    keel_error_clear(&err);
    keel_status st = keel_config_validate(cfg, &err);
    if (st == KEEL_OK) {
        size_t n = keel_config_database_count(cfg);
        FUZZ_ASSERT(n >= 1);
        FUZZ_ASSERT(keel_config_default_database(cfg) != NULL);
        keel_config *clone = keel__config_clone(cfg);
        FUZZ_ASSERT(clone != NULL);
        FUZZ_ASSERT(keel_config_database_count(clone) == n);
        for (size_t i = 0; i < n; i++) {
            const keel__dbconfig *a = keel__config_database_at(cfg, i);
            const keel__dbconfig *b = keel__config_database_at(clone, i);
            FUZZ_ASSERT(a && b && strcmp(a->name, b->name) == 0 && a->noptions == b->noptions);
            FUZZ_ASSERT(a->min_size <= a->max_size && a->max_size >= 1);
            FUZZ_ASSERT(keel_config_database_engine(cfg, a->name) != NULL);
        }
        keel_config_free(clone);
    } else {
        FUZZ_ASSERT(err.code == st);
        check_message(&err, secrets, nsecrets);
    }
    keel_config_free(cfg);
    free(work);
    free(copy);
    free(input);
    return 0;
}
