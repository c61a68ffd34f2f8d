/* src/core/url.c - parsing and redaction of database URLs (postgresql, sqlite, mysql, mongodb). */
#include "core/url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error_int.h"
#include "core/secret.h"

/* The schemes we accept, and what each is stored as in keel__url.scheme. */
static const struct {
    const char *name;
    const char *stored;
} url_schemes[] = {
    { "postgresql", "postgresql" },   { "postgres", "postgresql" },
    { "sqlite", "sqlite" },           { "mysql", "mysql" },
    { "mariadb", "mariadb" },         { "mongodb", "mongodb" },
    { "mongodb+srv", "mongodb+srv" },
};

/* What scheme (lower-cased) is stored as, or NULL when keel does not know it. */
static const char *url_scheme_stored(const char *scheme) {
    for (size_t i = 0; i < sizeof url_schemes / sizeof url_schemes[0]; i++)
        if (strcmp(scheme, url_schemes[i].name) == 0)
            return url_schemes[i].stored;
    return NULL;
}

#define URL_EXPECTED_SCHEMES "postgresql, postgres, sqlite, mysql, mariadb, mongodb or mongodb+srv"
#define URL_SQLITE_FORMS                                                                           \
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite::memory:"
#define URL_ENCODE_HINT                                                                            \
    "percent-encode reserved characters such as '@', ':', '/' and '?' in the user name and "       \
    "password"

/* State shared by the parsing steps of one URL, mostly so every error can show the URL. */
typedef struct url_ctx {
    const char *url;
    keel_error *err;
    keel__url *out;
    /* Set when the URL has an '@' we could not attribute to userinfo: then host and port text
     * may really be pieces of a password, so errors must not echo them. */
    int suspicious;
} url_ctx;

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alnum(int c) { return is_alpha(c) || is_digit(c); }
static int to_lower(int c) { return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c; }

