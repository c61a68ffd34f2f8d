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
    { "postgresql", &keel__engine_postgresql }, { "postgres", &keel__engine_postgresql },
    { "sqlite", &keel__engine_sqlite },         { "mongodb", &keel__engine_mongodb },
    { "mongodb+srv", &keel__engine_mongodb },   { "mysql", &keel__engine_mysql },
    { "mariadb", &keel__engine_mysql },
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

int keel__quote_ident(keel__buf *out, const char *name, char quote) {
    /* A quote inside the name is doubled: the only escape quoted identifiers have. */
    if (keel__buf_putc(out, quote) != 0)
        return -1;
    for (const char *s = name; *s; s++) {
        const char *q = strchr(s, quote);
        size_t n = q ? (size_t)(q - s) : strlen(s);
        if (keel__buf_append(out, s, n) != 0)
            return -1;
        if (!q)
            break;
        if (keel__buf_putc(out, quote) != 0 || keel__buf_putc(out, quote) != 0)
            return -1;
        s = q;
    }
    return keel__buf_putc(out, quote);
}

int keel__copy_target(keel__buf *out, const keel__copy *copy, char quote, int with_columns) {
    if (copy->schema &&
        (keel__quote_ident(out, copy->schema, quote) != 0 || keel__buf_putc(out, '.') != 0))
        return -1;
    if (keel__quote_ident(out, copy->table, quote) != 0)
        return -1;
    if (!with_columns || !copy->columns)
        return 0;
    if (keel__buf_puts(out, " (") != 0)
        return -1;
    for (size_t i = 0; i < copy->ncols; i++)
        if ((i && keel__buf_puts(out, ", ") != 0) ||
            keel__quote_ident(out, copy->columns[i], quote) != 0)
            return -1;
    return keel__buf_putc(out, ')');
}
