/* src/core/result.c - the keel_result container: columns, rows of values, and their memory. */
#include <stdlib.h>
#include <string.h>

#include "core/result_int.h"

typedef struct result_column {
    const char *name;
    keel_type type;
    const char *type_name; /* the engine's name of the type, when a description gave it */
    uint32_t type_id;      /* the engine's identifier of the type (PostgreSQL's OID), or 0 */
} result_column;

/*
 * Rows live in chunks of CHUNK_ROWS rows (only the first one grows, by doubling, until it is
 * full, so a small result costs a small allocation): a result that grows to millions of rows
 * does not move the rows it holds, so no add_row pays for copying them all (nor for touching
 * twice their memory at once), which would hold the loop for tens of milliseconds. Each chunk is
 * row-major.
 */
#define CHUNK_SHIFT 10
#define CHUNK_ROWS ((size_t)1 << CHUNK_SHIFT)
#define CHUNK_MASK (CHUNK_ROWS - 1)

struct keel_result {
    size_t ncols;
    size_t nrows;
    size_t cap_rows; /* rows the chunks hold */
    result_column *columns;
    keel_value **chunks; /* chunk i holds rows i * CHUNK_ROWS on */
    size_t nchunks, cap_chunks;
    int64_t affected;
    size_t nparams;        /* a statement's description (keel_conn_prepare): its parameters */
    result_column *params; /* their types (names unused) */
    keel__arena names;     /* column names: they outlive keel__result_clear_rows */
    keel__arena arena;     /* text-like values */
};

keel_result *keel__result_new(size_t ncols) {
    keel_result *res = calloc(1, sizeof *res);
    if (!res)
        return NULL;
    res->ncols = ncols;
    res->affected = -1;
    if (ncols) {
        res->columns = calloc(ncols, sizeof *res->columns);
        if (!res->columns) {
            free(res);
            return NULL;
        }
        for (size_t i = 0; i < ncols; i++)
            res->columns[i].name = "";
    }
    return res;
}

int keel__result_set_column(keel_result *res, size_t col, const char *name, size_t n,
                            keel_type type) {
    if (col >= res->ncols)
        return -1;
    char *copy = keel__arena_strndup(&res->names, name, n);
    if (!copy)
        return -1;
    res->columns[col].name = copy;
    res->columns[col].type = type;
    return 0;
}

int keel__result_set_type_id(keel_result *res, size_t col, uint32_t id) {
    if (col >= res->ncols)
        return -1;
    res->columns[col].type_id = id;
    return 0;
}

int keel__result_set_type_name(keel_result *res, size_t col, const char *name, size_t n) {
    if (col >= res->ncols)
        return -1;
    char *copy = keel__arena_strndup(&res->names, name, n);
    if (!copy)
        return -1;
    res->columns[col].type_name = copy;
    return 0;
}

int keel__result_set_nparams(keel_result *res, size_t n) {
    if (res->params || (n && !(res->params = calloc(n, sizeof *res->params))))
        return -1;
    res->nparams = n;
    return 0;
}

int keel__result_set_param(keel_result *res, size_t i, keel_type type, const char *name, size_t n) {
    if (i >= res->nparams)
        return -1;
    res->params[i].type = type;
    if (name && !(res->params[i].type_name = keel__arena_strndup(&res->names, name, n)))
        return -1;
    return 0;
}

/* The values of row (< cap_rows). */
static keel_value *row_at(const keel_result *res, size_t row) {
    return res->chunks[row >> CHUNK_SHIFT] + (row & CHUNK_MASK) * res->ncols;
}

/*
 * Room for cap rows in all: the first chunk grows up to CHUNK_ROWS, then whole chunks follow.
 * Sizes may come from the network: one whose bytes wrap around is refused.
 */
static int grow_to(keel_result *res, size_t cap) {
    if (res->ncols > SIZE_MAX / sizeof(keel_value) / CHUNK_ROWS)
        return -1;
    size_t row_bytes = res->ncols * sizeof(keel_value);
    if (cap > SIZE_MAX / row_bytes)
        return -1;
    if (res->cap_rows < CHUNK_ROWS) {
        size_t first = res->cap_rows ? res->cap_rows * 2 : 16;
        if (first < cap)
            first = cap;
        if (first > CHUNK_ROWS)
            first = CHUNK_ROWS;
        if (!res->chunks) {
            res->chunks = calloc(4, sizeof *res->chunks);
            if (!res->chunks)
                return -1;
            res->cap_chunks = 4;
            res->nchunks = 1;
        }
        keel_value *c = realloc(res->chunks[0], first * row_bytes);
        if (!c)
            return -1;
        res->chunks[0] = c;
        res->cap_rows = first;
    }
    while (res->cap_rows < cap) {
        if (res->nchunks == res->cap_chunks) {
            if (res->cap_chunks > SIZE_MAX / 2 / sizeof *res->chunks)
                return -1;
            keel_value **t = realloc(res->chunks, res->cap_chunks * 2 * sizeof *t);
            if (!t)
                return -1;
            res->chunks = t;
            res->cap_chunks *= 2;
        }
        keel_value *c = malloc(CHUNK_ROWS * row_bytes);
        if (!c)
            return -1;
        res->chunks[res->nchunks++] = c;
        res->cap_rows += CHUNK_ROWS;
    }
    return 0;
}

