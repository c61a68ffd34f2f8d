/* tests/c/cli/test_cli.c - the keel program run as an operator runs it: exit codes, output, configuration errors. */
#include <errno.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "test.h"

extern char **environ;

/* The keel program under test (the first argument, given by tests/c/meson.build). */
static const char *keel_path;

/* A directory of this run's files (configuration files, the working directory of `check`). */
static char tmpdir[] = "/tmp/keel-test-cli-XXXXXX";

/* What one run of the program did. */
typedef struct run_result {
    int status; /* exit code, or 128 + signal */
    char out[8192];
    char err[8192];
} run_result;

/* Appends what can be read from fd to buf (len bytes so far, cap in all); 0 at end of file. */
static int drain(int fd, char *buf, size_t *len, size_t cap) {
    char scratch[1024];
    ssize_t n = read(fd, scratch, sizeof scratch);
    if (n <= 0)
        return n < 0 && errno == EINTR;
    size_t keep = (size_t)n < cap - 1 - *len ? (size_t)n : cap - 1 - *len;
    memcpy(buf + *len, scratch, keep);
    *len += keep;
    buf[*len] = '\0';
    return 1;
}

/*
 * Runs keel with the arguments args (NULL-ended) in the directory cwd (NULL: this one). The
 * environment is this process's without any KEEL_ variable or DATABASE_URL, so that the
 * developer's own settings play no part, plus env (NAME=value strings, NULL-ended).
 */
