/* tests/fuzz/fuzz.h - what the libFuzzer targets share: NUL-terminated copies and assertions. */
#ifndef KEEL_TESTS_FUZZ_H
#define KEEL_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * An invariant of the code under test. A violation aborts, which libFuzzer reports as a crash
 * and saves the input for, just as it does for a sanitizer report.
 */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as a malloc'ed C string, cut at its first NUL byte (the APIs take C strings). */
static inline char *fuzz_cstring(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);
    FUZZ_ASSERT(s != NULL);
    if (n)
        memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* The number of times needle (not empty) occurs in haystack, overlapping ones included. */
static inline size_t fuzz_count(const char *haystack, const char *needle) {
    size_t count = 0;
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p++)
        count++;
    return count;
}

#endif
