/* src/engines/mongo/mongo.c - the MongoDB engine: libmongoc's blocking calls run on a thread of
 * each connection's own (a lane of the worker pool). */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/error_int.h"
#include "core/result_int.h"
#include "core/secret.h"
#include "engines/engine.h"
#include "engines/mongo/lib.h"
#include "engines/settings.h"

#define MG_ENGINE "mongodb"
/* The database commands run against when neither the call nor the configuration names one. */
#define MG_DEFAULT_DATABASE "test"
#define MG_DEFAULT_TIMEOUT_MS 10000
/* Cursors opened on a non-primary server whose server is remembered for getMore. */
#define MG_CURSOR_SLOTS 16
#define MG_TAG_MAX 48
/* The wire version of MongoDB 4.4, the first to take a comment on every command keel tags. */
#define MG_WIRE_COMMENT_EVERYWHERE 9
/* How often a cancel looks for the command in currentOp before giving up (it may not have
 * reached the server yet), and the first pause between two looks; pauses double. */
#define MG_CANCEL_ATTEMPTS 5
#define MG_CANCEL_FIRST_PAUSE_MS 50
/* The bound of each blocking call of a cancel's client, and of the cancel as a whole: one
 * server selection and a currentOp and killOp per attempt could each take the bound, but the
 * attempts stop once the deadline passed. */
#define MG_CANCEL_TIMEOUT_MS 2000
#define MG_CANCEL_DEADLINE_MS 5000

/* ---- process-wide set-up ---- */

static pthread_once_t mg_once = PTHREAD_ONCE_INIT;
static char mg_load_error[200]; /* why libmongoc could not be loaded; written only in the once */
static uint64_t mg_process_nonce;
static atomic_uint_fast64_t mg_tag_counter;

static void mg_init_once(void) {
    if (keel__mongo_lib_load(mg_load_error, sizeof mg_load_error) != 0)
        return;
    mongoc_init();
    /* libmongoc's default handler prints warnings to stderr; a library must not write to the
     * host's streams, and every failure keel cares about reaches the caller as a keel_error. */
    mongoc_log_set_handler(NULL, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mg_process_nonce = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
                       ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&mg_once;
}

/*
 * Loads and initialises libmongoc once per process, on the first use of the engine (checking a
 * MongoDB database's configuration, or connecting). Its global state (the TLS library, the
 * handshake metadata) is deliberately never torn down: mongoc_cleanup while any client of the
 * process, keel's or the host application's own, is still alive would break that client, and
 * keel cannot know when the last one is gone. Nothing is registered to run at exit either.
 * KEEL_ERR_UNSUPPORTED naming the library when it cannot be loaded.
 */
static keel_status mg_init(const char *name, keel_error *err) {
    pthread_once(&mg_once, mg_init_once);
    if (!mg_load_error[0])
        return KEEL_OK;
    return keel__error_set(err, KEEL_ERR_UNSUPPORTED, MG_ENGINE, name,
                           "database '%s' needs libmongoc, which could not be loaded: %s", name,
                           mg_load_error);
}

/* ---- connection state ---- */

typedef enum mg_job_kind { MG_JOB_CONNECT, MG_JOB_COMMAND, MG_JOB_TXN, MG_JOB_CLOSE } mg_job_kind;

/* Which libmongoc helper runs a command, so that the URI's read and write concerns apply. */
typedef enum mg_cmd_kind {
    MG_CMD_GENERIC,   /* mongoc_client_command_with_opts: primary, nothing inherited */
    MG_CMD_READ,      /* read preference and read concern of the URI */
    MG_CMD_WRITE,     /* write concern of the URI */
    MG_CMD_READ_WRITE /* an aggregate that writes ($out, $merge): read and write concern */
} mg_cmd_kind;

typedef enum mg_txn { MG_TXN_IDLE, MG_TXN_ACTIVE, MG_TXN_FAILED } mg_txn;

/* Where a cursor opened on a non-primary server lives, so that getMore finds it again. */
typedef struct mg_cursor {
    int64_t id;
    uint32_t server_id;
} mg_cursor;

/* What a running command and the cancel asked for it share: whichever ends last frees it. Both
 * ends drop their reference on the loop thread, or on their worker when the pool was freed
 * before their end was delivered; finished is read by the cancel's worker. */
typedef struct mg_cancel_link {
    atomic_int refs;
    atomic_int finished;
} mg_cancel_link;

/*
 * The engine state of a connection (keel_conn.impl). Jobs run one at a time, so the fields a job
 * uses are touched by one thread at a time: the worker pool's lock orders a job's run() after
 * the loop's submission and its done() after run(). Only the cancel flag crosses threads while a
 * job runs. Each connection's jobs run on a lane, a thread of its own, so that no command waits
 * for a thread while its connection is free (docs/engines.md, "MongoDB").
 */
typedef struct mg_conn {
    /* Fixed when the connection is created (loop thread), read by jobs. */
    char *name;                /* the configured database name, for errors */
    const keel__dbconfig *dbc; /* owned by the db, which outlives every job */
    int timeout_ms;
    keel__workers *workers;
    keel__lane *lane; /* NULL when none could be started: the ENGINE class runs the jobs */

    /* Set by the connect job; used by one job at a time afterwards. */
    /* Only read once set: the client keeps a copy of its own, and the loop copies it again to
     * start a cancel. */
    mongoc_uri_t *uri;
    mongoc_client_t *client;
    mongoc_client_session_t *session; /* started by the first BEGIN, reused afterwards */
    char *database;                   /* commands' database when the call names none */
    int max_wire;                     /* maxWireVersion of the server found at connect */
    int secondary_reads;              /* the read preference may pick a non-primary server */
    mg_cursor cursors[MG_CURSOR_SLOTS];
    size_t next_cursor;

    /* Set by the loop to stop the running command before it is sent; read by the worker. */
    atomic_int cancel;

    /* The current job: inputs set on the loop before submission, outputs by run(). */
    mg_job_kind kind;
    keel_txn_op op;
    mg_cmd_kind cmd_kind;
    int in_txn;     /* the command belongs to the open transaction */
    int txn_failed; /* COMMIT of a transaction an error already doomed */
    char *cmd_db;
    const char *cmd_name; /* points into cmd */
    bson_t cmd;
    bson_t opts;
    int have_cmd;
    char tag[MG_TAG_MAX]; /* the comment keel added, or "" */
    keel_result *res;
    keel_error err;

    /* Loop thread only. */
    keel_conn *conn;
    mg_txn txn;
    mg_cancel_link *link; /* the cancel of the running command, if any */
    int running;
    int abandoned; /* closed while a job ran: done() closes and frees */
} mg_conn;

/* A cancel in flight: its own copy of the URI and the command's tag, so that it never touches
 * the connection, which may be closed and freed before the cancel ends. */
typedef struct mg_cancel_job {
    mongoc_uri_t *uri;
    int64_t deadline_ms; /* no new attempt starts after it */
    char tag[MG_TAG_MAX];
    mg_cancel_link *link;
} mg_cancel_job;

/* ---- small helpers ---- */

static int mg_in_list_nocase(const char *s, const char *const *list) {
    for (; *list; list++)
        if (strcasecmp(s, *list) == 0)
            return 1;
    return 0;
}

/* Replaces each occurrence of secret in msg (NUL-terminated, size bytes) by "***". */
static void mg_scrub(char *msg, size_t size, const char *secret) {
    if (!secret || !*secret)
        return;
    size_t n = strlen(secret);
    char *from = msg, *p;
    while ((p = strstr(from, secret)) != NULL) {
        size_t at = (size_t)(p - msg);
        if (at + 3 >= size) {
            *p = '\0';
            return;
        }
        size_t tail = strlen(p + n);
        if (at + 3 + tail >= size)
            tail = size - 1 - 3 - at;
        memmove(p + 3, p + n, tail);
        memcpy(p, "***", 3);
        p[3 + tail] = '\0';
        /* Searching on after the stars: a secret made of stars must not match them again. */
        from = p + 3;
    }
}

/* mg_scrub for a secret as it is and as it is percent-encoded in a URI. */
static int mg_put_escaped(keel__buf *b, const char *s, const char *keep);

static void mg_scrub_secret(char *msg, size_t size, const char *secret) {
    if (!secret || !*secret)
        return;
    mg_scrub(msg, size, secret);
    keel__buf enc = { .secret = 1 };
    if (mg_put_escaped(&enc, secret, "") == 0 && enc.data)
        mg_scrub(msg, size, enc.data);
    keel__secret_buf_free(&enc);
}

/* libbson's validation checks keys but not string values: these visitors check every string
 * value, at any depth, and remember the key of the first invalid one. */
static bool mg_check_strings(const bson_t *doc, const char **bad_key);

static bool mg_visit_utf8(const bson_iter_t *it, const char *key, size_t len, const char *s,
                          void *data) {
    (void)it;
    if (bson_utf8_validate(s, len, true))
        return false;
    *(const char **)data = key;
    return true;
}

static bool mg_visit_nested(const bson_iter_t *it, const char *key, const bson_t *doc, void *data) {
    (void)it;
    (void)key;
    return !mg_check_strings(doc, data);
}

/* True when every string value of doc is valid UTF-8 (embedded NULs allowed, as BSON does). */
static bool mg_check_strings(const bson_t *doc, const char **bad_key) {
    static const bson_visitor_t visitor = {
        .visit_utf8 = mg_visit_utf8,
        .visit_document = mg_visit_nested,
        .visit_array = mg_visit_nested,
    };
    bson_iter_t it;
    return bson_iter_init(&it, doc) && !bson_iter_visit_all(&it, &visitor, bad_key);
}

/* ---- URI options ---- */

/* URI options libmongoc takes whose type its mongoc_uri_option_is_* predicates do not report. */
static const char *const mg_other_options[] = {
    MONGOC_URI_AUTHSOURCE,
    MONGOC_URI_AUTHMECHANISM,
    MONGOC_URI_AUTHMECHANISMPROPERTIES,
    MONGOC_URI_GSSAPISERVICENAME,
    MONGOC_URI_CANONICALIZEHOSTNAME,
    MONGOC_URI_W,
    MONGOC_URI_READCONCERNLEVEL,
    MONGOC_URI_READPREFERENCETAGS,
    MONGOC_URI_COMPRESSORS,
    MONGOC_URI_SSLCLIENTCERTIFICATEKEYFILE,
    MONGOC_URI_SSLCLIENTCERTIFICATEKEYPASSWORD,
    MONGOC_URI_SSLCERTIFICATEAUTHORITYFILE,
    NULL,
};

/* Options of libmongoc's own connection pool: keel pools connections itself. */
static const char *const mg_pool_options[] = {
    MONGOC_URI_MAXPOOLSIZE,
    MONGOC_URI_MINPOOLSIZE,
    MONGOC_URI_WAITQUEUETIMEOUTMS,
    MONGOC_URI_WAITQUEUEMULTIPLE,
    NULL,
};

static int mg_option_known(const char *key) {
    return mongoc_uri_option_is_int32(key) || mongoc_uri_option_is_int64(key) ||
           mongoc_uri_option_is_bool(key) || mongoc_uri_option_is_utf8(key) ||
           mg_in_list_nocase(key, mg_other_options);
}

/* Whether an option's value is a secret, never to be shown even in a parse error. */
static int mg_option_secret(const char *key) { return strcasestr(key, "password") != NULL; }

/* Appends s percent-encoded, keeping RFC 3986's unreserved characters and those in keep. */
static int mg_put_escaped(keel__buf *b, const char *s, const char *keep) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
                    (ch && strchr(keep, ch));
        if (plain ? keel__buf_putc(b, (char)ch) : keel__buf_printf(b, "%%%02X", ch))
            return -1;
    }
    return 0;
}

