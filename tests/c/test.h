/* tests/c/test.h - a minimal test harness: TEST functions, CHECK assertions, a summary line. */
#ifndef KEEL_TESTS_TEST_H
#define KEEL_TESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test__failures_in_case;
static int test__passed;
static int test__failed;
static const char *test__current;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  FAIL %s (%s:%d): %s\n", test__current, __FILE__, __LINE__, #cond);  \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long test__a = (long long)(a), test__b = (long long)(b);                              \
        if (test__a != test__b) {                                                                  \
            fprintf(stderr, "  FAIL %s (%s:%d): %s == %s: %lld != %lld\n", test__current,          \
                    __FILE__, __LINE__, #a, #b, test__a, test__b);                                 \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *test__a = (a), *test__b = (b);                                                 \
        if (!test__a || !test__b || strcmp(test__a, test__b) != 0) {                               \
            fprintf(stderr, "  FAIL %s (%s:%d): %s == %s: \"%s\" != \"%s\"\n", test__current,      \
                    __FILE__, __LINE__, #a, #b, test__a ? test__a : "(null)",                      \
                    test__b ? test__b : "(null)");                                                 \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

/* True when haystack contains needle. */
#define CHECK_CONTAINS(haystack, needle)                                                           \
    do {                                                                                           \
        const char *test__h = (haystack), *test__n = (needle);                                     \
        if (!test__h || !strstr(test__h, test__n)) {                                               \
            fprintf(stderr, "  FAIL %s (%s:%d): \"%s\" does not contain \"%s\"\n", test__current,  \
                    __FILE__, __LINE__, test__h ? test__h : "(null)", test__n);                    \
            test__failures_in_case++;                                                              \
        }                                                                                          \
    } while (0)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        test__current = #name;                                                                     \
        test__failures_in_case = 0;                                                                \
        name();                                                                                    \
        if (test__failures_in_case) {                                                              \
            test__failed++;                                                                        \
            fprintf(stderr, "not ok - %s\n", #name);                                               \
        } else {                                                                                   \
            test__passed++;                                                                        \
            fprintf(stdout, "ok - %s\n", #name);                                                   \
        }                                                                                          \
    } while (0)

/* Prints the summary line and returns the process exit status. */
#define TEST_SUMMARY()                                                                             \
    (printf("%d passed, %d failed\n", test__passed, test__failed), test__failed ? 1 : 0)

#endif
