/* tests/c/engines/test_cancel.c - cancel requests repeated while their operation runs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engines/cancel.h"
#include "support/proxy.h"
#include "test.h"

#define PACKET "keel cancel test"

/* A stand-in for an engine connection: an operation that runs until told otherwise. */
typedef struct fake {
    pthread_t loop_thread;
    keel__cancel k;
    uint64_t op_seq;
    int running;
    int end_after;     /* the operation ends when this many requests were answered (0: never) */
    int next_op_after; /* a new operation starts when this many requests were answered */
    int fail_prepare;
    int prepared;
    atomic_int released; /* on the loop thread, or on a worker once nobody waits any more */
    atomic_int released_off_loop_thread;
    int packet_port; /* > 0: requests are packets to 127.0.0.1 at this port */
    int conn_port;   /* > 0: requests are library connections to 127.0.0.1 at this port */
    atomic_int sent;
    atomic_int sent_on_loop_thread;
    atomic_int hold; /* the worker waits in send while set */
    int done;        /* set when released reaches done_after */
    int done_after;
    int settled;                 /* calls of settled */
    int answered;                /* its last answered */
    int released_before_settled; /* the request was freed before the end went on */
} fake;

typedef struct request {
    fake *f;
    uint64_t seq;
} request;

static int fake_running(void *owner, uint64_t seq) {
    fake *f = owner;
    return f->running && f->op_seq == seq;
}

static void *fake_prepare(void *owner) {
    fake *f = owner;
    if (f->fail_prepare)
        return NULL;
    request *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    r->f = f;
    r->seq = f->op_seq;
    f->prepared++;
    return r;
}

static void fake_send(void *req) {
    request *r = req;
    fake *f = r->f;
    while (atomic_load(&f->hold))
        usleep(1000);
    if (pthread_equal(pthread_self(), f->loop_thread))
        atomic_fetch_add(&f->sent_on_loop_thread, 1);
    atomic_fetch_add(&f->sent, 1);
}

static void fake_release(void *req) {
    request *r = req;
    fake *f = r->f;
    free(r);
    if (!pthread_equal(pthread_self(), f->loop_thread)) {
        atomic_fetch_add(&f->released_off_loop_thread, 1);
        atomic_fetch_add(&f->released, 1);
        return; /* nothing else may be touched from there */
    }
    int released = atomic_fetch_add(&f->released, 1) + 1;
    if (f->end_after && released == f->end_after)
        f->running = 0;
    if (f->next_op_after && released == f->next_op_after)
        f->op_seq++;
    if (released == f->done_after)
        f->done = 1;
}

static int fake_packet(void *owner, keel__cancel_packet *out) {
    fake *f = owner;
    if (f->packet_port <= 0)
        return -1;
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)f->packet_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(&out->addr, 0, sizeof out->addr);
    memcpy(&out->addr, &sin, sizeof sin);
    out->addrlen = sizeof sin;
    out->len = sizeof PACKET - 1;
    memcpy(out->data, PACKET, out->len);
    f->prepared++;
    return 0;
}

static void fake_settled(void *owner, int answered) {
    fake *f = owner;
    f->settled++;
    f->answered = answered;
    f->released_before_settled = f->released;
    f->done = 1;
}

/* A pretend client library's non-blocking cancel: one step of the packet's exchange per poll. */
typedef struct fake_conn {
    int fd;
    size_t sent;
} fake_conn;

static void *fake_conn_start(void *owner) {
    fake *f = owner;
    if (f->conn_port <= 0)
        return NULL;
    fake_conn *fc = calloc(1, sizeof *fc);
    fc->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)f->conn_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fc->fd, (struct sockaddr *)&sin, sizeof sin) != 0 && errno != EINPROGRESS) {
        close(fc->fd);
        free(fc);
        return NULL;
    }
    f->prepared++;
    return fc;
}

