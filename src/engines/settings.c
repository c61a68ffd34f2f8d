/* src/engines/settings.c - database config steps all engines share: checks, secret resolution. */
#include <stdio.h>
#include <string.h>

#include "core/error_int.h"
#include "core/numtext.h"
#include "engines/settings.h"

keel_status keel__settings_check_network(const keel__dbconfig *dbc, const char *engine,
                                         keel_error *err) {
    const char *name = dbc->name ? dbc->name : "";
    if (dbc->port < 0 || dbc->port > 65535)
        return keel__error_set(err, KEEL_ERR_CONFIG, engine, name,
                               "databases.%s.port: %d is not a TCP port (1-65535)", name,
                               dbc->port);
    if (dbc->connect_timeout < 0)
        return keel__error_set(err, KEEL_ERR_CONFIG, engine, name,
                               "databases.%s.connect_timeout: must not be negative", name);
    return KEEL_OK;
}

keel_status keel__settings_resolve(const keel__dbconfig *dbc, const char *field, const char *value,
                                   char **out, keel_error *err) {
    char keypath[256];
    snprintf(keypath, sizeof keypath, "databases.%s.%s", dbc && dbc->name ? dbc->name : "", field);
    return keel__config_resolve(value ? value : "", keypath, out, err);
}

keel_status keel__settings_resolve_option(const keel__dbconfig *dbc, const keel__option *opt,
                                          char **out, keel_error *err) {
    char field[200];
    snprintf(field, sizeof field, "options.%s", opt->key);
    return keel__settings_resolve(dbc, field, opt->value, out, err);
}

int keel__settings_is_seconds(const char *v) {
    char *end;
    double d = keel__strtod(v, &end);
    return *v && !*end && d >= 0;
}

int keel__word_in_list(const char *word, const char *const *list) {
    for (; *list; list++)
        if (strcmp(word, *list) == 0)
            return 1;
    return 0;
}
