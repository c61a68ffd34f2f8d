/* src/engines/pg/batch.c - a batch's protocol messages written and read by keel, without libpq. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engines/pg/batch.h"
#include "engines/pg/codec.h"
#include "engines/pg/exec.h"

/* Messages are encoded up to this many bytes before they are written in one send. */
#define WIRE_CHUNK_BYTES 65536
/* Rows encoded per wake-up, so a huge batch does not starve the host loop. */
#define WIRE_ROWS_PER_WAKEUP 4096
/* Bytes read per wake-up; the rest waits in the socket for the next one. */
#define WIRE_READ_PER_WAKEUP (256 * 1024)
/* Returned rows gathered into one PGresult before they are decoded into the result. */
#define WIRE_ROWS_PER_RESULT 256
/* The longest message keel accepts from the server (its own limit for a DataRow is 1 GB). */
#define WIRE_MESSAGE_MAX 0x7fffffffu

typedef struct pg_wire {
    int active;
    int fd;
    keel__buf out; /* encoded messages; out_off of them were written */
    size_t out_off;
    keel__buf in; /* bytes read; in_off of them were handled */
    size_t in_off;
    PGresult *cols; /* the columns the statement returns, NULL when it returns none */
    PGresult *rows; /* returned rows not decoded yet (cols' columns) */
    int stale;      /* a server parameter changed that libpq did not see */
    int ended;      /* ReadyForQuery was read; its transaction state is status */
    char status;
    keel__buf notes; /* notifications: pid (4 bytes), channel, NUL, payload, NUL */
} pg_wire;

