/* src/cli/main.c - the keel command-line program: version, help and `keel check` of every configured database. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <keel/keel.h>

/* Exit codes: 0 success, 1 a database check failed, 2 usage or configuration error. */
enum { EXIT_CHECK_FAILED = 1, EXIT_USAGE = 2 };

/* How long `keel check` gives each database to connect and to answer, unless --timeout says. */
#define CHECK_TIMEOUT_DEFAULT "10"

/* The outcome of checking one database, kept until the table is printed. */
typedef struct check_row {
    const char *name;   /* owned by the keel_db */
    const char *engine; /* owned by the keel_db */
    int ok;
    long long latency_ms;
    keel_error err;
} check_row;

static void usage(FILE *out) {
    fputs("usage: keel <command> [arguments]\n"
          "\n"
          "commands:\n"
          "  check [--timeout SECONDS] [--verbose] [CONFIG]\n"
          "                   connect to every configured database, ping it and print\n"
          "                   a table of status and latency; exit 0 when all are ok, 1 otherwise.\n"
          "                   Each database gets SECONDS (default " CHECK_TIMEOUT_DEFAULT
          ") to connect, and as\n"
          "                   much again to answer: a silent server is an error, not a hang.\n"
          "                   --verbose (-v) also says where the configuration came from and\n"
          "                   lists the KEEL_... environment variables that were ignored\n"
          "  help             show this help\n"
          "\n"
          "options:\n"
          "  --version        print the version of keel and of libkeel\n"
          "  --help           show this help\n"
          "\n"
          "configuration: CONFIG, else the file named by $KEEL_CONFIG, else ./keel.yaml when it\n"
          "exists (a YAML file, or an SQLite database: *.db, *.sqlite, *.sqlite3); KEEL_...\n"
          "environment variables override it (KEEL_DATABASES__MAIN__URL sets databases.main.url);\n"
          "with no database configured, $DATABASE_URL. keel check refuses to run with nothing\n"
          "configured. Applications (keel.Database(), keel_db_open with no configuration) read\n"
          "$KEEL_CONFIG too, but not ./keel.yaml unless given its path.\n",
          out);
}

/*
 * Which configuration file to load: the argument, then $KEEL_CONFIG, then ./keel.yaml when it
 * exists. NULL means none, so the built-in default applies.
 */
static const char *config_path(const char *arg) {
    const char *env;

    if (arg)
        return arg;
    env = getenv("KEEL_CONFIG");
    if (env && *env)
        return env;
    if (access("keel.yaml", F_OK) == 0)
        return "keel.yaml";
    return NULL;
}

/*
 * Whether the configuration file path exists; else says so on stderr, as a YAML file that cannot
 * be read is reported, and returns 0. An SQLite database is opened with SQLite's create flag,
 * so without this `keel check note.db` (a typo) would create an empty database and report it ok.
 */
static int config_file_exists(const char *path) {
    if (access(path, F_OK) == 0)
        return 1;
    int e = errno;
    const char *dot = strrchr(path, '.');
    int sqlite_name =
        dot != NULL && (strcasecmp(dot, ".db") == 0 || strcasecmp(dot, ".sqlite") == 0 ||
                        strcasecmp(dot, ".sqlite3") == 0);
    fprintf(stderr, "keel: configuration error in %s: cannot read configuration file '%s': %s%s\n",
            path, path, strerror(e),
            sqlite_name ? " (keel check does not create an SQLite database)" : "");
    return 0;
}

/* What a user can set to configure keel, for the message of `keel check` with nothing set. */
#define HOW_TO_CONFIGURE                                                                           \
    "name a configuration file (keel check FILE, KEEL_CONFIG=FILE, or ./keel.yaml; a YAML file "   \
    "or an SQLite database such as notes.db), or set DATABASE_URL, or "                            \
    "KEEL_DATABASES__<NAME>__URL (docs/configuration.md)"

/* Prints the names of the KEEL_ variables cfg ignored ("none" when there are none). */
static void print_ignored(FILE *out, const keel_config *cfg) {
    size_t n = keel_config_ignored_env_count(cfg);
    fputs("ignored environment variables (not configuration keys):", out);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s %s", i ? "," : "", keel_config_ignored_env(cfg, i));
    fputs(n ? "\n" : " none\n", out);
}

