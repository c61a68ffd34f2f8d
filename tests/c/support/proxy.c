/* tests/c/support/proxy.c - a TCP proxy for tests: forwards to a server, stalls, black-holes, records. */
#include "support/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What the proxy records of each client: enough for any handshake or statement a test sends. */
#define RECORD_MAX ((size_t)1 << 20)
#define CHUNK 16384

/* One direction of a relayed connection: bytes read from `from` wait in buf until `to` takes
 * them. */
typedef struct direction {
    int from, to;
    char buf[CHUNK];
    size_t off, len;
    size_t total; /* bytes forwarded so far */
    size_t limit; /* stall once total reaches it */
    int eof;      /* `from` reached its end: `to` is shut down for writing once buf is empty */
} direction;

typedef struct relay {
    int client, server; /* server -1: black-holed */
    direction up;       /* client → server */
    direction down;     /* server → client */
    int stalled;        /* stopped by test_proxy_stall */
    int closed;
    char *rec; /* what the client sent, as far as it was read */
    size_t nrec;
} relay;

struct test_proxy {
    pthread_t thread;
    pthread_mutex_t mu;
    int listener;
    int wake[2]; /* a byte on wake[1] makes the thread look at the state again */
    int port;
    char *host; /* upstream, NULL: black-hole every connection */
    int upstream_port;
    int stalled;
    int quit;
    size_t limit_up, limit_down;
    relay **relays;
    size_t nrelays, cap;
};

