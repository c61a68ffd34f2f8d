/* src/engines/dns.c - host-name lookups on the worker pool, so the loop never waits for DNS. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <keel/error.h>

#include "engines/dns.h"

/*
 * The worker reads names and writes found, oom and message; the loop thread reads them only in
 * the job's done callback, after the worker pool handed the job back. cb is the loop thread's
 * alone: abandoning clears it.
 */
struct keel__dns {
    char **names;
    keel__dns_addrs *found; /* one per name, allocated with names */
    size_t nnames, cap;
    int oom;
    char message[KEEL_ERROR_MESSAGE_MAX];
    keel__dns_cb cb;
    void *arg;
};

keel__dns *keel__dns_new(void) { return calloc(1, sizeof(keel__dns)); }

int keel__dns_add(keel__dns *d, const char *name, size_t n) {
    if (d->nnames == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        char **names = realloc(d->names, cap * sizeof *names);
        if (!names)
            return -1;
        d->names = names;
        keel__dns_addrs *found = realloc(d->found, cap * sizeof *found);
        if (!found)
            return -1;
        d->found = found;
        d->cap = cap;
    }
    char *copy = strndup(name, n);
    if (!copy)
        return -1;
    d->names[d->nnames] = copy;
    d->found[d->nnames].addr = NULL;
    d->found[d->nnames].n = 0;
    d->nnames++;
    return 0;
}

/* On the worker: the numeric form of every address name has, or message when it has none. */
static void dns_lookup(keel__dns *d, const char *name, keel__dns_addrs *out) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(d->message, sizeof d->message,
                 "could not translate host name \"%.200s\" to address: %.200s", name,
                 gai_strerror(rc));
        return;
    }
    size_t n = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        n++;
    out->addr = calloc(n ? n : 1, sizeof *out->addr);
    if (!out->addr) {
        d->oom = 1;
        freeaddrinfo(res);
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char addr[NI_MAXHOST];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST) !=
            0)
            continue;
        if (!(out->addr[out->n] = strdup(addr))) {
            d->oom = 1;
            break;
        }
        out->n++;
    }
    freeaddrinfo(res);
}

static void dns_run(void *arg) {
    keel__dns *d = arg;
    for (size_t i = 0; i < d->nnames && !d->oom; i++)
        dns_lookup(d, d->names[i], &d->found[i]);
}

static void dns_done(void *arg) {
    keel__dns *d = arg;
    if (d->cb) {
        keel__dns_result r = { d->found, d->nnames, d->oom, d->message };
        d->cb(d->arg, &r);
    }
    keel__dns_free(d);
}

/* The pool was freed before the lookups ended: nobody waits for them any more. */
static void dns_drop(void *arg) { keel__dns_free(arg); }

int keel__dns_submit(keel__dns *d, keel__workers *w, int64_t deadline_ms, keel__dns_cb cb,
                     void *arg) {
    d->cb = cb;
    d->arg = arg;
    keel__job job = { KEEL__JOB_CONNECT, deadline_ms, dns_run, dns_done, dns_drop, d };
    if (keel__workers_submit(w, &job) != 0) {
        d->cb = NULL;
        d->arg = NULL;
        return -1;
    }
    return 0;
}

void keel__dns_free(keel__dns *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->nnames; i++) {
        free(d->names[i]);
        for (size_t j = 0; j < d->found[i].n; j++)
            free(d->found[i].addr[j]);
        free(d->found[i].addr);
    }
    free(d->names);
    free(d->found);
    free(d);
}

void keel__dns_abandon(keel__dns *d) {
    if (d)
        d->cb = NULL;
}