int keel__result_reserve(keel_result *res, size_t n) {
    if (n > SIZE_MAX - res->nrows)
        return -1;
    if (res->ncols == 0 || res->nrows + n <= res->cap_rows)
        return 0;
    size_t cap = res->nrows + n;
    if (cap > SIZE_MAX / sizeof(keel_value) / res->ncols)
        return -1;
    /* Only the first chunk is sized now: later ones come with the rows that fill them. */
    return res->cap_rows < CHUNK_ROWS ? grow_to(res, cap < CHUNK_ROWS ? cap : CHUNK_ROWS) : 0;
}

keel_value *keel__result_add_row(keel_result *res) {
    if (res->ncols == 0) {
        res->nrows++;
        return NULL;
    }
    if (res->nrows == res->cap_rows && grow_to(res, res->nrows + 1) != 0)
        return NULL;
    keel_value *row = row_at(res, res->nrows);
    memset(row, 0, res->ncols * sizeof *row); /* KEEL_TYPE_NULL is 0 */
    res->nrows++;
    return row;
}

char *keel__result_alloc(keel_result *res, size_t n) {
    if (n == SIZE_MAX)
        return NULL;
    char *p = keel__arena_alloc(&res->arena, n + 1);
    if (p)
        p[n] = '\0';
    return p;
}

char *keel__result_strndup(keel_result *res, const char *s, size_t n) {
    return keel__arena_strndup(&res->arena, s, n);
}

int keel__result_set_text(keel_result *res, keel_value *v, keel_type t, const char *s, size_t n) {
    char *copy = keel__arena_strndup(&res->arena, n ? s : "", n);
    if (!copy)
        return -1;
    v->type = t;
    v->u.str.ptr = copy;
    v->u.str.len = n;
    return 0;
}

void keel__result_set_affected(keel_result *res, int64_t affected) { res->affected = affected; }

void keel__result_clear_rows(keel_result *res) {
    res->nrows = 0;
    keel__arena_reset(&res->arena);
}

size_t keel__result_show_rows(const keel_result *res, size_t first, size_t n,
                              void (*fn)(const keel_result *view, void *arg), void *arg) {
    if (first > res->nrows)
        first = res->nrows;
    if (n > res->nrows - first)
        n = res->nrows - first;
    /* A view is one run of rows: it ends with the chunk it starts in. */
    if (res->ncols && n > CHUNK_ROWS - (first & CHUNK_MASK))
        n = CHUNK_ROWS - (first & CHUNK_MASK);
    /* Only what the accessors read is filled in: the view owns nothing and is never freed. */
    keel_value *rows = res->ncols && n ? row_at(res, first) : NULL;
    keel_result view = {
        .ncols = res->ncols,
        .nrows = n,
        .cap_rows = n,
        .columns = res->columns,
        .chunks = &rows,
        .nchunks = 1,
        .cap_chunks = 1,
        .affected = res->affected,
    };
    fn(&view, arg);
    return n;
}

size_t keel_result_nrows(const keel_result *res) { return res ? res->nrows : 0; }

size_t keel_result_ncols(const keel_result *res) { return res ? res->ncols : 0; }

const char *keel_result_colname(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].name : NULL;
}

keel_type keel_result_coltype(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].type : KEEL_TYPE_NULL;
}

uint32_t keel_result_coltype_id(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].type_id : 0;
}

const char *keel_result_coltype_name(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].type_name : NULL;
}

size_t keel_result_nparams(const keel_result *res) { return res ? res->nparams : 0; }

keel_type keel_result_paramtype(const keel_result *res, size_t i) {
    return res && i < res->nparams ? res->params[i].type : KEEL_TYPE_NULL;
}

const char *keel_result_paramtype_name(const keel_result *res, size_t i) {
    return res && i < res->nparams ? res->params[i].type_name : NULL;
}

const keel_value *keel_result_value(const keel_result *res, size_t row, size_t col) {
    if (!res || row >= res->nrows || col >= res->ncols)
        return NULL;
    return row_at(res, row) + col;
}

const keel_value *keel_result_row(const keel_result *res, size_t row) {
    if (!res || row >= res->nrows || res->ncols == 0)
        return NULL;
    return row_at(res, row);
}

int64_t keel_result_affected(const keel_result *res) { return res ? res->affected : -1; }

void keel_result_free(keel_result *res) {
    if (!res)
        return;
    keel__arena_free(&res->names);
    keel__arena_free(&res->arena);
    for (size_t i = 0; i < res->nchunks; i++)
        free(res->chunks[i]);
    free(res->chunks);
    free(res->columns);
    free(res->params);
    free(res);
}
