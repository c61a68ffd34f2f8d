/* tests/c/core/test_value.c - keel_value constructors and the deep copy engines keep of values. */
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/value.h>
#include "core/value_int.h"
#include "test.h"

/* True when p lies inside the n bytes from base. */
static int inside(const void *p, const void *base, size_t n) {
    return (const char *)p >= (const char *)base && (const char *)p < (const char *)base + n;
}

TEST(copy_owns_every_string_value) {
    char text[] = "héllo", num[] = "-12.3400", json[] = "{\"a\": [1, 2]}";
    unsigned char bytes[] = { 0, 1, 2, 0xff, 0 };
    char doc[] = "\x05\x00\x00\x00\x00"; /* the empty BSON document */
    keel_value in[] = {
        keel_text(text),
        keel_numeric(num),
        keel_json(json),
        keel_bytes(bytes, 5),
        keel_int(-7),
        keel_null(),
        keel_bool(1),
        keel_float(2.5),
        keel_date(19000),
        keel_time(3600000000),
        keel_timestamptz(123456),
        keel_textn("a\0b", 3),
    };
    keel_value d = keel_null();
    d.type = KEEL_TYPE_DOCUMENT;
    d.u.str.ptr = doc;
    d.u.str.len = 5;
    size_t n = sizeof in / sizeof in[0];
    keel_value all[sizeof in / sizeof in[0] + 1];
    memcpy(all, in, sizeof in);
    all[n++] = d;
    keel_value *c = keel__values_copy(all, n, 0, NULL);
    CHECK(c != NULL);
    /* The caller's memory is overwritten: the copy does not change. */
    memset(text, 'x', sizeof text - 1);
    memset(num, 'x', sizeof num - 1);
    memset(json, 'x', sizeof json - 1);
    memset(bytes, 0xaa, sizeof bytes);
    memset(doc, 0x77, sizeof doc - 1);
    CHECK_INT(c[0].type, KEEL_TYPE_TEXT);
    CHECK_INT(c[0].u.str.len, strlen("héllo"));
    CHECK(memcmp(c[0].u.str.ptr, "héllo", c[0].u.str.len) == 0);
    CHECK_INT(c[1].type, KEEL_TYPE_NUMERIC);
    CHECK(c[1].u.str.len == 8 && memcmp(c[1].u.str.ptr, "-12.3400", 8) == 0);
    CHECK_INT(c[2].type, KEEL_TYPE_JSON);
    CHECK(c[2].u.str.len == 13 && memcmp(c[2].u.str.ptr, "{\"a\": [1, 2]}", 13) == 0);
    CHECK_INT(c[3].type, KEEL_TYPE_BYTES);
    CHECK(c[3].u.str.len == 5 && memcmp(c[3].u.str.ptr, "\0\1\2\xff\0", 5) == 0);
    CHECK_INT(c[11].u.str.len, 3);
    CHECK(memcmp(c[11].u.str.ptr, "a\0b", 3) == 0); /* NULs inside are copied */
    CHECK_INT(c[12].type, KEEL_TYPE_DOCUMENT);
    CHECK(c[12].u.str.len == 5 && memcmp(c[12].u.str.ptr, "\x05\0\0\0\0", 5) == 0);
    /* Values without bytes are copied as they are. */
    CHECK_INT(c[4].u.i64, -7);
    CHECK_INT(c[5].type, KEEL_TYPE_NULL);
    CHECK_INT(c[6].u.boolean, 1);
    CHECK(c[7].u.f64 == 2.5);
    CHECK_INT(c[8].u.date, 19000);
    CHECK_INT(c[9].u.micros, 3600000000);
    CHECK_INT(c[10].type, KEEL_TYPE_TIMESTAMPTZ);
    CHECK_INT(c[10].u.micros, 123456);
    /* The strings do not overlap one another. */
    size_t with_bytes[] = { 0, 1, 2, 3, 11, 12 };
    for (size_t a = 0; a < 6; a++)
        for (size_t b = a + 1; b < 6; b++) {
            const keel_value *x = &c[with_bytes[a]], *y = &c[with_bytes[b]];
            CHECK(x->u.str.ptr + x->u.str.len <= y->u.str.ptr ||
                  y->u.str.ptr + y->u.str.len <= x->u.str.ptr);
        }
    keel__values_free(c);
}

