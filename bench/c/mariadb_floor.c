/* bench/c/mariadb_floor.c - the physical floor for the MariaDB cases of workload 9: a C loop over libmariadb. */
/*
 * usage: mariadb_floor CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...
 *   query SQL                          the text protocol (no parameters, as keel sends them):
 *                                      run SQL, read every field of every row
 *   point SQL NROWS                    a prepared statement with one parameter, a
 *                                      pseudo-random key in 1..NROWS, results in binary
 *   many TABLE COLUMNS NROWS           insert NROWS rows of workload 4 (see fill_rows) by one
 *                                      bulk execution (MariaDB's array binding) of a prepared
 *                                      INSERT, then COMMIT
 *   values TABLE COLUMNS NROWS CHUNK   the same rows by a prepared multi-row INSERT of CHUNK
 *                                      rows per execution, then COMMIT
 * The connection: FLOOR_MYSQL_HOST, FLOOR_MYSQL_PORT, FLOOR_MYSQL_USER, FLOOR_MYSQL_DATABASE
 * and MYSQL_PWD from the environment. The insert modes empty TABLE first (untimed) and run with
 * autocommit off, so that a batch is one transaction ended by its COMMIT (no BEGIN round trip).
 * Values are made once, before the loop. Prints the JSON report of floor.h.
 */
#include <mysql.h>

#include "floor.h"

#define PROG "mariadb_floor"
#define NCOLS 7
#define MAX_TEXT 4096

enum mode { MODE_QUERY, MODE_POINT, MODE_MANY, MODE_VALUES };

/* Workload 4's rows, column by column (the layout of MariaDB's column-wise array binding). */
typedef struct rows {
    long long n;
    long long *id;
    int *qty;
    double *price;
    char **name;
    unsigned long *name_len;
    signed char *active;
    MYSQL_TIME *created;
    MYSQL_TIME **created_ptr; /* array binding takes temporal values by pointer */
    char **note;
    unsigned long *note_len;
    char *note_ind;
    char *text; /* the strings name and note point into */
} rows;

typedef struct my_state {
    MYSQL *m;
    enum mode mode;
    char *sql;
    MYSQL_STMT *stmt;      /* point, many, values: the full-size statement */
    MYSQL_STMT *rest_stmt; /* values: the statement of the last, shorter chunk, if any */
    long long nrows, chunk;
    int nresult;
    MYSQL_BIND *result;
    MYSQL_BIND *params;
    long long key;
    /* point: where each result column is read to. */
    long long *ints;
    double *doubles;
    char *texts;
    unsigned long *lengths;
    my_bool *nulls;
    rows r;
} my_state;

/* Rows 1..n: id = i, qty = i % 1000, price = i * 0.5, name = "name %08d", active = i even,
 * created = 2024-01-01 00:00:00 + i seconds, note = NULL when i % 10 == 0, else "note %d". */