/* The resolved or stand-in values of a database config that a URI is built from. */
typedef struct mg_parts {
    char *host;
    char *user;
    char *password;
    char *database;
    char **values; /* one per option; NULL when a reference was left unresolved */
    size_t nvalues;
} mg_parts;

/* Every part may have been resolved from a ${…} reference: all are wiped. */
static void mg_parts_free(mg_parts *p) {
    keel__secret_free(p->host);
    keel__secret_free(p->user);
    keel__secret_free(p->password);
    keel__secret_free(p->database);
    for (size_t i = 0; i < p->nvalues; i++)
        keel__secret_free(p->values[i]);
    free(p->values);
    memset(p, 0, sizeof *p);
}

/*
 * Copies one config value into *out. With resolve, secret references are resolved (connect
 * time); without, a value holding a reference becomes standin, or NULL when standin is NULL
 * (validation time: only the resolved value can be checked).
 */
static keel_status mg_part(const char *value, const char *keypath, int resolve, const char *standin,
                           char **out, keel_error *err) {
    *out = NULL;
    if (!value)
        return KEEL_OK;
    if (resolve)
        return keel__config_resolve(value, keypath, out, err);
    if (strstr(value, "${"))
        value = standin;
    if (value && !(*out = strdup(value)))
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, NULL, "out of memory");
    return KEEL_OK;
}

static keel_status mg_parts_load(const keel__dbconfig *dbc, int resolve, mg_parts *p,
                                 keel_error *err) {
    char keypath[256];
    memset(p, 0, sizeof *p);
    struct {
        const char *key;
        const char *value;
        const char *standin;
        char **out;
    } fields[] = {
        { "host", dbc->host, "localhost", &p->host },
        { "user", dbc->user, "user", &p->user },
        { "password", dbc->password, "password", &p->password },
        { "database", dbc->database, "test", &p->database },
    };
    keel_status st = KEEL_OK;
    for (size_t i = 0; st == KEEL_OK && i < sizeof fields / sizeof fields[0]; i++) {
        snprintf(keypath, sizeof keypath, "databases.%s.%s", dbc->name, fields[i].key);
        st = mg_part(fields[i].value, keypath, resolve, fields[i].standin, fields[i].out, err);
    }
    if (st == KEEL_OK && dbc->noptions) {
        p->values = calloc(dbc->noptions, sizeof *p->values);
        if (!p->values)
            st = keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, dbc->name, "out of memory");
        else
            p->nvalues = dbc->noptions;
    }
    for (size_t i = 0; st == KEEL_OK && i < dbc->noptions; i++) {
        snprintf(keypath, sizeof keypath, "databases.%s.options.%s", dbc->name,
                 dbc->options[i].key);
        st = mg_part(dbc->options[i].value ? dbc->options[i].value : "", keypath, resolve, NULL,
                     &p->values[i], err);
    }
    if (st != KEEL_OK)
        mg_parts_free(p);
    return st;
}

/* Whether a host list holds only characters a URI's host part may carry as they are. */
static int mg_host_list_ok(const char *h) {
    for (; *h; h++) {
        unsigned char ch = (unsigned char)*h;
        if (ch <= 0x20 || ch == 0x7f || strchr("/?#@\\", ch))
            return 0;
    }
    return 1;
}

/*
 * Builds the URI of dbc from its parts and parses it with libmongoc, so that every option means
 * exactly what it means in a mongodb:// URL. The scheme of the configured URL is kept, so
 * mongodb+srv:// still looks up its seed list in DNS (when the client is created). Errors:
 * KEEL_ERR_CONFIG naming the key, without any secret; KEEL_ERR_NOMEM.
 */
