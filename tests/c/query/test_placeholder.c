/* tests/c/query/test_placeholder.c - tests of the $n placeholder lexer and its three rewrites. */
#include <stdlib.h>
#include <string.h>

#include "query/placeholder.h"
#include "test.h"

/* The outcome of one rewrite, kept so each test can look at every output. */
typedef struct rewrite {
    keel_status status;
    keel__buf out;
    size_t max_index;
    size_t *map;
    size_t nmap;
    keel_error err;
} rewrite;

static void run_rewrite(rewrite *r, const char *sql, keel__ph_style style) {
    memset(r, 0, sizeof *r);
    r->max_index = 999;
    r->nmap = 999;
    r->status =
        keel__placeholders_rewrite(sql, style, &r->out, &r->max_index, &r->map, &r->nmap, &r->err);
}

static void done(rewrite *r) {
    keel__buf_free(&r->out);
    free(r->map);
}

/* Checks that sql comes out as expected in style, with the given highest index. */
static void expect_ok(const char *sql, keel__ph_style style, const char *expected, size_t max) {
    rewrite r;
    run_rewrite(&r, sql, style);
    CHECK_INT(r.status, KEEL_OK);
    if (r.status != KEEL_OK)
        fprintf(stderr, "    (%s) for: %s\n", r.err.message, sql);
    CHECK_STR(r.out.data, expected);
    CHECK_INT(r.max_index, max);
    if (style != KEEL__PH_MYSQL) {
        CHECK(r.map == NULL);
        CHECK_INT(r.nmap, 0);
    }
    done(&r);
}

/* Checks that sql is kept byte for byte in all three styles (nothing in it is a placeholder). */
static void expect_unchanged_all(const char *sql) {
    expect_ok(sql, KEEL__PH_POSTGRES, sql, 0);
    expect_ok(sql, KEEL__PH_SQLITE, sql, 0);
    expect_ok(sql, KEEL__PH_MYSQL, sql, 0);
}

/* Checks that sql fails with code and a message containing needle. */
static void expect_error(const char *sql, keel__ph_style style, keel_status code,
                         const char *needle) {
    rewrite r;
    run_rewrite(&r, sql, style);
    CHECK_INT(r.status, code);
    CHECK_CONTAINS(r.err.message, needle);
    CHECK_STR(r.err.engine, "keel");
    CHECK_INT(r.err.code, code);
    CHECK(r.map == NULL);
    CHECK_INT(r.nmap, 0);
    CHECK_INT(r.max_index, 0);
    done(&r);
}

TEST(test_plain) {
    const char *sql = "SELECT a FROM t WHERE id = $1 AND name = $2";
    expect_ok(sql, KEEL__PH_POSTGRES, sql, 2);
    expect_ok(sql, KEEL__PH_SQLITE, "SELECT a FROM t WHERE id = ?1 AND name = ?2", 2);
    expect_ok(sql, KEEL__PH_MYSQL, "SELECT a FROM t WHERE id = ? AND name = ?", 2);
    expect_ok("$1", KEEL__PH_SQLITE, "?1", 1);
    expect_ok("($12)", KEEL__PH_MYSQL, "(?)", 12);
    expect_ok("SELECT 1", KEEL__PH_MYSQL, "SELECT 1", 0);
}

TEST(test_empty) {
    expect_ok("", KEEL__PH_POSTGRES, "", 0);
    expect_ok("", KEEL__PH_SQLITE, "", 0);
    rewrite r;
    run_rewrite(&r, "", KEEL__PH_MYSQL);
    CHECK_INT(r.status, KEEL_OK);
    CHECK_STR(r.out.data, "");
    CHECK_INT(r.nmap, 0);
    CHECK_INT(r.max_index, 0);
    done(&r);
}

