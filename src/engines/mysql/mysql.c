/* src/engines/mysql/mysql.c - the MySQL/MariaDB engine: libmariadb's non-blocking API, loop-driven. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "core/error_int.h"
#include "core/numtext.h"
#include "core/result_int.h"
#include "core/timeconv.h"
#include "engines/cancel.h"
#include "engines/dns.h"
#include "engines/engine.h"
#include "engines/mysql/lib.h"
#include "engines/settings.h"
#include "loop/defer.h"

/*
 * How it works. Every libmariadb call that can wait is made through its _start/_cont pair on a
 * handle in non-blocking mode (MYSQL_OPT_NONBLOCK); what the call waits for (MYSQL_WAIT_READ,
 * MYSQL_WAIT_WRITE, MYSQL_WAIT_TIMEOUT) becomes a watch on the socket or a loop timer, and the
 * call is continued when that fires. Host names are resolved on the worker pool first, so
 * libmariadb only ever sees addresses and never blocks in getaddrinfo; "localhost" means TCP to
 * the loopback address (a Unix socket is configured as a host starting with '/'). TLS
 * connections are the exception: their handshake runs on a worker with the blocking API (see
 * my_wconn), and only their statements run on the loop. Each session runs in UTC (time_zone
 * '+00:00'), in utf8mb4 by default, with CLIENT_FOUND_ROWS so that UPDATE reports the rows it
 * matched, as PostgreSQL does, and without LOAD DATA LOCAL.
 *
 * Statements without parameters use the text protocol, so scripts of several statements work;
 * the result is the last one that returned columns, else the last command. Statements with
 * parameters are server-side prepared statements (binary protocol), cached per connection.
 * Batches use MariaDB's bulk execution (arrays of parameters in one request) where the server
 * has it, and one execution per row otherwise.
 *
 * Values sent: NULL; BOOL as TINYINT 0/1; INT as BIGINT; FLOAT as DOUBLE (NaN and infinities
 * are refused: MySQL cannot store them); NUMERIC as DECIMAL text; TEXT and JSON as strings;
 * BYTES as a binary string; DATE, TIME, TIMESTAMP as MYSQL_TIME; TIMESTAMPTZ as the UTC
 * DATETIME; UUID as its 36-character text (store UUIDs in CHAR(36); they read back as TEXT).
 *
 * Values received, by column type: TINYINT(1) (BOOL, BOOLEAN) as BOOL; other integers and YEAR
 * as INT, with BIGINT UNSIGNED above INT64_MAX as NUMERIC text; DECIMAL as NUMERIC; FLOAT and
 * DOUBLE as FLOAT; DATE as DATE; TIME as TIME when it is a time of day, else (negative, or 24
 * hours and more) as its text; DATETIME and TIMESTAMP as TIMESTAMP (UTC for TIMESTAMP columns,
 * given the session time zone), zero dates as their text; JSON as JSON (MySQL's JSON type, or
 * MariaDB's LONGTEXT marked as JSON in the extended metadata of 10.5.2 and later; otherwise
 * TEXT); binary strings, BLOBs, BIT and GEOMETRY as BYTES; other strings, ENUM and SET as TEXT.
 * Commands report affected rows (0 for statements such as SET or DDL); SELECT reports -1.
 */

#define MY_ENGINE "mysql"
#define MY_DEFAULT_PORT 3306u
#define MY_DEFAULT_HOST "localhost"
#define MY_DEFAULT_CHARSET "utf8mb4"
#define MY_DEFAULT_TIMEOUT_S 10.0
#define MY_SESSION_SETUP "SET time_zone = '+00:00'"

/* Prepared statements kept per connection, least recently used evicted first. */
#define MY_STMT_CACHE 64
/*
 * A batch is sent as bulk executions (MariaDB's array binding) of at most this many rows or
 * bytes of parameter data each, well under the server's max_allowed_packet (16 MiB by default
 * since MariaDB 10.2, the first version with bulk execution).
 */
#define MY_BULK_ROWS 16384
#define MY_BULK_BYTES (4u << 20)
/* Splits of a failed bulk execution pending at once: enough for 2^64 rows. */
#define MY_SPLIT_MAX 64
/* The kill connection gives up after this long, whatever the connect timeout. */
#define MY_KILL_TIMEOUT_S 10u
/* The savepoint a batch runs under when it is already inside a transaction. */
#define MY_BATCH_SAVEPOINT "keel_batch"
/* MySQL's TIME range is ±838:59:59.999999. */
#define MY_TIME_MAX_US (INT64_C(838) * 3600000000 + INT64_C(59) * 60000000 + INT64_C(59999999))
#define MY_US_PER_DAY INT64_C(86400000000)

typedef enum my_phase {
    MY_RESOLVING,  /* the host name is being resolved on the worker pool */
    MY_CONNECTING, /* mysql_real_connect is driving the handshake */
    MY_IDLE,       /* ready; the socket is watched to notice a server-side close */
    MY_BUSY,       /* an operation is in flight */
    MY_DEAD        /* failed or lost; waits for close */
} my_phase;

/* The non-blocking libmariadb call in progress. */
typedef enum my_call {
    C_NONE,
    C_CONNECT,
    C_QUERY,
    C_STORE,
    C_NEXT,
    C_PREPARE,
    C_EXECUTE,
    C_STMT_STORE,
    C_STMT_NEXT,
    C_STMT_CLOSE
} my_call;

typedef enum my_op {
    OP_NONE,
    OP_TEXT, /* a statement without parameters, or transaction control: the text protocol */
    OP_STMT, /* a statement with parameters: a server-side prepared statement */
    OP_MANY  /* a batch: executions of a prepared statement, atomic as a whole */
} my_op;

/* Where a batch is: its rows, or the start or end of its transaction or savepoint. */
typedef enum my_stage { MS_BODY, MS_BEGIN, MS_COMMIT, MS_ROLLBACK } my_stage;

/*
 * What the deferred-report timer reports (R_CONNECT, R_OP), or what waits for a cancel request
 * in flight to return (R_HELD: the end of the operation; R_STEP: the batch's closing statement,
 * which a late KILL QUERY must not hit).
 */
typedef enum my_report { R_NONE, R_CONNECT, R_OP, R_HELD, R_STEP } my_report;

/* How a result column is fetched from the binary protocol and turned into a keel value. */
typedef enum my_how {
    H_NULL,
    H_INT,
    H_UINT,
    H_BOOL,
    H_DOUBLE,
    H_DATE,
    H_TIME,
    H_DATETIME,
    H_STR
} my_how;

typedef enum my_ssl {
    SSL_DISABLED,
    SSL_PREFERRED,
    SSL_REQUIRED,
    SSL_VERIFY_CA,
    SSL_VERIFY_IDENTITY
} my_ssl;

static const char *const my_ssl_names[] = { "DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA",
                                            "VERIFY_IDENTITY" };

/*
 * Resolved connection settings. The connection keeps them for its whole life because a cancel
 * opens a second session with the same credentials; the password is wiped when they are freed.
 */
typedef struct my_settings {
    char *addr;        /* the address connected to (the host name for my_wconn), or NULL */
    char *unix_socket; /* a Unix socket path, or NULL */
    unsigned port;
    char *user;
    char *password;
    char *charset;
    int ssl_mode;
    char *ssl_ca;
    char *ssl_cert;
    char *ssl_key;
} my_settings;

typedef struct my_wconn my_wconn;
typedef struct my_kill my_kill;
typedef struct my_cached my_cached;

/* A prepared statement in the connection's cache. */
struct my_cached {
    MYSQL_STMT *stmt;
    char *sql;
    size_t len;
    uint64_t hash;
    my_cached *prev, *next;
};

/* Storage behind one bound parameter of a single-row execution. */
typedef struct my_slot {
    union {
        int64_t i;
        double d;
        signed char b;
        MYSQL_TIME t;
        char text[KEEL__UUID_TEXT_MAX];
    } u;
    unsigned long len;
} my_slot;

/* One column of a binary-protocol result: its binding and how it becomes a keel value. */
typedef struct my_col {
    keel_type kind;
    my_how how;
    union {
        int64_t i;
        double d;
        MYSQL_TIME t;
    } v;
    char *buf;
    unsigned long cap;
    unsigned long len;
    my_bool is_null;
    my_bool error;
} my_col;

typedef struct my_impl {
    keel_conn *c;
    MYSQL *m;
    my_phase phase;
    keel_watch *watch;
    int watch_fd;
    keel_timer *deadline; /* the connect deadline; gone once connected */
    keel_timer *libtimer; /* a MYSQL_WAIT_TIMEOUT libmariadb asked for */
    keel__defer *kick;    /* reports an outcome reached inside a start function */
    keel__dns *dns;       /* the host-name lookup in flight, if any */
    my_wconn *wconn;      /* a blocking connect running on the worker pool, if any */
    double timeout_s;
    char where[200]; /* "host H, port P" or "socket S", for messages */

    my_settings set;
    char *host;     /* the configured host (a name or an address) */
    char *database; /* resolved, NULL for none */
    char **addrs;   /* the addresses to try, in order */
    size_t naddrs, addr_next;
    unsigned long thread_id;
    int bulk_ok; /* the server executes arrays of parameters (MariaDB bulk) */

    /* The libmariadb call in progress and its outputs. */
    my_call call;
    int r_int;
    my_bool r_bool;
    MYSQL *r_mysql;
    MYSQL_RES *r_res;
    MYSQL_STMT *closing; /* the statement C_STMT_CLOSE closes */

    /* The running operation. */
    my_op op;
    int in_start;     /* inside connect/query/transaction: reports go through the kick */
    my_report report; /* the outcome waiting for the kick */
    uint64_t op_seq;  /* counts operations, so a late cancel retry can tell it is stale */
    int failed;       /* err holds the operation's first error */
    keel_error err;
    keel_result *keep; /* the result the operation will return */
    int keep_rows;     /* keep came from a statement that returned columns */
    int discard;       /* rows of the running statement are read and dropped */
    const char *qsql;  /* text of C_QUERY */
    size_t qlen;
    keel__buf sqlbuf;

    /* The prepared statement of the operation. */
    const char *ssql;
    size_t slen;
    MYSQL_STMT *cur;
    int cur_new;      /* cur is not prepared yet */
    int cur_uncached; /* cur is prepared but not in the cache (out of memory) */
    /* cur's own result metadata, set aside while it reads a result whose columns changed */
    MYSQL_FIELD *rm_fields;
    MYSQL_BIND *rm_bind;
    unsigned rm_count;
    int rm_on;
    const size_t *map;
    size_t nmap;
    size_t nparams;
    const keel_value *prow; /* the parameters of a single execution */
    keel_value *pcopy;      /* a private copy of the operation's parameters, when one is needed */
    MYSQL_BIND *binds;
    my_slot *slots;
    size_t bcap;

    /* The statement cache, most recently used first, and statements waiting to be closed. */
    my_cached *lru_head, *lru_tail;
    size_t ncached;
    MYSQL_STMT **evict;
    size_t nevict, evict_cap;

    /* Result columns of the binary protocol, reused by every statement. */
    my_col *cols;
    MYSQL_BIND *rbinds;
    size_t ccap;

    /* The running batch. */
    my_stage stage;
    int own_txn; /* no transaction was open: the batch begins one (else a savepoint) */
    int wrapped; /* the batch's transaction or savepoint is open */
    int rowmode; /* one execution per row: no bulk support, or the statement returns rows */
    int cleanup; /* the batch is ending its transaction or savepoint: cancel must not hit it */
    int cancel_wanted; /* the operation was asked to stop: a batch starts no further range */
    size_t brows;      /* rows of the batch */
    size_t bnext;      /* the first row not yet in any range */
    size_t ra, rb;     /* the rows of the running execution */
    size_t split[MY_SPLIT_MAX][2];
    size_t nsplit;
    int64_t baffected;
    keel_error berr; /* the batch's error while its transaction is rolled back */
    keel__arena barena;

    keel__cancel cancel; /* cancel requests for the running operation, and their retries */
} my_impl;

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

/*
 * A KILL QUERY request, sent from the worker pool. It holds copies of everything it needs, so
 * the connection may close meanwhile.
 */
struct my_kill {
    my_settings set;
    unsigned long thread_id;
    unsigned timeout_s;
};

static void my_run(my_impl *p, int cont, int ready);
static void my_on_ready(void *arg, int events);
static const keel__cancel_ops my_cancel_ops;
static int my_text_done(my_impl *p);
static int my_stmt_done(my_impl *p);
static int my_stmt_begin(my_impl *p);
static int my_batch_start(my_impl *p);
static int my_finish(my_impl *p);
static int my_evict_push(my_impl *p, MYSQL_STMT *st);
static void my_remeta_end(my_impl *p);

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */

static const char *my_dbname(const keel_conn *c) { return c && c->config ? c->config->name : ""; }

