/* src/engines/sqlite/lib.c - loads libsqlite3 on first use and fills the SQLite engine's table. */
#define KEEL__SQLITE_LIB_FILLING
#include "engines/sqlite/lib.h"

#include <pthread.h>
#include <stdio.h>

#include "engines/lazylib.h"

keel__sqlite_lib_table keel__sqlite_lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static char lib_error[256]; /* empty once loaded; written only inside the once */

static void lib_load_once(void) {
#define SYM(name) KEEL__LAZY_SYM(keel__sqlite_lib, name)
    static const keel__lazy_sym syms[] = { KEEL__SQLITE_LIB_FUNCTIONS(SYM) };
#undef SYM
    keel__lazylib_load(KEEL_SQLITE3_SONAME, syms, sizeof syms / sizeof syms[0], lib_error,
                       sizeof lib_error);
}

int keel__sqlite_lib_load(char *why, size_t size) {
    pthread_once(&lib_once, lib_load_once);
    if (!lib_error[0])
        return 0;
    snprintf(why, size, "%s", lib_error);
    return -1;
}
