/* src/query/placeholder.h - the $1…$n placeholder lexer and rewriter. */
#ifndef KEEL_QUERY_PLACEHOLDER_H
#define KEEL_QUERY_PLACEHOLDER_H

#include <stddef.h>
#include <keel/error.h>
#include "core/buf.h"

/* The target placeholder style of an engine, which also selects its lexical rules. */
typedef enum keel__ph_style {
    /* PostgreSQL: $n is kept as is; dollar-quoted strings ($$…$$, $tag$…$tag$) are skipped. */
    KEEL__PH_POSTGRES = 0,
    /* SQLite: $n becomes ?n; [bracketed] and `backquoted` identifiers are skipped. */
    KEEL__PH_SQLITE = 1,
    /* MySQL: $n becomes ?, and map records which parameter each ? takes (repeats allowed);
     * backslash escapes inside strings and `backquoted` identifiers are handled. */
    KEEL__PH_MYSQL = 2
} keel__ph_style;

/*
 * Scans sql, skipping string literals ('…' with '' escapes, E'…' for PostgreSQL), quoted
 * identifiers ("…"), line (--) and block comments (nested for PostgreSQL), and dollar quotes.
 * Writes the rewritten statement to out (reset first; NUL-terminated). *max_index receives the
 * highest $n used (0 when none). For KEEL__PH_MYSQL, *map receives a malloc'ed array of *nmap
 * zero-based parameter indexes, one per ? in order (caller frees); other styles set *map = NULL.
 * map/nmap may be NULL for other styles.
 * Errors: KEEL_ERR_PARAMETERS for $0 or an index above 65535; KEEL_ERR_PROGRAMMING for an
 * unterminated string, identifier, comment or dollar quote (the message gives the byte offset);
 * KEEL_ERR_NOMEM.
 */
keel_status keel__placeholders_rewrite(const char *sql, keel__ph_style style, keel__buf *out,
                                       size_t *max_index, size_t **map, size_t *nmap,
                                       keel_error *err);

#endif
