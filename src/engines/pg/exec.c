/* src/engines/pg/exec.c - running PostgreSQL statements and batches, and collecting results. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/numtext.h"
#include "core/value_int.h"
#include "engines/pg/batch.h"
#include "engines/pg/codec.h"
#include "engines/pg/connect.h"
#include "engines/pg/copy.h"
#include "engines/pg/decode.h"
#include "engines/pg/describe.h"
#include "engines/pg/paramtypes.h"
#include "engines/pg/exec.h"
#include "engines/pg/stmtcache.h"

/*
 * Batches are written in chunks: after this many rows or bytes the engine flushes, so the
 * socket buffer decides the pace instead of libpq's output buffer growing without bound.
 */
#define PG_BATCH_CHUNK_ROWS 256
#define PG_BATCH_CHUNK_BYTES 65536
/* Rows queued per write-ready callback, so a huge batch does not starve the host loop. */
#define PG_BATCH_ROWS_PER_WAKEUP 4096
/* A statement streamed to keel__conn_rows hands its rows over at least every this many rows,
 * and whenever the input read so far is decoded or the turn's budget is spent. */
#define PG_STREAM_BATCH_ROWS 256
/* Results taken, or rows of a whole result decoded, between two looks at the turn's budget. */
#define PG_BUDGET_EVERY 64

static keel_status pg_query_run(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                keel_error *err);

int64_t keel__pg_affected(PGresult *r) {
    const char *t = PQcmdTuples(r);
    int64_t n;
    if (!t || !*t || keel__parse_int64(t, strlen(t), &n) != 0)
        return -1;
    return n;
}

void keel__pg_op_reset(pg_impl *p) {
    p->op_seq++;
    p->failed = 0;
    p->flush_pending = 0;
    p->copy_out = 0;
    p->restyle_tried = 0;
    p->doomed = NULL;
    keel_error_clear(&p->err);
    keel__pg_drop_result(p);
}