static int hex_value(int c) {
    if (is_digit(c))
        return c - '0';
    c = to_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Finds the last occurrence of c in [s, end), or NULL. */
static const char *find_last(const char *s, const char *end, char c) {
    const char *found = NULL;
    for (; s < end; s++)
        if (*s == c)
            found = s;
    return found;
}

/* Finds the first occurrence of c in [s, end), or NULL. */
static const char *find_first(const char *s, const char *end, char c) {
    for (; s < end; s++)
        if (*s == c)
            return s;
    return NULL;
}

/*
 * Reports a URL error. The message is the formatted text followed by "in <label> URL '<url>'"
 * with the URL redacted, then the optional hint in parentheses.
 */
static keel_status url_fail(url_ctx *ctx, const char *label, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static keel_status url_fail(url_ctx *ctx, const char *label, const char *hint, const char *fmt,
                            ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char *shown = keel__url_redact(ctx->url);
    keel__error_set(ctx->err, KEEL_ERR_URL, NULL, NULL, "%s in %s URL '%s'%s%s%s", what, label,
                    shown ? shown : "(not shown)", hint ? " (" : "", hint ? hint : "",
                    hint ? ")" : "");
    free(shown);
    return KEEL_ERR_URL;
}

static keel_status url_nomem(url_ctx *ctx) {
    return keel__error_set(ctx->err, KEEL_ERR_NOMEM, NULL, NULL,
                           "out of memory parsing a database URL");
}

/*
 * Percent-decodes [s, s+n) into a new string. Returns 0, 1 when an escape is malformed (or
 * decodes to NUL, which no C string can carry) with *bad pointing at its '%', or -1 when out of
 * memory.
 */
static int pct_decode(const char *s, size_t n, char **out, const char **bad) {
    char *d = malloc(n + 1);
    if (!d)
        return -1;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? hex_value((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(d, j); /* what was decoded may be part of a password */
            free(d);
            *bad = s + i;
            return 1;
        }
        d[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    d[j] = '\0';
    *out = d;
    return 0;
}

/*
 * Decodes one component. what names it in errors; secret components never have their escape
 * text echoed. An empty component gives NULL when empty_is_null is set.
 */
static keel_status decode_part(url_ctx *ctx, const char *s, size_t n, const char *what, int secret,
                               int empty_is_null, char **out) {
    *out = NULL;
    if (n == 0 && empty_is_null)
        return KEEL_OK;
    const char *bad = NULL;
    int rc = pct_decode(s, n, out, &bad);
    if (rc < 0)
        return url_nomem(ctx);
    if (rc > 0) {
        if (secret)
            return url_fail(ctx, "database", "write '%' as %25", "invalid percent-escape in the %s",
                            what);
        size_t blen = (size_t)(s + n - bad) < 3 ? (size_t)(s + n - bad) : 3;
        return url_fail(ctx, "database", "write '%' as %25",
                        "invalid percent-escape '%.*s' in the %s", (int)blen, bad, what);
    }
    return KEEL_OK;
}

/* Parses the decimal port [s, s+n) into *port: 1..65535, digits only. */
static keel_status parse_port(url_ctx *ctx, const char *s, size_t n, int *port) {
    long v = 0;
    int ok = n > 0 && n <= 5;
    for (size_t i = 0; ok && i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            ok = 0;
        else
            v = v * 10 + (s[i] - '0');
    }
    if (!ok || v < 1 || v > 65535) {
        if (ctx->suspicious)
            return url_fail(ctx, "database", URL_ENCODE_HINT, "invalid port");
        return url_fail(ctx, "database", "expected a number from 1 to 65535", "invalid port '%.*s'",
                        (int)n, s);
    }
    *port = (int)v;
    return KEEL_OK;
}

/* Checks a bracketed IPv6 literal's inside: hex digits, ':' and '.', an optional %25zone. */
static keel_status check_ipv6(url_ctx *ctx, const char *s, size_t n) {
    const char *zone = NULL;
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == '%' && s[i + 1] == '2' && s[i + 2] == '5') {
            zone = s + i;
            break;
        }
    const char *addr_end = zone ? zone : s + n;
    int colons = 0;
    for (const char *p = s; p < addr_end; p++) {
        if (*p == ':')
            colons++;
        else if (*p != '.' && hex_value((unsigned char)*p) < 0)
            return url_fail(ctx, "database", NULL, "invalid IPv6 address '[%.*s]'", (int)n, s);
    }
    if (colons < 2)
        return url_fail(ctx, "database", NULL, "invalid IPv6 address '[%.*s]'", (int)n, s);
    if (zone) {
        const char *z = zone + 3;
        if (z == s + n)
            return url_fail(ctx, "database", NULL, "empty IPv6 zone in '[%.*s]'", (int)n, s);
        for (; z < s + n; z++)
            if (!is_alnum((unsigned char)*z) && *z != '-' && *z != '_' && *z != '.' && *z != '~')
                return url_fail(ctx, "database", NULL, "invalid IPv6 zone in '[%.*s]'", (int)n, s);
    }
    return KEEL_OK;
}

/*
 * Parses one "host[:port]" element [s, s+n) ("[v6]:port" too). *host receives the decoded host
 * (IPv6 without brackets), *ipv6 whether it was bracketed, *port the port or 0.
 */
static keel_status parse_hostport(url_ctx *ctx, const char *s, size_t n, int allow_port,
                                  char **host, int *ipv6, int *port) {
    const char *scheme = ctx->out->scheme;
    const char *end = s + n;
    const char *port_text = NULL;
    *host = NULL;
    *ipv6 = 0;
    *port = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = find_first(s, end, ']');
        if (!close)
            return url_fail(ctx, "database", NULL, "unterminated IPv6 address (missing ']')");
        keel_status st = check_ipv6(ctx, s + 1, (size_t)(close - s - 1));
        if (st)
            return st;
        if (close + 1 < end) {
            if (close[1] != ':')
                return url_fail(ctx, "database", NULL, "unexpected text after the IPv6 address");
            port_text = close + 2;
        }
        st = decode_part(ctx, s + 1, (size_t)(close - s - 1), "host", 0, 0, host);
        if (st)
            return st;
        *ipv6 = 1;
    } else {
        const char *colon = find_first(s, end, ':');
        const char *host_end = colon ? colon : end;
        if (host_end == s)
            return url_fail(ctx, scheme, NULL, "missing host");
        for (const char *p = s; p < host_end; p++) {
            unsigned char c = (unsigned char)*p;
            if (!is_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~' && c != '%') {
                if (ctx->suspicious)
                    return url_fail(ctx, "database", URL_ENCODE_HINT,
                                    "invalid character in the host");
                /* A byte that is not printable ASCII (a UTF-8 letter) is named by its value:
                 * printed as a character it would be half of one. */
                if (c < 0x21 || c > 0x7e)
                    return url_fail(ctx, "database", NULL,
                                    "invalid byte 0x%02X in the host (host names are ASCII: an "
                                    "international name goes in its punycode form, xn--…)",
                                    c);
                return url_fail(ctx, "database", NULL, "invalid character '%c' in the host", c);
            }
        }
        keel_status st =
            decode_part(ctx, s, (size_t)(host_end - s), "host", ctx->suspicious, 0, host);
        if (st)
            return st;
        if (colon)
            port_text = colon + 1;
    }
    if (port_text) {
        if (!allow_port) {
            free(*host);
            *host = NULL;
            return url_fail(ctx, scheme, NULL, "a port is not allowed");
        }
        keel_status st = parse_port(ctx, port_text, (size_t)(end - port_text), port);
        if (st) {
            free(*host);
            *host = NULL;
            return st;
        }
    }
    return KEEL_OK;
}

/* Appends [s, s+n) to the growing string *dst of length *len. Returns 0 or -1 (OOM). */
static int append(char **dst, size_t *len, const char *s, size_t n) {
    char *d = realloc(*dst, *len + n + 1);
    if (!d)
        return -1;
    memcpy(d + *len, s, n);
    *len += n;
    d[*len] = '\0';
    *dst = d;
    return 0;
}

/*
 * Parses the host part [s, s+n). MongoDB accepts a comma-separated list of hosts (a replica
 * set seed list): the whole list is kept in host ("h1:27017,h2") and port stays 0.
 */
static keel_status parse_hosts(url_ctx *ctx, const char *s, size_t n) {
    keel__url *out = ctx->out;
    const char *end = s + n;
    int is_srv = strcmp(out->scheme, "mongodb+srv") == 0;
    int multi_ok = strcmp(out->scheme, "mongodb") == 0;
    int ipv6;
    if (!find_first(s, end, ','))
        return parse_hostport(ctx, s, n, !is_srv, &out->host, &ipv6, &out->port);
    if (!multi_ok)
        return url_fail(ctx, out->scheme, NULL, "several hosts are not supported");
    char *list = NULL;
    size_t len = 0;
    for (const char *p = s;;) {
        const char *comma = find_first(p, end, ',');
        const char *e = comma ? comma : end;
        char *host;
        int port;
        keel_status st = parse_hostport(ctx, p, (size_t)(e - p), 1, &host, &ipv6, &port);
        if (st) {
            free(list);
            return st;
        }
        char portbuf[16] = "";
        if (port)
            snprintf(portbuf, sizeof portbuf, ":%d", port);
        int rc =
            (len ? append(&list, &len, ",", 1) : 0) || (ipv6 ? append(&list, &len, "[", 1) : 0) ||
            append(&list, &len, host, strlen(host)) || (ipv6 ? append(&list, &len, "]", 1) : 0) ||
            append(&list, &len, portbuf, strlen(portbuf));
        free(host);
        if (rc) {
            free(list);
            return url_nomem(ctx);
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    out->host = list;
    return KEEL_OK;
}

static char *redact_part(const char *url, size_t a, size_t b);

/* Parses the query string [s, end) (after the '?'): key=value pairs separated by '&'. */
static keel_status parse_query(url_ctx *ctx, const char *s, const char *end) {
    keel__url *out = ctx->out;
    while (s < end) {
        const char *amp = find_first(s, end, '&');
        const char *e = amp ? amp : end;
        if (e > s) {
            const char *eq = find_first(s, e, '=');
            if (!eq) {
                /* The text is echoed as it shows in the redacted URL the message quotes, and
                 * through the redactor of messages: it may be a secret written without its key
                 * ("?sslpassword:x"), or a piece of the password of a URL nested in the query
                 * that an unencoded '&' cut off ("?to=postgresql://u:pa&ss@h"). */
                char *text = redact_part(ctx->url, (size_t)(s - ctx->url), (size_t)(e - ctx->url));
                if (!text)
                    return url_nomem(ctx);
                char shown[80];
                keel__redact(shown, sizeof shown, text);
                free(text);
                return url_fail(ctx, "database", "expected key=value",
                                "query parameter '%s' has no value", shown);
            }
            if (eq == s)
                return url_fail(ctx, "database", "expected key=value",
                                "query parameter with an empty name");
            char **keys = realloc(out->keys, (out->nparams + 1) * sizeof *keys);
            if (!keys)
                return url_nomem(ctx);
            out->keys = keys;
            char **values = realloc(out->values, (out->nparams + 1) * sizeof *values);
            if (!values)
                return url_nomem(ctx);
            out->values = values;
            char *key;
            keel_status st =
                decode_part(ctx, s, (size_t)(eq - s), "name of a query parameter", 0, 0, &key);
            if (st)
                return st;
            char what[96];
            snprintf(what, sizeof what, "value of query parameter '%s'", key);
            char *value;
            st = decode_part(ctx, eq + 1, (size_t)(e - eq - 1), what, 1, 0, &value);
            if (st) {
                free(key);
                return st;
            }
            out->keys[out->nparams] = key;
            out->values[out->nparams] = value;
            out->nparams++;
        }
        s = amp ? amp + 1 : end;
    }
    return KEEL_OK;
}

/*
 * SQLite, as SQLAlchemy writes it: sqlite:///relative.db, sqlite:////absolute.db,
 * sqlite:///:memory:, sqlite:// (memory) and sqlite::memory:, each optionally followed by a query.
 */
static keel_status parse_sqlite(url_ctx *ctx, const char *p) {
    keel__url *out = ctx->out;
    const char *end = p + strlen(p);
    const char *q = find_first(p, end, '?');
    const char *qend = q ? q : end;
    const char *path = NULL, *path_end = NULL;
    static const char memory[] = ":memory:";
    if ((size_t)(qend - p) == sizeof memory - 1 && memcmp(p, memory, sizeof memory - 1) == 0) {
        path = p;
        path_end = qend;
    } else if (qend - p >= 2 && p[0] == '/' && p[1] == '/') {
        const char *auth = p + 2;
        const char *slash = find_first(auth, qend, '/');
        const char *auth_end = slash ? slash : qend;
        if (auth_end != auth)
            return url_fail(ctx, "sqlite", URL_SQLITE_FORMS, "unexpected host or credentials");
        if (slash) {
            path = slash + 1;
            path_end = qend;
        }
    } else {
        return url_fail(ctx, "sqlite", URL_SQLITE_FORMS, "expected '//' after 'sqlite:'");
    }
    if (path && path_end > path) {
        keel_status st =
            decode_part(ctx, path, (size_t)(path_end - path), "path", 0, 0, &out->path);
        if (st)
            return st;
    } else {
        /* An empty path is an in-memory database, as in SQLAlchemy. */
        out->path = strdup(memory);
        if (!out->path)
            return url_nomem(ctx);
    }
    return q ? parse_query(ctx, q + 1, end) : KEEL_OK;
}

/* Server URLs: scheme://[user[:password]@]host[:port][/database][?key=value&…]. */
static keel_status parse_server(url_ctx *ctx, const char *p) {
    keel__url *out = ctx->out;
    if (p[0] != '/' || p[1] != '/')
        return url_fail(ctx, "database", NULL, "expected '//' after '%s:'", out->scheme);
    const char *rest = p + 2;
    const char *end = rest + strlen(rest);
    const char *q = find_first(rest, end, '?');
    const char *qend = q ? q : end;
    /* The last '@' before the query ends the userinfo, so an unencoded '@' or '/' in a password
     * still parses (and, above all, is never mistaken for a host and echoed). */
    const char *at = find_last(rest, qend, '@');
    const char *h = rest;
    if (at) {
        const char *colon = find_first(rest, at, ':');
        const char *user_end = colon ? colon : at;
        keel_status st =
            decode_part(ctx, rest, (size_t)(user_end - rest), "user name", 0, 1, &out->user);
        if (st)
            return st;
        if (colon) {
            st = decode_part(ctx, colon + 1, (size_t)(at - colon - 1), "password", 1, 0,
                             &out->password);
            if (st)
                return st;
        }
        h = at + 1;
    } else if (q && find_first(q, end, '@')) {
        ctx->suspicious = 1;
    }
    const char *hend = h;
    while (hend < qend && *hend != '/')
        hend++;
    keel_status st = parse_hosts(ctx, h, (size_t)(hend - h));
    if (st)
        return st;
    if (hend < qend) {
        st = decode_part(ctx, hend + 1, (size_t)(qend - hend - 1), "database name", 0, 1,
                         &out->path);
        if (st)
            return st;
    }
    return q ? parse_query(ctx, q + 1, end) : KEEL_OK;
}

keel_status keel__url_parse(const char *url, keel__url *out, keel_error *err) {
    if (!out || !url)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel__url_parse: url and out must not be NULL");
    memset(out, 0, sizeof *out);
    url_ctx ctx = { url, err, out, 0 };
    if (!*url)
        return url_fail(&ctx, "database",
                        "expected e.g. postgresql://user@host/db or sqlite:///path.db",
                        "empty value");
    for (const char *p = url; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f)
            return url_fail(&ctx, "database", "percent-encode it",
                            "whitespace or control character at offset %zu", (size_t)(p - url));
    }
    size_t n = 0;
    if (is_alpha((unsigned char)url[0]))
        /* '_' too, which RFC 3986 leaves out, for SQLAlchemy drivers such as oracle+cx_oracle. */
        while (is_alnum((unsigned char)url[n]) || url[n] == '+' || url[n] == '-' || url[n] == '.' ||
               url[n] == '_')
            n++;
    if (n == 0 || url[n] != ':')
        return url_fail(&ctx, "database",
                        "expected e.g. postgresql://user@host/db or sqlite:///path.db",
                        "missing scheme");
    char scheme[48];
    const char *stored = NULL;
    if (n < sizeof scheme) {
        for (size_t i = 0; i < n; i++)
            scheme[i] = (char)to_lower((unsigned char)url[i]);
        scheme[n] = '\0';
        stored = url_scheme_stored(scheme);
        /* SQLAlchemy's and encode/databases' BASE+DRIVER (postgresql+asyncpg, mysql+aiomysql,
         * sqlite+aiosqlite…): keel uses its own drivers, so the driver part is ignored. Not
         * for mongodb, whose mongodb+srv is a scheme of its own. */
        char *plus = strchr(scheme, '+');
        if (!stored && plus && plus[1] != '\0' && !strchr(plus + 1, '+')) {
            *plus = '\0';
            stored = strcmp(scheme, "mongodb") != 0 ? url_scheme_stored(scheme) : NULL;
        }
    }
    if (!stored)
        return url_fail(&ctx, "database",
                        "expected " URL_EXPECTED_SCHEMES
                        " (a SQL scheme may carry a driver, as postgresql+asyncpg: it is ignored)",
                        "unsupported URL scheme '%.*s'", (int)(n < 40 ? n : 40), url);
    out->scheme = strdup(stored);
    if (!out->scheme)
        return url_nomem(&ctx);
    keel_status st = strcmp(stored, "sqlite") == 0 ? parse_sqlite(&ctx, url + n + 1)
                                                   : parse_server(&ctx, url + n + 1);
    if (st)
        keel__url_free(out);
    return st;
}

void keel__url_free(keel__url *u) {
    if (!u)
        return;
    free(u->scheme);
    keel__secret_free(u->user);
    keel__secret_free(u->password);
    keel__secret_free(u->host);
    keel__secret_free(u->path);
    for (size_t i = 0; i < u->nparams; i++) {
        free(u->keys[i]);
        keel__secret_free(u->values[i]); /* password=…, sslpassword=…, tokens */
    }
    free(u->keys);
    free(u->values);
    memset(u, 0, sizeof *u);
}

/* True when a query parameter named [k, k+n) carries a secret (compared case-insensitively). */
static int secret_param(const char *k, size_t n) {
    static const char *const words[] = { "password", "secret", "token", "authmechanismproperties" };
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++) {
            size_t j = 0;
            while (j < wl && to_lower((unsigned char)k[i + j]) == words[w][j])
                j++;
            if (j == wl)
                return 1;
        }
    }
    return 0;
}

/* A byte range [from, to) of a URL that redaction replaces with "***" (it may be empty). */
typedef struct url_mask {
    size_t from, to;
} url_mask;

/*
 * The ranges of url that redaction masks, in order and disjoint: the password, then the values of
 * secret query parameters. Returns a malloc'ed array (at most one range per '&' plus two) and
 * sets *n, or NULL when out of memory. keel__url_redact shows these ranges and the error
 * messages of keel__url_parse echo pieces of the URL through them, so that an error can never
 * show what the URL it quotes hides.
 */
static url_mask *url_masks(const char *url, size_t *n) {
    size_t len = strlen(url);
    size_t amps = 0;
    for (const char *p = url; *p; p++)
        amps += *p == '&';
    url_mask *m = malloc((amps + 2) * sizeof *m);
    if (!m)
        return NULL;
    *n = 0;
    const char *end = url + len;
    const char *sep = strstr(url, "://");
    /* Without "//" there is no reliable scheme boundary ("user:pass@host" looks like a scheme),
     * so the whole string is searched for userinfo. */
    const char *rest = sep ? sep + 3 : url;
    const char *q = find_first(rest, end, '?');
    const char *at = find_last(rest, q ? q : end, '@');
    /* An '@' only after the '?' may end a password that contains an unencoded '?': masking up
     * to it can hide a harmless query value too, which is the safe mistake to make. */
    if (!at)
        at = find_last(rest, end, '@');
    const char *colon = at ? find_first(rest, at, ':') : NULL;
    const char *s = url;
    if (colon) {
        m[(*n)++] = (url_mask){ (size_t)(colon + 1 - url), (size_t)(at - url) };
        s = at;
    }
    /* The query: after the first '?' that follows the password, or, when the password ran up
     * to an '@' in the query, the rest of the query after that '@'. */
    const char *tq = find_first(s, end, '?');
    for (s = tq ? tq + 1 : q && s > q ? s : end; s < end;) {
        const char *amp = find_first(s, end, '&');
        const char *e = amp ? amp : end;
        const char *eq = find_first(s, e, '=');
        if (eq && secret_param(s, (size_t)(eq - s))) {
            m[(*n)++] = (url_mask){ (size_t)(eq + 1 - url), (size_t)(e - url) };
        } else if (!eq && secret_param(s, (size_t)(e - s))) {
            /* No '=' to tell name from value ("sslpassword:x"): what follows a ':' after the
             * secret's name goes, else the whole parameter. */
            const char *c = find_first(s, e, ':');
            if (c && secret_param(s, (size_t)(c - s)))
                s = c + 1;
            m[(*n)++] = (url_mask){ (size_t)(s - url), (size_t)(e - url) };
        }
        s = amp ? amp + 1 : end;
    }
    return m;
}

/*
 * Writes url[a, b) to d as keel__url_redact shows it: each of the n masks that overlaps it (or
 * is empty and lies within it) becomes "***". d has room for b - a + 3 * n bytes. Returns the
 * new end of d.
 */
static char *render_masked(char *d, const char *url, size_t a, size_t b, const url_mask *m,
                           size_t n) {
    size_t i = a;
    for (size_t k = 0; k < n; k++) {
        size_t from = m[k].from < a ? a : m[k].from, to = m[k].to > b ? b : m[k].to;
        if (from > b || to < from || (to == from && m[k].from < m[k].to))
            continue;
        memcpy(d, url + i, from - i);
        d += from - i;
        memcpy(d, "***", 3);
        d += 3;
        i = to;
    }
    memcpy(d, url + i, b - i);
    return d + (b - i);
}

/* url[a, b) as keel__url_redact(url) shows it, malloc'ed; NULL when out of memory. */
static char *redact_part(const char *url, size_t a, size_t b) {
    size_t n;
    url_mask *m = url_masks(url, &n);
    if (!m)
        return NULL;
    char *res = malloc(b - a + 3 * n + 1);
    if (res)
        *render_masked(res, url, a, b, m, n) = '\0';
    free(m);
    return res;
}

char *keel__url_redact(const char *url) {
    if (!url)
        url = "";
    return redact_part(url, 0, strlen(url));
}
