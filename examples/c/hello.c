/* examples/c/hello.c - a complete program on libkeel's synchronous API: create, insert, select, transactions, errors. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <keel/keel.h>

/* Prints what went wrong and says whether the program must stop (anything but KEEL_OK). */
static int failed(keel_status st, const keel_error *err, const char *what) {
    if (st == KEEL_OK)
        return 0;
    fprintf(stderr, "hello: %s failed: %s (%s%s%s): %s\n", what, keel_status_name(st), err->engine,
            err->sqlstate[0] ? ", SQLSTATE " : "", err->sqlstate, err->message);
    return 1;
}

static void print_value(const keel_value *v) {
    switch (v->type) {
    case KEEL_TYPE_NULL:
        fputs("NULL", stdout);
        break;
    case KEEL_TYPE_INT:
        printf("%" PRId64, v->u.i64);
        break;
    case KEEL_TYPE_FLOAT:
        printf("%.2f", v->u.f64);
        break;
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_JSON:
        /* Result strings are not NUL-terminated by contract: print them by length. */
        printf("%.*s", (int)v->u.str.len, v->u.str.ptr);
        break;
    default:
        printf("<%s>", keel_type_name(v->type));
        break;
    }
}

static void print_result(const keel_result *res) {
    size_t r, c, ncols = keel_result_ncols(res);

    for (c = 0; c < ncols; c++)
        printf("%s%s", c ? " | " : "", keel_result_colname(res, c));
    putchar('\n');
    for (r = 0; r < keel_result_nrows(res); r++) {
        for (c = 0; c < ncols; c++) {
            fputs(c ? " | " : "", stdout);
            print_value(keel_result_value(res, r, c));
        }
        putchar('\n');
    }
}

/* Runs one statement and discards its result. */
static keel_status exec(keel_conn *conn, const char *sql, const keel_value *params, size_t nparams,
                        keel_error *err) {
    keel_result *res = NULL;
    keel_status st = keel_conn_query_sync(conn, sql, params, nparams, &res, err);

    keel_result_free(res);
    return st;
}

/* Everything the program does with its one leased connection; returns 0 on success. */
static int run(keel_conn *conn, keel_error *err) {
    keel_result *res = NULL;
    keel_status st;

    st = exec(conn,
              "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
              " price REAL NOT NULL)",
              NULL, 0, err);
    if (failed(st, err, "CREATE TABLE"))
        return 1;

    /* One row: values are bound to $1…$n, never spliced into the SQL text. */
    {
        keel_value params[] = { keel_int(1), keel_text("anchor"), keel_float(49.5) };
        st = exec(conn, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", params, 3, err);
        if (failed(st, err, "INSERT"))
            return 1;
    }

    /* Many rows in one batch: nrows × nparams values, row-major. */
    {
        keel_value rows[] = {
            keel_int(2), keel_text("rope"),    keel_float(12.25),
            keel_int(3), keel_text("compass"), keel_float(30.0),
            keel_int(4), keel_text("lantern"), keel_float(18.75),
        };
        st = keel_conn_query_many_sync(
            conn, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", rows, 3, 3, &res, err);
        if (failed(st, err, "batch INSERT"))
            return 1;
        printf("inserted %" PRId64 " rows in one batch\n", keel_result_affected(res));
        keel_result_free(res);
        res = NULL;
    }

    /* A transaction that commits: both updates happen or neither does. */
    st = keel_conn_transaction_sync(conn, KEEL_TXN_BEGIN, 0, err);
    if (failed(st, err, "BEGIN"))
        return 1;
    {
        keel_value a[] = { keel_float(0.9), keel_int(1) };
        keel_value b[] = { keel_float(1.1), keel_int(2) };
        st = exec(conn, "UPDATE items SET price = price * $1 WHERE id = $2", a, 2, err);
        if (st == KEEL_OK)
            st = exec(conn, "UPDATE items SET price = price * $1 WHERE id = $2", b, 2, err);
        if (failed(st, err, "UPDATE"))
            return 1;
    }
    st = keel_conn_transaction_sync(conn, KEEL_TXN_COMMIT, 0, err);
    if (failed(st, err, "COMMIT"))
        return 1;

    /*
     * A transaction that fails: the second insert violates the UNIQUE constraint, the error says
     * so (KEEL_ERR_INTEGRITY, SQLSTATE 23505), and the rollback undoes the first insert too.
     */
    st = keel_conn_transaction_sync(conn, KEEL_TXN_BEGIN, 0, err);
    if (failed(st, err, "BEGIN"))
        return 1;
    {
        keel_value ok[] = { keel_int(5), keel_text("sextant"), keel_float(99.0) };
        keel_value dup[] = { keel_int(6), keel_text("rope"), keel_float(1.0) };
        st = exec(conn, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", ok, 3, err);
        if (failed(st, err, "INSERT"))
            return 1;
        st = exec(conn, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", dup, 3, err);
        if (st != KEEL_ERR_INTEGRITY) {
            fprintf(stderr, "hello: expected a unique violation, got %s\n", keel_status_name(st));
            return 1;
        }
        printf("duplicate refused as expected: %s (SQLSTATE %s)\n", keel_status_name(err->code),
               err->sqlstate);
    }
    st = keel_conn_transaction_sync(conn, KEEL_TXN_ROLLBACK, 0, err);
    if (failed(st, err, "ROLLBACK"))
        return 1;

    /* Read everything back. */
    {
        keel_value min_price[] = { keel_float(10.0) };
        st = keel_conn_query_sync(conn,
                                  "SELECT id, name, price FROM items WHERE price >= $1 ORDER BY id",
                                  min_price, 1, &res, err);
        if (failed(st, err, "SELECT"))
            return 1;
        print_result(res);
        if (keel_result_nrows(res) != 4) {
            fprintf(stderr, "hello: expected 4 rows, got %zu\n", keel_result_nrows(res));
            keel_result_free(res);
            return 1;
        }
        keel_result_free(res);
    }
    return 0;
}

int main(void) {
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_conn *conn = NULL;
    keel_error err;
    keel_status st;
    int rc;

    keel_error_clear(&err);
    printf("libkeel %s\n", keel_version());

    /*
     * An in-memory SQLite database lives while one of its pool's connections is open; this
     * program keeps one leased from start to end, and one is all it needs, so the pool is
     * capped at one (any key path can be set this way).
     */
    st = keel_config_new(&cfg, &err);
    if (st == KEEL_OK)
        st = keel_config_set_url(cfg, "sqlite::memory:", &err);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "databases.default.pool.max_size", "1", &err);
    if (st == KEEL_OK)
        st = keel_db_open(&db, cfg, NULL, &err); /* NULL loop: a private blocking loop */
    keel_config_free(cfg);                       /* keel_db_open keeps its own copy */
    if (failed(st, &err, "configuration"))
        return EXIT_FAILURE;

    st = keel_db_acquire_sync(db, NULL, &conn, &err); /* NULL: the default database */
    if (failed(st, &err, "connect")) {
        keel_db_close(db);
        return EXIT_FAILURE;
    }
    printf("connected to %s (%s)\n", keel_conn_database(conn), keel_conn_engine(conn));

    rc = run(conn, &err);

    keel_conn_release(conn);
    keel_db_close(db);
    if (rc == 0)
        puts("done");
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