TEST(empty_strings_point_into_the_copy) {
    char empty[] = "";
    keel_value in[] = { keel_textn(empty, 0), keel_bytes(NULL, 0), keel_text("x"), keel_json(""),
                        keel_numeric(NULL) };
    keel_value *c = keel__values_copy(in, 5, 0, NULL);
    CHECK(c != NULL);
    for (size_t i = 0; i < 5; i++) {
        if (i == 2)
            continue;
        CHECK_INT(c[i].u.str.len, 0);
        CHECK(c[i].u.str.ptr != NULL);
        CHECK(c[i].u.str.ptr != empty);
        CHECK_INT(c[i].u.str.ptr[0], '\0');
    }
    CHECK(c[2].u.str.len == 1 && c[2].u.str.ptr[0] == 'x');
    keel__values_free(c);
}

TEST(extra_room_is_aligned_and_apart_from_the_values) {
    keel_value in[] = { keel_text("abc"), keel_int(1), keel_text("defg") };
    void *more = NULL;
    size_t extra = 3 * sizeof(uint64_t) + 5;
    keel_value *c = keel__values_copy(in, 3, extra, &more);
    CHECK(c != NULL && more != NULL);
    CHECK_INT((uintptr_t)more % alignof(max_align_t), 0);
    CHECK((char *)more >= (char *)(c + 3));
    /* The caller's extra bytes and the strings do not overlap. */
    memset(more, 0x5a, extra);
    CHECK(memcmp(c[0].u.str.ptr, "abc", 3) == 0);
    CHECK(memcmp(c[2].u.str.ptr, "defg", 4) == 0);
    CHECK(!inside(c[0].u.str.ptr, more, extra) && !inside(c[2].u.str.ptr, more, extra));
    uint64_t *u = more;
    u[2] = UINT64_MAX; /* usable as the type it was reserved for */
    CHECK(u[2] == UINT64_MAX);
    keel__values_free(c);
    /* Without extra room there is no extra pointer. */
    more = &more;
    c = keel__values_copy(in, 3, 0, &more);
    CHECK(c != NULL && more == NULL);
    keel__values_free(c);
}

TEST(zero_values_still_make_a_block) {
    void *more = NULL;
    keel_value *c = keel__values_copy(NULL, 0, 0, NULL);
    CHECK(c != NULL); /* callers tell "no memory" from "nothing to copy" by NULL alone */
    keel__values_free(c);
    c = keel__values_copy(NULL, 0, 16, &more);
    CHECK(c != NULL && more != NULL);
    memset(more, 1, 16);
    keel__values_free(c);
    keel__values_free(NULL);
}

TEST(sizes_that_wrap_around_are_refused) {
    /* Lengths summing beyond SIZE_MAX must fail, not allocate a small block and overrun it. */
    keel_value in[2] = { keel_textn("a", SIZE_MAX / 2 + 1), keel_textn("b", SIZE_MAX / 2 + 1) };
    CHECK(keel__values_copy(in, 2, 0, NULL) == NULL);
    keel_value one = keel_text("a");
    void *more = &more;
    CHECK(keel__values_copy(&one, 1, SIZE_MAX - 8, &more) == NULL);
    CHECK(keel__values_copy(&one, SIZE_MAX / sizeof(keel_value) + 1, 0, NULL) == NULL);
}

