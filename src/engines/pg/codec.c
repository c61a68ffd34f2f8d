/* src/engines/pg/codec.c - PostgreSQL parameters (keel values to wire form) and result values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    PG_OID_JSONB = 3802,
    PG_OID_INTERVAL = 1186,
    PG_OID_INET = 869,
    PG_OID_CIDR = 650,
    PG_OID_VOID = 2278
};

/* The built-in range types and the OIDs of their elements. */
static const struct {
    Oid range, elem;
} pg_ranges[] = {
    { 3904, PG_OID_INT4 }, { 3926, PG_OID_INT8 },      { 3906, PG_OID_NUMERIC },
    { 3912, PG_OID_DATE }, { 3908, PG_OID_TIMESTAMP }, { 3910, PG_OID_TIMESTAMPTZ },
};

/* The arrays of those range types, and their ranges. */
static const struct {
    Oid array, range;
} pg_range_arrays[] = {
    { 3905, 3904 }, { 3927, 3926 }, { 3907, 3906 }, { 3913, 3912 }, { 3909, 3908 }, { 3911, 3910 },
};

/*
 * The built-in array types (OIDs below 10000) whose elements keel has no type for (money,
 * timetz, xml, bit, point, record…): their values are arrays of the elements' text. Not
 * int2vector and oidvector (no braces), nor box[] (';' separates its elements). Sorted.
 */
static const Oid pg_text_arrays[] = {
    143,  210,  270,  271,  272,  273,  629,  719,  775,  791,  1002, 1006, 1008,
    1010, 1011, 1012, 1013, 1017, 1018, 1019, 1027, 1034, 1040, 1263, 1270, 1561,
    1563, 2201, 2207, 2208, 2209, 2210, 2211, 2287, 2949, 3221, 3643, 3644, 3645,
    3735, 3770, 4073, 4090, 4097, 4192, 5039, 6150, 6151, 6152, 6153, 6155, 6157,
};

/* Types from OID 10000 on are made by initdb, extensions and users: enums, composites, their
 * arrays, domains' arrays… The server's row description gives no element type, so a value of
 * such a type is read as an array of text when its text has an array's form. */
#define PG_FIRST_UNFIXED_OID 10000

static int pg_is_text_array(Oid oid) {
    size_t lo = 0, hi = sizeof pg_text_arrays / sizeof pg_text_arrays[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pg_text_arrays[mid] == oid)
            return 1;
        if (pg_text_arrays[mid] < oid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

Oid keel__pg_range_subtype(Oid oid) {
    for (size_t i = 0; i < sizeof pg_ranges / sizeof pg_ranges[0]; i++)
        if (pg_ranges[i].range == oid)
            return pg_ranges[i].elem;
    return 0;
}

Oid keel__pg_array_elem_oid(Oid oid) {
    uint32_t elem = keel__pgc_array_elem(oid, NULL);
    if (elem)
        return elem;
    for (size_t i = 0; i < sizeof pg_range_arrays / sizeof pg_range_arrays[0]; i++)
        if (pg_range_arrays[i].array == oid)
            return pg_range_arrays[i].range;
    return 0;
}

keel_type keel__pg_range_bound_type_of(Oid oid) {
    for (size_t i = 0; i < sizeof pg_range_arrays / sizeof pg_range_arrays[0]; i++)
        if (pg_range_arrays[i].array == oid)
            return keel__pg_elem_type_of(pg_range_arrays[i].range);
    return KEEL_TYPE_NULL;
}

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
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
        return v->u.str.len + 1;
    case KEEL_TYPE_INTERVAL: /* always binary */
        return 16;
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        return KEEL__TIME_TEXT_MAX;
    case KEEL_TYPE_UUID:
        return KEEL__UUID_TEXT_MAX;
    case KEEL_TYPE_ARRAY: /* encoded into p->parr */
        return 0;
    case KEEL_TYPE_DOCUMENT: /* BSON has no PostgreSQL type */
    case KEEL_TYPE_RANGE:    /* results only: a range parameter is its text */
        return SIZE_MAX;
    }
    return SIZE_MAX;
}

