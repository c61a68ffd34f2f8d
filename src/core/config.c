/* src/core/config.c - the configuration tree: key paths, value checks, validation and secrets. */
#include <keel/config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config_int.h"
#include "core/error_int.h"
#include "core/secret.h"
#include "core/url.h"
#include "engines/engine.h"

/* Secret files are small (a password, a token); anything bigger is almost surely a wrong path. */
#define SECRET_FILE_MAX (1024 * 1024)

/* A list of key/value strings, both owned, with the set counter value of each (see db_layer). */
typedef struct opt_list {
    keel__option *items;
    unsigned long *seqs;
    size_t n;
} opt_list;

/* The pool settings, indexes into pool_keys and into the pool arrays of the layers. */
enum { PK_MIN, PK_MAX, PK_ACQUIRE, PK_IDLE, PK_LIFETIME, PK_PING, PK_WAITERS, NPK };

/*
 * Each pool setting: its name, whether it is a duration in seconds (else a count), whether it
 * accepts "none" (a duration of 0, which disables it, or a count of SIZE_MAX, no limit), and its
 * default. The defaults of idle_timeout and max_lifetime are psycopg_pool's max_idle and
 * max_lifetime; ping_after_idle costs a round trip only for a connection idle that long.
 */
static const struct {
    const char *field;
    int seconds;
    int none_ok;
    double default_seconds;
    size_t default_size;
} pool_keys[NPK] = {
    [PK_MIN] = { "min_size", 0, 0, 0, 1 },
    [PK_MAX] = { "max_size", 0, 0, 0, 10 },
    [PK_ACQUIRE] = { "acquire_timeout", 1, 0, 30.0, 0 },
    [PK_IDLE] = { "idle_timeout", 1, 1, 600.0, 0 },
    [PK_LIFETIME] = { "max_lifetime", 1, 1, 3600.0, 0 },
    [PK_PING] = { "ping_after_idle", 1, 1, 30.0, 0 },
    [PK_WAITERS] = { "max_waiters", 0, 1, 0, SIZE_MAX },
};

/* One source's pool settings (a database's keys or url, or the global pool.*): a count or a
 * duration by pool_keys[i].seconds. */
typedef struct pool_values {
    size_t size[NPK];
    double seconds[NPK];
} pool_values;

/* The global pool.* settings; has[i] tells which are set. */
typedef struct pool_layer {
    int has[NPK];
    pool_values v;
} pool_layer;

/*
 * The values of one database that one source provides: either its explicit keys or the parts
 * of its url. Each value records when it was set (the config's set counter; 0 = unset) and the
 * merged view takes, field by field, whichever was set last. So a later source overrides an
 * earlier one (an environment url replaces a file's password), `url: …` plus
 * `password: ${env:PW}` works in either order when the url has no password, and setting url
 * again drops every part of the previous url at once.
 */
typedef struct db_layer {
    char *engine; /* canonical engine name */
    char *host, *database, *user, *password;
    int port;
    double connect_timeout, command_timeout;
    pool_values pool;
    opt_list options;
    unsigned long seq_engine, seq_host, seq_database, seq_user, seq_password, seq_port,
        seq_connect_timeout, seq_command_timeout, seq_pool[NPK];
} db_layer;

typedef struct db_entry {
    char *name;
    char *url;
    db_layer keys;
    db_layer from_url;
    /* The merged view engines read, rebuilt by keel_config_validate. Its strings point into the
     * layers above; only view.options (the array, not its strings) is owned. */
    keel__dbconfig view;
} db_entry;

struct keel_config {
    char *default_name;
    db_entry **dbs; /* entries are allocated one by one so views keep their address */
    size_t ndbs;
    pool_layer pool;
    opt_list extras;   /* migrations.*, cache.*, security.*, observability.* kept for later use */
    unsigned long seq; /* counts database values set, to order them */
    int validated;
    const char *default_resolved; /* after validation: the default database's name */
    int builtin_default;          /* validate supplied databases.default: nothing configured one */
    int from_database_url;        /* validate took databases.default from DATABASE_URL */
    char *database_url;           /* DATABASE_URL as keel_config_apply_env found it, or NULL */
    char **ignored_env;           /* KEEL_… names apply_env ignored, sorted; owned */
    size_t nignored_env;
};

/* What a key path designates. */
typedef enum key_kind {
    KEY_DEFAULT,
    KEY_URL,
    KEY_ENGINE,
    KEY_HOST,
    KEY_PORT,
    KEY_DATABASE,
    KEY_USER,
    KEY_PASSWORD,
    KEY_CONNECT_TIMEOUT,
    KEY_COMMAND_TIMEOUT,
    KEY_OPTION,
    KEY_POOL,
    KEY_EXTRA
} key_kind;

typedef struct key_target {
    key_kind kind;
    int global;       /* pool.* rather than databases.NAME.pool.* */
    int pool_key;     /* KEY_POOL: which (PK_…) */
    const char *name; /* database name inside the path (not NUL-terminated) */
    size_t name_len;
    const char *option; /* KEY of databases.NAME.options.KEY */
} key_target;

static const struct {
    const char *field;
    key_kind kind;
} db_fields[] = {
    { "url", KEY_URL },
    { "engine", KEY_ENGINE },
    { "host", KEY_HOST },
    { "port", KEY_PORT },
    { "database", KEY_DATABASE },
    { "user", KEY_USER },
    { "password", KEY_PASSWORD },
    { "connect_timeout", KEY_CONNECT_TIMEOUT },
    { "command_timeout", KEY_COMMAND_TIMEOUT },
};

/* Sections whose whole subtree is stored for later issues and not interpreted yet. */
static const char *const extra_sections[] = { "migrations", "cache", "security", "observability" };

