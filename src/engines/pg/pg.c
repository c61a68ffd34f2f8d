/* src/engines/pg/pg.c - the PostgreSQL engine: libpq's asynchronous API driven by the host loop. */
#include <stdio.h>
#include <string.h>

#include "engines/pg/connect.h"
#include "engines/pg/copy.h"
#include "engines/pg/describe.h"
#include "engines/pg/exec.h"
#include "engines/pg/pg.h"

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */
const char *keel__pg_dbname(const keel_conn *c) { return c->config ? c->config->name : ""; }

void keel__pg_clean_message(char *dst, size_t size, const char *src) {
    char flat[KEEL_ERROR_MESSAGE_MAX * 2];
    size_t n = 0;
    int space = 0;
    for (const char *s = src ? src : ""; *s && n + 1 < sizeof flat; s++) {
        if (*s == '\n' || *s == '\t' || *s == '\r') {
            space = 1;
            continue;
        }
        if (space && n > 0 && flat[n - 1] != ' ')
            flat[n++] = ' ';
        space = 0;
        if (n + 1 < sizeof flat)
            flat[n++] = *s;
    }
    while (n > 0 && flat[n - 1] == ' ')
        n--;
    flat[n] = '\0';
    keel__redact(dst, size, flat);
}

keel_status keel__pg_error_libpq(keel_error *err, keel_status code, const keel_conn *c,
                                 const char *prefix, const char *msg) {
    char clean[KEEL_ERROR_MESSAGE_MAX];
    keel__pg_clean_message(clean, sizeof clean, msg && *msg ? msg : "unknown libpq error");
    return keel__error_set(err, code, PG_ENGINE, keel__pg_dbname(c), "%s%s", prefix ? prefix : "",
                           clean);
}

keel_status keel__pg_status_of(const char *s) {
    if (!s || strlen(s) != 5)
        return KEEL_ERR_DATABASE;
    if (strcmp(s, "57014") == 0)
        return KEEL_ERR_CANCELLED;
    if (strcmp(s, "08P01") == 0)
        return KEEL_ERR_PARAMETERS;
    if (strcmp(s, "42P18") == 0 || strcmp(s, "42P02") == 0)
        return KEEL_ERR_PARAMETERS; /* indeterminate datatype / undefined parameter */
    /* Insufficient resources, object not in prerequisite state, operator intervention, system
     * error: the server or its surroundings, not the statement. */
    if (strncmp(s, "53", 2) == 0 || strncmp(s, "55", 2) == 0 || strncmp(s, "57", 2) == 0 ||
        strncmp(s, "58", 2) == 0)
        return KEEL_ERR_OPERATIONAL;
    if (strncmp(s, "XX", 2) == 0)
        return KEEL_ERR_INTERNAL;
    return keel__status_from_sqlstate(s);
}

keel_status keel__pg_connect_error(pg_impl *p, keel_error *err, keel_status code) {
    const char *msg = PQerrorMessage(p->pg);
    char prefix[200];
    prefix[0] = '\0';
    if (!msg || !strstr(msg, "connection to server") || p->resolved)
        snprintf(prefix, sizeof prefix, "could not connect to PostgreSQL at %s: ", p->where);
    return keel__pg_error_libpq(err, code, p->c, prefix, msg);
}

/* ---------------------------------------------------------------------------------------- */
/* Cancel, transaction status and close                                                     */

static int pg_running(const pg_impl *p) {
    return p->phase == PG_QUERY || p->phase == PG_BATCH || p->phase == PG_CACHED ||
           p->phase == PG_COPY || p->phase == PG_DESCRIBE || p->phase == PG_PTYPES;
}

static int pg_cancel_running(void *owner, uint64_t seq) {
    const pg_impl *p = owner;
    return pg_running(p) && p->op_seq == seq;
}

/* A cancel request carries its own PGcancel, which outlives the connection if need be. */
static void *pg_cancel_prepare(void *owner) {
    pg_impl *p = owner;
    return PQgetCancel(p->pg);
}