static uint32_t get32(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static unsigned get16(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    return (unsigned)u[0] << 8 | u[1];
}

static char *put32(char *d, uint32_t v) {
    d[0] = (char)(v >> 24);
    d[1] = (char)(v >> 16);
    d[2] = (char)(v >> 8);
    d[3] = (char)v;
    return d + 4;
}

static char *put16(char *d, unsigned v) {
    d[0] = (char)(v >> 8);
    d[1] = (char)v;
    return d + 2;
}

int keel__pg_wire_usable(const pg_impl *p) {
    PGconn *pg = p->pg;
    PGTransactionStatusType t = PQtransactionStatus(pg);
    return !PQsslInUse(pg) && !PQgssEncInUse(pg) && PQpipelineStatus(pg) == PQ_PIPELINE_OFF &&
           (t == PQTRANS_IDLE || t == PQTRANS_INTRANS);
}

int keel__pg_wire_active(const pg_impl *p) { return p->wire && p->wire->active; }

static void wire_drop_rows(pg_wire *w) {
    if (w->cols)
        PQclear(w->cols);
    if (w->rows)
        PQclear(w->rows);
    w->cols = w->rows = NULL;
}

void keel__pg_wire_clear(pg_impl *p) {
    pg_wire *w = p->wire;
    if (!w)
        return;
    wire_drop_rows(w);
    w->active = w->stale = w->ended = 0;
    keel__buf_reset(&w->out);
    keel__buf_reset(&w->in);
    keel__buf_reset(&w->notes);
    w->out_off = w->in_off = 0;
}

void keel__pg_wire_free(pg_impl *p) {
    pg_wire *w = p->wire;
    if (!w)
        return;
    wire_drop_rows(w);
    keel__buf_free(&w->out);
    keel__buf_free(&w->in);
    keel__buf_free(&w->notes);
    free(w);
    p->wire = NULL;
}

keel_status keel__pg_wire_start(pg_impl *p, keel_error *err) {
    if (!p->wire && !(p->wire = calloc(1, sizeof *p->wire)))
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    pg_wire *w = p->wire;
    keel__pg_wire_clear(p);
    w->fd = PQsocket(p->pg);
    w->active = 1;
    /* The first write-ready wake-up sends the first rows. */
    if (keel__watch_set(p->watch, KEEL_READ | KEEL_WRITE) != 0) {
        w->active = 0;
        return keel__error_set(err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(p->c),
                               "the event loop refused to watch the connection");
    }
    return KEEL_OK;
}

/*
 * The batch cannot go on in step with the server: it fails with code and message, and the
 * connection is given up. Returns -1.
 */
static int wire_fatal(pg_impl *p, keel_status code, const char *msg) {
    keel_error_clear(&p->err);
    keel__error_set(&p->err, code, PG_ENGINE, keel__pg_dbname(p->c), "%s", msg);
    p->failed = 1;
    p->c->broken = 1;
    return -1;
}

/*
 * The connection failed, or the server said something that does not belong. An error the
 * server sent before (a FATAL one, as at shutdown) is kept in the message. Returns -1.
 */
static int wire_lost(pg_impl *p, const char *why) {
    char msg[KEEL_ERROR_MESSAGE_MAX * 2];
    if (p->failed)
        snprintf(msg, sizeof msg, "connection lost: %s, after: %.300s", why, p->err.message);
    else
        snprintf(msg, sizeof msg, "connection lost: %s", why);
    return wire_fatal(p, KEEL_ERR_CONNECTION_LOST, msg);
}

/* ---------------------------------------------------------------------------------------- */
/* Writing                                                                                  */

/* Appends Parse of the unnamed statement with p's parameter types, and its Describe. */
static int wire_put_parse(pg_impl *p, keel__buf *b) {
    size_t n = p->bnparams, sql = strlen(p->bsql);
    size_t parse = 4 + 1 + sql + 1 + 2 + 4 * n, need = 1 + parse + 1 + 4 + 2;
    if (parse > INT32_MAX || keel__buf_reserve(b, need) != 0)
        return -1;
    char *d = b->data + b->len;
    *d++ = 'P';
    d = put32(d, (uint32_t)parse);
    *d++ = '\0';
    memcpy(d, p->bsql, sql + 1);
    d += sql + 1;
    d = put16(d, (unsigned)n);
    for (size_t i = 0; i < n; i++)
        d = put32(d, p->ptypes[i]);
    *d++ = 'D';
    d = put32(d, 6);
    *d++ = 'S';
    *d++ = '\0';
    b->len += need;
    return 0;
}

/* Appends Bind of the encoded row (p->pvals…) to the unnamed statement, then Execute. */
static int wire_put_row(pg_impl *p, keel__buf *b) {
    size_t n = p->bnparams, bind = 4 + 1 + 1 + 2 + 2 * n + 2 + 4 * n + 2;
    for (size_t i = 0; i < n; i++)
        if (p->pvals[i])
            bind += (size_t)p->plens[i];
    size_t need = 1 + bind + 1 + 4 + 1 + 4;
    if (bind > INT32_MAX || keel__buf_reserve(b, need) != 0)
        return -1;
    char *d = b->data + b->len;
    *d++ = 'B';
    d = put32(d, (uint32_t)bind);
    *d++ = '\0'; /* the unnamed portal */
    *d++ = '\0'; /* of the unnamed statement */
    d = put16(d, (unsigned)n);
    for (size_t i = 0; i < n; i++)
        d = put16(d, (unsigned)p->pfmts[i]);
    d = put16(d, (unsigned)n);
    for (size_t i = 0; i < n; i++) {
        if (!p->pvals[i]) {
            d = put32(d, UINT32_MAX); /* -1: NULL */
            continue;
        }
        d = put32(d, (uint32_t)p->plens[i]);
        memcpy(d, p->pvals[i], (size_t)p->plens[i]);
        d += p->plens[i];
    }
    d = put16(d, 0); /* every result column in text */
    *d++ = 'E';
    d = put32(d, 9);
    *d++ = '\0';
    put32(d, 0); /* all rows */
    b->len += need;
    return 0;
}

/*
 * Encodes rows from p->bsent on into w->out, up to a chunk or *budget rows. A row whose
 * parameter types differ from those the unnamed statement was last parsed with is preceded by
 * a Parse (and the first row always). A row that cannot be encoded fails the batch (p->err).
 */
static void wire_encode(pg_impl *p, size_t *budget) {
    pg_wire *w = p->wire;
    size_t n = p->bnparams;
    while (p->bsent < p->brows && w->out.len < WIRE_CHUNK_BYTES && *budget) {
        keel_error e;
        if (keel__pg_encode(p, p->bvals + p->bsent * n, n, &e) != KEEL_OK) {
            if (!p->failed) {
                p->err = e;
                p->failed = 1;
            }
            return;
        }
        int parse = p->bsent == 0 || (n && memcmp(p->btypes, p->ptypes, n * sizeof(Oid)) != 0);
        if ((parse && wire_put_parse(p, &w->out) != 0) || wire_put_row(p, &w->out) != 0) {
            keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory encoding a batch");
            return;
        }
        if (parse) {
            if (n)
                memcpy(p->btypes, p->ptypes, n * sizeof(Oid));
            p->bprep[p->bsent] = 1;
        }
        p->bsent++;
        (*budget)--;
    }
}

/*
 * Writes what the socket takes, encoding more rows as it empties, and the Sync once every row
 * is sent or the batch failed (the server skips the rest until the Sync anyway). 0, or -1
 * when the connection failed.
 */
static int wire_send(pg_impl *p) {
    pg_wire *w = p->wire;
    size_t budget = WIRE_ROWS_PER_WAKEUP;
    for (;;) {
        if (w->out_off < w->out.len) {
            ssize_t n =
                send(w->fd, w->out.data + w->out_off, w->out.len - w->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return wire_lost(p, strerror(errno));
            }
            w->out_off += (size_t)n;
            continue;
        }
        keel__buf_reset(&w->out);
        w->out_off = 0;
        if (p->bsynced)
            return 0;
        if (p->failed || p->bsent == p->brows) {
            static const char sync[5] = { 'S', 0, 0, 0, 4 };
            if (keel__buf_append(&w->out, sync, sizeof sync) != 0)
                return wire_fatal(p, KEEL_ERR_NOMEM, "out of memory ending a batch");
            p->bsynced = 1;
            continue;
        }
        if (budget == 0)
            return 0;
        /* A row that fails here (out of memory) fails the batch: what is encoded goes, then
         * the Sync. */
        wire_encode(p, &budget);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Reading                                                                                  */

/* Error fields by their code letter, pointing into the ErrorResponse read. */
typedef struct wire_fields {
    const char *f[128];
} wire_fields;

static const char *wire_field(const void *src, int code) {
    const wire_fields *fs = src;
    return code > 0 && code < 128 ? fs->f[code] : NULL;
}

/* The row count of a command tag, as PQcmdTuples reads it, or -1 when it carries none. */
static int64_t wire_tag_rows(const char *tag) {
    /* INSERT first: a batch's usual tag ("INSERT 0 1") is matched by the first comparison. */
    static const char *const counted[] = { "INSERT", "UPDATE", "DELETE", "SELECT",
                                           "MERGE",  "FETCH",  "MOVE",   "COPY" };
    const char *space = strchr(tag, ' ');
    if (!space)
        return -1;
    size_t word = (size_t)(space - tag);
    int known = 0;
    for (size_t i = 0; !known && i < sizeof counted / sizeof counted[0]; i++)
        known = strlen(counted[i]) == word && memcmp(tag, counted[i], word) == 0;
    const char *num = strrchr(tag, ' ') + 1; /* INSERT's count follows its OID */
    if (!known || !*num)
        return -1;
    int64_t n = 0;
    for (; *num; num++) {
        if (*num < '0' || *num > '9' || n > (INT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*num - '0');
    }
    return n;
}

/* Decodes the rows gathered so far into the batch's result. 0, or -1 when out of memory. */
static int wire_take_rows(pg_impl *p) {
    pg_wire *w = p->wire;
    if (!w->rows)
        return 0;
    int rc = p->failed ? 0 : keel__pg_add_rows(p, w->rows);
    PQclear(w->rows);
    w->rows = NULL;
    return rc;
}

/* RowDescription of the statement: its columns, for the rows its executes return. */
static int wire_row_description(pg_impl *p, const char *b, size_t len) {
    pg_wire *w = p->wire;
    if (wire_take_rows(p) != 0)
        return -2;
    wire_drop_rows(w);
    if (len < 2)
        return -1;
    size_t n = get16(b), at = 2;
    PGresAttDesc *atts = n ? calloc(n, sizeof *atts) : NULL;
    if (n && !atts)
        return -2;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = b + at;
        const char *end = memchr(name, '\0', len - at);
        if (!end || (size_t)(end + 1 - b) + 18 > len) {
            rc = -1;
            break;
        }
        at = (size_t)(end + 1 - b);
        atts[i].name = (char *)name;
        atts[i].tableid = get32(b + at);
        atts[i].columnid = (int)get16(b + at + 4);
        atts[i].typid = get32(b + at + 6);
        atts[i].typlen = (int)(int16_t)get16(b + at + 10);
        atts[i].atttypmod = (int)get32(b + at + 12);
        atts[i].format = 0; /* the Binds ask for text */
        at += 18;
    }
    if (rc == 0) {
        w->cols = PQmakeEmptyPGresult(p->pg, PGRES_TUPLES_OK);
        if (!w->cols || !PQsetResultAttrs(w->cols, (int)n, atts))
            rc = -2;
    }
    free(atts);
    return rc;
}

/* A DataRow of the running execute, gathered into w->rows. */
static int wire_data_row(pg_impl *p, const char *b, size_t len) {
    pg_wire *w = p->wire;
    if (p->failed)
        return 0; /* the rows of a failed batch are not returned (nor their columns known) */
    if (!w->cols || len < 2)
        return -1;
    size_t n = get16(b), at = 2;
    if ((int)n != PQnfields(w->cols))
        return -1;
    if (n == 0) {
        /* Rows without columns have nothing PQsetvalue could hold: they are counted in (the
         * result gives no values to fill for them). */
        if (keel__pg_add_rows(p, w->cols) != 0)
            return -2;
        keel__result_add_row(p->res);
        return 0;
    }
    if (!w->rows && !(w->rows = PQcopyResult(w->cols, PG_COPYRES_ATTRS)))
        return -2;
    int row = PQntuples(w->rows);
    for (size_t i = 0; i < n; i++) {
        if (len - at < 4)
            return -1;
        uint32_t vlen = get32(b + at);
        at += 4;
        if (vlen == UINT32_MAX) {
            if (!PQsetvalue(w->rows, row, (int)i, NULL, -1))
                return -2;
            continue;
        }
        if (vlen > len - at)
            return -1;
        if (!PQsetvalue(w->rows, row, (int)i, (char *)b + at, (int)vlen))
            return -2;
        at += vlen;
    }
    if (PQntuples(w->rows) >= WIRE_ROWS_PER_RESULT && wire_take_rows(p) != 0)
        return -2;
    return 0;
}

/* An ErrorResponse: the batch's first error, naming the row it belongs to. */
static int wire_error(pg_impl *p, const char *b, size_t len) {
    wire_fields fs;
    memset(&fs, 0, sizeof fs);
    size_t at = 0;
    while (at < len && b[at]) {
        unsigned char code = (unsigned char)b[at++];
        const char *end = memchr(b + at, '\0', len - at);
        if (!end)
            return -1;
        if (code < 128)
            fs.f[code] = b + at;
        at = (size_t)(end + 1 - b);
    }
    if (!p->failed) {
        /* An error after the last row (a deferred constraint at the implicit commit) has no
         * row of its own. */
        long row = p->bdone < p->brows ? (long)p->bdone : -1;
        keel__pg_error_from(p, wire_field, &fs, NULL, row, &p->err);
        p->failed = 1;
    }
    return 0;
}

/* A NotificationResponse, kept to be handed over when the batch ends (after its rows). */
static int wire_notification(pg_impl *p, const char *b, size_t len) {
    pg_wire *w = p->wire;
    if (len < 6 || b[len - 1] != '\0' || !memchr(b + 4, '\0', len - 5))
        return -1;
    return keel__buf_append(&w->notes, b, len) == 0 ? 0 : -2;
}

/*
 * A ParameterStatus: libpq misses it. When it changes a parameter that keel or libpq read to
 * encode or decode values, their view is stale from now on.
 */
static int wire_parameter(pg_impl *p, const char *b, size_t len) {
    static const char *const read[] = { "TimeZone",        "DateStyle",
                                        "IntervalStyle",   "integer_datetimes",
                                        "client_encoding", "standard_conforming_strings" };
    const char *value = memchr(b, '\0', len);
    if (!value || b[len - 1] != '\0')
        return -1;
    for (size_t i = 0; i < sizeof read / sizeof read[0]; i++) {
        if (strcmp(b, read[i]) != 0)
            continue;
        const char *seen = PQparameterStatus(p->pg, b);
        if (!seen || strcmp(seen, value + 1) != 0)
            p->wire->stale = 1;
    }
    return 0;
}

/*
 * Handles one message. Returns 0, or -1 for a message that does not belong here (the session
 * cannot be trusted any more), -2 when out of memory. After ReadyForQuery only what the server
 * sends on its own can come.
 */
static int wire_message(pg_impl *p, char type, const char *b, size_t len) {
    if (p->wire->ended && type != 'A' && type != 'S' && type != 'N')
        /* A FATAL error (shutdown) is followed by the connection's end, which libpq sees. */
        return type == 'E' ? 0 : -1;
    switch (type) {
    case '1': /* ParseComplete */
    case '2': /* BindComplete */
    case 't': /* ParameterDescription */
    case 'N': /* NoticeResponse: notices are not errors (connect.c ignores libpq's too) */
        return 0;
    case 'n': /* NoData: the statement returns no rows */
        if (wire_take_rows(p) != 0)
            return -2;
        wire_drop_rows(p->wire);
        return 0;
    case 'T':
        return wire_row_description(p, b, len);
    case 'D':
        return wire_data_row(p, b, len);
    case 'C': { /* CommandComplete: a row is done */
        if (!len || b[len - 1] != '\0')
            return -1;
        int64_t n = wire_tag_rows(b);
        if (n > 0)
            p->baffected += n;
        p->bdone++;
        /* A statement that returns rows makes the batch's result have its columns, even when
         * no row returned any. */
        if (p->wire->cols && !p->res && !p->failed && keel__pg_add_rows(p, p->wire->cols) != 0)
            return -2;
        return 0;
    }
    case 'I': /* EmptyQueryResponse */
        p->bdone++;
        return 0;
    case 'E':
        return wire_error(p, b, len);
    case 'A':
        return wire_notification(p, b, len);
    case 'S':
        return wire_parameter(p, b, len);
    case 'Z':
        if (len != 1)
            return -1;
        p->wire->ended = 1;
        p->wire->status = b[0];
        return 0;
    default:
        /* COPY (refused before anything is sent), a suspended portal, authentication… */
        return -1;
    }
}

/* Hands the notifications that came with the batch to the core, in order. */
static void wire_notify(pg_impl *p) {
    pg_wire *w = p->wire;
    for (size_t at = 0; at < w->notes.len;) {
        const char *channel = w->notes.data + at + 4;
        const char *payload = channel + strlen(channel) + 1;
        keel_notification note = {
            .channel = channel,
            .payload = payload,
            .pid = (int)get32(w->notes.data + at),
        };
        at = (size_t)(payload + strlen(payload) + 1 - w->notes.data);
        keel__conn_notify(p->c, &note);
    }
    keel__buf_reset(&w->notes);
}

/*
 * ReadyForQuery: the batch is over. libpq is handed the connection back; when its transaction
 * state is not the one the server reported (a row failed in a block, or the batch ran BEGIN or
 * COMMIT), a Sync through libpq's pipeline updates it, and that pipeline is collected as a
 * libpq batch's. 1 when the batch can be reported now, 0 when that Sync is under way, -1 when
 * libpq failed.
 */
static int wire_end(pg_impl *p, char status) {
    pg_wire *w = p->wire;
    if (wire_take_rows(p) != 0)
        keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a batch's rows");
    wire_drop_rows(w);
    wire_notify(p);
    if (w->stale)
        p->c->broken = 1; /* a later statement would use libpq's stale parameters */
    PGTransactionStatusType t = status == 'I'   ? PQTRANS_IDLE
                                : status == 'T' ? PQTRANS_INTRANS
                                                : PQTRANS_INERROR;
    if (t == PQtransactionStatus(p->pg)) {
        w->active = 0;
        return 1;
    }
    if (!PQenterPipelineMode(p->pg) || !PQpipelineSync(p->pg))
        return wire_lost(p, "libpq refused a pipeline sync");
    if (keel__watch_set(p->watch, KEEL_READ | KEEL_WRITE) != 0)
        return wire_fatal(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
    w->active = 0;
    p->bgot = 0;
    p->bsynced = 1;
    p->flush_pending = 1;
    return 0;
}

/*
 * Handles the whole messages read from w->in_off on. 1 when the batch's answers are all in:
 * ReadyForQuery was handled and the bytes read end at a message boundary, so libpq can read on
 * from the socket (what the server sent on its own right after ReadyForQuery, a notification,
 * was read with it and is handled here). 0 when more is to come, -1 when the connection failed.
 */
static int wire_handle(pg_impl *p) {
    pg_wire *w = p->wire;
    while (w->in.len - w->in_off >= 5) {
        const char *m = w->in.data + w->in_off;
        uint32_t mlen = get32(m + 1);
        if (mlen < 4 || mlen > WIRE_MESSAGE_MAX)
            return wire_lost(p, "the server sent a malformed message during a batch");
        if (w->in.len - w->in_off < (size_t)mlen + 1)
            return keel__buf_reserve(&w->in, (size_t)mlen + 1) == 0
                       ? 0
                       : wire_fatal(p, KEEL_ERR_NOMEM, "out of memory reading a batch's results");
        int rc = wire_message(p, m[0], m + 5, mlen - 4);
        w->in_off += (size_t)mlen + 1;
        if (rc == -1) {
            char why[96];
            snprintf(why, sizeof why,
                     "the server sent an unexpected message (type '%c') during a batch",
                     m[0] >= ' ' && m[0] < 127 ? m[0] : '?');
            return wire_lost(p, why);
        }
        if (rc == -2)
            keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a batch's rows");
    }
    return w->ended && w->in_off == w->in.len;
}

/*
 * Reads what arrived and handles every whole message. 1 when the batch is over (see
 * wire_handle), 0 when more is to come, -1 when the connection failed.
 */
static int wire_read(pg_impl *p) {
    pg_wire *w = p->wire;
    size_t got = 0;
    while (got < WIRE_READ_PER_WAKEUP) {
        /* The handled bytes make room for more. */
        if (w->in_off) {
            memmove(w->in.data, w->in.data + w->in_off, w->in.len - w->in_off);
            w->in.len -= w->in_off;
            w->in_off = 0;
        }
        if (w->in.cap - w->in.len < 16384 && keel__buf_reserve(&w->in, 65536) != 0)
            return wire_fatal(p, KEEL_ERR_NOMEM, "out of memory reading a batch's results");
        ssize_t n = recv(w->fd, w->in.data + w->in.len, w->in.cap - w->in.len - 1, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return wire_lost(p, strerror(errno));
        }
        if (n == 0)
            return wire_lost(p, "the server closed the connection during a batch");
        w->in.len += (size_t)n;
        got += (size_t)n;
        int rc = wire_handle(p);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int keel__pg_wire_step(pg_impl *p, int events) {
    pg_wire *w = p->wire;
    if (wire_send(p) != 0)
        return -1;
    if (events & KEEL_READ) {
        int rc = wire_read(p);
        if (rc < 0)
            return -1;
        if (rc > 0)
            return wire_end(p, w->status);
        /* A row failed: the Sync goes now rather than on the next write-ready wake-up. */
        if (p->failed && !p->bsynced && wire_send(p) != 0)
            return -1;
    }
    int write = w->out_off < w->out.len || !p->bsynced;
    if (keel__watch_set(p->watch, KEEL_READ | (write ? KEEL_WRITE : 0)) != 0)
        return wire_fatal(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
    return 0;
}