static keel_status mg_uri_build(const keel__dbconfig *dbc, const mg_parts *p, mongoc_uri_t **out,
                                keel_error *err) {
    const char *name = dbc->name;
    *out = NULL;
    if (!p->host || !*p->host)
        return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                               "databases.%s.host: MongoDB needs a host (or a mongodb:// URL)",
                               name);
    if (p->password && !p->user)
        return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                               "databases.%s.password: MongoDB needs a user name with a password",
                               name);
    int srv = dbc->url && strncasecmp(dbc->url, "mongodb+srv:", 12) == 0;
    int socket_path = p->host[0] == '/';
    if (!socket_path && !mg_host_list_ok(p->host))
        return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                               "databases.%s.host: a MongoDB host list holds names, addresses and "
                               "ports separated by commas",
                               name);
    keel__buf b = { .secret = 1 };
    int rc = keel__buf_puts(&b, srv ? "mongodb+srv://" : "mongodb://");
    if (!rc && p->user) {
        rc = mg_put_escaped(&b, p->user, "");
        if (!rc && p->password)
            rc = keel__buf_putc(&b, ':') || mg_put_escaped(&b, p->password, "");
        if (!rc)
            rc = keel__buf_putc(&b, '@');
    }
    if (!rc) {
        /* A host with several colons and no comma is a bare IPv6 address, which a URI brackets;
         * a socket path is percent-encoded as libmongoc expects. */
        const char *first = strchr(p->host, ':');
        int ipv6 = !socket_path && !strchr(p->host, ',') && p->host[0] != '[' && first &&
                   strchr(first + 1, ':');
        if (socket_path)
            rc = mg_put_escaped(&b, p->host, "");
        else
            rc = keel__buf_printf(&b, ipv6 ? "[%s]" : "%s", p->host);
        if (!rc && dbc->port > 0 && !strchr(p->host, ',') && (ipv6 || !first))
            rc = keel__buf_printf(&b, ":%d", dbc->port);
    }
    if (!rc)
        rc = keel__buf_putc(&b, '/');
    if (!rc && p->database)
        rc = mg_put_escaped(&b, p->database, "");
    char sep = '?';
    for (size_t i = 0; !rc && i < p->nvalues; i++) {
        if (!p->values[i])
            continue;
        rc = keel__buf_putc(&b, sep) || mg_put_escaped(&b, dbc->options[i].key, "") ||
             keel__buf_putc(&b, '=') || mg_put_escaped(&b, p->values[i], ",:");
        sep = '&';
    }
    if (rc) {
        keel__buf_free(&b);
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, name, "out of memory");
    }
    bson_error_t error;
    memset(&error, 0, sizeof error);
    mongoc_uri_t *uri = mongoc_uri_new_with_error(b.data, &error);
    /* The text holds the password: wipe it before it goes back to the allocator. */
    keel__secret_buf_free(&b);
    if (!uri) {
        char msg[sizeof error.message];
        snprintf(msg, sizeof msg, "%s", error.message);
        mg_scrub_secret(msg, sizeof msg, p->password);
        for (size_t i = 0; i < p->nvalues; i++)
            if (mg_option_secret(dbc->options[i].key))
                mg_scrub_secret(msg, sizeof msg, p->values[i]);
        char clean[sizeof msg];
        keel__redact(clean, sizeof clean, msg);
        return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                               "databases.%s: invalid MongoDB settings: %s", name, clean);
    }
    *out = uri;
    return KEEL_OK;
}

/*
 * Applies what keel sets unless the configuration says otherwise: the timeouts and the name the
 * server logs the client under. A client of its own per connection is single-threaded in
 * libmongoc's terms, where serverSelectionTryOnce defaults to true: a dead server fails at the
 * first scan, bounded by connectTimeoutMS, and serverSelectionTimeoutMS only matters when
 * serverSelectionTryOnce=false is configured (e.g. to wait out a replica set election).
 */
static void mg_uri_defaults(mongoc_uri_t *uri, int timeout_ms) {
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, timeout_ms);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, timeout_ms);
    if (!mongoc_uri_get_appname(uri))
        mongoc_uri_set_appname(uri, "keel");
}

/*
 * The cancel's own client gives up on a silent server within its request time: every blocking
 * call it makes (server selection, connecting, each command's reply) is bounded, so the worker
 * it runs on is free again soon whatever the server does. The configuration's own timeouts
 * apply when they are shorter.
 */
static void mg_cancel_timeouts(mongoc_uri_t *uri, int timeout_ms) {
    int ms = timeout_ms < MG_CANCEL_TIMEOUT_MS ? timeout_ms : MG_CANCEL_TIMEOUT_MS;
    static const char *const keys[] = { MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                        MONGOC_URI_CONNECTTIMEOUTMS, MONGOC_URI_SOCKETTIMEOUTMS };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (mongoc_uri_get_option_as_int32(uri, keys[i], 0) <= 0 ||
            mongoc_uri_get_option_as_int32(uri, keys[i], 0) > ms)
            mongoc_uri_set_option_as_int32(uri, keys[i], ms);
}

static keel_status mg_check_config(const keel__dbconfig *dbc, keel_error *err) {
    const char *name = dbc->name ? dbc->name : "";
    keel_status st = mg_init(name, err);
    if (st != KEEL_OK)
        return st;
    st = keel__settings_check_network(dbc, MG_ENGINE, err);
    if (st != KEEL_OK)
        return st;
    for (size_t i = 0; i < dbc->noptions; i++) {
        const char *key = dbc->options[i].key;
        if (mg_in_list_nocase(key, mg_pool_options))
            return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                                   "databases.%s.options.%s: keel pools MongoDB connections "
                                   "itself: set databases.%s.pool.min_size, pool.max_size or "
                                   "pool.acquire_timeout instead",
                                   name, key, name);
        if (!mg_option_known(key))
            return keel__error_set(err, KEEL_ERR_CONFIG, MG_ENGINE, name,
                                   "databases.%s.options.%s: unknown MongoDB option", name, key);
    }
    /* Parsing the URI checks every value libmongoc checks; values that are secret references
     * are only known at connect time and are left out here. */
    mg_parts p;
    st = mg_parts_load(dbc, 0, &p, err);
    if (st != KEEL_OK)
        return st;
    mongoc_uri_t *uri = NULL;
    st = mg_uri_build(dbc, &p, &uri, err);
    mg_parts_free(&p);
    mongoc_uri_destroy(uri);
    return st;
}

/* ---- errors (worker side) ---- */

