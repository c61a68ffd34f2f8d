/* src/engines/mysql/connect.c - MySQL configuration checks and connection set-up. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "core/numtext.h"
#include "core/secret.h"
#include "engines/mysql/connect.h"
#include "engines/mysql/exec.h"
#include "engines/mysql/stmtcache.h"
#include "engines/settings.h"

#define MY_DEFAULT_PORT 3306u
#define MY_DEFAULT_CHARSET "utf8mb4"
#define MY_DEFAULT_TIMEOUT_S 10.0
#define MY_SESSION_SETUP "SET time_zone = '+00:00'"

static const char *const my_ssl_names[] = { "DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA",
                                            "VERIFY_IDENTITY" };

/*
 * A connect run with the blocking API on the worker pool, for TLS connections. libmariadb 3.3
 * performs the TLS handshake with blocking waits even in non-blocking mode, and checks the
 * certificate against the host it was given (so a name cannot be swapped for an address
 * resolved beforehand). The handle is prepared on the loop, connected on a worker, and switched
 * to non-blocking mode when it comes back. The job owns copies of what it reads.
 */
struct my_wconn {
    my_impl *owner; /* NULL once the connection is gone: the handle is then closed */
    MYSQL *m;
    MYSQL *ret;
    char *host; /* a name or an address, NULL for a Unix socket */
    char *unix_socket;
    char *user;
    char *password;
    char *database;
    unsigned port;
};

/* Every setting may have been resolved from a ${…} reference: all are wiped. */
void keel__my_settings_free(my_settings *s) {
    keel__secret_free(s->addr);
    keel__secret_free(s->unix_socket);
    keel__secret_free(s->user);
    keel__secret_free(s->password);
    keel__secret_free(s->charset);
    keel__secret_free(s->ssl_ca);
    keel__secret_free(s->ssl_cert);
    keel__secret_free(s->ssl_key);
    memset(s, 0, sizeof *s);
}

/* strdup that accepts NULL; sets *oom when a copy fails. */
static char *my_dup(const char *s, int *oom) {
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

int keel__my_settings_copy(my_settings *dst, const my_settings *src) {
    int oom = 0;
    memset(dst, 0, sizeof *dst);
    dst->addr = my_dup(src->addr, &oom);
    dst->unix_socket = my_dup(src->unix_socket, &oom);
    dst->port = src->port;
    dst->user = my_dup(src->user, &oom);
    dst->password = my_dup(src->password, &oom);
    dst->charset = my_dup(src->charset, &oom);
    dst->ssl_mode = src->ssl_mode;
    dst->ssl_ca = my_dup(src->ssl_ca, &oom);
    dst->ssl_cert = my_dup(src->ssl_cert, &oom);
    dst->ssl_key = my_dup(src->ssl_key, &oom);
    if (oom)
        keel__my_settings_free(dst);
    return oom ? -1 : 0;
}

/*
 * TLS that ssl_mode REQUIRED and up demand must be refused before the client's first reply
 * to the server's greeting, which carries the user name and the authentication data: a server,
 * or a man in the middle who clears the TLS flag of the greeting, would otherwise receive them
 * in plain text (and could then ask for the cleartext password plugin). libmariadb 3.3 refuses
 * a server that offers no TLS at that point only when the certificate is verified
 * (MYSQL_OPT_SSL_VERIFY_SERVER_CERT, which also checks the host name: VERIFY_IDENTITY) or when
 * a peer fingerprint is set; it tests the fingerprint option for presence there, and compares
 * it after the TLS handshake only when it is not empty. So an empty fingerprint makes 3.3
 * refuse early ("SSL is required, but the server does not support it") and checks nothing
 * else. libmariadb 3.4 compares even an empty fingerprint, so the option is set for 3.3 only;
 * elsewhere the check after the handshake (my_connected) is the one that remains.
 */
static int my_refuses_plaintext_early(void) {
    unsigned long v = mysql_get_client_version();
    return v >= 30300 && v < 30400;
}

int keel__my_apply(MYSQL *m, const my_settings *s) {
    unsigned proto = s->unix_socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    unsigned no_infile = 0;
    int rc = 0;
    rc |= mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    rc |= mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &no_infile);
    rc |= mysql_options(m, MYSQL_SET_CHARSET_NAME, s->charset ? s->charset : MY_DEFAULT_CHARSET);
    rc |= mysql_options4(m, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "keel");
    if (s->ssl_mode != SSL_DISABLED) {
        /* In libmariadb 3.3 this asks for TLS when the server offers it; REQUIRED and up are
         * enforced before anything is sent (my_refuses_plaintext_early) and again after the
         * handshake. A CA makes OpenSSL verify the chain; the host name is checked only for
         * VERIFY_IDENTITY. */
        my_bool yes = 1;
        rc |= mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &yes);
        if (s->ssl_ca)
            rc |= mysql_options(m, MYSQL_OPT_SSL_CA, s->ssl_ca);
        if (s->ssl_cert)
            rc |= mysql_options(m, MYSQL_OPT_SSL_CERT, s->ssl_cert);
        if (s->ssl_key)
            rc |= mysql_options(m, MYSQL_OPT_SSL_KEY, s->ssl_key);
        if (s->ssl_mode == SSL_VERIFY_IDENTITY)
            rc |= mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &yes);
        if (s->ssl_mode >= SSL_REQUIRED && my_refuses_plaintext_early())
            rc |= mysql_options(m, MARIADB_OPT_TLS_PEER_FP, "");
    }
    return rc ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */

/* Keys with a field of their own in the database config. */
static const struct {
    const char *key;
    const char *field;
} my_reserved[] = {
    { "host", "host" },         { "port", "port" },         { "user", "user" },
    { "password", "password" }, { "database", "database" }, { "dbname", "database" },
};

static const char *const my_known[] = { "charset",  "connect_timeout", "ssl_mode", "ssl_ca",
                                        "ssl_cert", "ssl_key",         NULL };

/* ssl_mode by name, in either case, with '-' or '_'; -1 when unknown. */
static int my_ssl_mode(const char *v) {
    char norm[24];
    size_t n = strlen(v);
    if (n >= sizeof norm)
        return -1;
    for (size_t i = 0; i <= n; i++)
        norm[i] = v[i] == '-' ? '_' : (char)toupper((unsigned char)v[i]);
    for (int i = 0; i < (int)(sizeof my_ssl_names / sizeof my_ssl_names[0]); i++)
        if (strcmp(norm, my_ssl_names[i]) == 0)
            return i;
    return -1;
}

/*
 * keel's text is always UTF-8, in both directions: a session in another character set would
 * have the server convert what keel sends and reads, corrupting it. Only MySQL's names of
 * UTF-8 pass (utf8 being utf8mb3 or utf8mb4, as the server's old_mode decides).
 */
static int my_is_utf8_charset(const char *v) {
    return strcasecmp(v, "utf8mb4") == 0 || strcasecmp(v, "utf8mb3") == 0 ||
           strcasecmp(v, "utf8") == 0;
}

/* Checks the value of a known option; NULL when fine, else what is expected. */
static const char *my_option_problem(const char *key, const char *v) {
    if (strstr(v, "${"))
        return NULL; /* a secret reference: checked when it is resolved, at connect time */
    if (strcmp(key, "charset") == 0 && !my_is_utf8_charset(v))
        return "utf8mb4, utf8mb3 or utf8: keel's text is always UTF-8, and another character set "
               "would corrupt it";
    if (strcmp(key, "ssl_mode") == 0 && my_ssl_mode(v) < 0)
        return "one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY";
    if (strcmp(key, "connect_timeout") == 0 && !keel__settings_is_seconds(v))
        return "a non-negative number of seconds";
    if ((strncmp(key, "ssl_", 4) == 0 && strcmp(key, "ssl_mode") != 0) && !*v)
        return "a file path";
    return NULL;
}

