/* src/core/error.c - the status string table and helpers for filling keel_error. */
#include <ctype.h>
#include <stdarg.h>
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

void keel_error_clear(keel_error *err) {
    if (!err)
        return;
    err->code = KEEL_OK;
    err->sqlstate[0] = '\0';
    err->engine[0] = '\0';
    err->database[0] = '\0';
    err->message[0] = '\0';
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
    copy_field(err->engine, sizeof err->engine, engine ? engine : "keel");
    copy_field(err->database, sizeof err->database, database);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

void keel__error_set_sqlstate(keel_error *err, const char *sqlstate) {
    if (!err)
        return;
    copy_field(err->sqlstate, sizeof err->sqlstate, sqlstate);
}

void keel__error_copy(keel_error *dst, const keel_error *src) {
    if (dst && src && dst != src)
        *dst = *src;
}

keel_status keel__status_from_sqlstate(const char *s) {
    if (!s || strlen(s) != 5)
        return KEEL_ERR_DATABASE;
    if (strcmp(s, "57014") == 0)
        return KEEL_ERR_CANCELLED;
    if (strcmp(s, "08P01") == 0)
        return KEEL_ERR_PARAMETERS;
    if (strcmp(s, "42P18") == 0 || strcmp(s, "42P02") == 0)
        return KEEL_ERR_PARAMETERS; /* indeterminate datatype / undefined parameter */
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
    if (strcmp(cls, "53") == 0 || strcmp(cls, "57") == 0 || strcmp(cls, "58") == 0 ||
        strcmp(cls, "55") == 0)
        return KEEL_ERR_OPERATIONAL;
    if (strcmp(cls, "0A") == 0)
        return KEEL_ERR_UNSUPPORTED;
    if (strcmp(cls, "XX") == 0)
        return KEEL_ERR_INTERNAL;
    return KEEL_ERR_DATABASE;
}

/* Case-insensitive prefix test used by the redactor. */
static int has_prefix_ci(const char *s, const char *prefix) {
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*prefix))
            return 0;
    return 1;
}

void keel__redact(char *dst, size_t size, const char *src) {
    if (!dst || size == 0)
        return;
    if (!src)
        src = "";
    size_t o = 0;
    for (const char *p = src; *p && o + 1 < size;) {
        /* password=value (conninfo style) or password: value: hide the value. */
        if (has_prefix_ci(p, "password")) {
            const char *q = p + 8;
            while (*q == ' ')
                q++;
            /* MySQL's "Access denied … (using password: YES)" says whether one was sent, not
             * what it was: keep it readable. */
            const char *answer = q + (*q == ':');
            while (*answer == ' ')
                answer++;
            int yes_no =
                *q == ':' && (strncmp(answer, "YES)", 4) == 0 || strncmp(answer, "NO)", 3) == 0);
            if ((*q == '=' || *q == ':') && !yes_no) {
                size_t keep = (size_t)(q - p) + 1;
                for (size_t i = 0; i < keep && o + 1 < size; i++)
                    dst[o++] = p[i];
                for (const char *r = "***"; *r && o + 1 < size; r++)
                    dst[o++] = *r;
                p = q + 1;
                while (*p == ' ')
                    p++;
                if (*p == '\'' || *p == '"') {
                    char quote = *p++;
                    while (*p && *p != quote)
                        p++;
                    if (*p)
                        p++;
                } else {
                    while (*p && *p != ' ' && *p != '&' && *p != ';' && *p != ',')
                        p++;
                }
                continue;
            }
        }
        /* scheme://user:password@host: hide the password part of URL userinfo. */
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            const char *start = p + 3, *at = NULL, *colon = NULL;
            for (const char *q = start; *q && *q != '/' && *q != ' ' && *q != '?'; q++) {
                if (*q == '@')
                    at = q;
                else if (*q == ':' && !colon && !at)
                    colon = q;
            }
            if (at && colon && colon < at) {
                for (const char *q = p; q <= colon && o + 1 < size; q++)
                    dst[o++] = *q;
                for (const char *r = "***"; *r && o + 1 < size; r++)
                    dst[o++] = *r;
                p = at;
                continue;
            }
        }
        dst[o++] = *p++;
    }
    dst[o] = '\0';
}
