/* src/engines/pg/pg.c - the PostgreSQL engine: libpq's asynchronous API driven by the host loop. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "core/error_int.h"
#include "core/numtext.h"
#include "core/result_int.h"
#include "core/timeconv.h"
#include "engines/cancel.h"
#include "engines/dns.h"
#include "engines/engine.h"
#include "engines/pg/binary.h"
#include "engines/settings.h"

#define PG_ENGINE "postgresql"
#define PG_DEFAULT_TIMEOUT_S 10.0

/* Type OIDs of the built-in types keel maps to its own value types. */
enum {
    PG_OID_BOOL = 16,
    PG_OID_BYTEA = 17,
    PG_OID_INT8 = 20,
    PG_OID_INT2 = 21,
    PG_OID_INT4 = 23,
    PG_OID_OID = 26,
    PG_OID_JSON = 114,
    PG_OID_FLOAT4 = 700,
    PG_OID_FLOAT8 = 701,
    PG_OID_DATE = 1082,
    PG_OID_TIME = 1083,
    PG_OID_TIMESTAMP = 1114,
    PG_OID_TIMESTAMPTZ = 1184,
    PG_OID_NUMERIC = 1700,
    PG_OID_UUID = 2950,
    PG_OID_JSONB = 3802
};

/*
 * Batches are written in chunks: after this many rows or bytes the engine flushes, so the
 * socket buffer decides the pace instead of libpq's output buffer growing without bound.
 */
#define PG_BATCH_CHUNK_ROWS 256
#define PG_BATCH_CHUNK_BYTES 65536
/* Rows queued per write-ready callback, so a huge batch does not starve the host loop. */
#define PG_BATCH_ROWS_PER_WAKEUP 4096
/* A statement streamed to keel__conn_rows hands its rows over at least every this many rows,
 * and whenever the input read so far is decoded. */
#define PG_STREAM_BATCH_ROWS 1024
/* Host list entries longer than this are no host names (DNS allows 253 bytes): libpq gets
 * them as they are. */
#define PG_HOST_NAME_MAX 255
/* Prepared statements kept per connection unless options.statement_cache_size says otherwise. */
#define PG_CACHE_DEFAULT 100
/* The largest statement_cache_size accepted: a lookup walks the cache from the most recently
 * used entry, comparing hashes, so its cost grows with the size. */
#define PG_CACHE_MAX 10000
/* DEALLOCATEs of evicted statements piggybacked on one round trip at most. */
#define PG_DEALLOC_PER_TRIP 8
/* The longest queue of one cached-statement round trip: the DEALLOCATEs and their sync, then
 * the prepare, the execute and the closing sync. */
#define PG_STEPS_MAX (PG_DEALLOC_PER_TRIP + 4)

typedef enum pg_phase {
    PG_RESOLVING,  /* host names are being resolved on the worker pool */
    PG_CONNECTING, /* PQconnectPoll is driving the handshake */
    PG_SETUP,      /* connected; session settings are being applied */
    PG_IDLE,       /* ready; the socket is watched to notice a server-side close */
    PG_QUERY,      /* one statement, or a transaction command, is in flight */
    PG_BATCH,      /* a pipelined batch is in flight */
    PG_CACHED,     /* one statement through the prepared-statement cache */
    PG_COPY,       /* a bulk load (keel_conn_copy_in): COPY … FROM STDIN in binary */
    PG_HELD,       /* the operation is over; its end waits for a cancel request in flight */
    PG_DEAD        /* failed or lost; waits for close */
} pg_phase;

/*
 * A named prepared statement of the session ("keel_sN"), keyed by its text and the parameter
 * types it was prepared with: the types are fixed at parse time, so another type tuple needs a
 * statement of its own.
 */
typedef struct pg_stmt {
    struct pg_stmt *prev, *next; /* the LRU list, most recently used first */
    uint64_t id;                 /* N of its name */
    uint64_t hash;
    char *sql;
    size_t sql_len;
    Oid *types;
    size_t ntypes;
} pg_stmt;

/* What one queued command of a cached-statement round trip is, in the order sent. */
typedef enum pg_step { PG_STEP_DEALLOC, PG_STEP_SYNC, PG_STEP_PREPARE, PG_STEP_EXEC } pg_step;

struct pg_copy;

typedef struct pg_impl {
    keel_conn *c;
    PGconn *pg;
    keel_watch *watch;
    keel_timer *timer; /* the connect deadline; gone once connected */
    keel__dns *dns;    /* the resolution job in flight, if any */
    pg_phase phase;
    double timeout_s;
    char where[160]; /* "host H, port P" for messages that libpq does not write itself */

    /* Connection keywords, kept only until libpq has copied them. */
    const char **kw_keys;
    char **kw_vals;
    size_t nkw;
    size_t kw_host; /* index of the host keyword, or SIZE_MAX */
    int resolved;   /* host names were resolved by keel: libpq's messages show addresses */

    /* The running operation. */
    int flush_pending; /* libpq still holds output that the socket did not take */
    int failed;        /* err holds the operation's first error */
    int copy_out;      /* discarding the data of a COPY TO STDOUT */
    keel_error err;
    /*
     * The running statement's result, decoded as its PGresults arrive and freed one by one, so
     * libpq's copy and keel's never hold the whole result together. With several statements in
     * one string the last one that returned rows is the result.
     */
    keel_result *res;
    keel_type *kinds; /* keel type of each column of res */
    size_t kinds_cap;
    int64_t affected;    /* the row count the result's command reported, -1 when none */
    int rows_seen;       /* a statement returned rows: later commands do not replace them */
    int in_set;          /* single-row results of one statement are arriving */
    int stream;          /* single-row mode is on: rows go to keel__conn_rows in batches */
    uint64_t op_seq;     /* counts operations, so a late cancel retry can tell it is stale */
    keel__cancel cancel; /* cancel requests for the running operation, and their retries */
    pg_phase held;       /* the phase of an operation in PG_HELD */

    /*
     * The running batch: a private copy of its parameters, sent row by row. The statement is
     * parsed once into the unnamed prepared statement and each row only binds and executes it;
     * it is prepared again only before a row whose parameter types differ from the last
     * prepared ones (bprep marks those rows), because the types are fixed at parse time.
     */
    keel_value *bvals;
    Oid *btypes; /* the parameter types the unnamed statement was prepared with */
    char *bprep; /* per row: 1 when a prepare was queued just before it */
    const char *bsql;
    size_t brows, bnparams, bsent, bdone;
    int bgot;      /* a result of the current group arrived (its terminating NULL is to come) */
    int bprepared; /* the prepare queued before row bdone has reported */
    int bsynced;   /* the closing sync is queued */
    int64_t baffected;

    /* Parameter arrays and their text, reused by every statement of the connection. */
    const char **pvals;
    int *plens;
    int *pfmts;
    Oid *ptypes;
    size_t pcap;
    keel__buf ptext;
    size_t pbytes; /* bytes the last encoded row will put on the wire (batch pacing) */
    keel__buf sqlbuf;
    keel__buf pbin; /* copies of bytes parameters, so a transparent retry can send them again */

    /*
     * The prepared-statement cache: at most cache_cap statements (0: every statement goes
     * unnamed, as behind pgbouncer in transaction mode). Evicted statements wait in dpend
     * until a DEALLOCATE for them succeeds; those are sent ahead of a later statement, in its
     * round trip, and only outside a transaction block, where their failure cannot abort the
     * user's transaction.
     */
    size_t cache_cap, ncached;
    pg_stmt *mru, *lru;
    uint64_t next_id;
    uint64_t *dpend;
    size_t ndpend, dpcap;

    /* The running cached statement: the commands queued and which one results belong to. */
    pg_stmt *xstmt; /* its cache entry */
    const char *xsql;
    size_t xsql_len, xnparams;
    int xfresh;   /* the entry is prepared in this round trip */
    int xpipe;    /* the round trip is pipelined (a prepare or DEALLOCATEs go with it) */
    int xretry;   /* the execute failed on a stale cached statement: prepare it again */
    int xretried; /* one transparent retry was already made */
    int xgot;     /* a result of the current command arrived (its NULL is to come) */
    unsigned char xsteps[PG_STEPS_MAX];
    char xdok[PG_DEALLOC_PER_TRIP]; /* per DEALLOCATE sent: it succeeded */
    size_t nxsteps, xstep, nxdealloc;

    struct pg_copy *copy; /* the state of bulk loads, made by the first one */
} pg_impl;

static void pg_on_ready(void *arg, int events);
static void pg_drop_result(pg_impl *p);
static void pg_fail_op(pg_impl *p, keel_status code, const char *msg);
static const keel__cancel_ops pg_cancel_ops;
static void pg_copy_clear(pg_impl *p);
static void pg_copy_free(pg_impl *p);
static int pg_copy_wants_write(const pg_impl *p);
static int pg_copy_send(pg_impl *p);
static int pg_copy_collect(pg_impl *p);
static void pg_copy_cancel(pg_impl *p);

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */

static const char *pg_dbname(const keel_conn *c) { return c->config ? c->config->name : ""; }

/*
 * libpq messages span several lines and are indented with tabs; a keel_error message is one
 * line. The result is also run through the redactor so no password-looking text survives.
 */
static void pg_clean_message(char *dst, size_t size, const char *src) {
    char flat[KEEL_ERROR_MESSAGE_MAX * 2];
    size_t n = 0;
    int space = 0;
    for (const char *s = src ? src : ""; *s && n + 1 < sizeof flat; s++) {
        if (*s == '\n' || *s == '\t' || *s == '\r') {
            space = 1;
            continue;
        }
        if (space && n > 0 && flat[n - 1] != ' ')
            flat[n++] = ' ';
        space = 0;
        if (n + 1 < sizeof flat)
            flat[n++] = *s;
    }
    while (n > 0 && flat[n - 1] == ' ')
        n--;
    flat[n] = '\0';
    keel__redact(dst, size, flat);
}

/* Fills err from a libpq message (connection and protocol failures). */
static keel_status pg_error_libpq(keel_error *err, keel_status code, const keel_conn *c,
                                  const char *prefix, const char *msg) {
    char clean[KEEL_ERROR_MESSAGE_MAX];
    pg_clean_message(clean, sizeof clean, msg && *msg ? msg : "unknown libpq error");
    return keel__error_set(err, code, PG_ENGINE, pg_dbname(c), "%s%s", prefix ? prefix : "", clean);
}

/*
 * A connect failure. libpq's message names the host and port it tried; when it does not (a
 * failure before the first attempt) the configured ones are named instead.
 */
static keel_status pg_connect_error(pg_impl *p, keel_error *err, keel_status code) {
    const char *msg = PQerrorMessage(p->pg);
    char prefix[200];
    prefix[0] = '\0';
    if (!msg || !strstr(msg, "connection to server") || p->resolved)
        snprintf(prefix, sizeof prefix, "could not connect to PostgreSQL at %s: ", p->where);
    return pg_error_libpq(err, code, p->c, prefix, msg);
}