/* Fills the job's error with a formatted message, redacted of anything that looks secret. */
static void mg_fail(mg_conn *mg, keel_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mg_fail(mg_conn *mg, keel_status code, const char *fmt, ...) {
    char msg[KEEL_ERROR_MESSAGE_MAX], clean[KEEL_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    keel__redact(clean, sizeof clean, msg);
    keel__error_set(&mg->err, code, MG_ENGINE, mg->name, "%s", clean);
}

/* The status that best describes a server error code. */
static keel_status mg_status_for_code(int64_t code) {
    switch (code) {
    case 11000: /* DuplicateKey */
    case 11001: /* DuplicateKey on update, before MongoDB 3.0 */
    case 12582: /* DuplicateKey on a legacy insert */
    case 121:   /* DocumentValidationFailure: a collection's validator, like a CHECK */
        return KEEL_ERR_INTEGRITY;
    case 2:       /* BadValue, e.g. an unknown query operator */
    case 9:       /* FailedToParse, e.g. an unknown update operator */
    case 14:      /* TypeMismatch */
    case 16:      /* InvalidLength, e.g. a write command with no statement */
    case 26:      /* NamespaceNotFound */
    case 27:      /* IndexNotFound */
    case 40:      /* ConflictingUpdateOperators */
    case 48:      /* NamespaceExists */
    case 59:      /* CommandNotFound */
    case 67:      /* CannotCreateIndex */
    case 72:      /* InvalidOptions */
    case 73:      /* InvalidNamespace */
    case 85:      /* IndexOptionsConflict */
    case 86:      /* IndexKeySpecsConflict */
    case 168:     /* InvalidPipelineOperator: an unknown expression operator */
    case 15952:   /* unknown group operator */
    case 15973:   /* a $sort specification that is not a document */
    case 15974:   /* an illegal key in a $sort specification */
    case 15975:   /* a sort direction other than 1 or -1 */
    case 15976:   /* a $sort stage without a key */
    case 15983:   /* an expression object with more than one field */
    case 16410:   /* a field path starting with '$' */
    case 17276:   /* use of an undefined variable */
    case 17287:   /* "Can't canonicalize query" around an unknown operator (older servers) */
    case 31249:   /* a path collision in a projection */
    case 31253:   /* inclusion in an exclusion projection */
    case 31254:   /* exclusion in an inclusion projection */
    case 40323:   /* a pipeline stage with more than one field */
    case 40324:   /* Unrecognized pipeline stage name */
    case 40352:   /* an empty field path */
    case 40414:   /* a command without a required field */
    case 40415:   /* a command with an unknown field */
    case 51091:   /* an invalid regular expression */
    case 5107200: /* a negative $skip */
    case 5107201: /* a negative $limit */
        return KEEL_ERR_PROGRAMMING;
    case 10334: /* BSONObjectTooLarge */
    case 17419: /* a document grows over the size limit */
    case 17420: /* the same, for an update */
    case 28:    /* PathNotViable */
    case 52:    /* DollarPrefixedFieldName */
        return KEEL_ERR_DATA;
    case 50:  /* MaxTimeMSExpired */
    case 64:  /* WriteConcernFailed: the write concern's wtimeout passed */
    case 262: /* ExceededTimeLimit */
        return KEEL_ERR_TIMEOUT;
    case 11601: /* Interrupted: killOp */
        return KEEL_ERR_CANCELLED;
    case 91:    /* ShutdownInProgress */
    case 189:   /* PrimarySteppedDown */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
        return KEEL_ERR_OPERATIONAL;
    case 112: /* WriteConflict */
    case 225: /* TransactionTooOld */
    case 244: /* TransactionAborted */
    case 251: /* NoSuchTransaction */
    case 256: /* TransactionCommitted */
    case 257: /* TransactionTooLarge */
    case 263: /* OperationNotSupportedInTransaction */
    case 267: /* PreparedTransactionInProgress */
        return KEEL_ERR_TRANSACTION;
    default: /* Unauthorized (13) and AuthenticationFailed (18) too, past connect */
        return KEEL_ERR_DATABASE;
    }
}

/* Records a server error code in the job's error, with the kind of constraint it reports. */
static void mg_server_code(mg_conn *mg, int64_t code) {
    keel_violation kind = KEEL_VIOLATION_NONE;
    if (code == 11000 || code == 11001 || code == 12582)
        kind = KEEL_VIOLATION_UNIQUE;
    else if (code == 121) /* DocumentValidationFailure: a collection's validator */
        kind = KEEL_VIOLATION_CHECK;
    keel__error_set_server_code(&mg->err, code, kind);
}

/* The status of a libmongoc error raised while a connected client runs an operation. */
static keel_status mg_status_for_error(const bson_error_t *e) {
    switch (e->domain) {
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_WRITE_CONCERN:
        return mg_status_for_code(e->code);
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_PROTOCOL:
        return KEEL_ERR_CONNECTION_LOST;
    case MONGOC_ERROR_CLIENT:
        if (e->code == MONGOC_ERROR_CLIENT_AUTHENTICATE)
            return KEEL_ERR_CONNECTION_LOST;
        if (e->code == MONGOC_ERROR_CLIENT_TOO_BIG)
            return KEEL_ERR_DATA;
        return KEEL_ERR_DATABASE;
    case MONGOC_ERROR_COMMAND:
        return KEEL_ERR_PROGRAMMING;
    case MONGOC_ERROR_TRANSACTION:
        return KEEL_ERR_TRANSACTION;
    case MONGOC_ERROR_BSON:
        return KEEL_ERR_DATA;
    default:
        return KEEL_ERR_DATABASE;
    }
}

/* " [Label]" for the transaction error labels a reply carries, which tell what to retry. */
static void mg_labels(const bson_t *reply, char *out, size_t size) {
    static const char *const labels[] = { "TransientTransactionError",
                                          "UnknownTransactionCommitResult", NULL };
    out[0] = '\0';
    if (!reply)
        return;
    for (size_t i = 0; labels[i]; i++)
        if (mongoc_error_has_label(reply, labels[i])) {
            size_t used = strlen(out);
            snprintf(out + used, size - used, " [%s]", labels[i]);
        }
}

/*
 * The names a duplicate key error (11000) gives in its message, "E11000 duplicate key error
 * collection: DB.COLL index: NAME dup key: { … }": the database (schema_name), the collection
 * (table_name; a database name has no '.', a collection name may) and the unique index
 * (constraint_name), so an application tells which unique index was hit.
 */
static void mg_dup_key_names(mg_conn *mg, const char *msg) {
    const char *coll = strstr(msg, " collection: ");
    const char *index = coll ? strstr(coll, " index: ") : NULL;
    const char *end = index ? strstr(index, " dup key:") : NULL;
    if (!end)
        return;
    coll += strlen(" collection: ");
    const char *dot = memchr(coll, '.', (size_t)(index - coll));
    if (dot) {
        keel__error_set_field(&mg->err, KEEL__ERRF_SCHEMA, coll, (size_t)(dot - coll));
        keel__error_set_field(&mg->err, KEEL__ERRF_TABLE, dot + 1, (size_t)(index - dot - 1));
    }
    index += strlen(" index: ");
    keel__error_set_field(&mg->err, KEEL__ERRF_CONSTRAINT, index, (size_t)(end - index));
}

/* Fills the job's error from a failed libmongoc call (reply may be NULL). */
static void mg_fail_mongoc(mg_conn *mg, const bson_error_t *e, const bson_t *reply) {
    keel_status code = mg_status_for_error(e);
    char labels[96];
    mg_labels(reply, labels, sizeof labels);
    if (code == KEEL_ERR_CONNECTION_LOST)
        mg_fail(mg, code, "the connection to MongoDB was lost: %s", e->message);
    else if (e->domain == MONGOC_ERROR_SERVER || e->domain == MONGOC_ERROR_WRITE_CONCERN)
        mg_fail(mg, code, "%s%s (code %" PRIu32 ")%s",
                e->domain == MONGOC_ERROR_WRITE_CONCERN ? "write concern: " : "", e->message,
                e->code, labels);
    else
        mg_fail(mg, code, "%s%s", e->message, labels);
    if (e->domain == MONGOC_ERROR_SERVER || e->domain == MONGOC_ERROR_WRITE_CONCERN)
        mg_server_code(mg, e->code);
    if (e->domain == MONGOC_ERROR_SERVER && e->code == 11000)
        mg_dup_key_names(mg, e->message);
}

static int64_t mg_iter_int(const bson_iter_t *it) {
    return BSON_ITER_HOLDS_NUMBER(it) ? bson_iter_as_int64(it) : 0;
}

/*
 * A reply with ok: 1 may still report failed writes: writeErrors (one per failed document, the
 * batch stopping at the first when ordered) and writeConcernError. Fills the job's error from
 * the first and returns 1 when there is one.
 */
static int mg_write_errors(mg_conn *mg, const bson_t *reply) {
    bson_iter_t it, arr, doc;
    /* The labels are only read once an error was found: nearly every reply has none. */
    char labels[96];
    if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        size_t count = 0;
        int64_t index = 0, code = 0;
        const char *msg = "write error";
        while (bson_iter_next(&arr)) {
            if (count++ || !BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &doc))
                continue;
            while (bson_iter_next(&doc)) {
                const char *key = bson_iter_key(&doc);
                if (strcmp(key, "index") == 0)
                    index = mg_iter_int(&doc);
                else if (strcmp(key, "code") == 0)
                    code = mg_iter_int(&doc);
                else if (strcmp(key, "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&doc))
                    msg = bson_iter_utf8(&doc, NULL);
            }
        }
        if (count) {
            mg_labels(reply, labels, sizeof labels);
            char more[64] = "";
            if (count > 1)
                snprintf(more, sizeof more, ", and %zu more write error%s", count - 1,
                         count > 2 ? "s" : "");
            mg_fail(mg, mg_status_for_code(code), "index %" PRId64 ": %s (code %" PRId64 ")%s%s",
                    index, msg, code, more, labels);
            mg_server_code(mg, code);
            if (code == 11000)
                mg_dup_key_names(mg, msg);
            return 1;
        }
    }
    if (bson_iter_init_find(&it, reply, "writeConcernError") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &doc)) {
        int64_t code = 0;
        const char *msg = "write concern not satisfied";
        while (bson_iter_next(&doc)) {
            const char *key = bson_iter_key(&doc);
            if (strcmp(key, "code") == 0)
                code = mg_iter_int(&doc);
            else if (strcmp(key, "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&doc))
                msg = bson_iter_utf8(&doc, NULL);
        }
        mg_labels(reply, labels, sizeof labels);
        mg_fail(mg, mg_status_for_code(code), "write concern: %s (code %" PRId64 ")%s", msg, code,
                labels);
        mg_server_code(mg, code);
        return 1;
    }
    return 0;
}

static void mg_fail_nomem(mg_conn *mg) {
    keel__error_set(&mg->err, KEEL_ERR_NOMEM, MG_ENGINE, mg->name, "out of memory");
}

/* ---- jobs (worker side) ---- */

static void mg_close_client(mg_conn *mg) {
    /* The session goes first: it belongs to the client, whose destruction ends sessions on
     * the server. */
    if (mg->session)
        mongoc_client_session_destroy(mg->session);
    mg->session = NULL;
    if (mg->client)
        mongoc_client_destroy(mg->client);
    mg->client = NULL;
    mongoc_uri_destroy(mg->uri);
    mg->uri = NULL;
}

/* The maxWireVersion of the server the read preference selects, or 0 when unknown. */
static int mg_server_wire(mongoc_client_t *client) {
    bson_error_t error;
    mongoc_server_description_t *sd =
        mongoc_client_select_server(client, false, mongoc_client_get_read_prefs(client), &error);
    if (!sd)
        return 0;
    int wire = 0;
    bson_iter_t it;
    const bson_t *hello = mongoc_server_description_hello_response(sd);
    if (hello && bson_iter_init_find(&it, hello, "maxWireVersion"))
        wire = (int)mg_iter_int(&it);
    mongoc_server_description_destroy(sd);
    return wire;
}

/* The seed list of uri as "host:port,host:port", or the SRV name it is looked up from. */
static void mg_describe_hosts(const mongoc_uri_t *uri, char *out, size_t size) {
    out[0] = '\0';
    const char *srv = mongoc_uri_get_srv_hostname(uri);
    if (srv) {
        snprintf(out, size, "%s (DNS SRV)", srv);
        return;
    }
    size_t used = 0;
    for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h && used + 1 < size;
         h = h->next) {
        int n = snprintf(out + used, size - used, "%s%s", used ? "," : "", h->host_and_port);
        if (n < 0)
            break;
        used += (size_t)n < size - used ? (size_t)n : size - used - 1;
    }
}

/* A connect step failed: report it as a connect error naming the hosts (never the password). */
static void mg_connect_failed(mg_conn *mg, const char *password, const bson_error_t *e) {
    char msg[sizeof e->message], hosts[256];
    snprintf(msg, sizeof msg, "%s", e->message);
    mg_scrub_secret(msg, sizeof msg, password);
    mg_describe_hosts(mg->uri, hosts, sizeof hosts);
    mg_fail(mg, KEEL_ERR_CONNECT, "cannot connect to MongoDB at %s: %s", hosts, msg);
    mg_close_client(mg);
}

static void mg_run_connect(mg_conn *mg) {
    mg_parts p;
    if (mg_parts_load(mg->dbc, 1, &p, &mg->err) != KEEL_OK)
        return;
    if (mg_uri_build(mg->dbc, &p, &mg->uri, &mg->err) != KEEL_OK) {
        mg_parts_free(&p);
        return;
    }
    mg_uri_defaults(mg->uri, mg->timeout_ms);
    const char *db = p.database && *p.database ? p.database : MG_DEFAULT_DATABASE;
    mg->database = strdup(db);
    if (!mg->database) {
        mg_fail_nomem(mg);
        mg_close_client(mg);
        mg_parts_free(&p);
        return;
    }
    bson_error_t error;
    memset(&error, 0, sizeof error);
    mg->client = mongoc_client_new_from_uri_with_error(mg->uri, &error);
    if (!mg->client) {
        mg_connect_failed(mg, p.password, &error);
        mg_parts_free(&p);
        return;
    }
    /* Version 2 reports server errors in the MONGOC_ERROR_SERVER domain with the server's own
     * code, which is what the status mapping reads. */
    mongoc_client_set_error_api(mg->client, MONGOC_ERROR_API_VERSION_2);
    /* A ping makes a dead or unreachable server fail the connect (within the timeouts set by
     * mg_uri_defaults) instead of the first command, and authenticates. */
    bson_t ping, reply;
    bson_init(&ping);
    BSON_APPEND_INT32(&ping, "ping", 1);
    bool ok = mongoc_client_command_simple(
        mg->client, "admin", &ping, mongoc_client_get_read_prefs(mg->client), &reply, &error);
    bson_destroy(&ping);
    bson_destroy(&reply);
    if (!ok) {
        mg_connect_failed(mg, p.password, &error);
        mg_parts_free(&p);
        return;
    }
    mg_parts_free(&p);
    mg->max_wire = mg_server_wire(mg->client);
    mg->secondary_reads =
        mongoc_read_prefs_get_mode(mongoc_client_get_read_prefs(mg->client)) != MONGOC_READ_PRIMARY;
}

static void mg_forget_cursor(mg_conn *mg, int64_t id) {
    for (size_t i = 0; i < MG_CURSOR_SLOTS; i++)
        if (mg->cursors[i].id == id)
            mg->cursors[i].id = 0;
}

static uint32_t mg_cursor_server(const mg_conn *mg, int64_t id) {
    for (size_t i = 0; id && i < MG_CURSOR_SLOTS; i++)
        if (mg->cursors[i].id == id)
            return mg->cursors[i].server_id;
    return 0;
}

/* The cursor ids a getMore or killCursors command names (at most n), returning how many. */
static size_t mg_command_cursors(const mg_conn *mg, int64_t *ids, size_t n) {
    bson_iter_t it, arr;
    size_t count = 0;
    if (strcmp(mg->cmd_name, "getMore") == 0) {
        if (bson_iter_init_find(&it, &mg->cmd, "getMore") && BSON_ITER_HOLDS_INT(&it) && n)
            ids[count++] = bson_iter_as_int64(&it);
    } else if (strcmp(mg->cmd_name, "killCursors") == 0) {
        if (bson_iter_init_find(&it, &mg->cmd, "cursors") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &arr))
            while (count < n && bson_iter_next(&arr))
                if (BSON_ITER_HOLDS_INT(&arr))
                    ids[count++] = bson_iter_as_int64(&arr);
    }
    return count;
}

/*
 * Picks the server of a command when libmongoc's own choice could be wrong: a read that may go to
 * a secondary is sent to a server selected here, so that the cursor it opens can be found again
 * by getMore and killCursors, which libmongoc would send to the primary. Returns the server id
 * (0: libmongoc chooses), or UINT32_MAX with the job's error set.
 */
static uint32_t mg_route(mg_conn *mg) {
    if (!mg->secondary_reads || mg->in_txn)
        return 0;
    if (mg->cmd_kind == MG_CMD_READ) {
        bson_error_t error;
        mongoc_server_description_t *sd = mongoc_client_select_server(
            mg->client, false, mongoc_client_get_read_prefs(mg->client), &error);
        if (!sd) {
            mg_fail_mongoc(mg, &error, NULL);
            return UINT32_MAX;
        }
        uint32_t id = mongoc_server_description_id(sd);
        mongoc_server_description_destroy(sd);
        return id;
    }
    int64_t ids[4];
    size_t n = mg_command_cursors(mg, ids, 4);
    for (size_t i = 0; i < n; i++) {
        uint32_t id = mg_cursor_server(mg, ids[i]);
        if (id)
            return id;
    }
    return 0;
}

/* Keeps the cursor map up to date after a successful command sent to server_id. */
static void mg_track_cursors(mg_conn *mg, const bson_t *reply, uint32_t server_id) {
    if (!mg->secondary_reads)
        return;
    int64_t ids[4];
    size_t n = mg_command_cursors(mg, ids, 4);
    bson_iter_t it;
    int64_t open = 0;
    if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "cursor.id", &it) &&
        BSON_ITER_HOLDS_INT(&it))
        open = bson_iter_as_int64(&it);
    if (strcmp(mg->cmd_name, "killCursors") == 0 || (n && !open)) {
        for (size_t i = 0; i < n; i++)
            mg_forget_cursor(mg, ids[i]);
        return;
    }
    if (open && server_id && !mg_cursor_server(mg, open)) {
        mg->cursors[mg->next_cursor].id = open;
        mg->cursors[mg->next_cursor].server_id = server_id;
        mg->next_cursor = (mg->next_cursor + 1) % MG_CURSOR_SLOTS;
    }
}

