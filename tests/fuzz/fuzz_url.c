/* tests/fuzz/fuzz_url.c - libFuzzer target: the database URL parser and both redactors. */
#include "fuzz.h"

#include "core/error_int.h"
#include "core/url.h"

/*
 * The password as written in a server URL (scheme://user:password@host…), located the way the
 * parser does: the userinfo ends at the last '@' before the query. NULL when there is none.
 */
static char *raw_password(const char *url) {
    const char *sep = strstr(url, "://");
    if (!sep)
        return NULL;
    const char *rest = sep + 3;
    const char *q = strchr(rest, '?');
    const char *end = q ? q : rest + strlen(rest);
    const char *at = NULL;
    for (const char *p = rest; p < end; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return NULL;
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    if (!colon)
        return NULL;
    size_t n = (size_t)(at - colon - 1);
    char *pw = malloc(n + 1);
    FUZZ_ASSERT(pw != NULL);
    memcpy(pw, colon + 1, n);
    pw[n] = '\0';
    return pw;
}

/*
 * A password that the redacted text could only contain by failing to mask it: long enough not
 * to occur by chance, free of the characters the mask, the userinfo delimiters and the quotes
 * of messages bring, and written once in the URL.
 */
static int checkable(const char *url, const char *pw) {
    /* Messages quote the URL: a password ending in a quote would match the quote they add. */
    return strlen(pw) >= 3 && !strpbrk(pw, "*:@'") && fuzz_count(url, pw) == 1;
}

/*
 * The fixed text of the parser's error messages (its hints). A guessed password that occurs in
 * them ("//u", "user") is found in a message without having been echoed, so the check of
 * failed parses allows as many occurrences as these hold.
 */
static const char fixed_text[] =
    "expected '//' after 'sqlite:' expected a number from 1 to 65535 "
    "expected e.g. postgresql://user@host/db or sqlite:///path.db expected key=value "
    "percent-encode it percent-encode reserved characters such as '@', ':', '/' and '?' in the "
    "user name and password use sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "sqlite::memory: write '%' as %25 expected postgresql, postgres, sqlite, mysql, mariadb, "
    "mongodb or mongodb+srv (a SQL scheme may carry a driver, as postgresql+asyncpg: it is "
    "ignored)";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *url = fuzz_cstring(data, size);
    keel__url u;
    keel_error err;
    keel_error_clear(&err);
    keel_status st = keel__url_parse(url, &u, &err);
    char *pw = NULL;
    if (st == KEEL_OK) {
        FUZZ_ASSERT(u.scheme != NULL);
        FUZZ_ASSERT(u.port >= 0 && u.port <= 65535);
        FUZZ_ASSERT(strcmp(u.scheme, "sqlite") != 0 || u.path != NULL);
        for (size_t i = 0; i < u.nparams; i++)
            FUZZ_ASSERT(u.keys[i] && u.values[i] && u.keys[i][0]);
        if (u.password)
            pw = raw_password(url);
        keel__url_free(&u);
    } else {
        FUZZ_ASSERT(err.code == st);
        FUZZ_ASSERT(memchr(err.message, '\0', sizeof err.message) != NULL);
    }

    /* Both redactors must hide a password the parser accepted, and keel__url_redact must fit
     * the size it computes. */
    char *shown = keel__url_redact(url);
    FUZZ_ASSERT(shown != NULL);
    size_t cap = 2 * strlen(url) + 64;
    char *redacted = malloc(cap);
    FUZZ_ASSERT(redacted != NULL);
    keel__redact(redacted, cap, url);
    FUZZ_ASSERT(strlen(redacted) < cap);
    if (pw && checkable(url, pw)) {
        FUZZ_ASSERT(strstr(shown, pw) == NULL);
        FUZZ_ASSERT(strstr(redacted, pw) == NULL);
        FUZZ_ASSERT(strstr(err.message, pw) == NULL);
    }
    /* A failed parse must not echo what it takes for a password either. */
    if (st != KEEL_OK) {
        /* Messages around the URL are made of words ("unsupported" holds "upp"): a guess must
         * be long enough not to be found in them by chance. */
        char *guess = raw_password(url);
        if (guess && strlen(guess) >= 6 && checkable(url, guess))
            FUZZ_ASSERT(fuzz_count(err.message, guess) <= fuzz_count(fixed_text, guess));
        free(guess);
    }
    free(redacted);
    free(shown);
    free(pw);
    free(url);
    return 0;
}
