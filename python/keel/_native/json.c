/* python/keel/_native/json.c - a direct JSON text → Python objects decoder for server output. */
#include "module.h"

#include <string.h>

/*
 * Servers send JSON that is well formed and mostly plain: objects with a handful of short ASCII
 * keys, strings without escapes, small integers. This decoder builds the Python objects straight
 * from the bytes for that common shape, without json's per-document key memo, its number
 * substrings and its scanner tuples, and shares key strings between documents through a small
 * cache in the module state (strings are immutable, so sharing them is invisible).
 *
 * It only ever answers when its answer is exactly what json.loads gives; for anything it does
 * not handle (escapes of surrogates, control characters, NaN and Infinity, integers of 19
 * digits or more, very deep nesting, invalid UTF-8, any syntax error) it steps aside and the
 * caller runs json.loads, which then produces the same value or the same error it always did.
 */

/* Nesting deeper than this is left to json.loads, which has its own recursion guard. */
#define JSON_MAX_DEPTH 128
/* Integers of up to 18 digits fit an int64 without overflow checks. */
#define JSON_INT_DIGITS 18
/* Floats longer than this are left to json.loads (they are copied to a stack buffer). */
#define JSON_FLOAT_MAX 64

typedef struct jparser {
    kpy_state *st;
    const char *p;
    const char *end;
} jparser;

static PyObject *parse_value(jparser *j, int depth);

/* NULL without an exception: the input is not for this decoder. */
static PyObject *decline(void) { return NULL; }

/* After a failed Python call: a memory error stays raised, anything else means "decline". */
static PyObject *py_failed(void) {
    if (!PyErr_ExceptionMatches(PyExc_MemoryError))
        PyErr_Clear();
    return NULL;
}

static void skip_space(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Byte-wise constants for the word-at-a-time scan of scan_string. */
#define BYTES_1 UINT64_C(0x0101010101010101)
#define BYTES_80 UINT64_C(0x8080808080808080)

/*
 * Scans a string body after its opening quote up to the closing one. Sets *escaped when it
 * holds backslashes and *ascii when every byte is below 0x80. Returns the position of the
 * closing quote, or NULL when the string is unterminated or holds a control character (which
 * json.loads refuses in its default strict mode).
 */
static const char *scan_string(const char *p, const char *end, int *escaped, int *ascii) {
    uint64_t high = 0;
    *escaped = 0;
    /*
     * Eight bytes at a time while none is a quote, a backslash or a control character: (x -
     * 0x01…) & ~x has a byte's high bit set when x has a zero byte, and (w - 0x20…) & ~w when w
     * has a byte below 0x20. Either may also flag a byte past a real hit, never when there is
     * none, and the byte loop below decides exactly.
     */
    while (end - p >= 8) {
        uint64_t w, q, b;
        memcpy(&w, p, 8);
        q = w ^ (BYTES_1 * '"');
        b = w ^ (BYTES_1 * '\\');
        if ((((q - BYTES_1) & ~q) | ((b - BYTES_1) & ~b) | ((w - BYTES_1 * 0x20) & ~w)) & BYTES_80)
            break;
        high |= w;
        p += 8;
    }
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            *escaped = 1;
            if (++p == end)
                return NULL;
        }
        high |= c;
    }
    *ascii = (high & BYTES_80) == 0;
    return p < end ? p : NULL;
}

/* The escapes of a string decoded into UTF-8 at out (as long as the input at least). */
static Py_ssize_t unescape(const char *p, const char *q, char *out) {
    char *o = out;
    while (p < q) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        char e = p[1];
        p += 2;
        switch (e) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '/':
            *o++ = '/';
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            if (q - p < 4)
                return -1;
            int cp = 0;
            for (int k = 0; k < 4; k++) {
                int h = hex_digit(p[k]);
                if (h < 0)
                    return -1;
                cp = cp * 16 + h;
            }
            p += 4;
            /* Surrogates (paired or lone) are json.loads's business. The six bytes of a \u
             * escape become at most three of UTF-8, so the output never outgrows the input. */
            if (cp >= 0xD800 && cp <= 0xDFFF)
                return -1;
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return -1;
        }
    }
    return o - out;
}

/* A str of n bytes of UTF-8 at s, ASCII when the caller knows it is. */
static PyObject *make_str(const char *s, Py_ssize_t n, int ascii) {
    if (ascii) {
        PyObject *o = PyUnicode_New(n, 127);
        if (o != NULL)
            memcpy(PyUnicode_DATA(o), s, (size_t)n);
        return o;
    }
    PyObject *o = PyUnicode_DecodeUTF8(s, n, NULL);
    return o != NULL ? o : py_failed();
}

/*
 * An object key: plain ASCII keys come from the module's cache, others are made. The cache is
 * two-way set associative (slots 2i and 2i+1, the most recently added first), so that two keys
 * of one document whose hashes collide do not keep evicting each other.
 */
static PyObject *make_key(jparser *j, const char *s, Py_ssize_t n, int ascii) {
    if (!ascii || n > KPY_JSON_KEY_MAX)
        return make_str(s, n, ascii);
    /* FNV-1a, its high bits folded in, enough to spread the few keys documents use. */
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    h ^= h >> 16;
    PyObject **set = &j->st->json_keys[(h % (KPY_JSON_KEYS / 2)) * 2];
    for (int w = 0; w < 2; w++) {
        PyObject *k = set[w];
        if (k != NULL && PyUnicode_GET_LENGTH(k) == n &&
            memcmp(PyUnicode_DATA(k), s, (size_t)n) == 0)
            return Py_NewRef(k);
    }
    PyObject *k = make_str(s, n, 1);
    if (k == NULL)
        return NULL;
    /* Hashed once here (a str's hash cannot fail), the key's hash is then reused by every
     * dict it goes into. */
    (void)PyObject_Hash(k);
    Py_XDECREF(set[1]);
    set[1] = set[0];
    set[0] = Py_NewRef(k);
    return k;
}