static void wake(test_proxy *p) {
    char b = 1;
    ssize_t n = write(p->wake[1], &b, 1);
    (void)n; /* a full pipe already wakes the thread */
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* A blocking connect to the upstream (a local server: it answers at once), then non-blocking. */
static int connect_upstream(const test_proxy *p) {
    char port[16];
    snprintf(port, sizeof port, "%d", p->upstream_port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(p->host, port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_nonblocking(fd);
    }
    return fd;
}

static void record(relay *r, const char *data, size_t n) {
    if (r->nrec >= RECORD_MAX)
        return;
    if (n > RECORD_MAX - r->nrec)
        n = RECORD_MAX - r->nrec;
    if (!r->rec && !(r->rec = malloc(RECORD_MAX)))
        return;
    memcpy(r->rec + r->nrec, data, n);
    r->nrec += n;
}

static void relay_close(relay *r) {
    if (r->closed)
        return;
    r->closed = 1;
    close(r->client);
    if (r->server >= 0)
        close(r->server);
}

/* Accepts one connection: relayed when the proxy has an upstream and is not stalled. */
static void accept_one(test_proxy *p) {
    int fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r->client = fd;
    r->server = p->host && !p->stalled ? connect_upstream(p) : -1;
    if (p->host && !p->stalled && r->server < 0) {
        /* The upstream is down: the client sees its connection closed, as a refusal. */
        close(fd);
        free(r);
        return;
    }
    r->up = (direction){ .from = fd, .to = r->server, .limit = p->limit_up };
    r->down = (direction){ .from = r->server, .to = fd, .limit = p->limit_down };
    if (p->nrelays == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        relay **a = realloc(p->relays, cap * sizeof *a);
        if (!a) {
            relay_close(r);
            free(r);
            return;
        }
        p->relays = a;
        p->cap = cap;
    }
    p->relays[p->nrelays++] = r;
}

/* Whether d may read now: nothing pending, open, under its limit, and the relay not stalled. */
static int may_read(const relay *r, const direction *d) {
    return !r->stalled && d->len == 0 && !d->eof && d->total < d->limit;
}

/* Reads into d (recording what comes from the client). Returns -1 when the relay must close. */
static int dir_read(relay *r, direction *d, int from_client) {
    size_t room = sizeof d->buf;
    if (d->limit - d->total < room)
        room = d->limit - d->total;
    ssize_t n = read(d->from, d->buf, room);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) {
        d->eof = 1;
        if (d->to >= 0)
            shutdown(d->to, SHUT_WR);
        return 0;
    }
    if (from_client)
        record(r, d->buf, (size_t)n);
    d->off = 0;
    d->len = (size_t)n;
    d->total += (size_t)n;
    return 0;
}

static int dir_write(direction *d) {
    ssize_t n = send(d->to, d->buf + d->off, d->len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->off += (size_t)n;
    d->len -= (size_t)n;
    if (d->len == 0 && d->eof)
        shutdown(d->to, SHUT_WR);
    return 0;
}

/* Reads and drops what the client of a black-holed connection sends; -1 when it hung up. */
static int drain(relay *r) {
    char buf[CHUNK];
    ssize_t n = read(r->client, buf, sizeof buf);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    record(r, buf, (size_t)n);
    return 0;
}

/* The events each descriptor of r waits for, given the state; index arrays map back. */
static void relay_events(const relay *r, short *client_ev, short *server_ev) {
    *client_ev = *server_ev = 0;
    if (r->closed)
        return;
    if (r->server < 0) {
        *client_ev = POLLIN;
        return;
    }
    if (may_read(r, &r->up))
        *client_ev |= POLLIN;
    if (r->down.len && !r->stalled)
        *client_ev |= POLLOUT;
    if (may_read(r, &r->down))
        *server_ev |= POLLIN;
    if (r->up.len && !r->stalled)
        *server_ev |= POLLOUT;
}

static void relay_ready(relay *r, short client_re, short server_re) {
    int bad = 0;
    if (r->closed) /* cut while the thread polled: its descriptors are gone */
        return;
    if (r->server < 0) {
        if (client_re & (POLLIN | POLLHUP | POLLERR))
            bad = drain(r) < 0;
    } else {
        if (!bad && (client_re & (POLLIN | POLLHUP | POLLERR)) && may_read(r, &r->up))
            bad = dir_read(r, &r->up, 1) < 0;
        if (!bad && (server_re & (POLLIN | POLLHUP | POLLERR)) && may_read(r, &r->down))
            bad = dir_read(r, &r->down, 0) < 0;
        if (!bad && (client_re & (POLLOUT | POLLERR)) && r->down.len)
            bad = dir_write(&r->down) < 0;
        if (!bad && (server_re & (POLLOUT | POLLERR)) && r->up.len)
            bad = dir_write(&r->up) < 0;
        if (r->up.eof && r->down.eof && !r->up.len && !r->down.len)
            bad = 1;
    }
    if (bad)
        relay_close(r);
}

static void *proxy_thread(void *arg) {
    test_proxy *p = arg;
    struct pollfd *fds = NULL;
    size_t cap = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        size_t need = 2 + 2 * p->nrelays;
        if (need > cap) {
            struct pollfd *a = realloc(fds, need * sizeof *a);
            if (!a) {
                pthread_mutex_unlock(&p->mu);
                break;
            }
            fds = a;
            cap = need;
        }
        fds[0] = (struct pollfd){ .fd = p->listener, .events = POLLIN };
        fds[1] = (struct pollfd){ .fd = p->wake[0], .events = POLLIN };
        size_t nrelays = p->nrelays;
        for (size_t i = 0; i < nrelays; i++) {
            relay *r = p->relays[i];
            short ce, se;
            relay_events(r, &ce, &se);
            fds[2 + 2 * i] = (struct pollfd){ .fd = ce ? r->client : -1, .events = ce };
            fds[3 + 2 * i] = (struct pollfd){ .fd = se ? r->server : -1, .events = se };
        }
        pthread_mutex_unlock(&p->mu);
        if (poll(fds, 2 + 2 * nrelays, -1) < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&p->mu);
        if (fds[1].revents) {
            char b[64];
            while (read(p->wake[0], b, sizeof b) > 0)
                ;
        }
        for (size_t i = 0; i < nrelays; i++)
            relay_ready(p->relays[i], fds[2 + 2 * i].revents, fds[3 + 2 * i].revents);
        if (fds[0].revents & POLLIN)
            accept_one(p);
        pthread_mutex_unlock(&p->mu);
    }
    free(fds);
    return NULL;
}

test_proxy *test_proxy_start(const char *host, int port) {
    test_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->listener = -1;
    p->wake[0] = p->wake[1] = -1;
    p->limit_up = p->limit_down = SIZE_MAX;
    p->upstream_port = port;
    if (host && !(p->host = strdup(host)))
        goto fail;
    if (pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        goto fail;
    p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listener, 64) != 0 || getsockname(p->listener, (struct sockaddr *)&sa, &len))
        goto fail;
    p->port = ntohs(sa.sin_port);
    pthread_mutex_init(&p->mu, NULL);
    if (pthread_create(&p->thread, NULL, proxy_thread, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        goto fail;
    }
    return p;
fail:
    fprintf(stderr, "  proxy: cannot start: %s\n", strerror(errno));
    if (p->listener >= 0)
        close(p->listener);
    if (p->wake[0] >= 0) {
        close(p->wake[0]);
        close(p->wake[1]);
    }
    free(p->host);
    free(p);
    return NULL;
}

int test_proxy_port(const test_proxy *p) { return p->port; }

static void set_stalled(test_proxy *p, int stalled) {
    pthread_mutex_lock(&p->mu);
    p->stalled = stalled;
    for (size_t i = 0; i < p->nrelays; i++)
        if (p->relays[i]->server >= 0)
            p->relays[i]->stalled = stalled;
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

void test_proxy_stall(test_proxy *p) { set_stalled(p, 1); }

void test_proxy_resume(test_proxy *p) { set_stalled(p, 0); }

void test_proxy_limit(test_proxy *p, size_t to_server, size_t to_client) {
    pthread_mutex_lock(&p->mu);
    p->limit_up = to_server;
    p->limit_down = to_client;
    pthread_mutex_unlock(&p->mu);
}

void test_proxy_cut(test_proxy *p) {
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nrelays; i++)
        relay_close(p->relays[i]);
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

size_t test_proxy_accepted(const test_proxy *p) {
    test_proxy *m = (test_proxy *)p; /* the lock is state, not content */
    pthread_mutex_lock(&m->mu);
    size_t n = m->nrelays;
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t test_proxy_recorded(const test_proxy *p, size_t index, void *buf, size_t cap) {
    test_proxy *m = (test_proxy *)p;
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    if (index < m->nrelays) {
        const relay *r = m->relays[index];
        n = r->nrec < cap ? r->nrec : cap;
        if (n)
            memcpy(buf, r->rec, n);
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

int test_proxy_saw(const test_proxy *p, size_t index, const void *needle, size_t n) {
    test_proxy *m = (test_proxy *)p;
    int found = 0;
    pthread_mutex_lock(&m->mu);
    if (index < m->nrelays && n) {
        const relay *r = m->relays[index];
        for (size_t i = 0; !found && r->nrec >= n && i <= r->nrec - n; i++)
            found = memcmp(r->rec + i, needle, n) == 0;
    }
    pthread_mutex_unlock(&m->mu);
    return found;
}

void test_proxy_free(test_proxy *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->thread, NULL);
    for (size_t i = 0; i < p->nrelays; i++) {
        relay_close(p->relays[i]);
        free(p->relays[i]->rec);
        free(p->relays[i]);
    }
    free(p->relays);
    close(p->listener);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    free(p->host);
    free(p);
}

/* The authority of url: where it starts, and the part after the user info (host[:port]). */
static int authority(const char *url, const char **auth, const char **hostport, const char **end) {
    const char *s = strstr(url, "://");
    if (!s)
        return -1;
    *auth = s + 3;
    *end = *auth + strcspn(*auth, "/?#");
    const char *at = NULL;
    for (const char *c = *auth; c < *end; c++)
        if (*c == '@')
            at = c;
    *hostport = at ? at + 1 : *auth;
    return 0;
}

int test_url_host_port(const char *url, char *host, size_t hsize, int *port) {
    const char *auth, *hp, *end;
    if (authority(url, &auth, &hp, &end) != 0)
        return -1;
    const char *colon = NULL;
    for (const char *c = hp; c < end; c++)
        if (*c == ':')
            colon = c;
    const char *hend = colon ? colon : end;
    snprintf(host, hsize, "%.*s", (int)(hend - hp), hp);
    *port = colon ? atoi(colon + 1) : 0;
    return 0;
}

char *test_proxy_url(const test_proxy *p, const char *url, char *out, size_t size) {
    const char *auth, *hp, *end;
    if (authority(url, &auth, &hp, &end) != 0)
        return NULL;
    int n = snprintf(out, size, "%.*s127.0.0.1:%d%s", (int)(hp - url), url, p->port, end);
    return n > 0 && (size_t)n < size ? out : NULL;
}