static pthread_once_t my_lib_once = PTHREAD_ONCE_INIT;
static char my_load_error[256]; /* why libmariadb could not be loaded; written only in the once */

static void my_lib_init(void) {
    if (keel__mysql_lib_load(my_load_error, sizeof my_load_error) == 0)
        mysql_library_init(0, NULL, NULL);
}

/*
 * Loads libmariadb (engines/mysql/lib.h) and runs its global initialisation, which is not
 * thread-safe, once per process; the loop and workers both use it. KEEL_ERR_UNSUPPORTED naming
 * the library when it cannot be loaded.
 */
static keel_status my_library(const char *name, keel_error *err) {
    pthread_once(&my_lib_once, my_lib_init);
    if (!my_load_error[0])
        return KEEL_OK;
    return keel__error_set(err, KEEL_ERR_UNSUPPORTED, MY_ENGINE, name,
                           "database '%s' needs libmariadb, which could not be loaded: %s", name,
                           my_load_error);
}

/*
 * OpenSSL keeps errors in a queue per thread, and SSL_get_error misreads a harmless "want to
 * read" as a failure while an older error sits in it. libmariadb does not clear the queue before
 * its TLS calls, and on a loop thread shared by many connections (and other libraries) a stale
 * error is common, so it is cleared before each call of a TLS connection. The function is
 * looked up when libmariadb is loaded: libmariadb loads libcrypto when it uses OpenSSL; with
 * another TLS library there is no such queue and nothing to clear.
 */
static void my_tls_errors_clear(void) {
    if (keel__mysql_lib.err_clear)
        keel__mysql_lib.err_clear();
}

