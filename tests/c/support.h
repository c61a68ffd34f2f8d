/* tests/c/support.h - helpers the engine tests share: test URLs, opening a db, running queries. */
#ifndef KEEL_TESTS_SUPPORT_H
#define KEEL_TESTS_SUPPORT_H

/* A file whose helpers should also count a failure against the running test case (besides
 * printing why) defines SUPPORT_COUNT_FAILURES before including this header; the others leave
 * failures to the assertions of their callers. */

#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <keel/keel.h>

#include "test.h"

/* Counts the failure a helper just printed, in files that asked for it. */
static inline void support__failed(void) {
#ifdef SUPPORT_COUNT_FAILURES
    test__failures_in_case++;
#endif
}

/* The URL of a test server: the environment variable when set and not empty, else fallback. */
static inline const char *support__env_url(const char *var, const char *fallback) {
    const char *u = getenv(var);
    return u && *u ? u : fallback;
}

static inline const char *pg_url(void) {
    return support__env_url("KEEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/keel_test");
}

static inline const char *my_url(void) {
    return support__env_url("KEEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/keel_test");
}

static inline const char *mongo_url(void) {
    return support__env_url("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test");
}

/* Opens a db on url on the blocking loop; extra holds key/value pairs set after the URL
 * (NULL-ended). Prints why and returns NULL when the configuration or the open fails. The URL
 * itself is never printed, since it may hold a password. */
static inline keel_db *open_url(const char *url, const char *const *extra) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_error err;
    if (keel_config_new(&cfg, &err) != KEEL_OK) {
        fprintf(stderr, "  config: %s\n", err.message);
        support__failed();
        return NULL;
    }
    if (keel_config_set_url(cfg, url, &err) != KEEL_OK) {
        fprintf(stderr, "  config: %s\n", err.message);
        keel_config_free(cfg);
        support__failed();
        return NULL;
    }
    for (size_t i = 0; extra && extra[i]; i += 2) {
        if (keel_config_set(cfg, extra[i], extra[i + 1], &err) != KEEL_OK) {
            fprintf(stderr, "  config %s: %s\n", extra[i], err.message);
            keel_config_free(cfg);
            support__failed();
            return NULL;
        }
    }
    if (keel_db_open(&db, cfg, NULL, &err) != KEEL_OK) {
        fprintf(stderr, "  open: %s\n", err.message);
        support__failed();
        db = NULL;
    }
    keel_config_free(cfg);
    return db;
}

/* A connection of db's default database, or NULL (printed) when there is none. */
static inline keel_conn *acquire(keel_db *db) {
    keel_conn *c = NULL;
    keel_error err;
    if (!db || keel_db_acquire_sync(db, NULL, &c, &err) != KEEL_OK) {
        fprintf(stderr, "  acquire: %s\n", db ? err.message : "no db");
        support__failed();
        return NULL;
    }
    return c;
}

/* Runs a statement that must succeed; prints the error and returns NULL otherwise. */
static inline keel_result *q(keel_conn *c, const char *sql, const keel_value *params, size_t n) {
    keel_result *res = NULL;
    keel_error err;
    if (!c)
        return NULL;
    if (keel_conn_query_sync(c, sql, params, n, &res, &err) != KEEL_OK) {
        fprintf(stderr, "  query \"%.80s\": %s: %s (%s)\n", sql, keel_status_name(err.code),
                err.message, err.sqlstate);
        support__failed();
        return NULL;
    }
    return res;
}

/* Runs a statement that must fail and returns its error (code KEEL_OK when it did not). */
static inline keel_error q_fail(keel_conn *c, const char *sql, const keel_value *params, size_t n) {
    keel_result *res = NULL;
    keel_error err;
    keel_error_clear(&err);
    if (keel_conn_query_sync(c, sql, params, n, &res, &err) == KEEL_OK) {
        keel_result_free(res);
        keel_error_clear(&err);
    }
    return err;
}

/* The single integer a query returns, or INT64_MIN. */
static inline int64_t q_int(keel_conn *c, const char *sql) {
    keel_result *res = q(c, sql, NULL, 0);
    const keel_value *v = keel_result_value(res, 0, 0);
    int64_t out = v && v->type == KEEL_TYPE_INT ? v->u.i64 : INT64_MIN;
    keel_result_free(res);
    return out;
}

/* True when v is a string value of type t holding exactly the n bytes at s. */
static inline int same_str(const keel_value *v, keel_type t, const char *s, size_t n) {
    return v && v->type == t && v->u.str.len == n && memcmp(v->u.str.ptr, s, n) == 0;
}

