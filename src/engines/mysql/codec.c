/* src/engines/mysql/codec.c - MySQL result values, and keel values bound as parameters. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "core/numtext.h"
#include "core/timeconv.h"
#include "core/value_int.h"
#include "engines/mysql/codec.h"

/* MySQL's TIME range is ±838:59:59.999999. */
#define MY_TIME_MAX_US (INT64_C(838) * 3600000000 + INT64_C(59) * 60000000 + INT64_C(59999999))
#define MY_US_PER_DAY INT64_C(86400000000)

static int64_t my_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
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

/* A TIME value that is no time of day, as an INTERVAL of micros. */
static void my_duration(keel_value *v, int64_t micros) {
    v->type = KEEL_TYPE_INTERVAL;
    v->u.interval.months = 0;
    v->u.interval.days = 0;
    v->u.interval.micros = micros;
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
        /* keel's TIME is a time of day; the durations MySQL also stores (negative, or 24 hours
         * and more) are intervals (Python's timedelta). */
        if (!t->neg && t->day == 0 && t->hour < 24) {
            v->type = KEEL_TYPE_TIME;
            v->u.micros = tod;
            return 0;
        }
        my_duration(v, ((int64_t)t->day * 24 * 3600000000 + tod) * (t->neg ? -1 : 1));
        return 0;
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

/*
 * Decodes a value of the text protocol (s is NUL-terminated, as libmariadb leaves every field of
 * a row it read). Text-like values are copied into res, since the row is gone with the next one.
 * Returns 0, or -1 when out of memory.
 */
static int my_decode_text(keel_result *res, keel_type kind, const MYSQL_FIELD *f, const char *s,
                          size_t n, keel_value *v) {
    switch (kind) {
    case KEEL_TYPE_BOOL:
    case KEEL_TYPE_INT:
        if (keel__parse_int64(s, n, &v->u.i64) == 0) {
            if (kind == KEEL_TYPE_BOOL) {
                int64_t i = v->u.i64;
                v->u.boolean = i != 0;
            }
            v->type = kind;
            return 0;
        }
        /* BIGINT UNSIGNED above INT64_MAX */
        return keel__result_set_text(
            res, v, (f->flags & UNSIGNED_FLAG) ? KEEL_TYPE_NUMERIC : KEEL_TYPE_TEXT, s, n);
    case KEEL_TYPE_FLOAT:
        v->type = KEEL_TYPE_FLOAT;
        v->u.f64 = keel__strtod(s, NULL);
        return 0;
    case KEEL_TYPE_DATE:
        if (keel__parse_date(s, n, &v->u.date) == 0) {
            v->type = KEEL_TYPE_DATE;
            return 0;
        }
        break;
    case KEEL_TYPE_TIME:
        if (keel__parse_time(s, n, &v->u.micros) == 0 && v->u.micros < MY_US_PER_DAY) {
            v->type = KEEL_TYPE_TIME;
            return 0;
        }
        int64_t us;
        if (keel__parse_duration(s, n, &us) == 0) {
            my_duration(v, us);
            return 0;
        }
        break;
    case KEEL_TYPE_TIMESTAMP:
        if (keel__parse_timestamp(s, n, &v->u.micros) == 0) {
            v->type = KEEL_TYPE_TIMESTAMP;
            return 0;
        }
        break;
    case KEEL_TYPE_NUMERIC:
    case KEEL_TYPE_BYTES:
    case KEEL_TYPE_JSON:
        return keel__result_set_text(res, v, kind, s, n);
    default:
        break;
    }
    return keel__result_set_text(res, v, KEEL_TYPE_TEXT, s, n);
}

keel_status keel__my_nomem(my_impl *p, keel_error *err) {
    return keel__error_set(err, KEEL_ERR_NOMEM, MY_ENGINE, keel__my_dbname(p->c), "out of memory");
}

keel_status keel__my_rows_begin_text(my_impl *p, MYSQL_RES *r, keel_error *err) {
    unsigned ncols = mysql_num_fields(r);
    MYSQL_FIELD *f = mysql_fetch_fields(r);
    if (ncols > p->dkcap) {
        keel_type *k = realloc(p->dkinds, ncols * sizeof *k);
        if (!k)
            return keel__my_nomem(p, err);
        p->dkinds = k;
        p->dkcap = ncols;
    }
    keel_result *res = keel__result_new(ncols);
    if (!res)
        return keel__my_nomem(p, err);
    for (unsigned i = 0; i < ncols; i++) {
        p->dkinds[i] = my_field_kind(&f[i]);
        if (keel__result_set_column(res, i, f[i].name, f[i].name_length, p->dkinds[i]) != 0) {
            keel_result_free(res);
            return keel__my_nomem(p, err);
        }
    }
    keel__result_set_affected(res, -1);
    p->dres = res;
    return KEEL_OK;
}

int keel__my_row_text(my_impl *p, MYSQL_ROW row) {
    MYSQL_RES *r = p->dsrc;
    unsigned ncols = mysql_num_fields(r);
    MYSQL_FIELD *f = mysql_fetch_fields(r);
    unsigned long *lens = mysql_fetch_lengths(r);
    keel_value *vals = keel__result_add_row(p->dres);
    if (!vals)
        return -1;
    for (unsigned i = 0; i < ncols; i++) {
        if (row[i] && p->dkinds[i] != KEEL_TYPE_NULL &&
            my_decode_text(p->dres, p->dkinds[i], &f[i], row[i], lens[i], &vals[i]) != 0)
            return -1;
    }
    return 0;
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
        /* Longer than the buffer: fetch this one again into one that fits (at least twice as
         * large, so a column of growing values is fetched again only a few times), and bind
         * that buffer from now on. The length is the server's: one that leaves no room for the
         * NUL cannot be a real value's. */
        if (col->len >= SIZE_MAX / 2)
            return -1;
        unsigned long want = col->len + 1 > 2 * col->cap ? col->len + 1 : 2 * col->cap;
        char *buf = realloc(col->buf, want);
        if (!buf)
            return -1;
        col->buf = buf;
        col->cap = want;
        my_bind_col(col, &p->rbinds[i]);
        if (mysql_stmt_fetch_column(st, &p->rbinds[i], i, 0) != 0 ||
            mysql_stmt_bind_result(st, p->rbinds) != 0)
            return -2;
    }
    return keel__result_set_text(res, v, col->kind, col->buf, col->len);
}

