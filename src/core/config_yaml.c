/* src/core/config_yaml.c - loading a YAML configuration file into key paths with libyaml. */
#include <keel/config.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "core/buf.h"
#include "core/config_int.h"
#include "core/error_int.h"
#include "core/secret.h"

/* Deeper nesting than any key path needs means the file is not a keel configuration. */
#define YAML_MAX_DEPTH 16

typedef struct yaml_ctx {
    yaml_parser_t parser;
    keel_config *cfg;
    const char *file;
    keel__buf path; /* the dotted key path of the node being read */
    int depth;
    keel_error *err;
} yaml_ctx;

static keel_status load_mapping(yaml_ctx *y);

static unsigned long line_of(const yaml_mark_t *m) { return (unsigned long)m->line + 1; }

/* Fetches the next event; a syntax error becomes KEEL_ERR_CONFIG with file and line. */
static keel_status next_event(yaml_ctx *y, yaml_event_t *ev) {
    if (yaml_parser_parse(&y->parser, ev))
        return KEEL_OK;
    if (y->parser.error == YAML_MEMORY_ERROR)
        return keel__error_set(y->err, KEEL_ERR_NOMEM, NULL, NULL, "%s: out of memory reading YAML",
                               y->file);
    const yaml_mark_t *m = y->parser.problem ? &y->parser.problem_mark : &y->parser.context_mark;
    return keel__error_set(
        y->err, KEEL_ERR_CONFIG, NULL, NULL, "%s:%lu: invalid YAML: %s%s%s", y->file, line_of(m),
        y->parser.problem ? y->parser.problem : "syntax error", y->parser.context ? " " : "",
        y->parser.context ? y->parser.context : "");
}

/* True for a YAML null (`key:`, `~`, `null`): such a key is left unset. */
static int is_null(const yaml_event_t *ev) {
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag && strcmp(tag, YAML_NULL_TAG) == 0)
        return 1;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

/* Error about the current key path at a line. */
static keel_status path_error(yaml_ctx *y, const yaml_mark_t *m, const char *what) {
    return keel__error_set(y->err, KEEL_ERR_CONFIG, NULL, NULL, "%s:%lu: %s: %s", y->file,
                           line_of(m), y->path.len ? y->path.data : "(top level)", what);
}

/* Reads the value of the key just appended to y->path. */
static keel_status load_value(yaml_ctx *y) {
    yaml_event_t ev;
    keel_status st = next_event(y, &ev);
    if (st)
        return st;
    switch (ev.type) {
    case YAML_SCALAR_EVENT:
        if (!is_null(&ev)) {
            if (strlen((const char *)ev.data.scalar.value) != ev.data.scalar.length) {
                st = path_error(y, &ev.start_mark, "value contains a NUL character");
                break;
            }
            keel_error local;
            keel_error_clear(&local);
            st = keel_config_set(y->cfg, y->path.data, (const char *)ev.data.scalar.value, &local);
            if (st)
                keel__error_set(y->err, st, NULL, local.database, "%s:%lu: %s", y->file,
                                line_of(&ev.start_mark), local.message);
        }
        break;
    case YAML_MAPPING_START_EVENT:
        if (++y->depth > YAML_MAX_DEPTH)
            st = path_error(y, &ev.start_mark, "nested too deeply");
        else
            st = load_mapping(y);
        y->depth--;
        break;
    case YAML_SEQUENCE_START_EVENT:
        st = path_error(y, &ev.start_mark,
                        "lists are not supported (no configuration key takes a list)");
        break;
    case YAML_ALIAS_EVENT:
        st = path_error(y, &ev.start_mark, "aliases (*name) are not supported");
        break;
    default:
        st = path_error(y, &ev.start_mark, "unexpected YAML structure");
        break;
    }
    yaml_event_delete(&ev);
    return st;
}

/* Reads the entries of a mapping whose start event was consumed; keys extend y->path. */
static keel_status load_mapping(yaml_ctx *y) {
    size_t base = y->path.len;
    for (;;) {
        yaml_event_t ev;
        keel_status st = next_event(y, &ev);
        if (st)
            return st;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return KEEL_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            st = path_error(y, &ev.start_mark, "mapping keys must be plain text");
            yaml_event_delete(&ev);
            return st;
        }
        const char *key = (const char *)ev.data.scalar.value;
        if (!*key || strlen(key) != ev.data.scalar.length)
            st = path_error(y, &ev.start_mark, "empty or invalid key");
        else if ((base && keel__buf_putc(&y->path, '.') != 0) || keel__buf_puts(&y->path, key) != 0)
            st = keel__error_set(y->err, KEEL_ERR_NOMEM, NULL, NULL,
                                 "%s: out of memory reading YAML", y->file);
        yaml_event_delete(&ev);
        if (st == KEEL_OK)
            st = load_value(y);
        y->path.len = base;
        if (y->path.data)
            y->path.data[base] = '\0';
        if (st)
            return st;
    }
}

