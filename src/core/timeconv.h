/* src/core/timeconv.h - calendar arithmetic and text codecs for dates, times, timestamps, UUIDs. */
#ifndef KEEL_CORE_TIMECONV_H
#define KEEL_CORE_TIMECONV_H

#include <stddef.h>
#include <stdint.h>

/* Days since 1970-01-01 for a proleptic Gregorian date (month 1-12, day 1-31), and back. */
int32_t keel__days_from_civil(int64_t year, unsigned month, unsigned day);
void keel__civil_from_days(int32_t days, int64_t *year, unsigned *month, unsigned *day);

/*
 * Parsers of the ISO 8601 forms PostgreSQL (DateStyle ISO) and SQLite write. Each returns 0 on
 * success or -1 when the text is not of that form; n is the text length (no NUL needed).
 *   date:        YYYY-MM-DD  (an optional " BC" suffix)
 *   time:        HH:MM[:SS[.ffffff]]
 *   timestamp:   date[T| ]time  (a trailing "Z" or offset is rejected)
 *   timestamptz: date[T| ]time followed by Z, +HH, +HH:MM, +HHMM or -… ; converted to UTC
 */
int keel__parse_date(const char *s, size_t n, int32_t *days);
int keel__parse_time(const char *s, size_t n, int64_t *micros);
int keel__parse_timestamp(const char *s, size_t n, int64_t *micros);
int keel__parse_timestamptz(const char *s, size_t n, int64_t *micros_utc);

/*
 * Formatters, writing NUL-terminated ISO text into out (at least KEEL__TIME_TEXT_MAX bytes) and
 * returning its length. Fractions are written only when non-zero (6 digits). timestamptz is
 * written in UTC with a "+00:00" suffix; years before 1 are written with " BC" for PostgreSQL.
 */
#define KEEL__TIME_TEXT_MAX 48
size_t keel__format_date(int32_t days, char *out);
size_t keel__format_time(int64_t micros, char *out);
size_t keel__format_timestamp(int64_t micros, char *out);
size_t keel__format_timestamptz(int64_t micros_utc, char *out);

/*
 * A duration as MySQL writes TIME values beyond a time of day: "[-]H…H:MM:SS[.f…]" (hours of
 * any count of digits up to 9, a fraction of up to 6 digits). parse returns 0 or -1; format
 * writes at least two digits of hours and the fraction only when non-zero (NUL-terminated,
 * at most KEEL__TIME_TEXT_MAX bytes) and returns the length.
 */
int keel__parse_duration(const char *s, size_t n, int64_t *micros);
size_t keel__format_duration(int64_t micros, char *out);

/* UUID text (8-4-4-4-12 hex, either case, optional braces) ↔ 16 bytes. parse returns 0 or -1. */
int keel__parse_uuid(const char *s, size_t n, unsigned char out[16]);
#define KEEL__UUID_TEXT_MAX 37
void keel__format_uuid(const unsigned char in[16], char *out); /* 36 chars + NUL */

#endif
