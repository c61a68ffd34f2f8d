/* tests/c/core/test_buf.c - growable buffers, the arena, values and results. */
#include <stdint.h>

#include "core/buf.h"
#include "core/result_int.h"
#include "test.h"

TEST(buf_appends_and_grows) {
    keel__buf b = { 0 };
    for (int i = 0; i < 1000; i++)
        CHECK_INT(keel__buf_printf(&b, "%d,", i), 0);
    CHECK(b.len > 3000);
    CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
    CHECK_INT(b.data[b.len], '\0');
    keel__buf_reset(&b);
    CHECK_INT(b.len, 0);
    CHECK_INT(keel__buf_puts(&b, "abc"), 0);
    CHECK_INT(keel__buf_putc(&b, 'd'), 0);
    CHECK_STR(b.data, "abcd");
    char long_text[600];
    memset(long_text, 'y', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    CHECK_INT(keel__buf_printf(&b, "[%s]", long_text), 0);
    CHECK_INT(b.len, 4 + 2 + 599);
    keel__buf_free(&b);
    CHECK(b.data == NULL);
    keel__buf_free(&b);
}

TEST(arena_aligns_and_handles_large_allocations) {
    keel__arena a = { 0 };
    for (int i = 0; i < 10000; i++) {
        char *p = keel__arena_alloc(&a, (size_t)(i % 37));
        CHECK(p != NULL);
        CHECK(((uintptr_t)p % 16) == 0);
    }
    char *big = keel__arena_alloc(&a, 5u << 20);
    CHECK(big != NULL);
    memset(big, 1, 5u << 20);
    char *s = keel__arena_strndup(&a, "hello world", 5);
    CHECK_STR(s, "hello");
    keel__arena_free(&a);
    keel__arena_free(&a);
}

TEST(values_have_constructors_and_names) {
    keel_value v = keel_text("héllo");
    CHECK_INT(v.type, KEEL_TYPE_TEXT);
    CHECK_INT(v.u.str.len, 6);
    v = keel_bytes("\0\1", 2);
    CHECK_INT(v.type, KEEL_TYPE_BYTES);
    CHECK_INT(v.u.str.len, 2);
    CHECK_INT(keel_int(INT64_MIN).u.i64, INT64_MIN);
    CHECK_INT(keel_bool(5).u.boolean, 1);
    CHECK_INT(keel_null().type, KEEL_TYPE_NULL);
    CHECK_INT(keel_text(NULL).u.str.len, 0);
    CHECK_STR(keel_type_name(KEEL_TYPE_TIMESTAMPTZ), "timestamptz");
    CHECK_STR(keel_type_name((keel_type)99), "unknown");
}

TEST(results_hold_rows_and_memory) {
    keel_result *r = keel__result_new(2);
    CHECK(r != NULL);
    CHECK_INT(keel__result_set_column(r, 0, "id", 2, KEEL_TYPE_INT), 0);
    CHECK_INT(keel__result_set_column(r, 1, "name_extra", 4, KEEL_TYPE_TEXT), 0);
    CHECK(keel__result_set_column(r, 2, "x", 1, KEEL_TYPE_INT) != 0);
    for (int i = 0; i < 100000; i++) {
        keel_value *row = keel__result_add_row(r);
        CHECK(row != NULL);
        row[0] = keel_int(i);
        if (i % 2) {
            char *s = keel__result_strndup(r, "abcdef", (size_t)(i % 6));
            row[1] = keel_textn(s, (size_t)(i % 6));
        }
    }
    CHECK_INT(keel_result_nrows(r), 100000);
    CHECK_INT(keel_result_ncols(r), 2);
    CHECK_STR(keel_result_colname(r, 1), "name");
    CHECK_INT(keel_result_coltype(r, 0), KEEL_TYPE_INT);
    CHECK(keel_result_colname(r, 2) == NULL);
    CHECK_INT(keel_result_value(r, 99999, 0)->u.i64, 99999);
    CHECK_INT(keel_result_value(r, 2, 1)->type, KEEL_TYPE_NULL);
    CHECK(strncmp(keel_result_value(r, 5, 1)->u.str.ptr, "abcde", 5) == 0);
    CHECK(keel_result_value(r, 100000, 0) == NULL);
    CHECK(keel_result_row(r, 100000) == NULL);
    CHECK_INT(keel_result_row(r, 7)[0].u.i64, 7);
    CHECK_INT(keel_result_affected(r), -1);
    keel__result_set_affected(r, 3);
    CHECK_INT(keel_result_affected(r), 3);
    keel_result_free(r);
    keel_result_free(NULL);
    CHECK_INT(keel_result_nrows(NULL), 0);
}

typedef struct shown {
    size_t calls, rows;
    int64_t first_value;
    int in_order;
} shown;

static void on_view(const keel_result *view, void *arg) {
    shown *x = arg;
    size_t n = keel_result_nrows(view);
    x->calls++;
    if (x->calls == 1)
        x->first_value = keel_result_value(view, 0, 0)->u.i64;
    for (size_t i = 0; i < n; i++)
        if (keel_result_row(view, i)[0].u.i64 != (int64_t)(x->rows + i) + x->first_value)
            x->in_order = 0;
    x->rows += n;
    CHECK_STR(keel_result_colname(view, 0), "n");
    CHECK(keel_result_value(view, n, 0) == NULL);
}

/*
 * A result that grows to many rows does not move the ones it holds (past its first block: growth
 * copies at most that block, never the whole result, which would hold the loop), and views of its
 * rows, the slices handed to a rows callback, show them in place.
 */
TEST(rows_never_move_and_views_show_them_in_place) {
    keel_result *r = keel__result_new(1);
    CHECK_INT(keel__result_set_column(r, 0, "n", 1, KEEL_TYPE_INT), 0);
    CHECK_INT(keel__result_reserve(r, 10), 0);
    keel_value *at_5000 = NULL;
    for (int i = 0; i < 300000; i++) {
        keel_value *row = keel__result_add_row(r);
        *row = keel_int(i);
        if (i == 5000)
            at_5000 = row;
    }
    CHECK(keel_result_row(r, 5000) == at_5000);
    CHECK_INT(keel_result_value(r, 299999, 0)->u.i64, 299999);
    /* Views of 256 rows from a multiple of 256 hold 256 rows, to the end. */
    shown x = { .in_order = 1 };
    size_t at = 0;
    while (at < 300000) {
        size_t n = keel__result_show_rows(r, at, 256, on_view, &x);
        CHECK(n == 256 || at + n == 300000);
        at += n;
    }
    CHECK_INT(x.rows, 300000);
    CHECK_INT(x.calls, (300000 + 255) / 256);
    CHECK(x.in_order);
    /* A view never runs past the block of rows it starts in, nor past the end. */
    shown y = { .in_order = 1 };
    size_t n = keel__result_show_rows(r, 1000, 100000, on_view, &y);
    CHECK(n > 0 && n < 100000 && y.rows == n && y.first_value == 1000 && y.in_order);
    shown z = { .in_order = 1 };
    CHECK_INT(keel__result_show_rows(r, 299990, 256, on_view, &z), 10);
    CHECK_INT(z.first_value, 299990);
    /* Cleared, the result fills again from its first row. */
    keel__result_clear_rows(r);
    CHECK_INT(keel_result_nrows(r), 0);
    CHECK(keel_result_row(r, 0) == NULL);
    *keel__result_add_row(r) = keel_int(42);
    CHECK_INT(keel_result_value(r, 0, 0)->u.i64, 42);
    keel_result_free(r);
}

/*
 * Sizes can come from the network (a length prefix, a row count): a request whose size does not
 * fit in size_t must fail cleanly instead of wrapping around to a small size and "succeeding"
 * with room that is not there.
 */
TEST(sizes_that_wrap_around_are_refused) {
    keel__buf b = { 0 };
    CHECK_INT(keel__buf_reserve(&b, SIZE_MAX), -1);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    CHECK_INT(keel__buf_puts(&b, "abc"), 0);
    size_t cap = b.cap;
    CHECK_INT(keel__buf_reserve(&b, SIZE_MAX - 2), -1);
    CHECK_INT(keel__buf_reserve(&b, SIZE_MAX - b.len), -1);
    CHECK_INT(keel__buf_append(&b, "x", SIZE_MAX - 3), -1);
    CHECK_STR(b.data, "abc");
    CHECK_INT(b.cap, cap);
    keel__buf_free(&b);

    keel__arena a = { 0 };
    CHECK(keel__arena_alloc(&a, SIZE_MAX) == NULL);
    CHECK(keel__arena_alloc(&a, SIZE_MAX - 31) == NULL);
    CHECK(keel__arena_strndup(&a, "x", SIZE_MAX) == NULL);
    CHECK_STR(keel__arena_strndup(&a, "xy", 2), "xy");
    keel__arena_free(&a);

    keel_result *res = keel__result_new(2);
    CHECK(res != NULL);
    if (res) {
        CHECK(keel__result_add_row(res) != NULL);
        CHECK_INT(keel__result_reserve(res, SIZE_MAX), -1);
        CHECK_INT(keel__result_reserve(res, SIZE_MAX / 2), -1);
        CHECK(keel__result_alloc(res, SIZE_MAX) == NULL);
        CHECK_INT(keel_result_nrows(res), 1);
        CHECK(keel__result_add_row(res) != NULL);
        keel_result_free(res);
    }
}

int main(void) {
    RUN(buf_appends_and_grows);
    RUN(arena_aligns_and_handles_large_allocations);
    RUN(values_have_constructors_and_names);
    RUN(results_hold_rows_and_memory);
    RUN(rows_never_move_and_views_show_them_in_place);
    RUN(sizes_that_wrap_around_are_refused);
    return TEST_SUMMARY();
}
