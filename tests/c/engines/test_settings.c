/* tests/c/engines/test_settings.c - shared config checks, secret resolution, word lists. */
#include <stdlib.h>

#include "engines/settings.h"
#include "test.h"

static keel__dbconfig dbconfig(const char *name, int port, double connect_timeout) {
    keel__dbconfig dbc;
    memset(&dbc, 0, sizeof dbc);
    dbc.name = (char *)name;
    dbc.port = port;
    dbc.connect_timeout = connect_timeout;
    return dbc;
}

TEST(check_network_accepts_default_and_real_ports) {
    keel_error err;
    keel__dbconfig dbc = dbconfig("main", 0, 0);
    CHECK_INT(keel__settings_check_network(&dbc, "postgresql", &err), KEEL_OK);
    dbc.port = 1;
    CHECK_INT(keel__settings_check_network(&dbc, "postgresql", &err), KEEL_OK);
    dbc.port = 65535;
    dbc.connect_timeout = 2.5;
    CHECK_INT(keel__settings_check_network(&dbc, "mysql", &err), KEEL_OK);
}

TEST(check_network_names_the_bad_key_and_the_engine) {
    keel_error err;
    keel__dbconfig dbc = dbconfig("orders", 65536, 0);
    CHECK_INT(keel__settings_check_network(&dbc, "mysql", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "databases.orders.port: 65536 is not a TCP port (1-65535)");
    CHECK_STR(err.engine, "mysql");
    CHECK_STR(err.database, "orders");
    dbc.port = -1;
    CHECK_INT(keel__settings_check_network(&dbc, "mongodb", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "databases.orders.port: -1 is not a TCP port (1-65535)");
    CHECK_STR(err.engine, "mongodb");
    dbc.port = 5432;
    dbc.connect_timeout = -0.5;
    CHECK_INT(keel__settings_check_network(&dbc, "postgresql", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "databases.orders.connect_timeout: must not be negative");
    /* A config without a name still gets a message, naming no database. */
    dbc.name = NULL;
    CHECK_INT(keel__settings_check_network(&dbc, "postgresql", &err), KEEL_ERR_CONFIG);
    CHECK_STR(err.message, "databases..connect_timeout: must not be negative");
}

TEST(resolve_copies_plain_values_and_reads_secret_references) {
    keel_error err;
    keel__dbconfig dbc = dbconfig("main", 0, 0);
    char *out = NULL;
    CHECK_INT(keel__settings_resolve(&dbc, "user", "app", &out, &err), KEEL_OK);
    CHECK_STR(out, "app");
    free(out);
    out = NULL;
    CHECK_INT(keel__settings_resolve(&dbc, "host", NULL, &out, &err), KEEL_OK);
    CHECK_STR(out, "");
    free(out);
    out = NULL;
    setenv("KEEL_TEST_SETTINGS_SECRET", "s3cret-value", 1);
    CHECK_INT(keel__settings_resolve(&dbc, "password", "pre-${env:KEEL_TEST_SETTINGS_SECRET}", &out,
                                     &err),
              KEEL_OK);
    CHECK_STR(out, "pre-s3cret-value");
    free(out);
    unsetenv("KEEL_TEST_SETTINGS_SECRET");
}

TEST(resolve_errors_name_the_key_path_never_the_value) {
    keel_error err;
    keel__dbconfig dbc = dbconfig("billing", 0, 0);
    char *out = (char *)"untouched";
    unsetenv("KEEL_TEST_SETTINGS_MISSING");
    CHECK_INT(
        keel__settings_resolve(&dbc, "password", "${env:KEEL_TEST_SETTINGS_MISSING}", &out, &err),
        KEEL_ERR_CONFIG);
    CHECK(out == NULL);
    CHECK_CONTAINS(err.message, "databases.billing.password: environment variable "
                                "'KEEL_TEST_SETTINGS_MISSING' is not set");

    keel__option opt = { (char *)"sslrootcert", (char *)"${file:/nonexistent/keel/ca.pem}" };
    CHECK_INT(keel__settings_resolve_option(&dbc, &opt, &out, &err), KEEL_ERR_CONFIG);
    CHECK_CONTAINS(err.message, "databases.billing.options.sslrootcert");
}

TEST(resolve_option_reads_the_option_value) {
    keel_error err;
    keel__dbconfig dbc = dbconfig("main", 0, 0);
    char *out = NULL;
    keel__option opt = { (char *)"application_name", (char *)"api" };
    CHECK_INT(keel__settings_resolve_option(&dbc, &opt, &out, &err), KEEL_OK);
    CHECK_STR(out, "api");
    free(out);
    out = NULL;
    keel__option empty = { (char *)"sslmode", NULL };
    CHECK_INT(keel__settings_resolve_option(&dbc, &empty, &out, &err), KEEL_OK);
    CHECK_STR(out, "");
    free(out);
}

TEST(is_seconds_takes_non_negative_decimal_numbers) {
    static const char *const good[] = { "0", "30", "2.5", ".5", "1e1", "0.000", NULL };
    static const char *const bad[] = {
        "", " ", "-1", "-0.5", "5s", "1,5", "abc", "nan", "1 ", NULL
    };
    for (const char *const *v = good; *v; v++) {
        if (!keel__settings_is_seconds(*v))
            fprintf(stderr, "  refused \"%s\"\n", *v);
        CHECK_INT(keel__settings_is_seconds(*v), 1);
    }
    for (const char *const *v = bad; *v; v++) {
        if (keel__settings_is_seconds(*v))
            fprintf(stderr, "  accepted \"%s\"\n", *v);
        CHECK_INT(keel__settings_is_seconds(*v), 0);
    }
}

TEST(word_in_list_matches_whole_words_exactly) {
    static const char *const modes[] = { "disable", "prefer", "require", NULL };
    static const char *const none[] = { NULL };
    CHECK_INT(keel__word_in_list("disable", modes), 1);
    CHECK_INT(keel__word_in_list("require", modes), 1);
    CHECK_INT(keel__word_in_list("Require", modes), 0);
    CHECK_INT(keel__word_in_list("requir", modes), 0);
    CHECK_INT(keel__word_in_list("required", modes), 0);
    CHECK_INT(keel__word_in_list("", modes), 0);
    CHECK_INT(keel__word_in_list("disable", none), 0);
}

int main(void) {
    RUN(check_network_accepts_default_and_real_ports);
    RUN(check_network_names_the_bad_key_and_the_engine);
    RUN(resolve_copies_plain_values_and_reads_secret_references);
    RUN(resolve_errors_name_the_key_path_never_the_value);
    RUN(resolve_option_reads_the_option_value);
    RUN(is_seconds_takes_non_negative_decimal_numbers);
    RUN(word_in_list_matches_whole_words_exactly);
    return TEST_SUMMARY();
}
