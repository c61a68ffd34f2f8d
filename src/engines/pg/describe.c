/* src/engines/pg/describe.c - describing a PostgreSQL statement without running it (keel_conn_prepare). */
#include <stdio.h>
#include <string.h>

#include "core/result_int.h"
#include "engines/pg/codec.h"
#include "engines/pg/describe.h"
#include "engines/pg/exec.h"

/* Built-in types by OID (pg_type.dat): the names format_type gives them, arrays included. */
static const struct {
    Oid oid;
    const char *name;
} pg_names[] = {
    { 16, "bool" },        { 17, "bytea" },         { 18, "char" },
    { 19, "name" },        { 20, "int8" },          { 21, "int2" },
    { 23, "int4" },        { 25, "text" },          { 26, "oid" },
    { 114, "json" },       { 142, "xml" },          { 600, "point" },
    { 650, "cidr" },       { 700, "float4" },       { 701, "float8" },
    { 705, "unknown" },    { 774, "macaddr8" },     { 790, "money" },
    { 829, "macaddr" },    { 869, "inet" },         { 1000, "bool[]" },
    { 1001, "bytea[]" },   { 1005, "int2[]" },      { 1007, "int4[]" },
    { 1009, "text[]" },    { 1014, "bpchar[]" },    { 1015, "varchar[]" },
    { 1016, "int8[]" },    { 1021, "float4[]" },    { 1022, "float8[]" },
    { 1042, "bpchar" },    { 1043, "varchar" },     { 1082, "date" },
    { 1083, "time" },      { 1114, "timestamp" },   { 1115, "timestamp[]" },
    { 1182, "date[]" },    { 1184, "timestamptz" }, { 1185, "timestamptz[]" },
    { 1186, "interval" },  { 1231, "numeric[]" },   { 1266, "timetz" },
    { 1560, "bit" },       { 1562, "varbit" },      { 1700, "numeric" },
    { 2249, "record" },    { 2278, "void" },        { 2950, "uuid" },
    { 2951, "uuid[]" },    { 3614, "tsvector" },    { 3802, "jsonb" },
    { 3807, "jsonb[]" },   { 199, "json[]" },       { 3904, "int4range" },
    { 3926, "int8range" }, { 3910, "tstzrange" },   { 3912, "daterange" },
};

const char *keel__pg_type_name(Oid oid) {
    for (size_t i = 0; i < sizeof pg_names / sizeof pg_names[0]; i++)
        if (pg_names[i].oid == oid)
            return pg_names[i].name;
    return NULL;
}

/* The name of oid: a built-in's, else its number (an enum, a domain, a type of an extension). */
static const char *pg_name_of(Oid oid, char *buf, size_t size) {
    const char *name = keel__pg_type_name(oid);
    if (name)
        return name;
    snprintf(buf, size, "%u", (unsigned)oid);
    return buf;
}

/* The description in the describe's result r, as p->res. 0, or -1 when out of memory. */
static int pg_describe_take(pg_impl *p, const PGresult *r) {
    size_t ncols = (size_t)PQnfields(r), nparams = (size_t)PQnparams(r);
    keel_result *res = keel__result_new(ncols);
    if (!res)
        return -1;
    char buf[16];
    for (size_t i = 0; i < ncols; i++) {
        const char *col = PQfname(r, (int)i);
        Oid oid = PQftype(r, (int)i);
        const char *name = pg_name_of(oid, buf, sizeof buf);
        if (keel__result_set_column(res, i, col, strlen(col), keel__pg_type_of(oid)) != 0 ||
            keel__result_set_type_name(res, i, name, strlen(name)) != 0)
            goto nomem;
    }
    if (keel__result_set_nparams(res, nparams) != 0)
        goto nomem;
    for (size_t i = 0; i < nparams; i++) {
        Oid oid = PQparamtype(r, (int)i);
        const char *name = pg_name_of(oid, buf, sizeof buf);
        if (keel__result_set_param(res, i, keel__pg_type_of(oid), name, strlen(name)) != 0)
            goto nomem;
    }
    keel_result_free(p->res);
    p->res = res;
    return 0;
nomem:
    keel_result_free(res);
    return -1;
}

int keel__pg_describe_collect(pg_impl *p) {
    for (;;) {
        PGresult *r;
        int got = keel__pg_next_result(p, &r);
        if (got <= 0)
            return got;
        if (!r) {
            if (!p->xgot)
                return 0; /* nothing sent is pending yet */
            p->xgot = 0;
            p->xstep++;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return PQexitPipelineMode(p->pg) == 1 ? 1 : -1;
        }
        p->xgot = 1;
        if (st == PGRES_COMMAND_OK) {
            /* The parse's completion (step 0), then the description (step 1). */
            if (p->xstep == 1 && !p->failed && pg_describe_take(p, r) != 0)
                keel__pg_fail_op(p, KEEL_ERR_NOMEM, "out of memory describing a statement");
        } else if (st != PGRES_PIPELINE_ABORTED && !p->failed) {
            keel__pg_result_error(p, r, -1, &p->err);
            p->failed = 1;
        }
        PQclear(r);
    }
}

keel_status keel__pg_describe(keel_conn *c, const keel__stmt *stmt, keel_error *err) {
    pg_impl *p = c->impl;
    keel_status st = keel__pg_check_idle(p, c, err);
    if (st != KEEL_OK)
        return st;
    if (stmt->nparams > 65535)
        return keel__error_set(err, KEEL_ERR_PARAMETERS, PG_ENGINE, keel__pg_dbname(c),
                               "PostgreSQL accepts at most 65535 parameters, the statement uses "
                               "%zu",
                               stmt->nparams);
    keel__pg_op_reset(p);
    p->xgot = 0;
    p->xstep = 0;
    /* The core hands its own statement buffer, which is NUL-terminated. */
    if (!PQenterPipelineMode(p->pg))
        return keel__pg_send_failed(p, 0, err);
    p->phase = PG_DESCRIBE;
    if (!PQsendPrepare(p->pg, "", stmt->sql, 0, NULL) || !PQsendDescribePrepared(p->pg, "") ||
        !PQpipelineSync(p->pg))
        return keel__pg_send_failed(p, 1, err);
    if (keel__pg_after_send(p) != 0)
        return keel__pg_send_failed(p, 1, err);
    return KEEL_OK;
}
