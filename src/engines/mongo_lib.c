/* src/engines/mongo_lib.c - loads libmongoc on first use and fills the MongoDB engine's table. */
#define KEEL__MONGO_LIB_FILLING
#include "engines/mongo_lib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

keel__mongo_lib_table keel__mongo_lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static char lib_error[256]; /* empty once loaded; written only inside the once */

static void lib_load_once(void)
{
    /* RTLD_LOCAL: libmongoc's symbols stay out of the global namespace, where they could
     * interpose on a copy the host application loaded itself. The handle is never closed:
     * libmongoc's global state lives as long as the process (see mg_init in mongo.c). */
    void *h = dlopen(KEEL_MONGOC_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(lib_error, sizeof lib_error, "%s", e ? e : "dlopen failed");
        return;
    }
    /* dlsym returns an object pointer; POSIX guarantees it converts to the function pointer
     * the entry holds, which is what storing through a void ** does. */
#define KEEL__MONGO_LIB_SYM(name)                                                       \
    if (!(*(void **)&keel__mongo_lib.name = dlsym(h, #name))) {                         \
        snprintf(lib_error, sizeof lib_error, "%s has no symbol %s", KEEL_MONGOC_SONAME, \
                 #name);                                                                \
        return;                                                                         \
    }
    KEEL__MONGO_LIB_FUNCTIONS(KEEL__MONGO_LIB_SYM)
#undef KEEL__MONGO_LIB_SYM
}

int keel__mongo_lib_load(char *why, size_t size)
{
    pthread_once(&lib_once, lib_load_once);
    if (!lib_error[0])
        return 0;
    snprintf(why, size, "%s", lib_error);
    return -1;
}
