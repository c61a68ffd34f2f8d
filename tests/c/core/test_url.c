/* tests/c/core/test_url.c - database URL parsing, its error messages and redaction. */
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "test.h"

/* Parses url expecting success; on failure prints the message so the test output explains it. */
static int parse_ok(const char *url, keel__url *u) {
    keel_error err;
    keel_error_clear(&err);
    keel_status st = keel__url_parse(url, u, &err);
    if (st != KEEL_OK)
        fprintf(stderr, "  unexpected error for %s: %s\n", url, err.message);
    return st == KEEL_OK;
}

/* Parses url into *u, or records a failure and leaves the test. */
#define PARSE_OR_FAIL(url, u)                                                                      \
    do {                                                                                           \
        if (!parse_ok((url), (u))) {                                                               \
            CHECK(!"the URL should parse");                                                        \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Parses url expecting KEEL_ERR_URL; the message must contain want and never secret. */
static void check_bad(const char *url, const char *want, const char *secret) {
    keel__url u;
    keel_error err;
    keel_error_clear(&err);
    keel_status st = keel__url_parse(url, &u, &err);
    CHECK_INT(st, KEEL_ERR_URL);
    CHECK_INT(err.code, KEEL_ERR_URL);
    CHECK_CONTAINS(err.message, want);
    if (secret && strstr(err.message, secret)) {
        fprintf(stderr, "  message for %s leaks '%s': %s\n", url, secret, err.message);
        CHECK(!"the message contains the secret");
    }
    if (st == KEEL_OK)
        keel__url_free(&u);
}

TEST(postgresql_full) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://alice:s3cret@db.example.com:5433/orders", &u);
    CHECK_STR(u.scheme, "postgresql");
    CHECK_STR(u.user, "alice");
    CHECK_STR(u.password, "s3cret");
    CHECK_STR(u.host, "db.example.com");
    CHECK_INT(u.port, 5433);
    CHECK_STR(u.path, "orders");
    CHECK_INT(u.nparams, 0);
    keel__url_free(&u);
}

TEST(postgres_alias_and_case) {
    keel__url u;
    PARSE_OR_FAIL("POSTGRES://127.0.0.1/app", &u);
    CHECK_STR(u.scheme, "postgresql");
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_INT(u.port, 0);
    CHECK(u.user == NULL);
    CHECK(u.password == NULL);
    CHECK_STR(u.path, "app");
    keel__url_free(&u);

    PARSE_OR_FAIL("PostgreSQL://h", &u);
    CHECK_STR(u.scheme, "postgresql");
    CHECK_STR(u.host, "h");
    CHECK(u.path == NULL);
    keel__url_free(&u);
}

TEST(ipv6_hosts) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://u@[::1]:6432/db", &u);
    CHECK_STR(u.host, "::1");
    CHECK_INT(u.port, 6432);
    CHECK_STR(u.user, "u");
    keel__url_free(&u);

    PARSE_OR_FAIL("postgresql://[2001:db8::7]/db", &u);
    CHECK_STR(u.host, "2001:db8::7");
    CHECK_INT(u.port, 0);
    keel__url_free(&u);

    PARSE_OR_FAIL("postgresql://[fe80::1%25eth0]:5432/db", &u);
    CHECK_STR(u.host, "fe80::1%eth0");
    keel__url_free(&u);
}

TEST(percent_encoded_credentials) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://bob%40corp:p%40ss%3Aw%2Ford%25%3F@host/my%20db", &u);
    CHECK_STR(u.user, "bob@corp");
    CHECK_STR(u.password, "p@ss:w/ord%?");
    CHECK_STR(u.host, "host");
    CHECK_STR(u.path, "my db");
    keel__url_free(&u);

    /* An unencoded '@' or '/' in the password still parses: the last '@' ends the userinfo. */
    PARSE_OR_FAIL("postgresql://bob:p@ss/w@host:5432/db", &u);
    CHECK_STR(u.password, "p@ss/w");
    CHECK_STR(u.host, "host");
    CHECK_INT(u.port, 5432);
    CHECK_STR(u.path, "db");
    keel__url_free(&u);

    /* An empty password is kept as empty, distinct from none. */
    PARSE_OR_FAIL("postgresql://bob:@host/db", &u);
    CHECK_STR(u.user, "bob");
    CHECK_STR(u.password, "");
    keel__url_free(&u);
}

TEST(socket_directory_host) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://%2Fvar%2Frun%2Fpostgresql/app", &u);
    CHECK_STR(u.host, "/var/run/postgresql");
    CHECK_STR(u.path, "app");
    keel__url_free(&u);
}

