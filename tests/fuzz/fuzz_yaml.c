/* tests/fuzz/fuzz_yaml.c - libFuzzer target: YAML configuration documents. */
#include "fuzz.h"

#include <keel/config.h>

#include "core/config_int.h"

/* The input is a YAML document, loaded as keel_config_load_file loads a file's content, then
 * validated and cloned like keel_db_open does. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    keel_config *cfg = NULL;
    keel_error err;
    FUZZ_ASSERT(keel_config_new(&cfg, &err) == KEEL_OK);
    keel_error_clear(&err);
    keel_status st = keel__config_load_yaml(cfg, "fuzz.yaml", (const char *)data, size, &err);
    FUZZ_ASSERT(memchr(err.message, '\0', sizeof err.message) != NULL);
    if (st == KEEL_OK) {
        keel_error_clear(&err);
        if (keel_config_validate(cfg, &err) == KEEL_OK) {
            keel_config *clone = keel__config_clone(cfg);
            FUZZ_ASSERT(clone != NULL);
            FUZZ_ASSERT(keel_config_database_count(clone) == keel_config_database_count(cfg));
            keel_config_free(clone);
        } else {
            FUZZ_ASSERT(err.code != KEEL_OK);
        }
    } else {
        FUZZ_ASSERT(err.code == st);
    }
    keel_config_free(cfg);
    return 0;
}
