/* src/engines/pg/copy.c - PostgreSQL bulk loads: COPY … FROM STDIN (FORMAT binary). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/value_int.h"
#include "engines/pg/binary.h"
#include "engines/pg/copy.h"
#include "engines/pg/exec.h"

/*
 * Encoded data goes to libpq in chunks of this size, so the server parses the first rows while
 * later ones are encoded; each wake-up encodes at most PG_COPY_BYTES_PER_WAKEUP so a large load
 * does not keep the host loop from its other work.
 */
#define PG_COPY_CHUNK_BYTES 65536
#define PG_COPY_BYTES_PER_WAKEUP (1024 * 1024)
/* The most columns a PostgreSQL table (and a COPY tuple) can have. */
#define PG_COPY_MAX_COLUMNS 1664

typedef enum pg_copy_stage {
    PG_COPY_LOOKUP, /* the column lookup and the COPY command are in flight */
    PG_COPY_DATA,   /* the server takes data: rows are encoded and sent */
    PG_COPY_END     /* the end (or the abort) of the data is sent: results are collected */
} pg_copy_stage;

/*
 * One round trip starts a load: a simple query carrying the lookup of the table's columns and
 * their types, then the COPY itself, so the types are always current (no cache to go stale
 * after an ALTER TABLE) and the lookup costs no round trip of its own. Rows are encoded once
 * the server asks for data. A value that cannot be encoded ends the data with CopyFail, which
 * makes the server discard everything: a load is all or nothing.
 */
typedef struct pg_copy {
    pg_copy_stage stage;
    keel_value *vals;   /* nrows * ncols: the private copy of the rows, holding the names too */
    const char **names; /* the requested columns, or NULL for all */
    size_t nrows, ncols, sent;
    PGresult *lookup; /* name, type oid, receive function, type text: one row per column */
    keel__pgc_col *cols;
    size_t colcap;
    int naive_is_utc; /* the session's TimeZone is UTC */
    int cancel;       /* the caller cancelled the load */
    keel__buf out;    /* the chunk being encoded; kept between loads */
} pg_copy;

int keel__pg_copy_wants_write(const pg_impl *p) {
    return p->copy && p->copy->stage == PG_COPY_DATA;
}

void keel__pg_copy_clear(pg_impl *p) {
    pg_copy *k = p->copy;
    if (!k)
        return;
    keel__values_free(k->vals);
    k->vals = NULL;
    k->names = NULL;
    k->nrows = k->ncols = k->sent = 0;
    PQclear(k->lookup);
    k->lookup = NULL;
    k->cancel = 0;
    k->stage = PG_COPY_LOOKUP;
    keel__buf_reset(&k->out);
}

void keel__pg_copy_free(pg_impl *p) {
    if (!p->copy)
        return;
    keel__pg_copy_clear(p);
    free(p->copy->cols);
    keel__buf_free(&p->copy->out);
    free(p->copy);
    p->copy = NULL;
}

/* Ends the data with CopyFail after a failure already recorded in p->err. 0, or -1. */
static int pg_copy_abort(pg_impl *p, const char *why) {
    p->copy->stage = PG_COPY_END;
    if (PQputCopyEnd(p->pg, why) != 1)
        return -1;
    p->flush_pending = 1;
    return 0;
}