keel_status keel__my_check_config(const keel__dbconfig *dbc, keel_error *err) {
    const char *name = dbc->name ? dbc->name : "";
    keel_status st = keel__settings_check_network(dbc, MY_ENGINE, err);
    if (st != KEEL_OK)
        return st;
    int has_ca = 0, has_cert = 0, has_key = 0, mode = -1;
    for (size_t i = 0; i < dbc->noptions; i++) {
        const char *key = dbc->options[i].key;
        const char *val = dbc->options[i].value ? dbc->options[i].value : "";
        for (size_t r = 0; r < sizeof my_reserved / sizeof my_reserved[0]; r++)
            if (strcmp(key, my_reserved[r].key) == 0)
                return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                                       "databases.%s.options.%s: set databases.%s.%s instead", name,
                                       key, name, my_reserved[r].field);
        if (!keel__word_in_list(key, my_known))
            return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                                   "databases.%s.options.%s: unknown MySQL option", name, key);
        const char *problem = my_option_problem(key, val);
        if (problem)
            return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                                   "databases.%s.options.%s: invalid value \"%s\" (expected %s)",
                                   name, key, val, problem);
        has_ca |= strcmp(key, "ssl_ca") == 0;
        has_cert |= strcmp(key, "ssl_cert") == 0;
        has_key |= strcmp(key, "ssl_key") == 0;
        if (strcmp(key, "ssl_mode") == 0 && !strstr(val, "${"))
            mode = my_ssl_mode(val);
    }
    if (has_cert != has_key)
        return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                               "databases.%s.options.%s: a client certificate needs both ssl_cert "
                               "and ssl_key",
                               name, has_cert ? "ssl_key" : "ssl_cert");
    if ((mode == SSL_VERIFY_CA || mode == SSL_VERIFY_IDENTITY) && !has_ca)
        return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                               "databases.%s.options.ssl_ca: ssl_mode %s needs the CA "
                               "certificate to verify the server against",
                               name, my_ssl_names[mode]);
    if (mode == SSL_DISABLED && (has_ca || has_cert))
        return keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, name,
                               "databases.%s.options.ssl_mode: DISABLED contradicts the TLS "
                               "files configured in databases.%s.options",
                               name, name);
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Connecting                                                                               */

