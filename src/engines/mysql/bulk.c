/* src/engines/mysql/bulk.c - MySQL batches: MariaDB bulk execution of parameter arrays, atomic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/numtext.h"
#include "core/timeconv.h"
#include "engines/mysql/bulk.h"
#include "engines/mysql/codec.h"
#include "engines/mysql/exec.h"

/*
 * A batch is sent as bulk executions (MariaDB's array binding) of at most this many rows or
 * bytes of parameter data each, well under the server's max_allowed_packet (16 MiB by default
 * since MariaDB 10.2, the first version with bulk execution).
 */
#define MY_BULK_ROWS 16384
#define MY_BULK_BYTES (4u << 20)
/* The savepoint a batch runs under when it is already inside a transaction. */
#define MY_BATCH_SAVEPOINT "keel_batch"

/* ---------------------------------------------------------------------------------------- */
/* Arrays of parameters                                                                     */

/* Bytes a value adds to an execution request, for sizing bulk executions. */
static size_t my_wire_size(const keel_value *v) {
    if (keel__my_is_strlike(v->type))
        return v->u.str.len + 9;
    return v->type == KEEL_TYPE_UUID ? 37 : 13;
}

/*
 * The end of the bulk execution starting at row a: every parameter keeps one type (NULLs fit
 * any), and the rows stay within the row and byte limits.
 */
static size_t my_chunk_end(const my_impl *p, size_t a) {
    size_t np = p->nparams, bytes = 0, r;
    const keel_value *rows = p->pcopy;
    for (r = a; r < p->brows && r - a < MY_BULK_ROWS; r++) {
        const keel_value *row = rows + r * np;
        size_t rowbytes = 0;
        int conflict = 0;
        for (size_t k = 0; k < np; k++) {
            rowbytes += my_wire_size(&row[k]);
            if (row[k].type == KEEL_TYPE_NULL || r == a)
                continue;
            for (size_t q = a; q < r; q++) {
                keel_type t = rows[q * np + k].type;
                if (t != KEEL_TYPE_NULL) {
                    conflict = t != row[k].type;
                    break;
                }
            }
            if (conflict)
                break;
        }
        if (conflict || (r > a && bytes + rowbytes > MY_BULK_BYTES))
            break;
        bytes += rowbytes;
    }
    return r;
}

/* Column arrays of one parameter for a bulk execution. */
typedef struct my_barray {
    enum enum_field_types type;
    char *ind;
    void *buf;
    unsigned long *len;
} my_barray;

static void *my_balloc(my_impl *p, size_t n, size_t size, int *oom) {
    void *m = keel__arena_alloc(&p->barena, n * size);
    if (!m)
        *oom = 1;
    return m;
}

