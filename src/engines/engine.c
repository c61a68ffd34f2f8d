/* src/engines/engine.c - the registry of engines and SQL shared by the SQL engines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error_int.h"
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

keel_status keel__ping_sql(keel_conn *c, keel_error *err) {
    keel__stmt stmt = { .sql = "SELECT 1", .sql_len = 8, .nrows = 1 };
    return c->engine->query(c, &stmt, err);
}

keel_status keel__copy_as_batch(keel_conn *c, const keel__copy *copy, keel_error *err) {
    const char *name = c->config ? c->config->name : "";
    char quote = c->engine->ident_quote;
    keel__buf sql = { 0 };
    int bad =
        keel__buf_puts(&sql, "INSERT INTO ") != 0 || keel__copy_target(&sql, copy, quote, 1) != 0;
    if (copy->nrows == 0) {
        /* Nothing to insert, but the table and columns are still checked: an INSERT that
         * selects no row fails on exactly what the load would fail on. */
        bad = bad || keel__buf_puts(&sql, " SELECT ") != 0;
        for (size_t i = 0; !bad && copy->columns && i < copy->ncols; i++)
            bad = (i && keel__buf_puts(&sql, ", ") != 0) ||
                  keel__quote_ident(&sql, copy->columns[i], quote) != 0;
        bad = bad || (!copy->columns && keel__buf_putc(&sql, '*') != 0) ||
              keel__buf_puts(&sql, " FROM ") != 0 || keel__copy_target(&sql, copy, quote, 0) != 0 ||
              keel__buf_puts(&sql, " WHERE 1 = 0") != 0;
    } else {
        bad = bad || keel__buf_puts(&sql, " VALUES (") != 0;
        for (size_t i = 0; !bad && i < copy->ncols; i++)
            bad = keel__buf_printf(&sql, i ? ", $%zu" : "$%zu", i + 1) != 0;
        bad = bad || keel__buf_putc(&sql, ')') != 0;
    }
    if (bad) {
        keel__buf_free(&sql);
        return keel__error_set(err, KEEL_ERR_NOMEM, c->engine->name, name, "out of memory");
    }
    /* The statement lives in the connection's statement buffer, as every statement the core
     * hands an engine does, until the operation completes. */
    size_t max_index = 0, nmap = 0, *map = NULL;
    keel_status st = keel__placeholders_rewrite(sql.data, c->engine->placeholder_style, &c->sql,
                                                &max_index, &map, &nmap, err);
    keel__buf_free(&sql);
    if (st != KEEL_OK) {
        if (err) /* the lexer does not know the database: name it in the error */
            snprintf(err->database, sizeof err->database, "%s", name);
        return st;
    }
    free(c->map);
    c->map = map;
    c->nmap = nmap;
    keel__stmt stmt = {
        .sql = c->sql.data,
        .sql_len = c->sql.len,
        .map = c->map,
        .nmap = c->nmap,
        .params = copy->rows,
        .nparams = copy->nrows ? copy->ncols : 0,
        .nrows = copy->nrows ? copy->nrows : 1,
        .many = copy->nrows > 0,
    };
    return c->engine->query(c, &stmt, err);
}
