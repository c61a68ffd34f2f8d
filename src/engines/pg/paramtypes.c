/* src/engines/pg/paramtypes.c - PostgreSQL parameter types described by the server, for arrays. */
#include <stdlib.h>
#include <string.h>

#include "core/value_int.h"
#include "engines/pg/codec.h"
#include "engines/pg/paramtypes.h"
#include "engines/pg/exec.h"

/* Described statements remembered per connection. */
#define PG_PTYPES_CACHE 64

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
    keel__values_free(p->dvals);
    p->dvals = NULL;
    free(p->pdesc);
    p->pdesc = NULL;
}

int keel__pg_has_arrays(const keel__stmt *stmt) {
    size_t n = stmt->nparams * stmt->nrows;
    for (size_t i = 0; i < n; i++)
        if (stmt->params[i].type == KEEL_TYPE_ARRAY)
            return 1;
    return 0;
}

/* The declared types of the first row (arrays: 0, the server decides) into p->ptypes. */
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
        p->pdesc[i] = keel__pg_declared_oid(stmt->params[i].type);
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

keel_status keel__pg_ptypes_start(pg_impl *p, const keel__stmt *stmt, const char *sql,
                                  keel_error *err) {
    size_t n = stmt->nrows * stmt->nparams;
    keel__values_free(p->dvals);
    p->dvals = keel__values_copy(stmt->params, n, 0, NULL);
    if (!p->dvals)
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    p->dstmt = *stmt;
    p->dstmt.sql = sql;
    p->dstmt.params = p->dvals;
    p->dgot = 0;
    p->dstep = 0;
    /* p->pdesc holds the declared types (keel__pg_ptypes_cached). */
    p->phase = PG_PTYPES;
    if (!PQenterPipelineMode(p->pg) ||
        !PQsendPrepare(p->pg, "", sql, (int)stmt->nparams, p->pdesc) ||
        !PQsendDescribePrepared(p->pg, "") || !PQpipelineSync(p->pg)) {
        keel__pg_ptypes_clear(p);
        return keel__pg_send_failed(p, 1, err);
    }
    if (keel__pg_after_send(p) != 0) {
        keel__pg_ptypes_clear(p);
        return keel__pg_send_failed(p, 1, err);
    }
    return KEEL_OK;
}

/* Keeps the described types of the statement in p->pdesc and in the cache. */
static void pg_describe_keep(pg_impl *p, const PGresult *r) {
    size_t n = p->dstmt.nparams;
    if ((size_t)PQnparams(r) != n)
        return; /* the server saw another count: the execute reports it */
    /* The key: the declared types the describe was made with, still in p->pdesc. */
    pg_desc *e = (pg_desc *)keel__stmtcache_find(&p->dcache, p->dstmt.sql, p->dstmt.sql_len,
                                                 p->pdesc, n * sizeof(Oid));
    if (!e)
        e = (pg_desc *)keel__stmtcache_add(&p->dcache, p->dstmt.sql, p->dstmt.sql_len, p->pdesc,
                                           n * sizeof(Oid));
    for (size_t i = 0; i < n; i++)
        p->pdesc[i] = PQparamtype(r, (int)i);
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
            if (p->failed) {
                keel__pg_ptypes_clear(p);
                return 1;
            }
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
        if (st == PGRES_COMMAND_OK && p->dstep == 1)
            pg_describe_keep(p, r);
        else if (st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_ABORTED && !p->failed) {
            keel__pg_result_error(p, r, -1, &p->err);
            p->failed = 1;
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
}
