/* src/engines/pg/batch.h - a batch's protocol messages written and read by keel, without libpq. */
#ifndef KEEL_ENGINES_PG_BATCH_H
#define KEEL_ENGINES_PG_BATCH_H

#include "engines/pg/pg.h"

/*
 * libpq sends a Describe of the portal with every row of a prepared batch (PQsendQueryPrepared
 * has no way to leave it out), and the server answers each. On a plain socket keel writes the
 * batch itself instead: one Parse and one Describe of the statement (again only when a row's
 * parameter types differ), then a Bind and an Execute per row, and one Sync; it reads the
 * answers itself until ReadyForQuery. libpq is idle meanwhile and is handed the connection
 * back at a message boundary; when the batch left the session in another transaction state
 * than libpq last saw, a Sync sent through libpq brings its view up to date.
 */

/*
 * 1 when the batch about to start (phase PG_BATCH, its rows in p->bvals) can go on the wire
 * directly: the connection is neither TLS nor GSS-encrypted (bytes written to the socket must
 * go through libpq's encryption there, so those batches stay on libpq's pipeline) and libpq
 * sees no transaction failed, else 0. Does not block.
 */
int keel__pg_wire_usable(const pg_impl *p);

/*
 * Starts the batch of p on the wire: queues its first rows and watches the socket. KEEL_OK, or
 * an error in err (out of memory, before anything was sent; or a socket failure, after which
 * the connection is given up, as keel__pg_send_failed does). Does not block.
 */
keel_status keel__pg_wire_start(pg_impl *p, keel_error *err);

/* 1 while a batch of p runs on the wire (keel__pg_wire_step drives it), else 0. */
int keel__pg_wire_active(const pg_impl *p);

/*
 * One wake-up of a batch on the wire: writes what the socket takes, reads and handles what
 * arrived. Returns 1 when the batch is over (its result or error is in p, the result to report
 * with keel__pg_finish), 0 when it goes on (the watch is set), -1 when the connection failed
 * (p->err says how: CONNECTION_LOST). A batch whose end needs libpq's transaction state brought
 * up to date hands over to libpq's pipeline collection (it is no longer active) and returns 0.
 */
int keel__pg_wire_step(pg_impl *p, int events);

/* Forgets the running batch's wire state (the buffers are kept for the next batch). */
void keel__pg_wire_clear(pg_impl *p);

/* Frees the wire state of p (keel__pg_destroy). */
void keel__pg_wire_free(pg_impl *p);

#endif