/*
 * With nothing configured, says so on stderr, naming how to configure keel and any ignored
 * KEEL_ variable that looks like a misspelt key (it has levels), and returns 1; else 0.
 */
static int nothing_configured(const keel_config *cfg) {
    if (!keel_config_is_builtin_default(cfg))
        return 0;
    fputs("keel: check: nothing is configured, so there is no database to check: " HOW_TO_CONFIGURE
          ".\n",
          stderr);
    for (size_t i = 0; i < keel_config_ignored_env_count(cfg); i++) {
        const char *name = keel_config_ignored_env(cfg, i);
        if (strstr(name, "__"))
            fprintf(stderr,
                    "keel: check: %s was ignored: it names no configuration key (KEEL_DEFAULT, "
                    "KEEL_DATABASES__..., KEEL_POOL__..., KEEL_MIGRATIONS__..., KEEL_CACHE__..., "
                    "KEEL_SECURITY__..., KEEL_OBSERVABILITY__...)\n",
                    name);
    }
    return 1;
}

/*
 * Sets the connect timeout of every database of the validated cfg to timeout (seconds, as
 * text), then validates again. KEEL_OK or the error of keel_config_set.
 */
static keel_status bound_connects(keel_config *cfg, const char *timeout, keel_error *err) {
    char path[512];
    for (size_t i = 0; i < keel_config_database_count(cfg); i++) {
        snprintf(path, sizeof path, "databases.%s.connect_timeout",
                 keel_config_database_name(cfg, i));
        keel_status st = keel_config_set(cfg, path, timeout, err);
        if (st != KEEL_OK)
            return st;
    }
    return keel_config_validate(cfg, err);
}

/*
 * Builds and validates the configuration, every connect bounded by timeout (seconds, as text);
 * prints the reason and returns NULL on failure, or when nothing is configured. verbose: says
 * where the configuration came from and which KEEL_ variables were ignored, on stdout.
 */