TEST(test_repeated_and_out_of_order) {
    const char *sql = "SELECT $2, $1, $2";
    expect_ok(sql, KEEL__PH_POSTGRES, sql, 2);
    expect_ok(sql, KEEL__PH_SQLITE, "SELECT ?2, ?1, ?2", 2);

    rewrite r;
    run_rewrite(&r, sql, KEEL__PH_MYSQL);
    CHECK_INT(r.status, KEEL_OK);
    CHECK_STR(r.out.data, "SELECT ?, ?, ?");
    CHECK_INT(r.max_index, 2);
    CHECK_INT(r.nmap, 3);
    if (r.nmap == 3) {
        CHECK_INT(r.map[0], 1);
        CHECK_INT(r.map[1], 0);
        CHECK_INT(r.map[2], 1);
    }
    done(&r);

    /* A gap still reports the highest index; the caller decides whether gaps are allowed. */
    expect_ok("SELECT $3", KEEL__PH_SQLITE, "SELECT ?3", 3);
}

TEST(test_mysql_map_many) {
    /* More placeholders than the map's first allocation, so it has to grow. */
    keel__buf sql = { 0 };
    keel__buf expected = { 0 };
    for (int i = 0; i < 100; i++) {
        keel__buf_printf(&sql, "%s$%d", i ? "," : "SELECT ", 100 - i);
        keel__buf_puts(&expected, i ? ",?" : "SELECT ?");
    }
    rewrite r;
    run_rewrite(&r, sql.data, KEEL__PH_MYSQL);
    CHECK_INT(r.status, KEEL_OK);
    CHECK_STR(r.out.data, expected.data);
    CHECK_INT(r.max_index, 100);
    CHECK_INT(r.nmap, 100);
    int good = r.nmap == 100;
    for (size_t i = 0; good && i < 100; i++)
        good = r.map[i] == 99 - i;
    CHECK(good);
    done(&r);
    keel__buf_free(&sql);
    keel__buf_free(&expected);
}

TEST(test_strings) {
    expect_unchanged_all("SELECT '$1'");
    expect_unchanged_all("SELECT 'it''s $1'");
    expect_unchanged_all("SELECT '-- $1', '/* $2 */'");
    expect_ok("SELECT 'a''$9', $1", KEEL__PH_SQLITE, "SELECT 'a''$9', ?1", 1);
    expect_ok("SELECT 'x', $1, 'y'", KEEL__PH_MYSQL, "SELECT 'x', ?, 'y'", 1);
    /* PostgreSQL's standard strings treat a backslash as an ordinary character. */
    expect_ok("SELECT 'a\\', $1", KEEL__PH_POSTGRES, "SELECT 'a\\', $1", 1);
    expect_ok("SELECT 'a\\', $1", KEEL__PH_SQLITE, "SELECT 'a\\', ?1", 1);
}

TEST(test_e_strings) {
    /* In E'…' a backslash escapes the quote, so "\\'" does not end the string. */
    expect_ok("SELECT E'it\\'s $1', $2", KEEL__PH_POSTGRES, "SELECT E'it\\'s $1', $2", 2);
    expect_ok("SELECT e'\\\\', $1", KEEL__PH_POSTGRES, "SELECT e'\\\\', $1", 1);
    expect_ok("SELECT E'a''$3', $1", KEEL__PH_POSTGRES, "SELECT E'a''$3', $1", 1);
    /* An E at the end of a word is not a prefix: name' starts an ordinary string. */
    expect_ok("SELECT 1 AS namE'\\', $1", KEEL__PH_POSTGRES, "SELECT 1 AS namE'\\', $1", 1);
    expect_error("SELECT E'\\'", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "unterminated escape string literal starting at offset 7");
}