int keel__pg_after_send(pg_impl *p) {
    int r = PQflush(p->pg);
    if (r < 0)
        return -1;
    p->flush_pending = r;
    return keel__watch_set(p->watch, KEEL_READ | (r ? KEEL_WRITE : 0)) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                  */

void keel__pg_drop_result(pg_impl *p) {
    keel_result_free(p->res);
    p->res = NULL;
    if (p->part)
        PQclear(p->part);
    p->part = NULL;
    p->part_row = 0;
    p->affected = -1;
    p->rows_seen = p->in_set = p->stream = 0;
    p->yielded = 0;
    keel__defer_cancel(p->resume);
}

/* A result with r's columns as p->res. 0, or -1 when out of memory. */
static int pg_start_result(pg_impl *p, const PGresult *r) {
    size_t ncols = (size_t)PQnfields(r);
    if (3 * ncols > p->kinds_cap) {
        keel_type *k = realloc(p->kinds, 3 * ncols * sizeof *k);
        if (!k)
            return -1;
        p->kinds = k;
        p->kinds_cap = 3 * ncols;
    }
    p->res = keel__result_new(ncols);
    if (!p->res)
        return -1;
    for (size_t col = 0; col < ncols; col++) {
        const char *name = PQfname(r, (int)col);
        p->kinds[col] = keel__pg_type_of(PQftype(r, (int)col));
        p->kinds[ncols + col] = keel__pg_elem_type_of(PQftype(r, (int)col));
        p->kinds[2 * ncols + col] = keel__pg_range_bound_type_of(PQftype(r, (int)col));
        if (keel__result_set_column(p->res, col, name, strlen(name), p->kinds[col]) != 0 ||
            keel__result_set_type_id(p->res, col, (uint32_t)PQftype(r, (int)col)) != 0)
            return -1;
    }
    return 0;
}

/* Hands the rows decoded so far to the consumer of a streamed statement. */
static void pg_stream_rows(pg_impl *p) {
    if (!p->stream || p->failed || !p->res || keel_result_nrows(p->res) == 0)
        return;
    keel__conn_rows(p->c, p->res);
    keel__result_clear_rows(p->res);
}

/*
 * Decodes row row of a result in binary format (every column's type passes keel__pg_binary_ok
 * or is an enum or an array of one)
 * into vals. 0; -1 when out of memory or when the server sent bytes that are not a value of
 * the column's type (then the operation has failed with KEEL_ERR_DATA naming the column).
 */
static int pg_add_binary_row(pg_impl *p, const PGresult *r, size_t row, keel_value *vals) {
    size_t ncols = keel_result_ncols(p->res);
    for (size_t col = 0; col < ncols; col++) {
        if (PQgetisnull(r, (int)row, (int)col))
            continue;
        char why[160];
        Oid oid = PQftype(r, (int)col);
        const char *s = PQgetvalue(r, (int)row, (int)col);
        size_t n = (size_t)PQgetlength(r, (int)row, (int)col);
        Oid labels = keel__pg_enum_array_elem(p, oid);
        int rc;
        if (keel__pg_is_enum(p, oid)) /* its label, as in text */
            rc = keel__result_set_text(p->res, &vals[col], KEEL_TYPE_TEXT, s, n) == 0 ? 0 : -1;
        else if (labels)
            rc = keel__pg_decode_binary_labels(p->res, oid, labels, s, n, &vals[col], why,
                                               sizeof why);
        else
            rc = keel__pg_decode_binary(p->res, oid, s, n, &vals[col], why, sizeof why);
        if (rc == -2 && !p->failed) {
            keel__error_set(&p->err, KEEL_ERR_DATA, PG_ENGINE, keel__pg_dbname(p->c),
                            "column \"%s\": the server sent %s", PQfname(r, (int)col), why);
            p->failed = 1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/*
 * Appends the rows of r from row *next on (a whole result, or one row in single-row mode) to
 * p->res, which takes r's columns when it has none yet. With budget, stops between rows once
 * the turn's budget is spent. Returns 1 when every row is in (*next is then the row count), 0
 * when some are left for a later turn, -1 when out of memory or a binary value is malformed.
 */
static int pg_add_rows(pg_impl *p, const PGresult *r, size_t *next, int budget) {
    if (!p->res && pg_start_result(p, r) != 0)
        return -1;
    keel_result *res = p->res;
    size_t ncols = keel_result_ncols(res), nrows = (size_t)PQntuples(r);
    const keel_type *kinds = p->kinds;
    /* Only whole results reserve: rows that come one by one grow the result geometrically. */
    if (*next == 0 && nrows > 1 && keel__result_reserve(res, nrows) != 0)
        return -1;
    int binary = ncols && PQfformat(r, 0) == 1;
    for (size_t row = *next; row < nrows; row++) {
        if (budget && row > *next && (row - *next) % PG_BUDGET_EVERY == 0 &&
            keel__turn_spent(p->c->loop)) {
            *next = row;
            return 0;
        }
        keel_value *vals = keel__result_add_row(res);
        if (!vals)
            return -1;
        if (binary) {
            if (pg_add_binary_row(p, r, row, vals) != 0)
                return -1;
            continue;
        }
        for (size_t col = 0; col < ncols; col++) {
            if (PQgetisnull(r, (int)row, (int)col) || kinds[col] == KEEL_TYPE_NULL)
                continue; /* NULL, or void's empty text */
            const char *text = PQgetvalue(r, (int)row, (int)col);
            size_t len = (size_t)PQgetlength(r, (int)row, (int)col);
            /* A type keel does not know (OID 10000 on): an array of text if it has the form. */
            int arr = kinds[col] == KEEL_TYPE_ARRAY ||
                      (kinds[col] == KEEL_TYPE_TEXT && kinds[ncols + col] == KEEL_TYPE_TEXT &&
                       len && (text[0] == '{' || text[0] == '['));
            if ((arr ? keel__pg_decode_array(res, kinds[ncols + col], kinds[2 * ncols + col], text,
                                             len, &vals[col])
                 : kinds[col] == KEEL_TYPE_RANGE
                     ? keel__pg_decode_range(res, kinds[ncols + col], text, len, &vals[col])
                     : keel__pg_decode_value(res, kinds[col], text, len, &vals[col])) != 0)
                return -1;
        }
    }
    *next = nrows;
    if (p->stream && keel_result_nrows(res) >= PG_STREAM_BATCH_ROWS)
        pg_stream_rows(p);
    return 1;
}

/* Decodes more of the whole result p->part; frees it once it is all in. 1 when it is, else 0. */
static int pg_part_continue(pg_impl *p) {
    int rc = p->failed ? 1 : pg_add_rows(p, p->part, &p->part_row, 1);
    if (rc == 0)
        return 0;
    PQclear(p->part);
    p->part = NULL;
    p->part_row = 0;
    if (rc < 0)
        keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a result");
    return 1;
}

void keel__pg_take(pg_impl *p, PGresult *r) {
    if (p->failed) {
        PQclear(r);
        return;
    }
    int rc = 0;
    size_t next = 0;
    switch (PQresultStatus(r)) {
    case PGRES_SINGLE_TUPLE:
        if (!p->in_set) {
            /* A statement's rows begin: they replace an earlier statement's. */
            keel_result_free(p->res);
            p->res = NULL;
            p->in_set = 1;
        }
        rc = pg_add_rows(p, r, &next, 0);
        break;
    case PGRES_TUPLES_OK:
        /* The end of single-row results (no rows of its own), or a whole result. */
        if (!p->in_set) {
            keel_result_free(p->res);
            p->res = NULL;
        }
        p->in_set = 0;
        p->affected = keel__pg_affected(r);
        p->rows_seen = 1;
        rc = pg_add_rows(p, r, &next, 1);
        if (rc == 0) {
            /* The rest of its rows are decoded from a later turn. */
            p->part = r;
            p->part_row = next;
            return;
        }
        break;
    default: /* PGRES_COMMAND_OK, PGRES_EMPTY_QUERY */
        if (!p->rows_seen)
            p->affected = keel__pg_affected(r);
        if (p->doomed && strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
            keel__pg_fail_op(p, KEEL_ERR_TRANSACTION, p->doomed);
            keel__error_set_sqlstate(&p->err, "25P02");
        }
        break;
    }
    PQclear(r);
    if (rc < 0)
        keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a result");
}

int keel__pg_add_rows(pg_impl *p, const PGresult *r) {
    size_t next = 0;
    return pg_add_rows(p, r, &next, 0) < 0 ? -1 : 0;
}

/* A field of a failed PGresult, for keel__pg_error_from. */
static const char *pg_result_field(const void *src, int code) {
    return PQresultErrorField(src, code);
}

void keel__pg_result_error(pg_impl *p, const PGresult *r, long row, keel_error *err) {
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!primary || !*primary)
        primary = PQresultErrorMessage(r);
    keel__pg_error_from(p, pg_result_field, r, primary, row, err);
}

void keel__pg_error_from(pg_impl *p, keel__pg_field_fn field, const void *src, const char *primary,
                         long row, keel_error *err) {
    const char *state = field(src, PG_DIAG_SQLSTATE);
    const char *detail = field(src, PG_DIAG_MESSAGE_DETAIL);
    int bad = PQstatus(p->pg) == CONNECTION_BAD;
    if (!primary || !*primary)
        primary = field(src, PG_DIAG_MESSAGE_PRIMARY);
    if (!primary || !*primary)
        primary = PQerrorMessage(p->pg);
    char raw[KEEL_ERROR_MESSAGE_MAX * 2];
    int n = 0;
    if (row >= 0)
        n = snprintf(raw, sizeof raw, "row %ld: ", row);
    if (detail && *detail)
        snprintf(raw + n, sizeof raw - (size_t)n, "%s DETAIL: %s", primary, detail);
    else
        snprintf(raw + n, sizeof raw - (size_t)n, "%s", primary);
    keel_status code;
    if (state && strcmp(state, "08P01") == 0 && strstr(primary, "bind message supplies"))
        code = KEEL_ERR_PARAMETERS;
    else if (bad)
        code = KEEL_ERR_CONNECTION_LOST;
    else if (state && strlen(state) == 5)
        code = keel__pg_status_of(state);
    else
        code = KEEL_ERR_DATABASE;
    if (bad)
        p->c->broken = 1;
    keel__pg_error_libpq(err, code, p->c, NULL, raw);
    keel__error_set_sqlstate(err, state);
    static const struct {
        int diag;
        keel__error_field field;
    } fields[] = {
        { PG_DIAG_MESSAGE_DETAIL, KEEL__ERRF_DETAIL },
        { PG_DIAG_MESSAGE_HINT, KEEL__ERRF_HINT },
        { PG_DIAG_SCHEMA_NAME, KEEL__ERRF_SCHEMA },
        { PG_DIAG_TABLE_NAME, KEEL__ERRF_TABLE },
        { PG_DIAG_COLUMN_NAME, KEEL__ERRF_COLUMN },
        { PG_DIAG_CONSTRAINT_NAME, KEEL__ERRF_CONSTRAINT },
        { PG_DIAG_DATATYPE_NAME, KEEL__ERRF_DATATYPE },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        keel__error_set_field(err, fields[i].field, field(src, fields[i].diag), SIZE_MAX);
}

/* ---------------------------------------------------------------------------------------- */
/* Running operations                                                                       */

static const char *pg_sql(pg_impl *p, const keel_conn *c, const char *sql, size_t len) {
    /* The core hands its own statement buffer, which is NUL-terminated; others are copied. */
    if (sql == c->sql.data)
        return sql;
    keel__buf_reset(&p->sqlbuf);
    if (keel__buf_append(&p->sqlbuf, sql, len) != 0 || keel__buf_putc(&p->sqlbuf, '\0') != 0)
        return NULL;
    return p->sqlbuf.data;
}

static void pg_batch_clear(pg_impl *p) {
    keel__pg_copy_clear(p); /* every path that ends a batch ends a bulk load too */
    keel__pg_wire_clear(p);
    keel__values_free(p->bvals);
    p->bvals = NULL;
    p->btypes = NULL;
    p->bprep = NULL;
    p->brows = p->bnparams = p->bsent = p->bdone = 0;
    p->bgot = p->bprepared = p->bsynced = 0;
    p->baffected = 0;
}

/*
 * The server went away (or libpq failed) during an operation: it ends with CONNECTION_LOST
 * and the connection is unusable.
 */
static void pg_lost(pg_impl *p) {
    keel_conn *c = p->c;
    pg_phase was = p->phase;
    keel_error err;
    if (was == PG_SETUP)
        keel__pg_connect_error(p, &err, KEEL_ERR_CONNECT);
    else if (p->failed && keel__pg_wire_active(p))
        err = p->err; /* a failure libpq did not see: the batch on the wire says what it was */
    else
        keel__pg_error_libpq(&err, KEEL_ERR_CONNECTION_LOST, c,
                             "connection lost: ", PQerrorMessage(p->pg));
    c->broken = 1;
    p->phase = PG_DEAD;
    keel__pg_drop_result(p);
    pg_batch_clear(p);
    keel__pg_ptypes_done(p);
    if (p->watch)
        keel__watch_set(p->watch, 0);
    if (was == PG_SETUP) {
        keel__pg_connect_failed(p, &err);
        return;
    }
    keel__conn_complete(c, NULL, &err);
}

/*
 * The operation changed DateStyle or IntervalStyle (a SET, a RESET to a configured style, a
 * function with its own setting): they are set back before its end is reported, so that every
 * later statement reads dates, timestamps and intervals from text as it does from binary. A
 * user's SET therefore does not reach keel's results (nor SHOW), and casts to text are written
 * in the styles keel reads. Not in a failed transaction block, where any statement fails; its
 * rollback restores the styles of before the block, or the next operation sets them back.
 * Returns 1 when the SET is on its way (PG_RESTYLE), 0 when the end is to be reported now.
 */
static int pg_restyle(pg_impl *p) {
    PGTransactionStatusType t = PQtransactionStatus(p->pg);
    if ((t != PQTRANS_IDLE && t != PQTRANS_INTRANS) || !keel__pg_style_off(p->pg))
        return 0;
    /* Once per operation: a failed SET is not repeated when a held end is reported later. */
    p->restyle_tried = 1;
    if (!PQsendQuery(p->pg, KEEL__PG_STYLE_SQL))
        return 0;
    /* Every row is in: none is streamed or waits for an unpause while the SET runs. */
    p->stream = 0;
    p->restyled = p->phase;
    p->phase = PG_RESTYLE;
    if (keel__pg_after_send(p) != 0) {
        /* The SET may be half sent: the connection is not reused after this operation. */
        p->phase = p->restyled;
        p->c->broken = 1;
        return 0;
    }
    return 1;
}

/* Discards the results of the SET of pg_restyle (its failure leaves the styles as they were). */
static int pg_restyle_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = keel__pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r)
            return 1;
        PQclear(r);
    }
}

void keel__pg_finish(pg_impl *p) {
    keel_conn *c = p->c;
    keel__pg_ptypes_done(p);
    if (PQstatus(p->pg) == CONNECTION_BAD) {
        pg_lost(p);
        return;
    }
    if (p->phase == PG_RESTYLE)
        p->phase = p->restyled;
    else if (p->phase != PG_SETUP && !p->restyle_tried && pg_restyle(p))
        return;
    /* A cancel request still in flight could stop the next statement: the end is reported
     * once it has returned (pg_cancel_settled). */
    if (p->phase != PG_SETUP && keel__cancel_hold(&p->cancel)) {
        p->held = p->phase;
        p->phase = PG_HELD;
        keel__watch_set(p->watch, 0);
        return;
    }
    pg_phase was = p->phase;
    p->phase = PG_IDLE;
    p->flush_pending = 0;
    if (keel__watch_set(p->watch, KEEL_READ) != 0 && !p->failed) {
        keel__error_set(&p->err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(c),
                        "the event loop refused to watch the connection");
        p->failed = 1;
        c->broken = 1;
    }
    if (was == PG_SETUP) {
        keel__pg_drop_result(p);
        if (p->failed) {
            keel_error e = p->err;
            e.code = KEEL_ERR_CONNECT;
            keel__pg_connect_failed(p, &e);
            return;
        }
        keel__pg_ready(p);
        return;
    }
    /* Notifications that came with the operation's results go first. */
    keel__pg_notify_drain(p);
    keel_result *res = NULL;
    if (!p->failed) {
        keel_status st;
        if (was == PG_BATCH) {
            /* The rows the batch's statements returned, if any. */
            res = p->res ? p->res : keel__result_new(0);
            p->res = NULL;
            if (res)
                keel__result_set_affected(res, p->baffected);
            st = res ? KEEL_OK
                     : keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c),
                                       "out of memory");
        } else {
            /* A statement without rows (or without any result) has no columns. */
            res = p->res ? p->res : keel__result_new(0);
            p->res = NULL;
            if (res)
                keel__result_set_affected(res, p->affected);
            st = res ? KEEL_OK
                     : keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c),
                                       "out of memory");
        }
        if (st != KEEL_OK)
            p->failed = 1;
    }
    keel__pg_drop_result(p);
    pg_batch_clear(p);
    if (p->failed) {
        keel_error e = p->err;
        keel__conn_complete(c, NULL, &e);
    } else {
        keel__conn_complete(c, res, NULL);
    }
}

