/* src/engines/mysql/mysql.h - a MySQL/MariaDB connection's state, shared by the engine's files. */
#ifndef KEEL_ENGINES_MYSQL_MYSQL_H
#define KEEL_ENGINES_MYSQL_MYSQL_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error_int.h"
#include "core/result_int.h"
#include "core/timeconv.h"
#include "engines/cancel.h"
#include "engines/dns.h"
#include "engines/engine.h"
#include "engines/mysql/lib.h"
#include "engines/stmtcache.h"
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
 * BYTES as a binary string; DATE, TIME, TIMESTAMP as MYSQL_TIME; INTERVAL (no months) as a
 * TIME duration; TIMESTAMPTZ as the UTC DATETIME; UUID as its 36-character text (store UUIDs
 * in CHAR(36); they read back as TEXT).
 *
 * Values received, by column type: TINYINT(1) (BOOL, BOOLEAN) as BOOL; other integers and YEAR
 * as INT, with BIGINT UNSIGNED above INT64_MAX as NUMERIC text; DECIMAL as NUMERIC; FLOAT and
 * DOUBLE as FLOAT; DATE as DATE; TIME as TIME when it is a time of day, else (negative, or 24
 * hours and more) as an INTERVAL of microseconds; DATETIME and TIMESTAMP as TIMESTAMP (UTC for TIMESTAMP columns,
 * given the session time zone), zero dates as their text; JSON as JSON (MySQL's JSON type, or
 * MariaDB's LONGTEXT marked as JSON in the extended metadata of 10.5.2 and later; otherwise
 * TEXT); binary strings, BLOBs, BIT and GEOMETRY as BYTES; other strings, ENUM and SET as TEXT.
 * Commands report affected rows (0 for statements such as SET or DDL); SELECT reports -1.
 */

#define MY_ENGINE "mysql"

#define MY_DEFAULT_HOST "localhost"

/* Splits of a failed bulk execution pending at once: enough for 2^64 rows. */
#define MY_SPLIT_MAX 64

/* The kill connection gives up after this long, whatever the connect timeout. */
#define MY_KILL_TIMEOUT_S 10u

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
    C_NEXT,
    C_PREPARE,
    C_EXECUTE,
    C_STMT_NEXT,
    C_STMT_CLOSE,
    C_FETCH,     /* the next row of dsrc */
    C_STMT_FETCH /* the next row of cur's result */
} my_call;

typedef enum my_op {
    OP_NONE,
    OP_TEXT,     /* a statement without parameters, or transaction control: the text protocol */
    OP_STMT,     /* a statement with parameters: a server-side prepared statement */
    OP_MANY,     /* a batch: executions of a prepared statement, atomic as a whole */
    OP_DESCRIBE, /* keel_conn_prepare: a statement is prepared (and cached), not executed */
    OP_COPEN,    /* keel_conn_cursor_open: a statement of its own, executed with a cursor */
    OP_CFETCH    /* keel_cursor_fetch: rows of an open cursor's statement (cur) */
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

typedef struct my_cached my_cached;

/* A prepared statement in the connection's cache. */
struct my_cached {
    keel__stmtcache_entry entry; /* its text */
    MYSQL_STMT *stmt;
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
    int no_io_timeouts;   /* the handle came from my_wconn: see my_wait */
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
    const char *qsql;  /* text of C_QUERY */
    size_t qlen;
    keel__buf sqlbuf;

    /* The prepared statement of the operation. */
    const char *ssql;
    size_t slen;
    MYSQL_STMT *cur;
    int cur_new;      /* cur is not prepared yet */
    int cur_uncached; /* cur is prepared but not in the cache (out of memory) */
    /* OP_COPEN: the cursor, which owns cur once it is prepared, and the rows per round trip;
     * OP_CFETCH: the rows still wanted. */
    keel_cursor *ccur;
    size_t cprefetch;
    size_t cleft;
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

    /* The statement cache (of my_cached), and statements waiting to be closed. */
    keel__stmtcache cache;
    MYSQL_STMT **evict;
    size_t nevict, evict_cap;

    /* Result columns of the binary protocol, reused by every statement. */
    my_col *cols;
    MYSQL_BIND *rbinds;
    size_t ccap;

    /*
     * The rows of the running statement, read one by one (a text result dsrc from
     * mysql_use_result, or while dstmt is set the unbuffered result of cur) and decoded into
     * dres; when dres is NULL (failed, cancelled) they are still read, and dropped. Reading stops
     * between two rows once a loop turn has used up its budget (keel__turn_spent): slice then
     * goes on from a later turn with the fetch in dnext.
     */
    keel_result *dres;
    MYSQL_RES *dsrc;
    int dstmt;
    keel_type *dkinds; /* the keel type of each column of dsrc */
    size_t dkcap;
    unsigned dcount; /* rows read since the budget was last looked at */
    int stream;      /* rows go to the rows callback in batches while they are read */
    my_call dnext;
    MYSQL_ROW r_row;
    keel__defer *slice;

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
    size_t bfrom;    /* rows of the batch's result before the running execution's */
    keel_error berr; /* the batch's error while its transaction is rolled back */
    keel__arena barena;

    keel__cancel cancel; /* cancel requests for the running operation, and their retries */
} my_impl;

/* The configured name of c's database, for messages ("" without one). */
const char *keel__my_dbname(const keel_conn *c);

/*
 * Loads libmariadb (engines/mysql/lib.h) and runs its global initialisation, which is not
 * thread-safe, once per process; the loop and workers both use it. KEEL_ERR_UNSUPPORTED naming
 * the library when it cannot be loaded.
 */
keel_status keel__my_library(const char *name, keel_error *err);

/*
 * OpenSSL keeps errors in a queue per thread, and SSL_get_error misreads a harmless "want to
 * read" as a failure while an older error sits in it. libmariadb does not clear the queue before
 * its TLS calls, and on a loop thread shared by many connections (and other libraries) a stale
 * error is common, so it is cleared before each call of a TLS connection. The function is
 * looked up when libmariadb is loaded: libmariadb loads libcrypto when it uses OpenSSL; with
 * another TLS library there is no such queue and nothing to clear.
 */
void keel__my_tls_errors_clear(void);

/*
 * Fills err from a MySQL error. rows names the batch rows it belongs to: [a, b) when b > a.
 * A lost connection marks the connection broken.
 */
void keel__my_error(my_impl *p, unsigned no, const char *state, const char *msg, size_t a, size_t b,
                    keel_error *err);

/* Records the operation's first error. */
void keel__my_fail(my_impl *p, keel_status code, const char *msg);

/* Records the handle's last error as the operation's first error. */
void keel__my_fail_mysql(my_impl *p);

/* Records st's last error (else the handle's) for batch rows [a, b) as the first error. */
void keel__my_fail_stmt(my_impl *p, MYSQL_STMT *st, size_t a, size_t b);

extern const keel__cancel_ops keel__my_cancel_ops;

#endif