/* Decimal text of v into out (at least 21 bytes); returns its length. */
static size_t pg_format_int(int64_t v, char *out) {
    char tmp[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

/* Rows a command reported (PQcmdTuples), or -1 when it reports none. */
static int64_t pg_affected(PGresult *r) {
    const char *t = PQcmdTuples(r);
    int64_t n;
    if (!t || !*t || keel__parse_int64(t, strlen(t), &n) != 0)
        return -1;
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */

/* Keys with a field of their own in the database config, and keys keel must control. */
static const struct {
    const char *key;
    const char *why;
} pg_reserved[] = {
    { "host", "set databases.NAME.host instead" },
    { "port", "set databases.NAME.port instead" },
    { "dbname", "set databases.NAME.database instead" },
    { "user", "set databases.NAME.user instead" },
    { "password", "set databases.NAME.password instead" },
    { "client_encoding", "keel always uses UTF8" },
    { "replication", "replication connections are not supported" },
};

static int pg_is_uint(const char *v) {
    if (!*v)
        return 0;
    for (; *v; v++)
        if (*v < '0' || *v > '9')
            return 0;
    return 1;
}

/* Checks the value of an option libpq knows; NULL when fine, else what is expected. */
static const char *pg_option_value_problem(const char *key, const char *v) {
    static const char *const sslmodes[] = { "disable",   "allow",       "prefer", "require",
                                            "verify-ca", "verify-full", NULL };
    static const char *const attrs[] = { "any",     "read-write",     "read-only", "primary",
                                         "standby", "prefer-standby", NULL };
    static const char *const tristate[] = { "disable", "prefer", "require", NULL };
    static const char *const flags[] = { "keepalives", "sslcompression", "sslsni", NULL };
    static const char *const counts[] = { "keepalives_idle", "keepalives_interval",
                                          "keepalives_count", "tcp_user_timeout", NULL };
    if (strstr(v, "${"))
        return NULL; /* a secret reference: checked when it is resolved, at connect time */
    if (strcmp(key, "sslmode") == 0 && !keel__word_in_list(v, sslmodes))
        return "one of disable, allow, prefer, require, verify-ca, verify-full";
    if (strcmp(key, "target_session_attrs") == 0 && !keel__word_in_list(v, attrs))
        return "one of any, read-write, read-only, primary, standby, prefer-standby";
    if ((strcmp(key, "gssencmode") == 0 || strcmp(key, "channel_binding") == 0) &&
        !keel__word_in_list(v, tristate))
        return "one of disable, prefer, require";
    if (keel__word_in_list(key, flags) && strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        return "0 or 1";
    if (keel__word_in_list(key, counts) && !pg_is_uint(v))
        return "a non-negative integer";
    if (strcmp(key, "connect_timeout") == 0 && !keel__settings_is_seconds(v))
        return "a non-negative number of seconds";
    return NULL;
}

static keel_status pg_check_config(const keel__dbconfig *dbc, keel_error *err) {
    const char *name = dbc->name ? dbc->name : "";
    keel_status st = keel__settings_check_network(dbc, PG_ENGINE, err);
    if (st != KEEL_OK || dbc->noptions == 0)
        return st;
    PQconninfoOption *known = PQconndefaults();
    if (!known)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, name, "out of memory");
    for (size_t i = 0; i < dbc->noptions && st == KEEL_OK; i++) {
        const char *key = dbc->options[i].key;
        const char *val = dbc->options[i].value ? dbc->options[i].value : "";
        if (strcmp(key, "statement_cache_size") == 0) {
            /* keel's own option, not libpq's. 0 is required behind a pooler that hands each
             * transaction a different server session (pgbouncer in transaction mode), or that
             * runs DISCARD ALL between clients: named prepared statements live in the session. */
            if (!pg_is_uint(val) || strlen(val) > 5 || atoi(val) > PG_CACHE_MAX)
                st = keel__error_set(err, KEEL_ERR_CONFIG, PG_ENGINE, name,
                                     "databases.%s.options.statement_cache_size: invalid value "
                                     "\"%s\" (expected an integer from 0 to %d; 0 disables "
                                     "prepared statements, as needed behind pgbouncer in "
                                     "transaction mode)",
                                     name, val, PG_CACHE_MAX);
            continue;
        }
        for (size_t r = 0; r < sizeof pg_reserved / sizeof pg_reserved[0]; r++)
            if (strcmp(key, pg_reserved[r].key) == 0)
                st = keel__error_set(err, KEEL_ERR_CONFIG, PG_ENGINE, name,
                                     "databases.%s.options.%s: %s", name, key, pg_reserved[r].why);
        if (st != KEEL_OK)
            break;
        int found = 0;
        for (PQconninfoOption *o = known; o->keyword; o++)
            if (strcmp(o->keyword, key) == 0)
                found = 1;
        if (!found) {
            st = keel__error_set(err, KEEL_ERR_CONFIG, PG_ENGINE, name,
                                 "databases.%s.options.%s: unknown PostgreSQL connection option",
                                 name, key);
            break;
        }
        const char *problem = pg_option_value_problem(key, val);
        if (problem)
            st = keel__error_set(err, KEEL_ERR_CONFIG, PG_ENGINE, name,
                                 "databases.%s.options.%s: invalid value \"%s\" (expected %s)",
                                 name, key, val, problem);
    }
    PQconninfoFree(known);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Connecting                                                                               */

/* Wipes and frees the connection keywords: they may hold the password. */
static void pg_kw_free(pg_impl *p) {
    for (size_t i = 0; i < p->nkw; i++) {
        if (p->kw_vals[i]) {
            explicit_bzero(p->kw_vals[i], strlen(p->kw_vals[i]));
            free(p->kw_vals[i]);
        }
    }
    free(p->kw_keys);
    free(p->kw_vals);
    p->kw_keys = NULL;
    p->kw_vals = NULL;
    p->nkw = 0;
}

static keel_status pg_kw_add(pg_impl *p, const char *key, char *val, keel_error *err) {
    if (!val)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    p->kw_keys[p->nkw] = key;
    p->kw_vals[p->nkw] = val;
    p->nkw++;
    return KEEL_OK;
}

/* Resolves a config value, which may reference a secret, and adds it as a keyword. */
static keel_status pg_kw_resolve(pg_impl *p, const char *key, const char *value, const char *field,
                                 keel_error *err) {
    char *out = NULL;
    keel_status st = keel__settings_resolve(p->c->config, field, value, &out, err);
    if (st != KEEL_OK)
        return st;
    return pg_kw_add(p, key, out, err);
}

/* Builds every connection keyword from the config, resolving secret references now. */
static keel_status pg_build_keywords(pg_impl *p, keel_error *err) {
    const keel__dbconfig *dbc = p->c->config;
    size_t cap = dbc->noptions + 10;
    p->kw_keys = calloc(cap, sizeof *p->kw_keys);
    p->kw_vals = calloc(cap, sizeof *p->kw_vals);
    p->kw_host = SIZE_MAX;
    p->cache_cap = PG_CACHE_DEFAULT;
    if (!p->kw_keys || !p->kw_vals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    keel_status st = KEEL_OK;
    if (dbc->host) {
        p->kw_host = p->nkw;
        st = pg_kw_resolve(p, "host", dbc->host, "host", err);
    }
    if (st == KEEL_OK && dbc->port > 0) {
        char port[16];
        snprintf(port, sizeof port, "%d", dbc->port);
        st = pg_kw_add(p, "port", strdup(port), err);
    }
    if (st == KEEL_OK && dbc->database)
        st = pg_kw_resolve(p, "dbname", dbc->database, "database", err);
    if (st == KEEL_OK && dbc->user)
        st = pg_kw_resolve(p, "user", dbc->user, "user", err);
    if (st == KEEL_OK && dbc->password)
        st = pg_kw_resolve(p, "password", dbc->password, "password", err);
    if (st == KEEL_OK)
        st = pg_kw_add(p, "client_encoding", strdup("UTF8"), err);
    if (st == KEEL_OK)
        st = pg_kw_add(p, "fallback_application_name", strdup("keel"), err);
    for (size_t i = 0; st == KEEL_OK && i < dbc->noptions; i++) {
        const char *key = dbc->options[i].key;
        char *v = NULL;
        st = keel__settings_resolve_option(dbc, &dbc->options[i], &v, err);
        if (st != KEEL_OK)
            break;
        if (strcmp(key, "statement_cache_size") == 0) {
            /* Checked by pg_check_config; a keel option that libpq must not see. */
            p->cache_cap = (size_t)atoi(v);
            free(v);
            continue;
        }
        if (strcmp(key, "connect_timeout") == 0) {
            /* keel enforces the connect deadline itself; libpq only does in blocking mode. */
            if (dbc->connect_timeout <= 0) {
                double d = keel__strtod(v, NULL);
                if (d > 0)
                    p->timeout_s = d;
            }
            free(v);
            continue;
        }
        st = pg_kw_add(p, key, v, err);
    }
    if (st == KEEL_OK) {
        const char *host = p->kw_host != SIZE_MAX ? p->kw_vals[p->kw_host] : NULL;
        snprintf(p->where, sizeof p->where, "host %s, port %d", host && *host ? host : "(default)",
                 dbc->port > 0 ? dbc->port : 5432);
    }
    return st;
}

/* True when an entry of a host list needs no name lookup (a socket directory or an address). */
static int pg_host_is_literal(const char *h, size_t n) {
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];
    if (n == 0 || h[0] == '/' || h[0] == '@')
        return 1;
    if (n >= sizeof tmp)
        return 0;
    memcpy(tmp, h, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}

static int pg_needs_dns(const char *hosts) {
    for (const char *s = hosts;;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (!pg_host_is_literal(s, n))
            return 1;
        if (!e)
            return 0;
        s = e + 1;
    }
}

/* True when keel looks up an entry of a host list itself rather than handing it to libpq. */
static int pg_host_lookup(const char *h, size_t n) {
    return !pg_host_is_literal(h, n) && n <= PG_HOST_NAME_MAX;
}

/* A lookup job for the names of a host list; NULL when out of memory. */
static keel__dns *pg_dns_job(const char *hosts) {
    keel__dns *d = keel__dns_new();
    if (!d)
        return NULL;
    for (const char *s = hosts;;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (pg_host_lookup(s, n) && keel__dns_add(d, s, n) != 0) {
            keel__dns_free(d);
            return NULL;
        }
        if (!e)
            break;
        s = e + 1;
    }
    return d;
}

/*
 * Appends one host/hostaddr pair to the lists. The separators follow the host list: an empty
 * hostaddr entry (a literal address first) still counts as one. 0, or -1 when out of memory.
 */
static int pg_dns_pair(keel__buf *out_host, keel__buf *out_addr, const char *host, size_t hn,
                       const char *addr) {
    int more = out_host->len > 0;
    if ((more && keel__buf_putc(out_host, ',') != 0) || keel__buf_append(out_host, host, hn) != 0 ||
        (more && keel__buf_putc(out_addr, ',') != 0) || keel__buf_puts(out_addr, addr) != 0)
        return -1;
    return 0;
}

/*
 * The host and hostaddr lists for libpq from what the lookups found. Every address becomes its
 * own host/hostaddr pair, so libpq still tries them in turn while verifying certificates
 * against the name; entries keel did not look up go with an empty hostaddr, and a name that
 * could not be looked up is left out. 0, or -1 when out of memory.
 */
static int pg_dns_pairs(const char *hosts, const keel__dns_result *r, keel__buf *out_host,
                        keel__buf *out_addr) {
    size_t k = 0;
    for (const char *s = hosts;;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (!pg_host_lookup(s, n)) {
            if (pg_dns_pair(out_host, out_addr, s, n, "") != 0)
                return -1;
        } else if (k < r->nnames) {
            const keel__dns_addrs *found = &r->found[k++];
            for (size_t i = 0; i < found->n; i++)
                if (pg_dns_pair(out_host, out_addr, s, n, found->addr[i]) != 0)
                    return -1;
        }
        if (!e)
            return 0;
        s = e + 1;
    }
}

/* Frees the resources of the connect phase and leaves the connection waiting for close. */
static void pg_connect_failed(pg_impl *p, const keel_error *e) {
    keel_error copy = *e;
    p->phase = PG_DEAD;
    keel__watch_free(p->watch);
    p->watch = NULL;
    keel__timer_free(p->timer);
    p->timer = NULL;
    keel__dns_abandon(p->dns);
    p->dns = NULL;
    keel__conn_connected(p->c, &copy);
}

/*
 * Watches the connection socket for events. During the handshake libpq may close its socket
 * and open another (next address, SSL or GSS retry) that can get the same descriptor number,
 * which an epoll or asyncio host would not notice; a fresh watch per step is always right.
 */
static int pg_rewatch(pg_impl *p, int events) {
    keel__watch_free(p->watch);
    p->watch = NULL;
    int fd = PQsocket(p->pg);
    if (fd < 0)
        return -1;
    p->watch = keel__watch_new(p->c->loop, fd, pg_on_ready, p);
    if (!p->watch)
        return -1;
    return keel__watch_set(p->watch, events);
}

static void pg_notice_ignore(void *arg, const PGresult *res) {
    /* Notices (e.g. "table does not exist, skipping") are not errors; a library must not
     * print them to the host's stderr as libpq's default receiver does. */
    (void)arg;
    (void)res;
}

/* Hands the keywords to libpq and starts the handshake. Wipes the keywords either way. */
static keel_status pg_start_libpq(pg_impl *p, keel_error *err) {
    p->kw_keys[p->nkw] = NULL;
    p->kw_vals[p->nkw] = NULL;
    p->pg = PQconnectStartParams(p->kw_keys, (const char *const *)p->kw_vals, 0);
    pg_kw_free(p);
    if (!p->pg)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    PQsetNoticeReceiver(p->pg, pg_notice_ignore, NULL);
    if (PQstatus(p->pg) == CONNECTION_BAD)
        return pg_connect_error(p, err, KEEL_ERR_CONNECT);
    p->phase = PG_CONNECTING;
    /* libpq's first poll ran inside PQconnectStartParams: it now waits to write. */
    if (pg_rewatch(p, KEEL_WRITE) != 0)
        return keel__error_set(err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(p->c),
                               "the event loop refused to watch the connection to %s", p->where);
    return KEEL_OK;
}

/* On the loop thread, after the lookups: continue the connect with the addresses. */
static void pg_dns_done(void *arg, keel__dns_result *r) {
    pg_impl *p = arg;
    p->dns = NULL;
    keel_error err;
    keel_error_clear(&err);
    keel_status st = KEEL_OK;
    keel__buf host = { 0 }, addr = { 0 };
    if (r->oom || pg_dns_pairs(p->kw_vals[p->kw_host], r, &host, &addr) != 0) {
        st = keel__error_set(&err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    } else if (host.len == 0) {
        st = keel__error_set(&err, KEEL_ERR_CONNECT, PG_ENGINE, pg_dbname(p->c), "%s",
                             r->message[0] ? r->message : "no address found for the host");
    } else {
        /* The buffers' memory passes to the keywords. */
        free(p->kw_vals[p->kw_host]);
        p->kw_vals[p->kw_host] = host.data;
        host.data = NULL;
        p->resolved = 1;
        st = pg_kw_add(p, "hostaddr", addr.data, &err);
        addr.data = NULL;
        if (st == KEEL_OK)
            st = pg_start_libpq(p, &err);
    }
    keel__buf_free(&host);
    keel__buf_free(&addr);
    if (st != KEEL_OK)
        pg_connect_failed(p, &err);
}

static void pg_on_timeout(void *arg) {
    pg_impl *p = arg;
    keel_error err;
    keel__error_set(&err, KEEL_ERR_TIMEOUT, PG_ENGINE, pg_dbname(p->c),
                    "connecting to PostgreSQL at %s timed out after %g s", p->where, p->timeout_s);
    pg_connect_failed(p, &err);
}

/* The handshake is over and the session is set up: the connection is ready. */
static void pg_ready(pg_impl *p) {
    keel__timer_free(p->timer);
    p->timer = NULL;
    p->phase = PG_IDLE;
    if (keel__watch_set(p->watch, KEEL_READ) != 0) {
        keel_error err;
        keel__error_set(&err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(p->c),
                        "the event loop refused to watch the connection to %s", p->where);
        pg_connect_failed(p, &err);
        return;
    }
    keel__conn_connected(p->c, NULL);
}

static void pg_op_reset(pg_impl *p) {
    p->op_seq++;
    p->failed = 0;
    p->flush_pending = 0;
    p->copy_out = 0;
    keel_error_clear(&p->err);
    pg_drop_result(p);
}

/* Flushes what a send queued and watches for what comes next. 0, or -1 when the socket died. */
static int pg_after_send(pg_impl *p) {
    int r = PQflush(p->pg);
    if (r < 0)
        return -1;
    p->flush_pending = r;
    return keel__watch_set(p->watch, KEEL_READ | (r ? KEEL_WRITE : 0)) == 0 ? 0 : -1;
}

/*
 * Decoding relies on DateStyle ISO and integer timestamps. The session setting is checked
 * rather than forced through the startup "options" keyword, which poolers such as pgbouncer
 * reject.
 */
static void pg_handshake_done(pg_impl *p) {
    keel_error err;
    /* Only now: PQsetnonblocking clears the error text, which during the handshake holds the
     * host and port of the attempt in progress. The handshake itself never blocks. */
    if (PQsetnonblocking(p->pg, 1) != 0) {
        pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        pg_connect_failed(p, &err);
        return;
    }
    const char *idt = PQparameterStatus(p->pg, "integer_datetimes");
    if (idt && strcmp(idt, "on") != 0) {
        keel__error_set(&err, KEEL_ERR_UNSUPPORTED, PG_ENGINE, pg_dbname(p->c),
                        "the server at %s uses floating-point timestamps (integer_datetimes "
                        "off), which keel does not support",
                        p->where);
        pg_connect_failed(p, &err);
        return;
    }
    const char *ds = PQparameterStatus(p->pg, "DateStyle");
    if (ds && strncmp(ds, "ISO", 3) == 0) {
        pg_ready(p);
        return;
    }
    pg_op_reset(p);
    p->phase = PG_SETUP;
    if (!PQsendQuery(p->pg, "SET DateStyle = ISO") || pg_after_send(p) != 0) {
        pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        pg_connect_failed(p, &err);
    }
}

static void pg_connect_step(pg_impl *p) {
    keel_error err;
    switch (PQconnectPoll(p->pg)) {
    case PGRES_POLLING_READING:
        if (pg_rewatch(p, KEEL_READ) == 0)
            return;
        break;
    case PGRES_POLLING_WRITING:
        if (pg_rewatch(p, KEEL_WRITE) == 0)
            return;
        break;
    case PGRES_POLLING_OK:
        pg_handshake_done(p);
        return;
    default:
        pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        pg_connect_failed(p, &err);
        return;
    }
    keel__error_set(&err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(p->c),
                    "the event loop refused to watch the connection to %s", p->where);
    pg_connect_failed(p, &err);
}

static void pg_destroy(pg_impl *p) {
    keel__dns_abandon(p->dns);
    keel__cancel_stop(&p->cancel);
    keel__watch_free(p->watch);
    keel__timer_free(p->timer);
    keel_result_free(p->res);
    free(p->kinds);
    if (p->pg)
        PQfinish(p->pg);
    pg_kw_free(p);
    free(p->bvals);
    free(p->pvals);
    free(p->plens);
    free(p->pfmts);
    free(p->ptypes);
    keel__buf_free(&p->ptext);
    keel__buf_free(&p->sqlbuf);
    keel__buf_free(&p->pbin);
    while (p->mru) {
        pg_stmt *e = p->mru;
        p->mru = e->next;
        free(e->sql);
        free(e->types);
        free(e);
    }
    free(p->dpend);
    pg_copy_free(p);
    free(p);
}

static keel_status pg_connect(keel_conn *c, keel_error *err) {
    pg_impl *p = calloc(1, sizeof *p);
    if (!p)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
    p->c = c;
    p->phase = PG_CONNECTING;
    keel__cancel_init(&p->cancel, c->loop, &pg_cancel_ops, p);
    p->timeout_s = c->config->connect_timeout > 0 ? c->config->connect_timeout : 0;
    keel_status st = pg_build_keywords(p, err);
    if (st != KEEL_OK) {
        pg_destroy(p);
        return st;
    }
    if (p->timeout_s <= 0)
        p->timeout_s = PG_DEFAULT_TIMEOUT_S;
    p->timer = keel__timer_new(c->loop, pg_on_timeout, p);
    if (!p->timer ||
        keel__timer_arm(p->timer, keel_now_ms() + (int64_t)(p->timeout_s * 1000.0 + 0.5)) != 0) {
        pg_destroy(p);
        return keel__error_set(err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(c),
                               "the event loop refused the connect timer");
    }
    int has_hostaddr = 0;
    for (size_t i = 0; i < p->nkw; i++)
        if (strcmp(p->kw_keys[i], "hostaddr") == 0)
            has_hostaddr = 1;
    const char *host = p->kw_host != SIZE_MAX ? p->kw_vals[p->kw_host] : NULL;
    keel__workers *workers = NULL;
    if (host && !has_hostaddr && pg_needs_dns(host))
        workers = keel__conn_workers(c);
    /* Without a worker pool (out of memory) libpq resolves the name itself, blocking briefly. */
    if (workers) {
        keel__dns *d = pg_dns_job(host);
        if (!d) {
            pg_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
        }
        if (keel__dns_submit(d, workers, pg_dns_done, p) == 0) {
            p->dns = d;
            p->phase = PG_RESOLVING;
            c->impl = p;
            return KEEL_OK;
        }
        keel__dns_free(d);
    }
    st = pg_start_libpq(p, err);
    if (st != KEEL_OK) {
        pg_destroy(p);
        return st;
    }
    c->impl = p;
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Parameters                                                                               */

static keel_status pg_param_error(pg_impl *p, keel_error *err, keel_status code, size_t i,
                                  const char *what) {
    return keel__error_set(err, code, PG_ENGINE, pg_dbname(p->c), "parameter $%zu: %s", i + 1,
                           what);
}

/* Bytes of text a parameter needs in the encode buffer, or SIZE_MAX for an invalid value. */
static size_t pg_param_room(const keel_value *v) {
    switch (v->type) {
    case KEEL_TYPE_NULL:
    case KEEL_TYPE_BYTES:
        return 0;
    case KEEL_TYPE_BOOL:
        return 2;
    case KEEL_TYPE_INT:
        return 24;
    case KEEL_TYPE_FLOAT:
        return 32;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_JSON:
        return v->u.str.len + 1;
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        return KEEL__TIME_TEXT_MAX;
    case KEEL_TYPE_UUID:
        return KEEL__UUID_TEXT_MAX;
    case KEEL_TYPE_DOCUMENT: /* BSON has no PostgreSQL type */
        return SIZE_MAX;
    }
    return SIZE_MAX;
}

/* Checks what libpq cannot carry: unknown types, and NUL bytes inside text. */
static keel_status pg_param_check(pg_impl *p, const keel_value *v, size_t i, keel_error *err) {
    if (pg_param_room(v) == SIZE_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              v->type == KEEL_TYPE_DOCUMENT
                                  ? "a BSON document is not a PostgreSQL value; pass JSON instead"
                                  : "unknown value type");
    if ((v->type == KEEL_TYPE_TEXT || v->type == KEEL_TYPE_NUMERIC || v->type == KEEL_TYPE_JSON) &&
        v->u.str.len && (!v->u.str.ptr || memchr(v->u.str.ptr, '\0', v->u.str.len)))
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              "text contains a NUL byte, which PostgreSQL cannot store");
    if (v->type == KEEL_TYPE_BYTES && v->u.str.len > INT32_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "bytes longer than 2 GiB");
    return KEEL_OK;
}

static int pg_param_grow(pg_impl *p, size_t n) {
    if (n <= p->pcap)
        return 0;
    const char **vals = realloc(p->pvals, n * sizeof *vals);
    if (vals)
        p->pvals = vals;
    int *lens = realloc(p->plens, n * sizeof *lens);
    if (lens)
        p->plens = lens;
    int *fmts = realloc(p->pfmts, n * sizeof *fmts);
    if (fmts)
        p->pfmts = fmts;
    Oid *types = realloc(p->ptypes, n * sizeof *types);
    if (types)
        p->ptypes = types;
    if (!vals || !lens || !fmts || !types)
        return -1;
    p->pcap = n;
    return 0;
}

/* The parameter type keel declares for a value sent in binary (see keel__pgc_param). */
static Oid pg_param_oid(keel_type t) {
    switch (t) {
    case KEEL_TYPE_BOOL:
        return PG_OID_BOOL;
    case KEEL_TYPE_INT:
        return PG_OID_INT8;
    case KEEL_TYPE_FLOAT:
        return PG_OID_FLOAT8;
    case KEEL_TYPE_DATE:
        return PG_OID_DATE;
    case KEEL_TYPE_TIME:
        return PG_OID_TIME;
    case KEEL_TYPE_TIMESTAMP:
        return PG_OID_TIMESTAMP;
    case KEEL_TYPE_TIMESTAMPTZ:
        return PG_OID_TIMESTAMPTZ;
    case KEEL_TYPE_UUID:
        return PG_OID_UUID;
    default:
        return 0;
    }
}

/*
 * Encodes one row of parameters into the connection's reusable arrays. Every value whose type
 * keel declares (bool, int8, float8, date, time, timestamps, uuid) goes in binary, which the
 * server reads without parsing text (a batch of inserts spends much of its server time parsing
 * timestamps and numbers otherwise); bytes go in binary too, so they need no escaping. Text,
 * JSON and numeric go as text. Values must have passed pg_param_check.
 */
static keel_status pg_encode(pg_impl *p, const keel_value *v, size_t n, keel_error *err) {
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += pg_param_room(&v[i]);
    keel__buf_reset(&p->ptext);
    if (pg_param_grow(p, n) != 0 || (need && keel__buf_reserve(&p->ptext, need) != 0))
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    char *out = p->ptext.data;
    size_t used = 0, wire = 0;
    for (size_t i = 0; i < n; i++) {
        char *s = out ? out + used : NULL;
        size_t len = 0;
        Oid type = 0;
        p->pfmts[i] = 0;
        /* The room reserved for the text form holds the binary form too. */
        size_t blen = s ? keel__pgc_param(&v[i], s) : 0;
        if (blen) {
            p->pvals[i] = s;
            p->plens[i] = (int)blen;
            p->pfmts[i] = 1;
            p->ptypes[i] = pg_param_oid(v[i].type);
            used += blen;
            wire += blen;
            continue;
        }
        switch (v[i].type) {
        case KEEL_TYPE_NULL:
        case KEEL_TYPE_DOCUMENT: /* rejected by pg_param_check before encoding */
            p->pvals[i] = NULL;
            p->plens[i] = 0;
            p->ptypes[i] = 0;
            continue;
        case KEEL_TYPE_BYTES:
            p->pvals[i] = v[i].u.str.ptr ? v[i].u.str.ptr : "";
            p->plens[i] = (int)v[i].u.str.len;
            p->pfmts[i] = 1;
            p->ptypes[i] = PG_OID_BYTEA;
            wire += v[i].u.str.len;
            continue;
        case KEEL_TYPE_BOOL:
            s[0] = v[i].u.boolean ? 't' : 'f';
            s[1] = '\0';
            len = 1;
            type = PG_OID_BOOL;
            break;
        case KEEL_TYPE_INT:
            len = pg_format_int(v[i].u.i64, s);
            type = PG_OID_INT8;
            break;
        case KEEL_TYPE_FLOAT:
            len = keel__format_double(v[i].u.f64, s, 32);
            type = PG_OID_FLOAT8;
            break;
        case KEEL_TYPE_NUMERIC:
        case KEEL_TYPE_TEXT:
        case KEEL_TYPE_JSON:
            /* Text and JSON go as "unknown" so the server takes the type from the context
             * (an int column, json or jsonb); libpq needs them NUL-terminated. */
            len = v[i].u.str.len;
            if (len)
                memcpy(s, v[i].u.str.ptr, len);
            s[len] = '\0';
            type = v[i].type == KEEL_TYPE_NUMERIC ? PG_OID_NUMERIC : 0;
            break;
        case KEEL_TYPE_DATE:
            len = keel__format_date(v[i].u.date, s);
            type = PG_OID_DATE;
            break;
        case KEEL_TYPE_TIME:
            len = keel__format_time(v[i].u.micros, s);
            type = PG_OID_TIME;
            break;
        case KEEL_TYPE_TIMESTAMP:
            len = keel__format_timestamp(v[i].u.micros, s);
            type = PG_OID_TIMESTAMP;
            break;
        case KEEL_TYPE_TIMESTAMPTZ:
            len = keel__format_timestamptz(v[i].u.micros, s);
            type = PG_OID_TIMESTAMPTZ;
            break;
        case KEEL_TYPE_UUID:
            keel__format_uuid(v[i].u.uuid, s);
            len = 36;
            type = PG_OID_UUID;
            break;
        }
        p->pvals[i] = s;
        p->plens[i] = (int)len;
        p->ptypes[i] = type;
        used += len + 1;
        wire += len;
    }
    p->pbytes = wire;
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                  */

static keel_type pg_type_of(Oid oid) {
    switch (oid) {
    case PG_OID_BOOL:
        return KEEL_TYPE_BOOL;
    case PG_OID_INT2:
    case PG_OID_INT4:
    case PG_OID_INT8:
    case PG_OID_OID:
        return KEEL_TYPE_INT;
    case PG_OID_FLOAT4:
    case PG_OID_FLOAT8:
        return KEEL_TYPE_FLOAT;
    case PG_OID_NUMERIC:
        return KEEL_TYPE_NUMERIC;
    case PG_OID_BYTEA:
        return KEEL_TYPE_BYTES;
    case PG_OID_DATE:
        return KEEL_TYPE_DATE;
    case PG_OID_TIME:
        return KEEL_TYPE_TIME;
    case PG_OID_TIMESTAMP:
        return KEEL_TYPE_TIMESTAMP;
    case PG_OID_TIMESTAMPTZ:
        return KEEL_TYPE_TIMESTAMPTZ;
    case PG_OID_UUID:
        return KEEL_TYPE_UUID;
    case PG_OID_JSON:
    case PG_OID_JSONB:
        return KEEL_TYPE_JSON;
    default:
        /* text, varchar, char, name, and everything keel has no type for (enums, inet, timetz,
         * intervals, arrays) arrive as their text form. */
        return KEEL_TYPE_TEXT;
    }
}

static int pg_hex(unsigned char ch) {
    if ((unsigned)(ch - '0') < 10u)
        return ch - '0';
    ch |= 0x20;
    if ((unsigned)(ch - 'a') < 6u)
        return ch - 'a' + 10;
    return -1;
}

/* Decodes bytea text (hex "\x…", or the older escape format). 0, -1 malformed, -2 no memory. */
static int pg_decode_bytea(keel_result *res, const char *s, size_t n, keel_value *v) {
    unsigned char *out;
    size_t m = 0;
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((n - 2) % 2)
            return -1;
        m = (n - 2) / 2;
        out = (unsigned char *)keel__result_alloc(res, m);
        if (!out)
            return -2;
        const unsigned char *h = (const unsigned char *)s + 2;
        for (size_t i = 0; i < m; i++) {
            int hi = pg_hex(h[2 * i]), lo = pg_hex(h[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            out[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < n; m++) {
            if (s[i] != '\\')
                i++;
            else if (i + 1 < n && s[i + 1] == '\\')
                i += 2;
            else if (i + 4 <= n)
                i += 4;
            else
                return -1;
        }
        out = (unsigned char *)keel__result_alloc(res, m);
        if (!out)
            return -2;
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            if (s[i] != '\\') {
                out[o++] = (unsigned char)s[i++];
            } else if (s[i + 1] == '\\') {
                out[o++] = '\\';
                i += 2;
            } else {
                unsigned a = (unsigned)s[i + 1] - '0', b = (unsigned)s[i + 2] - '0',
                         c = (unsigned)s[i + 3] - '0';
                if (a > 3 || b > 7 || c > 7)
                    return -1;
                out[o++] = (unsigned char)(a << 6 | b << 3 | c);
                i += 4;
            }
        }
    }
    v->type = KEEL_TYPE_BYTES;
    v->u.str.ptr = (const char *)out;
    v->u.str.len = m;
    return 0;
}

/*
 * Decodes one value of column kind t. Text the decoder does not recognise (dates such as
 * "infinity", a DateStyle changed by the user) is returned as TEXT rather than failing the
 * whole result. -1 when out of memory.
 */
static int pg_decode_value(keel_result *res, keel_type t, const char *s, size_t n, keel_value *v) {
    switch (t) {
    case KEEL_TYPE_BOOL:
        v->type = KEEL_TYPE_BOOL;
        v->u.boolean = s[0] == 't';
        return 0;
    case KEEL_TYPE_INT:
        if (keel__parse_int64(s, n, &v->u.i64) == 0) {
            v->type = KEEL_TYPE_INT;
            return 0;
        }
        break;
    case KEEL_TYPE_FLOAT:
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = keel__strtod(s, NULL);
        return 0;
    case KEEL_TYPE_BYTES: {
        int r = pg_decode_bytea(res, s, n, v);
        if (r != -1)
            return r == 0 ? 0 : -1;
        break;
    }
    case KEEL_TYPE_DATE:
        if (keel__parse_date(s, n, &v->u.date) == 0) {
            v->type = KEEL_TYPE_DATE;
            return 0;
        }
        break;
    case KEEL_TYPE_TIME:
        if (keel__parse_time(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIME;
            return 0;
        }
        break;
    case KEEL_TYPE_TIMESTAMP:
        if (keel__parse_timestamp(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMP;
            return 0;
        }
        break;
    case KEEL_TYPE_TIMESTAMPTZ:
        if (keel__parse_timestamptz(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMPTZ;
            return 0;
        }
        break;
    case KEEL_TYPE_UUID:
        if (keel__parse_uuid(s, n, v->u.uuid) == 0) {
            v->type = KEEL_TYPE_UUID;
            return 0;
        }
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_JSON:
        return keel__result_set_text(res, v, t, s, n);
    default:
        break;
    }
    return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
}

/* Forgets the running statement's result. */
static void pg_drop_result(pg_impl *p) {
    keel_result_free(p->res);
    p->res = NULL;
    p->affected = -1;
    p->rows_seen = p->in_set = p->stream = 0;
}

/* A result with r's columns as p->res. 0, or -1 when out of memory. */
static int pg_start_result(pg_impl *p, const PGresult *r) {
    size_t ncols = (size_t)PQnfields(r);
    if (ncols > p->kinds_cap) {
        keel_type *k = realloc(p->kinds, ncols * sizeof *k);
        if (!k)
            return -1;
        p->kinds = k;
        p->kinds_cap = ncols;
    }
    p->res = keel__result_new(ncols);
    if (!p->res)
        return -1;
    for (size_t col = 0; col < ncols; col++) {
        const char *name = PQfname(r, (int)col);
        p->kinds[col] = pg_type_of(PQftype(r, (int)col));
        if (keel__result_set_column(p->res, col, name, strlen(name), p->kinds[col]) != 0)
            return -1;
    }
    return 0;
}

/* Hands the rows decoded so far to the consumer of a streamed statement. */
static void pg_stream_rows(pg_impl *p) {
    if (!p->stream || p->failed || !p->res || keel_result_nrows(p->res) == 0)
        return;
    keel__conn_rows(p->c, p->res);
    keel__result_clear_rows(p->res);
}

/* Appends the rows of r (a whole result, or one row in single-row mode) to p->res, which
 * takes r's columns when it has none yet. 0, or -1 when out of memory. */
static int pg_add_rows(pg_impl *p, const PGresult *r) {
    if (!p->res && pg_start_result(p, r) != 0)
        return -1;
    keel_result *res = p->res;
    size_t ncols = keel_result_ncols(res), nrows = (size_t)PQntuples(r);
    const keel_type *kinds = p->kinds;
    /* Only whole results reserve: rows that come one by one grow the result geometrically. */
    if (nrows > 1 && keel__result_reserve(res, nrows) != 0)
        return -1;
    for (size_t row = 0; row < nrows; row++) {
        keel_value *vals = keel__result_add_row(res);
        if (!vals)
            return -1;
        for (size_t col = 0; col < ncols; col++) {
            if (PQgetisnull(r, (int)row, (int)col))
                continue;
            if (pg_decode_value(res, kinds[col], PQgetvalue(r, (int)row, (int)col),
                                (size_t)PQgetlength(r, (int)row, (int)col), &vals[col]) != 0)
                return -1;
        }
    }
    if (p->stream && keel_result_nrows(res) >= PG_STREAM_BATCH_ROWS)
        pg_stream_rows(p);
    return 0;
}

/*
 * Takes in, and frees, a successful result of the running statement (rows, one row of
 * single-row mode, or a command's completion): its rows are decoded now. The last statement
 * that returned rows is the result, else the last command.
 */
static void pg_take(pg_impl *p, PGresult *r) {
    if (p->failed) {
        PQclear(r);
        return;
    }
    int rc = 0;
    switch (PQresultStatus(r)) {
    case PGRES_SINGLE_TUPLE:
        if (!p->in_set) {
            /* A statement's rows begin: they replace an earlier statement's. */
            keel_result_free(p->res);
            p->res = NULL;
            p->in_set = 1;
        }
        rc = pg_add_rows(p, r);
        break;
    case PGRES_TUPLES_OK:
        /* The end of single-row results (no rows of its own), or a whole result. */
        if (!p->in_set) {
            keel_result_free(p->res);
            p->res = NULL;
        }
        p->in_set = 0;
        rc = pg_add_rows(p, r);
        p->affected = pg_affected(r);
        p->rows_seen = 1;
        break;
    default: /* PGRES_COMMAND_OK, PGRES_EMPTY_QUERY */
        if (!p->rows_seen)
            p->affected = pg_affected(r);
        break;
    }
    PQclear(r);
    if (rc != 0)
        pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory decoding a result");
}

/* Fills err from a failed PGresult; row >= 0 names the batch row it belongs to. */
static void pg_result_error(pg_impl *p, const PGresult *r, long row, keel_error *err) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    int bad = PQstatus(p->pg) == CONNECTION_BAD;
    if (!primary || !*primary)
        primary = PQresultErrorMessage(r);
    if (!primary || !*primary)
        primary = PQerrorMessage(p->pg);
    char raw[KEEL_ERROR_MESSAGE_MAX * 2];
    int n = 0;
    if (row >= 0)
        n = snprintf(raw, sizeof raw, "row %ld: ", row);
    if (detail && *detail)
        snprintf(raw + n, sizeof raw - (size_t)n, "%s DETAIL: %s", primary, detail);
    else
        snprintf(raw + n, sizeof raw - (size_t)n, "%s", primary);
    keel_status code;
    if (state && strcmp(state, "08P01") == 0 && strstr(primary, "bind message supplies"))
        code = KEEL_ERR_PARAMETERS;
    else if (bad)
        code = KEEL_ERR_CONNECTION_LOST;
    else if (state && strlen(state) == 5)
        code = keel__status_from_sqlstate(state);
    else
        code = KEEL_ERR_DATABASE;
    if (bad)
        p->c->broken = 1;
    pg_error_libpq(err, code, p->c, NULL, raw);
    keel__error_set_sqlstate(err, state);
}

/* ---------------------------------------------------------------------------------------- */
/* Running operations                                                                       */

static const char *pg_sql(pg_impl *p, const keel_conn *c, const char *sql, size_t len) {
    /* The core hands its own statement buffer, which is NUL-terminated; others are copied. */
    if (sql == c->sql.data)
        return sql;
    keel__buf_reset(&p->sqlbuf);
    if (keel__buf_append(&p->sqlbuf, sql, len) != 0 || keel__buf_putc(&p->sqlbuf, '\0') != 0)
        return NULL;
    return p->sqlbuf.data;
}

static void pg_batch_clear(pg_impl *p) {
    pg_copy_clear(p); /* every path that ends a batch ends a bulk load too */
    free(p->bvals);
    p->bvals = NULL;
    p->btypes = NULL;
    p->bprep = NULL;
    p->brows = p->bnparams = p->bsent = p->bdone = 0;
    p->bgot = p->bprepared = p->bsynced = 0;
    p->baffected = 0;
}

/*
 * The server went away (or libpq failed) during an operation: it ends with CONNECTION_LOST
 * and the connection is unusable.
 */
static void pg_lost(pg_impl *p) {
    keel_conn *c = p->c;
    pg_phase was = p->phase;
    keel_error err;
    if (was == PG_SETUP)
        pg_connect_error(p, &err, KEEL_ERR_CONNECT);
    else
        pg_error_libpq(&err, KEEL_ERR_CONNECTION_LOST, c,
                       "connection lost: ", PQerrorMessage(p->pg));
    c->broken = 1;
    p->phase = PG_DEAD;
    pg_drop_result(p);
    pg_batch_clear(p);
    if (p->watch)
        keel__watch_set(p->watch, 0);
    if (was == PG_SETUP) {
        pg_connect_failed(p, &err);
        return;
    }
    keel__conn_complete(c, NULL, &err);
}

/* The operation's results are all in: report them (this is the last thing done with p). */
static void pg_finish(pg_impl *p) {
    keel_conn *c = p->c;
    if (PQstatus(p->pg) == CONNECTION_BAD) {
        pg_lost(p);
        return;
    }
    /* A cancel request still in flight could stop the next statement: the end is reported
     * once it has returned (pg_cancel_settled). */
    if (p->phase != PG_SETUP && keel__cancel_hold(&p->cancel)) {
        p->held = p->phase;
        p->phase = PG_HELD;
        keel__watch_set(p->watch, 0);
        return;
    }
    pg_phase was = p->phase;
    p->phase = PG_IDLE;
    p->flush_pending = 0;
    if (keel__watch_set(p->watch, KEEL_READ) != 0 && !p->failed) {
        keel__error_set(&p->err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(c),
                        "the event loop refused to watch the connection");
        p->failed = 1;
        c->broken = 1;
    }
    if (was == PG_SETUP) {
        pg_drop_result(p);
        if (p->failed) {
            keel_error e = p->err;
            e.code = KEEL_ERR_CONNECT;
            pg_connect_failed(p, &e);
            return;
        }
        pg_ready(p);
        return;
    }
    keel_result *res = NULL;
    if (!p->failed) {
        keel_status st;
        if (was == PG_BATCH) {
            res = keel__result_new(0);
            if (res)
                keel__result_set_affected(res, p->baffected);
            st = res ? KEEL_OK
                     : keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c),
                                       "out of memory");
        } else {
            /* A statement without rows (or without any result) has no columns. */
            res = p->res ? p->res : keel__result_new(0);
            p->res = NULL;
            if (res)
                keel__result_set_affected(res, p->affected);
            st = res ? KEEL_OK
                     : keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c),
                                       "out of memory");
        }
        if (st != KEEL_OK)
            p->failed = 1;
    }
    pg_drop_result(p);
    pg_batch_clear(p);
    if (p->failed) {
        keel_error e = p->err;
        keel__conn_complete(c, NULL, &e);
    } else {
        keel__conn_complete(c, res, NULL);
    }
}

static void pg_fail_op(pg_impl *p, keel_status code, const char *msg) {
    if (p->failed)
        return;
    keel__error_set(&p->err, code, PG_ENGINE, pg_dbname(p->c), "%s", msg);
    p->failed = 1;
}

/*
 * COPY needs a data stream keel does not offer: COPY FROM STDIN is ended with an error, and
 * the data of COPY TO STDOUT is read and dropped, so the connection stays usable. Returns 0,
 * or -1 when libpq failed.
 */
static int pg_refuse_copy(pg_impl *p, ExecStatusType st, long row) {
    char msg[96];
    int n = row >= 0 ? snprintf(msg, sizeof msg, "row %ld: ", row) : 0;
    snprintf(msg + n, sizeof msg - (size_t)n, "COPY %s is not supported",
             st == PGRES_COPY_IN ? "FROM STDIN" : "TO STDOUT");
    pg_fail_op(p, KEEL_ERR_UNSUPPORTED, msg);
    if (st == PGRES_COPY_IN) {
        if (PQputCopyEnd(p->pg, "COPY FROM STDIN is not supported by keel") != 1)
            return -1;
        p->flush_pending = 1;
        return 0;
    }
    if (st == PGRES_COPY_OUT) {
        p->copy_out = 1;
        return 0;
    }
    return -1; /* COPY BOTH only exists on replication connections */
}

/* Drops COPY TO STDOUT data. 1 when the copy is over, 0 when more input is needed, -1 failed. */
static int pg_drain_copy(pg_impl *p) {
    char *buf = NULL;
    int n;
    while ((n = PQgetCopyData(p->pg, &buf, 1)) > 0)
        PQfreemem(buf);
    if (n == 0)
        return 0;
    if (n == -2)
        return -1;
    p->copy_out = 0;
    return 1;
}

/*
 * The running statement's next result into *r (NULL at the end of a command's results): 1, or 0
 * when more input is needed (the rows decoded so far are streamed meanwhile), or -1 when the
 * connection failed. The data of a refused COPY TO STDOUT is dropped first.
 */
static int pg_next_result(pg_impl *p, PGresult **r) {
    if (p->copy_out) {
        int d = pg_drain_copy(p);
        if (d <= 0)
            return d;
    }
    if (PQisBusy(p->pg)) {
        pg_stream_rows(p);
        return 0;
    }
    *r = PQgetResult(p->pg);
    return 1;
}

/*
 * Collects the results of a simple or extended-protocol statement. Returns 1 when all are in,
 * 0 when more input is needed, -1 when the connection failed.
 */
static int pg_query_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r)
            return 1;
        ExecStatusType st = PQresultStatus(r);
        switch (st) {
        case PGRES_SINGLE_TUPLE:
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            pg_take(p, r);
            break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            PQclear(r);
            if (pg_refuse_copy(p, st, -1) != 0)
                return -1;
            break;
        default:
            if (!p->failed) {
                pg_result_error(p, r, -1, &p->err);
                p->failed = 1;
            }
            PQclear(r);
            break;
        }
    }
}

/*
 * Collects batch results as they arrive: each prepare's and each row's results end with a
 * NULL, and the closing sync ends the batch. A failed prepare is reported as the row it was
 * queued for, as a failed parse of that row was. Returns 1 when the batch is over, 0 when
 * more input is needed, -1 when the connection failed.
 */
static int pg_batch_collect(pg_impl *p) {
    for (;;) {
        if (p->copy_out) {
            int d = pg_drain_copy(p);
            if (d <= 0)
                return d;
        }
        if (PQisBusy(p->pg))
            return 0;
        PGresult *r = PQgetResult(p->pg);
        if (!r) {
            if (!p->bgot)
                return 0; /* nothing sent is pending yet */
            p->bgot = 0;
            if (p->bdone < p->brows && p->bprep[p->bdone] && !p->bprepared) {
                p->bprepared = 1;
            } else {
                p->bdone++;
                p->bprepared = 0;
            }
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return PQexitPipelineMode(p->pg) == 1 ? 1 : -1;
        }
        p->bgot = 1;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            int64_t n = pg_affected(r);
            if (n > 0)
                p->baffected += n;
        } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            if (pg_refuse_copy(p, st, (long)p->bdone) != 0)
                return -1;
            continue;
        } else if (st != PGRES_PIPELINE_ABORTED && !p->failed) {
            pg_result_error(p, r, (long)p->bdone, &p->err);
            p->failed = 1;
        }
        PQclear(r);
    }
}

/*
 * Queues the bind and execute of the encoded row bsent, preceded by a prepare of the unnamed
 * statement when the row's parameter types differ from those it was last prepared with.
 * Returns the bytes queued, or 0 when libpq failed.
 */
static size_t pg_batch_queue_row(pg_impl *p) {
    size_t n = p->bnparams, bytes = p->pbytes + 32;
    if (p->bsent == 0 || (n && memcmp(p->btypes, p->ptypes, n * sizeof(Oid)) != 0)) {
        if (!PQsendPrepare(p->pg, "", p->bsql, (int)n, p->ptypes))
            return 0;
        if (n)
            memcpy(p->btypes, p->ptypes, n * sizeof(Oid));
        p->bprep[p->bsent] = 1;
        bytes += strlen(p->bsql) + 4 * n;
    }
    if (!PQsendQueryPrepared(p->pg, "", (int)n, p->pvals, p->plens, p->pfmts, 0))
        return 0;
    return bytes;
}

/*
 * Queues batch rows while the socket takes them, then the closing sync. After the first
 * failed row the rest are skipped: the server would discard them until the sync anyway.
 * Returns 0, or -1 when libpq failed.
 */
static int pg_batch_send(pg_impl *p) {
    size_t budget = PG_BATCH_ROWS_PER_WAKEUP;
    for (;;) {
        if (p->flush_pending) {
            int r = PQflush(p->pg);
            if (r < 0)
                return -1;
            if (r > 0)
                return 0;
            p->flush_pending = 0;
        }
        if (p->bsynced)
            return 0;
        if (p->failed || p->bsent == p->brows) {
            if (!PQpipelineSync(p->pg))
                return -1;
            p->bsynced = 1;
            p->flush_pending = 1;
            continue;
        }
        if (budget == 0)
            return 0;
        size_t rows = 0, bytes = 0;
        while (p->bsent < p->brows && rows < PG_BATCH_CHUNK_ROWS && bytes < PG_BATCH_CHUNK_BYTES &&
               rows < budget) {
            const keel_value *row = p->bvals + p->bsent * p->bnparams;
            keel_error e;
            if (pg_encode(p, row, p->bnparams, &e) != KEEL_OK) {
                if (!p->failed) {
                    p->err = e;
                    p->failed = 1;
                }
                break;
            }
            size_t queued = pg_batch_queue_row(p);
            if (queued == 0)
                return -1;
            p->bsent++;
            rows++;
            bytes += queued;
        }
        budget -= rows;
        p->flush_pending = 1;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The prepared-statement cache                                                             */

static uint64_t pg_stmt_hash(const char *sql, size_t len, const Oid *types, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)sql[i]) * 1099511628211ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint64_t)types[i]) * 1099511628211ULL;
    return h;
}

