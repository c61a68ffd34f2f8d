/* tests/fuzz/fuzz_placeholder.c - libFuzzer target: the placeholder lexer in every dialect. */
#include "fuzz.h"

#include "core/error_int.h"
#include "query/placeholder.h"

/*
 * Each input is one SQL statement, rewritten in the three styles. What must hold besides the
 * absence of sanitizer reports: PostgreSQL keeps the text as is; no style lengthens it; MySQL's
 * map holds valid indexes only; SQLite changes nothing in a statement without placeholders;
 * errors are of the documented classes and name an offset inside the text.
 */
static void check_offset(const keel_error *err, size_t len) {
    const char *at = strstr(err->message, "offset ");
    if (at)
        FUZZ_ASSERT((size_t)strtoull(at + 7, NULL, 10) <= len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *sql = fuzz_cstring(data, size);
    size_t len = strlen(sql);
    static const keel__ph_style styles[] = { KEEL__PH_POSTGRES, KEEL__PH_SQLITE, KEEL__PH_MYSQL };
    for (size_t s = 0; s < sizeof styles / sizeof styles[0]; s++) {
        keel__buf out = { 0 };
        size_t max_index = 99, *map = NULL, nmap = 99;
        keel_error err;
        keel_error_clear(&err);
        keel_status st =
            keel__placeholders_rewrite(sql, styles[s], &out, &max_index, &map, &nmap, &err);
        if (st == KEEL_OK) {
            FUZZ_ASSERT(out.data != NULL && strlen(out.data) == out.len);
            FUZZ_ASSERT(out.len <= len);
            FUZZ_ASSERT(max_index <= 65535);
            if (styles[s] == KEEL__PH_POSTGRES)
                FUZZ_ASSERT(strcmp(out.data, sql) == 0);
            if (styles[s] == KEEL__PH_MYSQL) {
                FUZZ_ASSERT(nmap <= len / 2);
                FUZZ_ASSERT(nmap == 0 || map != NULL);
                for (size_t i = 0; i < nmap; i++)
                    FUZZ_ASSERT(map[i] < max_index);
            } else {
                FUZZ_ASSERT(map == NULL && nmap == 0);
            }
            if (max_index == 0 && styles[s] != KEEL__PH_MYSQL)
                FUZZ_ASSERT(strcmp(out.data, sql) == 0);
        } else {
            FUZZ_ASSERT(err.code == st);
            FUZZ_ASSERT(st == KEEL_ERR_PARAMETERS || st == KEEL_ERR_PROGRAMMING);
            FUZZ_ASSERT(map == NULL && nmap == 0 && max_index == 0);
            check_offset(&err, len);
        }
        free(map);
        keel__buf_free(&out);
    }
    free(sql);
    return 0;
}