/* Checks the elements of an array parameter: no BSON, and text that libpq can carry. */
static const char *pg_array_check(const keel_value *a, int depth) {
    if (depth >= KEEL_ARRAY_MAX_DIMS)
        return "arrays have at most 6 dimensions";
    for (size_t i = 0; i < a->u.array.n; i++) {
        const keel_value *e = &a->u.array.items[i];
        const char *why = NULL;
        if (e->type == KEEL_TYPE_ARRAY)
            why = pg_array_check(e, depth + 1);
        else if (e->type == KEEL_TYPE_DOCUMENT)
            why = "an array element is a BSON document, which is not a PostgreSQL value";
        else if (pg_param_room(e) == SIZE_MAX)
            why = "an array element has an unknown value type";
        else if ((e->type == KEEL_TYPE_TEXT || e->type == KEEL_TYPE_NUMERIC ||
                  e->type == KEEL_TYPE_JSON || e->type == KEEL_TYPE_INET ||
                  e->type == KEEL_TYPE_CIDR) &&
                 e->u.str.len && (!e->u.str.ptr || memchr(e->u.str.ptr, '\0', e->u.str.len)))
            why = "an array element's text contains a NUL byte, which PostgreSQL cannot store";
        if (why)
            return why;
    }
    return NULL;
}

int keel__pg_int_oid_ok(Oid oid) {
    return oid == PG_OID_INT2 || oid == PG_OID_INT4 || oid == PG_OID_INT8 || oid == PG_OID_OID ||
           oid == PG_OID_NUMERIC || oid == PG_OID_FLOAT4 || oid == PG_OID_FLOAT8;
}

/* The type the server described for parameter i of the running statement, or 0. */
static Oid pg_described(const pg_impl *p, size_t i) {
    return p->pdesc && i < p->npdesc ? p->pdesc[i] : 0;
}

/* An int parameter out of the range of the smaller integer type the server gave it. */
static keel_status pg_int_range(pg_impl *p, const keel_value *v, size_t i, keel_error *err) {
    Oid oid = pg_described(p, i);
    int64_t lo = oid == PG_OID_INT2 ? INT16_MIN : oid == PG_OID_INT4 ? INT32_MIN : 0;
    int64_t hi = oid == PG_OID_INT2   ? INT16_MAX
                 : oid == PG_OID_INT4 ? INT32_MAX
                 : oid == PG_OID_OID  ? (int64_t)UINT32_MAX
                                      : INT64_MAX;
    if ((oid != PG_OID_INT2 && oid != PG_OID_INT4 && oid != PG_OID_OID) ||
        (v->u.i64 >= lo && v->u.i64 <= hi))
        return KEEL_OK;
    char what[192];
    snprintf(what, sizeof what,
             "%lld is out of range for type %s, the type PostgreSQL gives the parameter (a cast, "
             "$%zu::bigint, gives it a wider one)",
             (long long)v->u.i64,
             oid == PG_OID_INT2   ? "smallint"
             : oid == PG_OID_INT4 ? "integer"
                                  : "oid",
             i + 1);
    keel_status st = pg_param_error(p, err, KEEL_ERR_DATA, i, what);
    keel__error_set_sqlstate(err, "22003"); /* numeric_value_out_of_range, as the server says */
    return st;
}

keel_status keel__pg_param_check(pg_impl *p, const keel_value *v, size_t i, keel_error *err) {
    if (v->type == KEEL_TYPE_INT)
        return pg_int_range(p, v, i, err);
    if (pg_param_room(v) == SIZE_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              v->type == KEEL_TYPE_DOCUMENT
                                  ? "a BSON document is not a PostgreSQL value; pass JSON instead"
                              : v->type == KEEL_TYPE_RANGE
                                  ? "a range parameter goes as its text (\"[1,5)\")"
                                  : "unknown value type");
    int textlike = v->type == KEEL_TYPE_TEXT || v->type == KEEL_TYPE_NUMERIC ||
                   v->type == KEEL_TYPE_JSON || v->type == KEEL_TYPE_INET ||
                   v->type == KEEL_TYPE_CIDR;
    /* libpq takes lengths as int: checked before any byte is read, as a length that does not
     * fit cannot be the length of the text. */
    if (textlike && v->u.str.len > INT32_MAX - 1)
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "text longer than 2 GiB");
    if (textlike && v->u.str.len && (!v->u.str.ptr || memchr(v->u.str.ptr, '\0', v->u.str.len)))
        return pg_param_error(p, err, KEEL_ERR_DATA, i,
                              "text contains a NUL byte, which PostgreSQL cannot store");
    if (v->type == KEEL_TYPE_BYTES && v->u.str.len > INT32_MAX)
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "bytes longer than 2 GiB");
    if (v->type == KEEL_TYPE_ARRAY) {
        const char *why = pg_array_check(v, 0);
        if (why)
            return pg_param_error(p, err, KEEL_ERR_DATA, i, why);
    }
    return KEEL_OK;
}

