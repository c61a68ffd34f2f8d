/* src/core/buf.c - growable byte buffers and a bump arena. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

int keel__buf_reserve(keel__buf *b, size_t extra) {
    /* Sizes may come from the network: a sum or a doubling that wraps would claim room that is
     * not there, so both are checked. */
    if (extra > SIZE_MAX - 1 - b->len)
        return -1;
    size_t need = b->len + extra + 1; /* room for the terminating NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p;
    if (b->secret) {
        if (!(p = malloc(cap)))
            return -1;
        if (b->data) {
            memcpy(p, b->data, b->len < b->cap ? b->len + 1 : b->cap);
            explicit_bzero(b->data, b->cap);
            free(b->data);
        }
    } else if (!(p = realloc(b->data, cap))) {
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int keel__buf_append(keel__buf *b, const void *p, size_t n) {
    if (keel__buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int keel__buf_puts(keel__buf *b, const char *s) { return keel__buf_append(b, s, strlen(s)); }

int keel__buf_putc(keel__buf *b, char c) { return keel__buf_append(b, &c, 1); }

int keel__buf_printf(keel__buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return keel__buf_append(b, small, (size_t)n);
    if (keel__buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void keel__buf_reset(keel__buf *b) {
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void keel__buf_free(keel__buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0; /* secret stays: the buffer may be reused for the same purpose */
}

/* A chunk of arena memory; allocations are carved from data[used…size). */
struct keel__arena_chunk {
    struct keel__arena_chunk *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

#define ARENA_FIRST_CHUNK 4096
#define ARENA_MAX_CHUNK (1u << 20)

void *keel__arena_alloc(keel__arena *a, size_t size) {
    size_t aligned = (size + 15u) & ~(size_t)15u;
    if (aligned < size || aligned > SIZE_MAX - sizeof(struct keel__arena_chunk))
        return NULL;
    struct keel__arena_chunk *c = a->head;
    if (c && c->size - c->used >= aligned) {
        void *p = c->data + c->used;
        c->used += aligned;
        return p;
    }
    size_t chunk = a->next_size ? a->next_size : ARENA_FIRST_CHUNK;
    if (chunk < ARENA_MAX_CHUNK)
        a->next_size = chunk * 2;
    /* Oversized requests get a chunk of their own placed behind the current one, so the
     * current chunk's free space stays usable for the small allocations that follow. */
    int dedicated = aligned > chunk;
    if (dedicated)
        chunk = aligned;
    c = malloc(sizeof *c + chunk);
    if (!c)
        return NULL;
    c->size = chunk;
    c->used = aligned;
    if (dedicated && a->head) {
        c->next = a->head->next;
        a->head->next = c;
    } else {
        c->next = a->head;
        a->head = c;
    }
    return c->data;
}

char *keel__arena_strndup(keel__arena *a, const char *s, size_t n) {
    if (n == SIZE_MAX)
        return NULL;
    char *p = keel__arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void keel__arena_free(keel__arena *a) {
    struct keel__arena_chunk *c = a->head;
    while (c) {
        struct keel__arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->next_size = 0;
}

void keel__arena_reset(keel__arena *a) {
    struct keel__arena_chunk *keep = a->head;
    if (!keep)
        return;
    struct keel__arena_chunk *c = keep->next;
    while (c) {
        struct keel__arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    keep->next = NULL;
    keep->used = 0;
}
