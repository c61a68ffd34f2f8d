/* keel/keel.h - the umbrella header of libkeel. */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

#include <keel/export.h>
#include <keel/error.h>
#include <keel/value.h>
#include <keel/result.h>
#include <keel/loop.h>
#include <keel/config.h>
#include <keel/db.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0
#define KEEL_VERSION_STRING "0.1.0"

/* The library's version string ("0.1.0"); may differ from KEEL_VERSION_STRING at run time. */
KEEL_API const char *keel_version(void);

#ifdef __cplusplus
}
#endif
#endif
