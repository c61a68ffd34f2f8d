/* src/core/error.c - the status string table and helpers for filling keel_error. */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/error_int.h"

/* One table for names and descriptions, indexed by status; it only ever grows. */
static const struct {
    const char *name;
    const char *description;
} status_table[] = {
    [KEEL_OK] = { "KEEL_OK", "success" },
    [KEEL_ERR_NOMEM] = { "KEEL_ERR_NOMEM", "out of memory" },
    [KEEL_ERR_INVALID_ARGUMENT] = { "KEEL_ERR_INVALID_ARGUMENT", "invalid argument" },
    [KEEL_ERR_CONFIG] = { "KEEL_ERR_CONFIG", "invalid configuration" },
    [KEEL_ERR_URL] = { "KEEL_ERR_URL", "malformed database URL" },
    [KEEL_ERR_UNKNOWN_DATABASE] = { "KEEL_ERR_UNKNOWN_DATABASE", "unknown database" },
    [KEEL_ERR_CONNECT] = { "KEEL_ERR_CONNECT", "could not connect" },
    [KEEL_ERR_CONNECTION_LOST] = { "KEEL_ERR_CONNECTION_LOST", "connection lost" },
    [KEEL_ERR_POOL_TIMEOUT] = { "KEEL_ERR_POOL_TIMEOUT",
                                "timed out waiting for a pooled connection" },
    [KEEL_ERR_TIMEOUT] = { "KEEL_ERR_TIMEOUT", "operation timed out" },
    [KEEL_ERR_CANCELLED] = { "KEEL_ERR_CANCELLED", "operation cancelled" },
    [KEEL_ERR_PROGRAMMING] = { "KEEL_ERR_PROGRAMMING", "invalid statement" },
    [KEEL_ERR_INTEGRITY] = { "KEEL_ERR_INTEGRITY", "integrity constraint violated" },
    [KEEL_ERR_DATA] = { "KEEL_ERR_DATA", "invalid data value" },
    [KEEL_ERR_PARAMETERS] = { "KEEL_ERR_PARAMETERS", "wrong statement parameters" },
    [KEEL_ERR_TRANSACTION] = { "KEEL_ERR_TRANSACTION", "invalid transaction state" },
    [KEEL_ERR_DATABASE] = { "KEEL_ERR_DATABASE", "database error" },
    [KEEL_ERR_UNSUPPORTED] = { "KEEL_ERR_UNSUPPORTED", "not supported" },
    [KEEL_ERR_CLOSED] = { "KEEL_ERR_CLOSED", "handle is closed" },
    [KEEL_ERR_BUSY] = { "KEEL_ERR_BUSY", "another operation is in progress" },
    [KEEL_ERR_IO] = { "KEEL_ERR_IO", "I/O error" },
    [KEEL_ERR_INTERNAL] = { "KEEL_ERR_INTERNAL", "internal error" },
    [KEEL_ERR_OPERATIONAL] = { "KEEL_ERR_OPERATIONAL", "operational error" },
};

#define STATUS_COUNT (sizeof(status_table) / sizeof(status_table[0]))

const char *keel_status_name(keel_status status) {
    if ((unsigned)status < STATUS_COUNT && status_table[status].name)
        return status_table[status].name;
    return "KEEL_ERR_UNKNOWN";
}

const char *keel_strerror(keel_status status) {
    if ((unsigned)status < STATUS_COUNT && status_table[status].description)
        return status_table[status].description;
    return "unknown status";
}

/* Empties the server fields and reserved. */
static void clear_fields(keel_error *err) {
    err->detail[0] = '\0';
    err->hint[0] = '\0';
    err->schema_name[0] = '\0';
    err->table_name[0] = '\0';
    err->column_name[0] = '\0';
    err->constraint_name[0] = '\0';
    err->datatype_name[0] = '\0';
    err->server_code = 0;
    err->violation = KEEL_VIOLATION_NONE;
    memset(err->reserved, 0, sizeof err->reserved);
}

void keel_error_clear(keel_error *err) {
    if (!err)
        return;
    err->code = KEEL_OK;
    err->sqlstate[0] = '\0';
    err->engine[0] = '\0';
    err->database[0] = '\0';
    err->message[0] = '\0';
    clear_fields(err);
}