/* Fills the arrays of parameter k for rows [a, b). Values passed keel__my_param_check. */
static void my_barray_fill(my_impl *p, my_barray *arr, size_t k, size_t a, size_t b, int *oom) {
    size_t n = b - a, np = p->nparams;
    const keel_value *rows = p->pcopy;
    keel_type t = KEEL_TYPE_NULL;
    for (size_t r = a; r < b && t == KEEL_TYPE_NULL; r++)
        t = rows[r * np + k].type;
    arr->ind = my_balloc(p, n, 1, oom);
    arr->buf = NULL;
    arr->len = NULL;
    MYSQL_TIME *times = NULL;
    char *uuids = NULL;
    switch (t) {
    case KEEL_TYPE_NULL:
    case KEEL_TYPE_DOCUMENT: /* refused by keel__my_param_check */
    case KEEL_TYPE_ARRAY:
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
    case KEEL_TYPE_RANGE:
        arr->type = MYSQL_TYPE_NULL;
        break;
    case KEEL_TYPE_BOOL:
        arr->type = MYSQL_TYPE_TINY;
        arr->buf = my_balloc(p, n, 1, oom);
        break;
    case KEEL_TYPE_INT:
        arr->type = MYSQL_TYPE_LONGLONG;
        arr->buf = my_balloc(p, n, sizeof(int64_t), oom);
        break;
    case KEEL_TYPE_FLOAT:
        arr->type = MYSQL_TYPE_DOUBLE;
        arr->buf = my_balloc(p, n, sizeof(double), oom);
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
    case KEEL_TYPE_UUID:
        arr->type = t == KEEL_TYPE_NUMERIC ? MYSQL_TYPE_NEWDECIMAL
                    : t == KEEL_TYPE_BYTES ? MYSQL_TYPE_BLOB
                                           : MYSQL_TYPE_STRING;
        arr->buf = my_balloc(p, n, sizeof(char *), oom);
        arr->len = my_balloc(p, n, sizeof(unsigned long), oom);
        if (t == KEEL_TYPE_UUID)
            uuids = my_balloc(p, n, KEEL__UUID_TEXT_MAX, oom);
        break;
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_INTERVAL:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        /* Temporal arrays hold pointers to MYSQL_TIME: their wire size varies. */
        arr->type = t == KEEL_TYPE_DATE                              ? MYSQL_TYPE_DATE
                    : t == KEEL_TYPE_TIME || t == KEEL_TYPE_INTERVAL ? MYSQL_TYPE_TIME
                                                                     : MYSQL_TYPE_DATETIME;
        arr->buf = my_balloc(p, n, sizeof(MYSQL_TIME *), oom);
        times = my_balloc(p, n, sizeof(MYSQL_TIME), oom);
        break;
    }
    if (*oom)
        return;
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = &rows[(a + i) * np + k];
        if (v->type == KEEL_TYPE_NULL) {
            arr->ind[i] = STMT_INDICATOR_NULL;
            if (arr->len)
                arr->len[i] = 0;
            if (arr->buf && (arr->len || times))
                ((void **)arr->buf)[i] = NULL;
            continue;
        }
        arr->ind[i] = STMT_INDICATOR_NONE;
        switch (t) {
        case KEEL_TYPE_BOOL:
            ((signed char *)arr->buf)[i] = v->u.boolean ? 1 : 0;
            break;
        case KEEL_TYPE_INT:
            ((int64_t *)arr->buf)[i] = v->u.i64;
            break;
        case KEEL_TYPE_FLOAT:
            ((double *)arr->buf)[i] = v->u.f64;
            break;
        case KEEL_TYPE_UUID:
            keel__format_uuid(v->u.uuid, uuids + i * KEEL__UUID_TEXT_MAX);
            ((char **)arr->buf)[i] = uuids + i * KEEL__UUID_TEXT_MAX;
            arr->len[i] = 36;
            break;
        case KEEL_TYPE_DATE:
            keel__my_mtime_date(v->u.date, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_TIME:
            keel__my_mtime_time(v->u.micros, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_INTERVAL:
            keel__my_mtime_interval(v, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_TIMESTAMP:
        case KEEL_TYPE_TIMESTAMPTZ:
            keel__my_mtime_stamp(v->u.micros, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_NULL:
            break;
        default:
            ((char **)arr->buf)[i] =
                v->u.str.len ? (char *)(uintptr_t)v->u.str.ptr : keel__my_empty;
            arr->len[i] = (unsigned long)v->u.str.len;
            break;
        }
    }
}

/* Binds rows [a, b) of the batch as arrays, for one bulk execution. */
static int my_bind_bulk(my_impl *p, size_t a, size_t b) {
    int oom = 0;
    keel__arena_free(&p->barena);
    my_barray *arrs = my_balloc(p, p->nparams, sizeof *arrs, &oom);
    for (size_t k = 0; !oom && k < p->nparams; k++)
        my_barray_fill(p, &arrs[k], k, a, b, &oom);
    if (oom || keel__my_binds_reserve(p, p->nmap) != 0) {
        /* Recorded now: the caller would otherwise report the statement's (empty) error. */
        keel__my_nomem(p, &p->err);
        p->failed = 1;
        return -1;
    }
    for (size_t i = 0; i < p->nmap; i++) {
        const my_barray *arr = &arrs[p->map[i]];
        MYSQL_BIND *bd = &p->binds[i];
        memset(bd, 0, sizeof *bd);
        bd->buffer_type = arr->type;
        bd->buffer = arr->buf;
        bd->length = arr->len;
        bd->u.indicator = arr->ind;
    }
    unsigned n = (unsigned)(b - a);
    if (mysql_stmt_attr_set(p->cur, STMT_ATTR_ARRAY_SIZE, &n) != 0)
        return -1;
    return mysql_stmt_bind_param(p->cur, p->binds) ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Batches                                                                                  */

/*
 * Batches are atomic. A batch that is one execution needs nothing more (a statement succeeds
 * or fails as a whole); a longer one runs in a transaction it begins, or under a savepoint of
 * the caller's transaction. The wrapping is added lazily: a single execution that fails is
 * undone by the server, and only then is a transaction begun to find the failing row in.
 */
static int my_batch_wrap(my_impl *p) {
    const char *sql = p->own_txn ? "BEGIN" : "SAVEPOINT " MY_BATCH_SAVEPOINT;
    p->stage = MS_BEGIN;
    return keel__my_text_start(p, sql, strlen(sql));
}

/* Ends the batch: its transaction or savepoint is kept on success, rolled back on failure. */
static int my_batch_end(my_impl *p) {
    if (!p->wrapped || p->c->broken) /* nothing to end, or nothing more can be sent */
        return keel__my_finish(p);
    /* Asked to stop after its last range ran: a cancelled batch is undone, whenever it ends. */
    if (p->cancel_wanted)
        keel__my_fail(p, KEEL_ERR_CANCELLED,
                      "the batch was cancelled; what it wrote is rolled back");
    p->cleanup = 1;
    const char *sql;
    if (p->failed) {
        p->berr = p->err;
        p->stage = MS_ROLLBACK;
        sql = p->own_txn ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT " MY_BATCH_SAVEPOINT;
    } else {
        p->stage = MS_COMMIT;
        sql = p->own_txn ? "COMMIT" : "RELEASE SAVEPOINT " MY_BATCH_SAVEPOINT;
    }
    p->failed = 0;
    keel__my_text_start(p, sql, strlen(sql));
    /* A KILL QUERY still in flight would stop this statement: it waits for the request to
     * return (my_cancel_settled starts it). */
    if (keel__cancel_hold(&p->cancel)) {
        p->call = C_NONE;
        p->report = R_STEP;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return 1;
    }
    return 0;
}

int keel__my_batch_exec(my_impl *p) {
    if (p->cancel_wanted) {
        char msg[120];
        snprintf(msg, sizeof msg,
                 "the batch was cancelled before row %zu; what it wrote is "
                 "rolled back",
                 p->ra);
        keel__my_fail(p, KEEL_ERR_CANCELLED, msg);
        return my_batch_end(p);
    }
    const keel_value *row = p->pcopy + p->ra * p->nparams;
    int rc = p->rb - p->ra == 1 ? keel__my_bind_row(p, row) : my_bind_bulk(p, p->ra, p->rb);
    if (rc != 0) {
        keel__my_fail_stmt(p, p->cur, p->ra, p->rb);
        return my_batch_end(p);
    }
    p->stage = MS_BODY;
    p->call = C_EXECUTE;
    return 0;
}

/* Picks the next range of rows: a pending half of a failed range, or the next chunk. */
static int my_batch_pick(my_impl *p) {
    if (p->nsplit) {
        p->nsplit--;
        p->ra = p->split[p->nsplit][0];
        p->rb = p->split[p->nsplit][1];
        return 1;
    }
    if (p->bnext < p->brows) {
        p->ra = p->bnext;
        p->rb = p->rowmode ? p->ra + 1 : my_chunk_end(p, p->ra);
        p->bnext = p->rb;
        return 1;
    }
    return 0;
}

int keel__my_batch_start(my_impl *p) {
    /* Bulk execution needs parameters and a statement without a result set; otherwise the
     * rows run one by one, and the rows they return (INSERT … RETURNING) are the batch's
     * result, every parameter row's in turn. */
    p->rowmode = !p->bulk_ok || p->nmap == 0 || mysql_stmt_field_count(p->cur) > 0;
    my_batch_pick(p);
    if (p->rb < p->brows)
        return my_batch_wrap(p);
    return keel__my_batch_exec(p);
}

int keel__my_batch_next(my_impl *p) {
    if (my_batch_pick(p))
        return keel__my_batch_exec(p);
    return my_batch_end(p);
}

int keel__my_batch_failed(my_impl *p) {
    keel_status code = p->err.code;
    size_t a = p->ra, b = p->rb;
    if (b - a > 1 && p->nsplit < MY_SPLIT_MAX && code != KEEL_ERR_CANCELLED &&
        code != KEEL_ERR_CONNECTION_LOST && code != KEEL_ERR_TIMEOUT &&
        code != KEEL_ERR_TRANSACTION && code != KEEL_ERR_NOMEM && code != KEEL_ERR_INTERNAL &&
        !p->c->broken) {
        size_t m = a + (b - a) / 2;
        p->split[p->nsplit][0] = m;
        p->split[p->nsplit][1] = b;
        p->nsplit++;
        p->failed = 0;
        keel_error_clear(&p->err);
        p->ra = a;
        p->rb = m;
        return p->wrapped ? keel__my_batch_exec(p) : my_batch_wrap(p);
    }
    return my_batch_end(p);
}