static int fake_conn_poll(void *conn) {
    fake_conn *fc = conn;
    if (fc->sent < sizeof PACKET - 1) {
        ssize_t n = send(fc->fd, PACKET + fc->sent, sizeof PACKET - 1 - fc->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? KEEL_WRITE : -1;
        fc->sent += (size_t)n;
        return fc->sent < sizeof PACKET - 1 ? KEEL_WRITE : KEEL_READ;
    }
    char buf[16];
    ssize_t n = recv(fc->fd, buf, sizeof buf, 0);
    if (n == 0)
        return 0;
    return n > 0 || errno == EAGAIN ? KEEL_READ : -1;
}

static int fake_conn_socket(const void *conn) { return ((const fake_conn *)conn)->fd; }

static void fake_conn_free(void *conn) {
    fake_conn *fc = conn;
    close(fc->fd);
    free(fc);
}

static const keel__cancel_ops fake_ops = {
    .running = fake_running,
    .conn_start = fake_conn_start,
    .conn_poll = fake_conn_poll,
    .conn_socket = fake_conn_socket,
    .conn_free = fake_conn_free,
    .packet = fake_packet,
    .prepare = fake_prepare,
    .send = fake_send,
    .release = fake_release,
    .settled = fake_settled,
};

static fake *fake_new(keel_loop *loop) {
    fake *f = calloc(1, sizeof *f);
    f->loop_thread = pthread_self();
    f->op_seq = 7;
    f->running = 1;
    atomic_init(&f->sent, 0);
    atomic_init(&f->sent_on_loop_thread, 0);
    atomic_init(&f->hold, 0);
    atomic_init(&f->released, 0);
    atomic_init(&f->released_off_loop_thread, 0);
    keel__cancel_init(&f->k, loop, &fake_ops, f);
    return f;
}

static void set_flag(void *arg) { *(int *)arg = 1; }

/* Waits up to 5 s for a request that nobody waits for any more to be released on its worker. */
static int released_soon(fake *f, int want) {
    for (int i = 0; i < 5000 && atomic_load(&f->released) < want; i++)
        usleep(1000);
    return atomic_load(&f->released);
}

/* Runs the loop ms longer, so that a request that should not come would have come. */
static void run_for(keel_loop *loop, int64_t ms) {
    int flag = 0;
    keel_timer *t = keel__timer_new(loop, set_flag, &flag);
    CHECK(t != NULL);
    CHECK_INT(keel__timer_arm(t, keel_now_ms() + ms), 0);
    CHECK_INT(keel_loop_run(loop, &flag), KEEL_OK);
    keel__timer_free(t);
}

TEST(requests_repeat_until_the_operation_ends) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    fake *f = fake_new(loop);
    f->end_after = 3;
    f->done_after = 3;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(f->prepared, 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 3);
    CHECK_INT(atomic_load(&f->sent_on_loop_thread), 0);
    CHECK_INT(f->prepared, 3);
    CHECK_INT(f->released, 3);
    CHECK_INT(atomic_load(&f->released_off_loop_thread), 0);
    CHECK(f->k.job == NULL);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(a_new_operation_is_not_cancelled_by_a_late_retry) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->next_op_after = 2; /* the cancelled statement ends and the next one starts */
    f->done_after = 2;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 2);
    CHECK_INT(f->released, 2);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(an_operation_that_never_ends_gets_twenty_five_requests) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->done_after = 25;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 700);
    CHECK_INT(atomic_load(&f->sent), 25);
    CHECK_INT(f->released, 25);
    CHECK_INT(f->k.tries, 25);
    /* Cancelling again starts a new count. */
    f->done = 0;
    f->done_after = 26;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(atomic_load(&f->sent), 26);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(one_request_at_a_time) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    fake *f = fake_new(loop);
    f->end_after = 1;
    f->done_after = 1;
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    keel__cancel_start(&f->k, w, f->op_seq); /* a second cancel while the first is in flight */
    CHECK_INT(f->prepared, 1);
    atomic_store(&f->hold, 0);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    run_for(loop, 100);
    CHECK_INT(atomic_load(&f->sent), 1);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(nothing_is_sent_without_a_pool_or_a_request) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    keel__cancel_start(&f->k, NULL, f->op_seq);
    CHECK_INT(f->prepared, 0);
    CHECK(f->k.job == NULL);
    f->fail_prepare = 1;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK(f->k.job == NULL);
    CHECK_INT(f->k.tries, 0);
    /* An operation that is not running is not cancelled. */
    f->fail_prepare = 0;
    f->running = 0;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(f->prepared, 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(the_connection_may_close_while_a_request_is_in_flight) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    /* The cancellation state lives on its own here, so that a touch after it is gone shows. */
    keel__cancel *k = calloc(1, sizeof *k);
    keel__cancel_init(k, loop, &fake_ops, f);
    atomic_store(&f->hold, 1);
    keel__cancel_start(k, w, f->op_seq);
    CHECK(k->job != NULL);
    keel__cancel_stop(k);
    free(k);
    atomic_store(&f->hold, 0);
    keel__workers_free(w); /* does not wait for the request, which frees itself */
    CHECK_INT(released_soon(f, 1), 1);
    CHECK_INT(atomic_load(&f->sent), 1);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(stop_is_safe_on_a_state_never_started) {
    keel__cancel k;
    memset(&k, 0, sizeof k);
    keel__cancel_stop(&k);
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    keel__cancel_stop(&f->k);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(the_end_of_an_operation_waits_for_the_request_in_flight) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    /* The operation ends while its request is still on its way to the server. */
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    run_for(loop, 50);
    CHECK_INT(f->settled, 0);
    atomic_store(&f->hold, 0);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 1);
    CHECK_INT(f->released_before_settled, 1);
    /* No retry follows the end, and nothing is held any more. */
    run_for(loop, 300);
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->settled, 1);
    CHECK_INT(keel__cancel_hold(&f->k), 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(an_end_without_a_request_in_flight_is_not_held_and_calls_off_the_retry) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->done_after = 1;
    keel__cancel_start(&f->k, w, f->op_seq);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK); /* answered; a retry is due in 20 ms */
    CHECK_INT(keel__cancel_hold(&f->k), 0);
    run_for(loop, 200);
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->settled, 0);
    keel__cancel_stop(&f->k);
    keel__workers_free(w);
    free(f);
    keel_loop_free(loop);
}