TEST(test_mysql_strings) {
    /* MySQL strings take backslash escapes in both quote styles; "…" is a string, not a name. */
    expect_ok("SELECT 'it\\'s $1', $2", KEEL__PH_MYSQL, "SELECT 'it\\'s $1', ?", 2);
    expect_ok("SELECT \"say \\\"$1\\\"\", $1", KEEL__PH_MYSQL, "SELECT \"say \\\"$1\\\"\", ?", 1);
    expect_ok("SELECT \"a\"\"$5\", $1", KEEL__PH_MYSQL, "SELECT \"a\"\"$5\", ?", 1);
    expect_ok("SELECT '\\\\', $1", KEEL__PH_MYSQL, "SELECT '\\\\', ?", 1);
    expect_ok("SELECT `a``$1`, $1", KEEL__PH_MYSQL, "SELECT `a``$1`, ?", 1);
    expect_ok("SELECT '?', \"?\", `?`, $1", KEEL__PH_MYSQL, "SELECT '?', \"?\", `?`, ?", 1);
}

TEST(test_quoted_identifiers) {
    expect_ok("SELECT \"$1\" FROM t WHERE x = $1", KEEL__PH_POSTGRES,
              "SELECT \"$1\" FROM t WHERE x = $1", 1);
    expect_ok("SELECT \"a\"\"$2\" FROM t WHERE x = $1", KEEL__PH_SQLITE,
              "SELECT \"a\"\"$2\" FROM t WHERE x = ?1", 1);
    /* A backslash in an identifier is just a character outside MySQL. */
    expect_ok("SELECT \"a\\\", $1", KEEL__PH_SQLITE, "SELECT \"a\\\", ?1", 1);
    expect_ok("SELECT `$1`, [$2], [a?b] FROM t WHERE x = $1", KEEL__PH_SQLITE,
              "SELECT `$1`, [$2], [a?b] FROM t WHERE x = ?1", 1);
    /* Brackets are array subscripts in PostgreSQL, so a placeholder inside one counts. */
    expect_ok("SELECT a[$1] FROM t", KEEL__PH_POSTGRES, "SELECT a[$1] FROM t", 1);
}

TEST(test_comments) {
    expect_ok("SELECT $1 -- and $2\nFROM t", KEEL__PH_SQLITE, "SELECT ?1 -- and $2\nFROM t", 1);
    expect_ok("SELECT $1 -- and $2", KEEL__PH_MYSQL, "SELECT ? -- and $2", 1);
    expect_ok("SELECT $1 /* $2 ' \" */ , $3", KEEL__PH_SQLITE, "SELECT ?1 /* $2 ' \" */ , ?3", 3);
    expect_ok("SELECT $1 # $2 ?\n, $2", KEEL__PH_MYSQL, "SELECT ? # $2 ?\n, ?", 2);
    /* # is an operator in PostgreSQL (bitwise xor), not a comment. */
    expect_ok("SELECT 1 # $1", KEEL__PH_POSTGRES, "SELECT 1 # $1", 1);
    /* In MySQL "--" starts a comment only when followed by whitespace. */
    expect_ok("SELECT 1--$1", KEEL__PH_MYSQL, "SELECT 1--?", 1);
    expect_ok("SELECT 1--\t$1", KEEL__PH_MYSQL, "SELECT 1--\t$1", 0);
    expect_ok("SELECT 1--$1", KEEL__PH_POSTGRES, "SELECT 1--$1", 0);
    expect_ok("SELECT 1 --", KEEL__PH_MYSQL, "SELECT 1 --", 0);
    /* A lone slash or dash is an operator. */
    expect_ok("SELECT $1 / $2 - $3", KEEL__PH_SQLITE, "SELECT ?1 / ?2 - ?3", 3);
    /* A slash right after the opening slash and star does not close the comment. */
    expect_ok("SELECT /*/ $1 */ $2", KEEL__PH_SQLITE, "SELECT /*/ $1 */ ?2", 2);
}

TEST(test_nested_comments) {
    /* PostgreSQL nests block comments: the first close does not end the outer one. */
    expect_ok("SELECT /* a /* $1 */ $2 */ $3", KEEL__PH_POSTGRES, "SELECT /* a /* $1 */ $2 */ $3",
              3);
    /* SQLite does not: the text after the first closing star and slash is SQL again. */
    expect_ok("SELECT /* a /* $1 */ $2 */ $3", KEEL__PH_SQLITE, "SELECT /* a /* $1 */ ?2 */ ?3", 3);
    expect_error("SELECT /* a /* b */", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "unterminated block comment starting at offset 7");
}