static int fill_rows(rows *r, long long n) {
    r->n = n;
    r->id = calloc((size_t)n, sizeof *r->id);
    r->qty = calloc((size_t)n, sizeof *r->qty);
    r->price = calloc((size_t)n, sizeof *r->price);
    r->name = calloc((size_t)n, sizeof *r->name);
    r->name_len = calloc((size_t)n, sizeof *r->name_len);
    r->active = calloc((size_t)n, sizeof *r->active);
    r->created = calloc((size_t)n, sizeof *r->created);
    r->created_ptr = calloc((size_t)n, sizeof *r->created_ptr);
    r->note = calloc((size_t)n, sizeof *r->note);
    r->note_len = calloc((size_t)n, sizeof *r->note_len);
    r->note_ind = calloc((size_t)n, sizeof *r->note_ind);
    r->text = calloc((size_t)n, 48);
    if (!r->id || !r->qty || !r->price || !r->name || !r->name_len || !r->active || !r->created ||
        !r->created_ptr || !r->note || !r->note_len || !r->note_ind || !r->text) {
        fprintf(stderr, PROG ": out of memory for %lld rows\n", n);
        return -1;
    }
    for (long long k = 0; k < n; k++) {
        long long i = k + 1;
        char *t = r->text + k * 48;
        r->id[k] = i;
        r->qty[k] = (int)(i % 1000);
        r->price[k] = (double)i * 0.5;
        r->name[k] = t;
        r->name_len[k] = (unsigned long)sprintf(t, "name %08lld", i);
        r->active[k] = i % 2 == 0;
        MYSQL_TIME *ts = &r->created[k];
        ts->year = 2024;
        ts->month = 1;
        ts->day = 1 + (unsigned)(i / 86400);
        ts->hour = (unsigned)(i % 86400 / 3600);
        ts->minute = (unsigned)(i % 3600 / 60);
        ts->second = (unsigned)(i % 60);
        ts->time_type = MYSQL_TIMESTAMP_DATETIME;
        r->created_ptr[k] = ts;
        if (i % 10 == 0) {
            r->note_ind[k] = STMT_INDICATOR_NULL;
        } else {
            r->note[k] = t + 24;
            r->note_len[k] = (unsigned long)sprintf(t + 24, "note %lld", i);
            r->note_ind[k] = STMT_INDICATOR_NONE;
        }
    }
    return 0;
}

static void free_rows(rows *r) {
    free(r->id);
    free(r->qty);
    free(r->price);
    free(r->name);
    free(r->name_len);
    free(r->active);
    free(r->created);
    free(r->created_ptr);
    free(r->note);
    free(r->note_len);
    free(r->note_ind);
    free(r->text);
}

/*
 * Binds row k's seven values to b[0..6] (one execution of a multi-row INSERT), or with k < 0
 * every row's arrays (one bulk execution).
 */
static void bind_row(const rows *r, long long k, MYSQL_BIND *b) {
    static my_bool is_null = 1;
    long long i = k < 0 ? 0 : k;
    memset(b, 0, NCOLS * sizeof *b);
    b[0].buffer_type = MYSQL_TYPE_LONGLONG, b[0].buffer = &r->id[i];
    b[1].buffer_type = MYSQL_TYPE_LONG, b[1].buffer = &r->qty[i];
    b[2].buffer_type = MYSQL_TYPE_DOUBLE, b[2].buffer = &r->price[i];
    b[3].buffer_type = MYSQL_TYPE_STRING;
    b[4].buffer_type = MYSQL_TYPE_TINY, b[4].buffer = &r->active[i];
    b[5].buffer_type = MYSQL_TYPE_DATETIME, b[5].buffer = &r->created[i];
    b[6].buffer_type = MYSQL_TYPE_STRING;
    if (k < 0) {
        /* Array binding: strings and times are arrays of pointers (strings with lengths). */
        b[5].buffer = r->created_ptr;
        b[3].buffer = r->name, b[3].length = r->name_len;
        b[6].buffer = r->note, b[6].length = r->note_len, b[6].u.indicator = r->note_ind;
    } else {
        b[3].buffer = r->name[i], b[3].length = &r->name_len[i];
        if (r->note_ind[i] == STMT_INDICATOR_NULL)
            b[6].buffer_type = MYSQL_TYPE_NULL, b[6].is_null = &is_null;
        else
            b[6].buffer = r->note[i], b[6].length = &r->note_len[i];
    }
}

static int stmt_failed(my_state *st, MYSQL_STMT *stmt, const char *what) {
    fprintf(stderr, PROG ": %s failed: %s\n", what, mysql_stmt_error(stmt));
    (void)st;
    return -1;
}