void keel__pg_fail_op(pg_impl *p, keel_status code, const char *msg) {
    if (p->failed)
        return;
    keel__error_set(&p->err, code, PG_ENGINE, keel__pg_dbname(p->c), "%s", msg);
    p->failed = 1;
}

int keel__pg_refuse_copy(pg_impl *p, ExecStatusType st, long row) {
    char msg[96];
    int n = row >= 0 ? snprintf(msg, sizeof msg, "row %ld: ", row) : 0;
    snprintf(msg + n, sizeof msg - (size_t)n, "COPY %s is not supported",
             st == PGRES_COPY_IN ? "FROM STDIN" : "TO STDOUT");
    keel__pg_fail_op(p, KEEL_ERR_UNSUPPORTED, msg);
    if (st == PGRES_COPY_IN) {
        if (PQputCopyEnd(p->pg, "COPY FROM STDIN is not supported by keel") != 1)
            return -1;
        p->flush_pending = 1;
        return 0;
    }
    if (st == PGRES_COPY_OUT) {
        p->copy_out = 1;
        return 0;
    }
    return -1; /* COPY BOTH only exists on replication connections */
}

/* Drops COPY TO STDOUT data. 1 when the copy is over, 0 when more input is needed, -1 failed. */
static int pg_drain_copy(pg_impl *p) {
    char *buf = NULL;
    int n;
    while ((n = PQgetCopyData(p->pg, &buf, 1)) > 0)
        PQfreemem(buf);
    if (n == 0)
        return 0;
    if (n == -2)
        return -1;
    p->copy_out = 0;
    return 1;
}

