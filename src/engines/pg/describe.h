/* src/engines/pg/describe.h - describing a PostgreSQL statement without running it (keel_conn_prepare). */
#ifndef KEEL_ENGINES_PG_DESCRIBE_H
#define KEEL_ENGINES_PG_DESCRIBE_H

#include "engines/pg/pg.h"

/* The engine's describe: the unnamed statement is parsed and described in one round trip. */
keel_status keel__pg_describe(keel_conn *c, const keel__stmt *stmt, keel_error *err);

/* Collects the describe's results (phase PG_DESCRIBE). 1 when over, 0 when more input is
 * needed, -1 when the connection failed. */
int keel__pg_describe_collect(pg_impl *p);

/* The name of a built-in type by its OID ("int4", "text[]"), or NULL for others. */
const char *keel__pg_type_name(Oid oid);

#endif
