/* src/engines/mysql/exec.h - running MySQL statements (text and prepared) and reporting results. */
#ifndef KEEL_ENGINES_MYSQL_EXEC_H
#define KEEL_ENGINES_MYSQL_EXEC_H

#include "engines/mysql/mysql.h"

/*
 * Starts (cont == 0) or continues p->call, then the calls that follow it, until one has to
 * wait or the operation is over. When it is over it has been reported and p may be gone.
 */
void keel__my_run(my_impl *p, int cont, int ready);

/* The timer callback for a MYSQL_WAIT_TIMEOUT: continues the call. */
void keel__my_on_libtimer(void *arg);

/* Frees what the operation owned. */
void keel__my_op_clear(my_impl *p);

/*
 * Drops the rows of a statement still being read (the operation ends early, or the connection
 * closes): the rest is left unread, so the connection, in the middle of a result, is given up.
 * Must come before the handle is closed. Nothing happens when no rows are being read.
 */
void keel__my_rows_abandon(my_impl *p);

/* The deferred call that goes on reading rows after a turn used up its budget. */
void keel__my_on_slice(void *arg);

/*
 * Reports the end of the running operation; nothing touches p afterwards. While a cancel
 * request is still in flight the end is held back (it could stop the next statement), and
 * reported when the request returns (my_cancel_settled).
 */
void keel__my_op_report(my_impl *p);

/* The operation is over: report it now, or from the kick inside a start function. */
int keel__my_finish(my_impl *p);

/* The deferred call that reports an outcome reached inside a start function. */
void keel__my_on_kick(void *arg);

/* Starts a text-protocol statement as the next call. */
int keel__my_text_start(my_impl *p, const char *sql, size_t len);

/* The watch callback of the connection's socket, in every phase. */
void keel__my_on_ready(void *arg, int events);

/* The engine's query: a text statement, a prepared statement, or a batch. */
keel_status keel__my_query(keel_conn *c, const keel__stmt *stmt, keel_error *err);

/* The engine's transaction: BEGIN, COMMIT, ROLLBACK and savepoints at depth. */
keel_status keel__my_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err);

/* The engine's describe (keel_conn_prepare): prepares the statement into the cache. */
keel_status keel__my_describe(keel_conn *c, const keel__stmt *stmt, keel_error *err);

/* The engine's cursor_open, cursor_fetch and cursor_close (keel_conn_cursor_open, …): a
 * read-only cursor of the prepared-statement protocol, on a statement of the cursor's own. */
keel_status keel__my_cursor_open(keel_conn *c, keel_cursor *cur, const keel__stmt *stmt,
                                 size_t prefetch, keel_error *err);
keel_status keel__my_cursor_fetch(keel_conn *c, keel_cursor *cur, size_t n, keel_error *err);
void keel__my_cursor_close(keel_conn *c, keel_cursor *cur);

/* The engine's resume: a statement paused by keel_conn_pause reads on from the next turn. */
void keel__my_unpause(keel_conn *c);

#endif