TEST(a_request_that_never_returns_releases_the_hold_after_five_seconds) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    atomic_store(&f->hold, 1);
    keel__cancel_start(&f->k, w, f->op_seq);
    f->running = 0;
    int64_t t0 = keel_now_ms();
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK(keel_now_ms() - t0 >= 4900);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 0);
    CHECK(f->k.job == NULL);
    /* The request finishes later on its own, without touching the state. */
    atomic_store(&f->hold, 0);
    keel__workers_free(w);
    CHECK_INT(released_soon(f, 1), 1);
    CHECK_INT(f->settled, 1);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(closing_during_a_hold_never_calls_settled) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    keel__cancel *k = calloc(1, sizeof *k);
    keel__cancel_init(k, loop, &fake_ops, f);
    atomic_store(&f->hold, 1);
    keel__cancel_start(k, w, f->op_seq);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(k), 1);
    keel__cancel_stop(k);
    free(k);
    atomic_store(&f->hold, 0);
    keel__workers_free(w);
    CHECK_INT(released_soon(f, 1), 1);
    CHECK_INT(f->settled, 0);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

/* A server for packets: accepts one connection, reads what comes until len bytes, closes. */
typedef struct packet_server {
    int listener;
    int port;
    char got[64];
    size_t len;
    pthread_t thread;
} packet_server;

static void *packet_server_main(void *arg) {
    packet_server *ps = arg;
    int fd = accept(ps->listener, NULL, NULL);
    if (fd < 0)
        return NULL;
    while (ps->len < sizeof PACKET - 1) {
        ssize_t n = read(fd, ps->got + ps->len, sizeof ps->got - ps->len);
        if (n <= 0)
            break;
        ps->len += (size_t)n;
    }
    close(fd);
    return NULL;
}

static int packet_server_start(packet_server *ps) {
    memset(ps, 0, sizeof *ps);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    ps->listener = socket(AF_INET, SOCK_STREAM, 0);
    if (ps->listener < 0 || bind(ps->listener, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(ps->listener, 4) != 0 ||
        getsockname(ps->listener, (struct sockaddr *)&sin, &len) != 0)
        return -1;
    ps->port = ntohs(sin.sin_port);
    return pthread_create(&ps->thread, NULL, packet_server_main, ps);
}

TEST(a_packet_goes_from_the_loop_and_is_answered_when_the_server_closes) {
    packet_server ps;
    CHECK_INT(packet_server_start(&ps), 0);
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    f->packet_port = ps.port;
    /* No worker pool at all: a packet needs none. */
    keel__cancel_start(&f->k, NULL, f->op_seq);
    CHECK_INT(f->prepared, 1);
    CHECK(f->k.job != NULL);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 1);
    pthread_join(ps.thread, NULL);
    close(ps.listener);
    CHECK_INT(ps.len, sizeof PACKET - 1);
    CHECK(memcmp(ps.got, PACKET, sizeof PACKET - 1) == 0);
    CHECK_INT(atomic_load(&f->sent), 0); /* no job was sent */
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(a_packet_to_a_silent_server_is_given_up_at_its_deadline) {
    test_proxy *hole = test_proxy_start(NULL, 0); /* accepts, reads and never answers */
    CHECK(hole != NULL);
    if (!hole)
        return;
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    f->packet_port = test_proxy_port(hole);
    int64_t t0 = keel_now_ms();
    keel__cancel_start(&f->k, NULL, f->op_seq);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    int64_t took = keel_now_ms() - t0;
    CHECK(took >= KEEL__CANCEL_REQUEST_MS - 100);
    CHECK(took < KEEL__CANCEL_REQUEST_MS + 3000);
    /* It was sent, so it may still reach the server: the session cannot be trusted. */
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 0);
    CHECK(test_proxy_saw(hole, 0, PACKET, sizeof PACKET - 1));
    CHECK(f->k.job == NULL);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
    test_proxy_free(hole);
}