/* Stops collecting for this turn: the rows so far go out, the rest waits for keel__pg_resume. */
static int pg_yield(pg_impl *p) {
    pg_stream_rows(p);
    p->yielded = 1;
    return 0;
}

int keel__pg_next_result(pg_impl *p, PGresult **r) {
    /* Paused (keel_conn_pause): the rows in hand go out; reading waits for keel__pg_unpause. */
    if (p->stream && p->c->paused)
        return pg_yield(p);
    if (p->part && !pg_part_continue(p))
        return pg_yield(p);
    if (p->copy_out) {
        int d = pg_drain_copy(p);
        if (d <= 0)
            return d;
    }
    if (PQisBusy(p->pg)) {
        pg_stream_rows(p);
        return 0;
    }
    if (++p->since_check >= PG_BUDGET_EVERY) {
        p->since_check = 0;
        if (keel__turn_spent(p->c->loop))
            return pg_yield(p);
    }
    *r = PQgetResult(p->pg);
    return 1;
}

/*
 * Collects the results of a simple or extended-protocol statement. Returns 1 when all are in,
 * 0 when more input is needed, -1 when the connection failed.
 */
static int pg_query_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = keel__pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r)
            return 1;
        ExecStatusType st = PQresultStatus(r);
        switch (st) {
        case PGRES_SINGLE_TUPLE:
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            keel__pg_take(p, r);
            break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            PQclear(r);
            if (keel__pg_refuse_copy(p, st, -1) != 0)
                return -1;
            break;
        default:
            if (!p->failed) {
                keel__pg_result_error(p, r, -1, &p->err);
                p->failed = 1;
            }
            PQclear(r);
            break;
        }
    }
}