/* The job's result: one row, one column "reply" holding the reply document. */
static void mg_result(mg_conn *mg, const bson_t *reply) {
    keel_result *res = keel__result_new(1);
    keel_value *row = NULL;
    char *bytes = NULL;
    if (res && keel__result_set_column(res, 0, "reply", 5, KEEL_TYPE_DOCUMENT) == 0 &&
        (row = keel__result_add_row(res)) != NULL)
        bytes = keel__result_strndup(res, (const char *)bson_get_data(reply), reply->len);
    if (!bytes) {
        keel_result_free(res);
        mg_fail_nomem(mg);
        return;
    }
    row[0].type = KEEL_TYPE_DOCUMENT;
    row[0].u.str.ptr = bytes;
    row[0].u.str.len = reply->len;
    /* Write commands report how many documents they matched, inserted or deleted in n. */
    static const char *const counted[] = { "insert", "update", "delete", NULL };
    bson_iter_t it;
    if (keel__word_in_list(mg->cmd_name, counted) && bson_iter_init_find(&it, reply, "n") &&
        BSON_ITER_HOLDS_NUMBER(&it))
        keel__result_set_affected(res, bson_iter_as_int64(&it));
    mg->res = res;
}

static void mg_run_command(mg_conn *mg) {
    bson_error_t error;
    memset(&error, 0, sizeof error);
    if (atomic_load(&mg->cancel)) {
        mg_fail(mg, KEEL_ERR_CANCELLED, "the command was cancelled before it was sent");
        return;
    }
    /* Every command runs in the connection's own explicit session, not in an implicit one per
     * command: a server requires a cursor's getMore and killCursors to come from the session
     * that opened it, and a transaction lives in that session too. */
    if (!mg->session && !(mg->session = mongoc_client_start_session(mg->client, NULL, &error))) {
        mg_fail_mongoc(mg, &error, NULL);
        return;
    }
    if (!mongoc_client_session_append(mg->session, &mg->opts, &error)) {
        mg_fail_mongoc(mg, &error, NULL);
        return;
    }
    uint32_t server_id = mg_route(mg);
    if (server_id == UINT32_MAX)
        return;
    if (server_id)
        BSON_APPEND_INT32(&mg->opts, "serverId", (int32_t)server_id);
    bson_t reply;
    bool ok;
    switch (mg->cmd_kind) {
    case MG_CMD_READ:
        ok = mongoc_client_read_command_with_opts(mg->client, mg->cmd_db, &mg->cmd, NULL, &mg->opts,
                                                  &reply, &error);
        break;
    case MG_CMD_WRITE:
        ok = mongoc_client_write_command_with_opts(mg->client, mg->cmd_db, &mg->cmd, &mg->opts,
                                                   &reply, &error);
        break;
    case MG_CMD_READ_WRITE:
        ok = mongoc_client_read_write_command_with_opts(mg->client, mg->cmd_db, &mg->cmd, NULL,
                                                        &mg->opts, &reply, &error);
        break;
    default:
        ok = mongoc_client_command_with_opts(mg->client, mg->cmd_db, &mg->cmd, NULL, &mg->opts,
                                             &reply, &error);
        break;
    }
    /* Write errors come first: a reply can carry them next to a write concern error, which
     * libmongoc alone reports as the failure. */
    if (!mg_write_errors(mg, &reply)) {
        if (!ok) {
            mg_fail_mongoc(mg, &error, &reply);
        } else {
            mg_track_cursors(mg, &reply, server_id);
            mg_result(mg, &reply);
        }
    }
    bson_destroy(&reply);
}

