/* src/engines/pg/copy.h - PostgreSQL bulk loads: COPY … FROM STDIN (FORMAT binary). */
#ifndef KEEL_ENGINES_PG_COPY_H
#define KEEL_ENGINES_PG_COPY_H

#include "engines/pg/pg.h"

/* True while a load has data to send: the socket is watched for writing. */
int keel__pg_copy_wants_write(const pg_impl *p);

/* Ends the load's state (its buffers are kept for the next one). */
void keel__pg_copy_clear(pg_impl *p);

/* Frees the bulk-load state of the connection (accepts none). */
void keel__pg_copy_free(pg_impl *p);

/*
 * Encodes and queues rows while the socket takes them and the wake-up's budget lasts, then the
 * trailer and the end of the data. A cancel or a value that cannot be encoded ends the data
 * with CopyFail instead. Returns 0, or -1 when libpq failed.
 */
int keel__pg_copy_send(pg_impl *p);

/*
 * Collects the load's results: the lookup, then the server's request for data (after which
 * rows are sent), then the COPY's own result. Returns 1 when the load is over, 0 when more
 * input is needed, -1 when the connection failed.
 */
int keel__pg_copy_collect(pg_impl *p);

/*
 * A cancelled load sends no more rows and ends the data with CopyFail. The usual cancel request
 * goes too: the server may be busy with rows already sent, or waiting for a lock before it
 * asks for data, and it reads the CopyFail only after everything queued before it.
 */
void keel__pg_copy_cancel(pg_impl *p);

/* The engine's copy_in: a bulk load into a table in binary COPY. */
keel_status keel__pg_copy_in(keel_conn *c, const keel__copy *cp, keel_error *err);

#endif