/*
 * The room a string column's buffer starts with when a result is read row by row, which gives
 * no longest value: a longer value is fetched again into a buffer that fits (my_fetch_col).
 */
#define MY_COLUMN_BUFFER 256

/* MySQL's name of a column's type, as information_schema spells its DATA_TYPE. */
static const char *my_type_name(const MYSQL_FIELD *f) {
    int binary = f->charsetnr == 63;
    switch (f->type) {
    case MYSQL_TYPE_TINY:
        return "tinyint";
    case MYSQL_TYPE_SHORT:
        return "smallint";
    case MYSQL_TYPE_INT24:
        return "mediumint";
    case MYSQL_TYPE_LONG:
        return "int";
    case MYSQL_TYPE_LONGLONG:
        return "bigint";
    case MYSQL_TYPE_YEAR:
        return "year";
    case MYSQL_TYPE_FLOAT:
        return "float";
    case MYSQL_TYPE_DOUBLE:
        return "double";
    case MYSQL_TYPE_DECIMAL:
    case MYSQL_TYPE_NEWDECIMAL:
        return "decimal";
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE:
        return "date";
    case MYSQL_TYPE_TIME:
        return "time";
    case MYSQL_TYPE_DATETIME:
        return "datetime";
    case MYSQL_TYPE_TIMESTAMP:
        return "timestamp";
    case MYSQL_TYPE_JSON:
        return "json";
    case MYSQL_TYPE_BIT:
        return "bit";
    case MYSQL_TYPE_GEOMETRY:
        return "geometry";
    case MYSQL_TYPE_NULL:
        return "null";
    case MYSQL_TYPE_ENUM:
        return "enum";
    case MYSQL_TYPE_SET:
        return "set";
    case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_VAR_STRING:
        return binary ? "varbinary" : "varchar";
    case MYSQL_TYPE_STRING:
        return binary ? "binary" : "char";
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
    case MYSQL_TYPE_BLOB:
        return binary ? "blob" : "text";
    default:
        return NULL;
    }
}

keel_result *keel__my_describe_result(my_impl *p, size_t nparams) {
    MYSQL_STMT *st = p->cur;
    unsigned ncols = mysql_stmt_field_count(st);
    MYSQL_FIELD *f = ncols ? mariadb_stmt_fetch_fields(st) : NULL;
    keel_result *res = keel__result_new(ncols);
    if (!res || (ncols && !f) || keel__result_set_nparams(res, nparams) != 0)
        goto nomem;
    for (unsigned i = 0; i < ncols; i++) {
        const char *name = my_type_name(&f[i]);
        if (keel__result_set_column(res, i, f[i].name, f[i].name_length, my_field_kind(&f[i])) !=
                0 ||
            (name && keel__result_set_type_name(res, i, name, strlen(name)) != 0))
            goto nomem;
    }
    return res;
nomem:
    keel_result_free(res);
    return NULL;
}