/* Resolves every setting from the config now, so rotated secrets are picked up. */
static keel_status my_build_settings(my_impl *p, keel_error *err) {
    const keel__dbconfig *dbc = p->c->config;
    my_settings *s = &p->set;
    keel_status st = KEEL_OK;
    char *ssl_mode = NULL;
    if (dbc->host)
        st = keel__settings_resolve(dbc, "host", dbc->host, &p->host, err);
    if (st == KEEL_OK && dbc->user)
        st = keel__settings_resolve(dbc, "user", dbc->user, &s->user, err);
    if (st == KEEL_OK && dbc->password)
        st = keel__settings_resolve(dbc, "password", dbc->password, &s->password, err);
    if (st == KEEL_OK && dbc->database)
        st = keel__settings_resolve(dbc, "database", dbc->database, &p->database, err);
    for (size_t i = 0; st == KEEL_OK && i < dbc->noptions; i++) {
        const char *key = dbc->options[i].key;
        char *v = NULL;
        st = keel__settings_resolve_option(dbc, &dbc->options[i], &v, err);
        if (st != KEEL_OK)
            break;
        char **slot = strcmp(key, "charset") == 0    ? &s->charset
                      : strcmp(key, "ssl_ca") == 0   ? &s->ssl_ca
                      : strcmp(key, "ssl_cert") == 0 ? &s->ssl_cert
                      : strcmp(key, "ssl_key") == 0  ? &s->ssl_key
                      : strcmp(key, "ssl_mode") == 0 ? &ssl_mode
                                                     : NULL;
        if (strcmp(key, "connect_timeout") == 0) {
            /* The value of a reference is checked now (charset and ssl_mode below). */
            if (!keel__settings_is_seconds(v)) {
                st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, keel__my_dbname(p->c),
                                     "databases.%s.options.connect_timeout: invalid value "
                                     "(expected %s)",
                                     keel__my_dbname(p->c), my_option_problem(key, "x"));
                keel__secret_free(v);
                break;
            }
            double d = keel__strtod(v, NULL);
            if (d > 0 && dbc->connect_timeout <= 0)
                p->timeout_s = d;
        }
        if (slot) {
            keel__secret_free(*slot);
            *slot = v;
        } else {
            keel__secret_free(v);
        }
    }
    if (st == KEEL_OK && !s->charset && !(s->charset = strdup(MY_DEFAULT_CHARSET)))
        st =
            keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(p->c), "out of memory");
    if (st == KEEL_OK) {
        /* The resolved values of references are checked here, the literal ones were checked
         * with the config. */
        const char *problem = s->charset ? my_option_problem("charset", s->charset) : NULL;
        if (problem)
            st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, keel__my_dbname(p->c),
                                 "databases.%s.options.charset: invalid value (expected %s)",
                                 keel__my_dbname(p->c), problem);
        if (st == KEEL_OK && ssl_mode) {
            s->ssl_mode = my_ssl_mode(ssl_mode);
            if (s->ssl_mode < 0)
                st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, keel__my_dbname(p->c),
                                     "databases.%s.options.ssl_mode: invalid value (expected %s)",
                                     keel__my_dbname(p->c), my_option_problem("ssl_mode", "x"));
            else if (s->ssl_mode >= SSL_VERIFY_CA && !s->ssl_ca)
                st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, keel__my_dbname(p->c),
                                     "databases.%s.options.ssl_ca: ssl_mode %s needs the CA "
                                     "certificate to verify the server against",
                                     keel__my_dbname(p->c), my_ssl_names[s->ssl_mode]);
        } else if (st == KEEL_OK) {
            /* TLS files without a mode ask for TLS when the server offers it. */
            s->ssl_mode = s->ssl_ca || s->ssl_cert ? SSL_PREFERRED : SSL_DISABLED;
        }
    }
    free(ssl_mode);
    if (st != KEEL_OK)
        return st;
    s->port = dbc->port > 0 ? (unsigned)dbc->port : MY_DEFAULT_PORT;
    const char *host = p->host && *p->host ? p->host : MY_DEFAULT_HOST;
    if (host[0] == '/') {
        if (!(s->unix_socket = strdup(host)))
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(p->c),
                                   "out of memory");
        snprintf(p->where, sizeof p->where, "socket %s", host);
    } else {
        snprintf(p->where, sizeof p->where, "host %s, port %u", host, s->port);
    }
    return KEEL_OK;
}

static int my_is_address(const char *h) {
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, addr) == 1 || inet_pton(AF_INET6, h, addr) == 1;
}

/* Stops watching: the watch goes before libmariadb closes the socket under it. */
static void my_unwatch(my_impl *p) {
    keel__watch_free(p->watch);
    p->watch = NULL;
    p->watch_fd = -1;
}

int keel__my_watch_socket(my_impl *p, int fd) {
    if (fd < 0)
        return -1;
    if (fd == p->watch_fd && p->watch)
        return 0;
    my_unwatch(p);
    p->watch = keel__watch_new(p->c->loop, fd, keel__my_on_ready, p);
    if (!p->watch)
        return -1;
    p->watch_fd = fd;
    return 0;
}

/* Closes the handle. An operation in flight (a call, or rows half read) is abandoned: its
 * socket is shut down first so the goodbye libmariadb sends cannot block, and a socket a
 * suspended connect still owns (libmariadb forgets it) is closed here. */
static void my_close_handle(my_impl *p) {
    int fd = -1, orphan = 0;
    if (p->m && (p->call != C_NONE || p->dsrc || p->dstmt)) {
        fd = (int)mysql_get_socket(p->m);
        orphan = p->call == C_CONNECT && !p->m->net.pvio;
    }
    my_unwatch(p);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    /* Rows still being read go before the handle they belong to. */
    keel__my_rows_abandon(p);
    if (p->m) {
        mysql_close(p->m);
        p->m = NULL;
    }
    if (orphan && fd >= 0)
        close(fd);
    p->call = C_NONE;
}