/* Matches the lookup to the load's columns. KEEL_OK, or the error (in p->err) to abort with. */
static keel_status pg_copy_columns(pg_impl *p) {
    pg_copy *k = p->copy;
    keel_conn *c = p->c;
    if (!k->lookup)
        return keel__error_set(&p->err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(c),
                               "the column lookup of the COPY returned nothing");
    size_t nlook = (size_t)PQntuples(k->lookup);
    if (!k->names && k->nrows && k->ncols != nlook)
        return keel__error_set(&p->err, KEEL_ERR_PARAMETERS, PG_ENGINE, keel__pg_dbname(c),
                               "the table has %zu column%s but each row has %zu value%s", nlook,
                               nlook == 1 ? "" : "s", k->ncols, k->ncols == 1 ? "" : "s");
    size_t n = k->names ? k->ncols : nlook;
    if (n > k->colcap) {
        keel__pgc_col *cols = realloc(k->cols, n * sizeof *cols);
        if (!cols)
            return keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c),
                                   "out of memory");
        k->cols = cols;
        k->colcap = n;
    }
    for (size_t i = 0; i < n; i++) {
        size_t row = i;
        if (k->names) {
            for (row = 0; row < nlook; row++)
                if (strcmp(PQgetvalue(k->lookup, (int)row, 0), k->names[i]) == 0)
                    break;
            /* COPY accepted the list, so only a concurrent ALTER TABLE can get here. */
            if (row == nlook)
                return keel__error_set(&p->err, KEEL_ERR_DATABASE, PG_ENGINE, keel__pg_dbname(c),
                                       "column \"%s\" was not found in the table", k->names[i]);
        }
        const char *oid = PQgetvalue(k->lookup, (int)row, 1);
        k->cols[i].kind =
            keel__pgc_kind_of((uint32_t)strtoul(oid, NULL, 10), PQgetvalue(k->lookup, (int)row, 2));
        k->cols[i].name = PQgetvalue(k->lookup, (int)row, 0);
        k->cols[i].type_name = PQgetvalue(k->lookup, (int)row, 3);
        k->cols[i].elem = KEEL__PGC_OTHER;
        k->cols[i].elem_oid = 0;
        if (k->cols[i].kind == KEEL__PGC_ARRAY || k->cols[i].kind == KEEL__PGC_RANGE) {
            /* The element type of an array or the subtype of a range, behind its domain if it
             * has one (columns 4 and 5). Arrays and ranges inside them are not encoded. */
            uint32_t eoid = (uint32_t)strtoul(PQgetvalue(k->lookup, (int)row, 4), NULL, 10);
            keel__pgc_kind ek = keel__pgc_kind_of(eoid, PQgetvalue(k->lookup, (int)row, 5));
            k->cols[i].elem = ek == KEEL__PGC_ARRAY || ek == KEEL__PGC_RANGE ? KEEL__PGC_OTHER : ek;
            k->cols[i].elem_oid = (uint32_t)strtoul(PQgetvalue(k->lookup, (int)row, 6), NULL, 10);
        }
    }
    k->ncols = n;
    k->naive_is_utc = keel__pgc_tz_is_utc(PQparameterStatus(p->pg, "TimeZone"));
    return KEEL_OK;
}

int keel__pg_copy_send(pg_impl *p) {
    pg_copy *k = p->copy;
    size_t budget = PG_COPY_BYTES_PER_WAKEUP;
    for (;;) {
        if (p->flush_pending) {
            int r = PQflush(p->pg);
            if (r < 0)
                return -1;
            if (r > 0)
                return 0;
            p->flush_pending = 0;
        }
        if (k->stage != PG_COPY_DATA)
            return 0;
        if (k->cancel) {
            if (!p->failed) {
                keel__error_set(&p->err, KEEL_ERR_CANCELLED, PG_ENGINE, keel__pg_dbname(p->c),
                                "the bulk load was cancelled; no row was loaded");
                p->failed = 1;
            }
            return pg_copy_abort(p, "cancelled by the client");
        }
        if (budget == 0)
            return 0;
        keel__buf_reset(&k->out);
        while (k->sent < k->nrows && k->out.len < PG_COPY_CHUNK_BYTES) {
            char why[KEEL_ERROR_MESSAGE_MAX];
            int r = keel__pgc_row(&k->out, k->cols, k->vals + k->sent * k->ncols, k->ncols,
                                  k->naive_is_utc, why, sizeof why);
            if (r < 0) {
                keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                                "out of memory encoding row %zu", k->sent);
                p->failed = 1;
                return pg_copy_abort(p, "out of memory in the client");
            }
            if (r > 0) {
                const keel__pgc_col *col = &k->cols[r - 1];
                keel__error_set(&p->err, KEEL_ERR_DATA, PG_ENGINE, keel__pg_dbname(p->c),
                                "row %zu, column \"%s\" (%s): %s; no row was loaded", k->sent,
                                col->name, col->type_name, why);
                p->failed = 1;
                return pg_copy_abort(p, "a value could not be encoded by the client");
            }
            k->sent++;
        }
        int last = k->sent == k->nrows;
        if (last && keel__pgc_trailer(&k->out) != 0) {
            keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                            "out of memory");
            p->failed = 1;
            return pg_copy_abort(p, "out of memory in the client");
        }
        if (PQputCopyData(p->pg, k->out.data, (int)k->out.len) != 1)
            return -1;
        budget = k->out.len >= budget ? 0 : budget - k->out.len;
        p->flush_pending = 1;
        if (last) {
            k->stage = PG_COPY_END;
            if (PQputCopyEnd(p->pg, NULL) != 1)
                return -1;
        }
    }
}