/* A string at j->p (its opening quote); a key when key is set. */
static PyObject *parse_string(jparser *j, int key) {
    const char *s = j->p + 1;
    int escaped, ascii;
    const char *q = scan_string(s, j->end, &escaped, &ascii);
    if (q == NULL)
        return decline();
    j->p = q + 1;
    if (!escaped)
        return key ? make_key(j, s, q - s, ascii) : make_str(s, q - s, ascii);
    char stack[256];
    char *buf = (size_t)(q - s) <= sizeof stack ? stack : PyMem_Malloc((size_t)(q - s));
    if (buf == NULL)
        return PyErr_NoMemory();
    PyObject *o = NULL;
    Py_ssize_t n = unescape(s, q, buf);
    if (n >= 0) {
        /* Escapes may have produced non-ASCII characters: decode as UTF-8. */
        o = key ? make_key(j, buf, n, 0) : make_str(buf, n, 0);
    }
    if (buf != stack)
        PyMem_Free(buf);
    return o;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A number at j->p, following JSON's grammar exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static PyObject *parse_number(jparser *j) {
    const char *s = j->p, *p = s, *end = j->end;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const char *digits = p;
    if (p < end && *p == '0')
        p++;
    else if (p < end && *p >= '1' && *p <= '9')
        while (p < end && is_digit(*p))
            p++;
    else
        return decline();
    const char *int_end = p;
    int is_float = 0;
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            return decline();
        while (p < end && is_digit(*p))
            p++;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return decline();
        while (p < end && is_digit(*p))
            p++;
        is_float = 1;
    }
    j->p = p;
    if (!is_float) {
        if (int_end - digits > JSON_INT_DIGITS)
            return decline();
        int64_t v = 0;
        for (const char *d = digits; d < int_end; d++)
            v = v * 10 + (*d - '0');
        return PyLong_FromLongLong(neg ? -v : v);
    }
    /* json.loads makes floats with float(text), i.e. PyOS_string_to_double, which needs the
     * text NUL-terminated. Overflow gives ±inf there too. */
    char buf[JSON_FLOAT_MAX + 1];
    size_t n = (size_t)(p - s);
    if (n > JSON_FLOAT_MAX)
        return decline();
    memcpy(buf, s, n);
    buf[n] = '\0';
    double d = PyOS_string_to_double(buf, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred())
        return py_failed();
    return PyFloat_FromDouble(d);
}

static PyObject *parse_array(jparser *j, int depth) {
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    j->p++;
    skip_space(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return list;
    }
    for (;;) {
        PyObject *item = parse_value(j, depth);
        if (item == NULL)
            goto fail;
        int rc = PyList_Append(list, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
        skip_space(j);
        if (j->p == j->end)
            goto fail;
        if (*j->p == ']') {
            j->p++;
            return list;
        }
        if (*j->p != ',')
            goto fail;
        j->p++;
        skip_space(j);
    }
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *parse_object(jparser *j, int depth) {
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    j->p++;
    skip_space(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return dict;
    }
    for (;;) {
        if (j->p == j->end || *j->p != '"')
            goto fail;
        PyObject *key = parse_string(j, 1);
        if (key == NULL)
            goto fail;
        skip_space(j);
        if (j->p == j->end || *j->p != ':') {
            Py_DECREF(key);
            goto fail;
        }
        j->p++;
        skip_space(j);
        PyObject *value = parse_value(j, depth);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        /* Later duplicates replace earlier ones, as in json.loads. */
        int rc = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0)
            goto fail;
        skip_space(j);
        if (j->p == j->end)
            goto fail;
        if (*j->p == '}') {
            j->p++;
            return dict;
        }
        if (*j->p != ',')
            goto fail;
        j->p++;
        skip_space(j);
    }
fail:
    Py_DECREF(dict);
    return NULL;
}

static int match_word(jparser *j, const char *w, size_t n) {
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

/* A value at j->p (spaces before it already skipped). */
static PyObject *parse_value(jparser *j, int depth) {
    if (j->p == j->end)
        return decline();
    switch (*j->p) {
    case '{':
        return depth < JSON_MAX_DEPTH ? parse_object(j, depth + 1) : decline();
    case '[':
        return depth < JSON_MAX_DEPTH ? parse_array(j, depth + 1) : decline();
    case '"':
        return parse_string(j, 0);
    case 't':
        return match_word(j, "true", 4) ? Py_NewRef(Py_True) : decline();
    case 'f':
        return match_word(j, "false", 5) ? Py_NewRef(Py_False) : decline();
    case 'n':
        return match_word(j, "null", 4) ? Py_NewRef(Py_None) : decline();
    default:
        return parse_number(j);
    }
}

PyObject *keel__py_json_decode(kpy_state *st, const char *s, size_t n) {
    jparser j = { st, s, s + n };
    skip_space(&j);
    PyObject *o = parse_value(&j, 0);
    if (o == NULL)
        return NULL;
    skip_space(&j);
    if (j.p != j.end) {
        Py_DECREF(o);
        return decline();
    }
    return o;
}