/* Reports a connect failure (or defers it out of a start function). */
static int my_connect_failed(my_impl *p, const keel_error *e) {
    keel_error copy = *e;
    p->phase = MY_DEAD;
    keel__timer_free(p->deadline);
    p->deadline = NULL;
    keel__timer_arm(p->libtimer, -1);
    keel__dns_abandon(p->dns);
    p->dns = NULL;
    if (p->wconn) {
        p->wconn->owner = NULL;
        p->wconn = NULL;
    }
    my_close_handle(p);
    if (p->in_start) {
        p->err = copy;
        p->failed = 1;
        p->report = R_CONNECT;
        if (keel__defer_schedule(p->kick) != 0)
            p->report = R_NONE; /* keel__my_connect returns the error itself */
        return 1;
    }
    keel__conn_connected(p->c, &copy);
    return 1;
}

int keel__my_connect_error(my_impl *p, keel_status code, const char *what) {
    keel_error err;
    char clean[KEEL_ERROR_MESSAGE_MAX];
    keel__redact(clean, sizeof clean, what);
    keel__error_set(&err, code, MY_ENGINE, keel__my_dbname(p->c),
                    "could not connect to MySQL at %s: %s", p->where, clean);
    return my_connect_failed(p, &err);
}

/* Creates the handle for the next address and makes C_CONNECT the call to start. */
static int my_new_handle(my_impl *p) {
    my_close_handle(p);
    free(p->set.addr);
    p->set.addr = NULL;
    if (!p->set.unix_socket) {
        if (p->addr_next >= p->naddrs)
            return keel__my_connect_error(p, KEEL_ERR_CONNECT, "no address to connect to");
        if (!(p->set.addr = strdup(p->addrs[p->addr_next++])))
            return keel__my_connect_error(p, KEEL_ERR_NOMEM, "out of memory");
    }
    p->m = mysql_init(NULL);
    if (!p->m)
        return keel__my_connect_error(p, KEEL_ERR_NOMEM, "out of memory");
    if (mysql_options(p->m, MYSQL_OPT_NONBLOCK, 0) != 0 || keel__my_apply(p->m, &p->set) != 0 ||
        mysql_options(p->m, MYSQL_INIT_COMMAND, MY_SESSION_SETUP) != 0)
        return keel__my_connect_error(p, KEEL_ERR_CONNECT, mysql_error(p->m));
    p->call = C_CONNECT;
    return 0;
}

/* The handshake succeeded: check TLS, learn the server, become idle and report. */
static int my_connected(my_impl *p) {
    if (p->set.ssl_mode >= SSL_REQUIRED && !mysql_get_ssl_cipher(p->m)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the server did not use TLS, which ssl_mode %s requires",
                 my_ssl_names[p->set.ssl_mode]);
        return keel__my_connect_error(p, KEEL_ERR_CONNECT, msg);
    }
    p->thread_id = mysql_thread_id(p->m);
    unsigned long caps = 0, ext = 0;
    mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_CAPABILITIES, &caps);
    mariadb_get_infov(p->m, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext);
    p->bulk_ok = !(caps & CLIENT_MYSQL) && (ext & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32));
    if (keel__my_watch_socket(p, (int)mysql_get_socket(p->m)) != 0 ||
        keel__watch_set(p->watch, KEEL_READ) != 0)
        return keel__my_connect_error(p, KEEL_ERR_INTERNAL,
                                      "the event loop refused to watch the connection");
    if (p->in_start) {
        p->failed = 0;
        if (keel__defer_schedule(p->kick) != 0)
            return keel__my_connect_error(p, KEEL_ERR_INTERNAL, "the event loop refused a timer");
        p->report = R_CONNECT;
    }
    keel__timer_free(p->deadline);
    p->deadline = NULL;
    p->phase = MY_IDLE;
    if (p->in_start)
        return 1;
    keel__conn_connected(p->c, NULL);
    return 1;
}