/* Records a server error of the load, with the COPY's context (table, line, column). */
static void pg_copy_error(pg_impl *p, const PGresult *r) {
    if (p->failed)
        return;
    keel__pg_result_error(p, r, -1, &p->err);
    p->failed = 1;
    const char *ctx = PQresultErrorField(r, PG_DIAG_CONTEXT);
    if (ctx && *ctx && strncmp(ctx, "COPY ", 5) == 0) {
        char msg[KEEL_ERROR_MESSAGE_MAX * 2];
        snprintf(msg, sizeof msg, "%.*s (%.*s)", KEEL_ERROR_MESSAGE_MAX - 1, p->err.message,
                 KEEL_ERROR_MESSAGE_MAX - 8, ctx);
        keel__pg_clean_message(p->err.message, sizeof p->err.message, msg);
    }
}

int keel__pg_copy_collect(pg_impl *p) {
    pg_copy *k = p->copy;
    for (;;) {
        /* In the data stage libpq keeps the server's messages until the data is ended. */
        if (k->stage == PG_COPY_DATA || PQisBusy(p->pg))
            return 0;
        PGresult *r = PQgetResult(p->pg);
        if (!r)
            return 1;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && k->stage == PG_COPY_LOOKUP && !k->lookup) {
            k->lookup = r;
            continue;
        }
        if (st == PGRES_COPY_IN && k->stage == PG_COPY_LOOKUP) {
            PQclear(r);
            keel__buf_reset(&k->out);
            k->stage = PG_COPY_DATA;
            if (pg_copy_columns(p) != KEEL_OK) {
                p->failed = 1;
                if (pg_copy_abort(p, "the rows do not match the table") != 0)
                    return -1;
            } else if (keel__pgc_header(&k->out) != 0) {
                /* As for the rows: the COPY ends unfinished and the connection stays. */
                keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                                "out of memory");
                p->failed = 1;
                if (pg_copy_abort(p, "out of memory in the client") != 0)
                    return -1;
            } else if (PQputCopyData(p->pg, k->out.data, (int)k->out.len) != 1) {
                return -1;
            }
            if (keel__pg_copy_send(p) != 0)
                return -1;
            continue;
        }
        if (st == PGRES_COMMAND_OK && k->stage == PG_COPY_END) {
            p->affected = keel__pg_affected(r);
            PQclear(r);
            continue;
        }
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH || st == PGRES_COPY_IN) {
            /* Not what the load sent; the protocol state is unknown. */
            PQclear(r);
            keel__pg_fail_op(p, KEEL_ERR_INTERNAL, "unexpected COPY state during a bulk load");
            return -1;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            pg_copy_error(p, r);
        PQclear(r);
    }
}

void keel__pg_copy_cancel(pg_impl *p) { p->copy->cancel = 1; }

/* Appends a SQL string literal of s, in the E'' form whose escapes do not depend on
 * standard_conforming_strings. */