/* Engine names a user may write, and the canonical name each stands for. */
static const struct {
    const char *alias;
    const char *canonical;
} engine_names[] = {
    { "postgresql", "postgresql" }, { "postgres", "postgresql" }, { "sqlite", "sqlite" },
    { "sqlite3", "sqlite" },        { "mysql", "mysql" },         { "mariadb", "mysql" },
    { "mongodb", "mongodb" },       { "mongo", "mongodb" },       { "mongodb+srv", "mongodb" },
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static keel_status nomem(keel_error *err) {
    return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory in the configuration");
}

static const char *canonical_engine(const char *name) {
    for (size_t i = 0; i < NELEMS(engine_names); i++)
        if (strcmp(name, engine_names[i].alias) == 0)
            return engine_names[i].canonical;
    return NULL;
}

static int valid_db_name(const char *s, size_t n) {
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Replaces *slot with a copy of value (NULL clears). Returns 0 or -1 (OOM, *slot unchanged). The
 * old value is wiped: configuration strings may be passwords or URLs with one. */
static int set_string(char **slot, const char *value) {
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return -1;
    keel__secret_free(*slot);
    *slot = copy;
    return 0;
}

/* ---- value parsing ---------------------------------------------------------------------- */

/* Parses a non-negative decimal integer without sign or spaces. Returns 0 or -1. */
static int parse_size(const char *s, size_t *out) {
    size_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        size_t d = (size_t)(*s - '0');
        if (v > ((size_t)-1 - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/*
 * Parses non-negative decimal seconds ("30", "2.5", ".5"). Done by hand rather than with strtod
 * so the host's locale cannot change what a decimal point is. Returns 0 or -1.
 */
static int parse_seconds(const char *s, double *out) {
    double v = 0, scale = 1;
    int digits = 0, dot = 0;
    for (; *s; s++) {
        if (*s == '.' && !dot) {
            dot = 1;
        } else if (*s >= '0' && *s <= '9') {
            digits++;
            if (dot) {
                scale /= 10;
                v += (*s - '0') * scale;
            } else {
                v = v * 10 + (*s - '0');
            }
        } else {
            return -1;
        }
    }
    if (!digits || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

static keel_status parse_port_value(const char *path, const char *value, int *port,
                                    keel_error *err) {
    size_t v;
    if (parse_size(value, &v) != 0 || v < 1 || v > 65535)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: expected a port number from 1 to 65535, got '%s'", path, value);
    *port = (int)v;
    return KEEL_OK;
}

static keel_status parse_size_value(const char *path, const char *value, size_t *out,
                                    keel_error *err) {
    if (parse_size(value, out) != 0)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: expected a non-negative integer, got '%s'", path, value);
    return KEEL_OK;
}

static keel_status parse_seconds_value(const char *path, const char *value, double *out,
                                       keel_error *err) {
    if (parse_seconds(value, out) != 0)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: expected a non-negative number of seconds (e.g. 2.5), got '%s'",
                               path, value);
    return KEEL_OK;
}

/* Parses the value of pool setting which (PK_…) into v. */
static keel_status parse_pool_value(const char *path, int which, const char *value, pool_values *v,
                                    keel_error *err) {
    int none = pool_keys[which].none_ok && strcmp(value, "none") == 0;
    if (pool_keys[which].seconds) {
        if (none) {
            v->seconds[which] = 0;
            return KEEL_OK;
        }
        if (!pool_keys[which].none_ok)
            return parse_seconds_value(path, value, &v->seconds[which], err);
        if (parse_seconds(value, &v->seconds[which]) != 0)
            return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                   "%s: expected a non-negative number of seconds (e.g. 2.5), or "
                                   "0 or 'none' to disable it, got '%s'",
                                   path, value);
        return KEEL_OK;
    }
    if (none) {
        v->size[which] = SIZE_MAX;
        return KEEL_OK;
    }
    if (!pool_keys[which].none_ok)
        return parse_size_value(path, value, &v->size[which], err);
    if (parse_size(value, &v->size[which]) != 0 || v->size[which] == SIZE_MAX)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: expected a non-negative integer, or 'none' for no limit, got "
                               "'%s'",
                               path, value);
    return KEEL_OK;
}

/* ---- secret references ------------------------------------------------------------------- */

/* Reads a secret file into out, trailing newlines stripped. Errors name the path, never content. */
static keel_status read_secret_file(const char *path, const char *keypath, keel__buf *out,
                                    keel_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: cannot read secret file '%s': %s", keypath, path,
                               strerror(errno));
    keel__buf content = { .secret = 1 };
    keel_status st = KEEL_OK;
    for (;;) {
        if (keel__buf_reserve(&content, 4096) != 0) {
            st = nomem(err);
            break;
        }
        ssize_t n = read(fd, content.data + content.len, content.cap - content.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                 "%s: cannot read secret file '%s': %s", keypath, path,
                                 strerror(errno));
            break;
        }
        if (n == 0)
            break;
        content.len += (size_t)n;
        if (content.len > SECRET_FILE_MAX) {
            st = keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                 "%s: secret file '%s' is larger than %d bytes", keypath, path,
                                 SECRET_FILE_MAX);
            break;
        }
    }
    close(fd);
    if (st == KEEL_OK && content.len && memchr(content.data, '\0', content.len))
        st = keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                             "%s: secret file '%s' contains a NUL byte", keypath, path);
    if (st == KEEL_OK) {
        size_t n = content.len;
        while (n > 0 && (content.data[n - 1] == '\n' || content.data[n - 1] == '\r'))
            n--;
        if (n && keel__buf_append(out, content.data, n) != 0)
            st = nomem(err);
    }
    keel__secret_buf_free(&content);
    return st;
}

/*
 * Walks value, expanding ${env:NAME} and ${file:/path} into out, or only checking their syntax
 * when out is NULL. "$${" stands for a literal "${". Messages start with keypath and never show
 * the value or what a reference resolved to.
 */
