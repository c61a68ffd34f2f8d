/* src/engines/settings.h - database config steps all engines share: checks, secret resolution. */
#ifndef KEEL_ENGINES_SETTINGS_H
#define KEEL_ENGINES_SETTINGS_H

#include <keel/error.h>
#include "core/config_int.h"

/*
 * The checks of a network engine's check_config that do not depend on the engine: port is 0
 * (the engine's default) or a TCP port, and connect_timeout is not negative. KEEL_ERR_CONFIG
 * naming the key path, with engine as the error's engine, else KEEL_OK.
 */
keel_status keel__settings_check_network(const keel__dbconfig *dbc, const char *engine,
                                         keel_error *err);

/*
 * Resolves the value of databases.NAME.<field> (NULL reads as ""), which may reference secrets,
 * into a malloc'ed string the caller frees: keel__config_resolve with that key path, so an
 * error names the key and never the value. Called at connect time, so rotated secrets are seen.
 */
keel_status keel__settings_resolve(const keel__dbconfig *dbc, const char *field, const char *value,
                                   char **out, keel_error *err);

/* keel__settings_resolve for an engine option: the key path is databases.NAME.options.KEY. */
keel_status keel__settings_resolve_option(const keel__dbconfig *dbc, const keel__option *opt,
                                          char **out, keel_error *err);

/*
 * 1 when v is a non-negative number of seconds in C syntax ("30", "2.5"), as a connect_timeout
 * option must be; else 0.
 */
int keel__settings_is_seconds(const char *v);

/* 1 when word is one of the strings of list (ended by NULL), compared exactly; else 0. */
int keel__word_in_list(const char *word, const char *const *list);

#endif