static int64_t my_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void my_wipe_free(char *s) {
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void my_settings_free(my_settings *s) {
    free(s->addr);
    free(s->unix_socket);
    free(s->user);
    my_wipe_free(s->password);
    free(s->charset);
    free(s->ssl_ca);
    free(s->ssl_cert);
    free(s->ssl_key);
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

static int my_settings_copy(my_settings *dst, const my_settings *src) {
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
        my_settings_free(dst);
    return oom ? -1 : 0;
}

/*
 * Applies the settings to a fresh handle: protocol, character set, TLS, and no LOAD DATA
 * LOCAL (it would let a server read the client's files). Returns 0, or -1 when libmariadb
 * refused an option.
 */
static int my_apply(MYSQL *m, const my_settings *s) {
    unsigned proto = s->unix_socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    unsigned no_infile = 0;
    int rc = 0;
    rc |= mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    rc |= mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &no_infile);
    rc |= mysql_options(m, MYSQL_SET_CHARSET_NAME, s->charset ? s->charset : MY_DEFAULT_CHARSET);
    rc |= mysql_options4(m, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "keel");
    if (s->ssl_mode != SSL_DISABLED) {
        /* In libmariadb 3.3 this asks for TLS when the server offers it; REQUIRED and up are
         * enforced after the handshake. A CA makes OpenSSL verify the chain; the host name is
         * checked only for VERIFY_IDENTITY. */
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
    }
    return rc ? -1 : 0;
}

/* Status of a MySQL error: by number first, since many errors carry the generic HY000. */
static keel_status my_status_of(unsigned no, const char *state) {
    switch (no) {
    case ER_DUP_ENTRY:
    case ER_DUP_KEY:
    case ER_DUP_ENTRY_WITH_KEY_NAME:
    case ER_ROW_IS_REFERENCED:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW:
    case ER_NO_REFERENCED_ROW_2:
    case ER_BAD_NULL_ERROR:
    case ER_NO_DEFAULT_FOR_FIELD:
    case ER_CONSTRAINT_FAILED:
    case 3819: /* MySQL 8: check constraint violated */
        return KEEL_ERR_INTEGRITY;
    case ER_QUERY_INTERRUPTED:
        return KEEL_ERR_CANCELLED;
    case ER_STATEMENT_TIMEOUT:
    case 3024: /* MySQL: max_execution_time exceeded */
        return KEEL_ERR_TIMEOUT;
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_LOCK_DEADLOCK:
    case ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION:
    case ER_XAER_RMFAIL:
        return KEEL_ERR_TRANSACTION;
    case ER_WARN_DATA_OUT_OF_RANGE:
    case WARN_DATA_TRUNCATED:
    case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:
    case ER_TRUNCATED_WRONG_VALUE:
    case ER_DATA_TOO_LONG:
    case ER_DIVISION_BY_ZERO:
    case ER_ILLEGAL_VALUE_FOR_TYPE:
    case ER_WRONG_VALUE_FOR_TYPE:
    case ER_DATA_OUT_OF_RANGE:
    case ER_BAD_DATA:
    case ER_WARN_NULL_TO_NOTNULL:
    case 3140: /* MySQL: invalid JSON text */
        return KEEL_ERR_DATA;
    case ER_WRONG_ARGUMENTS:
    case CR_PARAMS_NOT_BOUND:
    case CR_INVALID_PARAMETER_NO:
    case CR_UNSUPPORTED_PARAM_TYPE:
        return KEEL_ERR_PARAMETERS;
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_PACKET_TOO_LARGE:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_WRITE_INTERRUPTED:
    case ER_ABORTING_CONNECTION:
    case 4031: /* MySQL 8: the client was disconnected for inactivity */
        return KEEL_ERR_CONNECTION_LOST;
    case ER_CON_COUNT_ERROR:
    case ER_TOO_MANY_USER_CONNECTIONS:
    case ER_OUT_OF_RESOURCES:
        return KEEL_ERR_OPERATIONAL;
    case ER_UNSUPPORTED_PS:
    case ER_NOT_SUPPORTED_YET:
        return KEEL_ERR_UNSUPPORTED;
    case CR_OUT_OF_MEMORY:
        return KEEL_ERR_NOMEM;
    default:
        break;
    }
    if (state && strlen(state) == 5 && strcmp(state, "HY000") != 0 && strcmp(state, "00000") != 0)
        return keel__status_from_sqlstate(state);
    return KEEL_ERR_DATABASE;
}

/*
 * Fills err from a MySQL error. rows names the batch rows it belongs to: [a, b) when b > a.
 * A lost connection marks the connection broken.
 */
static void my_error(my_impl *p, unsigned no, const char *state, const char *msg, size_t a,
                     size_t b, keel_error *err) {
    char raw[KEEL_ERROR_MESSAGE_MAX * 2], clean[KEEL_ERROR_MESSAGE_MAX];
    int n = 0;
    if (b == a + 1)
        n = snprintf(raw, sizeof raw, "row %zu: ", a);
    else if (b > a + 1)
        n = snprintf(raw, sizeof raw, "rows %zu-%zu: ", a, b - 1);
    snprintf(raw + n, sizeof raw - (size_t)n, "%s", msg && *msg ? msg : "unknown MySQL error");
    for (char *s = raw; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
    keel__redact(clean, sizeof clean, raw);
    keel_status code = my_status_of(no, state);
    if (code == KEEL_ERR_CONNECTION_LOST)
        p->c->broken = 1;
    keel__error_set(err, code, MY_ENGINE, my_dbname(p->c), "%s", clean);
    keel__error_set_sqlstate(err, state && strcmp(state, "00000") != 0 ? state : "");
}

/* Records the operation's first error. */
static void my_fail(my_impl *p, keel_status code, const char *msg) {
    if (p->failed)
        return;
    keel__error_set(&p->err, code, MY_ENGINE, my_dbname(p->c), "%s", msg);
    p->failed = 1;
}

static void my_fail_mysql(my_impl *p) {
    if (p->failed)
        return;
    my_error(p, mysql_errno(p->m), mysql_sqlstate(p->m), mysql_error(p->m), 0, 0, &p->err);
    p->failed = 1;
}

static void my_fail_stmt(my_impl *p, MYSQL_STMT *st, size_t a, size_t b) {
    if (p->failed)
        return;
    unsigned no = mysql_stmt_errno(st);
    if (no)
        my_error(p, no, mysql_stmt_sqlstate(st), mysql_stmt_error(st), a, b, &p->err);
    else
        my_error(p, mysql_errno(p->m), mysql_sqlstate(p->m), mysql_error(p->m), a, b, &p->err);
    p->failed = 1;
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

static keel_status my_check_config(const keel__dbconfig *dbc, keel_error *err) {
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
        if (strcmp(key, "connect_timeout") == 0 && dbc->connect_timeout <= 0) {
            double d = keel__strtod(v, NULL);
            if (d > 0)
                p->timeout_s = d;
        }
        if (slot) {
            free(*slot);
            *slot = v;
        } else {
            free(v);
        }
    }
    if (st == KEEL_OK && !s->charset && !(s->charset = strdup(MY_DEFAULT_CHARSET)))
        st = keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(p->c), "out of memory");
    if (st == KEEL_OK) {
        /* The resolved values of references are checked here, the literal ones were checked
         * with the config. */
        const char *problem = s->charset ? my_option_problem("charset", s->charset) : NULL;
        if (problem)
            st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, my_dbname(p->c),
                                 "databases.%s.options.charset: invalid value (expected %s)",
                                 my_dbname(p->c), problem);
        if (st == KEEL_OK && ssl_mode) {
            s->ssl_mode = my_ssl_mode(ssl_mode);
            if (s->ssl_mode < 0)
                st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, my_dbname(p->c),
                                     "databases.%s.options.ssl_mode: invalid value (expected %s)",
                                     my_dbname(p->c), my_option_problem("ssl_mode", "x"));
            else if (s->ssl_mode >= SSL_VERIFY_CA && !s->ssl_ca)
                st = keel__error_set(err, KEEL_ERR_CONFIG, MY_ENGINE, my_dbname(p->c),
                                     "databases.%s.options.ssl_ca: ssl_mode %s needs the CA "
                                     "certificate to verify the server against",
                                     my_dbname(p->c), my_ssl_names[s->ssl_mode]);
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
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(p->c),
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

/*
 * Watches fd. A new socket (the first, or another address) gets a fresh watch, since an epoll
 * or asyncio host would not notice a descriptor number that was reused. Returns 0 or -1.
 */
static int my_watch_socket(my_impl *p, int fd) {
    if (fd < 0)
        return -1;
    if (fd == p->watch_fd && p->watch)
        return 0;
    my_unwatch(p);
    p->watch = keel__watch_new(p->c->loop, fd, my_on_ready, p);
    if (!p->watch)
        return -1;
    p->watch_fd = fd;
    return 0;
}

/* Closes the handle. An operation in flight is abandoned: its socket is shut down first so the
 * goodbye libmariadb sends cannot block, and a socket a suspended connect still owns (libmariadb
 * forgets it) is closed here. */
static void my_close_handle(my_impl *p) {
    int fd = -1, orphan = 0;
    if (p->m && p->call != C_NONE) {
        fd = (int)mysql_get_socket(p->m);
        orphan = p->call == C_CONNECT && !p->m->net.pvio;
    }
    my_unwatch(p);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
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
            p->report = R_NONE; /* my_connect returns the error itself */
        return 1;
    }
    keel__conn_connected(p->c, &copy);
    return 1;
}

static int my_connect_error(my_impl *p, keel_status code, const char *what) {
    keel_error err;
    char clean[KEEL_ERROR_MESSAGE_MAX];
    keel__redact(clean, sizeof clean, what);
    keel__error_set(&err, code, MY_ENGINE, my_dbname(p->c), "could not connect to MySQL at %s: %s",
                    p->where, clean);
    return my_connect_failed(p, &err);
}

/* Creates the handle for the next address and makes C_CONNECT the call to start. */
static int my_new_handle(my_impl *p) {
    my_close_handle(p);
    free(p->set.addr);
    p->set.addr = NULL;
    if (!p->set.unix_socket) {
        if (p->addr_next >= p->naddrs)
            return my_connect_error(p, KEEL_ERR_CONNECT, "no address to connect to");
        if (!(p->set.addr = strdup(p->addrs[p->addr_next++])))
            return my_connect_error(p, KEEL_ERR_NOMEM, "out of memory");
    }
    p->m = mysql_init(NULL);
    if (!p->m)
        return my_connect_error(p, KEEL_ERR_NOMEM, "out of memory");
    if (mysql_options(p->m, MYSQL_OPT_NONBLOCK, 0) != 0 || my_apply(p->m, &p->set) != 0 ||
        mysql_options(p->m, MYSQL_INIT_COMMAND, MY_SESSION_SETUP) != 0)
        return my_connect_error(p, KEEL_ERR_CONNECT, mysql_error(p->m));
    p->call = C_CONNECT;
    return 0;
}

/* The handshake succeeded: check TLS, learn the server, become idle and report. */
static int my_connected(my_impl *p) {
    if (p->set.ssl_mode >= SSL_REQUIRED && !mysql_get_ssl_cipher(p->m)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the server did not use TLS, which ssl_mode %s requires",
                 my_ssl_names[p->set.ssl_mode]);
        return my_connect_error(p, KEEL_ERR_CONNECT, msg);
    }
    p->thread_id = mysql_thread_id(p->m);
    unsigned long caps = 0, ext = 0;
    mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_CAPABILITIES, &caps);
    mariadb_get_infov(p->m, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext);
    p->bulk_ok = !(caps & CLIENT_MYSQL) && (ext & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32));
    if (my_watch_socket(p, (int)mysql_get_socket(p->m)) != 0 ||
        keel__watch_set(p->watch, KEEL_READ) != 0)
        return my_connect_error(p, KEEL_ERR_INTERNAL,
                                "the event loop refused to watch the connection");
    if (p->in_start) {
        p->failed = 0;
        if (keel__defer_schedule(p->kick) != 0)
            return my_connect_error(p, KEEL_ERR_INTERNAL, "the event loop refused a timer");
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

static int my_after_connect(my_impl *p) {
    if (p->r_mysql)
        return my_connected(p);
    unsigned no = mysql_errno(p->m);
    /* Another address of the name may work where this one refused or was unreachable. */
    if ((no == CR_CONN_HOST_ERROR || no == CR_CONNECTION_ERROR) && !p->set.unix_socket &&
        p->addr_next < p->naddrs)
        return my_new_handle(p);
    char msg[KEEL_ERROR_MESSAGE_MAX];
    snprintf(msg, sizeof msg, "%s", mysql_error(p->m));
    keel_status code = no == ER_CON_COUNT_ERROR || no == ER_TOO_MANY_USER_CONNECTIONS
                           ? KEEL_ERR_OPERATIONAL
                           : KEEL_ERR_CONNECT;
    keel_error err;
    char clean[KEEL_ERROR_MESSAGE_MAX];
    keel__redact(clean, sizeof clean, msg);
    keel__error_set(&err, code, MY_ENGINE, my_dbname(p->c), "could not connect to MySQL at %s: %s",
                    p->where, clean);
    const char *state = mysql_sqlstate(p->m);
    if (state && strcmp(state, "HY000") != 0 && strcmp(state, "00000") != 0)
        keel__error_set_sqlstate(&err, state);
    return my_connect_failed(p, &err);
}

static void my_on_deadline(void *arg) {
    my_impl *p = arg;
    keel_error err;
    keel__error_set(&err, KEEL_ERR_TIMEOUT, MY_ENGINE, my_dbname(p->c),
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
            keel__error_set(&err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(p->c), "out of memory");
        else
            keel__error_set(&err, KEEL_ERR_CONNECT, MY_ENGINE, my_dbname(p->c),
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
        my_run(p, 0, 0);
}

static void my_wconn_free(my_wconn *w) {
    free(w->host);
    free(w->unix_socket);
    free(w->user);
    my_wipe_free(w->password);
    my_wipe_free(w->database);
    free(w);
}

/* Runs on a worker thread: the whole handshake, blocking, bounded by the connect timeout. */
static void my_wconn_run(void *arg) {
    my_wconn *w = arg;
    my_tls_errors_clear();
    w->ret = mysql_real_connect(w->m, w->unix_socket ? MY_DEFAULT_HOST : w->host, w->user,
                                w->password, w->database, w->port, w->unix_socket,
                                CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_FOUND_ROWS);
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
    my_wconn_free(w);
    if (p->r_mysql) {
        /* The blocking handshake left the socket in blocking mode, in which TLS reads would
         * block the loop instead of asking to wait. */
        int fd = (int)mysql_get_socket(p->m);
        int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
            mysql_options(p->m, MYSQL_OPT_NONBLOCK, 0) != 0) {
            my_connect_error(p, KEEL_ERR_CONNECT, "could not switch to non-blocking mode");
            return;
        }
    }
    my_after_connect(p);
}

/* Starts the blocking connect of my_wconn on the worker pool. Returns 0, or -1. */
static int my_wconn_start(my_impl *p, keel__workers *workers, const char *host) {
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
    if (!w->m || my_apply(w->m, &p->set) != 0 ||
        mysql_options(w->m, MYSQL_OPT_CONNECT_TIMEOUT, &t) != 0 ||
        mysql_options(w->m, MYSQL_INIT_COMMAND, MY_SESSION_SETUP) != 0 ||
        keel__workers_submit(workers, my_wconn_run, my_wconn_done, w) != 0) {
        if (w->m)
            mysql_close(w->m);
        my_wconn_free(w);
        return -1;
    }
    p->wconn = w;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The call driver                                                                          */

static int my_call_start(my_impl *p) {
    if (p->set.ssl_mode != SSL_DISABLED)
        my_tls_errors_clear();
    switch (p->call) {
    case C_CONNECT: {
        const char *host = p->set.unix_socket ? MY_DEFAULT_HOST : p->set.addr;
        return mysql_real_connect_start(
            &p->r_mysql, p->m, host, p->set.user, p->set.password, p->database, p->set.port,
            p->set.unix_socket, CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_FOUND_ROWS);
    }
    case C_QUERY:
        return mysql_real_query_start(&p->r_int, p->m, p->qsql, p->qlen);
    case C_STORE:
        return mysql_store_result_start(&p->r_res, p->m);
    case C_NEXT:
        return mysql_next_result_start(&p->r_int, p->m);
    case C_PREPARE:
        return mysql_stmt_prepare_start(&p->r_int, p->cur, p->ssql, (unsigned long)p->slen);
    case C_EXECUTE:
        return mysql_stmt_execute_start(&p->r_int, p->cur);
    case C_STMT_STORE:
        return mysql_stmt_store_result_start(&p->r_int, p->cur);
    case C_STMT_NEXT:
        return mysql_stmt_next_result_start(&p->r_int, p->cur);
    case C_STMT_CLOSE:
        return mysql_stmt_close_start(&p->r_bool, p->closing);
    case C_NONE:
        break;
    }
    return 0;
}

static int my_call_cont(my_impl *p, int ready) {
    if (p->set.ssl_mode != SSL_DISABLED)
        my_tls_errors_clear();
    switch (p->call) {
    case C_CONNECT:
        return mysql_real_connect_cont(&p->r_mysql, p->m, ready);
    case C_QUERY:
        return mysql_real_query_cont(&p->r_int, p->m, ready);
    case C_STORE:
        return mysql_store_result_cont(&p->r_res, p->m, ready);
    case C_NEXT:
        return mysql_next_result_cont(&p->r_int, p->m, ready);
    case C_PREPARE:
        return mysql_stmt_prepare_cont(&p->r_int, p->cur, ready);
    case C_EXECUTE:
        return mysql_stmt_execute_cont(&p->r_int, p->cur, ready);
    case C_STMT_STORE:
        return mysql_stmt_store_result_cont(&p->r_int, p->cur, ready);
    case C_STMT_NEXT:
        return mysql_stmt_next_result_cont(&p->r_int, p->cur, ready);
    case C_STMT_CLOSE:
        return mysql_stmt_close_cont(&p->r_bool, p->closing, ready);
    case C_NONE:
        break;
    }
    return 0;
}

/*
 * Waits for what libmariadb asked: the socket for reading or writing (MYSQL_WAIT_EXCEPT is
 * only used on Windows; a read wakes us for errors too), and a timer for MYSQL_WAIT_TIMEOUT.
 * Returns 0, or -1 when the loop refused.
 */
static int my_wait(my_impl *p, int status) {
    int fd = (int)mysql_get_socket(p->m);
    int ev = 0;
    if (status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT))
        ev |= KEEL_READ;
    if (status & MYSQL_WAIT_WRITE)
        ev |= KEEL_WRITE;
    if (ev && my_watch_socket(p, fd) != 0)
        return -1;
    if (p->watch && keel__watch_set(p->watch, ev) != 0)
        return -1;
    int64_t at = -1;
    if (status & MYSQL_WAIT_TIMEOUT)
        at = keel_now_ms() + (int64_t)mysql_get_timeout_value_ms(p->m);
    return keel__timer_arm(p->libtimer, at) == 0 ? 0 : -1;
}

static int my_after(my_impl *p, my_call done);

/*
 * Starts (cont == 0) or continues p->call, then the calls that follow it, until one has to
 * wait or the operation is over. When it is over it has been reported and p may be gone.
 */
static void my_run(my_impl *p, int cont, int ready) {
    for (;;) {
        int w = cont ? my_call_cont(p, ready) : my_call_start(p);
        cont = 0;
        if (w) {
            if (my_wait(p, w) == 0)
                return;
            /* libmariadb is suspended inside the call and nothing will wake it: give up.
             * p->call stays set, so that close knows the socket is mid-operation. */
            p->c->broken = 1;
            if (p->phase == MY_CONNECTING) {
                my_connect_error(p, KEEL_ERR_INTERNAL,
                                 "the event loop refused to watch the connection");
                return;
            }
            my_fail(p, KEEL_ERR_INTERNAL, "the event loop refused to watch the connection");
            my_finish(p);
            return;
        }
        keel__timer_arm(p->libtimer, -1);
        my_call done = p->call;
        p->call = C_NONE;
        if (my_after(p, done) != 0)
            return;
    }
}

static void my_on_libtimer(void *arg) {
    my_impl *p = arg;
    if (p->call != C_NONE && p->phase != MY_DEAD)
        my_run(p, 1, MYSQL_WAIT_TIMEOUT);
}

/* ---------------------------------------------------------------------------------------- */
/* Result decoding                                                                          */

static int my_field_is_json(const MYSQL_FIELD *f) {
    if (f->type == MYSQL_TYPE_JSON)
        return 1;
    /* MariaDB stores JSON as LONGTEXT and names the format in extended metadata (10.5.2+). */
    MARIADB_CONST_STRING attr;
    if (mariadb_field_attr(&attr, f, MARIADB_FIELD_ATTR_FORMAT_NAME) == 0 && attr.length == 4 &&
        strncasecmp(attr.str, "json", 4) == 0)
        return 1;
    return 0;
}

/* The keel type of a result column. */
static keel_type my_field_kind(const MYSQL_FIELD *f) {
    switch (f->type) {
    case MYSQL_TYPE_TINY:
        if (f->length == 1)
            return KEEL_TYPE_BOOL; /* TINYINT(1), which BOOL and BOOLEAN stand for */
        return KEEL_TYPE_INT;
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR:
        return KEEL_TYPE_INT;
    case MYSQL_TYPE_FLOAT:
    case MYSQL_TYPE_DOUBLE:
        return KEEL_TYPE_FLOAT;
    case MYSQL_TYPE_DECIMAL:
    case MYSQL_TYPE_NEWDECIMAL:
        return KEEL_TYPE_NUMERIC;
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE:
        return KEEL_TYPE_DATE;
    case MYSQL_TYPE_TIME:
        return KEEL_TYPE_TIME;
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_TIMESTAMP:
        return KEEL_TYPE_TIMESTAMP;
    case MYSQL_TYPE_JSON:
        return KEEL_TYPE_JSON;
    case MYSQL_TYPE_BIT:
    case MYSQL_TYPE_GEOMETRY:
        return KEEL_TYPE_BYTES;
    case MYSQL_TYPE_NULL:
        return KEEL_TYPE_NULL;
    case MYSQL_TYPE_ENUM:
    case MYSQL_TYPE_SET:
        return KEEL_TYPE_TEXT;
    default:
        /* Strings and blobs: the binary collation (63) marks bytes. */
        if (f->charsetnr == 63)
            return KEEL_TYPE_BYTES;
        return my_field_is_json(f) ? KEEL_TYPE_JSON : KEEL_TYPE_TEXT;
    }
}

/* Days since 1970 of a MYSQL_TIME date, or -1 for dates keel cannot hold ("0000-00-00"). */
static int my_days_of(const MYSQL_TIME *t, int32_t *days) {
    if (t->month < 1 || t->month > 12 || t->day < 1 || t->day > 31 || t->year > 9999)
        return -1;
    int32_t d = keel__days_from_civil(t->year, t->month, t->day);
    int64_t y;
    unsigned mo, da;
    keel__civil_from_days(d, &y, &mo, &da);
    if (y != (int64_t)t->year || mo != t->month || da != t->day)
        return -1;
    *days = d;
    return 0;
}

/* The text MySQL would write for a date or time keel cannot hold, as a TEXT value. */
static int my_time_text(keel_result *res, keel_value *v, const MYSQL_TIME *t, my_how how) {
    char buf[64];
    int n = 0;
    if (how == H_TIME) {
        unsigned long hours = (unsigned long)t->day * 24 + t->hour;
        n = snprintf(buf, sizeof buf, "%s%02lu:%02u:%02u", t->neg ? "-" : "", hours, t->minute,
                     t->second);
    } else {
        n = snprintf(buf, sizeof buf, "%04u-%02u-%02u", t->year, t->month, t->day);
        if (how == H_DATETIME)
            n += snprintf(buf + n, sizeof buf - (size_t)n, " %02u:%02u:%02u", t->hour, t->minute,
                          t->second);
    }
    if (how != H_DATE && t->second_part)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ".%06lu", t->second_part);
    return keel__result_set_text(res, v, KEEL_TYPE_TEXT, buf, (size_t)n);
}

/* Decodes one MYSQL_TIME of a DATE, TIME or DATETIME column. -1 when out of memory. */
static int my_decode_time(keel_result *res, keel_value *v, const MYSQL_TIME *t, my_how how) {
    int64_t tod =
        (((int64_t)t->hour * 60 + t->minute) * 60 + t->second) * 1000000 + (int64_t)t->second_part;
    int32_t days;
    switch (how) {
    case H_DATE:
        if (my_days_of(t, &days) == 0) {
            v->type = KEEL_TYPE_DATE;
            v->u.date = days;
            return 0;
        }
        break;
    case H_TIME:
        /* keel's TIME is a time of day; durations MySQL also stores come back as text. */
        if (!t->neg && t->day == 0 && t->hour < 24) {
            v->type = KEEL_TYPE_TIME;
            v->u.micros = tod;
            return 0;
        }
        break;
    default:
        if (my_days_of(t, &days) == 0 && t->hour < 24) {
            v->type = KEEL_TYPE_TIMESTAMP;
            v->u.micros = (int64_t)days * MY_US_PER_DAY + tod;
            return 0;
        }
        break;
    }
    return my_time_text(res, v, t, how);
}

/* Makes v a text-like value of type t pointing at n bytes (NUL-terminated) of a stored result. */
static void my_point_text(keel_value *v, keel_type t, const char *s, size_t n) {
    v->type = t;
    v->u.str.ptr = s;
    v->u.str.len = n;
}

/*
 * Decodes a value of the text protocol. Text-like values point into the stored result, which the
 * keel_result owns (libmariadb NUL-terminates every field it stores), so nothing is copied.
 */
static void my_decode_text(keel_type kind, const MYSQL_FIELD *f, const char *s, size_t n,
                           keel_value *v) {
    switch (kind) {
    case KEEL_TYPE_BOOL:
    case KEEL_TYPE_INT:
        if (keel__parse_int64(s, n, &v->u.i64) == 0) {
            if (kind == KEEL_TYPE_BOOL) {
                int64_t i = v->u.i64;
                v->u.boolean = i != 0;
            }
            v->type = kind;
            return;
        }
        /* BIGINT UNSIGNED above INT64_MAX */
        my_point_text(v, (f->flags & UNSIGNED_FLAG) ? KEEL_TYPE_NUMERIC : KEEL_TYPE_TEXT, s, n);
        return;
    case KEEL_TYPE_FLOAT:
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = keel__strtod(s, NULL);
        return;
    case KEEL_TYPE_DATE:
        if (keel__parse_date(s, n, &v->u.date) == 0) {
            v->type = KEEL_TYPE_DATE;
            return;
        }
        break;
    case KEEL_TYPE_TIME:
        if (keel__parse_time(s, n, &v->u.micros) == 0 && v->u.micros < MY_US_PER_DAY) {
            v->type = KEEL_TYPE_TIME;
            return;
        }
        break;
    case KEEL_TYPE_TIMESTAMP:
        if (keel__parse_timestamp(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMP;
            return;
        }
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
        my_point_text(v, kind, s, n);
        return;
    default:
        break;
    }
    my_point_text(v, KEEL_TYPE_TEXT, s, n);
}

static keel_status my_nomem(my_impl *p, keel_error *err) {
    return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(p->c), "out of memory");
}

static void my_free_res(void *r) { mysql_free_result(r); }

/*
 * Builds a keel_result from a stored text-protocol result. On success the keel_result owns r
 * (its values point into it; a stored result no longer refers to the connection, so it may
 * outlive it); on failure r is still the caller's.
 */
static keel_status my_decode_res(my_impl *p, MYSQL_RES *r, keel_result **out, keel_error *err) {
    unsigned ncols = mysql_num_fields(r);
    MYSQL_FIELD *f = mysql_fetch_fields(r);
    keel_type kinds_local[64];
    keel_type *kinds = ncols <= 64 ? kinds_local : malloc(ncols * sizeof *kinds);
    keel_result *res = keel__result_new(ncols);
    if (!res || !kinds)
        goto nomem;
    for (unsigned i = 0; i < ncols; i++) {
        kinds[i] = my_field_kind(&f[i]);
        if (keel__result_set_column(res, i, f[i].name, f[i].name_length, kinds[i]) != 0)
            goto nomem;
    }
    uint64_t nrows = mysql_num_rows(r);
    if (nrows && keel__result_reserve(res, (size_t)nrows) != 0)
        goto nomem;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) != NULL) {
        unsigned long *lens = mysql_fetch_lengths(r);
        keel_value *vals = keel__result_add_row(res);
        if (!vals)
            goto nomem;
        for (unsigned i = 0; i < ncols; i++) {
            if (row[i] && kinds[i] != KEEL_TYPE_NULL)
                my_decode_text(kinds[i], &f[i], row[i], lens[i], &vals[i]);
        }
    }
    keel__result_set_affected(res, -1);
    keel__result_own(res, my_free_res, r);
    if (kinds != kinds_local)
        free(kinds);
    *out = res;
    return KEEL_OK;