static int op_query(my_state *st, int64_t *sink) {
    if (mysql_real_query(st->m, st->sql, strlen(st->sql)) != 0) {
        fprintf(stderr, PROG ": the query failed: %s\n", mysql_error(st->m));
        return -1;
    }
    MYSQL_RES *res = mysql_use_result(st->m);
    if (res == NULL) {
        fprintf(stderr, PROG ": no result: %s\n", mysql_error(st->m));
        return -1;
    }
    unsigned nf = mysql_num_fields(res);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res)) != NULL) {
        unsigned long *len = mysql_fetch_lengths(res);
        for (unsigned c = 0; c < nf; c++)
            *sink += (int64_t)len[c] + (row[c] != NULL ? (unsigned char)row[c][0] : 0);
    }
    int failed = mysql_errno(st->m) != 0;
    if (failed)
        fprintf(stderr, PROG ": reading the rows failed: %s\n", mysql_error(st->m));
    mysql_free_result(res);
    return failed ? -1 : 0;
}

static int op_point(my_state *st, uint64_t *rng, int64_t *sink) {
    st->key = (long long)(floor_next_random(rng) % (uint64_t)st->nrows) + 1;
    if (mysql_stmt_execute(st->stmt) != 0)
        return stmt_failed(st, st->stmt, "execute");
    int rc;
    while ((rc = mysql_stmt_fetch(st->stmt)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        for (int c = 0; c < st->nresult; c++)
            *sink += st->ints[c] + (int64_t)st->doubles[c] + (int64_t)st->lengths[c];
    }
    if (rc != MYSQL_NO_DATA)
        return stmt_failed(st, st->stmt, "fetch");
    return 0;
}

static int op_insert(my_state *st) {
    if (st->mode == MODE_MANY) {
        if (mysql_stmt_execute(st->stmt) != 0)
            return stmt_failed(st, st->stmt, "bulk execute");
    } else {
        for (long long a = 0; a < st->nrows; a += st->chunk) {
            long long n = st->nrows - a < st->chunk ? st->nrows - a : st->chunk;
            MYSQL_STMT *stmt = n == st->chunk ? st->stmt : st->rest_stmt;
            for (long long k = 0; k < n; k++)
                bind_row(&st->r, a + k, st->params + k * NCOLS);
            if (mysql_stmt_bind_param(stmt, st->params) != 0)
                return stmt_failed(st, stmt, "bind");
            if (mysql_stmt_execute(stmt) != 0)
                return stmt_failed(st, stmt, "execute");
        }
    }
    if (mysql_commit(st->m) != 0) {
        fprintf(stderr, PROG ": COMMIT failed: %s\n", mysql_error(st->m));
        return -1;
    }
    return 0;
}

static int run_once(void *arg, uint64_t *rng, int64_t *sink) {
    my_state *st = arg;
    switch (st->mode) {
    case MODE_QUERY:
        return op_query(st, sink);
    case MODE_POINT:
        return op_point(st, rng, sink);
    case MODE_MANY:
    case MODE_VALUES:
        return op_insert(st);
    }
    return -1;
}

static MYSQL_STMT *prepare(my_state *st, const char *sql) {
    MYSQL_STMT *stmt = mysql_stmt_init(st->m);
    if (stmt == NULL || mysql_stmt_prepare(stmt, sql, (unsigned long)strlen(sql)) != 0) {
        fprintf(stderr, PROG ": cannot prepare %.200s: %s\n", sql,
                stmt ? mysql_stmt_error(stmt) : mysql_error(st->m));
        if (stmt)
            mysql_stmt_close(stmt);
        return NULL;
    }
    return stmt;
}

/* point: binds the key and one buffer per result column, by the column's type. */
static int setup_point(my_state *st) {
    MYSQL_BIND key;
    memset(&key, 0, sizeof key);
    key.buffer_type = MYSQL_TYPE_LONGLONG;
    key.buffer = &st->key;
    if (mysql_stmt_bind_param(st->stmt, &key) != 0)
        return stmt_failed(st, st->stmt, "bind");
    MYSQL_RES *meta = mysql_stmt_result_metadata(st->stmt);
    if (meta == NULL)
        return stmt_failed(st, st->stmt, "result metadata");
    int n = st->nresult = (int)mysql_num_fields(meta);
    st->result = calloc((size_t)n, sizeof *st->result);
    st->ints = calloc((size_t)n, sizeof *st->ints);
    st->doubles = calloc((size_t)n, sizeof *st->doubles);
    st->texts = calloc((size_t)n, MAX_TEXT);
    st->lengths = calloc((size_t)n, sizeof *st->lengths);
    st->nulls = calloc((size_t)n, sizeof *st->nulls);
    if (!st->result || !st->ints || !st->doubles || !st->texts || !st->lengths || !st->nulls) {
        mysql_free_result(meta);
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    for (int c = 0; c < n; c++) {
        MYSQL_BIND *b = &st->result[c];
        b->is_null = &st->nulls[c];
        b->length = &st->lengths[c];
        switch (fields[c].type) {
        case MYSQL_TYPE_TINY:
        case MYSQL_TYPE_SHORT:
        case MYSQL_TYPE_INT24:
        case MYSQL_TYPE_LONG:
        case MYSQL_TYPE_LONGLONG:
            b->buffer_type = MYSQL_TYPE_LONGLONG, b->buffer = &st->ints[c];
            break;
        case MYSQL_TYPE_FLOAT:
        case MYSQL_TYPE_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE, b->buffer = &st->doubles[c];
            break;
        default:
            b->buffer_type = MYSQL_TYPE_STRING, b->buffer = st->texts + (size_t)c * MAX_TEXT;
            b->buffer_length = MAX_TEXT;
            break;
        }
    }
    mysql_free_result(meta);
    if (mysql_stmt_bind_result(st->stmt, st->result) != 0)
        return stmt_failed(st, st->stmt, "bind result");
    return 0;
}

/* The INSERT of nrows rows of seven placeholders each. */
static char *values_sql(const char *table, const char *columns, long long nrows) {
    static const char group[] = "(?, ?, ?, ?, ?, ?, ?)";
    size_t len = strlen(table) + strlen(columns) + 64 + (size_t)nrows * (sizeof group + 1);
    char *sql = malloc(len);
    if (sql == NULL)
        return NULL;
    char *p = sql + sprintf(sql, "INSERT INTO %s (%s) VALUES ", table, columns);
    for (long long k = 0; k < nrows; k++)
        p += sprintf(p, "%s%s", k ? ", " : "", group);
    return sql;
}

static int setup_insert(my_state *st, const char *table, const char *columns) {
    char sql[1024];
    snprintf(sql, sizeof sql, "TRUNCATE TABLE %s", table);
    if (mysql_query(st->m, sql) != 0 || mysql_autocommit(st->m, 0) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", sql, mysql_error(st->m));
        return -1;
    }
    if (fill_rows(&st->r, st->nrows) != 0)
        return -1;
    if (st->mode == MODE_MANY) {
        st->sql = values_sql(table, columns, 1);
        if (st->sql == NULL || (st->stmt = prepare(st, st->sql)) == NULL)
            return -1;
        unsigned int size = (unsigned int)st->nrows;
        MYSQL_BIND b[NCOLS];
        bind_row(&st->r, -1, b);
        if (mysql_stmt_attr_set(st->stmt, STMT_ATTR_ARRAY_SIZE, &size) != 0 ||
            mysql_stmt_bind_param(st->stmt, b) != 0)
            return stmt_failed(st, st->stmt, "array binding");
        return 0;
    }
    long long chunk = st->chunk < st->nrows ? st->chunk : st->nrows;
    st->chunk = chunk;
    st->params = calloc((size_t)(chunk * NCOLS), sizeof *st->params);
    st->sql = values_sql(table, columns, chunk);
    if (st->params == NULL || st->sql == NULL || (st->stmt = prepare(st, st->sql)) == NULL)
        return -1;
    if (st->nrows % chunk != 0) {
        char *rest = values_sql(table, columns, st->nrows % chunk);
        st->rest_stmt = rest ? prepare(st, rest) : NULL;
        free(rest);
        if (st->rest_stmt == NULL)
            return -1;
    }
    return 0;
}

static int setup(my_state *st, const char *mode, char **args, int nargs) {
    const char *host = getenv("FLOOR_MYSQL_HOST"), *port = getenv("FLOOR_MYSQL_PORT");
    st->m = mysql_init(NULL);
    if (st->m == NULL ||
        mysql_real_connect(st->m, host ? host : "127.0.0.1", getenv("FLOOR_MYSQL_USER"),
                           getenv("MYSQL_PWD"), getenv("FLOOR_MYSQL_DATABASE"),
                           port ? (unsigned)atoi(port) : 3306, NULL, 0) == NULL) {
        fprintf(stderr, PROG ": cannot connect: %s\n", st->m ? mysql_error(st->m) : "no memory");
        return -1;
    }
    if (strcmp(mode, "query") == 0 && nargs == 1) {
        st->mode = MODE_QUERY;
        st->sql = strdup(args[0]);
        return st->sql ? 0 : -1;
    }
    if (strcmp(mode, "point") == 0 && nargs == 2) {
        st->mode = MODE_POINT;
        st->nrows = floor_parse_count(PROG, "NROWS", args[1]);
        if (st->nrows < 1 || (st->stmt = prepare(st, args[0])) == NULL)
            return -1;
        return setup_point(st);
    }
    if ((strcmp(mode, "many") == 0 && nargs == 3) || (strcmp(mode, "values") == 0 && nargs == 4)) {
        st->mode = nargs == 3 ? MODE_MANY : MODE_VALUES;
        st->nrows = floor_parse_count(PROG, "NROWS", args[2]);
        st->chunk = nargs == 4 ? floor_parse_count(PROG, "CHUNK", args[3]) : 0;
        if (st->nrows < 1 || st->nrows > 2000000 || (nargs == 4 && st->chunk < 1)) {
            fprintf(stderr, PROG ": NROWS must be 1 to 2,000,000 and CHUNK at least 1\n");
            return -1;
        }
        return setup_insert(st, args[0], args[1]);
    }
    fprintf(stderr,
            PROG ": unknown mode or wrong arguments: %s (query SQL | point SQL NROWS | "
                 "many TABLE COLUMNS NROWS | values TABLE COLUMNS NROWS CHUNK)\n",
            mode);
    return -1;
}

static void teardown(my_state *st) {
    if (st->stmt)
        mysql_stmt_close(st->stmt);
    if (st->rest_stmt)
        mysql_stmt_close(st->rest_stmt);
    if (st->m)
        mysql_close(st->m);
    free(st->sql);
    free(st->result);
    free(st->params);
    free(st->ints);
    free(st->doubles);
    free(st->texts);
    free(st->lengths);
    free(st->nulls);
    free_rows(&st->r);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: " PROG
                " CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...\n");
        return 2;
    }
    long long n = floor_parse_count(PROG, "CONNECTIONS", argv[1]);
    floor_limits limits = floor_parse_limits(PROG, argv + 2);
    if (n < 1 || n > 1024) {
        fprintf(stderr, PROG ": CONNECTIONS must be 1 to 1024\n");
        return 2;
    }
    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, PROG ": cannot initialise libmariadb\n");
        return 1;
    }
    my_state *st = calloc((size_t)n, sizeof *st);
    void **states = calloc((size_t)n, sizeof *states);
    int failed = st == NULL || states == NULL;
    for (long long i = 0; i < n && !failed; i++) {
        states[i] = &st[i];
        failed = setup(&st[i], argv[6], argv + 7, argc - 7) != 0;
    }
    if (!failed)
        failed = floor_measure(PROG, run_once, states, (int)n, &limits);
    for (long long i = 0; st != NULL && i < n; i++)
        teardown(&st[i]);
    free(st);
    free(states);
    mysql_library_end();
    return failed ? 1 : 0;
}