static void pg_cache_unlink(pg_impl *p, pg_stmt *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        p->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        p->lru = e->prev;
    e->prev = e->next = NULL;
    p->ncached--;
}

static void pg_cache_push(pg_impl *p, pg_stmt *e) {
    e->prev = NULL;
    e->next = p->mru;
    if (p->mru)
        p->mru->prev = e;
    else
        p->lru = e;
    p->mru = e;
    p->ncached++;
}

/*
 * Removes an entry. When the statement exists on the server (dealloc) its name waits for a
 * DEALLOCATE; should even that list fail to grow, the statement stays in the session unused
 * until the connection closes, which costs server memory but never a wrong result, since
 * names are never reused.
 */
static void pg_cache_drop(pg_impl *p, pg_stmt *e, int dealloc) {
    pg_cache_unlink(p, e);
    if (dealloc) {
        if (p->ndpend == p->dpcap) {
            size_t cap = p->dpcap ? p->dpcap * 2 : 8;
            uint64_t *d = realloc(p->dpend, cap * sizeof *d);
            if (d) {
                p->dpend = d;
                p->dpcap = cap;
            }
        }
        if (p->ndpend < p->dpcap)
            p->dpend[p->ndpend++] = e->id;
    }
    free(e->sql);
    free(e->types);
    free(e);
}