keel_status keel__my_rows_begin_stmt(my_impl *p, keel_error *err) {
    MYSQL_STMT *st = p->cur;
    unsigned ncols = mysql_stmt_field_count(st);
    MYSQL_FIELD *f = mariadb_stmt_fetch_fields(st);
    keel_result *res = keel__result_new(ncols);
    if (!res || !f || my_cols_reserve(p, ncols) != 0)
        goto nomem;
    for (unsigned i = 0; i < ncols; i++) {
        my_col *col = &p->cols[i];
        col->kind = my_field_kind(&f[i]);
        col->how = my_field_how(&f[i], col->kind);
        if ((col->how == H_STR || col->how == H_NULL) &&
            (col->cap < MY_COLUMN_BUFFER || !col->buf)) {
            char *buf = realloc(col->buf, MY_COLUMN_BUFFER);
            if (!buf)
                goto nomem;
            col->buf = buf;
            col->cap = MY_COLUMN_BUFFER;
        }
        my_bind_col(col, &p->rbinds[i]);
        if (keel__result_set_column(res, i, f[i].name, f[i].name_length, col->kind) != 0)
            goto nomem;
    }
    if (ncols && mysql_stmt_bind_result(st, p->rbinds) != 0) {
        keel_result_free(res);
        keel__my_error(p, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st), 0, 0,
                       err);
        return err ? err->code : KEEL_ERR_DATABASE;
    }
    keel__result_set_affected(res, -1);
    p->dres = res;
    return KEEL_OK;
nomem:
    keel_result_free(res);
    return keel__my_nomem(p, err);
}

keel_status keel__my_row_stmt(my_impl *p, keel_error *err) {
    MYSQL_STMT *st = p->cur;
    keel_result *res = p->dres;
    unsigned ncols = (unsigned)keel_result_ncols(res);
    keel_value *vals = keel__result_add_row(res);
    if (!vals)
        return keel__my_nomem(p, err);
    for (unsigned i = 0; i < ncols; i++) {
        if (p->cols[i].is_null)
            continue;
        int r = my_fetch_col(p, st, i, res, &vals[i]);
        if (r == -1)
            return keel__my_nomem(p, err);
        if (r == -2) {
            keel__my_error(p, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st),
                           0, 0, err);
            return err ? err->code : KEEL_ERR_DATABASE;
        }
    }
    return KEEL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Parameters                                                                               */

static keel_status my_param_error(my_impl *p, keel_error *err, keel_status code, size_t row,
                                  int many, size_t k, const char *what) {
    if (many)
        return keel__error_set(err, code, MY_ENGINE, keel__my_dbname(p->c),
                               "row %zu: parameter $%zu: %s", row, k + 1, what);
    return keel__error_set(err, code, MY_ENGINE, keel__my_dbname(p->c), "parameter $%zu: %s", k + 1,
                           what);
}