int keel__my_after_connect(my_impl *p) {
    if (p->r_mysql)
        return my_connected(p);
    unsigned no = mysql_errno(p->m);
    /* Another address of the name may work where this one refused or was unreachable. */
    if ((no == CR_CONN_HOST_ERROR || no == CR_CONNECTION_ERROR) && !p->set.unix_socket &&
        p->addr_next < p->naddrs)
        return my_new_handle(p);
    char msg[KEEL_ERROR_MESSAGE_MAX];
    snprintf(msg, sizeof msg, "%s", mysql_error(p->m));
    if (no == CR_SSL_CONNECTION_ERROR && p->set.ssl_mode >= SSL_REQUIRED &&
        strstr(msg, "server does not support"))
        snprintf(msg, sizeof msg,
                 "the server did not offer TLS, which ssl_mode %s requires; the connection was "
                 "refused before the user name or password was sent",
                 my_ssl_names[p->set.ssl_mode]);
    keel_status code = no == ER_CON_COUNT_ERROR || no == ER_TOO_MANY_USER_CONNECTIONS
                           ? KEEL_ERR_OPERATIONAL
                           : KEEL_ERR_CONNECT;
    keel_error err;
    char clean[KEEL_ERROR_MESSAGE_MAX];
    keel__redact(clean, sizeof clean, msg);
    keel__error_set(&err, code, MY_ENGINE, keel__my_dbname(p->c),
                    "could not connect to MySQL at %s: %s", p->where, clean);
    const char *state = mysql_sqlstate(p->m);
    if (state && strcmp(state, "HY000") != 0 && strcmp(state, "00000") != 0)
        keel__error_set_sqlstate(&err, state);
    return my_connect_failed(p, &err);
}

static void my_on_deadline(void *arg) {
    my_impl *p = arg;
    keel_error err;
    keel__error_set(&err, KEEL_ERR_TIMEOUT, MY_ENGINE, keel__my_dbname(p->c),
                    "connecting to MySQL at %s timed out after %g s", p->where, p->timeout_s);
    my_connect_failed(p, &err);
}

/*
 * On the loop thread, after the lookup: connect to the addresses found, in turn. An address
 * the name repeats is tried once.
 */
static void my_dns_done(void *arg, keel__dns_result *r) {
    my_impl *p = arg;
    p->dns = NULL;
    keel__dns_addrs *found = &r->found[0];
    if (r->oom || found->n == 0) {
        keel_error err;
        if (r->oom)
            keel__error_set(&err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(p->c),
                            "out of memory");
        else
            keel__error_set(&err, KEEL_ERR_CONNECT, MY_ENGINE, keel__my_dbname(p->c),
                            "could not connect to MySQL at %s: %s", p->where,
                            r->message[0] ? r->message : "no address found for the host");
        my_connect_failed(p, &err);
        return;
    }
    p->addrs = found->addr;
    p->naddrs = 0;
    for (size_t i = 0; i < found->n; i++) {
        int dup = 0;
        for (size_t j = 0; j < p->naddrs; j++)
            if (strcmp(p->addrs[j], found->addr[i]) == 0)
                dup = 1;
        if (dup)
            free(found->addr[i]);
        else
            p->addrs[p->naddrs++] = found->addr[i];
    }
    found->addr = NULL;
    found->n = 0;
    p->phase = MY_CONNECTING;
    if (my_new_handle(p) == 0)
        keel__my_run(p, 0, 0);
}

static void my_wconn_free(my_wconn *w) {
    keel__secret_free(w->host);
    keel__secret_free(w->unix_socket);
    keel__secret_free(w->user);
    keel__secret_free(w->password);
    keel__secret_free(w->database);
    free(w);
}

/* Runs on a worker thread: the whole handshake, blocking, bounded by the connect timeout. */
static void my_wconn_run(void *arg) {
    my_wconn *w = arg;
    keel__my_tls_errors_clear();
    w->ret = mysql_real_connect(w->m, w->unix_socket ? MY_DEFAULT_HOST : w->host, w->user,
                                w->password, w->database, w->port, w->unix_socket,
                                CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_FOUND_ROWS);
}

/* The pool was freed before the handshake ended (on the worker): nobody waits for it. */
static void my_wconn_drop(void *arg) {
    my_wconn *w = arg;
    mysql_close(w->m);
    my_wconn_free(w);
}