nomem:
    if (kinds != kinds_local)
        free(kinds);
    keel_result_free(res);
    return my_nomem(p, err);
}

/* How a binary-protocol column is fetched. */
static my_how my_field_how(const MYSQL_FIELD *f, keel_type kind) {
    switch (kind) {
    case KEEL_TYPE_BOOL:
        return H_BOOL;
    case KEEL_TYPE_INT:
        return (f->flags & UNSIGNED_FLAG) ? H_UINT : H_INT;
    case KEEL_TYPE_FLOAT:
        return H_DOUBLE;
    case KEEL_TYPE_DATE:
        return H_DATE;
    case KEEL_TYPE_TIME:
        return H_TIME;
    case KEEL_TYPE_TIMESTAMP:
        return H_DATETIME;
    case KEEL_TYPE_NULL:
        return H_NULL;
    default:
        return H_STR;
    }
}

static int my_cols_reserve(my_impl *p, size_t n) {
    if (n <= p->ccap)
        return 0;
    my_col *cols = realloc(p->cols, n * sizeof *cols);
    if (!cols)
        return -1;
    p->cols = cols;
    memset(cols + p->ccap, 0, (n - p->ccap) * sizeof *cols);
    MYSQL_BIND *b = realloc(p->rbinds, n * sizeof *b);
    if (!b)
        return -1;
    p->rbinds = b;
    p->ccap = n;
    return 0;
}

/* Binds result column i to its buffer. */
static void my_bind_col(my_col *col, MYSQL_BIND *b) {
    memset(b, 0, sizeof *b);
    b->length = &col->len;
    b->is_null = &col->is_null;
    b->error = &col->error;
    switch (col->how) {
    case H_INT:
    case H_UINT:
    case H_BOOL:
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &col->v.i;
        b->is_unsigned = col->how == H_UINT;
        break;
    case H_DOUBLE:
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &col->v.d;
        break;
    case H_DATE:
        b->buffer_type = MYSQL_TYPE_DATE;
        b->buffer = &col->v.t;
        break;
    case H_TIME:
        b->buffer_type = MYSQL_TYPE_TIME;
        b->buffer = &col->v.t;
        break;
    case H_DATETIME:
        b->buffer_type = MYSQL_TYPE_DATETIME;
        b->buffer = &col->v.t;
        break;
    case H_NULL:
    case H_STR:
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = col->buf;
        b->buffer_length = col->cap;
        break;
    }
}

/* Decodes the current row's column i. 0, -1 out of memory, -2 fetch failed. */
static int my_fetch_col(my_impl *p, MYSQL_STMT *st, unsigned i, keel_result *res, keel_value *v) {
    my_col *col = &p->cols[i];
    char num[24];
    switch (col->how) {
    case H_NULL:
        return 0;
    case H_INT:
        v->type = KEEL_TYPE_INT;
        v->u.i64 = col->v.i;
        return 0;
    case H_BOOL:
        v->type = KEEL_TYPE_BOOL;
        v->u.boolean = col->v.i != 0;
        return 0;
    case H_UINT:
        if ((uint64_t)col->v.i <= (uint64_t)INT64_MAX) {
            v->type = KEEL_TYPE_INT;
            v->u.i64 = col->v.i;
            return 0;
        }
        /* BIGINT UNSIGNED above INT64_MAX: exact, as a decimal. */
        snprintf(num, sizeof num, "%" PRIu64, (uint64_t)col->v.i);
        return keel__result_set_text(res, v, KEEL_TYPE_NUMERIC, num, strlen(num));
    case H_DOUBLE:
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = col->v.d;
        return 0;
    case H_DATE:
    case H_TIME:
    case H_DATETIME:
        return my_decode_time(res, v, &col->v.t, col->how);
    case H_STR:
        break;
    }
    if (col->len > col->cap) {
        /* Longer than the longest value store_result measured (it should not be): fetch
         * this one into a buffer that fits, and bind that buffer from now on. */
        char *buf = realloc(col->buf, col->len + 1);
        if (!buf)
            return -1;
        col->buf = buf;
        col->cap = col->len + 1;
        my_bind_col(col, &p->rbinds[i]);
        if (mysql_stmt_fetch_column(st, &p->rbinds[i], i, 0) != 0 ||
            mysql_stmt_bind_result(st, p->rbinds) != 0)
            return -2;
    }
    return keel__result_set_text(res, v, col->kind, col->buf, col->len);
}

/* Builds a keel_result from a stored binary-protocol result. */
static keel_status my_decode_stmt(my_impl *p, MYSQL_STMT *st, keel_result **out, keel_error *err) {
    unsigned ncols = mysql_stmt_field_count(st);
    MYSQL_FIELD *f = mariadb_stmt_fetch_fields(st);
    keel_result *res = keel__result_new(ncols);
    if (!res || !f || my_cols_reserve(p, ncols) != 0)
        goto nomem;
    for (unsigned i = 0; i < ncols; i++) {
        my_col *col = &p->cols[i];
        col->kind = my_field_kind(&f[i]);
        col->how = my_field_how(&f[i], col->kind);
        if (col->how == H_STR || col->how == H_NULL) {
            unsigned long want = f[i].max_length + 1;
            if (want > col->cap || !col->buf) {
                char *buf = realloc(col->buf, want);
                if (!buf)
                    goto nomem;
                col->buf = buf;
                col->cap = want;
            }
        }
        my_bind_col(col, &p->rbinds[i]);
        if (keel__result_set_column(res, i, f[i].name, f[i].name_length, col->kind) != 0)
            goto nomem;
    }
    if (ncols && mysql_stmt_bind_result(st, p->rbinds) != 0)
        goto failed;
    uint64_t nrows = mysql_stmt_num_rows(st);
    if (nrows && keel__result_reserve(res, (size_t)nrows) != 0)
        goto nomem;
    for (;;) {
        int rc = mysql_stmt_fetch(st);
        if (rc == MYSQL_NO_DATA)
            break;
        if (rc == 1)
            goto failed;
        keel_value *vals = keel__result_add_row(res);
        if (!vals)
            goto nomem;
        for (unsigned i = 0; i < ncols; i++) {
            if (p->cols[i].is_null)
                continue;
            int r = my_fetch_col(p, st, i, res, &vals[i]);
            if (r == -1)
                goto nomem;
            if (r == -2)
                goto failed;
        }
    }
    keel__result_set_affected(res, -1);
    *out = res;
    return KEEL_OK;
nomem:
    keel_result_free(res);
    return my_nomem(p, err);
failed:
    keel_result_free(res);
    my_error(p, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st), 0, 0, err);
    return err ? err->code : KEEL_ERR_DATABASE;
}

/*
 * Keeps the result of one statement of the operation: of several, the last one that returned
 * columns wins, else the last command (as the PostgreSQL engine does).
 */
static void my_keep(my_impl *p, keel_result *res, int rows) {
    if (!rows && p->keep_rows) {
        keel_result_free(res);
        return;
    }
    keel_result_free(p->keep);
    p->keep = res;
    p->keep_rows = rows;
}

