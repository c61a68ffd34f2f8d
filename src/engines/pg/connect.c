/* src/engines/pg/connect.c - PostgreSQL configuration checks and connection set-up. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/numtext.h"
#include "core/value_int.h"
#include "core/secret.h"
#include "engines/pg/batch.h"
#include "engines/pg/connect.h"
#include "engines/pg/paramtypes.h"
#include "engines/pg/copy.h"
#include "engines/pg/exec.h"
#include "engines/pg/stmtcache.h"
#include "engines/settings.h"

#define PG_DEFAULT_TIMEOUT_S 10.0
/* Host list entries longer than this are no host names (DNS allows 253 bytes): libpq gets
 * them as they are. */
#define PG_HOST_NAME_MAX 255
/* Prepared statements kept per connection unless options.statement_cache_size says otherwise. */
#define PG_CACHE_DEFAULT 100
/* The largest statement_cache_size accepted: a lookup walks the cache from the most recently
 * used entry, comparing hashes, so its cost grows with the size. */
#define PG_CACHE_MAX 10000

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

keel_status keel__pg_check_config(const keel__dbconfig *dbc, keel_error *err) {
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
    for (size_t i = 0; i < p->nkw; i++)
        keel__secret_free(p->kw_vals[i]);
    free(p->kw_keys);
    free(p->kw_vals);
    p->kw_keys = NULL;
    p->kw_vals = NULL;
    p->nkw = 0;
}