/*
 * Collects batch results as they arrive: each prepare's and each row's results end with a
 * NULL, and the closing sync ends the batch. A failed prepare is reported as the row it was
 * queued for, as a failed parse of that row was. Returns 1 when the batch is over, 0 when
 * more input is needed, -1 when the connection failed.
 */
static int pg_batch_collect(pg_impl *p) {
    for (;;) {
        if (p->copy_out) {
            int d = pg_drain_copy(p);
            if (d <= 0)
                return d;
        }
        if (PQisBusy(p->pg))
            return 0;
        PGresult *r = PQgetResult(p->pg);
        if (!r) {
            if (!p->bgot)
                return 0; /* nothing sent is pending yet */
            p->bgot = 0;
            if (p->bdone < p->brows && p->bprep[p->bdone] && !p->bprepared) {
                p->bprepared = 1;
            } else {
                p->bdone++;
                p->bprepared = 0;
            }
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return PQexitPipelineMode(p->pg) == 1 ? 1 : -1;
        }
        p->bgot = 1;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            int64_t n = keel__pg_affected(r);
            if (n > 0)
                p->baffected += n;
            /* Rows a row's statement returns (INSERT … RETURNING) join the batch's result. */
            size_t next = 0;
            if (st == PGRES_TUPLES_OK && !p->failed && pg_add_rows(p, r, &next, 0) < 0)
                keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a batch's rows");
        } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            if (keel__pg_refuse_copy(p, st, (long)p->bdone) != 0)
                return -1;
            continue;
        } else if (st != PGRES_PIPELINE_ABORTED && !p->failed) {
            keel__pg_result_error(p, r, (long)p->bdone, &p->err);
            p->failed = 1;
        }
        PQclear(r);
    }
}

/*
 * Queues the bind and execute of the encoded row bsent, preceded by a prepare of the unnamed
 * statement when the row's parameter types differ from those it was last prepared with.
 * Returns the bytes queued, or 0 when libpq failed.
 */
static size_t pg_batch_queue_row(pg_impl *p) {
    size_t n = p->bnparams, bytes = p->pbytes + 32;
    if (p->bsent == 0 || (n && memcmp(p->btypes, p->ptypes, n * sizeof(Oid)) != 0)) {
        if (!PQsendPrepare(p->pg, "", p->bsql, (int)n, p->ptypes))
            return 0;
        if (n)
            memcpy(p->btypes, p->ptypes, n * sizeof(Oid));
        p->bprep[p->bsent] = 1;
        bytes += strlen(p->bsql) + 4 * n;
    }
    if (!PQsendQueryPrepared(p->pg, "", (int)n, p->pvals, p->plens, p->pfmts, 0))
        return 0;
    return bytes;
}

/*
 * Queues batch rows while the socket takes them, then the closing sync. After the first
 * failed row the rest are skipped: the server would discard them until the sync anyway.
 * Returns 0, or -1 when libpq failed.
 */
static int pg_batch_send(pg_impl *p) {
    size_t budget = PG_BATCH_ROWS_PER_WAKEUP;
    for (;;) {
        if (p->flush_pending) {
            int r = PQflush(p->pg);
            if (r < 0)
                return -1;
            if (r > 0)
                return 0;
            p->flush_pending = 0;
        }
        if (p->bsynced)
            return 0;
        if (p->failed || p->bsent == p->brows) {
            if (!PQpipelineSync(p->pg))
                return -1;
            p->bsynced = 1;
            p->flush_pending = 1;
            continue;
        }
        if (budget == 0)
            return 0;
        size_t rows = 0, bytes = 0;
        while (p->bsent < p->brows && rows < PG_BATCH_CHUNK_ROWS && bytes < PG_BATCH_CHUNK_BYTES &&
               rows < budget) {
            const keel_value *row = p->bvals + p->bsent * p->bnparams;
            keel_error e;
            if (keel__pg_encode(p, row, p->bnparams, &e) != KEEL_OK) {
                if (!p->failed) {
                    p->err = e;
                    p->failed = 1;
                }
                break;
            }
            size_t queued = pg_batch_queue_row(p);
            if (queued == 0)
                return -1;
            p->bsent++;
            rows++;
            bytes += queued;
        }
        budget -= rows;
        p->flush_pending = 1;
    }
}

static int pg_want_write(const pg_impl *p) {
    return p->flush_pending || (p->phase == PG_BATCH && !p->bsynced) ||
           (p->phase == PG_COPY && keel__pg_copy_wants_write(p));
}

