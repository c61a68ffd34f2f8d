/* src/query/placeholder.c - a single-pass SQL lexer that rewrites $1…$n placeholders per engine. */
#include "query/placeholder.h"

#include <stdlib.h>
#include <string.h>

#include "core/error_int.h"

/* The highest placeholder index accepted; it is also the wire protocol limit of PostgreSQL. */
#define PH_MAX_INDEX 65535

/*
 * Bytes that may start a construct the lexer must look at, one table per style. Every other byte
 * is ordinary text and is skipped by a tight loop, then copied in bulk with its neighbours.
 */
static const unsigned char pg_special[256] = {
    ['\''] = 1, ['"'] = 1, ['-'] = 1, ['/'] = 1, ['$'] = 1, ['E'] = 1, ['e'] = 1,
};
static const unsigned char sqlite_special[256] = {
    ['\''] = 1, ['"'] = 1, ['`'] = 1, ['['] = 1, ['-'] = 1, ['/'] = 1, ['$'] = 1, ['?'] = 1,
};
static const unsigned char mysql_special[256] = {
    ['\''] = 1, ['"'] = 1, ['`'] = 1, ['-'] = 1, ['/'] = 1, ['#'] = 1, ['$'] = 1, ['?'] = 1,
};

/* The state of one rewrite: the input, the start of the pending run of unchanged text, and the
 * MySQL parameter map being built. */
typedef struct ph_lexer {
    const char *sql;
    const char *end;
    const char *run; /* first byte not yet copied to out */
    keel__ph_style style;
    keel__buf *out;
    size_t max_index;
    size_t *map;
    size_t nmap;
    size_t map_cap;
    keel_error *err;
} ph_lexer;

/* Letters, digits, '_', '$' and every non-ASCII byte can continue an unquoted identifier (or a
 * number) in all three dialects, so a '$' or 'E' right after one is not a token start. */
static int is_ident_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

/* Characters allowed in a PostgreSQL dollar-quote tag: identifier characters except '$'. */
static int is_tag_char(unsigned char c) { return c != '$' && is_ident_char(c); }

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* True when the byte before p exists and continues an identifier or number. */
static int after_ident(const ph_lexer *lx, const char *p) {
    return p > lx->sql && is_ident_char((unsigned char)p[-1]);
}

static size_t offset_of(const ph_lexer *lx, const char *p) { return (size_t)(p - lx->sql); }

static keel_status unterminated(ph_lexer *lx, const char *what, const char *start) {
    return keel__error_set(lx->err, KEEL_ERR_PROGRAMMING, "keel", NULL,
                           "unterminated %s starting at offset %zu", what, offset_of(lx, start));
}

/*
 * Skips a literal or quoted identifier opened at p by the byte quote. A doubled quote is an
 * escaped quote; when backslash is set, a backslash escapes the byte after it. Returns the
 * position after the closing quote, or NULL when the input ends first.
 */
static const char *skip_quoted(const char *p, const char *end, char quote, int backslash) {
    p++;
    for (;;) {
        if (backslash) {
            while (p < end && *p != quote && *p != '\\')
                p++;
        } else {
            const char *q = memchr(p, quote, (size_t)(end - p));
            p = q ? q : end;
        }
        if (p >= end)
            return NULL;
        if (*p == '\\') {
            /* An escaped byte never ends the literal, even when it is the quote itself. */
            p += 2;
            continue;
        }
        if (p + 1 < end && p[1] == quote) {
            p += 2;
            continue;
        }
        return p + 1;
    }
}

/* Skips a block comment whose opening slash and star are at p; PostgreSQL nests them, the others
 * do not. Returns the position after the final star and slash, or NULL when the input ends. */
static const char *skip_block_comment(const char *p, const char *end, int nested) {
    size_t depth = 1;
    p += 2;
    while (p < end) {
        if (*p == '*' && p + 1 < end && p[1] == '/') {
            p += 2;
            if (--depth == 0)
                return p;
        } else if (nested && *p == '/' && p + 1 < end && p[1] == '*') {
            p += 2;
            depth++;
        } else {
            p++;
        }
    }
    return NULL;
}

/* Skips a line comment: it ends before the next line break, or at the end of the input. */
static const char *skip_line_comment(const char *p, const char *end) {
    while (p < end && *p != '\n' && *p != '\r')
        p++;
    return p;
}

/*
 * Recognises a PostgreSQL dollar-quote opener ($$ or $tag$) at p. Returns the opener's length,
 * or 0 when the '$' does not open one (a placeholder, or '$' inside a word).
 */
static size_t dollar_opener_len(const char *p, const char *end) {
    const char *q = p + 1;
    if (q < end && *q == '$')
        return 2;
    if (q >= end || is_digit((unsigned char)*q) || !is_tag_char((unsigned char)*q))
        return 0;
    while (q < end && is_tag_char((unsigned char)*q))
        q++;
    if (q < end && *q == '$')
        return (size_t)(q - p) + 1;
    return 0;
}

/* Finds the closing delimiter (the opener again) of a dollar quote whose body starts at p.
 * Returns the position after it, or NULL when there is none. */