static keel_config *load_config(const char *path, const char *timeout, int verbose) {
    keel_config *cfg = NULL;
    keel_error err;

    keel_error_clear(&err);
    if (keel_config_new(&cfg, &err) != KEEL_OK ||
        (path && keel_config_load_file(cfg, path, &err) != KEEL_OK) ||
        keel_config_apply_env(cfg, &err) != KEEL_OK || keel_config_validate(cfg, &err) != KEEL_OK) {
        fprintf(stderr, "keel: configuration error%s%s: %s\n", path ? " in " : "", path ? path : "",
                err.message[0] ? err.message : keel_strerror(err.code));
        keel_config_free(cfg);
        return NULL;
    }
    if (verbose) {
        if (keel_config_is_from_database_url(cfg))
            puts("configuration: DATABASE_URL (no file, no KEEL_... database variable)");
        else
            printf("configuration: %s%s, with KEEL_... environment overrides\n",
                   path ? "file " : "no file", path ? path : "");
        print_ignored(stdout, cfg);
    }
    if (nothing_configured(cfg)) {
        keel_config_free(cfg);
        return NULL;
    }
    if (bound_connects(cfg, timeout, &err) != KEEL_OK) {
        fprintf(stderr, "keel: configuration error%s%s: %s\n", path ? " in " : "", path ? path : "",
                err.message[0] ? err.message : keel_strerror(err.code));
        keel_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/*
 * Leases a connection (opening one on the first use) and pings the server. The latency is
 * the whole round trip the operator waits for, connection set-up included.
 */
static void check_database(keel_db *db, check_row *row, double timeout) {
    keel_conn *conn = NULL;
    int64_t start = keel_now_ms();

    keel_error_clear(&row->err);
    row->ok = keel_db_acquire_sync(db, row->name, &conn, &row->err) == KEEL_OK &&
              keel_conn_set_timeout(conn, timeout, &row->err) == KEEL_OK &&
              keel_conn_ping_sync(conn, &row->err) == KEEL_OK;
    row->latency_ms = (long long)(keel_now_ms() - start);
    keel_conn_release(conn);
}

static int max_int(int a, int b) { return a > b ? a : b; }

static void print_table(const check_row *rows, size_t n) {
    int wname = (int)strlen("DATABASE"), wengine = (int)strlen("ENGINE");
    size_t i;

    for (i = 0; i < n; i++) {
        wname = max_int(wname, (int)strlen(rows[i].name));
        wengine = max_int(wengine, (int)strlen(rows[i].engine));
    }
    printf("%-*s  %-*s  %-6s  %10s  %s\n", wname, "DATABASE", wengine, "ENGINE", "STATUS",
           "LATENCY_MS", "ERROR");
    for (i = 0; i < n; i++) {
        const check_row *r = &rows[i];
        if (r->ok) {
            printf("%-*s  %-*s  %-6s  %10lld\n", wname, r->name, wengine, r->engine, "ok",
                   r->latency_ms);
        } else {
            printf("%-*s  %-*s  %-6s  %10s  %s: %s\n", wname, r->name, wengine, r->engine, "error",
                   "-", keel_status_name(r->err.code),
                   r->err.message[0] ? r->err.message : keel_strerror(r->err.code));
        }
    }
}

/* The seconds of --timeout: a positive number of at most a day; -1 when text is not one. */
static double parse_timeout(const char *text) {
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || *end || !isfinite(v) || v <= 0 || v > 86400)
        return -1;
    return v;
}

static int cmd_check(int argc, char **argv) {
    keel_config *cfg;
    keel_db *db = NULL;
    keel_error err;
    check_row *rows;
    size_t n, i, failed = 0;
    const char *arg = NULL, *timeout_text = CHECK_TIMEOUT_DEFAULT;
    int verbose = 0;

    for (int a = 0; a < argc; a++) {
        if (strcmp(argv[a], "--timeout") == 0 && a + 1 < argc) {
            timeout_text = argv[++a];
        } else if (strcmp(argv[a], "--timeout") == 0) {
            fputs("keel: check: --timeout needs a number of seconds (--timeout 5)\n", stderr);
            return EXIT_USAGE;
        } else if (strncmp(argv[a], "--timeout=", 10) == 0) {
            timeout_text = argv[a] + 10;
        } else if (strcmp(argv[a], "--verbose") == 0 || strcmp(argv[a], "-v") == 0) {
            verbose = 1;
        } else if (argv[a][0] != '-' && !arg) {
            arg = argv[a];
        } else {
            fprintf(stderr, "keel: check: unexpected argument '%s'\n", argv[a]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    double timeout = parse_timeout(timeout_text);
    if (timeout < 0) {
        fprintf(stderr,
                "keel: check: --timeout takes a number of seconds greater than 0 (at most "
                "86400), got '%s'\n",
                timeout_text);
        return EXIT_USAGE;
    }
    const char *path = config_path(arg);
    if (path && !config_file_exists(path))
        return EXIT_USAGE;
    const char *env = getenv("KEEL_CONFIG");
    if (path && !arg && !(env && *env))
        fputs("keel: check: note: checking ./keel.yaml, found in the working directory; an "
              "application reads it only when given its path (keel.Database(\"keel.yaml\")) or "
              "KEEL_CONFIG=keel.yaml: keel.Database() and keel_db_open(NULL) read the file named "
              "by KEEL_CONFIG, else DATABASE_URL, else ./keel.db\n",
              stderr);
    cfg = load_config(path, timeout_text, verbose);
    if (!cfg)
        return EXIT_USAGE;
    keel_error_clear(&err);
    if (keel_db_open(&db, cfg, NULL, &err) != KEEL_OK) {
        fprintf(stderr, "keel: configuration error: %s\n", err.message);
        keel_config_free(cfg);
        return EXIT_USAGE;
    }
    keel_config_free(cfg);

    n = keel_db_database_count(db);
    rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows) {
        fputs("keel: out of memory\n", stderr);
        keel_db_close(db);
        return EXIT_CHECK_FAILED;
    }
    for (i = 0; i < n; i++) {
        const char *engine;
        rows[i].name = keel_db_database_name(db, i);
        engine = keel_db_database_engine(db, rows[i].name);
        rows[i].engine = engine ? engine : "?";
        check_database(db, &rows[i], timeout);
        if (!rows[i].ok)
            failed++;
    }
    print_table(rows, n);
    free(rows);
    keel_db_close(db);
    return failed ? EXIT_CHECK_FAILED : EXIT_SUCCESS;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : NULL;

    if (!cmd) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "--version") == 0 && argc == 2) {
        printf("keel %s (libkeel %s)\n", KEEL_VERSION_STRING, keel_version());
        return EXIT_SUCCESS;
    }
    if ((strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) &&
        argc == 2) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 2, argv + 2);
    fprintf(stderr, "keel: unknown command or wrong arguments: %s\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
