/* src/engines/lazylib.c - loads an engine's client library with dlopen and fills its table. */
#include "engines/lazylib.h"

#include <dlfcn.h>
#include <stdio.h>

void *keel__lazylib_load(const char *soname, const keel__lazy_sym *syms, size_t n, char *why,
                         size_t size) {
    /* RTLD_LOCAL keeps the library's symbols out of the global namespace, where they could
     * interpose on a copy the host application loaded itself. The handle is never closed: the
     * libraries keep process-wide state (libmongoc's initialisation) for the process's life. */
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, size, "%s", e ? e : "dlopen failed");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        /* dlsym returns an object pointer; POSIX guarantees that it converts to the function
         * pointer the slot holds. */
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(why, size, "%s has no symbol %s", soname, syms[i].name);
            return NULL;
        }
    }
    return h;
}