/* What keel_conn_query_rows delivered: batches, rows, and whether column 0 counted 1, 2, 3… */
typedef struct rows_run {
    int done;
    size_t batches, rows, max_batch;
    int in_order;     /* every row's first value was the INT rows-so-far + 1 */
    char colname[64]; /* the first column's name, as every batch had it ("?" if they differ) */
    keel_result *res; /* what the query callback got */
    keel_error err;
} rows_run;

static inline void rows_run_batch(const keel_result *rows, void *arg) {
    rows_run *x = arg;
    size_t n = keel_result_nrows(rows);
    const char *name = keel_result_colname(rows, 0);
    if (x->batches == 0)
        snprintf(x->colname, sizeof x->colname, "%s", name ? name : "");
    else if (!name || strcmp(name, x->colname) != 0)
        snprintf(x->colname, sizeof x->colname, "?");
    x->batches++;
    if (n > x->max_batch)
        x->max_batch = n;
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = keel_result_value(rows, i, 0);
        if (!v || v->type != KEEL_TYPE_INT || v->u.i64 != (int64_t)(x->rows + i + 1))
            x->in_order = 0;
    }
    x->rows += n;
}

static inline void rows_run_done(keel_result *res, const keel_error *err, void *arg) {
    rows_run *x = arg;
    x->done = 1;
    x->res = res;
    if (err)
        x->err = *err;
}

/* Runs sql through keel_conn_query_rows on db's blocking loop; the caller frees x->res. */
static inline void run_rows(keel_db *db, keel_conn *c, const char *sql, const keel_value *params,
                            size_t n, rows_run *x) {
    memset(x, 0, sizeof *x);
    x->in_order = 1;
    keel_error err;
    keel_status st =
        keel_conn_query_rows(c, sql, params, n, rows_run_batch, rows_run_done, x, &err);
    if (st != KEEL_OK) {
        x->err = err;
        return;
    }
    CHECK_INT(keel_loop_run(keel_db_loop(db), &x->done), KEEL_OK);
}

/*
 * keel_conn_query_many of a statement that returns rows, on a table "rt" the caller created
 * empty with an integer primary key id and a text column name: the result holds every
 * parameter row's rows in turn (none for a row that returns none), with the statement's
 * columns even when no row returns any; a failing row returns none and undoes the batch; a
 * statement without RETURNING has no columns.
 */
static inline void check_many_returning(keel_conn *c) {
    enum { N = 300 };
    static keel_value params[N * 2];
    static char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i);
        params[2 * i] = keel_int(i);
        params[2 * i + 1] = keel_text(names[i]);
    }
    keel_result *r = NULL;
    keel_error err;
    keel_status st = keel_conn_query_many_sync(
        c, "INSERT INTO rt (id, name) VALUES ($1, $2) RETURNING id, name", params, N, 2, &r, &err);
    CHECK_INT(st, KEEL_OK);
    if (st != KEEL_OK)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_INT(keel_result_ncols(r), 2);
    CHECK_STR(keel_result_colname(r, 0), "id");
    CHECK_STR(keel_result_colname(r, 1), "name");
    CHECK_INT(keel_result_nrows(r), N);
    CHECK_INT(keel_result_affected(r), N);
    int in_order = 1;
    for (size_t i = 0; i < keel_result_nrows(r); i++) {
        const keel_value *id = keel_result_value(r, i, 0);
        if (!id || id->type != KEEL_TYPE_INT || id->u.i64 != (int64_t)i ||
            !same_str(keel_result_value(r, i, 1), KEEL_TYPE_TEXT, names[i], strlen(names[i])))
            in_order = 0;
    }
    CHECK(in_order);
    keel_result_free(r);

    /* Rows that return nothing add nothing; the columns are there even with no row at all. */
    keel_value del[] = { keel_int(5), keel_int(1000), keel_int(7) };
    st = keel_conn_query_many_sync(c, "DELETE FROM rt WHERE id = $1 RETURNING id", del, 3, 1, &r,
                                   &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_nrows(r), 2);
    CHECK_INT(keel_result_value(r, 0, 0) ? keel_result_value(r, 0, 0)->u.i64 : -1, 5);
    CHECK_INT(keel_result_value(r, 1, 0) ? keel_result_value(r, 1, 0)->u.i64 : -1, 7);
    CHECK_INT(keel_result_affected(r), 2);
    keel_result_free(r);
    st = keel_conn_query_many_sync(c, "DELETE FROM rt WHERE id = $1 RETURNING id", del + 1, 1, 1,
                                   &r, &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_ncols(r), 1);
    CHECK_INT(keel_result_nrows(r), 0);
    keel_result_free(r);

    /* A failing row: an error naming it, no rows, and nothing of the batch is left. */
    keel_value dup[] = { keel_int(N + 1), keel_text("new"), keel_int(1), keel_text("dup") };
    r = NULL;
    st = keel_conn_query_many_sync(c, "INSERT INTO rt (id, name) VALUES ($1, $2) RETURNING id", dup,
                                   2, 2, &r, &err);
    CHECK_INT(st, KEEL_ERR_INTEGRITY);
    CHECK(r == NULL);
    CHECK_CONTAINS(err.message, "row 1");
    CHECK_INT(q_int(c, "SELECT count(*) FROM rt"), N - 2);
    CHECK_INT(keel_conn_txn_status(c), KEEL_TXN_IDLE);

    /* Without RETURNING the result has no columns. */
    st = keel_conn_query_many_sync(c, "UPDATE rt SET name = $2 WHERE id = $1", params, 3, 2, &r,
                                   &err);
    CHECK_INT(st, KEEL_OK);
    CHECK_INT(keel_result_ncols(r), 0);
    CHECK_INT(keel_result_nrows(r), 0);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
}