/* An empty result for a transaction operation. */
static void mg_empty_result(mg_conn *mg) {
    mg->res = keel__result_new(0);
    if (!mg->res)
        mg_fail_nomem(mg);
}

static void mg_run_txn(mg_conn *mg) {
    bson_error_t error;
    memset(&error, 0, sizeof error);
    switch (mg->op) {
    case KEEL_TXN_BEGIN:
        if (!mg->session &&
            !(mg->session = mongoc_client_start_session(mg->client, NULL, &error))) {
            mg_fail_mongoc(mg, &error, NULL);
            return;
        }
        if (!mongoc_client_session_start_transaction(mg->session, NULL, &error)) {
            mg_fail_mongoc(mg, &error, NULL);
            return;
        }
        break;
    case KEEL_TXN_COMMIT:
        if (mg->txn_failed) {
            /* An error inside the transaction doomed it; committing would fail on the server
             * anyway (NoSuchTransaction). Abort it so that the connection is clean again. */
            mongoc_client_session_abort_transaction(mg->session, &error);
            mg_fail(mg, KEEL_ERR_TRANSACTION,
                    "the transaction was aborted by an earlier error and has been rolled back");
            return;
        } else {
            bson_t reply;
            bool ok = mongoc_client_session_commit_transaction(mg->session, &reply, &error);
            if (!ok)
                mg_fail_mongoc(mg, &error, &reply);
            bson_destroy(&reply);
            if (!ok)
                return;
        }
        break;
    default:
        /* libmongoc ignores the server's errors on abort, as the transactions specification
         * asks (the server may have aborted the transaction already); what is left are client
         * state errors, which leave no transaction open either. */
        if (mongoc_client_session_in_transaction(mg->session) &&
            !mongoc_client_session_abort_transaction(mg->session, &error)) {
            mg_fail_mongoc(mg, &error, NULL);
            return;
        }
        break;
    }
    mg_empty_result(mg);
}

static void mg_job_run(void *arg) {
    mg_conn *mg = arg;
    switch (mg->kind) {
    case MG_JOB_CONNECT:
        mg_run_connect(mg);
        break;
    case MG_JOB_COMMAND:
        mg_run_command(mg);
        break;
    case MG_JOB_TXN:
        mg_run_txn(mg);
        break;
    case MG_JOB_CLOSE:
        mg_close_client(mg);
        break;
    }
}

/* ---- cancel (worker side) ---- */

/* Copies into *opid the opid of the operation whose command carries tag, from one currentOp
 * reply; returns 0 when there is none. */
static int mg_find_op(const bson_t *reply, const char *tag, bson_value_t *opid) {
    bson_iter_t it, ops, op;
    if (!bson_iter_init_find(&it, reply, "inprog") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &ops))
        return 0;
    while (bson_iter_next(&ops)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&ops) || !bson_iter_recurse(&ops, &op))
            continue;
        /* The filter was sent to the server, but a server that ignores it returns every
         * operation: only the one carrying the tag may be killed. */
        bson_iter_t comment;
        if (!bson_iter_find_descendant(&op, "command.comment", &comment) ||
            !BSON_ITER_HOLDS_UTF8(&comment) || strcmp(bson_iter_utf8(&comment, NULL), tag) != 0)
            continue;
        if (!bson_iter_recurse(&ops, &op) || !bson_iter_find(&op, "opid"))
            continue;
        bson_value_copy(bson_iter_value(&op), opid);
        return 1;
    }
    return 0;
}

/* Asks one server for the tagged operation and kills it. Returns 1 when it was found. */
static int mg_kill_on(mongoc_client_t *client, uint32_t server_id, const char *tag) {
    bson_t cmd, opts, reply;
    bson_error_t error;
    bson_init(&opts);
    BSON_APPEND_INT32(&opts, "serverId", (int32_t)server_id);
    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "currentOp", 1);
    BSON_APPEND_UTF8(&cmd, "command.comment", tag);
    bool ok = mongoc_client_command_with_opts(client, "admin", &cmd, NULL, &opts, &reply, &error);
    bson_destroy(&cmd);
    bson_value_t opid;
    int found = ok && mg_find_op(&reply, tag, &opid);
    bson_destroy(&reply);
    if (found) {
        bson_init(&cmd);
        BSON_APPEND_INT32(&cmd, "killOp", 1);
        BSON_APPEND_VALUE(&cmd, "op", &opid);
        mongoc_client_command_with_opts(client, "admin", &cmd, NULL, &opts, &reply, &error);
        bson_destroy(&reply);
        bson_destroy(&cmd);
        bson_value_destroy(&opid);
    }
    bson_destroy(&opts);
    return found;
}

/*
 * Cancels the command tagged with j->tag on the server, from a short-lived client of its own:
 * the connection's client is busy running the command. The command may not have reached the
 * server yet, so the lookup is repeated a few times while the command still runs. Every server
 * the client knows is asked, since a read may run on a secondary. A server that does not show
 * commands' comments in currentOp never yields the tag: the command then runs to its end.
 */
static void mg_cancel_run(void *arg) {
    mg_cancel_job *j = arg;
    bson_error_t error;
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(j->uri, &error);
    if (!client)
        return;
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_server_description_t *sd =
        mongoc_client_select_server(client, false, mongoc_client_get_read_prefs(client), &error);
    if (sd) {
        mongoc_server_description_destroy(sd);
        int pause_ms = MG_CANCEL_FIRST_PAUSE_MS, found = 0;
        for (int attempt = 0; !found && attempt < MG_CANCEL_ATTEMPTS; attempt++) {
            if (attempt) {
                if (atomic_load(&j->link->finished) || keel_now_ms() + pause_ms >= j->deadline_ms)
                    break;
                struct timespec ts = { pause_ms / 1000, (long)(pause_ms % 1000) * 1000000L };
                nanosleep(&ts, NULL);
                pause_ms *= 2;
            }
            size_t n = 0;
            mongoc_server_description_t **sds = mongoc_client_get_server_descriptions(client, &n);
            for (size_t i = 0; !found && i < n; i++) {
                const char *type = mongoc_server_description_type(sds[i]);
                if (strcmp(type, "Unknown") != 0 && strcmp(type, "RSArbiter") != 0 &&
                    strcmp(type, "RSGhost") != 0)
                    found = mg_kill_on(client, mongoc_server_description_id(sds[i]), j->tag);
            }
            mongoc_server_descriptions_destroy_all(sds, n);
        }
    }
    mongoc_client_destroy(client);
}

/* Drops one reference to a cancel link. */
static void mg_link_release(mg_cancel_link *link) {
    if (link && atomic_fetch_sub(&link->refs, 1) == 1)
        free(link);
}