static keel_status expand_refs(const char *value, const char *keypath, keel__buf *out,
                               keel_error *err) {
    const char *p = value;
    while (*p) {
        const char *dollar = strchr(p, '$');
        if (!dollar) {
            if (out && keel__buf_puts(out, p) != 0)
                return nomem(err);
            break;
        }
        if (dollar[1] == '$' && dollar[2] == '{') {
            if (out && (keel__buf_append(out, p, (size_t)(dollar - p)) != 0 ||
                        keel__buf_puts(out, "${") != 0))
                return nomem(err);
            p = dollar + 3;
            continue;
        }
        if (dollar[1] != '{') {
            if (out && keel__buf_append(out, p, (size_t)(dollar + 1 - p)) != 0)
                return nomem(err);
            p = dollar + 1;
            continue;
        }
        if (out && keel__buf_append(out, p, (size_t)(dollar - p)) != 0)
            return nomem(err);
        const char *body = dollar + 2;
        const char *close = strchr(body, '}');
        if (!close)
            return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                   "%s: unterminated '${' reference (expected ${env:NAME} or "
                                   "${file:/path}; write '$${' for a literal '${')",
                                   keypath);
        size_t blen = (size_t)(close - body);
        int is_env = blen >= 4 && memcmp(body, "env:", 4) == 0;
        int is_file = blen >= 5 && memcmp(body, "file:", 5) == 0;
        if (!is_env && !is_file) {
            const char *colon = memchr(body, ':', blen);
            size_t klen = colon ? (size_t)(colon - body) : 0;
            if (klen > 16)
                klen = 16;
            return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                   "%s: unknown reference '${%.*s%s…}' (expected ${env:NAME} or "
                                   "${file:/path}; write '$${' for a literal '${')",
                                   keypath, (int)klen, body, colon ? ":" : "");
        }
        const char *arg = body + (is_env ? 4 : 5);
        size_t alen = (size_t)(close - arg);
        if (alen == 0)
            return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL, "%s: empty %s", keypath,
                                   is_env ? "${env:} reference" : "${file:} reference");
        if (out) {
            char *name = strndup(arg, alen);
            if (!name)
                return nomem(err);
            keel_status st = KEEL_OK;
            if (is_env) {
                const char *v = getenv(name);
                if (!v)
                    st = keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                         "%s: environment variable '%s' is not set", keypath, name);
                else if (keel__buf_puts(out, v) != 0)
                    st = nomem(err);
            } else {
                st = read_secret_file(name, keypath, out, err);
            }
            free(name);
            if (st)
                return st;
        }
        p = close + 1;
    }
    return KEEL_OK;
}

keel_status keel__config_resolve(const char *value, const char *keypath, char **out,
                                 keel_error *err) {
    if (!out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel__config_resolve: out must not be NULL");
    *out = NULL;
    if (!value)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel__config_resolve: value must not be NULL");
    keel__buf b = { .secret = 1 };
    keel_status st = expand_refs(value, keypath ? keypath : "value", &b, err);
    if (st == KEEL_OK) {
        *out = strdup(b.data ? b.data : "");
        if (!*out)
            st = nomem(err);
    }
    keel__secret_buf_free(&b);
    return st;
}

/* ---- option lists and layers ------------------------------------------------------------- */

static keel__option *opt_find(const opt_list *l, const char *key) {
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].key, key) == 0)
            return &l->items[i];
    return NULL;
}

/* Sets key to value (both copied) at time seq, replacing an existing key. Returns 0 or -1 (OOM). */
static int opt_set(opt_list *l, const char *key, const char *value, unsigned long seq) {
    keel__option *o = opt_find(l, key);
    if (o) {
        if (set_string(&o->value, value) != 0)
            return -1;
        l->seqs[o - l->items] = seq;
        return 0;
    }
    keel__option *items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (!items)
        return -1;
    l->items = items;
    unsigned long *seqs = realloc(l->seqs, (l->n + 1) * sizeof *seqs);
    if (!seqs)
        return -1;
    l->seqs = seqs;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        keel__secret_free(v);
        return -1;
    }
    items[l->n].key = k;
    items[l->n].value = v;
    seqs[l->n] = seq;
    l->n++;
    return 0;
}

static void opt_free(opt_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].key);
        keel__secret_free(l->items[i].value); /* sslpassword, a token, a resolved reference… */
    }
    free(l->items);
    free(l->seqs);
    l->items = NULL;
    l->seqs = NULL;
    l->n = 0;
}

static int opt_copy(opt_list *dst, const opt_list *src) {
    for (size_t i = 0; i < src->n; i++)
        if (opt_set(dst, src->items[i].key, src->items[i].value, src->seqs[i]) != 0)
            return -1;
    return 0;
}

static void layer_free(db_layer *l) {
    free(l->engine);
    keel__secret_free(l->host);
    keel__secret_free(l->database);
    keel__secret_free(l->user);
    keel__secret_free(l->password);
    opt_free(&l->options);
    memset(l, 0, sizeof *l);
}

static int layer_copy(db_layer *dst, const db_layer *src) {
    *dst = *src;
    dst->engine = dst->host = dst->database = dst->user = dst->password = NULL;
    dst->options.items = NULL;
    dst->options.seqs = NULL;
    dst->options.n = 0;
    return set_string(&dst->engine, src->engine) || set_string(&dst->host, src->host) ||
                   set_string(&dst->database, src->database) || set_string(&dst->user, src->user) ||
                   set_string(&dst->password, src->password) ||
                   opt_copy(&dst->options, &src->options)
               ? -1
               : 0;
}

static void entry_free(db_entry *e) {
    if (!e)
        return;
    free(e->name);
    keel__secret_free(e->url);
    layer_free(&e->keys);
    layer_free(&e->from_url);
    free(e->view.options);
    free(e);
}

static db_entry *find_entry(const keel_config *cfg, const char *name, size_t len) {
    for (size_t i = 0; i < cfg->ndbs; i++)
        if (strlen(cfg->dbs[i]->name) == len && memcmp(cfg->dbs[i]->name, name, len) == 0)
            return cfg->dbs[i];
    return NULL;
}

/* The entry for name, created (last in order) on first mention. NULL when out of memory. */
static db_entry *get_entry(keel_config *cfg, const char *name, size_t len) {
    db_entry *e = find_entry(cfg, name, len);
    if (e)
        return e;
    db_entry **dbs = realloc(cfg->dbs, (cfg->ndbs + 1) * sizeof *dbs);
    if (!dbs)
        return NULL;
    cfg->dbs = dbs;
    e = calloc(1, sizeof *e);
    if (!e || !(e->name = strndup(name, len))) {
        free(e);
        return NULL;
    }
    dbs[cfg->ndbs++] = e;
    return e;
}

/* ---- key paths --------------------------------------------------------------------------- */

/* Edit distance between two short strings; large when either is too long to bother. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb) {
    size_t row[33];
    if (la > 32 || lb > 32)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The candidate closest to [s, s+n) when it is close enough to be an obvious typo, else NULL. */
static const char *closest(const char *s, size_t n, const char *const *cands, size_t ncands) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < ncands; i++) {
        size_t cl = strlen(cands[i]);
        size_t d = edit_distance(s, n, cands[i], cl);
        size_t limit = cl >= 6 ? 2 : 1;
        if (d <= limit && d < best_d) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}

/*
 * Suggests a known key for an unknown path by correcting each segment to its closest known
 * name. Writes into buf and returns 1, or 0 when no obvious correction exists.
 */
