/* src/engines/mysql/codec.h - MySQL result values, and keel values bound as parameters. */
#ifndef KEEL_ENGINES_MYSQL_CODEC_H
#define KEEL_ENGINES_MYSQL_CODEC_H

#include "engines/mysql/mysql.h"

/* Fills err with KEEL_ERR_NOMEM for p's database; returns the code. */
keel_status keel__my_nomem(my_impl *p, keel_error *err);

/*
 * Results are read row by row (mysql_use_result, and unbuffered fetches of prepared statements)
 * and decoded into p->dres as the rows come, so that reading can stop between any two rows when
 * a loop turn has used up its budget. Begins a text-protocol result p->dsrc (r): p->dres gets its
 * columns. KEEL_OK, or err says why not (p->dres stays NULL).
 */
keel_status keel__my_rows_begin_text(my_impl *p, MYSQL_RES *r, keel_error *err);

/* Appends the row just fetched from p->dsrc to p->dres, copying its text. 0, or -1 (no memory). */
int keel__my_row_text(my_impl *p, MYSQL_ROW row);

/* The description of the prepared statement p->cur (keel_conn_prepare): its columns, with
 * MySQL's type names, and nparams untyped parameters. NULL when out of memory. */
keel_result *keel__my_describe_result(my_impl *p, size_t nparams);

/* Begins the binary-protocol result of p->cur: binds its columns, p->dres gets them. */
keel_status keel__my_rows_begin_stmt(my_impl *p, keel_error *err);

/* Appends the row just fetched from p->cur to p->dres. KEEL_OK, or err says why not. */
keel_status keel__my_row_stmt(my_impl *p, keel_error *err);

/* A DATE as MYSQL_TIME. 0, or -1 when the year is outside 0..9999. */
int keel__my_mtime_date(int32_t days, MYSQL_TIME *t);

/* A timestamp (microseconds since 1970, UTC) as a DATETIME MYSQL_TIME. 0, or -1 out of range. */
int keel__my_mtime_stamp(int64_t micros, MYSQL_TIME *t);

/* A TIME in microseconds (negative, or 24 h and more too) as MYSQL_TIME. 0, or -1 out of range. */
int keel__my_mtime_time(int64_t micros, MYSQL_TIME *t);

/* An INTERVAL (a timedelta: days and microseconds, no months) as a TIME MYSQL_TIME. 0, or -1
 * when it has months or is outside TIME's range. */
int keel__my_mtime_interval(const keel_value *v, MYSQL_TIME *t);

/* Checks what MySQL cannot carry, before anything is sent. */
keel_status keel__my_param_check(my_impl *p, const keel_value *v, size_t row, int many, size_t k,
                                 keel_error *err);

/* True for the types whose values are strings (numeric, text, bytes, JSON). */
int keel__my_is_strlike(keel_type t);

/* Copies parameters (valid only during the query call) into one private block. */
keel_status keel__my_copy_params(my_impl *p, const keel_value *params, size_t n, keel_error *err);

/* Room for n parameter bindings and their storage. 0, or -1 when out of memory. */
int keel__my_binds_reserve(my_impl *p, size_t n);

/* An address for empty strings: a NULL buffer would be sent as SQL NULL. */
extern char keel__my_empty[1];

/* Binds one row of parameters (nmap placeholders) for a single execution. */
int keel__my_bind_row(my_impl *p, const keel_value *row);

#endif