TEST(test_mysql_executable_comments) {
    /* The body of a version comment is executed by MySQL, so its placeholders count. */
    expect_ok("SELECT /*!50000 $1, */ $2", KEEL__PH_MYSQL, "SELECT /*!50000 ?, */ ?", 2);
    expect_ok("SELECT /*M!100000 $1 */ 1", KEEL__PH_MYSQL, "SELECT /*M!100000 ? */ 1", 1);
    expect_error("SELECT /*! ? */ 1", KEEL__PH_MYSQL, KEEL_ERR_PARAMETERS, "at offset 11");
    /* An optimizer hint is an ordinary comment. */
    expect_ok("SELECT /*+ $1 ? */ $1", KEEL__PH_MYSQL, "SELECT /*+ $1 ? */ ?", 1);
}

TEST(test_dollar_quotes) {
    const char *body = "CREATE FUNCTION f() RETURNS int AS $$ SELECT $1 + 1 $$ LANGUAGE sql";
    expect_ok(body, KEEL__PH_POSTGRES, body, 0);
    const char *tagged = "SELECT $fn$ it's $1 $$ $x$ $fn$, $1";
    expect_ok(tagged, KEEL__PH_POSTGRES, tagged, 1);
    const char *tag_prefix = "SELECT $a$ $ab$ $1 $a$ || $2";
    expect_ok(tag_prefix, KEEL__PH_POSTGRES, tag_prefix, 2);
    const char *underscore = "SELECT $_1$ $1 $_1$, $1";
    expect_ok(underscore, KEEL__PH_POSTGRES, underscore, 1);
    /* A '$' with no valid tag after it opens nothing. */
    expect_ok("SELECT $a b, $1", KEEL__PH_POSTGRES, "SELECT $a b, $1", 1);
    /* Dollar quotes are PostgreSQL's: elsewhere $$ is ordinary text. */
    expect_ok("SELECT $$ $1 $$", KEEL__PH_SQLITE, "SELECT $$ ?1 $$", 1);
    expect_error("SELECT $tag$ abc $tag", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "unterminated dollar-quoted string starting at offset 7");
    expect_error("SELECT 1, $$ abc $", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "dollar-quoted string starting at offset 10");
}

TEST(test_identifier_dollars) {
    /* '$' continues an identifier, so foo$1 is one name, and foo$a$ opens no dollar quote. */
    expect_ok("SELECT foo$1 FROM t", KEEL__PH_POSTGRES, "SELECT foo$1 FROM t", 0);
    expect_ok("SELECT foo$1, $1 FROM t", KEEL__PH_SQLITE, "SELECT foo$1, ?1 FROM t", 1);
    expect_ok("SELECT foo$1, $1 FROM t", KEEL__PH_MYSQL, "SELECT foo$1, ? FROM t", 1);
    expect_ok("SELECT foo$a$, $1", KEEL__PH_POSTGRES, "SELECT foo$a$, $1", 1);
    expect_ok("SELECT _$2, é$3, $1", KEEL__PH_SQLITE, "SELECT _$2, é$3, ?1", 1);
}

TEST(test_casts_and_operators) {
    const char *sql = "SELECT $1::int, $2::text[], ($3)::jsonb ? 'k'";
    expect_ok(sql, KEEL__PH_POSTGRES, sql, 3);
    expect_ok("SELECT $1::int, CAST($2 AS text)", KEEL__PH_SQLITE,
              "SELECT ?1::int, CAST(?2 AS text)", 2);
    /* PostgreSQL has ? operators for jsonb: they stay. */
    expect_ok("SELECT d ?| array['a'], d ?& $1, d ? 'x'", KEEL__PH_POSTGRES,
              "SELECT d ?| array['a'], d ?& $1, d ? 'x'", 1);
    expect_ok("SELECT $1,$2", KEEL__PH_MYSQL, "SELECT ?,?", 2);
    expect_ok("INSERT INTO t VALUES($1,$2)", KEEL__PH_SQLITE, "INSERT INTO t VALUES(?1,?2)", 2);
    /* Leading zeros are read as a decimal number and written without them. */
    expect_ok("SELECT $007", KEEL__PH_SQLITE, "SELECT ?7", 7);
}