static void my_keep_command(my_impl *p, my_ulonglong affected) {
    if (p->keep_rows || p->discard || p->op == OP_MANY) /* a batch reports its own total */
        return;
    keel_result *res = keel__result_new(0);
    if (!res) {
        my_nomem(p, &p->err);
        p->failed = 1;
        return;
    }
    keel__result_set_affected(res, affected == (my_ulonglong)-1 ? -1 : (int64_t)affected);
    my_keep(p, res, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Reporting                                                                                */

/* Frees what the operation owned. */
static void my_op_clear(my_impl *p) {
    my_remeta_end(p);
    if (p->cur && p->cur_new) {
        /* Never prepared on the server: closing it sends nothing. */
        mysql_stmt_close(p->cur);
    } else if (p->cur && p->cur_uncached && my_evict_push(p, p->cur) != 0) {
        mysql_stmt_close(p->cur); /* out of memory: a blocking close of a few bytes */
    }
    p->cur = NULL;
    p->cur_new = p->cur_uncached = 0;
    free(p->pcopy);
    p->pcopy = NULL;
    p->prow = NULL;
    keel__arena_free(&p->barena);
    keel_result_free(p->keep);
    p->keep = NULL;
    p->keep_rows = 0;
    p->discard = 0;
    p->op = OP_NONE;
    p->cleanup = 0;
    p->nsplit = 0;
    p->map = NULL;
    p->nmap = 0;
}

/*
 * Reports the end of the running operation; nothing touches p afterwards. While a cancel
 * request is still in flight the end is held back (it could stop the next statement), and
 * reported when the request returns (my_cancel_settled).
 */
static void my_op_report(my_impl *p) {
    if (keel__cancel_hold(&p->cancel)) {
        p->report = R_HELD;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return;
    }
    keel_conn *c = p->c;
    keel_result *res = NULL;
    keel_error e;
    int failed = p->failed;
    p->report = R_NONE;
    if (!failed) {
        if (p->op == OP_MANY) {
            res = keel__result_new(0);
            if (res)
                keel__result_set_affected(res, p->baffected);
        } else {
            res = p->keep;
            p->keep = NULL;
            if (!res && (res = keel__result_new(0)) != NULL)
                keel__result_set_affected(res, -1);
        }
        if (!res) {
            my_nomem(p, &p->err);
            failed = 1;
        }
    }
    if (failed)
        e = p->err;
    my_op_clear(p);
    if (c->broken) {
        p->phase = MY_DEAD;
        if (p->watch)
            keel__watch_set(p->watch, 0);
    } else {
        p->phase = MY_IDLE;
        if (keel__watch_set(p->watch, KEEL_READ) != 0) {
            c->broken = 1;
            p->phase = MY_DEAD;
        }
    }
    keel__conn_complete(c, failed ? NULL : res, failed ? &e : NULL);
}

/* The operation is over: report it now, or from the kick inside a start function. */
static int my_finish(my_impl *p) {
    if (p->in_start) {
        p->report = R_OP;
        if (keel__defer_schedule(p->kick) != 0) {
            /* Without the timer nothing could report; the connection is given up and the
             * start function fails instead. */
            p->report = R_NONE;
            p->c->broken = 1;
            p->phase = MY_DEAD;
        }
        return 1;
    }
    my_op_report(p);
    return 1;
}

static void my_on_kick(void *arg) {
    my_impl *p = arg;
    my_report r = p->report;
    p->report = R_NONE;
    if (r == R_OP) {
        my_op_report(p);
    } else if (r == R_CONNECT) {
        keel_error e = p->err;
        int failed = p->failed;
        p->failed = 0;
        keel__conn_connected(p->c, failed ? &e : NULL);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Text protocol                                                                            */

/* Starts a text-protocol statement as the next call. */
static int my_text_start(my_impl *p, const char *sql, size_t len) {
    p->qsql = sql;
    p->qlen = len;
    p->call = C_QUERY;
    return 0;
}

static int my_text_more(my_impl *p) {
    if (mysql_more_results(p->m)) {
        p->call = C_NEXT;
        return 0;
    }
    return my_text_done(p);
}

/* A statement of the text protocol produced a result (rows to read, or a command status). */
static int my_text_result(my_impl *p) {
    if (mysql_field_count(p->m) > 0) {
        p->call = C_STORE;
        return 0;
    }
    my_keep_command(p, mysql_affected_rows(p->m));
    return my_text_more(p);
}

static int my_text_stored(my_impl *p) {
    MYSQL_RES *r = p->r_res;
    p->r_res = NULL;
    if (!r) {
        my_fail_mysql(p);
        return my_text_done(p);
    }
    keel_result *res = NULL;
    keel_error e;
    if (p->discard) {
        mysql_free_result(r);
    } else if (my_decode_res(p, r, &res, &e) == KEEL_OK) {
        my_keep(p, res, 1); /* res owns r now */
    } else {
        mysql_free_result(r);
        if (!p->failed) {
            p->err = e;
            p->failed = 1;
        }
    }
    return my_text_more(p);
}

static int my_text_failed(my_impl *p) {
    if (mysql_errno(p->m) == ER_EMPTY_QUERY) {
        /* Nothing but whitespace or comments: an empty result, as other engines give. */
        my_keep_command(p, (my_ulonglong)-1);
        return my_text_more(p);
    }
    my_fail_mysql(p);
    return my_text_done(p);
}

/* ---------------------------------------------------------------------------------------- */
/* Parameters                                                                               */

static keel_status my_param_error(my_impl *p, keel_error *err, keel_status code, size_t row,
                                  int many, size_t k, const char *what) {
    if (many)
        return keel__error_set(err, code, MY_ENGINE, my_dbname(p->c), "row %zu: parameter $%zu: %s",
                               row, k + 1, what);
    return keel__error_set(err, code, MY_ENGINE, my_dbname(p->c), "parameter $%zu: %s", k + 1,
                           what);
}

static int my_mtime_date(int32_t days, MYSQL_TIME *t) {
    int64_t y;
    unsigned mo, d;
    keel__civil_from_days(days, &y, &mo, &d);
    if (y < 0 || y > 9999)
        return -1;
    memset(t, 0, sizeof *t);
    t->year = (unsigned)y;
    t->month = mo;
    t->day = d;
    t->time_type = MYSQL_TIMESTAMP_DATE;
    return 0;
}

static int my_mtime_stamp(int64_t micros, MYSQL_TIME *t) {
    int64_t days = my_floor_div(micros, MY_US_PER_DAY);
    int64_t tod = micros - days * MY_US_PER_DAY;
    if (days < INT32_MIN || days > INT32_MAX || my_mtime_date((int32_t)days, t) != 0)
        return -1;
    t->hour = (unsigned)(tod / 3600000000);
    t->minute = (unsigned)(tod / 60000000 % 60);
    t->second = (unsigned)(tod / 1000000 % 60);
    t->second_part = (unsigned long)(tod % 1000000);
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
    return 0;
}

static int my_mtime_time(int64_t micros, MYSQL_TIME *t) {
    if (micros < -MY_TIME_MAX_US || micros > MY_TIME_MAX_US)
        return -1;
    memset(t, 0, sizeof *t);
    t->neg = micros < 0;
    uint64_t u = micros < 0 ? (uint64_t)-micros : (uint64_t)micros;
    t->hour = (unsigned)(u / 3600000000u);
    t->minute = (unsigned)(u / 60000000u % 60);
    t->second = (unsigned)(u / 1000000u % 60);
    t->second_part = (unsigned long)(u % 1000000u);
    t->time_type = MYSQL_TIMESTAMP_TIME;
    return 0;
}

/*
 * 0 when NUMERIC text spells NaN or an infinity ("NaN", "sNaN", "Infinity", "-inf"...), which
 * DECIMAL cannot hold: the server would store 0 in their place.
 */
static int my_numeric_is_finite(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    if (n && (*s == '+' || *s == '-')) {
        s++;
        n--;
    }
    static const char *const words[] = { "nan", "snan", "qnan", "inf", "infinity" };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t w = strlen(words[i]);
        if (n >= w && strncasecmp(s, words[i], w) == 0) {
            size_t rest = n - w;
            const char *r = s + w;
            while (rest && (*r == ' ' || *r == '\t' || (*r >= '0' && *r <= '9'))) {
                r++;
                rest--;
            }
            if (!rest)
                return 0;
        }
    }
    return 1;
}

/* Checks what MySQL cannot carry, before anything is sent. */
static keel_status my_param_check(my_impl *p, const keel_value *v, size_t row, int many, size_t k,
                                  keel_error *err) {
    MYSQL_TIME t;
    switch (v->type) {
    case KEEL_TYPE_NULL:
    case KEEL_TYPE_BOOL:
    case KEEL_TYPE_INT:
    case KEEL_TYPE_UUID:
        return KEEL_OK;
    case KEEL_TYPE_FLOAT:
        if (!isfinite(v->u.f64))
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "MySQL cannot store NaN or infinite floats");
        return KEEL_OK;
    case KEEL_TYPE_NUMERIC:
        if (v->u.str.ptr && !my_numeric_is_finite(v->u.str.ptr, v->u.str.len))
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "MySQL cannot store NaN or infinite decimals");
        /* fall through */
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
        if (v->u.str.len && !v->u.str.ptr)
            return my_param_error(p, err, KEEL_ERR_INVALID_ARGUMENT, row, many, k,
                                  "NULL data with a non-zero length");
        if (v->u.str.len > UINT32_MAX)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k, "value longer than 4 GiB");
        return KEEL_OK;
    case KEEL_TYPE_DATE:
        if (my_mtime_date(v->u.date, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "date outside MySQL's range (years 0-9999)");
        return KEEL_OK;
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        if (my_mtime_stamp(v->u.micros, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "timestamp outside MySQL's range (years 0-9999)");
        return KEEL_OK;
    case KEEL_TYPE_TIME:
        if (my_mtime_time(v->u.micros, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "time outside MySQL's range (-838:59:59 to 838:59:59)");
        return KEEL_OK;
    case KEEL_TYPE_DOCUMENT:
        return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                              "a BSON document is not a MySQL value; pass JSON instead");
    }
    return my_param_error(p, err, KEEL_ERR_INVALID_ARGUMENT, row, many, k, "unknown value type");
}

static int my_is_strlike(keel_type t) {
    return t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_TEXT || t == KEEL_TYPE_BYTES ||
           t == KEEL_TYPE_JSON;
}

/* Copies parameters (valid only during the query call) into one private block. */
static keel_status my_copy_params(my_impl *p, const keel_value *params, size_t n, keel_error *err) {
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (my_is_strlike(params[i].type))
            bytes += params[i].u.str.len;
    size_t head = n * sizeof(keel_value);
    if (n && head / n != sizeof(keel_value))
        return my_nomem(p, err);
    char *block = malloc(head + bytes + 1);
    if (!block)
        return my_nomem(p, err);
    keel_value *vals = (keel_value *)(void *)block;
    char *text = block + head;
    for (size_t i = 0; i < n; i++) {
        vals[i] = params[i];
        if (my_is_strlike(vals[i].type) && vals[i].u.str.len) {
            memcpy(text, vals[i].u.str.ptr, vals[i].u.str.len);
            vals[i].u.str.ptr = text;
            text += vals[i].u.str.len;
        }
    }
    free(p->pcopy);
    p->pcopy = vals;
    return KEEL_OK;
}

static int my_binds_reserve(my_impl *p, size_t n) {
    if (n <= p->bcap)
        return 0;
    MYSQL_BIND *b = realloc(p->binds, n * sizeof *b);
    if (!b)
        return -1;
    p->binds = b;
    my_slot *s = realloc(p->slots, n * sizeof *s);
    if (!s)
        return -1;
    p->slots = s;
    p->bcap = n;
    return 0;
}

/* An address for empty strings: a NULL buffer would be sent as SQL NULL. */
static char my_empty[1];

/* Binds one value to a placeholder of a single execution. Values passed my_param_check. */
static void my_bind_value(MYSQL_BIND *b, my_slot *s, const keel_value *v) {
    memset(b, 0, sizeof *b);
    b->length = &s->len;
    s->len = 0;
    switch (v->type) {
    case KEEL_TYPE_NULL:
        b->buffer_type = MYSQL_TYPE_NULL;
        return;
    case KEEL_TYPE_BOOL:
        s->u.b = v->u.boolean ? 1 : 0;
        b->buffer_type = MYSQL_TYPE_TINY;
        b->buffer = &s->u.b;
        return;
    case KEEL_TYPE_INT:
        s->u.i = v->u.i64;
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &s->u.i;
        return;
    case KEEL_TYPE_FLOAT:
        s->u.d = v->u.f64;
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &s->u.d;
        return;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
        b->buffer_type = v->type == KEEL_TYPE_NUMERIC ? MYSQL_TYPE_NEWDECIMAL
                         : v->type == KEEL_TYPE_BYTES ? MYSQL_TYPE_BLOB
                                                      : MYSQL_TYPE_STRING;
        b->buffer = v->u.str.len ? (void *)(uintptr_t)v->u.str.ptr : my_empty;
        b->buffer_length = (unsigned long)v->u.str.len;
        s->len = (unsigned long)v->u.str.len;
        return;
    case KEEL_TYPE_UUID:
        keel__format_uuid(v->u.uuid, s->u.text);
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = s->u.text;
        b->buffer_length = 36;
        s->len = 36;
        return;
    case KEEL_TYPE_DATE:
        my_mtime_date(v->u.date, &s->u.t);
        b->buffer_type = MYSQL_TYPE_DATE;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_TIME:
        my_mtime_time(v->u.micros, &s->u.t);
        b->buffer_type = MYSQL_TYPE_TIME;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        /* TIMESTAMPTZ goes as its UTC wall time: the session time zone is UTC. */
        my_mtime_stamp(v->u.micros, &s->u.t);
        b->buffer_type = MYSQL_TYPE_DATETIME;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_DOCUMENT:
        break; /* refused by my_param_check */
    }
}

/* Binds one row of parameters (nmap placeholders) for a single execution. */
static int my_bind_row(my_impl *p, const keel_value *row) {
    unsigned zero = 0;
    if (mysql_stmt_attr_set(p->cur, STMT_ATTR_ARRAY_SIZE, &zero) != 0)
        return -1;
    if (p->nmap == 0)
        return 0;
    if (my_binds_reserve(p, p->nmap) != 0)
        return -1;
    for (size_t i = 0; i < p->nmap; i++)
        my_bind_value(&p->binds[i], &p->slots[i], &row[p->map[i]]);
    return mysql_stmt_bind_param(p->cur, p->binds) ? -1 : 0;
}

/* Bytes a value adds to an execution request, for sizing bulk executions. */
static size_t my_wire_size(const keel_value *v) {
    if (my_is_strlike(v->type))
        return v->u.str.len + 9;
    return v->type == KEEL_TYPE_UUID ? 37 : 13;
}

/*
 * The end of the bulk execution starting at row a: every parameter keeps one type (NULLs fit
 * any), and the rows stay within the row and byte limits.
 */
static size_t my_chunk_end(const my_impl *p, size_t a) {
    size_t np = p->nparams, bytes = 0, r;
    const keel_value *rows = p->pcopy;
    for (r = a; r < p->brows && r - a < MY_BULK_ROWS; r++) {
        const keel_value *row = rows + r * np;
        size_t rowbytes = 0;
        int conflict = 0;
        for (size_t k = 0; k < np; k++) {
            rowbytes += my_wire_size(&row[k]);
            if (row[k].type == KEEL_TYPE_NULL || r == a)
                continue;
            for (size_t q = a; q < r; q++) {
                keel_type t = rows[q * np + k].type;
                if (t != KEEL_TYPE_NULL) {
                    conflict = t != row[k].type;
                    break;
                }
            }
            if (conflict)
                break;
        }
        if (conflict || (r > a && bytes + rowbytes > MY_BULK_BYTES))
            break;
        bytes += rowbytes;
    }
    return r;
}

/* Column arrays of one parameter for a bulk execution. */
typedef struct my_barray {
    enum enum_field_types type;
    char *ind;
    void *buf;
    unsigned long *len;
} my_barray;

static void *my_balloc(my_impl *p, size_t n, size_t size, int *oom) {
    void *m = keel__arena_alloc(&p->barena, n * size);
    if (!m)
        *oom = 1;
    return m;
}

/* Fills the arrays of parameter k for rows [a, b). Values passed my_param_check. */
static void my_barray_fill(my_impl *p, my_barray *arr, size_t k, size_t a, size_t b, int *oom) {
    size_t n = b - a, np = p->nparams;
    const keel_value *rows = p->pcopy;
    keel_type t = KEEL_TYPE_NULL;
    for (size_t r = a; r < b && t == KEEL_TYPE_NULL; r++)
        t = rows[r * np + k].type;
    arr->ind = my_balloc(p, n, 1, oom);
    arr->buf = NULL;
    arr->len = NULL;
    MYSQL_TIME *times = NULL;
    char *uuids = NULL;
    switch (t) {
    case KEEL_TYPE_NULL:
    case KEEL_TYPE_DOCUMENT: /* refused by my_param_check */
        arr->type = MYSQL_TYPE_NULL;
        break;
    case KEEL_TYPE_BOOL:
        arr->type = MYSQL_TYPE_TINY;
        arr->buf = my_balloc(p, n, 1, oom);
        break;
    case KEEL_TYPE_INT:
        arr->type = MYSQL_TYPE_LONGLONG;
        arr->buf = my_balloc(p, n, sizeof(int64_t), oom);
        break;
    case KEEL_TYPE_FLOAT:
        arr->type = MYSQL_TYPE_DOUBLE;
        arr->buf = my_balloc(p, n, sizeof(double), oom);
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
    case KEEL_TYPE_UUID:
        arr->type = t == KEEL_TYPE_NUMERIC ? MYSQL_TYPE_NEWDECIMAL
                    : t == KEEL_TYPE_BYTES ? MYSQL_TYPE_BLOB
                                           : MYSQL_TYPE_STRING;
        arr->buf = my_balloc(p, n, sizeof(char *), oom);
        arr->len = my_balloc(p, n, sizeof(unsigned long), oom);
        if (t == KEEL_TYPE_UUID)
            uuids = my_balloc(p, n, KEEL__UUID_TEXT_MAX, oom);
        break;
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        /* Temporal arrays hold pointers to MYSQL_TIME: their wire size varies. */
        arr->type = t == KEEL_TYPE_DATE   ? MYSQL_TYPE_DATE
                    : t == KEEL_TYPE_TIME ? MYSQL_TYPE_TIME
                                          : MYSQL_TYPE_DATETIME;
        arr->buf = my_balloc(p, n, sizeof(MYSQL_TIME *), oom);
        times = my_balloc(p, n, sizeof(MYSQL_TIME), oom);
        break;
    }
    if (*oom)
        return;
    for (size_t i = 0; i < n; i++) {
        const keel_value *v = &rows[(a + i) * np + k];
        if (v->type == KEEL_TYPE_NULL) {
            arr->ind[i] = STMT_INDICATOR_NULL;
            if (arr->len)
                arr->len[i] = 0;
            if (arr->buf && (arr->len || times))
                ((void **)arr->buf)[i] = NULL;
            continue;
        }
        arr->ind[i] = STMT_INDICATOR_NONE;
        switch (t) {
        case KEEL_TYPE_BOOL:
            ((signed char *)arr->buf)[i] = v->u.boolean ? 1 : 0;
            break;
        case KEEL_TYPE_INT:
            ((int64_t *)arr->buf)[i] = v->u.i64;
            break;
        case KEEL_TYPE_FLOAT:
            ((double *)arr->buf)[i] = v->u.f64;
            break;
        case KEEL_TYPE_UUID:
            keel__format_uuid(v->u.uuid, uuids + i * KEEL__UUID_TEXT_MAX);
            ((char **)arr->buf)[i] = uuids + i * KEEL__UUID_TEXT_MAX;
            arr->len[i] = 36;
            break;
        case KEEL_TYPE_DATE:
            my_mtime_date(v->u.date, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_TIME:
            my_mtime_time(v->u.micros, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_TIMESTAMP:
        case KEEL_TYPE_TIMESTAMPTZ:
            my_mtime_stamp(v->u.micros, &times[i]);
            ((MYSQL_TIME **)arr->buf)[i] = &times[i];
            break;
        case KEEL_TYPE_NULL:
            break;
        default:
            ((char **)arr->buf)[i] = v->u.str.len ? (char *)(uintptr_t)v->u.str.ptr : my_empty;
            arr->len[i] = (unsigned long)v->u.str.len;
            break;
        }
    }
}

/* Binds rows [a, b) of the batch as arrays, for one bulk execution. */
static int my_bind_bulk(my_impl *p, size_t a, size_t b) {
    int oom = 0;
    keel__arena_free(&p->barena);
    my_barray *arrs = my_balloc(p, p->nparams, sizeof *arrs, &oom);
    for (size_t k = 0; !oom && k < p->nparams; k++)
        my_barray_fill(p, &arrs[k], k, a, b, &oom);
    if (oom || my_binds_reserve(p, p->nmap) != 0)
        return -1;
    for (size_t i = 0; i < p->nmap; i++) {
        const my_barray *arr = &arrs[p->map[i]];
        MYSQL_BIND *bd = &p->binds[i];
        memset(bd, 0, sizeof *bd);
        bd->buffer_type = arr->type;
        bd->buffer = arr->buf;
        bd->length = arr->len;
        bd->u.indicator = arr->ind;
    }
    unsigned n = (unsigned)(b - a);
    if (mysql_stmt_attr_set(p->cur, STMT_ATTR_ARRAY_SIZE, &n) != 0)
        return -1;
    return mysql_stmt_bind_param(p->cur, p->binds) ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Prepared statements                                                                      */

static uint64_t my_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void my_lru_unlink(my_impl *p, my_cached *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        p->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        p->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void my_lru_front(my_impl *p, my_cached *e) {
    e->prev = NULL;
    e->next = p->lru_head;
    if (p->lru_head)
        p->lru_head->prev = e;
    p->lru_head = e;
    if (!p->lru_tail)
        p->lru_tail = e;
}

static my_cached *my_cache_find(my_impl *p, const char *sql, size_t len) {
    uint64_t h = my_hash(sql, len);
    for (my_cached *e = p->lru_head; e; e = e->next) {
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            if (e != p->lru_head) {
                my_lru_unlink(p, e);
                my_lru_front(p, e);
            }
            return e;
        }
    }
    return NULL;
}

/* Queues a statement to be closed on the server before the next prepared statement runs. */
static int my_evict_push(my_impl *p, MYSQL_STMT *st) {
    if (p->nevict == p->evict_cap) {
        size_t cap = p->evict_cap ? p->evict_cap * 2 : 4;
        MYSQL_STMT **a = realloc(p->evict, cap * sizeof *a);
        if (!a)
            return -1;
        p->evict = a;
        p->evict_cap = cap;
    }
    p->evict[p->nevict++] = st;
    return 0;
}

/* Adds a prepared statement; the least recently used one beyond the limit is evicted. */
static void my_cache_add(my_impl *p, MYSQL_STMT *st, const char *sql, size_t len) {
    my_cached *e = calloc(1, sizeof *e);
    char *copy = e ? malloc(len + 1) : NULL;
    if (!e || !copy || my_evict_push(p, NULL) != 0) {
        /* Not cached: it is closed when the operation ends. */
        free(e);
        free(copy);
        p->cur_uncached = 1;
        return;
    }
    p->nevict--; /* the slot reserved above, so the eviction below cannot fail */
    memcpy(copy, sql, len);
    copy[len] = '\0';
    e->stmt = st;
    e->sql = copy;
    e->len = len;
    e->hash = my_hash(sql, len);
    my_lru_front(p, e);
    if (++p->ncached > MY_STMT_CACHE) {
        my_cached *old = p->lru_tail;
        my_lru_unlink(p, old);
        p->ncached--;
        p->evict[p->nevict++] = old->stmt;
        free(old->sql);
        free(old);
    }
}

/* Takes cur out of the cache: it is closed on the server before the next statement runs. */
static void my_cache_drop_cur(my_impl *p) {
    for (my_cached *e = p->lru_head; e; e = e->next) {
        if (e->stmt == p->cur) {
            my_lru_unlink(p, e);
            p->ncached--;
            free(e->sql);
            free(e);
            p->cur_uncached = 1;
            return;
        }
    }
}

/*
 * The table behind a cached statement changed (ALTER TABLE added or dropped a column): the
 * server prepared the statement again, executed it and sent the result with its new columns,
 * but libmariadb refuses to read it (CR_NEW_STMT_METADATA) because the statement's metadata,
 * fixed when it was prepared, has a different number of columns. The statement has run, so it
 * is not executed again (it may have side effects): its result is read with the metadata the
 * server just sent (held by the handle until the next command), set in the statement in place
 * of its own until the result is read. The statement then leaves the cache, so that the next
 * execution prepares it afresh. Returns 0 when the result can be read; -1 when the rows cannot
 * be read (nor skipped without blocking), and the connection is given up.
 */
static int my_remeta_begin(my_impl *p) {
    MYSQL_STMT *st = p->cur;
    unsigned n = p->m->field_count;
    my_cache_drop_cur(p);
    MYSQL_FIELD *fields = NULL;
    MYSQL_BIND *bind = NULL;
    if (st->state == MYSQL_STMT_WAITING_USE_OR_STORE && n > 0 && p->m->fields &&
        !st->cursor_exists) {
        fields = calloc(n, sizeof *fields);
        bind = calloc(n, sizeof *bind);
    }
    if (!fields || !bind) {
        free(fields);
        free(bind);
        p->c->broken = 1;
        my_fail(p, KEEL_ERR_DATABASE,
                "the columns of the statement's result changed (the table was altered) and the "
                "new result could not be read; the statement will be prepared again, and the "
                "connection was closed");
        return -1;
    }
    memcpy(fields, p->m->fields, n * sizeof *fields);
    p->rm_fields = st->fields;
    p->rm_bind = st->bind;
    p->rm_count = st->field_count;
    p->rm_on = 1;
    st->fields = fields;
    st->bind = bind;
    st->field_count = n;
    st->bind_result_done = 0;
    st->last_errno = 0;
    st->last_error[0] = '\0';
    memcpy(st->sqlstate, "00000", sizeof "00000");
    return 0;
}

/* The changed result was read (or given up): cur gets its own metadata back. */
static void my_remeta_end(my_impl *p) {
    if (!p->rm_on)
        return;
    MYSQL_STMT *st = p->cur;
    free(st->fields);
    free(st->bind);
    st->fields = p->rm_fields;
    st->bind = p->rm_bind;
    st->field_count = p->rm_count;
    st->bind_result_done = 0;
    p->rm_fields = NULL;
    p->rm_bind = NULL;
    p->rm_on = 0;
}

/* Closes the queued statements, then prepares the operation's statement if it is new. */
static int my_stmt_begin(my_impl *p) {
    if (p->nevict) {
        p->closing = p->evict[--p->nevict];
        p->call = C_STMT_CLOSE;
        return 0;
    }
    if (p->cur_new) {
        p->call = C_PREPARE;
        return 0;
    }
    if (p->op == OP_MANY)
        return my_batch_start(p);
    if (my_bind_row(p, p->prow) != 0) {
        my_fail_stmt(p, p->cur, 0, 0);
        return my_stmt_done(p);
    }
    p->call = C_EXECUTE;
    return 0;
}

static int my_after_prepare(my_impl *p) {
    p->cur_new = 0;
    if (p->r_int != 0) {
        my_fail_stmt(p, p->cur, 0, 0);
        /* Never prepared on the server: closing it sends nothing. */
        mysql_stmt_close(p->cur);
        p->cur = NULL;
        return my_stmt_done(p);
    }
    my_bool yes = 1;
    mysql_stmt_attr_set(p->cur, STMT_ATTR_UPDATE_MAX_LENGTH, &yes);
    my_cache_add(p, p->cur, p->ssql, p->slen);
    unsigned long n = mysql_stmt_param_count(p->cur);
    if (n != p->nmap) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the statement has %lu placeholder%s but %zu value%s bound (a literal '?' in "
                 "the SQL counts as one)",
                 n, n == 1 ? "" : "s", p->nmap, p->nmap == 1 ? " was" : "s were");
        my_fail(p, KEEL_ERR_PARAMETERS, msg);
        return my_stmt_done(p);
    }
    return my_stmt_begin(p);
}

static int my_stmt_more(my_impl *p) {
    if (mysql_stmt_more_results(p->cur)) {
        p->call = C_STMT_NEXT;
        return 0;
    }
    return my_stmt_done(p);
}

static int my_stmt_result(my_impl *p) {
    if (mysql_stmt_field_count(p->cur) > 0) {
        p->call = C_STMT_STORE;
        return 0;
    }
    my_ulonglong n = mysql_stmt_affected_rows(p->cur);
    if (p->op == OP_MANY) {
        if (n != (my_ulonglong)-1)
            p->baffected += (int64_t)n;
    } else {
        my_keep_command(p, n);
    }
    return my_stmt_more(p);
}

static int my_stmt_stored(my_impl *p) {
    if (p->r_int != 0) {
        my_fail_stmt(p, p->cur, p->ra, p->rb);
        my_remeta_end(p);
        return my_stmt_done(p);
    }
    if (!p->discard) {
        keel_result *res = NULL;
        keel_error e;
        if (my_decode_stmt(p, p->cur, &res, &e) == KEEL_OK) {
            my_keep(p, res, 1);
        } else if (!p->failed) {
            p->err = e;
            p->failed = 1;
        }
    }
    mysql_stmt_free_result(p->cur);
    my_remeta_end(p);
    return my_stmt_more(p);
}

/* ---------------------------------------------------------------------------------------- */
/* Batches                                                                                  */

/*
 * Batches are atomic. A batch that is one execution needs nothing more (a statement succeeds
 * or fails as a whole); a longer one runs in a transaction it begins, or under a savepoint of
 * the caller's transaction. The wrapping is added lazily: a single execution that fails is
 * undone by the server, and only then is a transaction begun to find the failing row in.
 */
static int my_batch_wrap(my_impl *p) {
    const char *sql = p->own_txn ? "BEGIN" : "SAVEPOINT " MY_BATCH_SAVEPOINT;
    p->stage = MS_BEGIN;
    return my_text_start(p, sql, strlen(sql));
}

/* Ends the batch: its transaction or savepoint is kept on success, rolled back on failure. */
static int my_batch_end(my_impl *p) {
    if (!p->wrapped || p->c->broken) /* nothing to end, or nothing more can be sent */
        return my_finish(p);
    /* Asked to stop after its last range ran: a cancelled batch is undone, whenever it ends. */
    if (p->cancel_wanted)
        my_fail(p, KEEL_ERR_CANCELLED, "the batch was cancelled; what it wrote is rolled back");
    p->cleanup = 1;
    const char *sql;
    if (p->failed) {
        p->berr = p->err;
        p->stage = MS_ROLLBACK;
        sql = p->own_txn ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT " MY_BATCH_SAVEPOINT;
    } else {
        p->stage = MS_COMMIT;
        sql = p->own_txn ? "COMMIT" : "RELEASE SAVEPOINT " MY_BATCH_SAVEPOINT;
    }
    p->failed = 0;
    my_text_start(p, sql, strlen(sql));
    /* A KILL QUERY still in flight would stop this statement: it waits for the request to
     * return (my_cancel_settled starts it). */
    if (keel__cancel_hold(&p->cancel)) {
        p->call = C_NONE;
        p->report = R_STEP;
        if (p->watch)
            keel__watch_set(p->watch, 0);
        return 1;
    }
    return 0;
}

/*
 * Binds rows [ra, rb) and starts their execution. A batch asked to stop starts no further
 * range: a KILL QUERY that lands between two executions stops nothing on the server.
 */
static int my_batch_exec(my_impl *p) {
    if (p->cancel_wanted) {
        char msg[120];
        snprintf(msg, sizeof msg,
                 "the batch was cancelled before row %zu; what it wrote is "
                 "rolled back",
                 p->ra);
        my_fail(p, KEEL_ERR_CANCELLED, msg);
        return my_batch_end(p);
    }
    const keel_value *row = p->pcopy + p->ra * p->nparams;
    int rc = p->rb - p->ra == 1 ? my_bind_row(p, row) : my_bind_bulk(p, p->ra, p->rb);
    if (rc != 0) {
        my_fail_stmt(p, p->cur, p->ra, p->rb);
        return my_batch_end(p);
    }
    p->stage = MS_BODY;
    p->call = C_EXECUTE;
    return 0;
}

/* Picks the next range of rows: a pending half of a failed range, or the next chunk. */
static int my_batch_pick(my_impl *p) {
    if (p->nsplit) {
        p->nsplit--;
        p->ra = p->split[p->nsplit][0];
        p->rb = p->split[p->nsplit][1];
        return 1;
    }
    if (p->bnext < p->brows) {
        p->ra = p->bnext;
        p->rb = p->rowmode ? p->ra + 1 : my_chunk_end(p, p->ra);
        p->bnext = p->rb;
        return 1;
    }
    return 0;
}

/* The statement is prepared: the first range runs, wrapped when more are to follow. */
static int my_batch_start(my_impl *p) {
    /* Bulk execution needs parameters and a statement without a result set; otherwise the
     * rows run one by one and any rows they return are dropped. */
    p->discard = mysql_stmt_field_count(p->cur) > 0;
    p->rowmode = !p->bulk_ok || p->nmap == 0 || p->discard;
    my_batch_pick(p);
    if (p->rb < p->brows)
        return my_batch_wrap(p);
    return my_batch_exec(p);
}

static int my_batch_next(my_impl *p) {
    if (my_batch_pick(p))
        return my_batch_exec(p);
    return my_batch_end(p);
}

/*
 * A range of rows failed. An execution is one statement, which InnoDB undoes as a whole, so
 * the failing row is found by running the two halves in turn (the first half that fails is
 * split again): a few extra round trips, only when a batch fails.
 */
static int my_batch_failed(my_impl *p) {
    keel_status code = p->err.code;
    size_t a = p->ra, b = p->rb;
    if (b - a > 1 && p->nsplit < MY_SPLIT_MAX && code != KEEL_ERR_CANCELLED &&
        code != KEEL_ERR_CONNECTION_LOST && code != KEEL_ERR_TIMEOUT &&
        code != KEEL_ERR_TRANSACTION && code != KEEL_ERR_NOMEM && code != KEEL_ERR_INTERNAL &&
        !p->c->broken) {
        size_t m = a + (b - a) / 2;
        p->split[p->nsplit][0] = m;
        p->split[p->nsplit][1] = b;
        p->nsplit++;
        p->failed = 0;
        keel_error_clear(&p->err);
        p->ra = a;
        p->rb = m;
        return p->wrapped ? my_batch_exec(p) : my_batch_wrap(p);
    }
    return my_batch_end(p);
}

/* A prepared statement (or one range of a batch) is over. */
static int my_stmt_done(my_impl *p) {
    if (p->op != OP_MANY)
        return my_finish(p);
    if (p->failed)
        return my_batch_failed(p);
    return my_batch_next(p);
}

/* A text-protocol statement is over: the operation, or a step of a batch. */
static int my_text_done(my_impl *p) {
    if (p->op != OP_MANY)
        return my_finish(p);
    switch (p->stage) {
    case MS_BEGIN:
        if (p->failed)
            return my_finish(p);
        p->wrapped = 1;
        return my_batch_exec(p);
    case MS_ROLLBACK:
        /* The batch's error is what the caller hears about, whatever the rollback did. */
        p->err = p->berr;
        p->failed = 1;
        return my_finish(p);
    case MS_BODY:
    case MS_COMMIT:
        break;
    }
    return my_finish(p);
}

/* Decides what follows the call that just finished. 0: p->call is the next call; 1: done. */
static int my_after(my_impl *p, my_call done) {
    switch (done) {
    case C_CONNECT:
        return my_after_connect(p);
    case C_QUERY:
        return p->r_int ? my_text_failed(p) : my_text_result(p);
    case C_NEXT:
        if (p->r_int > 0)
            return my_text_failed(p);
        return p->r_int < 0 ? my_text_done(p) : my_text_result(p);
    case C_STORE:
        return my_text_stored(p);
    case C_PREPARE:
        return my_after_prepare(p);
    case C_EXECUTE:
        if (p->r_int && mysql_stmt_errno(p->cur) == CR_NEW_STMT_METADATA) {
            if (my_remeta_begin(p) != 0)
                return my_stmt_done(p);
            return my_stmt_result(p);
        }
        if (p->r_int) {
            my_fail_stmt(p, p->cur, p->ra, p->rb);
            return my_stmt_done(p);
        }
        return my_stmt_result(p);
    case C_STMT_STORE:
        return my_stmt_stored(p);
    case C_STMT_NEXT:
        if (p->r_int > 0) {
            my_fail_stmt(p, p->cur, p->ra, p->rb);
            return my_stmt_done(p);
        }
        return p->r_int < 0 ? my_stmt_done(p) : my_stmt_result(p);
    case C_STMT_CLOSE:
        p->closing = NULL;
        return my_stmt_begin(p);
    case C_NONE:
        break;
    }
    return my_finish(p);
}

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                   */

/*
 * Idle and readable: the server closed the connection, or sent its last words (an error such
 * as ER_CONNECTION_KILLED, or a TLS alert) before closing it; a server never speaks first
 * otherwise. TLS session tickets, the one other thing a server may send unasked, arrive during
 * the handshake and are consumed by the authentication that follows it.
 */
static void my_idle_input(my_impl *p) {
    char b;
    ssize_t n = recv(p->watch_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    p->phase = MY_DEAD;
    keel__watch_set(p->watch, 0);
    p->c->broken = 1;
    keel__conn_broken(p->c);
}

static void my_on_ready(void *arg, int events) {
    my_impl *p = arg;
    if (p->call != C_NONE && p->phase != MY_DEAD) {
        int ready = 0;
        if (events & KEEL_READ)
            ready |= MYSQL_WAIT_READ;
        if (events & KEEL_WRITE)
            ready |= MYSQL_WAIT_WRITE;
        my_run(p, 1, ready);
        return;
    }
    if (p->phase == MY_IDLE) {
        my_idle_input(p);
        return;
    }
    keel__watch_set(p->watch, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* The engine                                                                               */

static void my_destroy(my_impl *p) {
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
    my_op_clear(p);
    for (size_t i = 0; i < p->nevict; i++)
        mysql_stmt_close(p->evict[i]);
    while (p->lru_head) {
        my_cached *e = p->lru_head;
        p->lru_head = e->next;
        mysql_stmt_close(e->stmt);
        free(e->sql);
        free(e);
    }
    my_settings_free(&p->set);
    free(p->host);
    my_wipe_free(p->database);
    for (size_t i = 0; i < p->naddrs; i++)
        free(p->addrs[i]);
    free(p->addrs);
    free(p->binds);
    free(p->slots);
    for (size_t i = 0; i < p->ccap; i++)
        free(p->cols[i].buf);
    free(p->cols);
    free(p->rbinds);
    free(p->evict);
    keel__buf_free(&p->sqlbuf);
    free(p);
}

static keel_status my_connect(keel_conn *c, keel_error *err) {
    /* libmariadb is loaded on the engine's first connection (engines/mysql/lib.h). */
    keel_status lst = my_library(my_dbname(c), err);
    if (lst != KEEL_OK)
        return lst;
    my_impl *p = calloc(1, sizeof *p);
    if (!p)
        return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(c), "out of memory");
    p->c = c;
    keel__cancel_init(&p->cancel, c->loop, &my_cancel_ops, p);
    p->watch_fd = -1;
    p->phase = MY_CONNECTING;
    p->timeout_s = c->config->connect_timeout > 0 ? c->config->connect_timeout : 0;
    keel_status st = my_build_settings(p, err);
    if (st != KEEL_OK) {
        my_destroy(p);
        return st;
    }
    if (p->timeout_s <= 0)
        p->timeout_s = MY_DEFAULT_TIMEOUT_S;
    p->deadline = keel__timer_new(c->loop, my_on_deadline, p);
    p->libtimer = keel__timer_new(c->loop, my_on_libtimer, p);
    p->kick = keel__defer_new(c->loop, my_on_kick, p);
    if (!p->deadline || !p->libtimer || !p->kick ||
        keel__timer_arm(p->deadline, keel_now_ms() + (int64_t)(p->timeout_s * 1000.0 + 0.5)) != 0) {
        my_destroy(p);
        return keel__error_set(err, KEEL_ERR_INTERNAL, MY_ENGINE, my_dbname(c),
                               "the event loop refused the connect timers");
    }
    const char *host = p->host && *p->host ? p->host : MY_DEFAULT_HOST;
    int tls = p->set.ssl_mode != SSL_DISABLED;
    keel__workers *workers = NULL;
    if (tls || (!p->set.unix_socket && !my_is_address(host)))
        workers = keel__conn_workers(c);
    if (workers && tls) {
        if (my_wconn_start(p, workers, host) != 0) {
            my_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(c), "out of memory");
        }
        c->impl = p;
        return KEEL_OK;
    }
    if (!p->set.unix_socket) {
        if (workers) {
            keel__dns *d = keel__dns_new();
            if (!d || keel__dns_add(d, host, strlen(host)) != 0) {
                keel__dns_free(d);
                my_destroy(p);
                return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(c),
                                       "out of memory");
            }
            if (keel__dns_submit(d, workers, my_dns_done, p) == 0) {
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
            my_destroy(p);
            return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, my_dbname(c), "out of memory");
        }
        p->naddrs = 1;
    }
    c->impl = p;
    p->in_start = 1;
    if (my_new_handle(p) == 0)
        my_run(p, 0, 0);
    p->in_start = 0;
    if (p->phase == MY_DEAD && p->report == R_NONE) {
        /* The failure could not be deferred to the kick: it is returned instead. */
        keel_error e = p->err;
        c->impl = NULL;
        my_destroy(p);
        keel__error_copy(err, &e);
        return e.code;
    }
    return KEEL_OK;
}

static keel_status my_check_idle(my_impl *p, keel_conn *c, keel_error *err) {
    if (!p || p->phase == MY_DEAD || c->broken)
        return keel__error_set(err, KEEL_ERR_CONNECTION_LOST, MY_ENGINE, my_dbname(c),
                               "the connection to database '%s' was lost", my_dbname(c));
    if (p->phase != MY_IDLE)
        return keel__error_set(err, KEEL_ERR_BUSY, MY_ENGINE, my_dbname(c),
                               "another operation is in progress on this connection");
    return KEEL_OK;
}

static void my_op_begin(my_impl *p, my_op op) {
    p->op_seq++;
    p->op = op;
    p->failed = 0;
    keel_error_clear(&p->err);
    keel_result_free(p->keep);
    p->keep = NULL;
    p->keep_rows = 0;
    p->discard = 0;
    p->cleanup = 0;
    p->cancel_wanted = 0;
    p->nsplit = 0;
    p->ra = p->rb = 0;
}

/* Runs the first calls of an operation from inside its start function. */
static keel_status my_op_start(my_impl *p, int done, keel_error *err) {
    p->phase = MY_BUSY;
    if (!done)
        my_run(p, 0, 0);
    p->in_start = 0;
    if (p->phase == MY_DEAD && p->report == R_NONE) {
        /* The outcome could not be deferred (the loop refused the timer): nothing will be
         * reported, so the start function fails. */
        keel_error e = p->err;
        my_op_clear(p);
        if (e.code == KEEL_OK)
            keel__error_set(&e, KEEL_ERR_INTERNAL, MY_ENGINE, my_dbname(p->c),
                            "the event loop refused a timer");
        keel__error_copy(err, &e);
        return e.code;
    }
    return KEEL_OK;
}

static keel_status my_query(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    size_t n = stmt->many ? stmt->nrows * stmt->nparams : stmt->nparams;
    if (stmt->many && stmt->nparams && n / stmt->nparams != stmt->nrows)
        return my_nomem(p, err);
    for (size_t i = 0; i < n; i++) {
        size_t k = stmt->nparams ? i % stmt->nparams : 0;
        st = my_param_check(p, &stmt->params[i], stmt->nparams ? i / stmt->nparams : 0, stmt->many,
                            k, err);
        if (st != KEEL_OK)
            return st;
    }
    if (!stmt->many && stmt->nparams == 0) {
        my_op_begin(p, OP_TEXT);
        p->in_start = 1;
        return my_op_start(p, my_text_start(p, stmt->sql, stmt->sql_len), err);
    }
    my_op_begin(p, stmt->many ? OP_MANY : OP_STMT);
    p->ssql = stmt->sql;
    p->slen = stmt->sql_len;
    p->map = stmt->map;
    p->nmap = stmt->nmap;
    p->nparams = stmt->nparams;
    my_cached *e = my_cache_find(p, stmt->sql, stmt->sql_len);
    if (e) {
        p->cur = e->stmt;
        p->cur_new = 0;
    } else {
        p->cur = mysql_stmt_init(p->m);
        p->cur_new = 1;
        if (!p->cur) {
            my_op_clear(p);
            return my_nomem(p, err);
        }
    }
    if (stmt->many || !e || p->nevict) {
        /* The execution starts after this call returns: the parameters are copied. */
        st = my_copy_params(p, stmt->params, n, err);
        if (st != KEEL_OK) {
            my_op_clear(p);
            return st;
        }
        p->prow = p->pcopy;
    } else {
        /* libmariadb builds the request from the parameters inside this call. */
        p->prow = stmt->params;
    }
    p->in_start = 1;
    if (!stmt->many)
        return my_op_start(p, my_stmt_begin(p), err);
    p->brows = stmt->nrows;
    p->bnext = 0;
    p->baffected = 0;
    p->stage = MS_BODY;
    p->wrapped = 0;
    unsigned status = 0;
    mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_STATUS, &status);
    p->own_txn = !(status & SERVER_STATUS_IN_TRANS);
    return my_op_start(p, my_stmt_begin(p), err);
}

static keel_status my_transaction(keel_conn *c, keel_txn_op op, unsigned depth, keel_error *err) {
    my_impl *p = c->impl;
    keel_status st = my_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if ((unsigned)op > KEEL_TXN_ROLLBACK_TO)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, MY_ENGINE, my_dbname(c),
                               "unknown transaction operation %d", (int)op);
    if (keel__txn_sql(op, depth, &p->sqlbuf) != 0)
        return my_nomem(p, err);
    my_op_begin(p, OP_TEXT);
    p->in_start = 1;
    return my_op_start(p, my_text_start(p, p->sqlbuf.data, p->sqlbuf.len), err);
}

/* ---------------------------------------------------------------------------------------- */
/* Cancellation                                                                             */

static int my_cancellable(const my_impl *p) {
    return p->phase == MY_BUSY && p->op != OP_NONE && !p->cleanup && p->report == R_NONE;
}

static int my_cancel_running(void *owner, uint64_t seq) {
    const my_impl *p = owner;
    return my_cancellable(p) && p->op_seq == seq;
}

/* A KILL QUERY request for the running statement: the session's settings and thread id. */
static void *my_cancel_prepare(void *owner) {
    my_impl *p = owner;
    my_kill *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->thread_id = p->thread_id;
    k->timeout_s =
        p->timeout_s < MY_KILL_TIMEOUT_S ? (unsigned)ceil(p->timeout_s) : MY_KILL_TIMEOUT_S;
    if (my_settings_copy(&k->set, &p->set) != 0) {
        free(k);
        return NULL;
    }
    return k;
}

/* Runs on a worker: a short-lived session of its own asks the server to stop the statement. */
static void my_cancel_send(void *req) {
    my_kill *k = req;
    /* The connection being cancelled loaded the library; this orders the worker after that. */
    if (my_library("", NULL) != KEEL_OK)
        return;
    if (k->set.ssl_mode != SSL_DISABLED)
        my_tls_errors_clear();
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return;
    unsigned t = k->timeout_s;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &t);
    if (my_apply(m, &k->set) == 0 &&
        mysql_real_connect(m, k->set.unix_socket ? MY_DEFAULT_HOST : k->set.addr, k->set.user,
                           k->set.password, NULL, k->set.port, k->set.unix_socket, 0)) {
        char sql[48];
        int n = snprintf(sql, sizeof sql, "KILL QUERY %lu", k->thread_id);
        mysql_real_query(m, sql, (unsigned long)n);
    }
    mysql_close(m);
}

static void my_cancel_release(void *req) {
    my_kill *k = req;
    my_settings_free(&k->set);
    free(k);
}

/*
 * The KILL QUERY that held back the end of the operation, or the batch's closing statement,
 * returned: that goes on now. When it did not return in time it may still reach the server, so
 * nothing more is sent on the session and the connection is given up after this operation (a
 * batch's transaction then ends with the session, rolled back).
 */
static void my_cancel_settled(void *owner, int answered) {
    my_impl *p = owner;
    my_report r = p->report;
    if (r != R_HELD && r != R_STEP)
        return;
    p->report = R_NONE;
    if (!answered)
        p->c->broken = 1;
    if (r == R_HELD) {
        my_op_report(p);
        return;
    }
    if (!answered) {
        if (p->stage == MS_ROLLBACK) {
            p->err = p->berr;
            p->failed = 1;
        } else {
            my_fail(p, KEEL_ERR_CONNECTION_LOST,
                    "the batch could not be committed: a cancel request to the server did not "
                    "return, so the connection was given up");
        }
        my_finish(p);
        return;
    }
    p->call = C_QUERY;
    my_run(p, 0, 0);
}

static const keel__cancel_ops my_cancel_ops = {
    .running = my_cancel_running,
    .prepare = my_cancel_prepare,
    .send = my_cancel_send,
    .release = my_cancel_release,
    .settled = my_cancel_settled,
};

static void my_cancel(keel_conn *c) {
    my_impl *p = c->impl;
    if (p && p->phase == MY_BUSY && p->op != OP_NONE)
        p->cancel_wanted = 1;
    if (!p || !my_cancellable(p))
        return;
    keel__cancel_start(&p->cancel, keel__conn_workers(c), p->op_seq);
}

static keel_txn_status my_txn_status(const keel_conn *c) {
    const my_impl *p = c->impl;
    if (!p || !p->m || p->phase != MY_IDLE)
        return KEEL_TXN_UNKNOWN;
    unsigned status = 0;
    if (mariadb_get_infov(p->m, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0)
        return KEEL_TXN_UNKNOWN;
    /* MySQL has no failed-transaction state: after an error the transaction goes on. */
    return (status & SERVER_STATUS_IN_TRANS) ? KEEL_TXN_ACTIVE : KEEL_TXN_IDLE;
}

static void my_close(keel_conn *c) {
    my_impl *p = c->impl;
    if (!p)
        return;
    c->impl = NULL;
    my_destroy(p);
}

const keel__engine keel__engine_mysql = {
    .name = MY_ENGINE,
    .placeholder_style = KEEL__PH_MYSQL,
    .ident_quote = '`',
    .check_config = my_check_config,
    .connect = my_connect,
    .query = my_query,
    .transaction = my_transaction,
    .cancel = my_cancel,
    .txn_status = my_txn_status,
    .close = my_close,
};