TEST(arrays_are_copied_at_every_depth) {
    char word[] = "abc";
    keel_value inner1[2] = { keel_textn(word, 3), keel_null() };
    keel_value inner2[2] = { keel_int(7), keel_text("") };
    keel_value outer[2] = { keel_array(inner1, 2), keel_array(inner2, 2) };
    keel_value in[3] = { keel_array(outer, 2), keel_array(NULL, 0), keel_text("z") };
    void *more = NULL;
    keel_value *c = keel__values_copy(in, 3, 8, &more);
    CHECK(c != NULL && more != NULL);
    if (!c)
        return;
    memset(more, 0x5a, 8);
    word[0] = 'X'; /* the caller's memory changes after the copy */
    memset(inner1, 0, sizeof inner1);
    memset(outer, 0, sizeof outer);
    CHECK_INT(c[0].type, KEEL_TYPE_ARRAY);
    CHECK_INT(c[0].u.array.n, 2);
    CHECK(c[0].u.array.items != outer);
    const keel_value *a = &c[0].u.array.items[0], *b = &c[0].u.array.items[1];
    CHECK(a->type == KEEL_TYPE_ARRAY && a->u.array.n == 2 && b->u.array.n == 2);
    CHECK(a->u.array.items[0].type == KEEL_TYPE_TEXT && a->u.array.items[0].u.str.len == 3 &&
          memcmp(a->u.array.items[0].u.str.ptr, "abc", 3) == 0);
    CHECK_INT(a->u.array.items[1].type, KEEL_TYPE_NULL);
    CHECK(b->u.array.items[0].type == KEEL_TYPE_INT && b->u.array.items[0].u.i64 == 7);
    CHECK(b->u.array.items[1].u.str.ptr != NULL && b->u.array.items[1].u.str.len == 0);
    CHECK(c[1].type == KEEL_TYPE_ARRAY && c[1].u.array.n == 0 && c[1].u.array.items == NULL);
    CHECK(c[2].u.str.len == 1 && c[2].u.str.ptr[0] == 'z');
    keel__values_free(c);
    CHECK_STR(keel_type_name(KEEL_TYPE_ARRAY), "array");
}

TEST(range_bounds_are_copied) {
    char num[] = "1.5";
    keel_value bounds[2] = { keel_numeric(num), keel_null() };
    keel_value in[3] = { { .type = KEEL_TYPE_RANGE },
                         { .type = KEEL_TYPE_RANGE },
                         keel_text("after") };
    in[0].u.range.bounds = bounds;
    in[0].u.range.flags = KEEL_RANGE_LOWER_INC;
    in[1].u.range.flags = KEEL_RANGE_EMPTY; /* empty: no bounds */
    keel_value *c = keel__values_copy(in, 3, 0, NULL);
    CHECK(c != NULL);
    if (!c)
        return;
    num[0] = 'X'; /* the caller's memory changes after the copy */
    memset(bounds, 0, sizeof bounds);
    CHECK(c[0].type == KEEL_TYPE_RANGE && c[0].u.range.flags == KEEL_RANGE_LOWER_INC);
    CHECK(c[0].u.range.bounds != NULL && c[0].u.range.bounds != bounds);
    if (c[0].u.range.bounds) {
        const keel_value *lo = &c[0].u.range.bounds[0];
        CHECK(lo->type == KEEL_TYPE_NUMERIC && lo->u.str.len == 3 &&
              memcmp(lo->u.str.ptr, "1.5", 3) == 0);
        CHECK_INT(c[0].u.range.bounds[1].type, KEEL_TYPE_NULL);
    }
    CHECK(c[1].type == KEEL_TYPE_RANGE && c[1].u.range.bounds == NULL);
    CHECK(c[2].u.str.len == 5 && memcmp(c[2].u.str.ptr, "after", 5) == 0);
    keel__values_free(c);
}

TEST(arrays_nested_beyond_the_limit_are_refused) {
    keel_value levels[KEEL_ARRAY_MAX_DIMS + 1];
    levels[0] = keel_int(1);
    for (int i = 1; i <= KEEL_ARRAY_MAX_DIMS; i++)
        levels[i] = keel_array(&levels[i - 1], 1);
    keel_value *c = keel__values_copy(&levels[KEEL_ARRAY_MAX_DIMS], 1, 0, NULL);
    CHECK(c != NULL); /* six dimensions: PostgreSQL's limit */
    keel__values_free(c);
    keel_value seven = keel_array(&levels[KEEL_ARRAY_MAX_DIMS], 1);
    CHECK(keel__values_copy(&seven, 1, 0, NULL) == NULL);
    keel_value huge = keel_array(levels, SIZE_MAX / 8);
    CHECK(keel__values_copy(&huge, 1, 0, NULL) == NULL); /* refused before an element is read */
}

int main(void) {
    RUN(copy_owns_every_string_value);
    RUN(empty_strings_point_into_the_copy);
    RUN(extra_room_is_aligned_and_apart_from_the_values);
    RUN(zero_values_still_make_a_block);
    RUN(sizes_that_wrap_around_are_refused);
    RUN(arrays_are_copied_at_every_depth);
    RUN(arrays_nested_beyond_the_limit_are_refused);
    RUN(range_bounds_are_copied);
    return TEST_SUMMARY();
}