TEST(test_question_mark_errors) {
    expect_error("SELECT * FROM t WHERE id = ?", KEEL__PH_MYSQL, KEEL_ERR_PARAMETERS,
                 "use $1\xe2\x80\xa6$n placeholders, not '?', at offset 27");
    expect_error("SELECT ?1", KEEL__PH_SQLITE, KEEL_ERR_PARAMETERS, "not '?', at offset 7");
    expect_error("SELECT $1, ?", KEEL__PH_SQLITE, KEEL_ERR_PARAMETERS, "at offset 11");
    expect_ok("SELECT 1 WHERE x = ?", KEEL__PH_POSTGRES, "SELECT 1 WHERE x = ?", 0);
}

TEST(test_unterminated) {
    expect_error("SELECT 'abc", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "unterminated string literal starting at offset 7");
    expect_error("SELECT 'it''", KEEL__PH_SQLITE, KEEL_ERR_PROGRAMMING,
                 "string literal starting at offset 7");
    expect_error("SELECT 'abc\\'", KEEL__PH_MYSQL, KEEL_ERR_PROGRAMMING,
                 "string literal starting at offset 7");
    expect_error("SELECT 'a\\", KEEL__PH_MYSQL, KEEL_ERR_PROGRAMMING,
                 "string literal starting at offset 7");
    expect_error("SELECT \"abc", KEEL__PH_MYSQL, KEEL_ERR_PROGRAMMING,
                 "string literal starting at offset 7");
    expect_error("SELECT 1 FROM \"t", KEEL__PH_POSTGRES, KEEL_ERR_PROGRAMMING,
                 "unterminated quoted identifier starting at offset 14");
    expect_error("SELECT `t", KEEL__PH_MYSQL, KEEL_ERR_PROGRAMMING,
                 "unterminated quoted identifier starting at offset 7");
    expect_error("SELECT [t", KEEL__PH_SQLITE, KEEL_ERR_PROGRAMMING,
                 "unterminated bracketed identifier starting at offset 7");
    expect_error("SELECT $1 /* x", KEEL__PH_SQLITE, KEEL_ERR_PROGRAMMING,
                 "unterminated block comment starting at offset 10");
    expect_error("SELECT 1 /* x *", KEEL__PH_MYSQL, KEEL_ERR_PROGRAMMING,
                 "block comment starting at offset 9");
    /* A line comment needs no terminator. */
    expect_ok("SELECT 1 -- x", KEEL__PH_POSTGRES, "SELECT 1 -- x", 0);
}

TEST(test_index_range) {
    expect_error("SELECT $0", KEEL__PH_POSTGRES, KEEL_ERR_PARAMETERS, "$0 at offset 7");
    expect_error("SELECT $1, $00", KEEL__PH_MYSQL, KEEL_ERR_PARAMETERS, "$0 at offset 11");
    expect_error("SELECT $70000", KEEL__PH_SQLITE, KEEL_ERR_PARAMETERS,
                 "placeholder at offset 7 is above the maximum $65535");
    expect_error("SELECT $99999999999999999999999999", KEEL__PH_POSTGRES, KEEL_ERR_PARAMETERS,
                 "above the maximum");
    expect_error("SELECT $65536", KEEL__PH_POSTGRES, KEEL_ERR_PARAMETERS, "above the maximum");
    expect_ok("SELECT $65535", KEEL__PH_SQLITE, "SELECT ?65535", 65535);
    expect_ok("SELECT $65535, $1", KEEL__PH_POSTGRES, "SELECT $65535, $1", 65535);
}

