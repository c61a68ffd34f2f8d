/* src/engines/mysql/connect.h - MySQL configuration checks and connection set-up. */
#ifndef KEEL_ENGINES_MYSQL_CONNECT_H
#define KEEL_ENGINES_MYSQL_CONNECT_H

#include "engines/mysql/mysql.h"

/* Frees the settings' strings, wiping the password, and zeroes s. */
void keel__my_settings_free(my_settings *s);

/* A deep copy of src into dst (for a cancel's own session). 0, or -1 when out of memory. */
int keel__my_settings_copy(my_settings *dst, const my_settings *src);

/*
 * Applies the settings to a fresh handle: protocol, character set, TLS, and no LOAD DATA
 * LOCAL (it would let a server read the client's files). Returns 0, or -1 when libmariadb
 * refused an option.
 */
int keel__my_apply(MYSQL *m, const my_settings *s);

/* The engine's check_config: validates the options of a MySQL database config. */
keel_status keel__my_check_config(const keel__dbconfig *dbc, keel_error *err);

/*
 * Watches fd. A new socket (the first, or another address) gets a fresh watch, since an epoll
 * or asyncio host would not notice a descriptor number that was reused. Returns 0 or -1.
 */
int keel__my_watch_socket(my_impl *p, int fd);

/* Ends the connect with code and the text what (redacted); returns 1 (the connect is over). */
int keel__my_connect_error(my_impl *p, keel_status code, const char *what);

/* C_CONNECT finished: the handshake succeeded, another address is tried, or the connect fails. */
int keel__my_after_connect(my_impl *p);

/* Frees the connection and everything it holds, whatever its phase. */
void keel__my_destroy(my_impl *p);

/* The engine's connect: loads libmariadb, resolves the host, starts the handshake. */
keel_status keel__my_connect(keel_conn *c, keel_error *err);

#endif