static int suggest_key(const char *path, char *buf, size_t size) {
    static const char *const top[] = { "default", "databases", "pool",         "migrations",
                                       "cache",   "security",  "observability" };
    static const char *const dbf[] = { "url",
                                       "engine",
                                       "host",
                                       "port",
                                       "database",
                                       "user",
                                       "password",
                                       "connect_timeout",
                                       "command_timeout",
                                       "options",
                                       "pool" };
    const char *poolf[NPK];
    for (size_t i = 0; i < NPK; i++)
        poolf[i] = pool_keys[i].field;
    const char *seg[6];
    size_t len[6], nseg = 0;
    for (const char *p = path; nseg < NELEMS(seg);) {
        const char *dot = strchr(p, '.');
        seg[nseg] = p;
        len[nseg++] = dot ? (size_t)(dot - p) : strlen(p);
        if (!dot)
            break;
        p = dot + 1;
        if (nseg == NELEMS(seg))
            return 0;
    }
    const char *fixed[6];
    const char *s0 = closest(seg[0], len[0], top, NELEMS(top));
    if (!s0)
        return 0;
    fixed[0] = s0;
    if (strcmp(s0, "default") == 0) {
        if (nseg != 1)
            return 0;
    } else if (strcmp(s0, "pool") == 0) {
        if (nseg != 2 || !(fixed[1] = closest(seg[1], len[1], poolf, NELEMS(poolf))))
            return 0;
    } else if (strcmp(s0, "databases") == 0) {
        if (nseg < 3 || !valid_db_name(seg[1], len[1]))
            return 0;
        fixed[1] = NULL; /* the name is kept as written */
        if (!(fixed[2] = closest(seg[2], len[2], dbf, NELEMS(dbf))))
            return 0;
        if (strcmp(fixed[2], "pool") == 0) {
            if (nseg != 4 || !(fixed[3] = closest(seg[3], len[3], poolf, NELEMS(poolf))))
                return 0;
        } else if (strcmp(fixed[2], "options") == 0) {
            if (nseg < 4)
                return 0;
            for (size_t i = 3; i < nseg; i++)
                fixed[i] = NULL;
        } else if (nseg != 3) {
            return 0;
        }
    } else {
        if (nseg < 2)
            return 0;
        for (size_t i = 1; i < nseg; i++)
            fixed[i] = NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < nseg; i++) {
        int n = fixed[i]
                    ? snprintf(buf + off, size - off, "%s%s", i ? "." : "", fixed[i])
                    : snprintf(buf + off, size - off, "%s%.*s", i ? "." : "", (int)len[i], seg[i]);
        if (n < 0 || (size_t)n >= size - off)
            return 0;
        off += (size_t)n;
    }
    return strcmp(buf, path) != 0;
}

static keel_status unknown_key(const char *path, keel_error *err) {
    char suggestion[256];
    if (suggest_key(path, suggestion, sizeof suggestion))
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "unknown configuration key '%s' (did you mean '%s'?)", path,
                               suggestion);
    return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL, "unknown configuration key '%s'",
                           path);
}

static keel_status section_key(const char *path, keel_error *err) {
    return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                           "configuration key '%s' is a section, not a value: set one of its keys "
                           "(e.g. '%s.…')",
                           path, path);
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Recognises a pool field name (the part after "pool."), recording its kind in t. */
static int pool_field(const char *field, key_target *t) {
    for (int i = 0; i < NPK; i++)
        if (strcmp(field, pool_keys[i].field) == 0) {
            t->kind = KEY_POOL;
            t->pool_key = i;
            return 1;
        }
    return 0;
}

/* Finds what path designates; unknown keys and sections get an error naming the path. */
static keel_status parse_key(const char *path, key_target *t, keel_error *err) {
    memset(t, 0, sizeof *t);
    if (strcmp(path, "default") == 0) {
        t->kind = KEY_DEFAULT;
        return KEEL_OK;
    }
    if (strcmp(path, "pool") == 0 || strcmp(path, "databases") == 0)
        return section_key(path, err);
    if (starts_with(path, "pool.")) {
        t->global = 1;
        return pool_field(path + 5, t) ? KEEL_OK : unknown_key(path, err);
    }
    for (size_t i = 0; i < NELEMS(extra_sections); i++) {
        size_t n = strlen(extra_sections[i]);
        if (strncmp(path, extra_sections[i], n) == 0) {
            if (path[n] == '\0')
                return section_key(path, err);
            if (path[n] == '.' && path[n + 1] != '\0') {
                t->kind = KEY_EXTRA;
                return KEEL_OK;
            }
        }
    }
    if (!starts_with(path, "databases."))
        return unknown_key(path, err);
    const char *name = path + 10;
    const char *dot = strchr(name, '.');
    size_t nlen = dot ? (size_t)(dot - name) : strlen(name);
    if (!valid_db_name(name, nlen))
        return keel__error_set(
            err, KEEL_ERR_CONFIG, NULL, NULL,
            "invalid database name '%.*s' in '%s' (use letters, digits, '_' and '-')", (int)nlen,
            name, path);
    if (!dot)
        return section_key(path, err);
    t->name = name;
    t->name_len = nlen;
    const char *field = dot + 1;
    for (size_t i = 0; i < NELEMS(db_fields); i++)
        if (strcmp(field, db_fields[i].field) == 0) {
            t->kind = db_fields[i].kind;
            return KEEL_OK;
        }
    if (strcmp(field, "pool") == 0 || strcmp(field, "options") == 0)
        return section_key(path, err);
    if (starts_with(field, "pool.") && pool_field(field + 5, t))
        return KEEL_OK;
    if (starts_with(field, "options.") && field[8] != '\0') {
        t->kind = KEY_OPTION;
        t->option = field + 8;
        return KEEL_OK;
    }
    return unknown_key(path, err);
}

/* ---- setting values ---------------------------------------------------------------------- */

/* Resolves an engine name to its canonical form, checking that this build has it. */
static keel_status engine_value(const char *path, const char *value, const char **canonical,
                                keel_error *err) {
    const char *c = canonical_engine(value);
    if (!c)
        return keel__error_set(
            err, KEEL_ERR_CONFIG, NULL, NULL,
            "%s: unknown engine '%s' (expected postgresql, sqlite, mysql or mongodb)", path, value);
    if (!keel__engine_find(c))
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                               "%s: engine '%s' is not available in this build", path, c);
    *canonical = c;
    return KEEL_OK;
}

/*
 * Builds the url layer of a database from its url (path is the key path, for messages); every
 * part the url has is stamped with seq.
 */