/* On the loop thread: the handle comes back, connected or with its error. */
static void my_wconn_done(void *arg) {
    my_wconn *w = arg;
    my_impl *p = w->owner;
    if (!p) {
        /* Timed out or closed meanwhile; a fresh, idle connection says goodbye at once. */
        mysql_close(w->m);
        my_wconn_free(w);
        return;
    }
    p->wconn = NULL;
    p->m = w->m;
    p->r_mysql = w->ret;
    p->no_io_timeouts = 1;
    my_wconn_free(w);
    if (p->r_mysql) {
        /* The blocking handshake left the socket in blocking mode, in which TLS reads would
         * block the loop instead of asking to wait. */
        int fd = (int)mysql_get_socket(p->m);
        int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
            mysql_options(p->m, MYSQL_OPT_NONBLOCK, 0) != 0) {
            keel__my_connect_error(p, KEEL_ERR_CONNECT, "could not switch to non-blocking mode");
            return;
        }
    }
    keel__my_after_connect(p);
}

/*
 * Starts the blocking connect of my_wconn on the worker pool's CONNECT class. Every wait of the
 * blocking handshake is bounded by the connect timeout: MYSQL_OPT_CONNECT_TIMEOUT bounds the
 * TCP connect and the waits of the TLS handshake, the read and write timeouts (socket timeouts
 * in blocking mode) every read and write, which would otherwise block for as long as a silent
 * server keeps the connection open. The connect gives up at deadline_ms on the loop
 * (my_on_deadline); a handshake still running then ends within about one more timeout and
 * frees itself. Returns 0, or -1.
 */
static int my_wconn_start(my_impl *p, keel__workers *workers, const char *host,
                          int64_t deadline_ms) {
    int oom = 0;
    my_wconn *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->owner = p;
    w->port = p->set.port;
    w->unix_socket = my_dup(p->set.unix_socket, &oom);
    w->user = my_dup(p->set.user, &oom);
    w->password = my_dup(p->set.password, &oom);
    w->database = my_dup(p->database, &oom);
    if (!p->set.unix_socket) {
        w->host = my_dup(host, &oom);
        p->set.addr = my_dup(host, &oom); /* the cancel connection goes there too */
    }
    w->m = oom ? NULL : mysql_init(NULL);
    unsigned t = (unsigned)ceil(p->timeout_s);
    keel__job job = {
        KEEL__JOB_CONNECT, deadline_ms, my_wconn_run, my_wconn_done, my_wconn_drop, w
    };
    if (!w->m || keel__my_apply(w->m, &p->set) != 0 ||
        mysql_options(w->m, MYSQL_OPT_CONNECT_TIMEOUT, &t) != 0 ||
        mysql_options(w->m, MYSQL_OPT_READ_TIMEOUT, &t) != 0 ||
        mysql_options(w->m, MYSQL_OPT_WRITE_TIMEOUT, &t) != 0 ||
        mysql_options(w->m, MYSQL_INIT_COMMAND, MY_SESSION_SETUP) != 0 ||
        keel__workers_submit(workers, &job) != 0) {
        if (w->m)
            mysql_close(w->m);
        my_wconn_free(w);
        return -1;
    }
    p->wconn = w;
    return 0;
}

void keel__my_destroy(my_impl *p) {
    keel__dns_abandon(p->dns);
    if (p->wconn)
        p->wconn->owner = NULL;
    keel__cancel_stop(&p->cancel);
    keel__timer_free(p->deadline);
    keel__timer_free(p->libtimer);
    keel__defer_free(p->kick);
    MYSQL_STMT *closing = p->call == C_STMT_CLOSE ? p->closing : NULL;
    my_close_handle(p);
    /* The handle is closed: the statements are detached and close without a round trip. */
    if (closing) {
        /* Its close was under way, so libmariadb already took it off the handle's list. */
        closing->mysql = NULL;
        mysql_stmt_close(closing);
    }
    keel__my_op_clear(p);
    keel__defer_free(p->slice);
    for (size_t i = 0; i < p->nevict; i++)
        mysql_stmt_close(p->evict[i]);
    keel__my_cache_free(p);
    keel__my_settings_free(&p->set);
    keel__secret_free(p->host);
    keel__secret_free(p->database);
    for (size_t i = 0; i < p->naddrs; i++)
        free(p->addrs[i]);
    free(p->addrs);
    free(p->binds);
    free(p->slots);
    for (size_t i = 0; i < p->ccap; i++)
        free(p->cols[i].buf);
    free(p->cols);
    free(p->rbinds);
    free(p->dkinds);
    free(p->evict);
    keel__buf_free(&p->sqlbuf);
    free(p);
}