static keel_status pg_kw_add(pg_impl *p, const char *key, char *val, keel_error *err) {
    if (!val)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
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
    if (!p->kw_keys || !p->kw_vals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
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
        /* The value of a reference is checked now, as a literal one was with the config; it is
         * not quoted, since a reference usually stands for a secret. */
        const char *problem = pg_option_value_problem(key, v);
        if (problem) {
            st = keel__error_set(err, KEEL_ERR_CONFIG, PG_ENGINE, keel__pg_dbname(p->c),
                                 "databases.%s.options.%s: invalid value (expected %s)",
                                 keel__pg_dbname(p->c), key, problem);
            keel__secret_free(v);
            break;
        }
        if (strcmp(key, "statement_cache_size") == 0) {
            /* Checked by keel__pg_check_config; a keel option that libpq must not see. */
            p->cache.capacity = (size_t)atoi(v);
            keel__secret_free(v);
            continue;
        }
        if (strcmp(key, "connect_timeout") == 0) {
            /* keel enforces the connect deadline itself; libpq only does in blocking mode. */
            if (dbc->connect_timeout <= 0) {
                double d = keel__strtod(v, NULL);
                if (d > 0)
                    p->timeout_s = d;
            }
            keel__secret_free(v);
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

void keel__pg_connect_failed(pg_impl *p, const keel_error *e) {
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
    p->watch = keel__watch_new(p->c->loop, fd, keel__pg_on_ready, p);
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
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    PQsetNoticeReceiver(p->pg, pg_notice_ignore, NULL);
    keel__pg_key_trace(&p->key, p->pg);
    if (PQstatus(p->pg) == CONNECTION_BAD)
        return keel__pg_connect_error(p, err, KEEL_ERR_CONNECT);
    p->phase = PG_CONNECTING;
    /* libpq's first poll ran inside PQconnectStartParams: it now waits to write. */
    if (pg_rewatch(p, KEEL_WRITE) != 0)
        return keel__error_set(err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(p->c),
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
        st = keel__error_set(&err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                             "out of memory");
    } else if (host.len == 0) {
        st = keel__error_set(&err, KEEL_ERR_CONNECT, PG_ENGINE, keel__pg_dbname(p->c), "%s",
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
        keel__pg_connect_failed(p, &err);
}

static void pg_on_timeout(void *arg) {
    pg_impl *p = arg;
    keel_error err;
    keel__error_set(&err, KEEL_ERR_TIMEOUT, PG_ENGINE, keel__pg_dbname(p->c),
                    "connecting to PostgreSQL at %s timed out after %g s", p->where, p->timeout_s);
    keel__pg_connect_failed(p, &err);
}

void keel__pg_ready(pg_impl *p) {
    keel__timer_free(p->timer);
    p->timer = NULL;
    p->phase = PG_IDLE;
    if (keel__watch_set(p->watch, KEEL_READ) != 0) {
        keel_error err;
        keel__error_set(&err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(p->c),
                        "the event loop refused to watch the connection to %s", p->where);
        keel__pg_connect_failed(p, &err);
        return;
    }
    keel__conn_connected(p->c, NULL);
}

int keel__pg_style_off(const PGconn *pg) {
    const char *ds = PQparameterStatus(pg, "DateStyle");
    const char *is = PQparameterStatus(pg, "IntervalStyle");
    return (ds && strncmp(ds, "ISO", 3) != 0) || (is && strcmp(is, "postgres") != 0);
}

/*
 * Decoding relies on DateStyle ISO, IntervalStyle postgres and integer timestamps. The session setting is checked
 * rather than forced through the startup "options" keyword, which poolers such as pgbouncer
 * reject.
 */
static void pg_handshake_done(pg_impl *p) {
    keel_error err;
    keel__pg_key_done(&p->key, p->pg);
    /* Only now: PQsetnonblocking clears the error text, which during the handshake holds the
     * host and port of the attempt in progress. The handshake itself never blocks. */
    if (PQsetnonblocking(p->pg, 1) != 0) {
        keel__pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        keel__pg_connect_failed(p, &err);
        return;
    }
    const char *idt = PQparameterStatus(p->pg, "integer_datetimes");
    if (idt && strcmp(idt, "on") != 0) {
        keel__error_set(&err, KEEL_ERR_UNSUPPORTED, PG_ENGINE, keel__pg_dbname(p->c),
                        "the server at %s uses floating-point timestamps (integer_datetimes "
                        "off), which keel does not support",
                        p->where);
        keel__pg_connect_failed(p, &err);
        return;
    }
    if (!keel__pg_style_off(p->pg)) {
        keel__pg_ready(p);
        return;
    }
    keel__pg_op_reset(p);
    p->phase = PG_SETUP;
    if (!PQsendQuery(p->pg, KEEL__PG_STYLE_SQL) || keel__pg_after_send(p) != 0) {
        keel__pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        keel__pg_connect_failed(p, &err);
    }
}

void keel__pg_connect_step(pg_impl *p) {
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
        keel__pg_connect_error(p, &err, KEEL_ERR_CONNECT);
        keel__pg_connect_failed(p, &err);
        return;
    }
    keel__error_set(&err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(p->c),
                    "the event loop refused to watch the connection to %s", p->where);
    keel__pg_connect_failed(p, &err);
}

void keel__pg_destroy(pg_impl *p) {
    keel__dns_abandon(p->dns);
    keel__cancel_stop(&p->cancel);
    keel__pg_key_done(&p->key, p->pg);
    keel__watch_free(p->watch);
    keel__timer_free(p->timer);
    keel__defer_free(p->resume);
    if (p->part)
        PQclear(p->part);
    keel_result_free(p->res);
    free(p->kinds);
    if (p->pg)
        PQfinish(p->pg);
    pg_kw_free(p);
    keel__values_free(p->bvals);
    free(p->pvals);
    free(p->plens);
    free(p->pfmts);
    free(p->ptypes);
    keel__buf_free(&p->ptext);
    keel__buf_free(&p->sqlbuf);
    keel__buf_free(&p->pbin);
    keel__buf_free(&p->parr);
    keel__pg_ptypes_free(p);
    keel__pg_cache_free(p);
    keel__pg_copy_free(p);
    keel__pg_wire_free(p);
    free(p);
}

keel_status keel__pg_connect(keel_conn *c, keel_error *err) {
    pg_impl *p = calloc(1, sizeof *p);
    if (!p)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    p->c = c;
    p->phase = PG_CONNECTING;
    keel__cancel_init(&p->cancel, c->loop, &keel__pg_cancel_ops, p);
    keel__pg_cache_init(p, PG_CACHE_DEFAULT);
    keel__pg_ptypes_init(p);
    p->timeout_s = c->config->connect_timeout > 0 ? c->config->connect_timeout : 0;
    keel_status st = pg_build_keywords(p, err);
    if (st != KEEL_OK) {
        keel__pg_destroy(p);
        return st;
    }
    if (p->timeout_s <= 0)
        p->timeout_s = PG_DEFAULT_TIMEOUT_S;
    int64_t deadline = keel_now_ms() + (int64_t)(p->timeout_s * 1000.0 + 0.5);
    p->timer = keel__timer_new(c->loop, pg_on_timeout, p);
    p->resume = keel__defer_new(c->loop, keel__pg_resume, p);
    if (!p->resume) {
        keel__pg_destroy(p);
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c), "out of memory");
    }
    if (!p->timer || keel__timer_arm(p->timer, deadline) != 0) {
        keel__pg_destroy(p);
        return keel__error_set(err, KEEL_ERR_INTERNAL, PG_ENGINE, keel__pg_dbname(c),
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
            keel__pg_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(c),
                                   "out of memory");
        }
        if (keel__dns_submit(d, workers, deadline, pg_dns_done, p) == 0) {
            p->dns = d;
            p->phase = PG_RESOLVING;
            c->impl = p;
            return KEEL_OK;
        }
        keel__dns_free(d);
    }
    st = pg_start_libpq(p, err);
    if (st != KEEL_OK) {
        keel__pg_destroy(p);
        return st;
    }
    c->impl = p;
    return KEEL_OK;
}
