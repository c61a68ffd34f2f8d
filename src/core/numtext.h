/* src/core/numtext.h - numbers to and from text, the same whatever the host's locale. */
#ifndef KEEL_CORE_NUMTEXT_H
#define KEEL_CORE_NUMTEXT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses n bytes of optionally signed decimal text ("42", "-7", "+0") into *out. Returns 0, or
 * -1 when the text is empty, holds anything but the sign and digits, or is outside the int64
 * range; *out is then left alone.
 */
int keel__parse_int64(const char *s, size_t n, int64_t *out);

/*
 * strtod in the C locale: the decimal point is always '.', whatever LC_NUMERIC the host
 * program set. end may be NULL.
 */
double keel__strtod(const char *s, char **end);

/*
 * Writes the shortest decimal text that reads back as exactly d (15 to 17 significant digits,
 * C locale) into out, NUL-terminated, and returns its length as snprintf does. NaN and the
 * infinities are written "NaN", "Infinity" and "-Infinity", the spellings PostgreSQL and keel's
 * SQLite text use. 32 bytes always suffice.
 */
size_t keel__format_double(double d, char *out, size_t size);

/*
 * The double the shortest decimal text of f reads as (1.1f gives 1.1, not 1.100000023841858):
 * the value of a float4 PostgreSQL sends in binary equal to the one its text form gives. NaN and
 * the infinities are returned as they are.
 */
double keel__float_shortest(float f);

#endif
