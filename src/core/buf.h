/* src/core/buf.h - growable byte buffers and a bump arena for short-lived allocations. */
#ifndef KEEL_CORE_BUF_H
#define KEEL_CORE_BUF_H

#include <stddef.h>
#include <stdarg.h>

/* A growable byte buffer; always NUL-terminated after a successful append. Zero-init is empty. */
typedef struct keel__buf {
    char *data;
    size_t len;
    size_t cap;
    /* Set for a buffer that holds a secret: growing it then moves the data to a new block and
     * wipes the old one instead of letting realloc free it as it is. Free such a buffer with
     * keel__secret_buf_free (core/secret.h). */
    int secret;
} keel__buf;

/* Each returns 0, or -1 when out of memory (the buffer is left as it was). */
int keel__buf_reserve(keel__buf *b, size_t extra);
int keel__buf_append(keel__buf *b, const void *p, size_t n);
int keel__buf_puts(keel__buf *b, const char *s);
int keel__buf_putc(keel__buf *b, char c);
int keel__buf_printf(keel__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void keel__buf_reset(keel__buf *b); /* len = 0, keeps memory */
void keel__buf_free(keel__buf *b);  /* releases memory; the buffer is empty and reusable */

/*
 * A bump allocator: many small allocations freed together. Chunks grow geometrically; an
 * allocation larger than a chunk gets its own. Zero-init is an empty arena.
 */
typedef struct keel__arena {
    struct keel__arena_chunk *head;
    size_t next_size;
} keel__arena;

/* Returns size bytes aligned to 16, or NULL when out of memory. size 0 returns a valid pointer. */
void *keel__arena_alloc(keel__arena *a, size_t size);
/* Copies n bytes and appends a NUL; NULL when out of memory. */
char *keel__arena_strndup(keel__arena *a, const char *s, size_t n);
void keel__arena_free(keel__arena *a);
/* Forgets every allocation but keeps the current chunk (the latest and largest of the regular
 * ones) for reuse, so a result delivered in batches refills the same memory. */
void keel__arena_reset(keel__arena *a);

#endif