/* Reads the whole stream: at most one document whose root is a mapping (or empty). */
static keel_status load_stream(yaml_ctx *y) {
    int documents = 0;
    for (;;) {
        yaml_event_t ev;
        keel_status st = next_event(y, &ev);
        if (st)
            return st;
        yaml_event_type_t type = ev.type;
        yaml_mark_t mark = ev.start_mark;
        int null_root = type == YAML_SCALAR_EVENT && is_null(&ev);
        yaml_event_delete(&ev);
        switch (type) {
        case YAML_STREAM_END_EVENT:
            return KEEL_OK;
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1)
                return keel__error_set(y->err, KEEL_ERR_CONFIG, NULL, NULL,
                                       "%s:%lu: only one YAML document is allowed", y->file,
                                       line_of(&mark));
            break;
        case YAML_MAPPING_START_EVENT:
            st = load_mapping(y);
            if (st)
                return st;
            break;
        default:
            /* A null root is an empty document; any other root is not a configuration. */
            if (null_root)
                break;
            return keel__error_set(y->err, KEEL_ERR_CONFIG, NULL, NULL,
                                   "%s:%lu: the top level must be a mapping of keys", y->file,
                                   line_of(&mark));
        }
    }
}

/* The first bytes of every SQLite database file. */
static const char sqlite_header[16] = "SQLite format 3";

/* Whether the name of path ends in .db, .sqlite or .sqlite3 (in any case). */
static int sqlite_name(const char *path) {
    static const char *const exts[] = { ".db", ".sqlite", ".sqlite3" };
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/') || dot == path || dot[-1] == '/')
        return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return 1;
    return 0;
}

/*
 * Reads the file into out. KEEL_ERR_IO naming the path and the system's reason on failure. When
 * the file starts with SQLite's header, stops there and sets *sqlite.
 */
static keel_status read_file(const char *path, keel__buf *out, int *sqlite, keel_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return keel__error_set(err, KEEL_ERR_IO, NULL, NULL,
                               "cannot read configuration file '%s': %s", path, strerror(errno));
    keel_status st = KEEL_OK;
    for (;;) {
        if (keel__buf_reserve(out, 8192) != 0) {
            st = keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory reading '%s'",
                                 path);
            break;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = keel__error_set(err, KEEL_ERR_IO, NULL, NULL,
                                 "cannot read configuration file '%s': %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        size_t before = out->len;
        out->len += (size_t)n;
        if (before < sizeof sqlite_header && out->len >= sizeof sqlite_header &&
            memcmp(out->data, sqlite_header, sizeof sqlite_header) == 0) {
            *sqlite = 1; /* a database, maybe large: nothing more to read */
            break;
        }
    }
    close(fd);
    return st;
}

keel_status keel__config_load_yaml(keel_config *cfg, const char *name, const char *text, size_t len,
                                   keel_error *err) {
    yaml_ctx y;
    memset(&y, 0, sizeof y);
    y.cfg = cfg;
    y.file = name;
    y.err = err;
    if (!yaml_parser_initialize(&y.parser))
        return keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory reading '%s'", name);
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)(text ? text : ""),
                                 text ? len : 0);
    keel_status st = load_stream(&y);
    yaml_parser_delete(&y.parser);
    keel__buf_free(&y.path);
    return st;
}

/*
 * An SQLite database named as the configuration: databases.default, and the default. It is set
 * as the URL sqlite:///PATH (every byte but letters, digits and "-._~/" percent-encoded), as a
 * file's url key would be, so that KEEL_DATABASES__DEFAULT__URL replaces it (an engine key set
 * here would contradict that URL instead).
 */
static keel_status load_sqlite(keel_config *cfg, const char *path, keel_error *err) {
    keel__buf url = { 0 };
    int bad = keel__buf_puts(&url, "sqlite:///") != 0;
    for (const unsigned char *s = (const unsigned char *)path; !bad && *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
            strchr("-._~/", *s) != NULL)
            bad = keel__buf_putc(&url, (char)*s) != 0;
        else
            bad = keel__buf_printf(&url, "%%%02X", *s) != 0;
    }
    keel_status st =
        bad ? keel__error_set(err, KEEL_ERR_NOMEM, NULL, NULL, "out of memory reading '%s'", path)
            : keel_config_set(cfg, "databases.default.url", url.data, err);
    keel__buf_free(&url);
    if (st == KEEL_OK)
        st = keel_config_set(cfg, "default", "default", err);
    return st;
}

keel_status keel_config_load_file(keel_config *cfg, const char *path, keel_error *err) {
    if (!cfg || !path)
        return keel__error_set(err, KEEL_ERR_INVALID_ARGUMENT, NULL, NULL,
                               "keel_config_load_file: cfg and path must not be NULL");
    if (sqlite_name(path))
        return load_sqlite(cfg, path, err);
    keel__buf text = { .secret = 1 };
    int sqlite = 0;
    keel_status st = read_file(path, &text, &sqlite, err);
    if (st == KEEL_OK && sqlite)
        st = load_sqlite(cfg, path, err);
    else if (st == KEEL_OK)
        st = keel__config_load_yaml(cfg, path, text.data, text.len, err);
    /* The file may hold secrets written inline; do not leave them in freed memory. */
    keel__secret_buf_free(&text);
    return st;
}