/* One wake-up of a running operation: send what is pending, read, collect results. */
static void pg_op_step(pg_impl *p, int events) {
    p->yielded = 0;
    if (p->phase == PG_BATCH && keel__pg_wire_active(p)) {
        int done = keel__pg_wire_step(p, events);
        if (done < 0)
            pg_lost(p);
        else if (done > 0)
            keel__pg_finish(p);
        return;
    }
    if (p->phase == PG_BATCH || p->phase == PG_COPY) {
        if ((p->phase == PG_BATCH ? pg_batch_send(p) : keel__pg_copy_send(p)) != 0) {
            pg_lost(p);
            return;
        }
    } else if (p->flush_pending) {
        int r = PQflush(p->pg);
        if (r < 0) {
            pg_lost(p);
            return;
        }
        p->flush_pending = r;
    }
    if ((events & KEEL_READ) && !PQconsumeInput(p->pg)) {
        pg_lost(p);
        return;
    }
    int done = p->phase == PG_BATCH      ? pg_batch_collect(p)
               : p->phase == PG_CACHED   ? keel__pg_cached_collect(p)
               : p->phase == PG_COPY     ? keel__pg_copy_collect(p)
               : p->phase == PG_DESCRIBE ? keel__pg_describe_collect(p)
               : p->phase == PG_PTYPES   ? keel__pg_ptypes_collect(p, pg_query_run)
               : p->phase == PG_RESTYLE  ? pg_restyle_collect(p)
                                         : pg_query_collect(p);
    if (done < 0) {
        pg_lost(p);
        return;
    }
    if (done > 0) {
        keel__pg_finish(p);
        return;
    }
    /* Yielded for the turn's budget: input is not read until collecting goes on, so the rows
     * wait on the server's side of the socket rather than in libpq's buffer. */
    int read = KEEL_READ;
    if (p->yielded) {
        read = 0;
        /* A paused statement is woken by keel__pg_unpause instead. */
        if (!(p->stream && p->c->paused) && keel__defer_schedule(p->resume) != 0) {
            keel__pg_fail_op(p, KEEL_ERR_INTERNAL, "the event loop refused a timer");
            pg_lost(p);
            return;
        }
    }
    if (keel__watch_set(p->watch, read | (pg_want_write(p) ? KEEL_WRITE : 0)) != 0) {
        keel__pg_fail_op(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
        pg_lost(p);
    }
}

void keel__pg_unpause(keel_conn *c) {
    pg_impl *p = c->impl;
    if (!p || !p->stream || (p->phase != PG_QUERY && p->phase != PG_CACHED))
        return;
    /* Nothing is reported from here (the caller is not a keel callback): without the timer,
     * the socket wakes the statement, the rest of its rows being on the way. */
    if (keel__defer_schedule(p->resume) != 0)
        (void)keel__watch_set(p->watch, KEEL_READ);
}

void keel__pg_resume(void *arg) {
    pg_impl *p = arg;
    if (p->phase == PG_QUERY || p->phase == PG_CACHED || p->phase == PG_DESCRIBE ||
        p->phase == PG_RESTYLE)
        pg_op_step(p, 0);
}

void keel__pg_notify_drain(pg_impl *p) {
    PGnotify *n;
    while ((n = PQnotifies(p->pg)) != NULL) {
        keel_notification note = {
            .channel = n->relname,
            .payload = n->extra ? n->extra : "",
            .pid = n->be_pid,
        };
        keel__conn_notify(p->c, &note);
        PQfreemem(n);
    }
}

/* Idle and readable: the server closed the connection, or sent notifications. */
static void pg_idle_input(pg_impl *p) {
    int ok = PQconsumeInput(p->pg);
    keel__pg_notify_drain(p);
    if (ok && PQstatus(p->pg) != CONNECTION_BAD)
        return;
    p->phase = PG_DEAD;
    keel__watch_set(p->watch, 0);
    p->c->broken = 1;
    keel__conn_broken(p->c);
}

void keel__pg_on_ready(void *arg, int events) {
    pg_impl *p = arg;
    switch (p->phase) {
    case PG_CONNECTING:
        keel__pg_connect_step(p);
        return;
    case PG_IDLE:
        pg_idle_input(p);
        return;
    case PG_SETUP:
    case PG_QUERY:
    case PG_BATCH:
    case PG_CACHED:
    case PG_COPY:
    case PG_DESCRIBE:
    case PG_PTYPES:
    case PG_RESTYLE:
        pg_op_step(p, events);
        return;
    case PG_RESOLVING:
    case PG_HELD:
    case PG_DEAD:
        keel__watch_set(p->watch, 0);
        return;
    }
}

keel_status keel__pg_check_idle(pg_impl *p, keel_conn *c, keel_error *err) {
    if (!p || p->phase == PG_DEAD || c->broken)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, PG_ENGINE, keel__pg_dbname(c),
                               "the connection to database '%s' was lost", keel__pg_dbname(c));
    if (p->phase != PG_IDLE)
        return keel__error_set(err, KEEL_ERR_BUSY, PG_ENGINE, keel__pg_dbname(c),
                               "another operation is in progress on this connection");
    return KEEL_OK;
}

