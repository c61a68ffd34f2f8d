/* src/engines/lazylib.h - loading an engine's client library on first use, with dlopen. */
#ifndef KEEL_ENGINES_LAZYLIB_H
#define KEEL_ENGINES_LAZYLIB_H

#include <stddef.h>

/*
 * Why: a client library mapped into every process that links libkeel costs resident memory
 * (its pages touched by relocation and by its constructors, and those of the libraries it
 * needs) even when the process never uses that engine; libmongoc alone costs about 4 MiB. An
 * engine whose library is loaded lazily reaches each function it uses through a table of
 * pointers declared with the functions' own types (lib.h in the engine's folder), so calls are
 * type-checked as if they were direct; a function missing from a table shows up as an undefined
 * symbol when the C tests link.
 */

/* One function to look up: its name, and where its address goes. */
typedef struct keel__lazy_sym {
    const char *name;
    void **slot;
} keel__lazy_sym;

/* The entry of a table filling loop for function name of table t (see the engines' lib.c). */
#define KEEL__LAZY_SYM(t, name) { #name, (void **)&(t).name },

/*
 * Loads soname (RTLD_NOW | RTLD_LOCAL, never closed) and stores the address of every symbol of
 * syms. Returns the library's handle (for optional look-ups with dlsym), or NULL with the reason
 * (dlerror's text, or the missing symbol) in why. Blocks while the dynamic loader maps the
 * library. Call it once per library (the engines' lib.c files do, under pthread_once); it is not
 * itself synchronised.
 */
void *keel__lazylib_load(const char *soname, const keel__lazy_sym *syms, size_t n, char *why,
                         size_t size);

#endif