/* The entry for this text and these parameter types, made most recently used; or NULL. */
static pg_stmt *pg_cache_find(pg_impl *p, uint64_t h, const char *sql, size_t len, const Oid *types,
                              size_t n) {
    for (pg_stmt *e = p->mru; e; e = e->next) {
        if (e->hash != h || e->sql_len != len || e->ntypes != n || memcmp(e->sql, sql, len) != 0 ||
            (n && memcmp(e->types, types, n * sizeof *types) != 0))
            continue;
        if (e != p->mru) {
            pg_cache_unlink(p, e);
            pg_cache_push(p, e);
        }
        return e;
    }
    return NULL;
}

/* A new entry under a name never used before, evicting the least recently used one when the
 * cache is full. NULL when out of memory. */
static pg_stmt *pg_cache_add(pg_impl *p, uint64_t h, const char *sql, size_t len, const Oid *types,
                             size_t n) {
    pg_stmt *e = calloc(1, sizeof *e);
    char *copy = malloc(len + 1);
    Oid *t = n ? malloc(n * sizeof *t) : NULL;
    if (!e || !copy || (n && !t)) {
        free(e);
        free(copy);
        free(t);
        return NULL;
    }
    memcpy(copy, sql, len);
    copy[len] = '\0';
    if (n)
        memcpy(t, types, n * sizeof *t);
    if (p->ncached >= p->cache_cap && p->lru)
        pg_cache_drop(p, p->lru, 1);
    e->id = ++p->next_id;
    e->hash = h;
    e->sql = copy;
    e->sql_len = len;
    e->types = t;
    e->ntypes = n;
    pg_cache_push(p, e);
    return e;
}