static void copy_field(char *dst, size_t size, const char *src) {
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

keel_status keel__error_set(keel_error *err, keel_status code, const char *engine,
                            const char *database, const char *fmt, ...) {
    if (!err)
        return code;
    err->code = code;
    err->sqlstate[0] = '\0';
    clear_fields(err);
    copy_field(err->engine, sizeof err->engine, engine ? engine : "keel");
    copy_field(err->database, sizeof err->database, database);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

/* The kind of constraint a SQLSTATE of class 23 names (PostgreSQL's codes, which SQLite's
 * errors use too); MySQL's 23000 names none. */
static keel_violation violation_of_sqlstate(const char *s) {
    static const struct {
        char state[6];
        keel_violation kind;
    } kinds[] = {
        { "23505", KEEL_VIOLATION_UNIQUE },    { "23503", KEEL_VIOLATION_FOREIGN_KEY },
        { "23502", KEEL_VIOLATION_NOT_NULL },  { "23514", KEEL_VIOLATION_CHECK },
        { "23P01", KEEL_VIOLATION_EXCLUSION },
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(s, kinds[i].state) == 0)
            return kinds[i].kind;
    return KEEL_VIOLATION_NONE;
}

void keel__error_set_sqlstate(keel_error *err, const char *sqlstate) {
    if (!err)
        return;
    copy_field(err->sqlstate, sizeof err->sqlstate, sqlstate);
    keel_violation kind = violation_of_sqlstate(err->sqlstate);
    if (kind != KEEL_VIOLATION_NONE)
        err->violation = kind;
}

void keel__error_set_server_code(keel_error *err, int64_t code, keel_violation violation) {
    if (!err)
        return;
    err->server_code = code;
    if (violation != KEEL_VIOLATION_NONE)
        err->violation = violation;
}

void keel__error_set_field(keel_error *err, keel__error_field which, const char *value,
                           size_t len) {
    if (!err)
        return;
    char *dst;
    size_t size;
    int text = 0;
    switch (which) {
    case KEEL__ERRF_DETAIL:
        dst = err->detail, size = sizeof err->detail, text = 1;
        break;
    case KEEL__ERRF_HINT:
        dst = err->hint, size = sizeof err->hint, text = 1;
        break;
    case KEEL__ERRF_SCHEMA:
        dst = err->schema_name, size = sizeof err->schema_name;
        break;
    case KEEL__ERRF_TABLE:
        dst = err->table_name, size = sizeof err->table_name;
        break;
    case KEEL__ERRF_COLUMN:
        dst = err->column_name, size = sizeof err->column_name;
        break;
    case KEEL__ERRF_CONSTRAINT:
        dst = err->constraint_name, size = sizeof err->constraint_name;
        break;
    case KEEL__ERRF_DATATYPE:
        dst = err->datatype_name, size = sizeof err->datatype_name;
        break;
    default:
        return;
    }
    if (!value)
        value = "";
    size_t n = len == SIZE_MAX ? strlen(value) : strnlen(value, len);
    char raw[KEEL_ERROR_DETAIL_MAX];
    if (n >= sizeof raw)
        n = sizeof raw - 1;
    memcpy(raw, value, n);
    raw[n] = '\0';
    if (!text) {
        copy_field(dst, size, raw);
        return;
    }
    for (char *s = raw; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
    keel__redact(dst, size, raw);
}

void keel__error_copy(keel_error *dst, const keel_error *src) {
    if (dst && src && dst != src)
        *dst = *src;
}

keel_status keel__status_from_sqlstate(const char *s) {
    if (!s || strlen(s) != 5)
        return KEEL_ERR_DATABASE;
    char cls[3] = { s[0], s[1], '\0' };
    if (strcmp(cls, "23") == 0)
        return KEEL_ERR_INTEGRITY;
    if (strcmp(cls, "42") == 0 || strcmp(cls, "26") == 0 || strcmp(cls, "34") == 0 ||
        strcmp(cls, "3D") == 0 || strcmp(cls, "3F") == 0)
        return KEEL_ERR_PROGRAMMING;
    if (strcmp(cls, "22") == 0)
        return KEEL_ERR_DATA;
    if (strcmp(cls, "08") == 0)
        return KEEL_ERR_CONNECTION_LOST;
    if (strcmp(cls, "25") == 0 || strcmp(cls, "40") == 0 || strcmp(cls, "2D") == 0)
        return KEEL_ERR_TRANSACTION;
    if (strcmp(cls, "0A") == 0)
        return KEEL_ERR_UNSUPPORTED;
    return KEEL_ERR_DATABASE;
}

/* Case-insensitive prefix test used by the redactor. */
static int has_prefix_ci(const char *s, const char *prefix) {
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*prefix))
            return 0;
    return 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * The character at p for the redactor's purposes, and in *width how many bytes it spans. When
 * decode is set, a percent-escape of a delimiter that separates secrets from their surroundings
 * ("%40" for '@', "%3A" for ':', "%3D" for '='…) counts as that delimiter: a URL or an option
 * string nested, percent-encoded, in another one (a query parameter's value) uses them.
 */
static char delim_at(const char *p, int decode, size_t *width) {
    *width = 1;
    if (p[0] != '%' || !decode)
        return p[0];
    int hi = hex_digit(p[1]), lo = hi < 0 ? -1 : hex_digit(p[2]);
    if (lo < 0)
        return p[0];
    char c = (char)(hi * 16 + lo);
    if (c == '\0' || !strchr(":/@?=&;, ", c))
        return p[0];
    *width = 3;
    return c;
}

/* Appends the n bytes at s to dst[*o…], stopping short of the last byte of dst. */
static void put_bytes(char *dst, size_t size, size_t *o, const char *s, size_t n) {
    for (size_t i = 0; i < n && *o + 1 < size; i++)
        dst[(*o)++] = s[i];
}

/* Secret-bearing keywords: password=, passwd=, PWD= (ODBC), in any case, also inside words
 * (sslpassword=, db_password:). */
static size_t secret_keyword(const char *p) {
    static const char *const words[] = { "password", "passwd", "pwd" };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (has_prefix_ci(p, words[i]))
            return strlen(words[i]);
    return 0;
}

/*
 * When p starts a keyword and its separator ("password=", "PWD =", "password: ", JSON's
 * "password": ), returns the position right after the separator and spaces, where the value
 * starts, and sets *encoded when the separator was percent-encoded ("password%3D…" inside a
 * query parameter): the value's delimiters are then percent-encoded too. Else NULL. MySQL's
 * "(using password: YES)" says whether a password was sent, not what it was, and is left
 * readable.
 */
static const char *keyword_value(const char *p, int *encoded) {
    size_t kw = secret_keyword(p);
    if (!kw)
        return NULL;
    const char *q = p + kw;
    if (*q == '"' || *q == '\'')
        q++; /* the closing quote of a JSON or quoted key */
    while (*q == ' ')
        q++;
    size_t w;
    char sep = delim_at(q, 1, &w);
    if (sep != '=' && sep != ':')
        return NULL;
    *encoded = w > 1;
    q += w;
    while (*q == ' ')
        q++;
    if (sep == ':' && (strncmp(q, "YES)", 4) == 0 || strncmp(q, "NO)", 3) == 0))
        return NULL;
    return q;
}

/* The end of a keyword's value starting at v: a quoted value ('…' or "…" with backslash
 * escapes, {…} with }} escapes as ODBC writes it) up to its closing quote, otherwise up to
 * whitespace or a separator of options and parameters (& ; , and, when encoded, their
 * percent-escapes and that of a space). */
static const char *value_end(const char *v, int encoded) {
    if (*v == '\'' || *v == '"') {
        char quote = *v++;
        while (*v && *v != quote)
            v += v[0] == '\\' && v[1] ? 2 : 1;
        return *v ? v + 1 : v;
    }
    if (*v == '{') {
        for (v++; *v; v++)
            if (*v == '}') {
                if (v[1] != '}')
                    return v + 1;
                v++;
            }
        return v;
    }
    while (*v && !isspace((unsigned char)*v)) {
        size_t w;
        char c = delim_at(v, encoded, &w);
        if (c == '&' || c == ';' || c == ',' || c == ' ')
            break;
        v += w;
    }
    return v;
}

/*
 * When p is the "://" of a URL, finds the password of its userinfo: *from receives the first
 * byte to mask, and the return value is where copying resumes (the '@' after the password).
 * NULL when the URL carries no password. The URL ends at whitespace; its userinfo ends at its
 * last '@' before the query, or at its last '@' at all when a '?' comes first (a password may
 * hold an unencoded '?' or '/', which the URL parser accepts, and masking too much is the safe
 * mistake). A percent-encoded "://" (%3A%2F%2F) is a URL nested in another one's query, whose
 * own delimiters are then percent-encoded; in a plain URL, "%40" is an '@' of the user name or
 * password, not a delimiter.
 */
static const char *url_password(const char *p, const char **from) {
    size_t w1, w2, w3;
    if (delim_at(p, 1, &w1) != ':' || delim_at(p + w1, 1, &w2) != '/' ||
        delim_at(p + w1 + w2, 1, &w3) != '/')
        return NULL;
    int encoded = w1 + w2 + w3 > 3;
    const char *start = p + w1 + w2 + w3;
    const char *at = NULL, *at_any = NULL, *query = NULL;
    for (const char *q = start; *q && !isspace((unsigned char)*q);) {
        size_t w;
        char c = delim_at(q, encoded, &w);
        if (c == '?' && !query)
            query = q;
        if (c == '@') {
            at_any = q;
            if (!query)
                at = q;
        }
        q += w;
    }
    if (!at)
        at = at_any;
    if (!at)
        return NULL;
    for (const char *q = start; q < at;) {
        size_t w;
        if (delim_at(q, encoded, &w) == ':') {
            *from = q + w;
            return at;
        }
        q += w;
    }
    return NULL;
}

void keel__redact(char *dst, size_t size, const char *src) {
    if (!dst || size == 0)
        return;
    if (!src)
        src = "";
    size_t o = 0;
    for (const char *p = src; *p && o + 1 < size;) {
        int encoded;
        const char *v = keyword_value(p, &encoded);
        if (v) {
            put_bytes(dst, size, &o, p, (size_t)(v - p));
            put_bytes(dst, size, &o, "***", 3);
            p = value_end(v, encoded);
            continue;
        }
        const char *from, *resume = url_password(p, &from);
        if (resume) {
            put_bytes(dst, size, &o, p, (size_t)(from - p));
            put_bytes(dst, size, &o, "***", 3);
            p = resume;
            continue;
        }
        dst[o++] = *p++;
    }
    dst[o] = '\0';
}
