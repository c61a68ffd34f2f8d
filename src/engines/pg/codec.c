/* src/engines/pg/codec.c - PostgreSQL parameters (keel values to wire form) and result values. */
#include <stdlib.h>
#include <string.h>

#include "core/numtext.h"
#include "core/timeconv.h"
#include "engines/pg/binary.h"
#include "engines/pg/codec.h"

/* Type OIDs of the built-in types keel maps to its own value types. */
enum {
    PG_OID_BOOL = 16,
    PG_OID_BYTEA = 17,
    PG_OID_INT8 = 20,
    PG_OID_INT2 = 21,
    PG_OID_INT4 = 23,
    PG_OID_OID = 26,
    PG_OID_JSON = 114,
    PG_OID_FLOAT4 = 700,
    PG_OID_FLOAT8 = 701,
    PG_OID_DATE = 1082,
    PG_OID_TIME = 1083,
    PG_OID_TIMESTAMP = 1114,
    PG_OID_TIMESTAMPTZ = 1184,
    PG_OID_NUMERIC = 1700,
    PG_OID_UUID = 2950,
    PG_OID_JSONB = 3802
};

/* ---------------------------------------------------------------------------------------- */
/* Parameters                                                                               */

static keel_status pg_param_error(pg_impl *p, keel_error *err, keel_status code, size_t i,
                                  const char *what) {
    return keel__error_set(err, code, PG_ENGINE, keel__pg_dbname(p->c), "parameter $%zu: %s", i + 1,
                           what);
}

/* Bytes of text a parameter needs in the encode buffer, or SIZE_MAX for an invalid value. */
static size_t pg_param_room(const keel_value *v) {
    switch (v->type) {
    case KEEL_TYPE_NULL:
    case KEEL_TYPE_BYTES:
        return 0;
    case KEEL_TYPE_BOOL:
        return 2;
    case KEEL_TYPE_INT:
        return 24;
    case KEEL_TYPE_FLOAT:
        return 32;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_JSON:
        return v->u.str.len + 1;
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        return KEEL__TIME_TEXT_MAX;
    case KEEL_TYPE_UUID:
        return KEEL__UUID_TEXT_MAX;
    case KEEL_TYPE_DOCUMENT: /* BSON has no PostgreSQL type */
        return SIZE_MAX;
    }
    return SIZE_MAX;
}

keel_status keel__pg_param_check(pg_impl *p, const keel_value *v, size_t i, keel_error *err) {
    if (pg_param_room(v) == SIZE_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              v->type == KEEL_TYPE_DOCUMENT
                                  ? "a BSON document is not a PostgreSQL value; pass JSON instead"
                                  : "unknown value type");
    int textlike =
        v->type == KEEL_TYPE_TEXT || v->type == KEEL_TYPE_NUMERIC || v->type == KEEL_TYPE_JSON;
    /* libpq takes lengths as int: checked before any byte is read, as a length that does not
     * fit cannot be the length of the text. */
    if (textlike && v->u.str.len > INT32_MAX - 1)
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "text longer than 2 GiB");
    if (textlike && v->u.str.len && (!v->u.str.ptr || memchr(v->u.str.ptr, '\0', v->u.str.len)))
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              "text contains a NUL byte, which PostgreSQL cannot store");
    if (v->type == KEEL_TYPE_BYTES && v->u.str.len > INT32_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "bytes longer than 2 GiB");
    return KEEL_OK;
}

static int pg_param_grow(pg_impl *p, size_t n) {
    if (n <= p->pcap)
        return 0;
    const char **vals = realloc(p->pvals, n * sizeof *vals);
    if (vals)
        p->pvals = vals;
    int *lens = realloc(p->plens, n * sizeof *lens);
    if (lens)
        p->plens = lens;
    int *fmts = realloc(p->pfmts, n * sizeof *fmts);
    if (fmts)
        p->pfmts = fmts;
    Oid *types = realloc(p->ptypes, n * sizeof *types);
    if (types)
        p->ptypes = types;
    if (!vals || !lens || !fmts || !types)
        return -1;
    p->pcap = n;
    return 0;
}