Oid keel__pg_declared_oid(keel_type t) {
    switch (t) {
    case KEEL_TYPE_BOOL:
        return PG_OID_BOOL;
    case KEEL_TYPE_INT:
        return PG_OID_INT8;
    case KEEL_TYPE_FLOAT:
        return PG_OID_FLOAT8;
    case KEEL_TYPE_NUMERIC:
        return PG_OID_NUMERIC;
    case KEEL_TYPE_BYTES:
        return PG_OID_BYTEA;
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
    case KEEL_TYPE_INTERVAL:
        return PG_OID_INTERVAL;
    case KEEL_TYPE_INET:
        return PG_OID_INET;
    case KEEL_TYPE_CIDR:
        return PG_OID_CIDR;
    default:
        return 0;
    }
}

/* ---- arrays as parameters ---- */

static void pg_put32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t pg_get32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* Appends s as a quoted element of an array literal. 0, or -1 when out of memory. */
static int pg_literal_quoted(keel__buf *b, const char *s, size_t n) {
    if (keel__buf_putc(b, '"') != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (((s[i] == '"' || s[i] == '\\') && keel__buf_putc(b, '\\') != 0) ||
            keel__buf_putc(b, s[i]) != 0)
            return -1;
    return keel__buf_putc(b, '"');
}

/* Appends v as an array literal ({1,2,NULL}, {{"a"},{"b"}}), the text form of any array type.
 * 0, or -1 when out of memory. */
static int pg_array_literal(keel__buf *b, const keel_value *v) {
    char text[KEEL__TIME_TEXT_MAX > 40 ? KEEL__TIME_TEXT_MAX : 40];
    static const char hex[] = "0123456789abcdef";
    size_t n;
    switch (v->type) {
    case KEEL_TYPE_NULL:
        return keel__buf_puts(b, "NULL");
    case KEEL_TYPE_BOOL:
        return keel__buf_putc(b, v->u.boolean ? 't' : 'f');
    case KEEL_TYPE_INT:
        return keel__buf_printf(b, "%lld", (long long)v->u.i64);
    case KEEL_TYPE_FLOAT:
        n = keel__format_double(v->u.f64, text, sizeof text);
        return keel__buf_append(b, text, n);
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_TEXT:
    case KEEL_TYPE_JSON:
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
        return pg_literal_quoted(b, v->u.str.ptr ? v->u.str.ptr : "", v->u.str.len);
    case KEEL_TYPE_INTERVAL: {
        char iv[KEEL__PGC_INTERVAL_TEXT_MAX];
        return pg_literal_quoted(b, iv, keel__pgc_interval_text(v, iv));
    }
    case KEEL_TYPE_DATE:
    case KEEL_TYPE_TIME:
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        n = keel__pgc_time_text(v, text, 0);
        return pg_literal_quoted(b, text, n);
    case KEEL_TYPE_UUID:
        keel__format_uuid(v->u.uuid, text);
        return keel__buf_append(b, text, 36);
    case KEEL_TYPE_BYTES:
        /* "\\x0102": the bytea hex form, its backslash escaped for the array literal. */
        if (keel__buf_puts(b, "\"\\\\x") != 0)
            return -1;
        for (size_t i = 0; i < v->u.str.len; i++) {
            unsigned char c = (unsigned char)v->u.str.ptr[i];
            char h[2] = { hex[c >> 4], hex[c & 15] };
            if (keel__buf_append(b, h, 2) != 0)
                return -1;
        }
        return keel__buf_putc(b, '"');
    case KEEL_TYPE_ARRAY:
        if (keel__buf_putc(b, '{') != 0)
            return -1;
        for (size_t i = 0; i < v->u.array.n; i++)
            if ((i && keel__buf_putc(b, ',') != 0) ||
                pg_array_literal(b, &v->u.array.items[i]) != 0)
                return -1;
        return keel__buf_putc(b, '}');
    case KEEL_TYPE_DOCUMENT: /* refused by keel__pg_param_check */
    case KEEL_TYPE_RANGE:
        break;
    }
    return keel__buf_puts(b, "NULL");
}

/*
 * Encodes array parameter v (number i) for the server's type oid into p->parr, as a length
 * word and the bytes (text forms NUL-terminated after them); *fmt and *type say how it goes.
 */
static keel_status pg_encode_array(pg_impl *p, const keel_value *v, size_t i, Oid oid, int *fmt,
                                   Oid *type, keel_error *err) {
    keel__buf *b = &p->parr;
    size_t start = b->len;
    const char *ename = NULL;
    uint32_t elem = keel__pgc_array_elem(oid, &ename);
    *type = oid;
    if (elem) {
        char tname[64], why[KEEL_ERROR_MESSAGE_MAX];
        snprintf(tname, sizeof tname, "%s[]", ename);
        keel__pgc_col col = { KEEL__PGC_ARRAY, "", tname, keel__pgc_kind_of(elem, NULL), elem };
        int r = keel__pgc_array(
            b, &col, v, keel__pgc_tz_is_utc(PQparameterStatus(p->pg, "TimeZone")), why, sizeof why);
        if (r < 0)
            goto nomem;
        if (r > 0)
            return pg_param_error(p, err, KEEL_ERR_DATA, i, why);
        *fmt = 1;
        return KEEL_OK;
    }
    if (keel__buf_reserve(b, 4) != 0)
        goto nomem;
    b->len += 4;
    int r;
    if (oid == PG_OID_JSON || oid == PG_OID_JSONB) {
        r = keel__pgc_json(b, v);
        if (r == -2) {
            b->len = start;
            return pg_param_error(p, err, KEEL_ERR_DATA, i,
                                  "bytes or an interval in a list have no JSON form (the "
                                  "parameter is of type json)");
        }
        if (r == -3) {
            b->len = start;
            return pg_param_error(p, err, KEEL_ERR_DATA, i,
                                  "cannot serialise as JSON: Out of range float values are not "
                                  "JSON compliant");
        }
    } else {
        r = pg_array_literal(b, v);
    }
    if (r != 0 || keel__buf_putc(b, '\0') != 0)
        goto nomem;
    size_t len = b->len - start - 5;
    if (len > INT32_MAX - 1) {
        b->len = start;
        return pg_param_error(p, err, KEEL_ERR_DATA, i, "the array's text is longer than 2 GiB");
    }
    pg_put32(b->data + start, (uint32_t)len);
    *fmt = 0;
    return KEEL_OK;
nomem:
    b->len = start;
    return keel__error_set(err, KEEL_ERR_NOMEM, PG_ENGINE, keel__pg_dbname(p->c), "out of memory");
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
    case KEEL_TYPE_INTERVAL:
        return PG_OID_INTERVAL;
    default:
        return 0;
    }
}