static const char *skip_dollar_body(const char *p, const char *end, const char *tag, size_t len) {
    while ((size_t)(end - p) >= len) {
        const char *d = memchr(p, '$', (size_t)(end - p) - len + 1);
        if (!d)
            return NULL;
        if (memcmp(d, tag, len) == 0)
            return d + len;
        p = d + 1;
    }
    return NULL;
}

/* Copies the pending run of unchanged text [run, upto) to the output. */
static keel_status flush_run(ph_lexer *lx, const char *upto) {
    if (upto > lx->run && keel__buf_append(lx->out, lx->run, (size_t)(upto - lx->run)) != 0)
        return keel__error_set(lx->err, KEEL_ERR_NOMEM, "keel", NULL,
                               "out of memory rewriting placeholders");
    lx->run = upto;
    return KEEL_OK;
}

/* Appends one zero-based parameter index to the MySQL map, doubling its capacity as needed. */
static keel_status map_push(ph_lexer *lx, size_t index) {
    if (lx->nmap == lx->map_cap) {
        size_t cap = lx->map_cap ? lx->map_cap * 2 : 16;
        size_t *m = realloc(lx->map, cap * sizeof *m);
        if (!m)
            return keel__error_set(lx->err, KEEL_ERR_NOMEM, "keel", NULL,
                                   "out of memory rewriting placeholders");
        lx->map = m;
        lx->map_cap = cap;
    }
    lx->map[lx->nmap++] = index;
    return KEEL_OK;
}

/* Appends ?index, SQLite's numbered parameter, without going through printf. */
static int put_numbered(keel__buf *out, size_t index) {
    char tmp[8];
    size_t n = sizeof tmp;
    do {
        tmp[--n] = (char)('0' + index % 10);
        index /= 10;
    } while (index);
    tmp[--n] = '?';
    return keel__buf_append(out, tmp + n, sizeof tmp - n);
}

/*
 * Handles the placeholder $digits starting at p (digits known to follow). Validates the index,
 * writes the engine's form of it, and returns via *next the position after the digits.
 */
static keel_status placeholder(ph_lexer *lx, const char *p, const char **next) {
    const char *q = p + 1;
    size_t index = 0;
    while (q < lx->end && is_digit((unsigned char)*q)) {
        /* Accumulation stops once past the limit, so a long run of digits cannot overflow and
         * is reported like any other index that is too large. */
        if (index <= PH_MAX_INDEX)
            index = index * 10 + (size_t)(*q - '0');
        q++;
    }
    *next = q;
    if (index == 0)
        return keel__error_set(lx->err, KEEL_ERR_PARAMETERS, "keel", NULL,
                               "placeholder $0 at offset %zu: placeholders start at $1",
                               offset_of(lx, p));
    if (index > PH_MAX_INDEX)
        return keel__error_set(lx->err, KEEL_ERR_PARAMETERS, "keel", NULL,
                               "placeholder at offset %zu is above the maximum $%d",
                               offset_of(lx, p), PH_MAX_INDEX);
    if (index > lx->max_index)
        lx->max_index = index;

    keel_status st;
    switch (lx->style) {
    case KEEL__PH_POSTGRES:
        /* PostgreSQL understands $n itself: the text stays in the pending run. */
        return KEEL_OK;
    case KEEL__PH_SQLITE:
        if ((st = flush_run(lx, p)) != KEEL_OK)
            return st;
        if (put_numbered(lx->out, index) != 0)
            return keel__error_set(lx->err, KEEL_ERR_NOMEM, "keel", NULL,
                                   "out of memory rewriting placeholders");
        break;
    case KEEL__PH_MYSQL:
        if ((st = flush_run(lx, p)) != KEEL_OK)
            return st;
        if ((st = map_push(lx, index - 1)) != KEEL_OK)
            return st;
        if (keel__buf_putc(lx->out, '?') != 0)
            return keel__error_set(lx->err, KEEL_ERR_NOMEM, "keel", NULL,
                                   "out of memory rewriting placeholders");
        break;
    }
    lx->run = q;
    return KEEL_OK;
}

/*
 * Looks at the special byte at p and either consumes the construct it starts (setting *next past
 * it) or, when it starts nothing, steps over that one byte.
 */
