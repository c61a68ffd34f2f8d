/* tests/c/engines/test_engine.c - the engine registry and the SQL the SQL engines share: transaction statements, quoted identifiers, bulk-load targets. */
#include "core/buf.h"
#include "engines/engine.h"
#include "test.h"

TEST(engines_are_found_by_name_and_by_url_scheme) {
    CHECK(keel__engine_find("postgresql") == &keel__engine_postgresql);
    CHECK(keel__engine_find("sqlite") == &keel__engine_sqlite);
    CHECK(keel__engine_find("mysql") == &keel__engine_mysql);
    CHECK(keel__engine_find("mongodb") == &keel__engine_mongodb);
    CHECK(keel__engine_find("postgres") == NULL); /* a scheme, not an engine name */
    CHECK(keel__engine_find("") == NULL);
    CHECK(keel__engine_find(NULL) == NULL);
    CHECK(keel__engine_for_scheme("postgres") == &keel__engine_postgresql);
    CHECK(keel__engine_for_scheme("mariadb") == &keel__engine_mysql);
    CHECK(keel__engine_for_scheme("mongodb+srv") == &keel__engine_mongodb);
    CHECK(keel__engine_for_scheme("sqlite") == &keel__engine_sqlite);
    CHECK(keel__engine_for_scheme("oracle") == NULL);
    CHECK(keel__engine_for_scheme(NULL) == NULL);
}

TEST(transaction_statements_name_their_savepoint) {
    keel__buf b = { 0 };
    static const struct {
        keel_txn_op op;
        unsigned depth;
        const char *sql;
    } cases[] = {
        { KEEL_TXN_BEGIN, 0, "BEGIN" },
        { KEEL_TXN_COMMIT, 0, "COMMIT" },
        { KEEL_TXN_ROLLBACK, 0, "ROLLBACK" },
        { KEEL_TXN_SAVEPOINT, 2, "SAVEPOINT keel_sp_2" },
        { KEEL_TXN_RELEASE, 2, "RELEASE SAVEPOINT keel_sp_2" },
        { KEEL_TXN_ROLLBACK_TO, 17, "ROLLBACK TO SAVEPOINT keel_sp_17" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_INT(keel__txn_sql(cases[i].op, cases[i].depth, &b), 0);
        CHECK_STR(b.data, cases[i].sql);
    }
    /* A value outside the enum (a caller's cast) builds no statement. */
    CHECK_INT(keel__txn_sql((keel_txn_op)99, 0, &b), -1);
    keel__buf_free(&b);
}

TEST(identifiers_are_quoted_with_quotes_doubled) {
    keel__buf b = { 0 };
    CHECK_INT(keel__quote_ident(&b, "plain", '"'), 0);
    CHECK_STR(b.data, "\"plain\"");
    keel__buf_reset(&b);
    CHECK_INT(keel__quote_ident(&b, "a\"b\"\"c\"", '"'), 0);
    CHECK_STR(b.data, "\"a\"\"b\"\"\"\"c\"\"\"");
    keel__buf_reset(&b);
    /* MySQL's backquotes: the other quote character passes through unchanged. */
    CHECK_INT(keel__quote_ident(&b, "it's `x` \"y\"", '`'), 0);
    CHECK_STR(b.data, "`it's ``x`` \"y\"`");
    keel__buf_reset(&b);
    CHECK_INT(keel__quote_ident(&b, "", '"'), 0);
    CHECK_STR(b.data, "\"\"");
    keel__buf_free(&b);
}

TEST(bulk_load_targets_name_schema_table_and_columns) {
    keel__buf b = { 0 };
    const char *const cols[] = { "id", "na\"me" };
    keel__copy copy = { .schema = "app", .table = "my table", .columns = cols, .ncols = 2 };
    CHECK_INT(keel__copy_target(&b, &copy, '"', 1), 0);
    CHECK_STR(b.data, "\"app\".\"my table\" (\"id\", \"na\"\"me\")");
    keel__buf_reset(&b);
    CHECK_INT(keel__copy_target(&b, &copy, '`', 0), 0);
    CHECK_STR(b.data, "`app`.`my table`");
    keel__buf_reset(&b);
    copy.schema = NULL;
    copy.columns = NULL;
    CHECK_INT(keel__copy_target(&b, &copy, '"', 1), 0);
    CHECK_STR(b.data, "\"my table\"");
    keel__buf_free(&b);
}

int main(void) {
    RUN(engines_are_found_by_name_and_by_url_scheme);
    RUN(transaction_statements_name_their_savepoint);
    RUN(identifiers_are_quoted_with_quotes_doubled);
    RUN(bulk_load_targets_name_schema_table_and_columns);
    return TEST_SUMMARY();
}
