/* src/engines/pg/stmtcache.c - PostgreSQL's per-connection cache of named prepared statements. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/pg/codec.h"
#include "engines/pg/decode.h"
#include "engines/pg/exec.h"
#include "engines/pg/stmtcache.h"

/* What one queued command of a cached-statement round trip is, in the order sent. */
typedef enum pg_step { PG_STEP_DEALLOC, PG_STEP_SYNC, PG_STEP_PREPARE, PG_STEP_EXEC } pg_step;

/*
 * The statement named keel_s<id> exists on the server but is no longer cached: its name waits
 * for a DEALLOCATE. Should even that list fail to grow, the statement stays in the session
 * unused until the connection closes, which costs server memory but never a wrong result,
 * since names are never reused.
 */
static void pg_dealloc_later(pg_impl *p, uint64_t id) {
    if (p->ndpend == p->dpcap) {
        size_t cap = p->dpcap ? p->dpcap * 2 : 8;
        uint64_t *d = realloc(p->dpend, cap * sizeof *d);
        if (d) {
            p->dpend = d;
            p->dpcap = cap;
        }
    }
    if (p->ndpend < p->dpcap)
        p->dpend[p->ndpend++] = id;
}

/* The cache evicted its least recently used statement to make room. */
static void pg_cache_evicted(void *owner, keel__stmtcache_entry *e) {
    pg_dealloc_later(owner, ((pg_stmt *)e)->id);
}

/* Removes an entry; when the statement exists on the server (dealloc) it is deallocated later. */
static void pg_cache_drop(pg_impl *p, pg_stmt *e, int dealloc) {
    if (dealloc)
        pg_dealloc_later(p, e->id);
    keel__stmtcache_remove(&p->cache, &e->entry);
}

void keel__pg_cache_init(pg_impl *p, size_t capacity) {
    keel__stmtcache_init(&p->cache, capacity, sizeof(pg_stmt), pg_cache_evicted, p);
}

void keel__pg_cache_free(pg_impl *p) {
    keel__stmtcache_clear(&p->cache, NULL);
    free(p->dpend);
}

int keel__pg_one_statement(const char *sql) {
    int text = 0;
    for (const char *s = sql; *s; s++) {
        if (*s == ';') {
            for (s++; *s; s++)
                if (*s != ';' && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f')
                    return 0;
            return text;
        }
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f')
            text = 1;
    }
    return text;
}

int keel__pg_own_bytes(pg_impl *p, size_t n) {
    size_t need = 0, used = 0;
    for (size_t i = 0; i < n; i++)
        if (p->pfmts[i] == 1)
            need += (size_t)p->plens[i];
    if (need == 0)
        return 0;
    keel__buf_reset(&p->pbin);
    if (keel__buf_reserve(&p->pbin, need) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p->pfmts[i] != 1 || p->plens[i] == 0)
            continue;
        memcpy(p->pbin.data + used, p->pvals[i], (size_t)p->plens[i]);
        p->pvals[i] = p->pbin.data + used;
        used += (size_t)p->plens[i];
    }
    return 0;
}

int keel__pg_cached_send(pg_impl *p) {
    size_t n = p->xnparams;
    /* The parameter types are part of the key: they are fixed when the statement is parsed. */
    size_t tlen = n * sizeof *p->ptypes;
    pg_stmt *e = (pg_stmt *)keel__stmtcache_find(&p->cache, p->xsql, p->xsql_len, p->ptypes, tlen);
    p->xfresh = e == NULL;
    if (!e) {
        /* A name never used before. */
        e = (pg_stmt *)keel__stmtcache_add(&p->cache, p->xsql, p->xsql_len, p->ptypes, tlen);
        if (!e)
            return -2;
        e->id = ++p->next_id;
    }
    p->xstmt = e;
    p->nxsteps = p->xstep = p->nxdealloc = 0;
    p->xgot = p->xretry = 0;
    /* Outside a transaction block a failed DEALLOCATE only ends its own implicit transaction. */
    int dealloc = p->ndpend > 0 && PQtransactionStatus(p->pg) == PQTRANS_IDLE;
    char cmd[48];
    p->xpipe = p->xfresh || dealloc;
    /* The result format is chosen for all columns at once; their types are known from the
     * statement's first execution that returned them, which therefore returns text. */
    int binary = !p->xfresh && e->binary > 0;
    if (!p->xpipe) {
        snprintf(cmd, sizeof cmd, "keel_s%" PRIu64, e->id);
        if (!PQsendQueryPrepared(p->pg, cmd, (int)n, p->pvals, p->plens, p->pfmts, binary))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_EXEC;
        if (p->c->rows_cb)
            p->stream = PQsetSingleRowMode(p->pg);
        return 0;
    }
    if (!PQenterPipelineMode(p->pg))
        return -1;
    if (dealloc) {
        size_t k = p->ndpend < PG_DEALLOC_PER_TRIP ? p->ndpend : PG_DEALLOC_PER_TRIP;
        for (size_t i = 0; i < k; i++) {
            snprintf(cmd, sizeof cmd, "DEALLOCATE keel_s%" PRIu64, p->dpend[i]);
            if (!PQsendQueryParams(p->pg, cmd, 0, NULL, NULL, NULL, NULL, 0))
                return -1;
            p->xdok[i] = 0;
            p->xsteps[p->nxsteps++] = PG_STEP_DEALLOC;
        }
        if (!PQpipelineSync(p->pg))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_SYNC;
        p->nxdealloc = k;
    }
    snprintf(cmd, sizeof cmd, "keel_s%" PRIu64, e->id);
    if (p->xfresh) {
        if (!PQsendPrepare(p->pg, cmd, p->xsql, (int)n, p->ptypes))
            return -1;
        p->xsteps[p->nxsteps++] = PG_STEP_PREPARE;
    }
    if (!PQsendQueryPrepared(p->pg, cmd, (int)n, p->pvals, p->plens, p->pfmts, binary) ||
        !PQpipelineSync(p->pg))
        return -1;
    p->xsteps[p->nxsteps++] = PG_STEP_EXEC;
    p->xsteps[p->nxsteps++] = PG_STEP_SYNC;
    return 0;
}

