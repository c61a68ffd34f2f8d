/* src/engines/pg/cancel.c - PostgreSQL's cancel request built by keel: the key and the packet. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engines/pg/cancel.h"

/* The request code of a CancelRequest: 1234 in the high 16 bits, 5678 in the low. */
#define PG_CANCEL_REQUEST_CODE 80877102

/* Reads "BackendKeyData <pid> <key>" from one complete trace line. */
static void key_parse(keel__pg_key *k) {
    static const char tag[] = "\tBackendKeyData\t";
    const char *s = strstr(k->line, tag);
    if (!s || k->line[0] != 'B')
        return;
    s += sizeof tag - 1;
    char *end;
    errno = 0;
    long long pid = strtoll(s, &end, 10);
    if (end == s || errno)
        return;
    s = end;
    long long key = strtoll(s, &end, 10);
    if (end == s || errno || pid < INT32_MIN || pid > INT32_MAX || key < INT32_MIN ||
        key > INT32_MAX)
        return;
    while (*end == ' ' || *end == '\t' || *end == '\r')
        end++;
    if (*end)
        return;
    k->pid = (int32_t)pid;
    k->key = (int32_t)key;
    k->found = 1;
}

/* The trace stream's writer: keeps the current line, parses it at its end, then wipes it. */
static ssize_t key_write(void *cookie, const char *buf, size_t size) {
    keel__pg_key *k = cookie;
    for (size_t i = 0; i < size; i++) {
        if (buf[i] != '\n') {
            if (k->len + 1 < sizeof k->line)
                k->line[k->len++] = buf[i];
            else
                k->overflow = 1;
            continue;
        }
        k->line[k->len] = '\0';
        if (!k->overflow)
            key_parse(k);
        explicit_bzero(k->line, sizeof k->line);
        k->len = 0;
        k->overflow = 0;
    }
    return (ssize_t)size;
}

void keel__pg_key_trace(keel__pg_key *k, PGconn *pg) {
    memset(k, 0, sizeof *k);
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    (void)pg; /* libpq cancels without blocking: no key needed */
    return;
#endif
    cookie_io_functions_t io = { .write = key_write };
    k->trace = fopencookie(k, "w", io);
    if (!k->trace)
        return;
    /* Unbuffered: each piece of a line reaches key_write at once, nothing waits in stdio. */
    setvbuf(k->trace, NULL, _IONBF, 0);
    PQtrace(pg, k->trace);
    PQsetTraceFlags(pg, PQTRACE_SUPPRESS_TIMESTAMPS);
}

void keel__pg_key_done(keel__pg_key *k, PGconn *pg) {
    if (!k->trace)
        return;
    if (pg)
        PQuntrace(pg);
    fclose(k->trace);
    k->trace = NULL;
    explicit_bzero(k->line, sizeof k->line);
    k->len = 0;
    k->valid = k->found && pg && PQstatus(pg) == CONNECTION_OK && PQbackendPID(pg) == k->pid;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

#ifdef LIBPQ_HAS_ASYNC_CANCEL
void *keel__pg_cancel_conn_start(PGconn *pg) {
    PGcancelConn *cc = pg ? PQcancelCreate(pg) : NULL;
    if (cc && !PQcancelStart(cc)) {
        PQcancelFinish(cc);
        cc = NULL;
    }
    return cc;
}

int keel__pg_cancel_conn_poll(void *conn) {
    switch (PQcancelPoll(conn)) {
    case PGRES_POLLING_READING:
        return KEEL_READ;
    case PGRES_POLLING_WRITING:
        return KEEL_WRITE;
    case PGRES_POLLING_OK:
        return 0;
    default:
        return -1;
    }
}

int keel__pg_cancel_conn_socket(const void *conn) { return PQcancelSocket(conn); }

void keel__pg_cancel_conn_free(void *conn) { PQcancelFinish(conn); }
#endif

int keel__pg_cancel_packet(const keel__pg_key *k, PGconn *pg, keel__cancel_packet *out) {
    if (!k->valid || !pg)
        return -1;
    int fd = PQsocket(pg);
    out->addrlen = sizeof out->addr;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&out->addr, &out->addrlen) != 0)
        return -1;
    put32(out->data, 16);
    put32(out->data + 4, PG_CANCEL_REQUEST_CODE);
    put32(out->data + 8, (uint32_t)k->pid);
    put32(out->data + 12, (uint32_t)k->key);
    out->len = 16;
    return 0;
}