/* The parameter type keel declares for a value sent in binary (see keel__pgc_param). */
static Oid pg_param_oid(keel_type t) {
    switch (t) {
    case KEEL_TYPE_BOOL:
        return PG_OID_BOOL;
    case KEEL_TYPE_INT:
        return PG_OID_INT8;
    case KEEL_TYPE_FLOAT:
        return PG_OID_FLOAT8;
    case KEEL_TYPE_DATE:
        return PG_OID_DATE;
    case KEEL_TYPE_TIME:
        return PG_OID_TIME;
    case KEEL_TYPE_TIMESTAMP:
        return PG_OID_TIMESTAMP;
    case KEEL_TYPE_TIMESTAMPTZ:
        return PG_OID_TIMESTAMPTZ;
    case KEEL_TYPE_UUID:
        return PG_OID_UUID;
    default:
        return 0;
    }
}

keel_status keel__pg_encode(pg_impl *p, const keel_value *v, size_t n, keel_error *err) {
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += pg_param_room(&v[i]);
    keel__buf_reset(&p->ptext);
    if (pg_param_grow(p, n) != 0 || (need && keel__buf_reserve(&p->ptext, need) != 0))
        return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c),
                               "out of memory");
    char *out = p->ptext.data;
    size_t used = 0, wire = 0;
    for (size_t i = 0; i < n; i++) {
        char *s = out ? out + used : NULL;
        size_t len = 0;
        Oid type = 0;
        p->pfmts[i] = 0;
        /* The room reserved for the text form holds the binary form too. */
        size_t blen = s ? keel__pgc_param(&v[i], s) : 0;
        if (blen) {
            p->pvals[i] = s;
            p->plens[i] = (int)blen;
            p->pfmts[i] = 1;
            p->ptypes[i] = pg_param_oid(v[i].type);
            used += blen;
            wire += blen;
            continue;
        }
        switch (v[i].type) {
        case KEEL_TYPE_NULL:
        case KEEL_TYPE_DOCUMENT: /* rejected by keel__pg_param_check before encoding */
            p->pvals[i] = NULL;
            p->plens[i] = 0;
            p->ptypes[i] = 0;
            continue;
        case KEEL_TYPE_BYTES:
            p->pvals[i] = v[i].u.str.ptr ? v[i].u.str.ptr : "";
            p->plens[i] = (int)v[i].u.str.len;
            p->pfmts[i] = 1;
            p->ptypes[i] = PG_OID_BYTEA;
            wire += v[i].u.str.len;
            continue;
        case KEEL_TYPE_BOOL:
        case KEEL_TYPE_INT:
        case KEEL_TYPE_FLOAT:
        case KEEL_TYPE_TIME:
        case KEEL_TYPE_UUID:
            /* Always in binary (keel__pgc_param above takes every value of these types). */
            break;
        case KEEL_TYPE_NUMERIC:
        case KEEL_TYPE_TEXT:
        case KEEL_TYPE_JSON:
            /* Text and JSON go as "unknown" so the server takes the type from the context
             * (an int column, json or jsonb); libpq needs them NUL-terminated. */
            len = v[i].u.str.len;
            if (len)
                memcpy(s, v[i].u.str.ptr, len);
            s[len] = '\0';
            type = v[i].type == KEEL_TYPE_NUMERIC ? PG_OID_NUMERIC : 0;
            break;
        case KEEL_TYPE_DATE:
            len = keel__format_date(v[i].u.date, s);
            type = PG_OID_DATE;
            break;
        case KEEL_TYPE_TIMESTAMP:
            len = keel__format_timestamp(v[i].u.micros, s);
            type = PG_OID_TIMESTAMP;
            break;
        case KEEL_TYPE_TIMESTAMPTZ:
            len = keel__format_timestamptz(v[i].u.micros, s);
            type = PG_OID_TIMESTAMPTZ;
            break;
        }
        p->pvals[i] = s;
        p->plens[i] = (int)len;
        p->ptypes[i] = type;
        used += len + 1;
        wire += len;
    }
    p->pbytes = wire;
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                  */
keel_type keel__pg_type_of(Oid oid) {
    switch (oid) {
    case PG_OID_BOOL:
        return KEEL_TYPE_BOOL;
    case PG_OID_INT2:
    case PG_OID_INT4:
    case PG_OID_INT8:
    case PG_OID_OID:
        return KEEL_TYPE_INT;
    case PG_OID_FLOAT4:
    case PG_OID_FLOAT8:
        return KEEL_TYPE_FLOAT;
    case PG_OID_NUMERIC:
        return KEEL_TYPE_NUMERIC;
    case PG_OID_BYTEA:
        return KEEL_TYPE_BYTES;
    case PG_OID_DATE:
        return KEEL_TYPE_DATE;
    case PG_OID_TIME:
        return KEEL_TYPE_TIME;
    case PG_OID_TIMESTAMP:
        return KEEL_TYPE_TIMESTAMP;
    case PG_OID_TIMESTAMPTZ:
        return KEEL_TYPE_TIMESTAMPTZ;
    case PG_OID_UUID:
        return KEEL_TYPE_UUID;
    case PG_OID_JSON:
    case PG_OID_JSONB:
        return KEEL_TYPE_JSON;
    default:
        /* text, varchar, char, name, and everything keel has no type for (enums, inet, timetz,
         * intervals, arrays) arrive as their text form. */
        return KEEL_TYPE_TEXT;
    }
}