static keel_status layer_from_url(const char *path, const char *dbname, const char *text,
                                  unsigned long seq, db_layer *l, keel_error *err) {
    memset(l, 0, sizeof *l);
    if (starts_with(text, "${"))
        return keel__error_set(
            err, KEEL_ERR_CONFIG, NULL, dbname,
            "%s: a reference cannot stand for the whole URL; reference the password "
            "only (postgresql://user:${env:PW}@host/db) or set the URL through the "
            "KEEL_DATABASES__%s__URL environment variable",
            path, dbname);
    keel__url u;
    keel_error uerr;
    keel_error_clear(&uerr);
    keel_status st = keel__url_parse(text, &u, &uerr);
    if (st)
        return keel__error_set(err, st, NULL, dbname, "%s: %s", path, uerr.message);
    const char *canonical = canonical_engine(u.scheme);
    if (!keel__engine_for_scheme(u.scheme)) {
        st = keel__error_set(err, KEEL_ERR_CONFIG, NULL, dbname,
                             "%s: engine '%s' is not available in this build", path,
                             canonical ? canonical : u.scheme);
        keel__url_free(&u);
        return st;
    }
    if (!(l->engine = strdup(canonical))) {
        keel__url_free(&u);
        return nomem(err);
    }
    l->seq_engine = seq;
    l->host = u.host;
    l->user = u.user;
    l->password = u.password;
    l->database = u.path;
    l->port = u.port;
    l->seq_host = u.host ? seq : 0;
    l->seq_user = u.user ? seq : 0;
    l->seq_password = u.password ? seq : 0;
    l->seq_database = u.path ? seq : 0;
    l->seq_port = u.port ? seq : 0;
    u.host = u.user = u.password = u.path = NULL;
    for (size_t i = 0; st == KEEL_OK && i < u.nparams; i++) {
        const char *k = u.keys[i], *v = u.values[i];
        char what[160];
        snprintf(what, sizeof what, "%s: query parameter '%s'", path, k);
        key_target pt;
        if (pool_field(k, &pt)) {
            st = parse_pool_value(what, pt.pool_key, v, &l->pool, err);
            l->seq_pool[pt.pool_key] = seq;
        } else if (strcmp(k, "connect_timeout") == 0) {
            st = parse_seconds_value(what, v, &l->connect_timeout, err);
            l->seq_connect_timeout = seq;
        } else if (strcmp(k, "command_timeout") == 0) {
            st = parse_seconds_value(what, v, &l->command_timeout, err);
            l->seq_command_timeout = seq;
        } else {
            st = expand_refs(v, what, NULL, err);
            if (st == KEEL_OK && opt_set(&l->options, k, v, seq) != 0)
                st = nomem(err);
        }
    }
    keel__url_free(&u);
    const char *parts[] = { l->host, l->user, l->password, l->database };
    for (size_t i = 0; st == KEEL_OK && i < NELEMS(parts); i++)
        if (parts[i])
            st = expand_refs(parts[i], path, NULL, err);
    if (st)
        layer_free(l);
    return st;
}

/* Applies a value to a database key; the value has not been checked yet. */
static keel_status set_db_key(keel_config *cfg, const key_target *t, const char *path,
                              const char *value, keel_error *err) {
    char dbname[128];
    snprintf(dbname, sizeof dbname, "%.*s", (int)t->name_len, t->name);
    /* Every check happens before the entry is looked up, so a rejected value does not create a
     * database. */
    const char *engine = NULL;
    int port = 0;
    double seconds = 0;
    pool_values pool = { { 0 }, { 0 } };
    db_layer url_layer;
    unsigned long seq = cfg->seq + 1;
    keel_status st = KEEL_OK;
    switch (t->kind) {
    case KEY_URL:
        st = layer_from_url(path, dbname, value, seq, &url_layer, err);
        break;
    case KEY_ENGINE:
        st = engine_value(path, value, &engine, err);
        break;
    case KEY_PORT:
        st = parse_port_value(path, value, &port, err);
        break;
    case KEY_POOL:
        st = parse_pool_value(path, t->pool_key, value, &pool, err);
        break;
    case KEY_CONNECT_TIMEOUT:
    case KEY_COMMAND_TIMEOUT:
        st = parse_seconds_value(path, value, &seconds, err);
        break;
    default:
        st = expand_refs(value, path, NULL, err);
        break;
    }
    if (st) {
        /* Messages from the value checkers are re-set with the database they concern. */
        if (err) {
            char msg[KEEL_ERROR_MESSAGE_MAX];
            memcpy(msg, err->message, sizeof msg);
            keel__error_set(err, st, NULL, dbname, "%s", msg);
        }
        return st;
    }
    db_entry *e = get_entry(cfg, t->name, t->name_len);
    if (!e) {
        if (t->kind == KEY_URL)
            layer_free(&url_layer);
        return nomem(err);
    }
    db_layer *k = &e->keys;
    int rc = 0;
    cfg->seq = seq;
    switch (t->kind) {
    case KEY_URL:
        rc = set_string(&e->url, value);
        if (rc == 0) {
            layer_free(&e->from_url);
            e->from_url = url_layer;
        } else {
            layer_free(&url_layer);
        }
        break;
    case KEY_ENGINE:
        rc = set_string(&k->engine, engine);
        k->seq_engine = seq;
        break;
    case KEY_HOST:
        rc = set_string(&k->host, value);
        k->seq_host = seq;
        break;
    case KEY_PORT:
        k->port = port;
        k->seq_port = seq;
        break;
    case KEY_DATABASE:
        rc = set_string(&k->database, value);
        k->seq_database = seq;
        break;
    case KEY_USER:
        rc = set_string(&k->user, value);
        k->seq_user = seq;
        break;
    case KEY_PASSWORD:
        rc = set_string(&k->password, value);
        k->seq_password = seq;
        break;
    case KEY_CONNECT_TIMEOUT:
        k->connect_timeout = seconds;
        k->seq_connect_timeout = seq;
        break;
    case KEY_COMMAND_TIMEOUT:
        k->command_timeout = seconds;
        k->seq_command_timeout = seq;
        break;
    case KEY_OPTION:
        rc = opt_set(&k->options, t->option, value, seq);
        break;
    case KEY_POOL:
        k->pool.size[t->pool_key] = pool.size[t->pool_key];
        k->pool.seconds[t->pool_key] = pool.seconds[t->pool_key];
        k->seq_pool[t->pool_key] = seq;
        break;
    default:
        break;
    }
    return rc ? nomem(err) : KEEL_OK;
}

