/* keel/export.h - symbol visibility: everything is hidden unless marked KEEL_API. */
#ifndef KEEL_EXPORT_H
#define KEEL_EXPORT_H

#if defined(KEEL_STATIC)
#define KEEL_API
#elif defined(_WIN32)
#ifdef KEEL_BUILDING
#define KEEL_API __declspec(dllexport)
#else
#define KEEL_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define KEEL_API __attribute__((visibility("default")))
#else
#define KEEL_API
#endif

#endif
