/* src/engines/mysql/lib.c - loads libmariadb on first use and fills the MySQL engine's table. */
#define KEEL__MYSQL_LIB_FILLING
#include "engines/mysql/lib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "engines/lazylib.h"

keel__mysql_lib_table keel__mysql_lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static char lib_error[256]; /* empty once loaded; written only inside the once */

static void lib_load_once(void) {
#define SYM(name) KEEL__LAZY_SYM(keel__mysql_lib, name)
    static const keel__lazy_sym syms[] = { KEEL__MYSQL_LIB_FUNCTIONS(SYM) };
#undef SYM
    void *h = keel__lazylib_load(KEEL_MARIADB_SONAME, syms, sizeof syms / sizeof syms[0], lib_error,
                                 sizeof lib_error);
    /* Looked up through libmariadb's handle, which searches the libraries it loaded (libcrypto
     * when it uses OpenSSL): being loaded RTLD_LOCAL, they are not in the global namespace. */
    if (h)
        *(void **)&keel__mysql_lib.err_clear = dlsym(h, "ERR_clear_error");
}

int keel__mysql_lib_load(char *why, size_t size) {
    pthread_once(&lib_once, lib_load_once);
    if (!lib_error[0])
        return 0;
    snprintf(why, size, "%s", lib_error);
    return -1;
}