static int pg_hex(unsigned char ch) {
    if ((unsigned)(ch - '0') < 10u)
        return ch - '0';
    ch |= 0x20;
    if ((unsigned)(ch - 'a') < 6u)
        return ch - 'a' + 10;
    return -1;
}

/* Decodes bytea text (hex "\x…", or the older escape format). 0, -1 malformed, -2 no memory. */
static int pg_decode_bytea(keel_result *res, const char *s, size_t n, keel_value *v) {
    unsigned char *out;
    size_t m = 0;
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((n - 2) % 2)
            return -1;
        m = (n - 2) / 2;
        out = (unsigned char *)keel__result_alloc(res, m);
        if (!out)
            return -2;
        const unsigned char *h = (const unsigned char *)s + 2;
        for (size_t i = 0; i < m; i++) {
            int hi = pg_hex(h[2 * i]), lo = pg_hex(h[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            out[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < n; m++) {
            if (s[i] != '\\')
                i++;
            else if (i + 1 < n && s[i + 1] == '\\')
                i += 2;
            else if (i + 4 <= n)
                i += 4;
            else
                return -1;
        }
        out = (unsigned char *)keel__result_alloc(res, m);
        if (!out)
            return -2;
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            if (s[i] != '\\') {
                out[o++] = (unsigned char)s[i++];
            } else if (s[i + 1] == '\\') {
                out[o++] = '\\';
                i += 2;
            } else {
                unsigned a = (unsigned)s[i + 1] - '0', b = (unsigned)s[i + 2] - '0',
                         c = (unsigned)s[i + 3] - '0';
                if (a > 3 || b > 7 || c > 7)
                    return -1;
                out[o++] = (unsigned char)(a << 6 | b << 3 | c);
                i += 4;
            }
        }
    }
    v->type = KEEL_TYPE_BYTES;
    v->u.str.ptr = (const char *)out;
    v->u.str.len = m;
    return 0;
}

int keel__pg_decode_value(keel_result *res, keel_type t, const char *s, size_t n, keel_value *v) {
    switch (t) {
    case KEEL_TYPE_BOOL:
        v->type = KEEL_TYPE_BOOL;
        v->u.boolean = s[0] == 't';
        return 0;
    case KEEL_TYPE_INT:
        if (keel__parse_int64(s, n, &v->u.i64) == 0) {
            v->type = KEEL_TYPE_INT;
            return 0;
        }
        break;
    case KEEL_TYPE_FLOAT:
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = keel__strtod(s, NULL);
        return 0;
    case KEEL_TYPE_BYTES: {
        int r = pg_decode_bytea(res, s, n, v);
        if (r != -1)
            return r == 0 ? 0 : -1;
        break;
    }
    case KEEL_TYPE_DATE:
        if (keel__parse_date(s, n, &v->u.date) == 0) {
            v->type = KEEL_TYPE_DATE;
            return 0;
        }
        break;
    case KEEL_TYPE_TIME:
        if (keel__parse_time(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIME;
            return 0;
        }
        break;
    case KEEL_TYPE_TIMESTAMP:
        if (keel__parse_timestamp(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMP;
            return 0;
        }
        break;
    case KEEL_TYPE_TIMESTAMPTZ:
        if (keel__parse_timestamptz(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMPTZ;
            return 0;
        }
        break;
    case KEEL_TYPE_UUID:
        if (keel__parse_uuid(s, n, v->u.uuid) == 0) {
            v->type = KEEL_TYPE_UUID;
            return 0;
        }
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_JSON:
        return keel__result_set_text(res, v, t, s, n);
    default:
        break;
    }
    return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
}
