/* src/core/result.c - the keel_result container: columns, rows of values, and their memory. */
#include <stdlib.h>
#include <string.h>

#include "core/result_int.h"

typedef struct result_column {
    const char *name;
    keel_type type;
} result_column;

struct keel_result {
    size_t ncols;
    size_t nrows;
    size_t cap_rows;
    result_column *columns;
    keel_value *values; /* nrows * ncols, row-major */
    int64_t affected;
    keel__arena names;       /* column names: they outlive keel__result_clear_rows */
    keel__arena arena;       /* text-like values */
    void (*release)(void *); /* frees owned, the engine's memory values may point into */
    void *owned;
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

int keel__result_reserve(keel_result *res, size_t n) {
    if (n > SIZE_MAX - res->nrows)
        return -1;
    if (res->ncols == 0 || res->nrows + n <= res->cap_rows)
        return 0;
    size_t cap = res->nrows + n;
    if (cap > SIZE_MAX / res->ncols / sizeof(keel_value))
        return -1;
    keel_value *v = realloc(res->values, cap * res->ncols * sizeof *v);
    if (!v)
        return -1;
    res->values = v;
    res->cap_rows = cap;
    return 0;
}

keel_value *keel__result_add_row(keel_result *res) {
    if (res->ncols == 0) {
        res->nrows++;
        return NULL;
    }
    if (res->nrows == res->cap_rows) {
        size_t grow = res->cap_rows ? res->cap_rows : 16;
        if (keel__result_reserve(res, grow) != 0)
            return NULL;
    }
    keel_value *row = res->values + res->nrows * res->ncols;
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
    /* The values that pointed into the engine's block are gone with the rows. */
    if (res->release)
        res->release(res->owned);
    res->release = NULL;
    res->owned = NULL;
}

void keel__result_own(keel_result *res, void (*release)(void *), void *ptr) {
    res->release = release;
    res->owned = ptr;
}

size_t keel_result_nrows(const keel_result *res) { return res ? res->nrows : 0; }

size_t keel_result_ncols(const keel_result *res) { return res ? res->ncols : 0; }

const char *keel_result_colname(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].name : NULL;
}

keel_type keel_result_coltype(const keel_result *res, size_t col) {
    return res && col < res->ncols ? res->columns[col].type : KEEL_TYPE_NULL;
}

const keel_value *keel_result_value(const keel_result *res, size_t row, size_t col) {
    if (!res || row >= res->nrows || col >= res->ncols)
        return NULL;
    return res->values + row * res->ncols + col;
}

const keel_value *keel_result_row(const keel_result *res, size_t row) {
    if (!res || row >= res->nrows || res->ncols == 0)
        return NULL;
    return res->values + row * res->ncols;
}

int64_t keel_result_affected(const keel_result *res) { return res ? res->affected : -1; }

void keel_result_free(keel_result *res) {
    if (!res)
        return;
    keel__arena_free(&res->names);
    keel__arena_free(&res->arena);
    if (res->release)
        res->release(res->owned);
    free(res->values);
    free(res->columns);
    free(res);
}