/* A statement streamed with keel_conn_pause after every batch (a cursor's flow control). */
typedef struct paused_run {
    keel_conn *c;
    int wake; /* a batch arrived, or the statement ended */
    int done;
    size_t rows, batches; /* rows and batches delivered */
    size_t since_resume;  /* rows delivered since the last keel_conn_resume */
    size_t most_at_once;  /* the most rows delivered between two resumes */
    size_t while_paused;  /* batches delivered after a pause, before the resume */
    int paused;
    int in_order; /* column 0 counted 1, 2, 3… */
    keel_result *res;
    keel_error err;
} paused_run;

static inline void paused_batch(const keel_result *rows, void *arg) {
    paused_run *x = arg;
    size_t n = keel_result_nrows(rows);
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = keel_result_value(rows, i, 0);
        if (!v || v->type != KEEL_TYPE_INT || v->u.i64 != (int64_t)(x->rows + i + 1))
            x->in_order = 0;
    }
    x->rows += n;
    x->batches++;
    x->since_resume += n;
    if (x->paused)
        x->while_paused++;
    x->paused = 1;
    if (x->since_resume > x->most_at_once)
        x->most_at_once = x->since_resume;
    keel_conn_pause(x->c);
    x->wake = 1;
}

static inline void paused_done(keel_result *res, const keel_error *err, void *arg) {
    paused_run *x = arg;
    x->done = x->wake = 1;
    x->res = res;
    if (err)
        x->err = *err;
}

/*
 * Streams sql (rows numbered 1…n in column 0) pausing after every batch and resuming once the
 * loop returned: while paused no batch may arrive, so the rows held never exceed one batch.
 * cancel_after > 0 cancels once that many batches arrived. The caller frees x->res.
 */
static inline void run_paused(keel_db *db, keel_conn *c, const char *sql, size_t cancel_after,
                              paused_run *x) {
    memset(x, 0, sizeof *x);
    x->c = c;
    x->in_order = 1;
    keel_error err;
    if (keel_conn_query_rows(c, sql, NULL, 0, paused_batch, paused_done, x, &err) != KEEL_OK) {
        x->err = err;
        x->done = 1;
        return;
    }
    keel_loop *loop = keel_db_loop(db);
    while (!x->done) {
        x->wake = 0;
        CHECK_INT(keel_loop_run(loop, &x->wake), KEEL_OK);
        if (x->done)
            break;
        if (cancel_after && x->batches >= cancel_after) {
            keel_conn_cancel(c);
            cancel_after = 0;
        }
        x->since_resume = 0;
        x->paused = 0;
        keel_conn_resume(c);
    }
}

/* A socket listening on 127.0.0.1 that never answers: the kernel completes TCP handshakes,
 * nobody accepts, so a client's protocol handshake waits until its connect timeout. Stores the
 * port in *port and returns the descriptor, which the caller closes. */
static inline int silent_listener(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_INT(listen(fd, 8), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* What the armed watchdog guards, for its message. */
static const char *support__watchdog_what;

static inline void support__watchdog_fired(int sig) {
    (void)sig;
    static const char head[] = "  FAIL: did not return within its bound: ";
    ssize_t rc = write(2, head, sizeof head - 1);
    rc = write(2, support__watchdog_what, strlen(support__watchdog_what));
    rc = write(2, "\n", 1);
    (void)rc;
    _exit(1);
}

/* Fails the whole test program (exit 1, naming what) unless disarmed (seconds 0) within
 * seconds: a step that hangs fails instead of blocking the suite until its timeout. */
static inline void watchdog(unsigned seconds, const char *what) {
    support__watchdog_what = what;
    signal(SIGALRM, support__watchdog_fired);
    alarm(seconds);
}

#endif
