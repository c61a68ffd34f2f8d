/* src/core/secret.c - wiping memory that held a secret before it goes back to the allocator. */
#include "core/secret.h"

#include <stdlib.h>
#include <string.h>

void keel__secret_free(char *s) {
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void keel__secret_buf_free(keel__buf *b) {
    if (b->data)
        explicit_bzero(b->data, b->cap);
    keel__buf_free(b);
}
