/* src/engines/pg/pg.h - the state of a PostgreSQL connection, shared by the engine's files. */
#ifndef KEEL_ENGINES_PG_PG_H
#define KEEL_ENGINES_PG_PG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "core/buf.h"
#include "core/error_int.h"
#include "core/result_int.h"
#include "engines/cancel.h"
#include "engines/dns.h"
#include "engines/engine.h"
#include "engines/pg/cancel.h"
#include "engines/stmtcache.h"
#include "loop/defer.h"

/*
 * libpq's asynchronous API driven by the host loop. The engine is split by concern: connect.c
 * (configuration and connection set-up), codec.c (parameters and values), exec.c (running
 * operations and collecting results), stmtcache.c (the prepared-statement cache), copy.c and
 * binary.c (bulk loads in binary COPY), and pg.c (the vtable, cancel and close).
 */

#define PG_ENGINE "postgresql"

/* DEALLOCATEs of evicted statements piggybacked on one round trip at most. */
#define PG_DEALLOC_PER_TRIP 8

/* The longest queue of one cached-statement round trip: the DEALLOCATEs and their sync, then
 * the prepare, the execute and the closing sync. */
#define PG_STEPS_MAX (PG_DEALLOC_PER_TRIP + 6)

/* User types looked up in one round trip at most (pg_utypes_ask). */
#define PG_UTYPES_PER_TRIP 64

typedef enum pg_phase {
    PG_RESOLVING,  /* host names are being resolved on the worker pool */
    PG_CONNECTING, /* PQconnectPoll is driving the handshake */
    PG_SETUP,      /* connected; session settings are being applied */
    PG_IDLE,       /* ready; the socket is watched to notice a server-side close */
    PG_QUERY,      /* one statement, or a transaction command, is in flight */
    PG_BATCH,      /* a pipelined batch is in flight */
    PG_CACHED,     /* one statement through the prepared-statement cache */
    PG_COPY,       /* a bulk load (keel_conn_copy_in): COPY … FROM STDIN in binary */
    PG_DESCRIBE,   /* a statement is parsed and described (keel_conn_prepare) */
    PG_PTYPES,     /* the parameter types of a statement with arrays or ints are being described */
    PG_RESTYLE,    /* the operation is over; DateStyle and IntervalStyle are being set back */
    PG_HELD,       /* the operation is over; its end waits for a cancel request in flight */
    PG_DEAD        /* failed or lost; waits for close */
} pg_phase;

/*
 * A named prepared statement of the session ("keel_sN"), keyed by its text and the parameter
 * types it was prepared with: the types are fixed at parse time, so another type tuple needs a
 * statement of its own.
 */
typedef struct pg_stmt {
    keel__stmtcache_entry entry; /* the text, and the parameter types as the key's extra bytes */
    uint64_t id;                 /* N of its name */
    /* 1 when its result columns all decode from binary (keel__pg_binary_ok, or enums), so
     * executions ask for binary results; -1 when some do not; 0 until an execution has
     * returned them and every user type among them has been looked up. */
    int binary;
} pg_stmt;

