/* src/engines/pg/paramtypes.c - PostgreSQL parameter types the server describes, for arrays and ints. */
#include <stdlib.h>
#include <string.h>

#include "core/value_int.h"
#include "engines/pg/codec.h"
#include "engines/pg/paramtypes.h"
#include "engines/pg/exec.h"

/* Described statements remembered per connection. */
#define PG_PTYPES_CACHE 64

/* The commands of a describe's pipeline, in the order sent (p->dsteps). */
enum {
    PG_D_SAVEPOINT, /* SAVEPOINT keel_ptypes, before the first describe inside a transaction */
    PG_D_PREPARE,   /* the statement, parsed into the unnamed statement */
    PG_D_DESCRIBE,  /* its parameter types */
    PG_D_RELEASE,   /* RELEASE SAVEPOINT keel_ptypes */
    PG_D_ROLLBACK   /* ROLLBACK TO SAVEPOINT keel_ptypes, after a failed first describe */
};

/* A statement's described parameter types, keyed by its text and declared types. */
typedef struct pg_desc {
    keel__stmtcache_entry entry;
    Oid *types;
    size_t n;
} pg_desc;

static void pg_desc_release(void *owner, keel__stmtcache_entry *e) {
    (void)owner;
    free(((pg_desc *)e)->types);
}

void keel__pg_ptypes_init(pg_impl *p) {
    keel__stmtcache_init(&p->dcache, PG_PTYPES_CACHE, sizeof(pg_desc), pg_desc_release, p);
}

void keel__pg_ptypes_free(pg_impl *p) {
    keel__stmtcache_clear(&p->dcache, pg_desc_release);
    keel__pg_ptypes_clear(p);
    free(p->pdesc);
    p->pdesc = NULL;
}

int keel__pg_needs_types(const keel__stmt *stmt) {
    size_t n = stmt->nparams * stmt->nrows;
    for (size_t i = 0; i < n; i++)
        if (stmt->params[i].type == KEEL_TYPE_ARRAY || stmt->params[i].type == KEEL_TYPE_INT)
            return 1;
    return 0;
}