TEST(test_bad_arguments) {
    keel__buf out = { 0 };
    keel_error err;
    size_t max = 7;
    CHECK_INT(keel__placeholders_rewrite(NULL, KEEL__PH_POSTGRES, &out, &max, NULL, NULL, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    /* map and nmap may be NULL except for MySQL, which must return the map. */
    CHECK_INT(
        keel__placeholders_rewrite("SELECT $1", KEEL__PH_POSTGRES, &out, &max, NULL, NULL, &err),
        KEEL_OK);
    CHECK_INT(max, 1);
    CHECK_INT(keel__placeholders_rewrite("SELECT $1", KEEL__PH_MYSQL, &out, &max, NULL, NULL, &err),
              KEEL_ERR_INVALID_ARGUMENT);
    CHECK_INT(
        keel__placeholders_rewrite("SELECT 1", (keel__ph_style)9, &out, &max, NULL, NULL, &err),
        KEEL_ERR_INVALID_ARGUMENT);
    /* A NULL error struct is allowed. */
    CHECK_INT(keel__placeholders_rewrite("'", KEEL__PH_SQLITE, &out, &max, NULL, NULL, NULL),
              KEEL_ERR_PROGRAMMING);
    keel__buf_free(&out);
}

TEST(test_buffer_reuse) {
    /* The output is reset on each call, and left empty after an error. */
    keel__buf out = { 0 };
    keel_error err;
    size_t max;
    CHECK_INT(keel__placeholders_rewrite("SELECT $1, 'a long enough statement'", KEEL__PH_SQLITE,
                                         &out, &max, NULL, NULL, &err),
              KEEL_OK);
    CHECK_INT(
        keel__placeholders_rewrite("SELECT $2", KEEL__PH_SQLITE, &out, &max, NULL, NULL, &err),
        KEEL_OK);
    CHECK_STR(out.data, "SELECT ?2");
    CHECK_INT(out.len, strlen("SELECT ?2"));
    CHECK_INT(keel__placeholders_rewrite("SELECT '", KEEL__PH_SQLITE, &out, &max, NULL, NULL, &err),
              KEEL_ERR_PROGRAMMING);
    CHECK_INT(out.len, 0);
    CHECK_STR(out.data, "");
    keel__buf_free(&out);
}

TEST(test_long_statement) {
    /* A large statement made of every construct, to exercise the bulk copy of long runs. */
    keel__buf sql = { 0 };
    keel__buf expected = { 0 };
    for (int i = 1; i <= 2000; i++) {
        keel__buf_printf(&sql, "SELECT '$%d''x', \"c$%d\", /* $%d */ $%d -- $%d\n;", i, i, i, i, i);
        keel__buf_printf(&expected, "SELECT '$%d''x', \"c$%d\", /* $%d */ ?%d -- $%d\n;", i, i, i,
                         i, i);
    }
    expect_ok(sql.data, KEEL__PH_SQLITE, expected.data, 2000);
    expect_ok(sql.data, KEEL__PH_POSTGRES, sql.data, 2000);
    keel__buf_free(&sql);
    keel__buf_free(&expected);
}

int main(void) {
    RUN(test_plain);
    RUN(test_empty);
    RUN(test_repeated_and_out_of_order);
    RUN(test_mysql_map_many);
    RUN(test_strings);
    RUN(test_e_strings);
    RUN(test_mysql_strings);
    RUN(test_quoted_identifiers);
    RUN(test_comments);
    RUN(test_nested_comments);
    RUN(test_mysql_executable_comments);
    RUN(test_dollar_quotes);
    RUN(test_identifier_dollars);
    RUN(test_casts_and_operators);
    RUN(test_question_mark_errors);
    RUN(test_unterminated);
    RUN(test_index_range);
    RUN(test_bad_arguments);
    RUN(test_buffer_reuse);
    RUN(test_long_statement);
    return TEST_SUMMARY();
}