/* Sets one of the pool.* settings (defaults for every database). */
static keel_status set_global_pool(keel_config *cfg, const key_target *t, const char *path,
                                   const char *value, keel_error *err) {
    pool_values v = cfg->pool.v;
    keel_status st = parse_pool_value(path, t->pool_key, value, &v, err);
    if (st)
        return st;
    cfg->pool.v = v;
    cfg->pool.has[t->pool_key] = 1;
    return KEEL_OK;
}

keel_status keel_config_set(keel_config *cfg, const char *path, const char *value,
                            keel_error *err) {
    if (!cfg || !path || !value)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_config_set: cfg, path and value must not be NULL");
    key_target t;
    keel_status st = parse_key(path, &t, err);
    if (st)
        return st;
    /* A database (or the default) set by a source: the configuration is no longer the built-in
     * one (keel_config_validate sets the flag after its own keel_config_set calls). */
    if (t.kind != KEY_EXTRA && !t.global)
        cfg->builtin_default = cfg->from_database_url = 0;
    switch (t.kind) {
    case KEY_DEFAULT:
        if (!valid_db_name(value, strlen(value)))
            return keel__error_set(
                err, KEEL_ERR_CONFIG, NULL, NULL,
                "default: invalid database name '%s' (use letters, digits, '_' and '-')", value);
        if (set_string(&cfg->default_name, value) != 0)
            return nomem(err);
        break;
    case KEY_EXTRA:
        st = expand_refs(value, path, NULL, err);
        if (st)
            return st;
        if (opt_set(&cfg->extras, path, value, 0) != 0)
            return nomem(err);
        break;
    default:
        st = t.global ? set_global_pool(cfg, &t, path, value, err)
                      : set_db_key(cfg, &t, path, value, err);
        if (st)
            return st;
        break;
    }
    cfg->validated = 0;
    return KEEL_OK;
}

keel_status keel_config_set_url(keel_config *cfg, const char *url, keel_error *err) {
    keel_status st = keel_config_set(cfg, "databases.default.url", url, err);
    return st ? st : keel_config_set(cfg, "default", "default", err);
}

/* Orders KEEL_… variables by name so the database order does not depend on the environment's. */
static int env_cmp(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    for (; *x == *y && *x && *x != '='; x++, y++)
        ;
    unsigned char cx = *x == '=' ? 0 : (unsigned char)*x;
    unsigned char cy = *y == '=' ? 0 : (unsigned char)*y;
    return (cx > cy) - (cx < cy);
}

/* Top-level sections a KEEL_ variable may name: KEEL_<SECTION>__… (or KEEL_DEFAULT). */
static const char *const env_sections[] = { "DATABASES", "POOL",     "MIGRATIONS",
                                            "CACHE",     "SECURITY", "OBSERVABILITY" };

/*
 * Whether the KEEL_ variable whose name (after KEEL_) is name[0..len) names a configuration key:
 * KEEL_DEFAULT, or a documented section followed by a level (KEEL_DATABASES__…). Other names are
 * someone else's: Kubernetes defines KEEL_PORT, KEEL_SERVICE_HOST, KEEL_PORT_5432_TCP_ADDR … in
 * every pod of a namespace with a Service named keel.
 */
static int env_names_key(const char *name, size_t len) {
    if (len == 7 && strncasecmp(name, "DEFAULT", 7) == 0)
        return 1;
    for (size_t i = 0; i < NELEMS(env_sections); i++) {
        size_t n = strlen(env_sections[i]);
        if (len > n + 2 && strncasecmp(name, env_sections[i], n) == 0 && name[n] == '_' &&
            name[n + 1] == '_')
            return 1;
    }
    return 0;
}

static void free_ignored(keel_config *cfg) {
    for (size_t i = 0; i < cfg->nignored_env; i++)
        free(cfg->ignored_env[i]);
    free(cfg->ignored_env);
    cfg->ignored_env = NULL;
    cfg->nignored_env = 0;
}

/* Records text[0..len) among the ignored variables, room being made for cap of them on the first
 * call. 0, or -1 (out of memory). */
static int add_ignored(keel_config *cfg, const char *text, size_t len, size_t cap) {
    if (!cfg->ignored_env && !(cfg->ignored_env = calloc(cap ? cap : 1, sizeof(char *))))
        return -1;
    char *name = strndup(text, len);
    if (!name)
        return -1;
    cfg->ignored_env[cfg->nignored_env++] = name;
    return 0;
}

