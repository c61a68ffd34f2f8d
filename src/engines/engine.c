/* src/engines/engine.c - the registry of engines and SQL shared by the SQL engines. */
#include <stdio.h>
#include <string.h>

#include "engines/engine.h"

static const keel__engine *const engines[] = {
    &keel__engine_postgresql,
    &keel__engine_sqlite,
    &keel__engine_mongodb,
    &keel__engine_mysql,
};

/* URL schemes and the engine each selects. */
static const struct {
    const char *scheme;
    const keel__engine *engine;
} schemes[] = {
    {"postgresql", &keel__engine_postgresql},
    {"postgres", &keel__engine_postgresql},
    {"sqlite", &keel__engine_sqlite},
    {"mongodb", &keel__engine_mongodb},
    {"mongodb+srv", &keel__engine_mongodb},
    {"mysql", &keel__engine_mysql},
    {"mariadb", &keel__engine_mysql},
};

const keel__engine *keel__engine_find(const char *name) {
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        if (strcmp(engines[i]->name, name) == 0)
            return engines[i];
    return NULL;
}

const keel__engine *keel__engine_for_scheme(const char *scheme) {
    if (!scheme)
        return NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strcmp(schemes[i].scheme, scheme) == 0)
            return schemes[i].engine;
    return NULL;
}

int keel__txn_sql(keel_txn_op op, unsigned depth, keel__buf *out) {
    keel__buf_reset(out);
    switch (op) {
    case KEEL_TXN_BEGIN:
        return keel__buf_puts(out, "BEGIN");
    case KEEL_TXN_COMMIT:
        return keel__buf_puts(out, "COMMIT");
    case KEEL_TXN_ROLLBACK:
        return keel__buf_puts(out, "ROLLBACK");
    case KEEL_TXN_SAVEPOINT:
        return keel__buf_printf(out, "SAVEPOINT keel_sp_%u", depth);
    case KEEL_TXN_RELEASE:
        return keel__buf_printf(out, "RELEASE SAVEPOINT keel_sp_%u", depth);
    case KEEL_TXN_ROLLBACK_TO:
        return keel__buf_printf(out, "ROLLBACK TO SAVEPOINT keel_sp_%u", depth);
    }
    return -1;
}