/*
 * Writes int v in the form of type oid (smallint, integer, oid, real and double precision in
 * binary, numeric as text) into out, which has the room pg_param_room gives ints; sets *fmt
 * and *type. Returns the length.
 */
static size_t pg_encode_int(const keel_value *v, Oid oid, char *out, int *fmt, Oid *type) {
    int64_t x = v->u.i64;
    *fmt = 1;
    *type = oid;
    switch (oid) {
    case PG_OID_INT2:
        out[0] = (char)((uint16_t)x >> 8);
        out[1] = (char)(uint16_t)x;
        return 2;
    case PG_OID_INT4:
    case PG_OID_OID:
        pg_put32(out, (uint32_t)x);
        return 4;
    case PG_OID_FLOAT4: {
        float f = (float)x;
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        pg_put32(out, bits);
        return 4;
    }
    case PG_OID_FLOAT8: {
        double d = (double)x;
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        pg_put32(out, (uint32_t)(bits >> 32));
        pg_put32(out + 4, (uint32_t)bits);
        return 8;
    }
    case PG_OID_NUMERIC:
        *fmt = 0;
        return (size_t)snprintf(out, 24, "%lld", (long long)x);
    default: /* int8, the type keel declares (keel__pgc_param) */
        *type = PG_OID_INT8;
        return keel__pgc_param(v, out);
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
    size_t used = 0, wire = 0, arrays = 0;
    keel__buf_reset(&p->parr);
    for (size_t i = 0; i < n; i++) {
        char *s = out ? out + used : NULL;
        size_t len = 0;
        Oid type = 0;
        p->pfmts[i] = 0;
        if (v[i].type == KEEL_TYPE_INT && pg_described(p, i) != 0 &&
            pg_described(p, i) != PG_OID_INT8) {
            /* In the form of the type the server gave it (keel__pg_param_check checked the
             * range); numeric goes as text. */
            size_t ilen = pg_encode_int(&v[i], pg_described(p, i), s, &p->pfmts[i], &type);
            p->pvals[i] = s;
            p->plens[i] = (int)ilen;
            p->ptypes[i] = type;
            used += ilen + 1;
            wire += ilen;
            continue;
        }
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
        case KEEL_TYPE_ARRAY: {
            /* Its place in p->parr is set below, once every array is in (the buffer moves). */
            Oid oid = p->pdesc && p->npdesc == n ? p->pdesc[i] : 0;
            keel_status st = pg_encode_array(p, &v[i], i, oid, &p->pfmts[i], &p->ptypes[i], err);
            if (st != KEEL_OK)
                return st;
            p->pvals[i] = NULL;
            arrays++;
            continue;
        }
        case KEEL_TYPE_NULL:
        case KEEL_TYPE_DOCUMENT: /* rejected by keel__pg_param_check before encoding */
        case KEEL_TYPE_RANGE:
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
        case KEEL_TYPE_INTERVAL:
            /* Always in binary (keel__pgc_param above takes every value of these types). */
            break;
        case KEEL_TYPE_INET:
        case KEEL_TYPE_CIDR:
            len = v[i].u.str.len;
            if (len)
                memcpy(s, v[i].u.str.ptr, len);
            s[len] = '\0';
            type = v[i].type == KEEL_TYPE_INET ? PG_OID_INET : PG_OID_CIDR;
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
    const char *a = p->parr.data;
    for (size_t i = 0; arrays && i < n; i++) {
        if (v[i].type != KEEL_TYPE_ARRAY)
            continue;
        size_t len = pg_get32(a);
        p->pvals[i] = a + 4;
        p->plens[i] = (int)len;
        a += 4 + len + (p->pfmts[i] == 0);
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
    case PG_OID_INTERVAL:
        return KEEL_TYPE_INTERVAL;
    case PG_OID_INET:
        return KEEL_TYPE_INET;
    case PG_OID_CIDR:
        return KEEL_TYPE_CIDR;
    case PG_OID_VOID: /* a void function's result (pg_sleep): None, as asyncpg gives */
        return KEEL_TYPE_NULL;
    default:
        /* Arrays of the types keel knows are arrays; text, varchar, char, name, and everything
         * keel has no type for (enums, inet, timetz, intervals, other arrays) arrive as their
         * text form. */
        if (keel__pgc_array_elem(oid, NULL))
            return KEEL_TYPE_ARRAY;
        for (size_t i = 0; i < sizeof pg_range_arrays / sizeof pg_range_arrays[0]; i++)
            if (pg_range_arrays[i].array == oid)
                return KEEL_TYPE_ARRAY;
        for (size_t i = 0; i < sizeof pg_ranges / sizeof pg_ranges[0]; i++)
            if (pg_ranges[i].range == oid)
                return KEEL_TYPE_RANGE;
        if (pg_is_text_array(oid))
            return KEEL_TYPE_ARRAY;
        return KEEL_TYPE_TEXT;
    }
}

keel_type keel__pg_elem_type_of(Oid oid) {
    uint32_t elem = keel__pgc_array_elem(oid, NULL);
    if (elem)
        return keel__pg_type_of(elem);
    for (size_t i = 0; i < sizeof pg_ranges / sizeof pg_ranges[0]; i++)
        if (pg_ranges[i].range == oid)
            return keel__pg_type_of(pg_ranges[i].elem);
    for (size_t i = 0; i < sizeof pg_range_arrays / sizeof pg_range_arrays[0]; i++)
        if (pg_range_arrays[i].array == oid)
            return KEEL_TYPE_RANGE;
    if (pg_is_text_array(oid) || oid >= PG_FIRST_UNFIXED_OID)
        return KEEL_TYPE_TEXT;
    return KEEL_TYPE_NULL;
}

/* One bound of a range's text at s[*i] (quoted, unquoted, or empty for unbounded) up to the
 * ',' or closing bracket, into *v. 0, -1 malformed, -2 out of memory. */
static int pg_range_bound(keel_result *res, keel_type et, const char *s, size_t n, size_t *i,
                          keel__buf *tmp, keel_value *v) {
    keel__buf_reset(tmp);
    int any = 0;
    while (*i < n && s[*i] != ',' && s[*i] != ')' && s[*i] != ']') {
        char c = s[*i];
        if (c == '"') {
            for ((*i)++; *i < n && s[*i] != '"'; (*i)++) {
                if (s[*i] == '\\' && ++(*i) >= n)
                    return -1;
                if (keel__buf_putc(tmp, s[*i]) != 0)
                    return -2;
            }
            if (*i >= n)
                return -1;
            (*i)++;
            any = 1;
            continue;
        }
        if (c == '\\' && ++(*i) >= n)
            return -1;
        if (keel__buf_putc(tmp, s[*i]) != 0)
            return -2;
        (*i)++;
        any = 1;
    }
    if (*i >= n)
        return -1;
    if (!any) {
        v->type = KEEL_TYPE_NULL; /* unbounded */
        return 0;
    }
    if (keel__buf_putc(tmp, '\0') != 0)
        return -2;
    return keel__pg_decode_value(res, et, tmp->data, tmp->len - 1, v) == 0 ? 0 : -2;
}

int keel__pg_decode_range(keel_result *res, keel_type et, const char *s, size_t n, keel_value *v) {
    if (n == 5 && memcmp(s, "empty", 5) == 0) {
        v->type = KEEL_TYPE_RANGE;
        v->u.range.bounds = NULL;
        v->u.range.flags = KEEL_RANGE_EMPTY;
        return 0;
    }
    keel__buf tmp = { 0 };
    keel_value *b = (keel_value *)(void *)keel__result_alloc(res, 2 * sizeof *b);
    if (!b)
        return -1;
    memset(b, 0, 2 * sizeof *b);
    size_t i = 1;
    int rc = -1;
    unsigned flags = 0;
    if (n >= 3 && (s[0] == '[' || s[0] == '(') && (s[n - 1] == ']' || s[n - 1] == ')')) {
        flags =
            (s[0] == '[' ? KEEL_RANGE_LOWER_INC : 0) | (s[n - 1] == ']' ? KEEL_RANGE_UPPER_INC : 0);
        rc = pg_range_bound(res, et, s, n, &i, &tmp, &b[0]);
        if (rc == 0 && (i >= n || s[i] != ','))
            rc = -1;
        if (rc == 0) {
            i++;
            rc = pg_range_bound(res, et, s, n, &i, &tmp, &b[1]);
        }
        if (rc == 0 && i != n - 1)
            rc = -1;
    }
    keel__buf_free(&tmp);
    if (rc == -2)
        return -1;
    if (rc == -1)
        return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
    v->type = KEEL_TYPE_RANGE;
    v->u.range.bounds = b;
    v->u.range.flags = flags;
    return 0;
}

/* ---- arrays in results ---- */

typedef struct pg_arr_parse {
    keel_result *res;
    keel_type et;
    keel_type bt; /* the bounds' type, when the elements are ranges */
    const char *s;
    size_t n, i;
    keel__buf tmp; /* the element at hand, unescaped and NUL-terminated */
} pg_arr_parse;

static void pg_arr_space(pg_arr_parse *ps) {
    while (ps->i < ps->n && (ps->s[ps->i] == ' ' || ps->s[ps->i] == '\t' || ps->s[ps->i] == '\n' ||
                             ps->s[ps->i] == '\r'))
        ps->i++;
}

/* One element (quoted or not) into *v. 0, -1 malformed, -2 out of memory. */
static int pg_arr_elem(pg_arr_parse *ps, keel_value *v) {
    const char *s = ps->s;
    keel__buf_reset(&ps->tmp);
    int quoted = s[ps->i] == '"', escaped = 0;
    if (quoted)
        ps->i++;
    size_t keep = 0; /* unquoted: the length up to the last character that is not a space */
    for (;;) {
        if (ps->i >= ps->n)
            return -1;
        char c = s[ps->i];
        if (quoted ? c == '"' : (c == ',' || c == '}'))
            break;
        if (!quoted && (c == '{' || c == '"'))
            return -1;
        if (c == '\\') {
            if (++ps->i >= ps->n)
                return -1;
            c = s[ps->i];
            escaped = 1;
        }
        if (keel__buf_putc(&ps->tmp, c) != 0)
            return -2;
        if (quoted || escaped || (c != ' ' && c != '\t' && c != '\n' && c != '\r'))
            keep = ps->tmp.len;
        ps->i++;
    }
    if (quoted)
        ps->i++;
    else
        ps->tmp.len = keep;
    if (keel__buf_putc(&ps->tmp, '\0') != 0)
        return -2;
    size_t len = ps->tmp.len - 1;
    if (!quoted && !escaped && len == 4 && strncasecmp(ps->tmp.data, "NULL", 4) == 0) {
        v->type = KEEL_TYPE_NULL;
        return 0;
    }
    if (!quoted && len == 0)
        return -1;
    int r = ps->et == KEEL_TYPE_RANGE
                ? keel__pg_decode_range(ps->res, ps->bt, ps->tmp.data, len, v)
                : keel__pg_decode_value(ps->res, ps->et, ps->tmp.data, len, v);
    return r == 0 ? 0 : -2;
}

/* An array "{…}" at ps->i into *out (KEEL_TYPE_ARRAY). 0, -1 malformed, -2 out of memory. */
static int pg_arr_level(pg_arr_parse *ps, int depth, keel_value *out) {
    if (depth >= KEEL_ARRAY_MAX_DIMS || ps->i >= ps->n || ps->s[ps->i] != '{')
        return -1;
    ps->i++;
    keel_value *items = NULL, one[8];
    size_t count = 0, cap = 8;
    int rc = 0;
    items = one;
    pg_arr_space(ps);
    if (ps->i < ps->n && ps->s[ps->i] == '}') {
        ps->i++;
    } else {
        for (;;) {
            pg_arr_space(ps);
            if (ps->i >= ps->n) {
                rc = -1;
                break;
            }
            if (count == cap) {
                keel_value *more = malloc(cap * 2 * sizeof *more);
                if (!more) {
                    rc = -2;
                    break;
                }
                memcpy(more, items, count * sizeof *more);
                if (items != one)
                    free(items);
                items = more;
                cap *= 2;
            }
            keel_value *v = &items[count];
            memset(v, 0, sizeof *v);
            rc = ps->s[ps->i] == '{' ? pg_arr_level(ps, depth + 1, v) : pg_arr_elem(ps, v);
            if (rc != 0)
                break;
            count++;
            pg_arr_space(ps);
            if (ps->i < ps->n && ps->s[ps->i] == ',') {
                ps->i++;
                continue;
            }
            if (ps->i < ps->n && ps->s[ps->i] == '}') {
                ps->i++;
                break;
            }
            rc = -1;
            break;
        }
    }
    keel_value *kept = NULL;
    if (rc == 0 && count) {
        kept = (keel_value *)(void *)keel__result_alloc(ps->res, count * sizeof *kept);
        if (!kept)
            rc = -2;
        else
            memcpy(kept, items, count * sizeof *kept);
    }
    if (items != one)
        free(items);
    if (rc == 0) {
        out->type = KEEL_TYPE_ARRAY;
        out->u.array.items = kept;
        out->u.array.n = count;
    }
    return rc;
}

int keel__pg_decode_array(keel_result *res, keel_type et, keel_type bt, const char *s, size_t n,
                          keel_value *v) {
    pg_arr_parse ps = { res, et, bt, s, n, 0, { 0 } };
    /* Bounds other than 1 come first: "[0:2]={1,2,3}" (the elements are what keel keeps). */
    if (n && s[0] == '[') {
        const char *eq = memchr(s, '=', n);
        ps.i = eq ? (size_t)(eq - s) + 1 : n;
    }
    int rc = pg_arr_level(&ps, 0, v);
    if (rc == 0 && ps.i != n)
        rc = -1;
    keel__buf_free(&ps.tmp);
    if (rc == -2)
        return -1;
    if (rc == -1) /* not the form keel reads: the text as it came */
        return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
    return 0;
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

/*
 * The text of an interval in the default IntervalStyle (postgres): "1 year 2 mons -3 days
 * 04:05:06.789", "-00:00:01", "00:00:00". 0, or -1 for another form.
 */
static int pg_parse_interval(const char *s, size_t n, keel_value *v) {
    int64_t months = 0, days = 0, micros = 0;
    size_t i = 0;
    int any = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i == n)
            break;
        int neg = 0;
        if (s[i] == '+' || s[i] == '-')
            neg = s[i++] == '-';
        int64_t num = 0;
        size_t d0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (num > INT64_C(100000000000000))
                return -1;
            num = num * 10 + (s[i++] - '0');
        }
        if (i == d0)
            return -1;
        if (i < n && s[i] == ':') { /* the time: H:MM[:SS[.ffffff]] */
            int64_t mins = 0, secs = 0, frac = 0;
            size_t k = ++i;
            while (i < n && s[i] >= '0' && s[i] <= '9' && i - k < 2)
                mins = mins * 10 + (s[i++] - '0');
            if (i - k != 2)
                return -1;
            if (i < n && s[i] == ':') {
                k = ++i;
                while (i < n && s[i] >= '0' && s[i] <= '9' && i - k < 2)
                    secs = secs * 10 + (s[i++] - '0');
                if (i - k != 2)
                    return -1;
                if (i < n && s[i] == '.') {
                    k = ++i;
                    int64_t scale = 100000;
                    while (i < n && s[i] >= '0' && s[i] <= '9') {
                        if (scale) /* digits beyond microseconds are dropped */
                            frac += (s[i] - '0') * scale;
                        scale /= 10;
                        i++;
                    }
                    if (i == k)
                        return -1;
                }
            }
            if (num > INT64_C(2562047788))
                return -1; /* beyond what an interval's microseconds hold */
            int64_t t = ((num * 60 + mins) * 60 + secs) * 1000000 + frac;
            micros += neg ? -t : t;
            any = 1;
            continue;
        }
        while (i < n && s[i] == ' ')
            i++;
        size_t u0 = i;
        while (i < n && s[i] >= 'a' && s[i] <= 'z')
            i++;
        size_t ul = i - u0;
        int64_t val = neg ? -num : num;
        if ((ul == 4 || ul == 5) && strncmp(s + u0, "year", 4) == 0)
            months += val * 12;
        else if ((ul == 3 || ul == 4) && strncmp(s + u0, "mon", 3) == 0)
            months += val;
        else if ((ul == 3 || ul == 4) && strncmp(s + u0, "day", 3) == 0)
            days += val;
        else
            return -1;
        any = 1;
    }
    if (!any || months > INT32_MAX || months < INT32_MIN || days > INT32_MAX || days < INT32_MIN)
        return -1;
    *v = keel_interval((int32_t)months, (int32_t)days, micros);
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
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
        return keel__result_set_text(res, v, t, s, n);
    case KEEL_TYPE_INTERVAL:
        if (pg_parse_interval(s, n, v) == 0)
            return 0;
        break;
    default:
        break;
    }
    return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
}