static int pg_put_literal(keel__buf *out, const char *s, size_t n) {
    if (keel__buf_puts(out, "E'") != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (((s[i] == '\'' || s[i] == '\\') && keel__buf_putc(out, s[i]) != 0) ||
            keel__buf_putc(out, s[i]) != 0)
            return -1;
    return keel__buf_putc(out, '\'');
}

/* The load's round trip: the column lookup, then the COPY. 0, or -1 when out of memory. */
static int pg_copy_sql(pg_impl *p, const keel__copy *cp, keel__buf *out) {
    keel__buf target = { 0 };
    keel__buf_reset(out);
    int bad = keel__copy_target(&target, cp, '"', 0) != 0 ||
              keel__buf_puts(out, "SELECT a.attname, b.oid, b.typreceive, "
                                  "pg_catalog.format_type(a.atttypid, a.atttypmod), "
                                  "eb.oid, eb.typreceive, b.typelem "
                                  "FROM pg_catalog.pg_attribute a "
                                  "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
                                  "JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' "
                                  "THEN t.typbasetype ELSE t.oid END "
                                  "LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = b.oid "
                                  "LEFT JOIN pg_catalog.pg_type e ON e.oid = "
                                  "COALESCE(r.rngsubtype, b.typelem) "
                                  "LEFT JOIN pg_catalog.pg_type eb ON eb.oid = CASE WHEN "
                                  "e.typtype = 'd' THEN e.typbasetype ELSE e.oid END "
                                  "WHERE a.attrelid = ") != 0 ||
              pg_put_literal(out, target.data, target.len) != 0 ||
              keel__buf_puts(out, "::pg_catalog.regclass AND a.attnum > 0 AND NOT "
                                  "a.attisdropped") != 0 ||
              /* COPY without a column list leaves generated columns out (PostgreSQL 12+). */
              (!cp->columns && PQserverVersion(p->pg) >= 120000 &&
               keel__buf_puts(out, " AND a.attgenerated = ''") != 0) ||
              keel__buf_puts(out, " ORDER BY a.attnum; COPY ") != 0 ||
              keel__copy_target(out, cp, '"', 1) != 0 ||
              keel__buf_puts(out, " FROM STDIN (FORMAT binary)") != 0;
    keel__buf_free(&target);
    return bad ? -1 : 0;
}

/*
 * Copies the rows (valid only during the call) and the column names into one block (the
 * names in its extra room). Text-like values point into it afterwards.
 */
static keel_status pg_copy_take(pg_impl *p, const keel__copy *cp, keel_error *err) {
    pg_copy *k = p->copy;
    size_t n = cp->nrows * cp->ncols, nnames = cp->columns ? cp->ncols : 0;
    if (cp->ncols && n / cp->ncols != cp->nrows)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    /* The names' pointers, then their text: sizes summed with a check, so that lengths cannot
     * wrap the block's size around to a small one. */
    size_t names = nnames * sizeof(char *), extra = names;
    int wrapped = 0;
    for (size_t i = 0; i < nnames; i++)
        wrapped |= __builtin_add_overflow(extra, strlen(cp->columns[i]) + 1, &extra);
    void *more = NULL;
    keel_value *vals = wrapped ? NULL : keel__values_copy(cp->rows, n, extra, &more);
    if (!vals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory copying %zu rows", cp->nrows);
    const char **namev = more;
    char *text = nnames ? (char *)more + names : NULL;
    for (size_t i = 0; i < nnames; i++) {
        size_t len = strlen(cp->columns[i]);
        memcpy(text, cp->columns[i], len + 1);
        namev[i] = text;
        text += len + 1;
    }
    k->vals = vals;
    k->names = nnames ? namev : NULL;
    k->nrows = cp->nrows;
    k->ncols = cp->ncols;
    k->sent = 0;
    return KEEL_OK;
}

keel_status keel__pg_copy_in(keel_conn *c, const keel__copy *cp, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = keel__pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if (cp->ncols > PG_COPY_MAX_COLUMNS)
        return keel__error_set(err, KEEL_ERR_PARAMETERS, PG_ENGINE, keel__pg_dbname(c),
                               "PostgreSQL tables have at most %d columns, rows of %zu values "
                               "were given",
                               PG_COPY_MAX_COLUMNS, cp->ncols);
    if (!p->copy && !(p->copy = calloc(1, sizeof *p->copy)))
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    keel__pg_op_reset(p);
    if (pg_copy_sql(p, cp, &p->sqlbuf) != 0)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    st = pg_copy_take(p, cp, err);
    if (st != KEEL_OK)
        return st;
    p->copy->stage = PG_COPY_LOOKUP;
    p->phase = PG_COPY;
    if (!PQsendQuery(p->pg, p->sqlbuf.data))
        return keel__pg_send_failed(p, 0, err);
    if (keel__pg_after_send(p) != 0)
        return keel__pg_send_failed(p, 1, err);
    return KEEL_OK;
}