/* Runs on a worker: PQcancel opens a connection of its own and waits for the server, without a
 * timeout. Used only when the handshake yielded no cancel key (see pg/cancel.h). */
static void pg_cancel_send(void *req) {
    char errbuf[256];
    PQcancel(req, errbuf, sizeof errbuf);
}

static void pg_cancel_release(void *req) { PQfreeCancel(req); }

#ifdef LIBPQ_HAS_ASYNC_CANCEL
/* libpq 17's own non-blocking cancel, polled from the loop. */
static void *pg_cancel_conn_start(void *owner) {
    pg_impl *p = owner;
    return keel__pg_cancel_conn_start(p->pg);
}
#endif

/* The CancelRequest keel sends itself from the loop, when the handshake yielded the key. */
static int pg_cancel_packet(void *owner, keel__cancel_packet *out) {
    pg_impl *p = owner;
    return keel__pg_cancel_packet(&p->key, p->pg, out);
}

/*
 * The cancel request that held the end of the operation returned: the end is reported now.
 * When it did not return in time it may still reach the server, so the connection is given up
 * after this operation rather than trusted with the next statement.
 */
static void pg_cancel_settled(void *owner, int answered) {
    pg_impl *p = owner;
    if (p->phase != PG_HELD)
        return;
    if (!answered)
        p->c->broken = 1;
    p->phase = p->held;
    keel__pg_finish(p);
}

const keel__cancel_ops keel__pg_cancel_ops = {
    .running = pg_cancel_running,
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    .conn_start = pg_cancel_conn_start,
    .conn_poll = keel__pg_cancel_conn_poll,
    .conn_socket = keel__pg_cancel_conn_socket,
    .conn_free = keel__pg_cancel_conn_free,
#endif
    .packet = pg_cancel_packet,
    .prepare = pg_cancel_prepare,
    .send = pg_cancel_send,
    .release = pg_cancel_release,
    .settled = pg_cancel_settled,
};

static void pg_cancel(keel_conn *c) {
    pg_impl *p = c->impl;
    if (!p || !p->pg || !pg_running(p))
        return;
    if (p->phase == PG_COPY)
        keel__pg_copy_cancel(p);
    keel__cancel_start(&p->cancel, keel__conn_workers(c), p->op_seq);
}

static keel_txn_status pg_txn_status(const keel_conn *c) {
    const pg_impl *p = c->impl;
    if (!p || !p->pg || p->phase == PG_DEAD)
        return KEEL_TXN_UNKNOWN;
    switch (PQtransactionStatus(p->pg)) {
    case PQTRANS_IDLE:
        return KEEL_TXN_IDLE;
    case PQTRANS_INTRANS:
        return KEEL_TXN_ACTIVE;
    case PQTRANS_INERROR:
        return KEEL_TXN_FAILED;
    default:
        return KEEL_TXN_UNKNOWN;
    }
}

static void pg_close(keel_conn *c) {
    pg_impl *p = c->impl;
    if (!p)
        return;
    c->impl = NULL;
    /* A statement still running would go on on the server after the session is gone, until
     * it next writes to the client: it is cancelled, by a request that outlives the
     * connection and that nothing waits for. */
    if (p->pg && pg_running(p))
        keel__cancel_fire(&p->cancel, keel__conn_workers(c));
    keel__pg_destroy(p);
}

const keel__engine keel__engine_postgresql = {
    .name = PG_ENGINE,
    .placeholder_style = KEEL__PH_POSTGRES,
    .ident_quote = '"',
    .notifications = 1,
    .check_config = keel__pg_check_config,
    .connect = keel__pg_connect,
    .query = keel__pg_query,
    .describe = keel__pg_describe,
    .copy_in = keel__pg_copy_in,
    .ping = keel__ping_sql,
    .transaction = keel__pg_transaction,
    .resume = keel__pg_unpause,
    .cancel = pg_cancel,
    .txn_status = pg_txn_status,
    .close = pg_close,
};