keel_status keel_config_apply_env(keel_config *cfg, keel_error *err) {
    if (!cfg)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_config_apply_env: cfg must not be NULL");
    free_ignored(cfg);
    const char *database_url = getenv("DATABASE_URL");
    if (set_string(&cfg->database_url, database_url && *database_url ? database_url : NULL))
        return nomem(err);
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    const char **vars = malloc((n ? n : 1) * sizeof *vars);
    if (!vars)
        return nomem(err);
    size_t nv = 0;
    for (char **e = environ; e && *e; e++) {
        const char *s = *e;
        if (starts_with(s, "KEEL_") && strchr(s, '=') && !starts_with(s, "KEEL_CONFIG="))
            vars[nv++] = s;
    }
    qsort(vars, nv, sizeof *vars, env_cmp);
    keel_status st = KEEL_OK;
    for (size_t i = 0; st == KEEL_OK && i < nv; i++) {
        const char *eq = strchr(vars[i], '=');
        const char *name = vars[i] + 5;
        size_t nlen = (size_t)(eq - name);
        if (!env_names_key(name, nlen)) {
            if (add_ignored(cfg, vars[i], (size_t)(eq - vars[i]), nv))
                st = nomem(err);
            continue;
        }
        char *path = malloc(nlen + 1);
        if (!path) {
            st = nomem(err);
            break;
        }
        size_t j = 0;
        for (size_t k = 0; k < nlen; k++) {
            if (name[k] == '_' && k + 1 < nlen && name[k + 1] == '_') {
                path[j++] = '.';
                k++;
            } else {
                char c = name[k];
                path[j++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
            }
        }
        path[j] = '\0';
        keel_error local;
        keel_error_clear(&local);
        st = keel_config_set(cfg, path, eq + 1, &local);
        if (st)
            keel__error_set(err, st, NULL, local.database, "environment variable %.*s: %s",
                            (int)(eq - vars[i]), vars[i], local.message);
        free(path);
    }
    free(vars);
    return st;
}

size_t keel_config_ignored_env_count(const keel_config *cfg) { return cfg ? cfg->nignored_env : 0; }

const char *keel_config_ignored_env(const keel_config *cfg, size_t index) {
    return cfg && index < cfg->nignored_env ? cfg->ignored_env[index] : NULL;
}

/* ---- validation -------------------------------------------------------------------------- */

/* Writes the configured database names, comma-separated, for messages. */
static void list_names(const keel_config *cfg, char *buf, size_t size) {
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cfg->ndbs && off < size; i++) {
        int n = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", cfg->dbs[i]->name);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

/* Of two layers, the one that set a field last (by its seq values), or NULL when neither did. */
static const db_layer *newer(const db_layer *a, unsigned long seq_a, const db_layer *b,
                             unsigned long seq_b) {
    if (!seq_a && !seq_b)
        return NULL;
    return seq_a > seq_b ? a : b;
}

/*
 * Picks one pool setting (which: PK_…) into out: the database's own value (key or url,
 * whichever was set last), then pool.*, then the default. origin receives the key path the value
 * came from, for messages.
 */
static void pick_pool(const db_entry *e, const keel_config *cfg, int which, pool_values *out,
                      char *origin, size_t osize) {
    const char *field = pool_keys[which].field;
    const db_layer *k = &e->keys, *u = &e->from_url;
    const db_layer *l = newer(k, k->seq_pool[which], u, u->seq_pool[which]);
    if (l) {
        out->size[which] = l->pool.size[which];
        out->seconds[which] = l->pool.seconds[which];
        if (l == k)
            snprintf(origin, osize, "databases.%s.pool.%s", e->name, field);
        else
            snprintf(origin, osize, "databases.%s.url (%s)", e->name, field);
    } else if (cfg->pool.has[which]) {
        out->size[which] = cfg->pool.v.size[which];
        out->seconds[which] = cfg->pool.v.seconds[which];
        snprintf(origin, osize, "pool.%s", field);
    } else {
        out->size[which] = pool_keys[which].default_size;
        out->seconds[which] = pool_keys[which].default_seconds;
        snprintf(origin, osize, "the default pool.%s", field);
    }
}

/* Merges the layers of one database into its view and checks what the core itself needs. */
static keel_status build_view(const keel_config *cfg, db_entry *e, keel_error *err) {
    keel__dbconfig *v = &e->view;
    const db_layer *k = &e->keys, *u = &e->from_url;
    if (k->engine && u->engine && strcmp(k->engine, u->engine) != 0)
        return keel__error_set(
            err, KEEL_ERR_CONFIG, NULL, e->name,
            "databases.%s.engine: '%s' does not match the engine of databases.%s.url "
            "('%s')",
            e->name, k->engine, e->name, u->engine);
    char *engine = k->engine ? k->engine : u->engine;
    if (!engine)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, e->name,
                               "databases.%s: no engine configured (set databases.%s.url or "
                               "databases.%s.engine)",
                               e->name, e->name, e->name);
    keel__option *opts = NULL;
    size_t nopts = 0;
    if (u->options.n + k->options.n) {
        opts = malloc((u->options.n + k->options.n) * sizeof *opts);
        if (!opts)
            return nomem(err);
        for (size_t i = 0; i < u->options.n; i++)
            opts[nopts++] = u->options.items[i];
        for (size_t i = 0; i < k->options.n; i++) {
            size_t j = 0;
            while (j < nopts && strcmp(opts[j].key, k->options.items[i].key) != 0)
                j++;
            if (j == nopts)
                opts[nopts++] = k->options.items[i];
            else if (k->options.seqs[i] > u->options.seqs[j])
                opts[j] = k->options.items[i];
        }
    }
    free(v->options);
    memset(v, 0, sizeof *v);
    v->name = e->name;
    v->engine = engine;
    v->url = e->url;
    const db_layer *l;
    v->host = (l = newer(k, k->seq_host, u, u->seq_host)) ? l->host : NULL;
    v->port = (l = newer(k, k->seq_port, u, u->seq_port)) ? l->port : 0;
    v->database = (l = newer(k, k->seq_database, u, u->seq_database)) ? l->database : NULL;
    v->user = (l = newer(k, k->seq_user, u, u->seq_user)) ? l->user : NULL;
    v->password = (l = newer(k, k->seq_password, u, u->seq_password)) ? l->password : NULL;
    l = newer(k, k->seq_connect_timeout, u, u->seq_connect_timeout);
    v->connect_timeout = l ? l->connect_timeout : 0;
    l = newer(k, k->seq_command_timeout, u, u->seq_command_timeout);
    v->command_timeout = l ? l->command_timeout : 0;
    v->options = opts;
    v->noptions = nopts;
    char origin[NPK][160];
    pool_values pv;
    for (int i = 0; i < NPK; i++)
        pick_pool(e, cfg, i, &pv, origin[i], sizeof origin[i]);
    v->min_size = pv.size[PK_MIN];
    v->max_size = pv.size[PK_MAX];
    v->acquire_timeout = pv.seconds[PK_ACQUIRE];
    v->idle_timeout = pv.seconds[PK_IDLE];
    v->max_lifetime = pv.seconds[PK_LIFETIME];
    v->ping_after_idle = pv.seconds[PK_PING];
    v->max_waiters = pv.size[PK_WAITERS];
    const char *max_origin = origin[PK_MAX], *min_origin = origin[PK_MIN];
    if (v->max_size < 1)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, e->name,
                               "%s: must be at least 1, got %zu (database '%s')", max_origin,
                               v->max_size, e->name);
    if (v->min_size > v->max_size)
        return keel__error_set(err, KEEL_ERR_CONFIG, NULL, e->name,
                               "%s (%zu) is greater than %s (%zu) for database '%s'", min_origin,
                               v->min_size, max_origin, v->max_size, e->name);
    return KEEL_OK;
}

