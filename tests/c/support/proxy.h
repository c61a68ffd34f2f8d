/* tests/c/support/proxy.h - a TCP proxy for tests: forwards to a server, stalls, black-holes, records. */
#ifndef KEEL_TESTS_SUPPORT_PROXY_H
#define KEEL_TESTS_SUPPORT_PROXY_H

#include <stddef.h>
#include <stdint.h>

/*
 * A proxy listens on an ephemeral port of 127.0.0.1 and relays each connection it accepts to
 * an upstream server on a thread of its own, so a test can make a real server fall silent at a
 * chosen moment: the client's connection stays open and nothing more arrives, as with a hung
 * host or a network that drops packets. Modes, per connection:
 *
 *   forwarding    bytes go both ways (the default when an upstream is given)
 *   stalled       after test_proxy_stall, or once a connection reached the byte limits set by
 *                 test_proxy_limit: nothing is read or forwarded any more (the bytes stay in the
 *                 kernel's buffers, so test_proxy_resume carries on where it stopped)
 *   black-holed   accepted and never answered: what the client sends is read, recorded and
 *                 dropped, no upstream connection is made. Every connection of a proxy started
 *                 without an upstream, and every connection accepted while the proxy is stalled
 *                 (a PostgreSQL cancel request or a MySQL KILL connection meets a silent server
 *                 too).
 *
 * Whatever a client sends that the proxy reads is recorded (the first 1 MiB of each
 * connection), so a test can check what reached the wire. All functions are thread-safe; none
 * blocks for long (they wake the proxy thread and return).
 */
typedef struct test_proxy test_proxy;

/*
 * Starts a proxy relaying to host:port (an IPv4 address or a name), or black-holing every
 * connection when host is NULL. Returns NULL after printing why when it cannot start.
 */
test_proxy *test_proxy_start(const char *host, int port);

/* The port the proxy listens on (127.0.0.1). */
int test_proxy_port(const test_proxy *p);

/* Stops forwarding on every connection now; connections accepted from now on are black-holed. */
void test_proxy_stall(test_proxy *p);

/* Forwards again on the connections stalled by test_proxy_stall; new ones are relayed again. */
void test_proxy_resume(test_proxy *p);

/*
 * Connections accepted from now on stall once they have forwarded to_server bytes from the
 * client, or to_client bytes from the server (SIZE_MAX: no limit). For example (SIZE_MAX, 0)
 * accepts and never answers, while the upstream still sees the connection.
 */
void test_proxy_limit(test_proxy *p, size_t to_server, size_t to_client);

/*
 * Closes every connection accepted so far at once, both sides, as a server that crashes or a
 * network that resets: the client reads the end of its stream (or a reset, when it had sent
 * bytes the proxy did not read) in the middle of whatever it was doing. The upstream sees its
 * connection closed too. Connections accepted from now on are relayed (or black-holed) as
 * before; a stall stays in force for them.
 */
void test_proxy_cut(test_proxy *p);

/* Connections accepted so far. */
size_t test_proxy_accepted(const test_proxy *p);

/*
 * Copies up to cap bytes of what the client of connection index (0: the first accepted) sent,
 * as far as the proxy read it, into buf; returns the number recorded (0 when no such
 * connection).
 */
size_t test_proxy_recorded(const test_proxy *p, size_t index, void *buf, size_t cap);

/* True (1) when the client of connection index sent the n bytes of needle at some point. */
int test_proxy_saw(const test_proxy *p, size_t index, const void *needle, size_t n);

/* Closes every connection and the listener, stops the thread and frees p. Accepts NULL. */
void test_proxy_free(test_proxy *p);

/*
 * The URL of a server with its host and port replaced by the proxy's ("scheme://user@host:port/db"
 * becomes "scheme://user@127.0.0.1:PROXY/db"), written into out. Returns out, or NULL when the
 * URL has no authority part or out is too small.
 */
char *test_proxy_url(const test_proxy *p, const char *url, char *out, size_t size);

/*
 * The host and port of url ("…://user:pw@host:port/…"), port 0 when the URL has none. 0, or -1
 * when the URL has no authority part.
 */
int test_url_host_port(const char *url, char *host, size_t hsize, int *port);

#endif