struct pg_copy;
struct pg_wire;

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
    int flush_pending;  /* libpq still holds output that the socket did not take */
    int failed;         /* err holds the operation's first error */
    int copy_out;       /* discarding the data of a COPY TO STDOUT */
    const char *doomed; /* COMMIT or RELEASE of a failed block: the operation's error message */
    keel_error err;
    /*
     * The running statement's result, decoded as its PGresults arrive and freed one by one, so
     * libpq's copy and keel's never hold the whole result together. With several statements in
     * one string the last one that returned rows is the result.
     */
    keel_result *res;
    keel_type *kinds; /* keel type of each column of res, of its elements, of its elements'
                         range bounds (ncols each) */
    size_t kinds_cap;
    int64_t affected; /* the row count the result's command reported, -1 when none */
    int rows_seen;    /* a statement returned rows: later commands do not replace them */
    int in_set;       /* single-row results of one statement are arriving */
    int stream;       /* single-row mode is on: rows go to keel__conn_rows in batches */
    /*
     * Collecting stops when the host's turn has used up its budget (keel__turn_spent) and goes
     * on from resume, on a later turn, without reading the socket meanwhile (yielded): the
     * server then waits on TCP instead of the loop waiting on keel. A whole result (part) is
     * decoded a budget at a time too.
     */
    PGresult *part; /* a whole result, its rows decoded up to part_row */
    size_t part_row;
    unsigned since_check; /* results taken since the budget was last looked at */
    int yielded;
    keel__defer *resume;
    uint64_t op_seq;     /* counts operations, so a late cancel retry can tell it is stale */
    keel__cancel cancel; /* cancel requests for the running operation, and their retries */
    keel__pg_key key;    /* the cancel key, read during the handshake (pg/cancel.h) */
    pg_phase held;       /* the phase of an operation in PG_HELD */
    pg_phase restyled;   /* the phase of an operation in PG_RESTYLE */
    int restyle_tried;   /* the operation's end already set the styles back (pg_restyle) */

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
    keel__buf parr; /* the encoded array parameters of the row */
    /*
     * Array and int parameters take their form from the type the server gives the parameter
     * (an array type, json or jsonb; integer, smallint, numeric…): pdesc holds the described
     * types of the running statement (npdesc of them), or is NULL. A statement with arrays or
     * ints whose types are not cached is described first (PG_PTYPES), from a copy of it
     * (dstmt, dvals), then run.
     */
    Oid *pdesc;
    size_t npdesc, pdesc_cap;
    keel__stmtcache dcache;        /* described parameter types by text and declared types */
    keel__stmtcache_entry *dentry; /* the entry pdesc came from, dropped if the statement fails */
    keel__stmt dstmt;
    keel_value *dvals;
    Oid *dkey;            /* the declared types the described types are cached under */
    int dgot;             /* a result of the pending command came in */
    int dretry;           /* the describe runs again, ints as bigint where the first failed */
    int dsaved;           /* the first describe ran inside a savepoint of the transaction */
    int dfail;            /* the step whose error failed the describe (paramtypes.c) */
    size_t dstep, ndstep; /* the pending command, of the ndstep queued (dsteps) */
    unsigned char dsteps[6];

    /*
     * The prepared-statement cache: at most cache.capacity statements (0: every statement goes
     * unnamed, as behind pgbouncer in transaction mode). Evicted statements wait in dpend
     * until a DEALLOCATE for them succeeds; those are sent ahead of a later statement, in its
     * round trip, and only outside a transaction block, where their failure cannot abort the
     * user's transaction.
     */
    keel__stmtcache cache;
    uint64_t next_id;
    uint64_t *dpend;
    size_t ndpend, dpcap;

    /*
     * User types (OIDs from FirstNormalObjectId on) met in the results of cached statements.
     * An enum's binary form is its label, which is its text, so a statement returning enums
     * can be read in binary. Each type is looked up once per connection: those met but not
     * yet looked up wait in uask and go in the round trip of the next cached statement run
     * outside a transaction block (nxask of them); ulooked holds every type looked up, uenums
     * the enums among them, uearrays the arrays of enums among them (pairs: the array type,
     * then its element type).
     */
    Oid *uask, *ulooked, *uenums, *uearrays;
    size_t nuask, uask_cap, nulooked, ulooked_cap, nuenums, uenums_cap, nuearrays, uearrays_cap;
    size_t nxask;

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
    struct pg_wire *wire; /* the state of batches written by keel (batch.c), made by the first */
} pg_impl;

/* The configured name of c's database, for messages. */
const char *keel__pg_dbname(const keel_conn *c);

/*
 * libpq messages span several lines and are indented with tabs; a keel_error message is one
 * line. The result is also run through the redactor so no password-looking text survives.
 */
void keel__pg_clean_message(char *dst, size_t size, const char *src);

/* Fills err from a libpq message (connection and protocol failures). */
keel_status keel__pg_error_libpq(keel_error *err, keel_status code, const keel_conn *c,
                                 const char *prefix, const char *msg);

/*
 * A connect failure. libpq's message names the host and port it tried; when it does not (a
 * failure before the first attempt) the configured ones are named instead.
 */
keel_status keel__pg_connect_error(pg_impl *p, keel_error *err, keel_status code);

/*
 * The status of a PostgreSQL SQLSTATE: PostgreSQL's own codes and classes (57014 query_canceled,
 * 08P01 protocol_violation, 42P18 / 42P02 about parameters, classes 53, 55, 57, 58 and XX), then
 * the SQL-standard classes (keel__status_from_sqlstate).
 */
keel_status keel__pg_status_of(const char *sqlstate);

/* How keel__cancel reaches a PostgreSQL connection (pg.c). */
extern const keel__cancel_ops keel__pg_cancel_ops;

#endif