TEST(an_unanswered_request_is_not_repeated) {
    test_proxy *hole = test_proxy_start(NULL, 0);
    CHECK(hole != NULL);
    if (!hole)
        return;
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    f->packet_port = test_proxy_port(hole);
    keel__cancel_start(&f->k, NULL, f->op_seq); /* the operation keeps running */
    run_for(loop, KEEL__CANCEL_REQUEST_MS + 700);
    CHECK_INT(f->prepared, 1);
    CHECK_INT(f->k.tries, 1);
    CHECK(f->k.job == NULL);
    CHECK_INT(test_proxy_accepted(hole), 1);
    /* It may still reach the server: the end of the operation is held and settles unanswered,
     * from a later loop turn. */
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(f->settled, 0);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 0);
    CHECK_INT(keel__cancel_hold(&f->k), 0);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
    test_proxy_free(hole);
}

TEST(a_fired_request_outlives_the_connection_and_the_pool) {
    test_proxy *hole = test_proxy_start(NULL, 0);
    CHECK(hole != NULL);
    if (!hole)
        return;
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    fake *f = fake_new(loop);
    f->packet_port = test_proxy_port(hole);
    keel__cancel_fire(&f->k, w);
    keel__cancel_stop(&f->k);
    int64_t t0 = keel_now_ms();
    keel__workers_free(w); /* never waits for the request */
    CHECK(keel_now_ms() - t0 < 1000);
    free(f);
    keel_loop_free(loop);
    int seen = 0;
    for (int i = 0; i < 5000 && !seen; i++) {
        seen = test_proxy_saw(hole, 0, PACKET, sizeof PACKET - 1);
        usleep(1000);
    }
    CHECK(seen);
    test_proxy_free(hole);

    /* A job is fired the same way, and released on its worker. */
    loop = keel_loop_new_blocking();
    w = keel__workers_new(loop, 1);
    f = fake_new(loop);
    keel__cancel_fire(&f->k, w);
    keel__workers_free(w);
    CHECK_INT(released_soon(f, 1), 1);
    CHECK_INT(atomic_load(&f->sent), 1);
    CHECK_INT(f->settled, 0);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(a_library_cancel_connection_is_polled_from_the_loop) {
    packet_server ps;
    CHECK_INT(packet_server_start(&ps), 0);
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    f->conn_port = ps.port;
    f->packet_port = ps.port; /* never used: the library's connection comes first */
    keel__cancel_start(&f->k, NULL, f->op_seq);
    CHECK_INT(f->prepared, 1);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 1);
    pthread_join(ps.thread, NULL);
    close(ps.listener);
    CHECK_INT(ps.len, sizeof PACKET - 1);
    CHECK(memcmp(ps.got, PACKET, sizeof PACKET - 1) == 0);
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
}

TEST(a_library_cancel_connection_to_a_silent_server_is_given_up) {
    test_proxy *hole = test_proxy_start(NULL, 0);
    CHECK(hole != NULL);
    if (!hole)
        return;
    keel_loop *loop = keel_loop_new_blocking();
    fake *f = fake_new(loop);
    f->conn_port = test_proxy_port(hole);
    int64_t t0 = keel_now_ms();
    keel__cancel_start(&f->k, NULL, f->op_seq);
    f->running = 0;
    CHECK_INT(keel__cancel_hold(&f->k), 1);
    CHECK_INT(keel_loop_run(loop, &f->done), KEEL_OK);
    CHECK(keel_now_ms() - t0 >= KEEL__CANCEL_REQUEST_MS - 100);
    CHECK_INT(f->settled, 1);
    CHECK_INT(f->answered, 0);
    CHECK(test_proxy_saw(hole, 0, PACKET, sizeof PACKET - 1));
    keel__cancel_stop(&f->k);
    free(f);
    keel_loop_free(loop);
    test_proxy_free(hole);
}

int main(void) {
    RUN(requests_repeat_until_the_operation_ends);
    RUN(a_new_operation_is_not_cancelled_by_a_late_retry);
    RUN(an_operation_that_never_ends_gets_twenty_five_requests);
    RUN(one_request_at_a_time);
    RUN(nothing_is_sent_without_a_pool_or_a_request);
    RUN(the_connection_may_close_while_a_request_is_in_flight);
    RUN(stop_is_safe_on_a_state_never_started);
    RUN(the_end_of_an_operation_waits_for_the_request_in_flight);
    RUN(an_end_without_a_request_in_flight_is_not_held_and_calls_off_the_retry);
    RUN(a_request_that_never_returns_releases_the_hold_after_five_seconds);
    RUN(closing_during_a_hold_never_calls_settled);
    RUN(a_packet_goes_from_the_loop_and_is_answered_when_the_server_closes);
    RUN(a_packet_to_a_silent_server_is_given_up_at_its_deadline);
    RUN(an_unanswered_request_is_not_repeated);
    RUN(a_fired_request_outlives_the_connection_and_the_pool);
    RUN(a_library_cancel_connection_is_polled_from_the_loop);
    RUN(a_library_cancel_connection_to_a_silent_server_is_given_up);
    return TEST_SUMMARY();
}