/*
 * True when a statement without parameters is certainly one statement, so it can be
 * prepared: it has text and no semicolon other than trailing ones. A semicolon inside a string
 * or a comment also sends the statement the simple way, which is always correct, only slower.
 */
static int pg_one_statement(const char *sql) {
    int text = 0;
    for (const char *s = sql; *s; s++) {
        if (*s == ';') {
            for (s++; *s; s++)
                if (*s != ';' && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f')
                    return 0;
            return text;
        }
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f')
            text = 1;
    }
    return text;
}

/*
 * Copies bytes parameters, which point into the caller's memory (valid only during the query
 * call), so a transparent retry can still send them. 0, or -1 when out of memory.
 */
static int pg_own_bytes(pg_impl *p, size_t n) {
    size_t need = 0, used = 0;
    for (size_t i = 0; i < n; i++)
        if (p->pfmts[i] == 1)
            need += (size_t)p->plens[i];
    if (need == 0)
        return 0;
    keel__buf_reset(&p->pbin);
    if (keel__buf_reserve(&p->pbin, need) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p->pfmts[i] != 1 || p->plens[i] == 0)
            continue;
        memcpy(p->pbin.data + used, p->pvals[i], (size_t)p->plens[i]);
        p->pvals[i] = p->pbin.data + used;
        used += (size_t)p->plens[i];
    }
    return 0;
}