/* Builds every view and resolves the default database. */
static keel_status build_all(keel_config *cfg, keel_error *err) {
    for (size_t i = 0; i < cfg->ndbs; i++) {
        keel_status st = build_view(cfg, cfg->dbs[i], err);
        if (st)
            return st;
    }
    char names[256];
    list_names(cfg, names, sizeof names);
    if (cfg->default_name) {
        db_entry *e = find_entry(cfg, cfg->default_name, strlen(cfg->default_name));
        if (!e)
            return keel__error_set(err, KEEL_ERR_CONFIG, NULL, NULL,
                                   "default: database '%s' is not configured (configured: %s)",
                                   cfg->default_name, names);
        cfg->default_resolved = e->name;
    } else if (cfg->ndbs == 1) {
        cfg->default_resolved = cfg->dbs[0]->name;
    } else {
        db_entry *e = find_entry(cfg, "default", 7);
        if (!e)
            return keel__error_set(
                err, KEEL_ERR_CONFIG, NULL, NULL,
                "default: not set, and no database is named 'default' (configured: "
                "%s); set default to one of them",
                names);
        cfg->default_resolved = e->name;
    }
    return KEEL_OK;
}

keel_status keel_config_validate(keel_config *cfg, keel_error *err) {
    if (!cfg)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_config_validate: cfg must not be NULL");
    cfg->validated = 0;
    cfg->default_resolved = NULL;
    if (cfg->ndbs == 0 && cfg->database_url) {
        /* DATABASE_URL (as platforms set it) when no source configured a database. */
        keel_error local;
        keel_error_clear(&local);
        keel_status st = keel_config_set_url(cfg, cfg->database_url, &local);
        if (st)
            return keel__error_set(err, st, NULL, local.database,
                                   "environment variable DATABASE_URL: %s", local.message);
        cfg->from_database_url = 1;
    } else if (cfg->ndbs == 0) {
        /* The embedded default: a local SQLite file, so keel works with no configuration. */
        keel_status st = keel_config_set(cfg, "databases.default.engine", "sqlite", err);
        if (st == KEEL_OK)
            st = keel_config_set(cfg, "databases.default.database", "./keel.db", err);
        if (st)
            return st;
        cfg->builtin_default = 1;
    }
    keel_status st = build_all(cfg, err);
    if (st)
        return st;
    for (size_t i = 0; i < cfg->ndbs; i++) {
        const keel__dbconfig *v = &cfg->dbs[i]->view;
        const keel__engine *eng = keel__engine_find(v->engine);
        if (eng && eng->check_config && (st = eng->check_config(v, err)) != KEEL_OK)
            return st;
    }
    cfg->validated = 1;
    return KEEL_OK;
}

/* ---- life cycle and accessors ------------------------------------------------------------ */

keel_status keel_config_new(keel_config **out, keel_error *err) {
    if (!out)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_config_new: out must not be NULL");
    *out = calloc(1, sizeof **out);
    return *out ? KEEL_OK : nomem(err);
}

void keel_config_free(keel_config *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->ndbs; i++)
        entry_free(cfg->dbs[i]);
    free(cfg->dbs);
    free(cfg->default_name);
    opt_free(&cfg->extras);
    keel__secret_free(cfg->database_url);
    free_ignored(cfg);
    free(cfg);
}

int keel_config_is_builtin_default(const keel_config *cfg) {
    return cfg && cfg->validated && cfg->builtin_default;
}

int keel_config_is_from_database_url(const keel_config *cfg) {
    return cfg && cfg->validated && cfg->from_database_url;
}

keel_config *keel__config_clone(const keel_config *cfg) {
    if (!cfg)
        return NULL;
    keel_config *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pool = cfg->pool;
    c->seq = cfg->seq;
    c->builtin_default = cfg->builtin_default;
    c->from_database_url = cfg->from_database_url;
    int failed = set_string(&c->default_name, cfg->default_name) ||
                 opt_copy(&c->extras, &cfg->extras) ||
                 set_string(&c->database_url, cfg->database_url);
    for (size_t i = 0; !failed && i < cfg->nignored_env; i++)
        failed =
            add_ignored(c, cfg->ignored_env[i], strlen(cfg->ignored_env[i]), cfg->nignored_env);
    if (!failed && cfg->ndbs) {
        c->dbs = calloc(cfg->ndbs, sizeof *c->dbs);
        failed = !c->dbs;
    }
    for (size_t i = 0; !failed && i < cfg->ndbs; i++) {
        const db_entry *s = cfg->dbs[i];
        db_entry *d = calloc(1, sizeof *d);
        if (!d) {
            failed = 1;
            break;
        }
        c->dbs[c->ndbs++] = d;
        failed = set_string(&d->name, s->name) || set_string(&d->url, s->url) ||
                 layer_copy(&d->keys, &s->keys) || layer_copy(&d->from_url, &s->from_url);
    }
    /* The source passed validation, so rebuilding the views can only fail for lack of memory. */
    if (!failed && cfg->validated) {
        failed = build_all(c, NULL) != KEEL_OK;
        c->validated = !failed;
    }
    if (failed) {
        keel_config_free(c);
        return NULL;
    }
    return c;
}

size_t keel_config_database_count(const keel_config *cfg) { return cfg ? cfg->ndbs : 0; }

const char *keel_config_database_name(const keel_config *cfg, size_t index) {
    return cfg && index < cfg->ndbs ? cfg->dbs[index]->name : NULL;
}

const char *keel_config_default_database(const keel_config *cfg) {
    if (!cfg)
        return NULL;
    return cfg->validated ? cfg->default_resolved : cfg->default_name;
}

const char *keel_config_database_engine(const keel_config *cfg, const char *name) {
    if (!cfg || !name)
        return NULL;
    const db_entry *e = find_entry(cfg, name, strlen(name));
    if (!e)
        return NULL;
    const db_layer *l = newer(&e->keys, e->keys.seq_engine, &e->from_url, e->from_url.seq_engine);
    return l ? l->engine : NULL;
}

const keel__dbconfig *keel__config_database(const keel_config *cfg, const char *name) {
    if (!cfg || !name || !cfg->validated)
        return NULL;
    db_entry *e = find_entry(cfg, name, strlen(name));
    return e ? &e->view : NULL;
}

const keel__dbconfig *keel__config_database_at(const keel_config *cfg, size_t index) {
    if (!cfg || !cfg->validated || index >= cfg->ndbs)
        return NULL;
    return &cfg->dbs[index]->view;
}

const char *keel__dbconfig_option(const keel__dbconfig *dbc, const char *key) {
    if (!dbc || !key)
        return NULL;
    for (size_t i = 0; i < dbc->noptions; i++)
        if (strcmp(dbc->options[i].key, key) == 0)
            return dbc->options[i].value;
    return NULL;
}