static void mg_cancel_done(void *arg) {
    mg_cancel_job *j = arg;
    mongoc_uri_destroy(j->uri);
    mg_link_release(j->link);
    free(j);
}

/* ---- loop side ---- */

static void mg_free(mg_conn *mg) {
    if (mg->have_cmd) {
        bson_destroy(&mg->cmd);
        bson_destroy(&mg->opts);
    }
    free(mg->cmd_db);
    keel_result_free(mg->res);
    free(mg->database);
    free(mg->name);
    keel__lane_release(mg->lane);
    free(mg);
}

static void mg_job_done(void *arg);

/*
 * The pool was freed before the job's end could be delivered (on the worker): the connection
 * is gone, so the client is destroyed here and the state freed.
 */
static void mg_job_drop(void *arg) {
    mg_conn *mg = arg;
    if (mg->link) {
        atomic_store(&mg->link->finished, 1);
        mg_link_release(mg->link);
    }
    mg_close_client(mg);
    mg_free(mg);
}

/* Queues the job mg->kind on the connection's lane (or the ENGINE class). 0, or -1 when the pool
 * refused it. */
static int mg_submit_job(mg_conn *mg) {
    keel__job job = { KEEL__JOB_ENGINE, -1, mg_job_run, mg_job_done, mg_job_drop, mg };
    return mg->lane ? keel__lane_submit(mg->lane, &job) : keel__workers_submit(mg->workers, &job);
}

/* Destroys the client on a worker (libmongoc ends the server sessions over the network), then
 * frees. */
static void mg_start_close(mg_conn *mg) {
    if (!mg->client && !mg->uri) {
        mg_free(mg);
        return;
    }
    mg->kind = MG_JOB_CLOSE;
    mg->running = 1;
    if (mg_submit_job(mg) != 0) {
        /* The pool is shutting down or out of memory: close here as a last resort. */
        mg_close_client(mg);
        mg_free(mg);
    }
}

/* Asks the server to stop the running command (loop thread). */
static void mg_start_cancel(mg_conn *mg) {
    atomic_store(&mg->cancel, 1);
    if (!mg->tag[0] || mg->link || !mg->uri)
        return;
    mg_cancel_job *j = calloc(1, sizeof *j);
    mg_cancel_link *link = calloc(1, sizeof *link);
    mongoc_uri_t *uri = j && link ? mongoc_uri_copy(mg->uri) : NULL;
    if (!uri) {
        free(j);
        free(link);
        return;
    }
    atomic_init(&link->finished, 0);
    atomic_init(&link->refs, 2);
    j->uri = uri;
    j->link = link;
    memcpy(j->tag, mg->tag, sizeof j->tag);
    mg_cancel_timeouts(uri, mg->timeout_ms);
    j->deadline_ms = keel_now_ms() + MG_CANCEL_DEADLINE_MS;
    keel__job job = { KEEL__JOB_CANCEL, j->deadline_ms, mg_cancel_run,
                      mg_cancel_done,   mg_cancel_done, j };
    if (keel__workers_submit(mg->workers, &job) != 0) {
        mongoc_uri_destroy(uri);
        free(j);
        free(link);
        return;
    }
    mg->link = link;
}

static void mg_job_done(void *arg) {
    mg_conn *mg = arg;
    mg->running = 0;
    if (mg->kind == MG_JOB_CLOSE) {
        mg_free(mg);
        return;
    }
    if (mg->link) {
        atomic_store(&mg->link->finished, 1);
        mg_link_release(mg->link);
        mg->link = NULL;
    }
    if (mg->have_cmd) {
        bson_destroy(&mg->cmd);
        bson_destroy(&mg->opts);
        mg->have_cmd = 0;
    }
    free(mg->cmd_db);
    mg->cmd_db = NULL;
    mg->cmd_name = NULL;
    mg->tag[0] = '\0';
    keel_result *res = mg->res;
    mg->res = NULL;
    if (mg->abandoned) {
        keel_result_free(res);
        mg_start_close(mg);
        return;
    }
    keel_conn *c = mg->conn;
    /* The callbacks below may start the next job on this connection, which reuses mg->err. */
    keel_error err = mg->err;
    int failed = err.code != KEEL_OK;
    if (mg->kind == MG_JOB_CONNECT) {
        if (failed) {
            c->impl = NULL;
            mg_start_close(mg);
        }
        keel__conn_connected(c, failed ? &err : NULL);
        return;
    }
    if (mg->kind == MG_JOB_TXN) {
        /* BEGIN opens a transaction; COMMIT and ROLLBACK end it whatever their outcome (a
         * failed commit leaves nothing to roll back: libmongoc ended the transaction). A failed
         * BEGIN opens nothing. */
        if (mg->op == KEEL_TXN_BEGIN)
            mg->txn = failed ? MG_TXN_IDLE : MG_TXN_ACTIVE;
        else
            mg->txn = MG_TXN_IDLE;
    } else if (failed && mg->txn == MG_TXN_ACTIVE) {
        /* MongoDB aborts a transaction on (nearly) any error inside it: only ROLLBACK is left. */
        mg->txn = MG_TXN_FAILED;
    }
    if (failed && err.code == KEEL_ERR_CONNECTION_LOST)
        c->broken = 1;
    keel__conn_complete(c, failed ? NULL : res, failed ? &err : NULL);
}

static keel_status mg_connect(keel_conn *c, keel_error *err) {
    const keel__dbconfig *dbc = c->config;
    keel_status st = mg_init(dbc->name, err);
    if (st != KEEL_OK)
        return st;
    mg_conn *mg = calloc(1, sizeof *mg);
    if (!mg || !(mg->name = strdup(dbc->name))) {
        free(mg);
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, dbc->name, "out of memory");
    }
    atomic_init(&mg->cancel, 0);
    mg->dbc = dbc;
    double timeout =
        dbc->connect_timeout > 0 ? dbc->connect_timeout * 1000.0 : (double)MG_DEFAULT_TIMEOUT_MS;
    mg->timeout_ms = timeout >= INT_MAX ? INT_MAX : timeout < 1 ? 1 : (int)timeout;
    mg->workers = keel__conn_workers(c);
    if (!mg->workers) {
        mg_free(mg);
        return keel__error_set(err, KEEL_ERR_CONNECT, MG_ENGINE, dbc->name,
                               "cannot start the worker threads MongoDB runs on");
    }
    /* Without a lane (no thread could be started for it) the connection still works, on the
     * ENGINE class's threads. */
    mg->lane = keel__lane_new(mg->workers);
    mg->conn = c;
    mg->kind = MG_JOB_CONNECT;
    mg->running = 1;
    keel_error_clear(&mg->err);
    if (mg_submit_job(mg) != 0) {
        mg_free(mg);
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, dbc->name,
                               "cannot queue the connect on the worker threads");
    }
    c->impl = mg;
    return KEEL_OK;
}

/* The checks every operation makes before it starts; KEEL_OK when the job may be submitted. */
static keel_status mg_ready(keel_conn *c, keel_error *err) {
    mg_conn *mg = c->impl;
    if (!mg || !mg->client)
        return keel__error_set(err, KEEL_ERR_CLOSED, MG_ENGINE, c->config->name,
                               "connection is closed");
    if (mg->running)
        return keel__error_set(err, KEEL_ERR_BUSY, MG_ENGINE, c->config->name,
                               "an operation is already running on this connection");
    return KEEL_OK;
}

static keel_status mg_submit(mg_conn *mg, mg_job_kind kind, keel_error *err) {
    keel_error_clear(&mg->err);
    mg->res = NULL;
    mg->kind = kind;
    atomic_store(&mg->cancel, 0);
    mg->running = 1;
    if (mg_submit_job(mg) != 0) {
        mg->running = 0;
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, mg->name,
                               "cannot queue the operation on the worker threads");
    }
    return KEEL_OK;
}