TEST(query_parameters) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://h/db?sslmode=require&application_name=my+app&&x=a%20b%26c&empty=",
                  &u);
    CHECK_INT(u.nparams, 4);
    if (u.nparams == 4) {
        CHECK_STR(u.keys[0], "sslmode");
        CHECK_STR(u.values[0], "require");
        CHECK_STR(u.keys[1], "application_name");
        CHECK_STR(u.values[1], "my+app"); /* '+' is not a space in database URLs */
        CHECK_STR(u.keys[2], "x");
        CHECK_STR(u.values[2], "a b&c");
        CHECK_STR(u.keys[3], "empty");
        CHECK_STR(u.values[3], "");
    }
    keel__url_free(&u);

    PARSE_OR_FAIL("postgresql://h?connect_timeout=3", &u);
    CHECK(u.path == NULL);
    CHECK_INT(u.nparams, 1);
    keel__url_free(&u);
}

TEST(sqlite_forms) {
    keel__url u;
    PARSE_OR_FAIL("sqlite:///relative/path.db", &u);
    CHECK_STR(u.scheme, "sqlite");
    CHECK_STR(u.path, "relative/path.db");
    CHECK(u.host == NULL);
    keel__url_free(&u);

    PARSE_OR_FAIL("sqlite:////abs/path.db", &u);
    CHECK_STR(u.path, "/abs/path.db");
    keel__url_free(&u);

    PARSE_OR_FAIL("sqlite:///:memory:", &u);
    CHECK_STR(u.path, ":memory:");
    keel__url_free(&u);

    PARSE_OR_FAIL("sqlite::memory:", &u);
    CHECK_STR(u.path, ":memory:");
    keel__url_free(&u);

    PARSE_OR_FAIL("sqlite://", &u);
    CHECK_STR(u.path, ":memory:");
    keel__url_free(&u);

    PARSE_OR_FAIL("SQLite:///data/my%20app.db?busy_timeout=5000&journal_mode=wal", &u);
    CHECK_STR(u.path, "data/my app.db");
    CHECK_INT(u.nparams, 2);
    if (u.nparams == 2) {
        CHECK_STR(u.keys[0], "busy_timeout");
        CHECK_STR(u.values[0], "5000");
        CHECK_STR(u.keys[1], "journal_mode");
        CHECK_STR(u.values[1], "wal");
    }
    keel__url_free(&u);

    PARSE_OR_FAIL("sqlite::memory:?busy_timeout=10", &u);
    CHECK_STR(u.path, ":memory:");
    CHECK_INT(u.nparams, 1);
    keel__url_free(&u);
}

TEST(later_engines) {
    keel__url u;
    PARSE_OR_FAIL("mysql://root@127.0.0.1:3306/shop", &u);
    CHECK_STR(u.scheme, "mysql");
    CHECK_INT(u.port, 3306);
    CHECK_STR(u.path, "shop");
    keel__url_free(&u);

    PARSE_OR_FAIL("mariadb://root:pw@localhost/shop", &u);
    CHECK_STR(u.scheme, "mariadb");
    keel__url_free(&u);

    PARSE_OR_FAIL("mongodb://app:pw@h1:27017,h2,[::1]:27018/admin?replicaSet=rs0", &u);
    CHECK_STR(u.scheme, "mongodb");
    CHECK_STR(u.host, "h1:27017,h2,[::1]:27018");
    CHECK_INT(u.port, 0);
    CHECK_STR(u.path, "admin");
    CHECK_STR(u.password, "pw");
    keel__url_free(&u);

    PARSE_OR_FAIL("mongodb+srv://cluster0.example.net/?retryWrites=true", &u);
    CHECK_STR(u.scheme, "mongodb+srv");
    CHECK_STR(u.host, "cluster0.example.net");
    CHECK(u.path == NULL);
    keel__url_free(&u);
}

