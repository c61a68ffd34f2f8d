/* tests/c/core/test_error.c - status names, SQLSTATE mapping and secret redaction. */
#include <stddef.h>

#include <keel/db.h>

#include "core/error_int.h"
#include "test.h"

TEST(every_status_has_a_name_and_description) {
    for (int s = KEEL_OK; s <= KEEL_ERR_OPERATIONAL; s++) {
        CHECK(strncmp(keel_status_name((keel_status)s), "KEEL_", 5) == 0);
        CHECK(strcmp(keel_status_name((keel_status)s), "KEEL_ERR_UNKNOWN") != 0);
        CHECK(strcmp(keel_strerror((keel_status)s), "unknown status") != 0);
    }
    CHECK_STR(keel_status_name(KEEL_ERR_POOL_TIMEOUT), "KEEL_ERR_POOL_TIMEOUT");
    CHECK_STR(keel_status_name((keel_status)9999), "KEEL_ERR_UNKNOWN");
    CHECK_STR(keel_strerror((keel_status)-1), "unknown status");
}

TEST(error_set_fills_every_field) {
    keel_error e;
    keel_status st = keel__error_set(&e, KEEL_ERR_CONNECT, "postgresql", "main", "port %d", 5432);
    CHECK_INT(st, KEEL_ERR_CONNECT);
    CHECK_INT(e.code, KEEL_ERR_CONNECT);
    CHECK_STR(e.engine, "postgresql");
    CHECK_STR(e.database, "main");
    CHECK_STR(e.message, "port 5432");
    CHECK_STR(e.sqlstate, "");
    keel__error_set_sqlstate(&e, "23505");
    CHECK_STR(e.sqlstate, "23505");
    keel__error_set(&e, KEEL_ERR_IO, NULL, NULL, "x");
    CHECK_STR(e.engine, "keel");
    CHECK_STR(e.sqlstate, "");
    keel_error_clear(&e);
    CHECK_INT(e.code, KEEL_OK);
    CHECK_STR(e.message, "");
    keel_error_clear(NULL);
    CHECK_INT(keel__error_set(NULL, KEEL_ERR_DATA, NULL, NULL, "ignored"), KEEL_ERR_DATA);
}

TEST(long_messages_are_truncated_not_overflowed) {
    keel_error e;
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    keel__error_set(&e, KEEL_ERR_DATABASE, "averyveryveryverylongenginename", big, "%s", big);
    CHECK_INT(strlen(e.message), KEEL_ERROR_MESSAGE_MAX - 1);
    CHECK_INT(strlen(e.engine), KEEL_ERROR_ENGINE_MAX - 1);
    CHECK_INT(strlen(e.database), KEEL_ERROR_DATABASE_MAX - 1);
}