keel_status keel__pg_send_failed(pg_impl *p, int sent, keel_error *err) {
    keel_conn *c = p->c;
    int bad = PQstatus(p->pg) == CONNECTION_BAD;
    keel_status st =
        keel__pg_error_libpq(err, bad ? KEEL_ERR_CONNECTION_LOST : KEEL_ERR_DATABASE, c,
                             bad ? "connection lost: " : NULL, PQerrorMessage(p->pg));
    if (bad || sent || p->phase == PG_BATCH || p->phase == PG_CACHED || p->phase == PG_DESCRIBE ||
        p->phase == PG_PTYPES) {
        c->broken = 1;
        p->phase = PG_DEAD;
        keel__watch_set(p->watch, 0);
    } else {
        p->phase = PG_IDLE;
    }
    pg_batch_clear(p);
    return st;
}

/*
 * True when the statement starts with COPY. The server expects COPY data right after the
 * command, so in a pipeline the next queued row would break the protocol and end the session:
 * batches refuse COPY before sending anything.
 */
static int pg_starts_with_copy(const char *sql) {
    const char *s = sql;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '(')
            s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            if (!end)
                return 0;
            s = end + 2;
        } else {
            break;
        }
    }
    return strncasecmp(s, "copy", 4) == 0 && !(s[4] == '_' || (s[4] >= '0' && s[4] <= '9') ||
                                               ((s[4] | 0x20) >= 'a' && (s[4] | 0x20) <= 'z'));
}

/*
 * Refuses, before anything is sent, what a statement cannot run with: a value PostgreSQL cannot
 * take (named with its row in a batch), and COPY as a batch's statement.
 */
static keel_status pg_batch_refused(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                    keel_error *err) {
    if (stmt->many && pg_starts_with_copy(sql))
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, PG_ENGINE, keel__pg_dbname(p->c),
                               "COPY cannot run in a batch (query_many)");
    size_t n = stmt->nrows * stmt->nparams;
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = &stmt->params[i];
        keel_status st = keel__pg_param_check(p, v, i % stmt->nparams, err);
        if (st != KEEL_OK && stmt->many) {
            char msg[KEEL_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "%s", err ? err->message : "");
            char state[6] = "";
            if (err)
                memcpy(state, err->sqlstate, sizeof state);
            st = keel__error_set(err, st, PG_ENGINE, keel__pg_dbname(p->c), "row %zu: %s",
                                 i / stmt->nparams, msg);
            keel__error_set_sqlstate(err, state);
        }
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

/*
 * Copies a batch's parameters (they are only valid during the query call) in one block, which
 * also holds the prepared parameter types and the per-row prepare marks.
 */
static keel_status pg_batch_copy(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                 keel_error *err) {
    size_t n = stmt->nrows * stmt->nparams;
    if (stmt->nparams && n / stmt->nparams != stmt->nrows)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    keel_status st = pg_batch_refused(p, stmt, sql, err);
    if (st != KEEL_OK)
        return st;
    /* The extra room of the copy holds the parameter types, then one prepare mark per row. */
    size_t types = stmt->nparams * sizeof(Oid), extra;
    void *more = NULL;
    keel_value *vals = __builtin_add_overflow(types, stmt->nrows, &extra)
                           ? NULL
                           : keel__values_copy(stmt->params, n, extra, &more);
    if (!vals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory copying %zu batch rows", stmt->nrows);
    char *prep = more ? (char *)more + types : NULL;
    if (prep)
        memset(prep, 0, stmt->nrows);
    keel__values_free(p->bvals);
    p->bvals = vals;
    p->btypes = more;
    p->bprep = prep;
    return KEEL_OK;
}

/* Starts one statement through the prepared-statement cache. */
static keel_status pg_query_cached(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                   keel_error *err) {
    for (size_t i = 0; i < stmt->nparams; i++) {
        keel_status st = keel__pg_param_check(p, &stmt->params[i], i, err);
        if (st != KEEL_OK)
            return st;
    }
    if (stmt->nparams) {
        keel_status st = keel__pg_encode(p, stmt->params, stmt->nparams, err);
        if (st != KEEL_OK)
            return st;
        if (keel__pg_own_bytes(p, stmt->nparams) != 0)
            return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                                   "out of memory");
    }
    p->xsql = sql;
    p->xsql_len = stmt->sql_len;
    p->xnparams = stmt->nparams;
    p->xretried = 0;
    p->phase = PG_CACHED;
    int r = keel__pg_cached_send(p);
    if (r == -2) {
        p->phase = PG_IDLE;
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    }
    if (r != 0)
        return keel__pg_send_failed(p, 0, err);
    if (keel__pg_after_send(p) != 0)
        return keel__pg_send_failed(p, 1, err);
    return KEEL_OK;
}

/* 1 when sql begins with the keyword COMMIT or END (after blanks and comments), else 0. */
static int pg_is_commit(const char *sql) {
    for (;;) {
        while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '\f')
            sql++;
        if (sql[0] == '-' && sql[1] == '-') {
            sql += strcspn(sql, "\n");
        } else if (sql[0] == '/' && sql[1] == '*') {
            const char *end = strstr(sql + 2, "*/");
            if (!end)
                return 0;
            sql = end + 2;
        } else {
            break;
        }
    }
    size_t n = strncasecmp(sql, "COMMIT", 6) == 0 ? 6 : strncasecmp(sql, "END", 3) == 0 ? 3 : 0;
    char after = n ? sql[n] : 'x';
    return !(after == '_' || (after >= '0' && after <= '9') || (after >= 'a' && after <= 'z') ||
             (after >= 'A' && after <= 'Z') || (unsigned char)after >= 0x80);
}