/*
 * Queues the round trip of the running cached statement in one pipeline: DEALLOCATEs of
 * evicted statements with a sync of their own (so their outcome never touches the statement),
 * then on a cache miss the prepare, then the execute and the closing sync. A miss therefore
 * costs no extra round trip. A hit with nothing to deallocate is a plain execute outside
 * pipeline mode, whose bookkeeping in libpq costs the client about 5 % of a short query.
 * Returns 0, -1 when libpq failed, -2 when out of memory (nothing queued then).
 */
static int pg_cached_send(pg_impl *p) {
    size_t n = p->xnparams;
    uint64_t h = pg_stmt_hash(p->xsql, p->xsql_len, p->ptypes, n);
    pg_stmt *e = pg_cache_find(p, h, p->xsql, p->xsql_len, p->ptypes, n);
    p->xfresh = e == NULL;
    if (!e)
        e = pg_cache_add(p, h, p->xsql, p->xsql_len, p->ptypes, n);
    if (!e)
        return -2;
    p->xstmt = e;
    p->nxsteps = p->xstep = p->nxdealloc = 0;
    p->xgot = p->xretry = 0;
    /* Outside a transaction block a failed DEALLOCATE only ends its own implicit transaction. */
    int dealloc = p->ndpend > 0 && PQtransactionStatus(p->pg) == PQTRANS_IDLE;
    char cmd[48];
    p->xpipe = p->xfresh || dealloc;
    if (!p->xpipe) {
        snprintf(cmd, sizeof cmd, "keel_s%" PRIu64, e->id);
        if (!PQsendQueryPrepared(p->pg, cmd, (int)n, p->pvals, p->plens, p->pfmts, 0))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_EXEC;
        if (p->c->rows_cb)
            p->stream = PQsetSingleRowMode(p->pg);
        return 0;
    }
    if (!PQenterPipelineMode(p->pg))
        return -1;
    if (dealloc) {
        size_t k = p->ndpend < PG_DEALLOC_PER_TRIP ? p->ndpend : PG_DEALLOC_PER_TRIP;
        for (size_t i = 0; i < k; i++) {
            snprintf(cmd, sizeof cmd, "DEALLOCATE keel_s%" PRIu64, p->dpend[i]);
            if (!PQsendQueryParams(p->pg, cmd, 0, NULL, NULL, NULL, NULL, 0))
                return -1;
            p->xdok[i] = 0;
            p->xsteps[p->nxsteps++] = PG_STEP_DEALLOC;
        }
        if (!PQpipelineSync(p->pg))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_SYNC;
        p->nxdealloc = k;
    }
    snprintf(cmd, sizeof cmd, "keel_s%" PRIu64, e->id);
    if (p->xfresh) {
        if (!PQsendPrepare(p->pg, cmd, p->xsql, (int)n, p->ptypes))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_PREPARE;
    }
    if (!PQsendQueryPrepared(p->pg, cmd, (int)n, p->pvals, p->plens, p->pfmts, 0) ||
        !PQpipelineSync(p->pg))
        return -1;
    p->xsteps[p->nxsteps++] = PG_STEP_EXEC;
    p->xsteps[p->nxsteps++] = PG_STEP_SYNC;
    return 0;
}

/*
 * The execute of a statement prepared in an earlier round trip failed because the statement
 * went stale: a table it reads changed shape (the server refuses to change a prepared
 * statement's result type), or the statement is gone (DEALLOCATE ALL, DISCARD ALL). Both are
 * raised at Bind, before the statement runs. 1 for stale (drop it and deallocate), 2 for gone
 * (drop it), 0 otherwise.
 */
static int pg_stale(const pg_impl *p, const PGresult *r) {
    if (p->xfresh || p->xretried)
        return 0;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!state || !primary)
        return 0;
    if (strcmp(state, "0A000") == 0 && strstr(primary, "cached plan must not change result type"))
        return 1;
    if (strcmp(state, "26000") == 0 && strstr(primary, "keel_s"))
        return 2;
    return 0;
}

/*
 * The last result arrived (the closing sync of a pipeline). Forgets the DEALLOCATEs that succeeded, then either ends the
 * operation or, for a stale statement, prepares and runs it again once. The retry is
 * transparent only outside a transaction block: there the failed implicit transaction left
 * nothing behind, while inside one the error has already aborted the user's transaction and
 * is reported (the next attempt, after the rollback, prepares afresh). Returns 1 when the
 * operation is over, 0 when the retry is in flight, -1 when libpq failed.
 */
static int pg_cached_end(pg_impl *p) {
    size_t k = 0;
    for (size_t i = 0; i < p->ndpend; i++)
        if (!(i < p->nxdealloc && p->xdok[i]))
            p->dpend[k++] = p->dpend[i];
    p->ndpend = k;
    p->nxdealloc = 0;
    if (p->xpipe && PQexitPipelineMode(p->pg) != 1)
        return -1;
    if (!p->xretry || PQtransactionStatus(p->pg) != PQTRANS_IDLE) {
        if (p->xretry)
            pg_cache_drop(p, p->xstmt, p->xretry == 1);
        return 1;
    }
    pg_cache_drop(p, p->xstmt, p->xretry == 1);
    p->xretried = 1;
    p->failed = 0;
    keel_error_clear(&p->err);
    pg_drop_result(p);
    int r = pg_cached_send(p);
    if (r == -2) {
        pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory");
        return 1;
    }
    if (r < 0)
        return -1;
    r = PQflush(p->pg);
    if (r < 0)
        return -1;
    p->flush_pending = r;
    return 0;
}

/* One result of the running cached statement, by the command it answers. -1 when libpq
 * failed. */
static int pg_cached_result(pg_impl *p, PGresult *r) {
    ExecStatusType st = PQresultStatus(r);
    switch ((pg_step)p->xsteps[p->xstep]) {
    case PG_STEP_DEALLOC: {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st == PGRES_COMMAND_OK || (state && strcmp(state, "26000") == 0))
            p->xdok[p->xstep] = 1;
        break;
    }
    case PG_STEP_PREPARE:
        if (st == PGRES_COMMAND_OK)
            break;
        /* Never created on the server: forgotten without a DEALLOCATE. */
        pg_cache_drop(p, p->xstmt, 0);
        p->xstmt = NULL;
        if (st != PGRES_PIPELINE_ABORTED && !p->failed) {
            pg_result_error(p, r, -1, &p->err);
            p->failed = 1;
        }
        break;
    case PG_STEP_EXEC:
        if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ||
            st == PGRES_EMPTY_QUERY) {
            pg_take(p, r);
            return 0;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            return pg_refuse_copy(p, st, -1);
        }
        if (st != PGRES_PIPELINE_ABORTED) {
            int stale = pg_stale(p, r);
            if (stale)
                p->xretry = stale;
            if (!p->failed) {
                pg_result_error(p, r, -1, &p->err);
                p->failed = 1;
            }
        }
        break;
    case PG_STEP_SYNC:
        break;
    }
    PQclear(r);
    return 0;
}

/*
 * Asks for single-row mode for a streamed statement once its execute heads the pipeline: libpq
 * takes the request only then, before the execute's first result has been parsed.
 */
static void pg_cached_single_row(pg_impl *p) {
    if (p->c->rows_cb && p->xstep < p->nxsteps && p->xsteps[p->xstep] == PG_STEP_EXEC)
        p->stream = PQsetSingleRowMode(p->pg);
}

/*
 * Collects the results of a cached statement. In a pipeline each command's results end with a
 * NULL and each sync has a result of its own; a lone execute ends with its NULL. Returns 1 when
 * the operation is over, 0 when more input is needed, -1 when the connection failed.
 */
static int pg_cached_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r && !p->xpipe) {
            int end = pg_cached_end(p);
            if (end != 0)
                return end;
            continue;
        }
        if (!r) {
            if (!p->xgot)
                return 0; /* nothing sent is pending yet */
            p->xgot = 0;
            p->xstep++;
            pg_cached_single_row(p);
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (++p->xstep < p->nxsteps) {
                pg_cached_single_row(p);
                continue;
            }
            int end = pg_cached_end(p);
            if (end != 0)
                return end;
            continue;
        }
        p->xgot = 1;
        if (pg_cached_result(p, r) != 0)
            return -1;
    }
}

static int pg_want_write(const pg_impl *p) {
    return p->flush_pending || (p->phase == PG_BATCH && !p->bsynced) ||
           (p->phase == PG_COPY && pg_copy_wants_write(p));
}

/* One wake-up of a running operation: send what is pending, read, collect results. */
static void pg_op_step(pg_impl *p, int events) {
    if (p->phase == PG_BATCH || p->phase == PG_COPY) {
        if ((p->phase == PG_BATCH ? pg_batch_send(p) : pg_copy_send(p)) != 0) {
            pg_lost(p);
            return;
        }
    } else if (p->flush_pending) {
        int r = PQflush(p->pg);
        if (r < 0) {
            pg_lost(p);
            return;
        }
        p->flush_pending = r;
    }
    if ((events & KEEL_READ) && !PQconsumeInput(p->pg)) {
        pg_lost(p);
        return;
    }
    int done = p->phase == PG_BATCH    ? pg_batch_collect(p)
               : p->phase == PG_CACHED ? pg_cached_collect(p)
               : p->phase == PG_COPY   ? pg_copy_collect(p)
                                       : pg_query_collect(p);
    if (done < 0) {
        pg_lost(p);
        return;
    }
    if (done > 0) {
        pg_finish(p);
        return;
    }
    if (keel__watch_set(p->watch, KEEL_READ | (pg_want_write(p) ? KEEL_WRITE : 0)) != 0) {
        pg_fail_op(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
        pg_lost(p);
    }
}

/* Idle and readable: the server closed the connection, or sent a notification. */
static void pg_idle_input(pg_impl *p) {
    int ok = PQconsumeInput(p->pg);
    PGnotify *n;
    while ((n = PQnotifies(p->pg)) != NULL)
        PQfreemem(n);
    if (ok && PQstatus(p->pg) != CONNECTION_BAD)
        return;
    p->phase = PG_DEAD;
    keel__watch_set(p->watch, 0);
    p->c->broken = 1;
    keel__conn_broken(p->c);
}

static void pg_on_ready(void *arg, int events) {
    pg_impl *p = arg;
    switch (p->phase) {
    case PG_CONNECTING:
        pg_connect_step(p);
        return;
    case PG_IDLE:
        pg_idle_input(p);
        return;
    case PG_SETUP:
    case PG_QUERY:
    case PG_BATCH:
    case PG_CACHED:
    case PG_COPY:
        pg_op_step(p, events);
        return;
    case PG_RESOLVING:
    case PG_HELD:
    case PG_DEAD:
        keel__watch_set(p->watch, 0);
        return;
    }
}

static keel_status pg_check_idle(pg_impl *p, keel_conn *c, keel_error *err) {
    if (!p || p->phase == PG_DEAD || c->broken)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, PG_ENGINE, pg_dbname(c),
                               "the connection to database '%s' was lost", pg_dbname(c));
    if (p->phase != PG_IDLE)
        return keel__error_set(err, KEEL_ERR_BUSY, PG_ENGINE, pg_dbname(c),
                               "another operation is in progress on this connection");
    return KEEL_OK;
}

/*
 * Starting an operation failed: nothing will be reported for it. When libpq refused the
 * command before queueing it the connection stays usable; once anything may have reached the
 * server (sent), or a pipeline was half built, the session state is unknown and it is given up.
 */
static keel_status pg_send_failed(pg_impl *p, int sent, keel_error *err) {
    keel_conn *c = p->c;
    int bad = PQstatus(p->pg) == CONNECTION_BAD;
    keel_status st = pg_error_libpq(err, bad ? KEEL_ERR_CONNECTION_LOST : KEEL_ERR_DATABASE, c,
                                    bad ? "connection lost: " : NULL, PQerrorMessage(p->pg));
    if (bad || sent || p->phase == PG_BATCH || p->phase == PG_CACHED) {
        c->broken = 1;
        p->phase = PG_DEAD;
        keel__watch_set(p->watch, 0);
    } else {
        p->phase = PG_IDLE;
    }
    pg_batch_clear(p);
    return st;
}

/*
 * True when the statement starts with COPY. The server expects COPY data right after the
 * command, so in a pipeline the next queued row would break the protocol and end the session:
 * batches refuse COPY before sending anything.
 */
