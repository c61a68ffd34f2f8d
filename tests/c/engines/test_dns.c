/* tests/c/engines/test_dns.c - lookups on the worker pool, answered on the loop thread. */
#include <pthread.h>
#include <stdlib.h>

#include "engines/dns.h"
#include "test.h"

typedef struct outcome {
    pthread_t loop_thread;
    int calls;
    int on_loop_thread;
    int done;
    size_t nnames;
    int oom;
    char message[KEEL_ERROR_MESSAGE_MAX];
    char found[4][4][64]; /* up to 4 addresses of up to 4 names */
    size_t nfound[4];
    char **taken; /* an address array the callback kept */
    size_t ntaken;
} outcome;

static void record(void *arg, keel__dns_result *r) {
    outcome *o = arg;
    o->calls++;
    o->on_loop_thread = pthread_equal(pthread_self(), o->loop_thread);
    o->nnames = r->nnames;
    o->oom = r->oom;
    snprintf(o->message, sizeof o->message, "%s", r->message);
    for (size_t i = 0; i < r->nnames && i < 4; i++) {
        o->nfound[i] = r->found[i].n;
        for (size_t j = 0; j < r->found[i].n && j < 4; j++)
            snprintf(o->found[i][j], sizeof o->found[i][j], "%s", r->found[i].addr[j]);
    }
    o->done = 1;
}

static void record_and_take(void *arg, keel__dns_result *r) {
    outcome *o = arg;
    record(arg, r);
    o->taken = r->found[0].addr;
    o->ntaken = r->found[0].n;
    r->found[0].addr = NULL;
    r->found[0].n = 0;
}

static int has(const outcome *o, size_t name, const char *addr) {
    for (size_t j = 0; j < o->nfound[name] && j < 4; j++)
        if (strcmp(o->found[name][j], addr) == 0)
            return 1;
    return 0;
}

/* Looks the names up and runs the loop until the callback came. */
static void lookup(const char *const *names, size_t n, keel__dns_cb cb, outcome *o) {
    memset(o, 0, sizeof *o);
    o->loop_thread = pthread_self();
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    keel__dns *d = keel__dns_new();
    CHECK(d != NULL);
    for (size_t i = 0; i < n; i++)
        CHECK_INT(keel__dns_add(d, names[i], strlen(names[i])), 0);
    CHECK_INT(keel__dns_submit(d, w, -1, cb, o), 0);
    CHECK_INT(keel_loop_run(loop, &o->done), KEEL_OK);
    keel__workers_free(w);
    keel_loop_free(loop);
}

TEST(names_and_addresses_come_back_in_order_on_the_loop_thread) {
    static const char *const names[] = { "localhost", "127.0.0.1", "::1" };
    outcome o;
    lookup(names, 3, record, &o);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.on_loop_thread, 1);
    CHECK_INT(o.nnames, 3);
    CHECK_INT(o.oom, 0);
    CHECK_STR(o.message, "");
    CHECK(o.nfound[0] >= 1);
    CHECK(has(&o, 0, "127.0.0.1") || has(&o, 0, "::1"));
    CHECK_INT(o.nfound[1], 1);
    CHECK_STR(o.found[1][0], "127.0.0.1");
    CHECK_INT(o.nfound[2], 1);
    CHECK_STR(o.found[2][0], "::1");
}

TEST(a_name_that_does_not_resolve_leaves_a_message_and_the_others_resolve) {
    static const char *const names[] = { "no-such-host.invalid", "127.0.0.1" };
    outcome o;
    lookup(names, 2, record, &o);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.nnames, 2);
    CHECK_INT(o.nfound[0], 0);
    CHECK_CONTAINS(o.message,
                   "could not translate host name \"no-such-host.invalid\" to address: ");
    CHECK_INT(o.nfound[1], 1);
    CHECK_STR(o.found[1][0], "127.0.0.1");
}

TEST(a_job_without_names_still_answers) {
    outcome o;
    lookup(NULL, 0, record, &o);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.nnames, 0);
    CHECK_INT(o.oom, 0);
    CHECK_STR(o.message, "");
}

TEST(the_callback_may_keep_the_addresses) {
    static const char *const names[] = { "127.0.0.1" };
    outcome o;
    lookup(names, 1, record_and_take, &o);
    CHECK_INT(o.ntaken, 1);
    CHECK(o.taken != NULL);
    if (o.taken) {
        CHECK_STR(o.taken[0], "127.0.0.1");
        for (size_t i = 0; i < o.ntaken; i++)
            free(o.taken[i]);
        free(o.taken);
    }
}

TEST(only_the_given_bytes_of_a_name_are_looked_up) {
    outcome o;
    memset(&o, 0, sizeof o);
    o.loop_thread = pthread_self();
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__dns *d = keel__dns_new();
    CHECK_INT(keel__dns_add(d, "127.0.0.1,localhost", 9), 0);
    CHECK_INT(keel__dns_submit(d, w, -1, record, &o), 0);
    CHECK_INT(keel_loop_run(loop, &o.done), KEEL_OK);
    CHECK_INT(o.nfound[0], 1);
    CHECK_STR(o.found[0][0], "127.0.0.1");
    keel__workers_free(w);
    keel_loop_free(loop);
}

TEST(an_abandoned_job_finishes_without_calling_back) {
    outcome o;
    memset(&o, 0, sizeof o);
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__dns *d = keel__dns_new();
    CHECK_INT(keel__dns_add(d, "localhost", 9), 0);
    CHECK_INT(keel__dns_submit(d, w, -1, record, &o), 0);
    keel__dns_abandon(d);
    /* Freeing the pool does not wait for the lookup: it ends on its worker and frees itself. */
    keel__workers_free(w);
    CHECK_INT(o.calls, 0);
    keel_loop_free(loop);
    keel__dns_abandon(NULL);
}

TEST(a_job_never_submitted_is_freed_with_its_names) {
    keel__dns *d = keel__dns_new();
    CHECK(d != NULL);
    for (int i = 0; i < 40; i++)
        CHECK_INT(keel__dns_add(d, "db.example", 10), 0);
    keel__dns_free(d);
    keel__dns_free(NULL);
}

int main(void) {
    RUN(names_and_addresses_come_back_in_order_on_the_loop_thread);
    RUN(a_name_that_does_not_resolve_leaves_a_message_and_the_others_resolve);
    RUN(a_job_without_names_still_answers);
    RUN(the_callback_may_keep_the_addresses);
    RUN(only_the_given_bytes_of_a_name_are_looked_up);
    RUN(an_abandoned_job_finishes_without_calling_back);
    RUN(a_job_never_submitted_is_freed_with_its_names);
    return TEST_SUMMARY();
}