keel_status keel__my_connect(keel_conn *c, keel_error *err) {
    /* libmariadb is loaded on the engine's first connection (engines/mysql/lib.h). */
    keel_status lst = keel__my_library(keel__my_dbname(c), err);
    if (lst != KEEL_OK)
        return lst;
    my_impl *p = calloc(1, sizeof *p);
    if (!p)
        return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(c), "out of memory");
    p->c = c;
    keel__cancel_init(&p->cancel, c->loop, &keel__my_cancel_ops, p);
    keel__my_cache_init(p);
    p->watch_fd = -1;
    p->phase = MY_CONNECTING;
    p->timeout_s = c->config->connect_timeout > 0 ? c->config->connect_timeout : 0;
    keel_status st = my_build_settings(p, err);
    if (st != KEEL_OK) {
        keel__my_destroy(p);
        return st;
    }
    if (p->timeout_s <= 0)
        p->timeout_s = MY_DEFAULT_TIMEOUT_S;
    p->deadline = keel__timer_new(c->loop, my_on_deadline, p);
    p->libtimer = keel__timer_new(c->loop, keel__my_on_libtimer, p);
    p->kick = keel__defer_new(c->loop, keel__my_on_kick, p);
    p->slice = keel__defer_new(c->loop, keel__my_on_slice, p);
    int64_t deadline = keel_now_ms() + (int64_t)(p->timeout_s * 1000.0 + 0.5);
    if (!p->deadline || !p->libtimer || !p->kick || !p->slice ||
        keel__timer_arm(p->deadline, deadline) != 0) {
        keel__my_destroy(p);
        return keel__error_set(err, KEEL_ERR_INTERNAL, MY_ENGINE, keel__my_dbname(c),
                               "the event loop refused the connect timers");
    }
    const char *host = p->host && *p->host ? p->host : MY_DEFAULT_HOST;
    int tls = p->set.ssl_mode != SSL_DISABLED;
    keel__workers *workers = NULL;
    if (tls || (!p->set.unix_socket && !my_is_address(host)))
        workers = keel__conn_workers(c);
    if (workers && tls) {
        if (my_wconn_start(p, workers, host, deadline) != 0) {
            keel__my_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(c),
                                   "out of memory");
        }
        c->impl = p;
        return KEEL_OK;
    }
    if (!p->set.unix_socket) {
        if (workers) {
            keel__dns *d = keel__dns_new();
            if (!d || keel__dns_add(d, host, strlen(host)) != 0) {
                keel__dns_free(d);
                keel__my_destroy(p);
                return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(c),
                                       "out of memory");
            }
            if (keel__dns_submit(d, workers, deadline, my_dns_done, p) == 0) {
                p->dns = d;
                p->phase = MY_RESOLVING;
                c->impl = p;
                return KEEL_OK;
            }
            keel__dns_free(d);
        }
        /* An address, or no worker pool (out of memory): libmariadb resolves the name itself,
         * which for an address does not block (nor does anything else then, but TLS). */
        p->addrs = calloc(1, sizeof *p->addrs);
        if (!p->addrs || !(p->addrs[0] = strdup(host))) {
            keel__my_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(c),
                                   "out of memory");
        }
        p->naddrs = 1;
    }
    c->impl = p;
    p->in_start = 1;
    if (my_new_handle(p) == 0)
        keel__my_run(p, 0, 0);
    p->in_start = 0;
    if (p->phase == MY_DEAD && p->report == R_NONE) {
        /* The failure could not be deferred to the kick: it is returned instead. */
        keel_error e = p->err;
        c->impl = NULL;
        keel__my_destroy(p);
        keel__error_copy(err, &e);
        return e.code;
    }
    return KEEL_OK;
}
