/* src/engines/pg/connect.h - PostgreSQL configuration checks and connection set-up. */
#ifndef KEEL_ENGINES_PG_CONNECT_H
#define KEEL_ENGINES_PG_CONNECT_H

#include "engines/pg/pg.h"

/* The engine's check_config: validates the options of a PostgreSQL database config. */
keel_status keel__pg_check_config(const keel__dbconfig *dbc, keel_error *err);

/* Frees the resources of the connect phase and leaves the connection waiting for close. */
void keel__pg_connect_failed(pg_impl *p, const keel_error *e);

/*
 * Values are read from text in DateStyle ISO and IntervalStyle postgres: in any other style
 * a date, timestamp or interval would come as its text from a statement's text executions and
 * as a value from its binary ones. KEEL__PG_STYLE_SQL sets both back (DateStyle ISO keeps the
 * session's day-month order, which input still follows).
 */
#define KEEL__PG_STYLE_SQL "SET DateStyle = ISO; SET IntervalStyle = postgres"

/* True when the session's DateStyle or IntervalStyle (as the server last reported them) is not
 * what keel reads. */
int keel__pg_style_off(const PGconn *pg);

/* The handshake is over and the session is set up: the connection is ready. */
void keel__pg_ready(pg_impl *p);

/* One readiness of the socket during the handshake: drives PQconnectPoll. */
void keel__pg_connect_step(pg_impl *p);

/* Frees the connection and everything it holds, whatever its phase. */
void keel__pg_destroy(pg_impl *p);

/* The engine's connect: resolves the host names if need be, then starts libpq's handshake. */
keel_status keel__pg_connect(keel_conn *c, keel_error *err);

#endif