/* SQLAlchemy's and encode/databases' SCHEME+DRIVER URLs: the driver part is ignored. */
TEST(driver_suffixes_are_ignored) {
    static const struct {
        const char *url, *scheme;
    } cases[] = {
        { "postgresql+asyncpg://u:pw@h:5433/app", "postgresql" },
        { "postgresql+psycopg://u@h/app", "postgresql" },
        { "POSTGRESQL+PSYCOPG2://u@h/app", "postgresql" },
        { "postgres+asyncpg://u@h/app", "postgresql" },
        { "mysql+aiomysql://root@h:3306/app", "mysql" },
        { "mysql+asyncmy://root@h/app", "mysql" },
        { "mysql+pymysql://root@h/app", "mysql" },
        { "mysql+mysql_connector://root@h/app", "mysql" },
        { "mariadb+mariadbconnector://root@h/app", "mariadb" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keel__url u;
        PARSE_OR_FAIL(cases[i].url, &u);
        CHECK_STR(u.scheme, cases[i].scheme);
        CHECK_STR(u.host, "h");
        CHECK_STR(u.path, "app");
        keel__url_free(&u);
    }
    keel__url u;
    PARSE_OR_FAIL("postgresql+asyncpg://u:pw@h:5433/app?sslmode=disable", &u);
    CHECK_INT(u.port, 5433);
    CHECK_STR(u.password, "pw");
    CHECK_INT(u.nparams, 1);
    keel__url_free(&u);
    PARSE_OR_FAIL("sqlite+aiosqlite:///data/app.db", &u);
    CHECK_STR(u.scheme, "sqlite");
    CHECK_STR(u.path, "data/app.db");
    keel__url_free(&u);
    /* An unknown base, an empty driver, two drivers, and mongodb (whose +srv is a scheme of
     * its own) are still refused. */
    check_bad("foo+asyncpg://u:hunter2@h/db", "unsupported URL scheme 'foo+asyncpg'", "hunter2");
    check_bad("foo+asyncpg://u@h/db", "a SQL scheme may carry a driver", NULL);
    check_bad("oracle+cx_oracle://u@h/db", "unsupported URL scheme 'oracle+cx_oracle'", NULL);
    check_bad("postgresql+://u:hunter2@h/db", "unsupported URL scheme 'postgresql+'", "hunter2");
    check_bad("postgresql+a+b://u@h/db", "unsupported URL scheme 'postgresql+a+b'", NULL);
    check_bad("mongodb+motor://u:hunter2@h/db", "unsupported URL scheme 'mongodb+motor'",
              "hunter2");
}

TEST(bad_ports) {
    check_bad("postgresql://u:hunter2@h:abc/db", "invalid port 'abc'", "hunter2");
    check_bad("postgresql://u:hunter2@h:0/db", "invalid port '0'", "hunter2");
    check_bad("postgresql://u:hunter2@h:70000/db", "invalid port '70000'", "hunter2");
    check_bad("postgresql://u:hunter2@h:/db", "invalid port ''", "hunter2");
    check_bad("postgresql://u:hunter2@h:-5/db", "invalid port '-5'", "hunter2");
    check_bad("postgresql://h:99999999999999999999/db", "invalid port", NULL);
    /* The message shows the URL, with the password masked. */
    check_bad("postgresql://u:hunter2@h:abc/db", "'postgresql://u:***@h:abc/db'", "hunter2");
}

TEST(bad_schemes) {
    check_bad("foo://u:hunter2@h/db", "unsupported URL scheme 'foo'", "hunter2");
    check_bad("foo://u:hunter2@h/db", "expected postgresql", "hunter2");
    check_bad("localhost/db", "missing scheme", NULL);
    check_bad("//u:hunter2@h/db", "missing scheme", "hunter2");
    check_bad("u:hunter2@h/db", "unsupported URL scheme 'u'", "hunter2");
    check_bad("", "empty", NULL);
    check_bad("postgresql:u:hunter2@h/db", "expected '//' after 'postgresql:'", "hunter2");
    check_bad("sqlite:relative.db", "expected '//' after 'sqlite:'", NULL);
}

TEST(bad_hosts) {
    check_bad("postgresql://u:hunter2@[::1/db", "unterminated IPv6 address", "hunter2");
    check_bad("postgresql://u:hunter2@[::1]x/db", "after the IPv6 address", "hunter2");
    check_bad("postgresql://[zz::1]/db", "invalid IPv6 address", NULL);
    check_bad("postgresql://u:hunter2@/db", "missing host in postgresql URL", "hunter2");
    check_bad("postgresql:///db", "missing host in postgresql URL", NULL);
    check_bad("postgresql://u:hunter2@:5432/db", "missing host", "hunter2");
    check_bad("postgresql://h1,h2/db", "several hosts are not supported", NULL);
    check_bad("postgresql://ho$t/db", "invalid character '$' in the host", NULL);
    check_bad("postgresql://h\xc3\xb4st/db", "invalid byte 0xC3 in the host (host names are ASCII",
              NULL);
    check_bad("mongodb+srv://u:hunter2@c.example.net:27017/", "port is not allowed", "hunter2");
    check_bad("sqlite://somehost/x.db", "unexpected host or credentials", NULL);
    check_bad("sqlite://u:hunter2@/x.db", "unexpected host or credentials", "hunter2");
}

TEST(bad_query_and_escapes) {
    check_bad("postgresql://u:hunter2@h/db?sslmode", "query parameter 'sslmode' has no value",
              "hunter2");
    check_bad("postgresql://h/db?a=1&=2", "empty name", NULL);
    check_bad("postgresql://h/my%zzdb", "invalid percent-escape '%zz' in the database name", NULL);
    check_bad("postgresql://h/db%2", "invalid percent-escape '%2' in the database name", NULL);
    check_bad("postgresql://h/db%00x", "invalid percent-escape", NULL);
    check_bad("postgresql://u:hun%zzter2@h/db", "invalid percent-escape in the password",
              "hun%zzter2");
    check_bad("postgresql://u:hun%zzter2@h/db", "invalid percent-escape in the password", "zzter2");
    check_bad("postgresql://h/db?password=hun%zzter2", "invalid percent-escape", "zzter2");
    check_bad("postgresql://u:hunter2@h/db name", "whitespace or control character at offset",
              "hunter2");
}

TEST(password_with_unencoded_question_mark_is_not_echoed) {
    /* The '?' makes the password look like host and port; neither may appear in the message. */
    check_bad("postgresql://u:topsecret?xyz@host:5432/db", "invalid port", "topsecret");
    check_bad("postgresql://u:topsecret?xyz@host:5432/db", "percent-encode", "xyz");
}

TEST(query_parameter_without_value_is_echoed_redacted) {
    /* A parameter written without '=' is shown through the redactor: it may be a secret with a
     * ':' for its separator, or a piece of a password the '?' cut off (tests/fuzz/fuzz_url). */
    check_bad("postgresql://h/db?sslpassword:hunter2", "query parameter 'sslpassword:***'",
              "hunter2");
    check_bad("postgresql://h/db?x=1&postgresql://u:hunter2@h", "has no value", "hunter2");
}

TEST(query_parameter_echo_hides_what_the_url_redaction_hides) {
    /* A URL nested in the query whose password holds an unencoded '&' (or whose user name
     * does): the piece after the '&' has no '=', and its echo showed the password that the
     * URL quoted in the same message hides (tests/fuzz/url/crash-510e834c…). */
    check_bad("sqlite:///app.db?mirror=postgresql://bob:hunter2&x9@h/db",
              "query parameter '***@h/db' has no value", "x9@");
    check_bad("sqlite:///app.db?mirror=postgresql://bob&ops:hunter2@h/db",
              "query parameter '***@h/db' has no value", "hunter2");
    check_bad("postgresql://h/db?mirror=postgresql://bob:hunter2&x9@h/db",
              "query parameter '***@h/db' has no value", "x9@");
    /* The echo agrees with the quoted URL on secret parameters without '=' too. */
    check_bad("postgresql://h/db?token:abc123", "query parameter 'token:***' has no value",
              "abc123");
    check_bad("postgresql://h/db?mytokenabc123", "query parameter '***' has no value", "abc123");
}

TEST(redaction) {
    struct {
        const char *in, *out;
    } cases[] = {
        { "postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db" },
        { "postgresql://u@h/db", "postgresql://u@h/db" },
        { "postgresql://h/db?sslmode=require", "postgresql://h/db?sslmode=require" },
        { "postgresql://u:s@cr/et@h/db?password=x&sslmode=require&SSLPassword=y",
          "postgresql://u:***@h/db?password=***&sslmode=require&SSLPassword=***" },
        { "u:secret@h/db", "u:***@h/db" },
        { "postgresql://u:sec?ret@h/db", "postgresql://u:***@h/db" },
        { "sqlite::memory:", "sqlite::memory:" },
        { "postgresql://h/db?sslpassword:x&token=y&mytoken&password=",
          "postgresql://h/db?sslpassword:***&token=***&***&password=***" },
        { "sqlite:///a.db?m=postgresql://u:p&q@h&password=z",
          "sqlite:///a.db?m=postgresql:***@h&password=***" },
        { "", "" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = keel__url_redact(cases[i].in);
        CHECK_STR(r, cases[i].out);
        free(r);
    }
}

TEST(free_is_idempotent) {
    keel__url u;
    PARSE_OR_FAIL("postgresql://u:p@h/db?a=b", &u);
    keel__url_free(&u);
    keel__url_free(&u);
    keel__url_free(NULL);
    CHECK(u.scheme == NULL);
    CHECK_INT(u.nparams, 0);
}

int main(void) {
    RUN(postgresql_full);
    RUN(postgres_alias_and_case);
    RUN(ipv6_hosts);
    RUN(percent_encoded_credentials);
    RUN(socket_directory_host);
    RUN(query_parameters);
    RUN(sqlite_forms);
    RUN(later_engines);
    RUN(bad_ports);
    RUN(bad_schemes);
    RUN(driver_suffixes_are_ignored);
    RUN(bad_hosts);
    RUN(bad_query_and_escapes);
    RUN(password_with_unencoded_question_mark_is_not_echoed);
    RUN(query_parameter_without_value_is_echoed_redacted);
    RUN(query_parameter_echo_hides_what_the_url_redaction_hides);
    RUN(redaction);
    RUN(free_is_idempotent);
    return TEST_SUMMARY();
}