/* How a command is run, from its name (and, for aggregate, whether its last stage writes). */
static mg_cmd_kind mg_classify(const char *name, const bson_t *cmd) {
    static const char *const reads[] = { "find", "count", "distinct", NULL };
    static const char *const writes[] = {
        "insert",       "update",     "delete",           "findAndModify", "findandmodify",
        "bulkWrite",    "create",     "createIndexes",    "drop",          "dropIndexes",
        "dropDatabase", "collMod",    "renameCollection", "createUser",    "updateUser",
        "dropUser",     "createRole", "updateRole",       "dropRole",      NULL
    };
    if (keel__word_in_list(name, reads))
        return MG_CMD_READ;
    if (keel__word_in_list(name, writes))
        return MG_CMD_WRITE;
    if (strcmp(name, "aggregate") != 0)
        return MG_CMD_GENERIC;
    bson_iter_t it, stages, stage;
    const char *last = NULL;
    if (bson_iter_init_find(&it, cmd, "pipeline") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &stages))
        while (bson_iter_next(&stages))
            if (BSON_ITER_HOLDS_DOCUMENT(&stages) && bson_iter_recurse(&stages, &stage) &&
                bson_iter_next(&stage))
                last = bson_iter_key(&stage);
    return last && (strcmp(last, "$out") == 0 || strcmp(last, "$merge") == 0) ? MG_CMD_READ_WRITE
                                                                              : MG_CMD_READ;
}

static keel_status mg_command(keel_conn *c, const char *dbname, const void *cmd, size_t len,
                              keel_error *err) {
    /* Commands that take a comment on MongoDB 4.4 and later: keel tags them to find them again
     * in currentOp when they are cancelled. */
    static const char *const taggable[] = { "find",          "aggregate",     "count",  "distinct",
                                            "insert",        "update",        "delete", "getMore",
                                            "findAndModify", "findandmodify", NULL };
    const char *name = c->config->name;
    keel_status st = mg_ready(c, err);
    if (st != KEEL_OK)
        return st;
    mg_conn *mg = c->impl;
    if (mg->txn == MG_TXN_FAILED)
        return keel__error_set(err, KEEL_ERR_TRANSACTION, MG_ENGINE, name,
                               "the current transaction failed and was aborted: roll it back "
                               "before running more commands");
    if (dbname && !*dbname)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the database name of a command must not be empty");
    bson_t user;
    if (!bson_init_static(&user, cmd, len))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the command is not a BSON document: its %zu bytes do not match "
                               "its length header",
                               len);
    bson_error_t berr;
    if (!bson_validate_with_error(&user, BSON_VALIDATE_UTF8 | BSON_VALIDATE_UTF8_ALLOW_NULL, &berr))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the command is not a valid BSON document: %s", berr.message);
    const char *bad_key = NULL;
    if (!mg_check_strings(&user, &bad_key))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the command is not a valid BSON document: the string at key "
                               "\"%s\" is not valid UTF-8",
                               bad_key ? bad_key : "?");
    bson_iter_t it;
    if (!bson_iter_init(&it, &user) || !bson_iter_next(&it))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the command document is empty: its first field names the "
                               "command");
    mg->cmd_db = strdup(dbname ? dbname : mg->database);
    if (!mg->cmd_db)
        return keel__error_set(err, KEEL_ERR_NOMEM, MG_ENGINE, name, "out of memory");
    /* The copy keeps the command's fields in order, except its read and write concerns, which
     * go to the options so that libmongoc applies them (and does not add the URI's next to
     * them). */
    bson_init(&mg->cmd);
    bson_init(&mg->opts);
    mg->have_cmd = 1;
    int has_comment = 0, ok = 1;
    bson_iter_init(&it, &user);
    while (ok && bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        int concern = strcmp(key, "readConcern") == 0 || strcmp(key, "writeConcern") == 0;
        if (strcmp(key, "comment") == 0)
            has_comment = 1;
        ok = bson_append_iter(concern ? &mg->opts : &mg->cmd, key, -1, &it);
    }
    bson_iter_init(&it, &mg->cmd);
    bson_iter_next(&it);
    mg->cmd_name = bson_iter_key(&it);
    mg->cmd_kind = mg_classify(mg->cmd_name, &mg->cmd);
    mg->tag[0] = '\0';
    if (ok && !has_comment && mg->max_wire >= MG_WIRE_COMMENT_EVERYWHERE &&
        keel__word_in_list(mg->cmd_name, taggable)) {
        snprintf(mg->tag, sizeof mg->tag, "keel:%016" PRIx64 ":%" PRIuFAST64, mg_process_nonce,
                 (uint_fast64_t)atomic_fetch_add(&mg_tag_counter, 1));
        ok = BSON_APPEND_UTF8(&mg->cmd, "comment", mg->tag);
        /* The name may have moved with the buffer. */
        bson_iter_init(&it, &mg->cmd);
        bson_iter_next(&it);
        mg->cmd_name = bson_iter_key(&it);
    }
    if (!ok) {
        bson_destroy(&mg->cmd);
        bson_destroy(&mg->opts);
        mg->have_cmd = 0;
        free(mg->cmd_db);
        mg->cmd_db = NULL;
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "the command is too large for a BSON document");
    }
    mg->in_txn = mg->txn == MG_TXN_ACTIVE;
    st = mg_submit(mg, MG_JOB_COMMAND, err);
    if (st != KEEL_OK) {
        bson_destroy(&mg->cmd);
        bson_destroy(&mg->opts);
        mg->have_cmd = 0;
        free(mg->cmd_db);
        mg->cmd_db = NULL;
        mg->tag[0] = '\0';
    }
    return st;
}

static keel_status mg_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    (void)depth;
    const char *name = c->config->name;
    if (op == KEEL_TXN_SAVEPOINT || op == KEEL_TXN_RELEASE || op == KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_UNSUPPORTED, MG_ENGINE, name,
                               "MongoDB has no savepoints: nested transactions are not supported");
    if (op != KEEL_TXN_BEGIN && op != KEEL_TXN_COMMIT && op != KEEL_TXN_ROLLBACK)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MG_ENGINE, name,
                               "unknown transaction operation %d", (int)op);
    keel_status st = mg_ready(c, err);
    if (st != KEEL_OK)
        return st;
    mg_conn *mg = c->impl;
    if (op == KEEL_TXN_BEGIN && mg->txn != MG_TXN_IDLE)
        return keel__error_set(err, KEEL_ERR_TRANSACTION, MG_ENGINE, name,
                               "a transaction is already active on this connection");
    if (op != KEEL_TXN_BEGIN && mg->txn == MG_TXN_IDLE)
        return keel__error_set(err, KEEL_ERR_TRANSACTION, MG_ENGINE, name,
                               "no transaction is active on this connection");
    mg->op = op;
    mg->txn_failed = mg->txn == MG_TXN_FAILED;
    return mg_submit(mg, MG_JOB_TXN, err);
}

static void mg_cancel(keel_conn *c) {
    mg_conn *mg = c->impl;
    if (!mg || !mg->running || mg->kind != MG_JOB_COMMAND)
        return;
    mg_start_cancel(mg);
}

static keel_txn_status mg_txn_status(const keel_conn *c) {
    const mg_conn *mg = c->impl;
    if (!mg || !mg->client || mg->running)
        return KEEL_TXN_UNKNOWN;
    switch (mg->txn) {
    case MG_TXN_ACTIVE:
        return KEEL_TXN_ACTIVE;
    case MG_TXN_FAILED:
        return KEEL_TXN_FAILED;
    default:
        return KEEL_TXN_IDLE;
    }
}

static void mg_close(keel_conn *c) {
    mg_conn *mg = c->impl;
    if (!mg)
        return;
    c->impl = NULL;
    mg->conn = NULL;
    if (mg->running) {
        /* The job cannot be stopped mid-call: its done() closes and frees. A command is asked
         * to stop early, since nobody will read its result. */
        mg->abandoned = 1;
        if (mg->kind == MG_JOB_COMMAND)
            mg_start_cancel(mg);
        return;
    }
    mg_start_close(mg);
}

/* keel_conn_ping: the ping command on the admin database, MongoDB's cheapest round trip. */
static keel_status mg_ping(keel_conn *c, keel_error *err) {
    /* {"ping": 1} as BSON: total length, an int32 element named "ping", the terminator. */
    static const unsigned char ping_cmd[] = { 15,  0, 0, 0, 0x10, 'p', 'i', 'n',
                                              'g', 0, 1, 0, 0,    0,   0 };
    return mg_command(c, "admin", ping_cmd, sizeof ping_cmd, err);
}

const keel__engine keel__engine_mongodb = {
    .name = "mongodb",
    .placeholder_style = KEEL__PH_POSTGRES,
    .check_config = mg_check_config,
    .connect = mg_connect,
    .query = NULL, /* no SQL: the core answers KEEL_ERR_UNSUPPORTED */
    .command = mg_command,
    .ping = mg_ping,
    .transaction = mg_transaction,
    .cancel = mg_cancel,
    .txn_status = mg_txn_status,
    .close = mg_close,
};
