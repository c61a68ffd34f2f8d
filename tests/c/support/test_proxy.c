/* tests/c/support/test_proxy.c - the test proxy itself: forwarding, stalls, limits, black holes, records. */
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"
#include "support/proxy.h"
#include "test.h"

/* A client connection to 127.0.0.1:port, or -1. */
static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits up to ms for fd to become readable (accept or data); 1 when it did. */
static int readable(int fd, int ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) == 1;
}

/* Reads exactly n bytes within a few seconds into buf (NUL-terminated); 0, or -1. */
static int read_n(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (!readable(fd, 5000))
            return -1;
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    buf[n] = '\0';
    return 0;
}

static void say(int fd, const char *s) { CHECK_INT(write(fd, s, strlen(s)), (long long)strlen(s)); }

TEST(forwards_stalls_and_resumes) {
    int up_port;
    int up = silent_listener(&up_port);
    test_proxy *p = test_proxy_start("127.0.0.1", up_port);
    CHECK(p != NULL);
    if (!p)
        return;
    int c = dial(test_proxy_port(p));
    CHECK(readable(up, 5000));
    int s = accept(up, NULL, NULL);
    char buf[64];
    say(c, "ping");
    CHECK_INT(read_n(s, buf, 4), 0);
    CHECK_STR(buf, "ping");
    say(s, "pong");
    CHECK_INT(read_n(c, buf, 4), 0);
    CHECK_STR(buf, "pong");

    test_proxy_stall(p);
    say(c, "more");
    say(s, "late");
    CHECK(!readable(s, 300));
    CHECK(!readable(c, 300));
    /* A connection made while stalled is black-holed: the upstream never sees it. */
    int c2 = dial(test_proxy_port(p));
    say(c2, "hello");
    CHECK(!readable(up, 300));
    CHECK(!readable(c2, 100));

    test_proxy_resume(p);
    CHECK_INT(read_n(s, buf, 4), 0);
    CHECK_STR(buf, "more");
    CHECK_INT(read_n(c, buf, 4), 0);
    CHECK_STR(buf, "late");
    CHECK_INT(test_proxy_accepted(p), 2);
    CHECK(test_proxy_saw(p, 0, "pingmore", 8));
    CHECK(test_proxy_saw(p, 1, "hello", 5));
    CHECK(!test_proxy_saw(p, 0, "pong", 4));
    close(c);
    close(c2);
    close(s);
    test_proxy_free(p);
    close(up);
}

TEST(limits_stall_a_connection_after_n_bytes) {
    int up_port;
    int up = silent_listener(&up_port);
    test_proxy *p = test_proxy_start("127.0.0.1", up_port);
    CHECK(p != NULL);
    if (!p)
        return;
    test_proxy_limit(p, 3, 2);
    int c = dial(test_proxy_port(p));
    CHECK(readable(up, 5000));
    int s = accept(up, NULL, NULL);
    char buf[64];
    say(s, "abcdef");
    CHECK_INT(read_n(c, buf, 2), 0);
    CHECK_STR(buf, "ab");
    CHECK(!readable(c, 300));
    say(c, "xyz123");
    CHECK_INT(read_n(s, buf, 3), 0);
    CHECK_STR(buf, "xyz");
    CHECK(!readable(s, 300));
    close(c);
    close(s);
    test_proxy_free(p);
    close(up);
}

TEST(without_upstream_every_connection_is_black_holed_and_recorded) {
    test_proxy *p = test_proxy_start(NULL, 0);
    CHECK(p != NULL);
    if (!p)
        return;
    int c = dial(test_proxy_port(p));
    CHECK(c >= 0);
    say(c, "secret handshake");
    CHECK(!readable(c, 300));
    char buf[64];
    size_t n = 0;
    for (int i = 0; i < 500 && n < 16; i++) {
        n = test_proxy_recorded(p, 0, buf, sizeof buf);
        if (n < 16)
            usleep(10000);
    }
    CHECK_INT(n, 16);
    CHECK(memcmp(buf, "secret handshake", 16) == 0);
    CHECK_INT(test_proxy_recorded(p, 1, buf, sizeof buf), 0);
    close(c);
    test_proxy_free(p);
}

TEST(urls_point_at_the_proxy) {
    test_proxy *p = test_proxy_start(NULL, 0);
    CHECK(p != NULL);
    if (!p)
        return;
    char out[256], want[256], host[64];
    int port = 0;
    snprintf(want, sizeof want, "postgresql://u:pw@127.0.0.1:%d/db?x=1", test_proxy_port(p));
    CHECK_STR(test_proxy_url(p, "postgresql://u:pw@db.example:5432/db?x=1", out, sizeof out), want);
    snprintf(want, sizeof want, "mongodb://127.0.0.1:%d", test_proxy_port(p));
    CHECK_STR(test_proxy_url(p, "mongodb://localhost", out, sizeof out), want);
    CHECK(test_proxy_url(p, "sqlite::memory:", out, sizeof out) == NULL);
    CHECK_INT(test_url_host_port("mysql://root@10.0.0.1:3307/x", host, sizeof host, &port), 0);
    CHECK_STR(host, "10.0.0.1");
    CHECK_INT(port, 3307);
    test_proxy_free(p);
}

int main(void) {
    RUN(forwards_stalls_and_resumes);
    RUN(limits_stall_a_connection_after_n_bytes);
    RUN(without_upstream_every_connection_is_black_holed_and_recorded);
    RUN(urls_point_at_the_proxy);
    return TEST_SUMMARY();
}
