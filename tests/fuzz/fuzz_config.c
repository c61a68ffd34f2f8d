/* tests/fuzz/fuzz_config.c - libFuzzer target: configuration key paths and values. */
#include "fuzz.h"

#include <keel/config.h>

#include "core/config_int.h"
#include "core/error_int.h"

/*
 * The input is a list of "key.path=value" lines, applied in order with keel_config_set (a line
 * without '=' sets its whole text as the value of "default"); the configuration is then
 * validated, cloned and read back. A password given under a key ending in "password" must
 * never be echoed in an error message.
 */

/* A password the check can follow: written once, long enough to tell apart, and without the
 * characters of references (${env:…}), masks and quotes, so that replacing its letters changes
 * nothing but the password. */
static int distinctive(const char *input, const char *v) {
    return strlen(v) >= 4 && !strpbrk(v, "$*{}:@'\"") && fuzz_count(input, v) == 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/*
 * One pass over the input: every message of a failed step, in order (a step is a line's
 * keel_config_set, its resolution, and the final validation). messages[] has 2 * lines + 1 slots,
 * NULL for a step that did not fail.
 */
static void record(char **slot, const keel_error *err, keel_status st) {
    FUZZ_ASSERT(err->code == st);
    FUZZ_ASSERT(memchr(err->message, '\0', sizeof err->message) != NULL);
    *slot = strdup(err->message);
    FUZZ_ASSERT(*slot != NULL);
}

static void run(const char *input, char **messages) {
    keel_config *cfg = NULL;
    keel_error err;
    FUZZ_ASSERT(keel_config_new(&cfg, &err) == KEEL_OK);
    char *work = strdup(input);
    FUZZ_ASSERT(work != NULL);
    size_t step = 0;
    for (char *line = work, *next; line; line = next, step += 2) {
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
            record(&messages[step], &err, st);
        } else if (!strstr(value, "file:")) {
            /* Resolving reads the environment only (files could block: a FIFO, /dev/stdin). */
            char *resolved = NULL;
            st = keel__config_resolve(value, path, &resolved, &err);
            if (st == KEEL_OK)
                FUZZ_ASSERT(resolved != NULL);
            else
                record(&messages[step + 1], &err, st);
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
        record(&messages[step], &err, st);
    }
    keel_config_free(cfg);
    free(work);
}

/*
 * The check is differential: a message may hold a password's text without having echoed it,
 * when the text is a piece of the message's own words ("esql" in "expected postgresql, …"). So
 * when a message of the first pass holds a password, the input runs again with every password
 * replaced by other letters of the same length (passwords are not validated, so every step
 * takes the same path); a message that holds the password more often in the first pass than in
 * the second echoed it.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *input = fuzz_cstring(data, size);
    size_t lines = 1 + fuzz_count(input, "\n");
    size_t nsteps = 2 * lines + 1;
    char **first = calloc(nsteps, sizeof *first);
    FUZZ_ASSERT(first != NULL);
    run(input, first);

    /* The passwords: the values of keys ending in "password", at their offsets in input. */
    size_t off[64], len[64], nsecrets = 0;
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
        if (ends_with(line, "password") && distinctive(input, eq + 1) && nsecrets < 64) {
            off[nsecrets] = (size_t)(eq + 1 - copy);
            len[nsecrets++] = strlen(eq + 1);
        }
    }
    int suspect = 0;
    for (size_t i = 0; i < nsteps; i++)
        for (size_t k = 0; k < nsecrets; k++) {
            char *pw = strndup(input + off[k], len[k]);
            FUZZ_ASSERT(pw != NULL);
            suspect |= first[i] && strstr(first[i], pw) != NULL;
            free(pw);
        }
    if (suspect) {
        char *other = strdup(input);
        FUZZ_ASSERT(other != NULL);
        for (size_t k = 0; k < nsecrets; k++)
            for (size_t j = 0; j < len[k]; j++)
                other[off[k] + j] = input[off[k] + j] == 'x' ? 'y' : 'x';
        char **second = calloc(nsteps, sizeof *second);
        FUZZ_ASSERT(second != NULL);
        run(other, second);
        for (size_t i = 0; i < nsteps; i++)
            for (size_t k = 0; k < nsecrets && first[i]; k++) {
                char *pw = strndup(input + off[k], len[k]);
                FUZZ_ASSERT(pw != NULL);
                size_t echoed = fuzz_count(first[i], pw),
                       own = second[i] ? fuzz_count(second[i], pw) : 0;
                if (echoed > own)
                    fprintf(stderr, "fuzz: password '%s' echoed in: %s\n", pw, first[i]);
                FUZZ_ASSERT(echoed <= own);
                free(pw);
            }
        for (size_t i = 0; i < nsteps; i++)
            free(second[i]);
        free(second);
        free(other);
    }
    for (size_t i = 0; i < nsteps; i++)
        free(first[i]);
    free(first);
    free(copy);
    free(input);
    return 0;
}