/*
 * The execute of a statement prepared in an earlier round trip failed because the statement
 * went stale: a table it reads changed shape (the server refuses to change a prepared
 * statement's result type), or the statement is gone (DEALLOCATE ALL, DISCARD ALL). Both are
 * raised at Bind, before the statement runs. 1 for stale (drop it and deallocate), 2 for gone
 * (drop it), 0 otherwise.
 */
static int pg_stale(const pg_impl *p, const PGresult *r) {
    if (p->xfresh || p->xretried)
        return 0;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!state || !primary)
        return 0;
    if (strcmp(state, "0A000") == 0 && strstr(primary, "cached plan must not change result type"))
        return 1;
    if (strcmp(state, "26000") == 0 && strstr(primary, "keel_s"))
        return 2;
    return 0;
}

/*
 * The last result arrived (the closing sync of a pipeline). Forgets the DEALLOCATEs that
 * succeeded, then either ends the operation or, for a stale statement, prepares and runs it
 * again once. The retry is transparent only outside a transaction block: there the failed
 * implicit transaction left nothing behind, while inside one the error has already aborted the
 * user's transaction and is reported (the next attempt, after the rollback, prepares afresh).
 * Returns 1 when the operation is over, 0 when the retry is in flight, -1 when libpq failed.
 */
static int pg_cached_end(pg_impl *p) {
    size_t k = 0;
    for (size_t i = 0; i < p->ndpend; i++)
        if (!(i < p->nxdealloc && p->xdok[i]))
            p->dpend[k++] = p->dpend[i];
    p->ndpend = k;
    p->nxdealloc = 0;
    if (p->xpipe && PQexitPipelineMode(p->pg) != 1)
        return -1;
    if (!p->xretry || PQtransactionStatus(p->pg) != PQTRANS_IDLE) {
        if (p->xretry)
            pg_cache_drop(p, p->xstmt, p->xretry == 1);
        return 1;
    }
    pg_cache_drop(p, p->xstmt, p->xretry == 1);
    p->xretried = 1;
    p->failed = 0;
    keel_error_clear(&p->err);
    keel__pg_drop_result(p);
    int r = keel__pg_cached_send(p);
    if (r == -2) {
        keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory");
        return 1;
    }
    if (r < 0)
        return -1;
    r = PQflush(p->pg);
    if (r < 0)
        return -1;
    p->flush_pending = r;
    return 0;
}

/* One result of the running cached statement, by the command it answers. -1 when libpq
 * failed. */
static int pg_cached_result(pg_impl *p, PGresult *r) {
    ExecStatusType st = PQresultStatus(r);
    switch ((pg_step)p->xsteps[p->xstep]) {
    case PG_STEP_DEALLOC: {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st == PGRES_COMMAND_OK || (state && strcmp(state, "26000") == 0))
            p->xdok[p->xstep] = 1;
        break;
    }
    case PG_STEP_PREPARE:
        if (st == PGRES_COMMAND_OK)
            break;
        /* Never created on the server: forgotten without a DEALLOCATE. */
        pg_cache_drop(p, p->xstmt, 0);
        p->xstmt = NULL;
        if (st != PGRES_PIPELINE_ABORTED && !p->failed) {
            keel__pg_result_error(p, r, -1, &p->err);
            p->failed = 1;
        }
        break;
    case PG_STEP_EXEC:
        if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ||
            st == PGRES_EMPTY_QUERY) {
            if (p->xstmt && p->xstmt->binary == 0 && PQnfields(r) > 0)
                p->xstmt->binary = keel__pg_binary_result_ok(r) ? 1 : -1;
            keel__pg_take(p, r);
            return 0;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            return keel__pg_refuse_copy(p, st, -1);
        }
        if (st != PGRES_PIPELINE_ABORTED) {
            int stale = pg_stale(p, r);
            if (stale)
                p->xretry = stale;
            if (!p->failed) {
                keel__pg_result_error(p, r, -1, &p->err);
                p->failed = 1;
            }
        }
        break;
    case PG_STEP_SYNC:
        break;
    }
    PQclear(r);
    return 0;
}

/*
 * Asks for single-row mode for a streamed statement once its execute heads the pipeline: libpq
 * takes the request only then, before the execute's first result has been parsed.
 */
static void pg_cached_single_row(pg_impl *p) {
    if (p->c->rows_cb && p->xstep < p->nxsteps && p->xsteps[p->xstep] == PG_STEP_EXEC)
        p->stream = PQsetSingleRowMode(p->pg);
}

int keel__pg_cached_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = keel__pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r && !p->xpipe) {
            int end = pg_cached_end(p);
            if (end != 0)
                return end;
            continue;
        }
        if (!r) {
            if (!p->xgot)
                return 0; /* nothing sent is pending yet */
            p->xgot = 0;
            p->xstep++;
            pg_cached_single_row(p);
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (++p->xstep < p->nxsteps) {
                pg_cached_single_row(p);
                continue;
            }
            int end = pg_cached_end(p);
            if (end != 0)
                return end;
            continue;
        }
        p->xgot = 1;
        if (pg_cached_result(p, r) != 0)
            return -1;
    }
}