static int pg_starts_with_copy(const char *sql) {
    const char *s = sql;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '(')
            s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            if (!end)
                return 0;
            s = end + 2;
        } else {
            break;
        }
    }
    return strncasecmp(s, "copy", 4) == 0 && !(s[4] == '_' || (s[4] >= '0' && s[4] <= '9') ||
                                               ((s[4] | 0x20) >= 'a' && (s[4] | 0x20) <= 'z'));
}

/*
 * Copies a batch's parameters (they are only valid during the query call) in one block, which
 * also holds the prepared parameter types and the per-row prepare marks.
 */
static keel_status pg_batch_copy(pg_impl *p, const keel__stmt *stmt, keel_error *err) {
    size_t n = stmt->nrows * stmt->nparams, bytes = 0;
    if (stmt->nparams && n / stmt->nparams != stmt->nrows)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = &stmt->params[i];
        keel_status st = pg_param_check(p, v, i % stmt->nparams, err);
        if (st != KEEL_OK) {
            char msg[KEEL_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "%s", err ? err->message : "");
            return keel__error_set(err, st, PG_ENGINE, pg_dbname(p->c), "row %zu: %s",
                                   i / stmt->nparams, msg);
        }
        if (v->type == KEEL_TYPE_TEXT || v->type == KEEL_TYPE_NUMERIC ||
            v->type == KEEL_TYPE_JSON || v->type == KEEL_TYPE_BYTES)
            bytes += v->u.str.len;
    }
    size_t head = n * sizeof(keel_value), types = stmt->nparams * sizeof(Oid);
    char *block = malloc(head + types + stmt->nrows + bytes + 1);
    if (!block)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c),
                               "out of memory copying %zu batch rows", stmt->nrows);
    keel_value *vals = (keel_value *)(void *)block;
    char *prep = block + head + types;
    memset(prep, 0, stmt->nrows);
    char *text = prep + stmt->nrows;
    for (size_t i = 0; i < n; i++) {
        vals[i] = stmt->params[i];
        keel_type t = vals[i].type;
        if ((t == KEEL_TYPE_TEXT || t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_JSON ||
             t == KEEL_TYPE_BYTES) &&
            vals[i].u.str.len) {
            memcpy(text, vals[i].u.str.ptr, vals[i].u.str.len);
            vals[i].u.str.ptr = text;
            text += vals[i].u.str.len;
        }
    }
    free(p->bvals);
    p->bvals = vals;
    p->btypes = (Oid *)(void *)(block + head);
    p->bprep = prep;
    return KEEL_OK;
}

/* Starts one statement through the prepared-statement cache. */
static keel_status pg_query_cached(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                   keel_error *err) {
    for (size_t i = 0; i < stmt->nparams; i++) {
        keel_status st = pg_param_check(p, &stmt->params[i], i, err);
        if (st != KEEL_OK)
            return st;
    }
    if (stmt->nparams) {
        keel_status st = pg_encode(p, stmt->params, stmt->nparams, err);
        if (st != KEEL_OK)
            return st;
        if (pg_own_bytes(p, stmt->nparams) != 0)
            return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c),
                                   "out of memory");
    }
    p->xsql = sql;
    p->xsql_len = stmt->sql_len;
    p->xnparams = stmt->nparams;
    p->xretried = 0;
    p->phase = PG_CACHED;
    int r = pg_cached_send(p);
    if (r == -2) {
        p->phase = PG_IDLE;
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    }
    if (r != 0)
        return pg_send_failed(p, 0, err);
    if (pg_after_send(p) != 0)
        return pg_send_failed(p, 1, err);
    return KEEL_OK;
}

static keel_status pg_query(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    const char *sql = pg_sql(p, c, stmt->sql, stmt->sql_len);
    if (!sql)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
    if (stmt->nparams > 65535)
        return keel__error_set(err, KEEL_ERR_PARAMETERS, PG_ENGINE, pg_dbname(c),
                               "PostgreSQL accepts at most 65535 parameters, %zu were given",
                               stmt->nparams);
    pg_op_reset(p);
    if (stmt->many) {
        if (pg_starts_with_copy(sql))
            return keel__error_set(err, KEEL_ERR_UNSUPPORTED, PG_ENGINE, pg_dbname(c),
                                   "COPY cannot run in a batch (query_many)");
        st = pg_batch_copy(p, stmt, err);
        if (st != KEEL_OK)
            return st;
        if (!PQenterPipelineMode(p->pg)) {
            pg_batch_clear(p);
            return pg_send_failed(p, 0, err);
        }
        p->bsql = sql;
        p->brows = stmt->nrows;
        p->bnparams = stmt->nparams;
        p->phase = PG_BATCH;
        if (pg_batch_send(p) != 0 ||
            keel__watch_set(p->watch, KEEL_READ | (pg_want_write(p) ? KEEL_WRITE : 0)) != 0)
            return pg_send_failed(p, 1, err);
        return KEEL_OK;
    }
    if (p->cache_cap && !pg_starts_with_copy(sql) && (stmt->nparams || pg_one_statement(sql)))
        return pg_query_cached(p, stmt, sql, err);
    int ok;
    if (stmt->nparams == 0) {
        ok = PQsendQuery(p->pg, sql);
    } else {
        for (size_t i = 0; i < stmt->nparams; i++) {
            st = pg_param_check(p, &stmt->params[i], i, err);
            if (st != KEEL_OK)
                return st;
        }
        st = pg_encode(p, stmt->params, stmt->nparams, err);
        if (st != KEEL_OK)
            return st;
        ok = PQsendQueryParams(p->pg, sql, (int)stmt->nparams, p->ptypes, p->pvals, p->plens,
                               p->pfmts, 0);
    }
    p->phase = PG_QUERY;
    if (!ok)
        return pg_send_failed(p, 0, err);
    /* Rows are streamed only from a single statement: of several, the last one's rows are the
     * result, which is known only at the end. */
    if (c->rows_cb && (stmt->nparams || pg_one_statement(sql)))
        p->stream = PQsetSingleRowMode(p->pg);
    if (pg_after_send(p) != 0)
        return pg_send_failed(p, 1, err);
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Bulk loads: COPY … FROM STDIN (FORMAT binary)                                            */

/*
 * Encoded data goes to libpq in chunks of this size, so the server parses the first rows while
 * later ones are encoded; each wake-up encodes at most PG_COPY_BYTES_PER_WAKEUP so a large load
 * does not keep the host loop from its other work.
 */
#define PG_COPY_CHUNK_BYTES 65536
#define PG_COPY_BYTES_PER_WAKEUP (1024 * 1024)
/* The most columns a PostgreSQL table (and a COPY tuple) can have. */
#define PG_COPY_MAX_COLUMNS 1664

typedef enum pg_copy_stage {
    PG_COPY_LOOKUP, /* the column lookup and the COPY command are in flight */
    PG_COPY_DATA,   /* the server takes data: rows are encoded and sent */
    PG_COPY_END     /* the end (or the abort) of the data is sent: results are collected */
} pg_copy_stage;

/*
 * One round trip starts a load: a simple query carrying the lookup of the table's columns and
 * their types, then the COPY itself, so the types are always current (no cache to go stale
 * after an ALTER TABLE) and the lookup costs no round trip of its own. Rows are encoded once
 * the server asks for data. A value that cannot be encoded ends the data with CopyFail, which
 * makes the server discard everything: a load is all or nothing.
 */
typedef struct pg_copy {
    pg_copy_stage stage;
    char *block;        /* the private copy of the rows, their text and the column names */
    keel_value *vals;   /* nrows * ncols */
    const char **names; /* the requested columns, or NULL for all */
    size_t nrows, ncols, sent;
    PGresult *lookup; /* name, type oid, receive function, type text: one row per column */
    keel__pgc_col *cols;
    size_t colcap;
    int naive_is_utc; /* the session's TimeZone is UTC */
    int cancel;       /* the caller cancelled the load */
    keel__buf out;    /* the chunk being encoded; kept between loads */
} pg_copy;

static int pg_copy_wants_write(const pg_impl *p) {
    return p->copy && p->copy->stage == PG_COPY_DATA;
}

/* Ends the load's state (its buffers are kept for the next one). */
static void pg_copy_clear(pg_impl *p) {
    pg_copy *k = p->copy;
    if (!k)
        return;
    free(k->block);
    k->block = NULL;
    k->vals = NULL;
    k->names = NULL;
    k->nrows = k->ncols = k->sent = 0;
    PQclear(k->lookup);
    k->lookup = NULL;
    k->cancel = 0;
    k->stage = PG_COPY_LOOKUP;
    keel__buf_reset(&k->out);
}

static void pg_copy_free(pg_impl *p) {
    if (!p->copy)
        return;
    pg_copy_clear(p);
    free(p->copy->cols);
    keel__buf_free(&p->copy->out);
    free(p->copy);
    p->copy = NULL;
}

/* True for the names PostgreSQL gives UTC (the session TimeZone parameter as reported). */
static int pg_tz_is_utc(const char *tz) {
    static const char *const utc[] = { "UTC",       "Etc/UTC",   "GMT",       "Etc/GMT",
                                       "UCT",       "Etc/UCT",   "Universal", "Etc/Universal",
                                       "Zulu",      "Etc/Zulu",  "GMT0",      "Etc/GMT0",
                                       "Etc/GMT+0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich",
                                       "GMT+0",     "GMT-0",     NULL };
    for (size_t i = 0; tz && utc[i]; i++)
        if (strcasecmp(tz, utc[i]) == 0)
            return 1;
    return 0;
}

/* Ends the data with CopyFail after a failure already recorded in p->err. 0, or -1. */
static int pg_copy_abort(pg_impl *p, const char *why) {
    p->copy->stage = PG_COPY_END;
    if (PQputCopyEnd(p->pg, why) != 1)
        return -1;
    p->flush_pending = 1;
    return 0;
}

/* Matches the lookup to the load's columns. KEEL_OK, or the error (in p->err) to abort with. */
static keel_status pg_copy_columns(pg_impl *p) {
    pg_copy *k = p->copy;
    keel_conn *c = p->c;
    if (!k->lookup)
        return keel__error_set(&p->err, KEEL_ERR_INTERNAL, PG_ENGINE, pg_dbname(c),
                               "the column lookup of the COPY returned nothing");
    size_t nlook = (size_t)PQntuples(k->lookup);
    if (!k->names && k->nrows && k->ncols != nlook)
        return keel__error_set(&p->err, KEEL_ERR_PARAMETERS, PG_ENGINE, pg_dbname(c),
                               "the table has %zu column%s but each row has %zu value%s", nlook,
                               nlook == 1 ? "" : "s", k->ncols, k->ncols == 1 ? "" : "s");
    size_t n = k->names ? k->ncols : nlook;
    if (n > k->colcap) {
        keel__pgc_col *cols = realloc(k->cols, n * sizeof *cols);
        if (!cols)
            return keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c),
                                   "out of memory");
        k->cols = cols;
        k->colcap = n;
    }
    for (size_t i = 0; i < n; i++) {
        size_t row = i;
        if (k->names) {
            for (row = 0; row < nlook; row++)
                if (strcmp(PQgetvalue(k->lookup, (int)row, 0), k->names[i]) == 0)
                    break;
            /* COPY accepted the list, so only a concurrent ALTER TABLE can get here. */
            if (row == nlook)
                return keel__error_set(&p->err, KEEL_ERR_DATABASE, PG_ENGINE, pg_dbname(c),
                                       "column \"%s\" was not found in the table", k->names[i]);
        }
        const char *oid = PQgetvalue(k->lookup, (int)row, 1);
        k->cols[i].kind =
            keel__pgc_kind_of((uint32_t)strtoul(oid, NULL, 10), PQgetvalue(k->lookup, (int)row, 2));
        k->cols[i].name = PQgetvalue(k->lookup, (int)row, 0);
        k->cols[i].type_name = PQgetvalue(k->lookup, (int)row, 3);
    }
    k->ncols = n;
    k->naive_is_utc = pg_tz_is_utc(PQparameterStatus(p->pg, "TimeZone"));
    return KEEL_OK;
}

/*
 * Encodes and queues rows while the socket takes them and the wake-up's budget lasts, then the
 * trailer and the end of the data. A cancel or a value that cannot be encoded ends the data
 * with CopyFail instead. Returns 0, or -1 when libpq failed.
 */