static void run_keel(run_result *r, const char *cwd, const char *const *env,
                     const char *const *args) {
    const char *argv[16] = { keel_path };
    const char *envp[256];
    size_t na = 1, ne = 0;
    int out[2], err[2];

    for (size_t i = 0; args[i] && na < 15; i++)
        argv[na++] = args[i];
    argv[na] = NULL;
    for (char **e = environ; *e && ne < 200; e++)
        if (strncmp(*e, "KEEL_", 5) != 0 && strncmp(*e, "DATABASE_URL=", 13) != 0)
            envp[ne++] = *e;
    for (size_t i = 0; env && env[i] && ne < 255; i++)
        envp[ne++] = env[i];
    envp[ne] = NULL;

    memset(r, 0, sizeof *r);
    r->status = -1;
    if (pipe(out) != 0 || pipe(err) != 0) {
        perror("pipe");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        close(out[0]);
        close(err[0]);
        if (cwd && chdir(cwd) != 0)
            _exit(126);
        execve(keel_path, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    size_t lout = 0, lerr = 0;
    struct pollfd fds[2] = { { out[0], POLLIN, 0 }, { err[0], POLLIN, 0 } };
    int open_fds = 2;
    while (open_fds > 0 && poll(fds, 2, -1) >= 0) {
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            int more = i == 0 ? drain(fds[i].fd, r->out, &lout, sizeof r->out)
                              : drain(fds[i].fd, r->err, &lerr, sizeof r->err);
            if (!more) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int ws = 0;
    if (waitpid(pid, &ws, 0) == pid)
        r->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* Writes text to the file name in tmpdir; its path goes to path. */
static void write_file(char *path, size_t cap, const char *name, const char *text) {
    snprintf(path, cap, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return;
    }
    fputs(text, f);
    fclose(f);
}

/* ---- version and help ---- */

TEST(version_prints_both_versions) {
    run_result r;
    run_keel(&r, NULL, NULL, (const char *[]){ "--version", NULL });
    CHECK_INT(r.status, 0);
    char want[64];
    snprintf(want, sizeof want, "keel %s (libkeel %s)\n", KEEL_VERSION_STRING, keel_version());
    CHECK_STR(r.out, want);
}

TEST(help_goes_to_stdout_and_succeeds) {
    const char *spellings[] = { "help", "--help", "-h" };
    for (size_t i = 0; i < 3; i++) {
        run_result r;
        run_keel(&r, NULL, NULL, (const char *[]){ spellings[i], NULL });
        CHECK_INT(r.status, 0);
        CHECK_CONTAINS(r.out, "usage: keel <command>");
        CHECK_CONTAINS(r.out, "check [--timeout SECONDS] [--verbose] [CONFIG]");
        CHECK_STR(r.err, "");
    }
}

/* ---- usage errors: exit 2, the usage on stderr ---- */

TEST(no_command_is_a_usage_error) {
    run_result r;
    run_keel(&r, NULL, NULL, (const char *[]){ NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "usage: keel <command>");
    CHECK_STR(r.out, "");
}

TEST(unknown_command_is_named) {
    run_result r;
    run_keel(&r, NULL, NULL, (const char *[]){ "chek", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: unknown command or wrong arguments: chek");
    CHECK_CONTAINS(r.err, "usage: keel <command>");
}

TEST(extra_arguments_are_refused) {
    run_result r;
    run_keel(&r, NULL, NULL, (const char *[]){ "check", "a.yaml", "b.yaml", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: check: unexpected argument 'b.yaml'");
    CHECK_CONTAINS(r.err, "usage: keel <command>");
    run_keel(&r, NULL, NULL, (const char *[]){ "check", "--verbatim", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "unexpected argument '--verbatim'");
    run_keel(&r, NULL, NULL, (const char *[]){ "--version", "now", NULL });
    CHECK_INT(r.status, 2);
    run_keel(&r, NULL, NULL, (const char *[]){ "help", "check", NULL });
    CHECK_INT(r.status, 2);
}

/* ---- check: configuration errors exit 2 with the file and the key path ---- */

TEST(check_of_a_missing_file_names_it) {
    run_result r;
    char path[512];
    snprintf(path, sizeof path, "%s/no-such.yaml", tmpdir);
    run_keel(&r, NULL, NULL, (const char *[]){ "check", path, NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: configuration error in ");
    CHECK_CONTAINS(r.err, "no-such.yaml");
    CHECK_STR(r.out, "");
}

TEST(check_of_a_bad_value_names_the_key_path) {
    run_result r;
    char path[512];
    write_file(path, sizeof path, "bad-pool.yaml",
               "databases:\n  main:\n    url: \"sqlite::memory:\"\n    pool:\n"
               "      max_size: lots\n");
    run_keel(&r, NULL, NULL, (const char *[]){ "check", path, NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "bad-pool.yaml");
    CHECK_CONTAINS(r.err, "databases.main.pool.max_size");
}

TEST(check_of_a_bad_environment_override_names_the_key_path) {
    run_result r;
    run_keel(&r, NULL,
             (const char *[]){ "KEEL_DATABASES__MAIN__URL=sqlite::memory:",
                               "KEEL_DATABASES__MAIN__POOL__MIN_SIZE=-3", NULL },
             (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: configuration error: ");
    CHECK_CONTAINS(r.err, "databases.main.pool.min_size");
}

/* Engine options are checked by the engine when the databases are opened: still a configuration
 * error, exit 2, naming the key, and no database is contacted. */
TEST(check_of_a_bad_engine_option_names_the_key_path) {
    run_result r;
    run_keel(&r, NULL,
             (const char *[]){ "KEEL_DATABASES__MAIN__URL=postgresql://keel@127.0.0.1:1/nowhere",
                               "KEEL_DATABASES__MAIN__OPTIONS__SSLMODE=maybe", NULL },
             (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: configuration error: databases.main.options.sslmode: invalid "
                          "value \"maybe\"");
    CHECK_STR(r.out, "");
}

/* ---- check: the table, exit 0 when every database answers, 1 otherwise ---- */

TEST(check_of_answering_databases_prints_ok_rows) {
    run_result r;
    char path[512], pg_line[600];
    snprintf(pg_line, sizeof pg_line,
             "databases:\n  local:\n    url: \"sqlite::memory:\"\n  pg:\n    url: \"%s\"\n"
             "default: local\n",
             pg_url());
    write_file(path, sizeof path, "ok.yaml", pg_line);
    run_keel(&r, NULL, NULL, (const char *[]){ "check", path, NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "DATABASE  ENGINE      STATUS  LATENCY_MS  ERROR\n");
    CHECK_CONTAINS(r.out, "local     sqlite      ok");
    CHECK_CONTAINS(r.out, "pg        postgresql  ok");
    CHECK_STR(r.err, "");
}

TEST(check_of_a_dead_server_exits_1_with_a_redacted_error) {
    run_result r;
    /* Port 1 on loopback: nothing listens, the connection is refused at once. */
    run_keel(&r, NULL,
             (const char *[]){
                 "KEEL_DEFAULT=local", "KEEL_DATABASES__LOCAL__URL=sqlite::memory:",
                 "KEEL_DATABASES__DOWN__URL=postgresql://app:Sup3rS3cret@127.0.0.1:1/x", NULL },
             (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 1);
    CHECK_CONTAINS(r.out, "local     sqlite      ok");
    CHECK_CONTAINS(r.out, "\ndown      postgresql  error            -  KEEL_ERR_CONNECT: ");
    CHECK(strstr(r.out, "Sup3rS3cret") == NULL);
    CHECK(strstr(r.err, "Sup3rS3cret") == NULL);
}

TEST(check_refuses_a_timeout_that_is_not_a_positive_number) {
    const char *bad[] = { "0", "-1", "soon", "", "nan", "1e9" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        run_result r;
        run_keel(&r, NULL, (const char *[]){ "KEEL_DATABASES__MAIN__URL=sqlite::memory:", NULL },
                 (const char *[]){ "check", "--timeout", bad[i], NULL });
        CHECK_INT(r.status, 2);
        CHECK_CONTAINS(r.err, "--timeout takes a number of seconds greater than 0");
        CHECK_STR(r.out, "");
    }
    run_result r;
    run_keel(&r, NULL, (const char *[]){ "KEEL_DATABASES__MAIN__URL=sqlite::memory:", NULL },
             (const char *[]){ "check", "--timeout", NULL });
    CHECK_INT(r.status, 2);
    CHECK_STR(r.err, "keel: check: --timeout needs a number of seconds (--timeout 5)\n");
    CHECK_STR(r.out, "");
    run_keel(&r, NULL, (const char *[]){ "KEEL_DATABASES__MAIN__URL=sqlite::memory:", NULL },
             (const char *[]){ "check", "--timeout=2.5", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "main      sqlite  ok");
}

/*
 * Servers that accept connections and never answer (the kernel completes the TCP handshake,
 * nobody reads): every network engine's row is an error once --timeout has passed, and the
 * check of the whole configuration ends instead of hanging.
 */
TEST(check_of_silent_servers_ends_within_its_timeout) {
    int port = 0;
    int fd = silent_listener(&port);
    char pg[160], my[160], mongo[200];
    snprintf(pg, sizeof pg, "KEEL_DATABASES__PG__URL=postgresql://app@127.0.0.1:%d/x", port);
    snprintf(my, sizeof my, "KEEL_DATABASES__MY__URL=mysql://app@127.0.0.1:%d/x", port);
    snprintf(mongo, sizeof mongo,
             "KEEL_DATABASES__MONGO__URL=mongodb://127.0.0.1:%d/x?directConnection=true", port);
    run_result r;
    int64_t t0 = keel_now_ms();
    run_keel(&r, NULL,
             (const char *[]){ "KEEL_DEFAULT=local",
                               "KEEL_DATABASES__LOCAL__URL=sqlite::memory:", pg, my, mongo, NULL },
             (const char *[]){ "check", "--timeout", "0.5", NULL });
    int64_t took = keel_now_ms() - t0;
    close(fd);
    CHECK_INT(r.status, 1);
    CHECK_CONTAINS(r.out, "local     sqlite      ok");
    CHECK_CONTAINS(r.out, "\npg        postgresql  error            -  KEEL_ERR_TIMEOUT: ");
    CHECK_CONTAINS(r.out, "\nmy        mysql       error            -  KEEL_ERR_TIMEOUT: ");
    /* libmongoc reports its own connect deadline as a failed server selection. */
    CHECK_CONTAINS(r.out, "\nmongo     mongodb     error            -  KEEL_ERR_CONNECT: ");
    CHECK_CONTAINS(r.out, "socket timeout");
    /* Three connects of half a second each, one after the other, with room for a loaded
     * machine; without the bound each would wait out its 10-second default. */
    CHECK(took < 8000);
}

/* Without an argument, KEEL_CONFIG names the file; without it, ./keel.yaml is read. */
TEST(check_finds_its_configuration_file) {
    run_result r;
    char path[512];
    write_file(path, sizeof path, "named.yaml",
               "databases:\n  named:\n    url: \"sqlite::memory:\"\n");
    char env[600];
    snprintf(env, sizeof env, "KEEL_CONFIG=%s", path);
    run_keel(&r, NULL, (const char *[]){ env, NULL }, (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "\nnamed ");
    CHECK(strstr(r.err, "note:") == NULL);

    write_file(path, sizeof path, "keel.yaml",
               "databases:\n  here:\n    url: \"sqlite::memory:\"\n");
    run_keel(&r, tmpdir, NULL, (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "\nhere ");
    CHECK(strstr(r.out, "named") == NULL);
    /* The fallback says that applications do not read ./keel.yaml by themselves. */
    CHECK_CONTAINS(r.err, "keel: check: note: checking ./keel.yaml");
    CHECK_CONTAINS(r.err, "KEEL_CONFIG=keel.yaml");
    unlink(path);
}

/* With nothing configured, check says how to configure keel instead of creating ./keel.db. */
TEST(check_with_nothing_configured_says_so) {
    char dir[600], db[700];
    snprintf(dir, sizeof dir, "%s/empty", tmpdir);
    snprintf(db, sizeof db, "%s/keel.db", dir);
    CHECK(mkdir(dir, 0700) == 0);
    run_result r;
    run_keel(&r, dir, (const char *[]){ "KEEL_PORT=tcp://10.0.0.7:5432", NULL },
             (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 2);
    CHECK_STR(r.out, "");
    CHECK_CONTAINS(r.err, "keel: check: nothing is configured, so there is no database to check");
    CHECK_CONTAINS(r.err, "KEEL_CONFIG=FILE");
    CHECK_CONTAINS(r.err, "./keel.yaml");
    CHECK_CONTAINS(r.err, "DATABASE_URL");
    CHECK_CONTAINS(r.err, "KEEL_DATABASES__<NAME>__URL");
    CHECK(strstr(r.err, "KEEL_PORT") == NULL); /* not a misspelt key: not worth a word */
    CHECK(access(db, F_OK) != 0);

    /* A misspelt variable is why nothing is configured: named. */
    run_keel(&r, dir, (const char *[]){ "KEEL_DATABSES__MAIN__URL=sqlite::memory:", NULL },
             (const char *[]){ "check", "--verbose", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: check: KEEL_DATABSES__MAIN__URL was ignored: it names no "
                          "configuration key");
    CHECK_CONTAINS(r.out, "ignored environment variables (not configuration keys): "
                          "KEEL_DATABSES__MAIN__URL\n");
    CHECK(access(db, F_OK) != 0);
    rmdir(dir);
}

/* Variables that name no configuration key (Kubernetes' KEEL_PORT …) stop nothing; --verbose
 * lists them. */
TEST(check_ignores_other_keel_variables_and_lists_them_when_verbose) {
    const char *env[] = { "KEEL_DATABASES__LOCAL__URL=sqlite::memory:",
                          "KEEL_PORT=tcp://10.0.0.7:5432",
                          "KEEL_PORT_5432_TCP_ADDR=10.0.0.7",
                          "KEEL_SERVICE_HOST=10.0.0.7",
                          "KEEL_SERVICE_PORT=5432",
                          "KEEL_FEATURE__FLAGS=a,b",
                          NULL };
    run_result r;
    run_keel(&r, NULL, env, (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "\nlocal ");
    CHECK(strstr(r.out, "KEEL_PORT") == NULL);
    CHECK_STR(r.err, "");

    run_keel(&r, NULL, env, (const char *[]){ "check", "-v", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "configuration: no file, with KEEL_... environment overrides\n");
    CHECK_CONTAINS(r.out, "ignored environment variables (not configuration keys): "
                          "KEEL_FEATURE__FLAGS, KEEL_PORT, KEEL_PORT_5432_TCP_ADDR, "
                          "KEEL_SERVICE_HOST, KEEL_SERVICE_PORT\n");
    CHECK_CONTAINS(r.out, "\nlocal ");

    run_keel(&r, NULL, (const char *[]){ "KEEL_DATABASES__LOCAL__URL=sqlite::memory:", NULL },
             (const char *[]){ "check", "--verbose", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "ignored environment variables (not configuration keys): none\n");
}

/* An SQLite database is a configuration: by name (notes.db) or by its header. */
TEST(check_of_an_sqlite_database) {
    run_result r;
    char path[600], renamed[600];
    snprintf(path, sizeof path, "%s/notes.db", tmpdir);
    unlink(path);

    /* A database that does not exist is not created by the check (a typo would be "ok"). */
    run_keel(&r, tmpdir, NULL, (const char *[]){ "check", "notes.db", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: configuration error in notes.db: cannot read configuration "
                          "file 'notes.db': No such file or directory (keel check does not "
                          "create an SQLite database)");
    CHECK_STR(r.out, "");
    CHECK(access(path, F_OK) != 0);
    char env_missing[700];
    snprintf(env_missing, sizeof env_missing, "KEEL_CONFIG=%s/Other.SQLite3", tmpdir);
    run_keel(&r, tmpdir, (const char *[]){ env_missing, NULL }, (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "Other.SQLite3': No such file or directory (keel check does not create");

    /* Make it a real database (a header): the check reports it ok and leaves it as it was. */
    keel_config *cfg = NULL;
    keel_db *db = NULL;
    keel_error err;
    keel_error_clear(&err);
    CHECK_INT(keel_config_new(&cfg, &err), KEEL_OK);
    CHECK_INT(keel_config_load_file(cfg, path, &err), KEEL_OK);
    CHECK_INT(keel_db_open(&db, cfg, NULL, &err), KEEL_OK);
    CHECK_INT(keel_db_query_sync(db, NULL, "CREATE TABLE t (x INTEGER)", NULL, 0, NULL, &err),
              KEEL_OK);
    keel_db_close(db);
    keel_config_free(cfg);
    run_keel(&r, tmpdir, NULL, (const char *[]){ "check", "notes.db", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "\ndefault   sqlite  ok");

    /* Then give it a name that says nothing. */
    snprintf(renamed, sizeof renamed, "%s/notes.data", tmpdir);
    CHECK(rename(path, renamed) == 0);
    char env[700];
    snprintf(env, sizeof env, "KEEL_CONFIG=%s", renamed);
    run_keel(&r, NULL, (const char *[]){ env, NULL }, (const char *[]){ "check", "-v", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "configuration: file ");
    CHECK_CONTAINS(r.out, "notes.data");
    CHECK_CONTAINS(r.out, "\ndefault   sqlite  ok");
    unlink(renamed);
}

/* DATABASE_URL configures the default database when nothing else does; a bad one is named. */
TEST(check_of_database_url) {
    run_result r;
    run_keel(&r, NULL, (const char *[]){ "DATABASE_URL=sqlite::memory:", NULL },
             (const char *[]){ "check", "-v", NULL });
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "configuration: DATABASE_URL (no file, no KEEL_... database variable)\n");
    CHECK_CONTAINS(r.out, "\ndefault   sqlite  ok");
    run_keel(&r, NULL, (const char *[]){ "DATABASE_URL=postgresql://u:hunter2@h:port/db", NULL },
             (const char *[]){ "check", NULL });
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "keel: configuration error: environment variable DATABASE_URL: ");
    CHECK(strstr(r.err, "hunter2") == NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-OF-KEEL\n", argv[0]);
        return 2;
    }
    /* Absolute, since some runs start in another directory. */
    static char path[4096];
    if (!realpath(argv[1], path)) {
        perror(argv[1]);
        return 2;
    }
    keel_path = path;
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(version_prints_both_versions);
    RUN(help_goes_to_stdout_and_succeeds);
    RUN(no_command_is_a_usage_error);
    RUN(unknown_command_is_named);
    RUN(extra_arguments_are_refused);
    RUN(check_of_a_missing_file_names_it);
    RUN(check_of_a_bad_value_names_the_key_path);
    RUN(check_of_a_bad_environment_override_names_the_key_path);
    RUN(check_of_a_bad_engine_option_names_the_key_path);
    RUN(check_of_answering_databases_prints_ok_rows);
    RUN(check_of_a_dead_server_exits_1_with_a_redacted_error);
    RUN(check_refuses_a_timeout_that_is_not_a_positive_number);
    RUN(check_of_silent_servers_ends_within_its_timeout);
    RUN(check_finds_its_configuration_file);
    RUN(check_with_nothing_configured_says_so);
    RUN(check_ignores_other_keel_variables_and_lists_them_when_verbose);
    RUN(check_of_an_sqlite_database);
    RUN(check_of_database_url);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_SUMMARY();
}
