/* src/engines/dns.h - host-name lookups on the worker pool, so the loop never waits for DNS. */
#ifndef KEEL_ENGINES_DNS_H
#define KEEL_ENGINES_DNS_H

#include <stddef.h>
#include <stdint.h>
#include "loop/worker.h"

/*
 * A lookup job: the names to look up, then what was found for each. Network engines resolve
 * host names before their client library sees them, since those libraries call getaddrinfo on
 * the calling thread, which here is the host's event loop. Built and handed over on the loop
 * thread; looked up on a worker; the callback runs on the loop thread.
 */
typedef struct keel__dns keel__dns;

/* The numeric addresses ("192.0.2.7", "::1") found for one name, in getaddrinfo's order. */
typedef struct keel__dns_addrs {
    char **addr;
    size_t n;
} keel__dns_addrs;

/* What a job found, as its callback sees it. */
typedef struct keel__dns_result {
    /*
     * found[i] belongs to the i-th name added; it is empty when that name could not be looked
     * up. The callback may keep an array by taking it (leaving addr NULL and n 0); whatever is
     * left is freed after the callback returns.
     */
    keel__dns_addrs *found;
    size_t nnames;
    int oom;             /* memory ran out on the worker: found is incomplete */
    const char *message; /* the last lookup that failed, as a sentence, or "" */
} keel__dns_result;

/* Runs on the loop thread once every name was looked up. */
typedef void (*keel__dns_cb)(void *arg, keel__dns_result *r);

/* An empty job, or NULL when out of memory. */
keel__dns *keel__dns_new(void);

/* Adds the name of n bytes (copied; no NUL needed). 0, or -1 when out of memory. */
int keel__dns_add(keel__dns *d, const char *name, size_t n);

/*
 * Queues the lookups on w's CONNECT class; cb(arg, result) follows on the loop thread unless the
 * job is abandoned first. deadline_ms (keel_now_ms clock, < 0: none) is when the requester gives
 * up and abandons the job: getaddrinfo cannot be stopped, so a lookup still running then keeps
 * its thread until the resolver gives up, but no longer counts against the class's threads.
 * 0, or -1 when the pool refused the job: it is then still the caller's to free.
 */
int keel__dns_submit(keel__dns *d, keel__workers *w, int64_t deadline_ms, keel__dns_cb cb,
                     void *arg);

/* Frees a job that was never submitted. Accepts NULL. */
void keel__dns_free(keel__dns *d);

/*
 * For a submitted job whose requester goes away (the connection failed, timed out or closed):
 * the lookups finish on the worker, the callback is not called, and the job frees itself, on
 * the loop thread or, when the pool was freed meanwhile, on the worker. Accepts NULL.
 */
void keel__dns_abandon(keel__dns *d);

#endif
