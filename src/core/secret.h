/* src/core/secret.h - wiping memory that held a secret before it goes back to the allocator. */
#ifndef KEEL_CORE_SECRET_H
#define KEEL_CORE_SECRET_H

#include "core/buf.h"

/*
 * Frees a string after overwriting it with zeros (explicit_bzero: the compiler cannot drop the
 * writes as dead stores before free, as it may drop a memset). For every string that may hold a
 * password, a URL with user info, or a value resolved from a ${env:…} / ${file:…} reference.
 * Accepts NULL.
 */
void keel__secret_free(char *s);

/* keel__buf_free for a buffer that may have held a secret: its whole capacity is wiped first. */
void keel__secret_buf_free(keel__buf *b);

#endif