static int pg_copy_send(pg_impl *p) {
    pg_copy *k = p->copy;
    size_t budget = PG_COPY_BYTES_PER_WAKEUP;
    for (;;) {
        if (p->flush_pending) {
            int r = PQflush(p->pg);
            if (r < 0)
                return -1;
            if (r > 0)
                return 0;
            p->flush_pending = 0;
        }
        if (k->stage != PG_COPY_DATA)
            return 0;
        if (k->cancel) {
            if (!p->failed) {
                keel__error_set(&p->err, KEEL_ERR_CANCELLED, PG_ENGINE, pg_dbname(p->c),
                                "the bulk load was cancelled; no row was loaded");
                p->failed = 1;
            }
            return pg_copy_abort(p, "cancelled by the client");
        }
        if (budget == 0)
            return 0;
        keel__buf_reset(&k->out);
        while (k->sent < k->nrows && k->out.len < PG_COPY_CHUNK_BYTES) {
            char why[KEEL_ERROR_MESSAGE_MAX];
            int r = keel__pgc_row(&k->out, k->cols, k->vals + k->sent * k->ncols, k->ncols,
                                  k->naive_is_utc, why, sizeof why);
            if (r < 0) {
                keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c),
                                "out of memory encoding row %zu", k->sent);
                p->failed = 1;
                return pg_copy_abort(p, "out of memory in the client");
            }
            if (r > 0) {
                const keel__pgc_col *col = &k->cols[r - 1];
                keel__error_set(&p->err, KEEL_ERR_DATA, PG_ENGINE, pg_dbname(p->c),
                                "row %zu, column \"%s\" (%s): %s; no row was loaded", k->sent,
                                col->name, col->type_name, why);
                p->failed = 1;
                return pg_copy_abort(p, "a value could not be encoded by the client");
            }
            k->sent++;
        }
        int last = k->sent == k->nrows;
        if (last && keel__pgc_trailer(&k->out) != 0) {
            keel__error_set(&p->err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
            p->failed = 1;
            return pg_copy_abort(p, "out of memory in the client");
        }
        if (PQputCopyData(p->pg, k->out.data, (int)k->out.len) != 1)
            return -1;
        budget = k->out.len >= budget ? 0 : budget - k->out.len;
        p->flush_pending = 1;
        if (last) {
            k->stage = PG_COPY_END;
            if (PQputCopyEnd(p->pg, NULL) != 1)
                return -1;
        }
    }
}

/* Records a server error of the load, with the COPY's context (table, line, column). */
static void pg_copy_error(pg_impl *p, const PGresult *r) {
    if (p->failed)
        return;
    pg_result_error(p, r, -1, &p->err);
    p->failed = 1;
    const char *ctx = PQresultErrorField(r, PG_DIAG_CONTEXT);
    if (ctx && *ctx && strncmp(ctx, "COPY ", 5) == 0) {
        char msg[KEEL_ERROR_MESSAGE_MAX * 2];
        snprintf(msg, sizeof msg, "%.*s (%.*s)", KEEL_ERROR_MESSAGE_MAX - 1, p->err.message,
                 KEEL_ERROR_MESSAGE_MAX - 8, ctx);
        pg_clean_message(p->err.message, sizeof p->err.message, msg);
    }
}

/*
 * Collects the load's results: the lookup, then the server's request for data (after which
 * rows are sent), then the COPY's own result. Returns 1 when the load is over, 0 when more
 * input is needed, -1 when the connection failed.
 */
static int pg_copy_collect(pg_impl *p) {
    pg_copy *k = p->copy;
    for (;;) {
        /* In the data stage libpq keeps the server's messages until the data is ended. */
        if (k->stage == PG_COPY_DATA || PQisBusy(p->pg))
            return 0;
        PGresult *r = PQgetResult(p->pg);
        if (!r)
            return 1;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && k->stage == PG_COPY_LOOKUP && !k->lookup) {
            k->lookup = r;
            continue;
        }
        if (st == PGRES_COPY_IN && k->stage == PG_COPY_LOOKUP) {
            PQclear(r);
            keel__buf_reset(&k->out);
            k->stage = PG_COPY_DATA;
            if (pg_copy_columns(p) != KEEL_OK) {
                p->failed = 1;
                if (pg_copy_abort(p, "the rows do not match the table") != 0)
                    return -1;
            } else if (keel__pgc_header(&k->out) != 0 ||
                       PQputCopyData(p->pg, k->out.data, (int)k->out.len) != 1) {
                return -1;
            }
            if (pg_copy_send(p) != 0)
                return -1;
            continue;
        }
        if (st == PGRES_COMMAND_OK && k->stage == PG_COPY_END) {
            p->affected = pg_affected(r);
            PQclear(r);
            continue;
        }
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH || st == PGRES_COPY_IN) {
            /* Not what the load sent; the protocol state is unknown. */
            PQclear(r);
            pg_fail_op(p, KEEL_ERR_INTERNAL, "unexpected COPY state during a bulk load");
            return -1;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            pg_copy_error(p, r);
        PQclear(r);
    }
}

/*
 * A cancelled load sends no more rows and ends the data with CopyFail. The usual cancel request
 * goes too: the server may be busy with rows already sent, or waiting for a lock before it
 * asks for data, and it reads the CopyFail only after everything queued before it.
 */
static void pg_copy_cancel(pg_impl *p) { p->copy->cancel = 1; }

/* Appends a SQL string literal of s, in the E'' form whose escapes do not depend on
 * standard_conforming_strings. */
static int pg_put_literal(keel__buf *out, const char *s, size_t n) {
    if (keel__buf_puts(out, "E'") != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (((s[i] == '\'' || s[i] == '\\') && keel__buf_putc(out, s[i]) != 0) ||
            keel__buf_putc(out, s[i]) != 0)
            return -1;
    return keel__buf_putc(out, '\'');
}

/* The load's round trip: the column lookup, then the COPY. 0, or -1 when out of memory. */
static int pg_copy_sql(pg_impl *p, const keel__copy *cp, keel__buf *out) {
    keel__buf target = { 0 };
    keel__buf_reset(out);
    int bad = keel__copy_target(&target, cp, '"', 0) != 0 ||
              keel__buf_puts(out, "SELECT a.attname, b.oid, b.typreceive, "
                                  "pg_catalog.format_type(a.atttypid, a.atttypmod) "
                                  "FROM pg_catalog.pg_attribute a "
                                  "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
                                  "JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' "
                                  "THEN t.typbasetype ELSE t.oid END "
                                  "WHERE a.attrelid = ") != 0 ||
              pg_put_literal(out, target.data, target.len) != 0 ||
              keel__buf_puts(out, "::pg_catalog.regclass AND a.attnum > 0 AND NOT "
                                  "a.attisdropped") != 0 ||
              /* COPY without a column list leaves generated columns out (PostgreSQL 12+). */
              (!cp->columns && PQserverVersion(p->pg) >= 120000 &&
               keel__buf_puts(out, " AND a.attgenerated = ''") != 0) ||
              keel__buf_puts(out, " ORDER BY a.attnum; COPY ") != 0 ||
              keel__copy_target(out, cp, '"', 1) != 0 ||
              keel__buf_puts(out, " FROM STDIN (FORMAT binary)") != 0;
    keel__buf_free(&target);
    return bad ? -1 : 0;
}

/*
 * Copies the rows (valid only during the call) and the column names into one block. Text-like
 * values point into it afterwards.
 */
static keel_status pg_copy_take(pg_impl *p, const keel__copy *cp, keel_error *err) {
    pg_copy *k = p->copy;
    size_t n = cp->nrows * cp->ncols, bytes = 0, nnames = cp->columns ? cp->ncols : 0;
    if (cp->ncols && n / cp->ncols != cp->nrows)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c), "out of memory");
    for (size_t i = 0; i < n; i++) {
        keel_type t = cp->rows[i].type;
        if (t == KEEL_TYPE_TEXT || t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_JSON ||
            t == KEEL_TYPE_BYTES || t == KEEL_TYPE_DOCUMENT)
            bytes += cp->rows[i].u.str.len;
    }
    for (size_t i = 0; i < nnames; i++)
        bytes += strlen(cp->columns[i]) + 1;
    size_t head = n * sizeof(keel_value), names = nnames * sizeof(char *);
    char *block = malloc(head + names + bytes + 1);
    if (!block)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(p->c),
                               "out of memory copying %zu rows", cp->nrows);
    keel_value *vals = (keel_value *)(void *)block;
    const char **namev = (const char **)(void *)(block + head);
    char *text = block + head + names;
    if (n)
        memcpy(vals, cp->rows, head);
    for (size_t i = 0; i < n; i++) {
        keel_type t = vals[i].type;
        if ((t == KEEL_TYPE_TEXT || t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_JSON ||
             t == KEEL_TYPE_BYTES || t == KEEL_TYPE_DOCUMENT) &&
            vals[i].u.str.len) {
            memcpy(text, vals[i].u.str.ptr, vals[i].u.str.len);
            vals[i].u.str.ptr = text;
            text += vals[i].u.str.len;
        }
    }
    for (size_t i = 0; i < nnames; i++) {
        size_t len = strlen(cp->columns[i]);
        memcpy(text, cp->columns[i], len + 1);
        namev[i] = text;
        text += len + 1;
    }
    k->block = block;
    k->vals = vals;
    k->names = nnames ? namev : NULL;
    k->nrows = cp->nrows;
    k->ncols = cp->ncols;
    k->sent = 0;
    return KEEL_OK;
}

static keel_status pg_copy_in(keel_conn *c, const keel__copy *cp, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if (cp->ncols > PG_COPY_MAX_COLUMNS)
        return keel__error_set(err, KEEL_ERR_PARAMETERS, PG_ENGINE, pg_dbname(c),
                               "PostgreSQL tables have at most %d columns, rows of %zu values "
                               "were given",
                               PG_COPY_MAX_COLUMNS, cp->ncols);
    if (!p->copy && !(p->copy = calloc(1, sizeof *p->copy)))
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
    pg_op_reset(p);
    if (pg_copy_sql(p, cp, &p->sqlbuf) != 0)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
    st = pg_copy_take(p, cp, err);
    if (st != KEEL_OK)
        return st;
    p->copy->stage = PG_COPY_LOOKUP;
    p->phase = PG_COPY;
    if (!PQsendQuery(p->pg, p->sqlbuf.data))
        return pg_send_failed(p, 0, err);
    if (pg_after_send(p) != 0)
        return pg_send_failed(p, 1, err);
    return KEEL_OK;
}

static keel_status pg_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if ((unsigned)op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, PG_ENGINE, pg_dbname(c),
                               "unknown transaction operation %d", (int)op);
    if (keel__txn_sql(op, depth, &p->sqlbuf) != 0)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, pg_dbname(c), "out of memory");
    pg_op_reset(p);
    p->phase = PG_QUERY;
    if (!PQsendQuery(p->pg, p->sqlbuf.data))
        return pg_send_failed(p, 0, err);
    if (pg_after_send(p) != 0)
        return pg_send_failed(p, 1, err);
    return KEEL_OK;
}

static int pg_running(const pg_impl *p) {
    return p->phase == PG_QUERY || p->phase == PG_BATCH || p->phase == PG_CACHED ||
           p->phase == PG_COPY;
}

static int pg_cancel_running(void *owner, uint64_t seq) {
    const pg_impl *p = owner;
    return pg_running(p) && p->op_seq == seq;
}

/* A cancel request carries its own PGcancel, which outlives the connection if need be. */
static void *pg_cancel_prepare(void *owner) {
    pg_impl *p = owner;
    return PQgetCancel(p->pg);
}

/* Runs on a worker: PQcancel opens a connection of its own and waits for the server. */
static void pg_cancel_send(void *req) {
    char errbuf[256];
    PQcancel(req, errbuf, sizeof errbuf);
}

static void pg_cancel_release(void *req) { PQfreeCancel(req); }

/*
 * The cancel request that held the end of the operation returned: the end is reported now.
 * When it did not return in time it may still reach the server, so the connection is given up
 * after this operation rather than trusted with the next statement.
 */
static void pg_cancel_settled(void *owner, int answered) {
    pg_impl *p = owner;
    if (p->phase != PG_HELD)
        return;
    if (!answered)
        p->c->broken = 1;
    p->phase = p->held;
    pg_finish(p);
}

static const keel__cancel_ops pg_cancel_ops = {
    .running = pg_cancel_running,
    .prepare = pg_cancel_prepare,
    .send = pg_cancel_send,
    .release = pg_cancel_release,
    .settled = pg_cancel_settled,
};

static void pg_cancel(keel_conn *c) {
    pg_impl *p = c->impl;
    if (!p || !p->pg || !pg_running(p))
        return;
    if (p->phase == PG_COPY)
        pg_copy_cancel(p);
    keel__cancel_start(&p->cancel, keel__conn_workers(c), p->op_seq);
}

static keel_txn_status pg_txn_status(const keel_conn *c) {
    const pg_impl *p = c->impl;
    if (!p || !p->pg || p->phase == PG_DEAD)
        return KEEL_TXN_UNKNOWN;
    switch (PQtransactionStatus(p->pg)) {
    case PQTRANS_IDLE:
        return KEEL_TXN_IDLE;
    case PQTRANS_INTRANS:
        return KEEL_TXN_ACTIVE;
    case PQTRANS_INERROR:
        return KEEL_TXN_FAILED;
    default:
        return KEEL_TXN_UNKNOWN;
    }
}

static void pg_close(keel_conn *c) {
    pg_impl *p = c->impl;
    if (!p)
        return;
    c->impl = NULL;
    pg_destroy(p);
}

const keel__engine keel__engine_postgresql = {
    .name = PG_ENGINE,
    .placeholder_style = KEEL__PH_POSTGRES,
    .ident_quote = '"',
    .check_config = pg_check_config,
    .connect = pg_connect,
    .query = pg_query,
    .copy_in = pg_copy_in,
    .transaction = pg_transaction,
    .cancel = pg_cancel,
    .txn_status = pg_txn_status,
    .close = pg_close,
};