TEST(sqlstate_classes_map_to_statuses) {
    CHECK_INT(keel__status_from_sqlstate("23505"), KEEL_ERR_INTEGRITY);
    CHECK_INT(keel__status_from_sqlstate("23503"), KEEL_ERR_INTEGRITY);
    CHECK_INT(keel__status_from_sqlstate("23000"), KEEL_ERR_INTEGRITY);
    CHECK_INT(keel__status_from_sqlstate("42601"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("42P01"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("42S02"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("3D000"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("22012"), KEEL_ERR_DATA);
    CHECK_INT(keel__status_from_sqlstate("08006"), KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel__status_from_sqlstate("08S01"), KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel__status_from_sqlstate("25P02"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__status_from_sqlstate("40001"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__status_from_sqlstate("2D000"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__status_from_sqlstate("0A000"), KEEL_ERR_UNSUPPORTED);
    CHECK_INT(keel__status_from_sqlstate("P0001"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate("HY000"), KEEL_ERR_DATABASE);
    /* Only the SQL-standard classes: a server's own codes and classes are its engine's to map
     * (PostgreSQL's 57014, 08P01, 53xxx, XXxxx: keel__pg_status_of), so here they fall back to
     * their standard class or to DATABASE. */
    CHECK_INT(keel__status_from_sqlstate("57014"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate("08P01"), KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel__status_from_sqlstate("42P18"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("53300"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate("XX000"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate("2300"), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate(""), KEEL_ERR_DATABASE);
    CHECK_INT(keel__status_from_sqlstate(NULL), KEEL_ERR_DATABASE);
}

TEST(redact_hides_passwords) {
    char out[256];
    keel__redact(out, sizeof out, "connect to postgresql://bob:s3cret@db:5432/app failed");
    CHECK(strstr(out, "s3cret") == NULL);
    CHECK_CONTAINS(out, "postgresql://bob:***@db:5432/app");
    keel__redact(out, sizeof out, "host=db password=hunter2 user=x");
    CHECK(strstr(out, "hunter2") == NULL);
    CHECK_CONTAINS(out, "password=***");
    CHECK_CONTAINS(out, "user=x");
    keel__redact(out, sizeof out, "PASSWORD: 'two words' end");
    CHECK(strstr(out, "two words") == NULL);
    CHECK_CONTAINS(out, "end");
    keel__redact(out, sizeof out, "password authentication failed for user \"bob\"");
    CHECK_STR(out, "password authentication failed for user \"bob\"");
    keel__redact(out, sizeof out, "sqlite:///tmp/x.db no userinfo");
    CHECK_STR(out, "sqlite:///tmp/x.db no userinfo");
    keel__redact(out, sizeof out, "Access denied for user 'bob'@'x' (using password: YES)");
    CHECK_STR(out, "Access denied for user 'bob'@'x' (using password: YES)");
    char tiny[8];
    keel__redact(tiny, sizeof tiny, "password=abcdefghijkl");
    CHECK(strlen(tiny) < sizeof tiny);
    CHECK(strstr(tiny, "abc") == NULL);
}

/* Redacts src into a buffer as big as a keel_error message; fails the test when needle shows. */
static void check_hidden(const char *src, const char *needle, const char *kept) {
    char out[KEEL_ERROR_MESSAGE_MAX];
    keel__redact(out, sizeof out, src);
    if (strstr(out, needle))
        fprintf(stderr, "    '%s' shows '%s'\n", out, needle);
    CHECK(strstr(out, needle) == NULL);
    if (kept)
        CHECK_CONTAINS(out, kept);
}

TEST(redact_hides_passwords_in_option_strings) {
    /* ODBC-style PWD=…; and its relatives, in any case. */
    check_hidden("Driver={X};Server=db;UID=app;PWD=Tr0ub4dor;Database=x", "Tr0ub4dor",
                 "Database=x");
    check_hidden("pwd=Tr0ub4dor", "Tr0ub4dor", "pwd=***");
    check_hidden("PWD={semi;colon}}brace};UID=app", "colon", "UID=app");
    check_hidden("user=a passwd=Tr0ub4dor host=h", "Tr0ub4dor", "host=h");
    /* password= inside an option string, plain or percent-encoded as a URL's query has it. */
    check_hidden("options='-c password=Tr0ub4dor -c search_path=x'", "Tr0ub4dor", "search_path");
    check_hidden("postgresql://h/db?options=-c%20password%3DTr0ub4dor%20-c%20x%3Dy", "Tr0ub4dor",
                 "x%3Dy");
    check_hidden("sslpassword = Tr0ub4dor", "Tr0ub4dor", NULL);
    /* A quoted value ends at its closing quote, not at an escaped one. */
    check_hidden("password='Tr0\\'ub 4dor' end", "4dor", "end");
    /* JSON (a MongoDB command echoed in a message). */
    check_hidden("{\"user\": \"app\", \"password\": \"Tr0ub4dor\"}", "Tr0ub4dor", "\"app\"");
    check_hidden("{'pwd': 'Tr0ub4dor'}", "Tr0ub4dor", NULL);
}

TEST(redact_hides_url_passwords_however_written) {
    /* Percent-encoded user info: the '@' and ':' of the user name do not end it early. */
    check_hidden("postgresql://u%40x:p%3Ass@h/db", "p%3Ass", "postgresql://u%40x:***@h/db");
    check_hidden("postgresql://bob%40corp:Tr0ub%40dor@h/db", "Tr0ub", "@h/db");
    /* Unencoded '/' and '?' in a password, which the URL parser accepts: the userinfo ends at
     * the last '@' (found by tests/fuzz/fuzz_url). */
    check_hidden("connect to postgresql://bob:Tr0/ub4dor@db/app failed", "ub4dor",
                 "@db/app failed");
    check_hidden("mysql://bob:Tr0?ub4dor@db/app", "ub4dor", "@db/app");
    /* A URL nested, percent-encoded, in another one's query. */
    check_hidden("https://proxy/?target=postgresql%3A%2F%2Fu%3ATr0ub4dor%40h%2Fdb", "Tr0ub4dor",
                 "https://proxy/");
    /* Words around a URL are left alone. */
    check_hidden("url postgresql://h/db failed for user@example", "***",
                 "url postgresql://h/db failed for user@example");
}

static int all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

TEST(reserved_space_is_zeroed_whenever_keel_fills_an_error) {
    keel_error e;
    memset(&e, 0xab, sizeof e);
    keel_error_clear(&e);
    CHECK(all_zero(e.reserved, sizeof e.reserved));
    memset(&e, 0xab, sizeof e);
    keel__error_set(&e, KEEL_ERR_DATA, "postgresql", "main", "bad %d", 1);
    CHECK(all_zero(e.reserved, sizeof e.reserved));
}

/*
 * The caller allocates keel_error and keel_pool_stats, so their size and field offsets are ABI:
 * a field is only ever added by taking room from the start of reserved. This pins the layout on
 * LP64, so that a change that breaks it fails here rather than in a program built against an
 * older header.
 */
TEST(caller_allocated_structs_keep_their_layout) {
    if (sizeof(void *) != 8 || sizeof(size_t) != 8)
        return;
    CHECK_INT(offsetof(keel_error, sqlstate), 4);
    CHECK_INT(offsetof(keel_error, engine), 10);
    CHECK_INT(offsetof(keel_error, database), 26);
    CHECK_INT(offsetof(keel_error, message), 90);
    CHECK_INT(offsetof(keel_error, detail), 602);
    CHECK_INT(offsetof(keel_error, hint), 1114);
    CHECK_INT(offsetof(keel_error, schema_name), 1370);
    CHECK_INT(offsetof(keel_error, table_name), 1498);
    CHECK_INT(offsetof(keel_error, column_name), 1626);
    CHECK_INT(offsetof(keel_error, constraint_name), 1754);
    CHECK_INT(offsetof(keel_error, datatype_name), 1882);
    CHECK_INT(offsetof(keel_error, server_code), 2016);
    CHECK_INT(offsetof(keel_error, violation), 2024);
    CHECK_INT(offsetof(keel_error, reserved), 2032);
    CHECK_INT(sizeof(keel_error), 2080);
    CHECK_INT(offsetof(keel_pool_stats, acquire_timeout), 48);
    CHECK_INT(offsetof(keel_pool_stats, connects), 56);
    CHECK_INT(offsetof(keel_pool_stats, connect_failures), 64);
    CHECK_INT(offsetof(keel_pool_stats, acquires), 72);
    CHECK_INT(offsetof(keel_pool_stats, acquire_timeouts), 80);
    CHECK_INT(offsetof(keel_pool_stats, acquire_wait_p50), 88);
    CHECK_INT(offsetof(keel_pool_stats, acquire_wait_p99), 96);
    CHECK_INT(offsetof(keel_pool_stats, reserved), 104);
    CHECK_INT(sizeof(keel_pool_stats), 120);
}

/* The server's fields: set, truncated, redacted (detail and hint), and cleared by every
 * keel__error_set and keel_error_clear. */
TEST(server_fields_are_set_truncated_redacted_and_cleared) {
    keel_error e;
    keel__error_set(&e, KEEL_ERR_INTEGRITY, "postgresql", "main", "dup");
    keel__error_set_field(&e, KEEL__ERRF_DETAIL, "Key (a)=(1)\nexists password=hunter2", SIZE_MAX);
    keel__error_set_field(&e, KEEL__ERRF_HINT, "try\tthis", SIZE_MAX);
    keel__error_set_field(&e, KEEL__ERRF_CONSTRAINT, "t_pkey_and_more", 6);
    keel__error_set_field(&e, KEEL__ERRF_TABLE, "t", SIZE_MAX);
    keel__error_set_field(&e, KEEL__ERRF_COLUMN, NULL, SIZE_MAX);
    keel__error_set_field(&e, KEEL__ERRF_SCHEMA, "public", SIZE_MAX);
    keel__error_set_field(&e, KEEL__ERRF_DATATYPE, "int4", SIZE_MAX);
    keel__error_set_field(NULL, KEEL__ERRF_TABLE, "t", SIZE_MAX);
    CHECK_STR(e.detail, "Key (a)=(1) exists password=***");
    CHECK_STR(e.hint, "try this");
    CHECK_STR(e.constraint_name, "t_pkey");
    CHECK_STR(e.table_name, "t");
    CHECK_STR(e.column_name, "");
    CHECK_STR(e.schema_name, "public");
    CHECK_STR(e.datatype_name, "int4");
    char long_name[1000];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    keel__error_set_field(&e, KEEL__ERRF_TABLE, long_name, SIZE_MAX);
    CHECK_INT(strlen(e.table_name), KEEL_ERROR_NAME_MAX - 1);
    keel__error_set_field(&e, KEEL__ERRF_DETAIL, long_name, SIZE_MAX);
    CHECK_INT(strlen(e.detail), KEEL_ERROR_DETAIL_MAX - 1);
    keel__error_set(&e, KEEL_ERR_DATA, NULL, NULL, "again");
    CHECK(!e.detail[0] && !e.hint[0] && !e.table_name[0] && !e.constraint_name[0] &&
          !e.schema_name[0] && !e.datatype_name[0] && !e.column_name[0]);
    keel__error_set_field(&e, KEEL__ERRF_HINT, "h", SIZE_MAX);
    keel_error_clear(&e);
    CHECK_STR(e.hint, "");
}

/* The kind of violation comes from a PostgreSQL-style SQLSTATE or from the engine's own number,
 * and every keel__error_set and keel_error_clear resets it with the server's code. */
TEST(violations_and_server_codes_are_set_and_cleared) {
    keel_error e;
    keel__error_set(&e, KEEL_ERR_INTEGRITY, "postgresql", "main", "dup");
    CHECK_INT(e.violation, KEEL_VIOLATION_NONE);
    keel__error_set_sqlstate(&e, "23505");
    CHECK_INT(e.violation, KEEL_VIOLATION_UNIQUE);
    keel__error_set_sqlstate(&e, "23P01");
    CHECK_INT(e.violation, KEEL_VIOLATION_EXCLUSION);
    CHECK_INT(e.server_code, 0);
    keel__error_set(&e, KEEL_ERR_INTEGRITY, "mysql", "main", "fk");
    CHECK_INT(e.violation, KEEL_VIOLATION_NONE);
    keel__error_set_sqlstate(&e, "23000");
    CHECK_INT(e.violation, KEEL_VIOLATION_NONE);
    keel__error_set_server_code(&e, 1452, KEEL_VIOLATION_FOREIGN_KEY);
    CHECK_INT(e.violation, KEEL_VIOLATION_FOREIGN_KEY);
    CHECK_INT(e.server_code, 1452);
    /* An engine that knows no kind keeps the one its SQLSTATE gave. */
    keel__error_set_sqlstate(&e, "23502");
    keel__error_set_server_code(&e, 1299, KEEL_VIOLATION_NONE);
    CHECK_INT(e.violation, KEEL_VIOLATION_NOT_NULL);
    keel__error_set_server_code(NULL, 1, KEEL_VIOLATION_CHECK);
    keel__error_set(&e, KEEL_ERR_DATA, NULL, NULL, "again");
    CHECK(e.server_code == 0 && e.violation == KEEL_VIOLATION_NONE);
    keel__error_set_server_code(&e, 11000, KEEL_VIOLATION_UNIQUE);
    keel_error_clear(&e);
    CHECK(e.server_code == 0 && e.violation == KEEL_VIOLATION_NONE);
}

int main(void) {
    RUN(server_fields_are_set_truncated_redacted_and_cleared);
    RUN(violations_and_server_codes_are_set_and_cleared);
    RUN(reserved_space_is_zeroed_whenever_keel_fills_an_error);
    RUN(caller_allocated_structs_keep_their_layout);
    RUN(every_status_has_a_name_and_description);
    RUN(error_set_fills_every_field);
    RUN(long_messages_are_truncated_not_overflowed);
    RUN(sqlstate_classes_map_to_statuses);
    RUN(redact_hides_passwords);
    RUN(redact_hides_passwords_in_option_strings);
    RUN(redact_hides_url_passwords_however_written);
    return TEST_SUMMARY();
}