int keel__my_mtime_date(int32_t days, MYSQL_TIME *t) {
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

int keel__my_mtime_stamp(int64_t micros, MYSQL_TIME *t) {
    int64_t days = my_floor_div(micros, MY_US_PER_DAY);
    int64_t tod = micros - days * MY_US_PER_DAY;
    if (days < INT32_MIN || days > INT32_MAX || keel__my_mtime_date((int32_t)days, t) != 0)
        return -1;
    t->hour = (unsigned)(tod / 3600000000);
    t->minute = (unsigned)(tod / 60000000 % 60);
    t->second = (unsigned)(tod / 1000000 % 60);
    t->second_part = (unsigned long)(tod % 1000000);
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
    return 0;
}

int keel__my_mtime_time(int64_t micros, MYSQL_TIME *t) {
    if (micros < -MY_TIME_MAX_US || micros > MY_TIME_MAX_US)
        return -1;
    memset(t, 0, sizeof *t);
    t->neg = micros < 0;
    uint64_t u = micros < 0 ? (uint64_t)-micros : (uint64_t)micros;
    /* The binary protocol carries a TIME's hours in one byte, beside its days. */
    t->day = (unsigned)(u / 3600000000u / 24);
    t->hour = (unsigned)(u / 3600000000u % 24);
    t->minute = (unsigned)(u / 60000000u % 60);
    t->second = (unsigned)(u / 1000000u % 60);
    t->second_part = (unsigned long)(u % 1000000u);
    t->time_type = MYSQL_TIMESTAMP_TIME;
    return 0;
}

int keel__my_mtime_interval(const keel_value *v, MYSQL_TIME *t) {
    int64_t us;
    if (v->u.interval.months != 0 ||
        __builtin_mul_overflow((int64_t)v->u.interval.days, MY_US_PER_DAY, &us) ||
        __builtin_add_overflow(us, v->u.interval.micros, &us))
        return -1;
    return keel__my_mtime_time(us, t);
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

keel_status keel__my_param_check(my_impl *p, const keel_value *v, size_t row, int many, size_t k,
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
        if (keel__my_mtime_date(v->u.date, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "date outside MySQL's range (years 0-9999)");
        return KEEL_OK;
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        if (keel__my_mtime_stamp(v->u.micros, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "timestamp outside MySQL's range (years 0-9999)");
        return KEEL_OK;
    case KEEL_TYPE_TIME:
        if (keel__my_mtime_time(v->u.micros, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "time outside MySQL's range (-838:59:59 to 838:59:59)");
        return KEEL_OK;
    case KEEL_TYPE_DOCUMENT:
        return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                              "a BSON document is not a MySQL value; pass JSON instead");
    case KEEL_TYPE_ARRAY:
        return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                              "an array is not a MySQL value; pass JSON instead");
    case KEEL_TYPE_INTERVAL:
        /* A duration goes as a TIME, which holds one of up to 838 hours either way. */
        if (v->u.interval.months != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "an interval with months is not a MySQL value (TIME holds "
                                  "days and hours)");
        if (keel__my_mtime_interval(v, &t) != 0)
            return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                                  "interval (timedelta) outside MySQL's TIME range (-838:59:59 "
                                  "to 838:59:59)");
        return KEEL_OK;
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
    case KEEL_TYPE_RANGE:
        return my_param_error(p, err, KEEL_ERR_DATA, row, many, k,
                              "an inet, cidr or range is a PostgreSQL value; pass text "
                              "instead");
    }
    return my_param_error(p, err, KEEL_ERR_INVALID_ARGUMENT, row, many, k, "unknown value type");
}

int keel__my_is_strlike(keel_type t) {
    return t == KEEL_TYPE_NUMERIC || t == KEEL_TYPE_TEXT || t == KEEL_TYPE_BYTES ||
           t == KEEL_TYPE_JSON;
}

keel_status keel__my_copy_params(my_impl *p, const keel_value *params, size_t n, keel_error *err) {
    keel_value *vals = keel__values_copy(params, n, 0, NULL);
    if (!vals)
        return keel__my_nomem(p, err);
    keel__values_free(p->pcopy);
    p->pcopy = vals;
    return KEEL_OK;
}

int keel__my_binds_reserve(my_impl *p, size_t n) {
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

char keel__my_empty[1];

/* Binds one value to a placeholder of a single execution. Values passed keel__my_param_check. */
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
        b->buffer = v->u.str.len ? (void *)(uintptr_t)v->u.str.ptr : keel__my_empty;
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
        keel__my_mtime_date(v->u.date, &s->u.t);
        b->buffer_type = MYSQL_TYPE_DATE;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_TIME:
        keel__my_mtime_time(v->u.micros, &s->u.t);
        b->buffer_type = MYSQL_TYPE_TIME;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_INTERVAL:
        keel__my_mtime_interval(v, &s->u.t);
        b->buffer_type = MYSQL_TYPE_TIME;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_TIMESTAMP:
    case KEEL_TYPE_TIMESTAMPTZ:
        /* TIMESTAMPTZ goes as its UTC wall time: the session time zone is UTC. */
        keel__my_mtime_stamp(v->u.micros, &s->u.t);
        b->buffer_type = MYSQL_TYPE_DATETIME;
        b->buffer = &s->u.t;
        return;
    case KEEL_TYPE_DOCUMENT:
    case KEEL_TYPE_ARRAY:
    case KEEL_TYPE_INET:
    case KEEL_TYPE_CIDR:
    case KEEL_TYPE_RANGE:
        break; /* refused by keel__my_param_check */
    }
}

int keel__my_bind_row(my_impl *p, const keel_value *row) {
    unsigned zero = 0;
    if (mysql_stmt_attr_set(p->cur, STMT_ATTR_ARRAY_SIZE, &zero) != 0)
        return -1;
    if (p->nmap == 0)
        return 0;
    if (keel__my_binds_reserve(p, p->nmap) != 0) {
        /* Recorded now: the caller would otherwise report the statement's (empty) error. */
        keel__my_nomem(p, &p->err);
        p->failed = 1;
        return -1;
    }
    for (size_t i = 0; i < p->nmap; i++)
        my_bind_value(&p->binds[i], &p->slots[i], &row[p->map[i]]);
    return mysql_stmt_bind_param(p->cur, p->binds) ? -1 : 0;
}