keel_status keel__pg_query(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = keel__pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    const char *sql = pg_sql(p, c, stmt->sql, stmt->sql_len);
    if (!sql)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    if (stmt->nparams > 65535)
        return keel__error_set(err, KEEL_ERR_PARAMETERS, PG_ENGINE, keel__pg_dbname(c),
                               "PostgreSQL accepts at most 65535 parameters, %zu were given",
                               stmt->nparams);
    keel__pg_op_reset(p);
    /* A COMMIT written as a statement, of a failed block: an error, as keel__pg_transaction's. */
    if (PQtransactionStatus(p->pg) == PQTRANS_INERROR && pg_is_commit(sql))
        p->doomed = "the transaction was rolled back: an earlier statement in it failed";
    if (stmt->nparams && keel__pg_needs_types(stmt)) {
        /* Arrays and ints take the form of the parameter types the server describes. */
        int known = keel__pg_ptypes_cached(p, stmt, sql);
        if (known < 0)
            return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c),
                                   "out of memory");
        if (!known) {
            st = pg_batch_refused(p, stmt, sql, err);
            if (st != KEEL_OK)
                return st;
            return keel__pg_ptypes_start(p, stmt, sql, err);
        }
    }
    return pg_query_run(p, stmt, sql, err);
}

/* Runs a statement whose array parameters, if any, have their described types in p->pdesc. */
static keel_status pg_query_run(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                keel_error *err) {
    keel_conn *c = p->c;
    keel_status st;
    if (stmt->many) {
        st = pg_batch_copy(p, stmt, sql, err);
        if (st != KEEL_OK)
            return st;
        p->bsql = sql;
        p->brows = stmt->nrows;
        p->bnparams = stmt->nparams;
        if (keel__pg_wire_usable(p)) {
            p->phase = PG_BATCH;
            st = keel__pg_wire_start(p, err);
            if (st != KEEL_OK) {
                p->phase = PG_IDLE;
                pg_batch_clear(p);
            }
            return st;
        }
        if (!PQenterPipelineMode(p->pg)) {
            pg_batch_clear(p);
            return keel__pg_send_failed(p, 0, err);
        }
        p->phase = PG_BATCH;
        if (pg_batch_send(p) != 0 ||
            keel__watch_set(p->watch, KEEL_READ | (pg_want_write(p) ? KEEL_WRITE : 0)) != 0)
            return keel__pg_send_failed(p, 1, err);
        return KEEL_OK;
    }
    if (p->cache.capacity && !pg_starts_with_copy(sql) &&
        (stmt->nparams || keel__pg_one_statement(sql)))
        return pg_query_cached(p, stmt, sql, err);
    int ok;
    if (stmt->nparams == 0) {
        ok = PQsendQuery(p->pg, sql);
    } else {
        for (size_t i = 0; i < stmt->nparams; i++) {
            st = keel__pg_param_check(p, &stmt->params[i], i, err);
            if (st != KEEL_OK)
                return st;
        }
        st = keel__pg_encode(p, stmt->params, stmt->nparams, err);
        if (st != KEEL_OK)
            return st;
        ok = PQsendQueryParams(p->pg, sql, (int)stmt->nparams, p->ptypes, p->pvals, p->plens,
                               p->pfmts, 0);
    }
    p->phase = PG_QUERY;
    if (!ok)
        return keel__pg_send_failed(p, 0, err);
    /* Rows are streamed only from a single statement: of several, the last one's rows are the
     * result, which is known only at the end. */
    if (c->rows_cb && (stmt->nparams || keel__pg_one_statement(sql)))
        p->stream = PQsetSingleRowMode(p->pg);
    if (keel__pg_after_send(p) != 0)
        return keel__pg_send_failed(p, 1, err);
    return KEEL_OK;
}

keel_status keel__pg_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = keel__pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if ((unsigned)op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, PG_ENGINE, keel__pg_dbname(c),
                               "unknown transaction operation %d", (int)op);
    /*
     * A statement failed in the block (and its error was caught): the server answers COMMIT
     * with the tag ROLLBACK and no error, and refuses RELEASE SAVEPOINT. Both end in an error,
     * so that no caller takes its writes for kept: COMMIT ends the block (rolled back), and a
     * savepoint is rolled back to and released, so that the enclosing block goes on. The error
     * is set on the tag ROLLBACK (ROLLBACK TO's tag too) that the first statement answers.
     */
    const char *doomed = NULL;
    int failed_block = PQtransactionStatus(p->pg) == PQTRANS_INERROR;
    if (failed_block && op == KEEL_TXN_COMMIT)
        doomed = "the transaction was rolled back: an earlier statement in it failed";
    else if (failed_block && op == KEEL_TXN_RELEASE)
        doomed = "the savepoint was rolled back: an earlier statement in it failed";
    int bad = keel__txn_sql(doomed && op == KEEL_TXN_RELEASE ? KEEL_TXN_ROLLBACK_TO : op, depth,
                            &p->sqlbuf) != 0;
    if (!bad && doomed && op == KEEL_TXN_RELEASE)
        bad = keel__buf_printf(&p->sqlbuf, "; RELEASE SAVEPOINT keel_sp_%u", depth) != 0;
    if (bad)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    keel__pg_op_reset(p);
    p->doomed = doomed;
    p->phase = PG_QUERY;
    if (!PQsendQuery(p->pg, p->sqlbuf.data))
        return keel__pg_send_failed(p, 0, err);
    if (keel__pg_after_send(p) != 0)
        return keel__pg_send_failed(p, 1, err);
    return KEEL_OK;
}
