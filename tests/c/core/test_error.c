/* tests/c/core/test_error.c - status names, SQLSTATE mapping and secret redaction. */
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
    CHECK_INT(keel__status_from_sqlstate("42601"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("42P01"), KEEL_ERR_PROGRAMMING);
    CHECK_INT(keel__status_from_sqlstate("22012"), KEEL_ERR_DATA);
    CHECK_INT(keel__status_from_sqlstate("57014"), KEEL_ERR_CANCELLED);
    CHECK_INT(keel__status_from_sqlstate("08006"), KEEL_ERR_CONNECTION_LOST);
    CHECK_INT(keel__status_from_sqlstate("08P01"), KEEL_ERR_PARAMETERS);
    CHECK_INT(keel__status_from_sqlstate("25P02"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__status_from_sqlstate("40001"), KEEL_ERR_TRANSACTION);
    CHECK_INT(keel__status_from_sqlstate("53300"), KEEL_ERR_OPERATIONAL);
    CHECK_INT(keel__status_from_sqlstate("0A000"), KEEL_ERR_UNSUPPORTED);
    CHECK_INT(keel__status_from_sqlstate("XX000"), KEEL_ERR_INTERNAL);
    CHECK_INT(keel__status_from_sqlstate("P0001"), KEEL_ERR_DATABASE);
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

int main(void) {
    RUN(every_status_has_a_name_and_description);
    RUN(error_set_fills_every_field);
    RUN(long_messages_are_truncated_not_overflowed);
    RUN(sqlstate_classes_map_to_statuses);
    RUN(redact_hides_passwords);
    return TEST_SUMMARY();
}