/* The declared types of the first row (arrays and ints: 0, the server decides) into p->pdesc. */
static int pg_declared(pg_impl *p, const keel__stmt *stmt) {
    size_t n = stmt->nparams;
    if (n > p->pdesc_cap) {
        Oid *d = realloc(p->pdesc, n * sizeof *d);
        if (!d)
            return -1;
        p->pdesc = d;
        p->pdesc_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        p->pdesc[i] =
            stmt->params[i].type == KEEL_TYPE_INT ? 0 : keel__pg_declared_oid(stmt->params[i].type);
    p->npdesc = n;
    return 0;
}

int keel__pg_ptypes_cached(pg_impl *p, const keel__stmt *stmt, const char *sql) {
    p->dentry = NULL;
    if (pg_declared(p, stmt) != 0)
        return -1;
    size_t n = stmt->nparams;
    pg_desc *e =
        (pg_desc *)keel__stmtcache_find(&p->dcache, sql, stmt->sql_len, p->pdesc, n * sizeof(Oid));
    if (!e || e->n != n)
        return 0;
    memcpy(p->pdesc, e->types, n * sizeof(Oid));
    p->dentry = &e->entry;
    return 1;
}

/* True when parameter i of the statement being described is an int in some row (and so was
 * declared unknown: the server's type for it decides its form). */
static int pg_int_param(const pg_impl *p, size_t i) {
    const keel__stmt *s = &p->dstmt;
    for (size_t r = 0; r < s->nrows; r++)
        if (s->params[r * s->nparams + i].type == KEEL_TYPE_INT && p->dkey[i] == 0)
            return 1;
    return 0;
}

/* Queues one utility command of the describe's pipeline. 0, or -1 when libpq failed. */
static int pg_send_step(pg_impl *p, int step, const char *sql) {
    p->dsteps[p->ndstep++] = (unsigned char)step;
    return PQsendQueryParams(p->pg, sql, 0, NULL, NULL, NULL, NULL, 0) ? 0 : -1;
}

/*
 * Queues a describe of the statement with the types in p->pdesc: the first (with a savepoint
 * around it inside a transaction block, so that a statement the server cannot type with ints
 * left unknown does not abort the user's transaction), or the retry (first back to the
 * savepoint when the first failed inside one). 0, or -1 when libpq failed.
 */
static int pg_describe_send(pg_impl *p, int rollback) {
    p->dstep = p->ndstep = 0;
    p->dgot = 0;
    p->dfail = -1;
    if (!PQenterPipelineMode(p->pg))
        return -1;
    if (rollback && (pg_send_step(p, PG_D_ROLLBACK, "ROLLBACK TO SAVEPOINT keel_ptypes") != 0 ||
                     pg_send_step(p, PG_D_RELEASE, "RELEASE SAVEPOINT keel_ptypes") != 0))
        return -1;
    if (p->dsaved && !p->dretry && pg_send_step(p, PG_D_SAVEPOINT, "SAVEPOINT keel_ptypes") != 0)
        return -1;
    p->dsteps[p->ndstep++] = PG_D_PREPARE;
    p->dsteps[p->ndstep++] = PG_D_DESCRIBE;
    if (!PQsendPrepare(p->pg, "", p->dstmt.sql, (int)p->dstmt.nparams, p->pdesc) ||
        !PQsendDescribePrepared(p->pg, ""))
        return -1;
    if (p->dsaved && !p->dretry &&
        pg_send_step(p, PG_D_RELEASE, "RELEASE SAVEPOINT keel_ptypes") != 0)
        return -1;
    if (!PQpipelineSync(p->pg))
        return -1;
    return keel__pg_after_send(p);
}

keel_status keel__pg_ptypes_start(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                  keel_error *err) {
    size_t n = stmt->nrows * stmt->nparams, np = stmt->nparams;
    void *key = NULL;
    keel__pg_ptypes_clear(p);
    p->dvals = keel__values_copy(stmt->params, n, np * sizeof(Oid), &key);
    if (!p->dvals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    p->dkey = key;
    /* p->pdesc holds the declared types (keel__pg_ptypes_cached): the key of the cache. */
    memcpy(p->dkey, p->pdesc, np * sizeof(Oid));
    p->dstmt = *stmt;
    p->dstmt.sql = sql;
    p->dstmt.params = p->dvals;
    p->dretry = 0;
    p->dsaved = 0;
    for (size_t i = 0; i < np && PQtransactionStatus(p->pg) == PQTRANS_INTRANS; i++)
        p->dsaved |= pg_int_param(p, i);
    p->phase = PG_PTYPES;
    if (pg_describe_send(p, 0) != 0) {
        keel__pg_ptypes_clear(p);
        return keel__pg_send_failed(p, 1, err);
    }
    return KEEL_OK;
}

/* Keeps the described types in p->pdesc, and in the cache under the declared ones. */
static void pg_describe_keep(pg_impl *p) {
    size_t n = p->dstmt.nparams;
    pg_desc *e = (pg_desc *)keel__stmtcache_find(&p->dcache, p->dstmt.sql, p->dstmt.sql_len,
                                                 p->dkey, n * sizeof(Oid));
    if (!e)
        e = (pg_desc *)keel__stmtcache_add(&p->dcache, p->dstmt.sql, p->dstmt.sql_len, p->dkey,
                                           n * sizeof(Oid));
    p->dentry = NULL;
    if (!e)
        return;
    Oid *types = n ? malloc(n * sizeof *types) : NULL;
    if (n && !types) {
        keel__stmtcache_remove(&p->dcache, &e->entry);
        return;
    }
    free(e->types);
    if (n)
        memcpy(types, p->pdesc, n * sizeof *types);
    e->types = types;
    e->n = n;
    p->dentry = &e->entry;
}

/*
 * The first describe is in. An int parameter goes in the form of the type the server gave it
 * when keel has one for ints (integer, smallint, numeric…); where the server said text or
 * unknown (SELECT $1), or could not type the statement at all (an overloaded function, $1 IS
 * NULL), it is declared bigint as before and the statement is described again: 1 then, else 0.
 * The retry's failure is the statement's own error, which the statement would have raised.
 */
static int pg_describe_again(pg_impl *p) {
    size_t n = p->dstmt.nparams;
    int failed = p->failed, again = 0;
    for (size_t i = 0; i < n; i++)
        again |= pg_int_param(p, i) && (failed || !keel__pg_int_oid_ok(p->pdesc[i]));
    /* Outside a savepoint, a failure inside a transaction block has aborted it: reported. */
    if (!again || (failed && !p->dsaved && PQtransactionStatus(p->pg) != PQTRANS_IDLE) ||
        (failed && p->dfail != PG_D_PREPARE))
        return 0;
    /* The ints the server typed well keep their types; the other parameters are declared as
     * they were, for the server to describe them again. */
    for (size_t i = 0; i < n; i++) {
        if (!pg_int_param(p, i))
            p->pdesc[i] = p->dkey[i];
        else if (failed || !keel__pg_int_oid_ok(p->pdesc[i]))
            p->pdesc[i] = keel__pg_declared_oid(KEEL_TYPE_INT); /* bigint */
    }
    p->dretry = 1;
    p->failed = 0;
    keel_error_clear(&p->err);
    return 1;
}

int keel__pg_ptypes_collect(pg_impl *p, keel_status (*run)(pg_impl *, const keel__stmt *,
                                                           const char *, keel_error *)) {
    for (;;) {
        if (PQisBusy(p->pg))
            return 0;
        PGresult *r = PQgetResult(p->pg);
        if (!r) {
            if (!p->dgot)
                return 0; /* nothing sent is pending yet */
            p->dgot = 0;
            p->dstep++;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (PQexitPipelineMode(p->pg) != 1)
                return -1;
            if (!p->dretry && pg_describe_again(p)) {
                int rollback = p->dsaved && p->dfail == PG_D_PREPARE;
                if (pg_describe_send(p, rollback) != 0)
                    return -1;
                return 0;
            }
            if (p->failed) {
                keel__pg_ptypes_clear(p);
                return 1;
            }
            pg_describe_keep(p);
            keel_error e;
            keel__stmt stmt = p->dstmt;
            keel_status rs = run(p, &stmt, stmt.sql, &e);
            if (rs != KEEL_OK) {
                keel__pg_ptypes_clear(p);
                if (p->phase == PG_DEAD)
                    return -1;
                p->err = e;
                p->failed = 1;
                p->phase = PG_QUERY;
                return 1;
            }
            /* The copy of the values is freed when the operation ends. */
            return 0;
        }
        p->dgot = 1;
        int step = p->dstep < p->ndstep ? p->dsteps[p->dstep] : -1;
        if (st == PGRES_COMMAND_OK && step == PG_D_DESCRIBE) {
            if ((size_t)PQnparams(r) == p->dstmt.nparams) {
                for (size_t i = 0; i < p->dstmt.nparams; i++)
                    p->pdesc[i] = PQparamtype(r, (int)i);
            } /* else the server saw another count: the execute reports it */
        } else if (st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_ABORTED && !p->failed) {
            keel__pg_result_error(p, r, -1, &p->err);
            p->failed = 1;
            p->dfail = step;
        }
        PQclear(r);
    }
}

void keel__pg_ptypes_done(pg_impl *p) {
    if (p->failed && p->dentry) {
        pg_desc_release(p, p->dentry);
        keel__stmtcache_remove(&p->dcache, p->dentry);
    }
    p->dentry = NULL;
    p->npdesc = 0;
    keel__pg_ptypes_clear(p);
}

void keel__pg_ptypes_clear(pg_impl *p) {
    keel__values_free(p->dvals);
    p->dvals = NULL;
    p->dkey = NULL; /* inside the copy's block */
}