static keel_status lex_special(ph_lexer *lx, const char *p, const char **next) {
    const char *end = lx->end;
    const char *q;
    int pg = lx->style == KEEL__PH_POSTGRES;
    int mysql = lx->style == KEEL__PH_MYSQL;
    unsigned char c = (unsigned char)*p;

    *next = p + 1;
    switch (c) {
    case '\'':
        if (!(q = skip_quoted(p, end, '\'', mysql)))
            return unterminated(lx, "string literal", p);
        *next = q;
        return KEEL_OK;
    case '"':
        /* MySQL reads "…" as a string (with backslash escapes); the others as an identifier. */
        if (!(q = skip_quoted(p, end, '"', mysql)))
            return unterminated(lx, mysql ? "string literal" : "quoted identifier", p);
        *next = q;
        return KEEL_OK;
    case '`':
        if (!(q = skip_quoted(p, end, '`', 0)))
            return unterminated(lx, "quoted identifier", p);
        *next = q;
        return KEEL_OK;
    case '[':
        /* SQLite's [identifier] has no escape: it ends at the first ']'. */
        if (!(q = memchr(p + 1, ']', (size_t)(end - p - 1))))
            return unterminated(lx, "bracketed identifier", p);
        *next = q + 1;
        return KEEL_OK;
    case 'E':
    case 'e':
        /* An escape string E'…' only when the E is a token of its own, not the end of a word. */
        if (p + 1 < end && p[1] == '\'' && !after_ident(lx, p)) {
            if (!(q = skip_quoted(p + 1, end, '\'', 1)))
                return unterminated(lx, "escape string literal", p);
            *next = q;
        }
        return KEEL_OK;
    case '-':
        if (p + 1 < end && p[1] == '-') {
            /* MySQL needs whitespace or a control character after "--" (so 1--1 is
             * arithmetic); the end of the input counts as such. */
            if (mysql && p + 2 < end && (unsigned char)p[2] > ' ')
                return KEEL_OK;
            *next = skip_line_comment(p + 2, end);
        }
        return KEEL_OK;
    case '#':
        *next = skip_line_comment(p + 1, end);
        return KEEL_OK;
    case '/':
        if (p + 1 < end && p[1] == '*') {
            /* MySQL and MariaDB execute the body of a comment opened with a '!' (or "M!") after
             * the slash and star, so its content is lexed as SQL: only the opener is stepped
             * over, and the closing delimiter is then ordinary text. */
            if (mysql && p + 2 < end &&
                (p[2] == '!' || (p[2] == 'M' && p + 3 < end && p[3] == '!'))) {
                *next = p + 2;
                return KEEL_OK;
            }
            if (!(q = skip_block_comment(p, end, pg)))
                return unterminated(lx, "block comment", p);
            *next = q;
        }
        return KEEL_OK;
    case '?':
        return keel__error_set(lx->err, KEEL_ERR_PARAMETERS, "keel", NULL,
                               "use $1\xe2\x80\xa6$n placeholders, not '?', at offset %zu",
                               offset_of(lx, p));
    case '$':
        if (after_ident(lx, p))
            return KEEL_OK;
        if (p + 1 < end && is_digit((unsigned char)p[1]))
            return placeholder(lx, p, next);
        if (pg) {
            size_t len = dollar_opener_len(p, end);
            if (len) {
                if (!(q = skip_dollar_body(p + len, end, p, len)))
                    return unterminated(lx, "dollar-quoted string", p);
                *next = q;
            }
        }
        return KEEL_OK;
    default:
        return KEEL_OK;
    }
}

keel_status keel__placeholders_rewrite(const char *sql, keel__ph_style style, keel__buf *out,
                                       size_t *max_index, size_t **map, size_t *nmap,
                                       keel_error *err) {
    const unsigned char *special;
    switch (style) {
    case KEEL__PH_POSTGRES:
        special = pg_special;
        break;
    case KEEL__PH_SQLITE:
        special = sqlite_special;
        break;
    case KEEL__PH_MYSQL:
        special = mysql_special;
        break;
    default:
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, "keel", NULL,
                               "unknown placeholder style %d", (int)style);
    }
    if (map)
        *map = NULL;
    if (nmap)
        *nmap = 0;
    if (max_index)
        *max_index = 0;
    if (!sql || !out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, "keel", NULL,
                               "placeholder rewrite needs a statement and an output buffer");
    if (style == KEEL__PH_MYSQL && (!map || !nmap))
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, "keel", NULL,
                               "MySQL placeholder rewrite needs a parameter map");

    size_t len = strlen(sql);
    keel__buf_reset(out);
    /* Rewriting never lengthens a statement ($n becomes ?n or ?), so one reservation covers
     * every append below. */
    if (keel__buf_reserve(out, len) != 0)
        return keel__error_set(err, KEEL_ERR_NOMEM, "keel", NULL,
                               "out of memory rewriting placeholders");

    ph_lexer lx = {
        .sql = sql,
        .end = sql + len,
        .run = sql,
        .style = style,
        .out = out,
        .err = err,
    };
    keel_status st = KEEL_OK;
    const char *p = sql;
    while (p < lx.end) {
        while (p < lx.end && !special[(unsigned char)*p])
            p++;
        if (p >= lx.end)
            break;
        if ((st = lex_special(&lx, p, &p)) != KEEL_OK)
            break;
    }
    if (st == KEEL_OK)
        st = flush_run(&lx, lx.end);
    /* An empty statement still yields an empty, NUL-terminated string. */
    if (st == KEEL_OK && keel__buf_append(out, "", 0) != 0)
        st = keel__error_set(err, KEEL_ERR_NOMEM, "keel", NULL,
                             "out of memory rewriting placeholders");
    if (st != KEEL_OK) {
        free(lx.map);
        keel__buf_reset(out);
        return st;
    }
    if (max_index)
        *max_index = lx.max_index;
    if (style == KEEL__PH_MYSQL) {
        *map = lx.map;
        *nmap = lx.nmap;
    } else {
        free(lx.map);
    }
    return KEEL_OK;
}
