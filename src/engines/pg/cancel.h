/* src/engines/pg/cancel.h - PostgreSQL's cancel request built by keel: the key and the packet. */
#ifndef KEEL_ENGINES_PG_CANCEL_H
#define KEEL_ENGINES_PG_CANCEL_H

#include <stdint.h>
#include <stdio.h>
#include <libpq-fe.h>

#include "engines/cancel.h"

/*
 * A PostgreSQL cancel is a CancelRequest packet (length 16, code 80877102, the backend's
 * process id and its secret key) on a fresh connection to the server, which closes it once it
 * has signalled the backend. libpq's PQcancel sends it with blocking calls and no timeout, and
 * libpq before 17 has no non-blocking variant; keel sends the packet itself from the loop
 * (engines/cancel.h), with a deadline.
 *
 * libpq before 17 does not expose the secret key either. It does print every protocol message
 * it reads to a stream set with PQtrace (libpq 14 and later), in the documented line format
 * "B <length> BackendKeyData <pid> <key>". So keel traces the handshake only, into a stream of
 * its own that keeps nothing but the BackendKeyData line (every other line, which may hold a
 * password message, is wiped as it arrives), and stops tracing once connected. The key is used
 * only when the process id read from the trace equals PQbackendPID: a libpq whose trace reads
 * otherwise yields no key, and its cancels go through PQcancel on a worker instead
 * (engines/cancel.h: a job, given up at its deadline).
 *
 * libpq 17 and later (LIBPQ_HAS_ASYNC_CANCEL) cancel without blocking themselves: there keel
 * polls PQcancelStart's connection from the loop instead (engines/cancel.h: a connection), and
 * neither traces the handshake nor builds the packet.
 */
typedef struct keel__pg_key {
    FILE *trace;   /* the stream given to PQtrace while the handshake runs, or NULL */
    char line[96]; /* the trace line being read; longer lines are not kept */
    size_t len;
    int overflow;
    int found;
    int32_t pid, key; /* the last BackendKeyData read */
    int valid;        /* the key belongs to the session (checked against PQbackendPID) */
} keel__pg_key;

/* Starts reading the handshake of pg (right after PQconnectStart). Nothing when out of memory. */
void keel__pg_key_trace(keel__pg_key *k, PGconn *pg);

/* The handshake ended (pg may be NULL or failed): stops tracing and checks the key. */
void keel__pg_key_done(keel__pg_key *k, PGconn *pg);

/*
 * The packet that cancels the statement running on pg, sent to the address pg is connected to.
 * 0, or -1 without a valid key or when the address cannot be read.
 */
int keel__pg_cancel_packet(const keel__pg_key *k, PGconn *pg, keel__cancel_packet *out);

#ifdef LIBPQ_HAS_ASYNC_CANCEL
/* libpq's non-blocking cancel of the statement running on pg, started; NULL when it could not
 * start. The keel__cancel_ops conn_* functions for it. */
void *keel__pg_cancel_conn_start(PGconn *pg);
int keel__pg_cancel_conn_poll(void *conn);
int keel__pg_cancel_conn_socket(const void *conn);
void keel__pg_cancel_conn_free(void *conn);
#endif

#endif
