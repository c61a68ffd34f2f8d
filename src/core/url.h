/* src/core/url.h - parsing of database URLs into their parts. */
#ifndef KEEL_CORE_URL_H
#define KEEL_CORE_URL_H

#include <stddef.h>
#include <keel/error.h>

/* A parsed URL: every string is malloc'ed and percent-decoded; NULL when absent. */
typedef struct keel__url {
    char *scheme; /* lower-cased: "postgresql" (postgres:// is normalised), "sqlite", … */
    char *user;
    char *password;
    char *host;  /* IPv6 without brackets */
    int port;    /* 0 when absent */
    char *path;  /* database name for servers; the file path or ":memory:" for sqlite */
    char **keys; /* query parameters, in order */
    char **values;
    size_t nparams;
} keel__url;

/*
 * Parses url. Accepts postgresql:// postgres:// sqlite:///relative/path sqlite:////absolute/path
 * sqlite:///:memory: sqlite::memory: and, for later engines, mysql:// mariadb:// mongodb://
 * mongodb+srv://. KEEL_ERR_URL with a message saying what is wrong and where (never including
 * the password). On success the caller frees with keel__url_free.
 */
keel_status keel__url_parse(const char *url, keel__url *out, keel_error *err);
void keel__url_free(keel__url *u);

/* The URL with its password replaced by "***", malloc'ed (for logs and reprs). NULL on OOM. */
char *keel__url_redact(const char *url);

#endif
