/* src/engines/pg/exec.h - running PostgreSQL statements and batches, and collecting results. */
#ifndef KEEL_ENGINES_PG_EXEC_H
#define KEEL_ENGINES_PG_EXEC_H

#include "engines/pg/pg.h"

/* Rows a command reported (PQcmdTuples), or -1 when it reports none. */
int64_t keel__pg_affected(PGresult *r);

/* Forgets the previous operation's state before a new one starts. */
void keel__pg_op_reset(pg_impl *p);

/* Flushes what a send queued and watches for what comes next. 0, or -1 when the socket died. */
int keel__pg_after_send(pg_impl *p);

/* Forgets the running statement's result. */
void keel__pg_drop_result(pg_impl *p);

/*
 * Takes in, and frees, a successful result of the running statement (rows, one row of
 * single-row mode, or a command's completion): its rows are decoded now, or, those of a whole
 * result, as far as the turn's budget allows (the rest by keel__pg_next_result, which frees it
 * then). The last statement that returned rows is the result, else the last command.
 */
void keel__pg_take(pg_impl *p, PGresult *r);

/* Fills err from a failed PGresult; row >= 0 names the batch row it belongs to. */
void keel__pg_result_error(pg_impl *p, const PGresult *r, long row, keel_error *err);

/* A field of an error (code: a PG_DIAG_* letter) from src, or NULL when it has none. */
typedef const char *(*keel__pg_field_fn)(const void *src, int code);

/*
 * Fills err from an error whose fields field reads from src (a PGresult, or an ErrorResponse
 * keel read itself); primary, when not NULL or empty, is the message instead of field 'M'. row
 * >= 0 names the batch row it belongs to.
 */
void keel__pg_error_from(pg_impl *p, keel__pg_field_fn field, const void *src, const char *primary,
                         long row, keel_error *err);

/*
 * Appends every row of r, a whole result, to the running operation's result (which takes r's
 * columns when it has none yet). 0, or -1 when out of memory.
 */
int keel__pg_add_rows(pg_impl *p, const PGresult *r);

/* The operation's results are all in: report them (this is the last thing done with p). */
void keel__pg_finish(pg_impl *p);
/* Hands the notifications libpq has read to the core (keel__conn_notify), in order. */
void keel__pg_notify_drain(pg_impl *p);

/* Records the running operation's first error (code, msg); later ones are dropped. */
void keel__pg_fail_op(pg_impl *p, keel_status code, const char *msg);

/*
 * COPY needs a data stream keel does not offer: COPY FROM STDIN is ended with an error, and
 * the data of COPY TO STDOUT is read and dropped, so the connection stays usable. Returns 0,
 * or -1 when libpq failed.
 */
int keel__pg_refuse_copy(pg_impl *p, ExecStatusType st, long row);

/*
 * The running statement's next result into *r (NULL at the end of a command's results): 1, or 0
 * when more input is needed (the rows decoded so far are streamed meanwhile) or when the turn's
 * budget is spent (p->yielded: collecting goes on from keel__pg_resume), or -1 when the
 * connection failed. The data of a refused COPY TO STDOUT is dropped first, and the rest of a
 * whole result being decoded is decoded first.
 */
int keel__pg_next_result(pg_impl *p, PGresult **r);

/* The watch callback of the connection's socket, in every phase. */
void keel__pg_on_ready(void *arg, int events);

/* Goes on collecting the running operation's results after a turn that used up its budget. */
void keel__pg_resume(void *arg);

/* The engine's resume: a statement paused by keel_conn_pause reads on from the next turn. */
void keel__pg_unpause(keel_conn *c);

/* KEEL_OK when the connection can start an operation, else the error saying why not. */
keel_status keel__pg_check_idle(pg_impl *p, keel_conn *c, keel_error *err);

/*
 * Starting an operation failed: nothing will be reported for it. When libpq refused the
 * command before queueing it the connection stays usable; once anything may have reached the
 * server (sent), or a pipeline was half built, the session state is unknown and it is given up.
 */
keel_status keel__pg_send_failed(pg_impl *p, int sent, keel_error *err);

/* The engine's query: one statement, a batch, or a statement through the cache. */
keel_status keel__pg_query(keel_conn *c, const keel__stmt *stmt, keel_error *err);

/* The engine's transaction: BEGIN, COMMIT, ROLLBACK and savepoints at depth. */
keel_status keel__pg_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err);

#endif
