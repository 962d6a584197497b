/*
 * otel_ai.decode._otlp_json: canonical OTLP/JSON -> OTLP protobuf bytes, in C.
 *
 * The fast path of OTLP/JSON (otel_ai/decode/native.py, NativeJsonReader): a trace
 * request in the canonical shape (what the Collector's file exporter and OTLP/HTTP
 * senders write: lowerCamelCase names, hex ids, 64-bit integers as digit strings or
 * numbers, enums as numbers) is rewritten as the ExportTraceServiceRequest it stands
 * for, which the native protobuf reader (_otlp.c) then reads. One schema-driven pass,
 * no JSON tree.
 *
 * to_protobuf() returns None for anything else: malformed JSON, snake_case or unknown
 * names, duplicate names, nulls, enum names, bytes values, escaped names, lone
 * surrogates, non-canonical numbers, values nested past MAX_VALUE_DEPTH. The Python
 * readers (otlp_json.py) then decide, so answers and error messages stay theirs.
 *
 * Untrusted input: every read is checked against the end of the body, the schema fixes
 * the nesting (AnyValue recursion is capped), and the output grows only with what was
 * read (it is never longer than a small multiple of the input).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define NOT_MINE 1 /* not the canonical shape: the Python readers decide */
#define NOMEM 2

#define MAX_VALUE_DEPTH 8  /* arrays and maps inside attribute values, as otlp_json.py caps them */
#define MAX_NUMBER_CHARS 64

#define WT_VARINT 0
#define WT_FIXED64 1
#define WT_LEN 2
#define WT_FIXED32 5

#define TRY(x)                     \
    do {                           \
        int rc_ = (x);             \
        if (rc_ != OK) return rc_; \
    } while (0)

typedef struct {
    const uint8_t *p;   /* the next unread input byte */
    const uint8_t *end;
    uint8_t *out;
    size_t len;
    size_t cap;
} tc_t;

/* ------------------------------------------------------------------ output */

static int grow(tc_t *t, size_t need) {
    if (t->len + need <= t->cap) return OK;
    size_t cap = t->cap * 2;
    if (cap < t->len + need) cap = t->len + need;
    uint8_t *out = realloc(t->out, cap);
    if (!out) return NOMEM;
    t->out = out;
    t->cap = cap;
    return OK;
}

static inline size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Room for it is the caller's (grow). */
static inline void put_varint(tc_t *t, uint64_t v) {
    while (v >= 0x80) {
        t->out[t->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t->out[t->len++] = (uint8_t)v;
}

static inline int put_tagged_varint(tc_t *t, uint32_t field, uint64_t v) {
    TRY(grow(t, 16));
    put_varint(t, (uint64_t)field << 3 | WT_VARINT);
    put_varint(t, v);
    return OK;
}

static inline int put_fixed(tc_t *t, uint32_t field, int wire_type, uint64_t v, int bytes) {
    TRY(grow(t, 16));
    put_varint(t, (uint64_t)field << 3 | (uint64_t)wire_type);
    for (int i = 0; i < bytes; i++) t->out[t->len++] = (uint8_t)(v >> (8 * i));
    return OK;
}

/* A length-delimited field whose length is known once its content is written: one byte
 * is reserved for the length (enough for most), and longer content is moved along. */
static inline int open_field(tc_t *t, uint32_t field, size_t *mark) {
    TRY(grow(t, 16));
    put_varint(t, (uint64_t)field << 3 | WT_LEN);
    *mark = t->len++;
    return OK;
}

static int close_field(tc_t *t, size_t mark) {
    size_t n = t->len - mark - 1;
    if (n < 0x80) {
        t->out[mark] = (uint8_t)n;
        return OK;
    }
    size_t extra = varint_size(n) - 1;
    TRY(grow(t, extra));
    memmove(t->out + mark + 1 + extra, t->out + mark + 1, n);
    t->len = mark;
    put_varint(t, n);
    t->len += n;
    return OK;
}

/* ------------------------------------------------------------------ JSON tokens */

/* Filled at import: a hex digit's value (-1 for any other byte), and the bytes a plain
 * string's scan stops at (the closing quote, an escape, a control character, non-ASCII). */
static int8_t HEX_VALUE[256];
static uint8_t STRING_STOP[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        HEX_VALUE[c] = (int8_t)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1);
        STRING_STOP[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
    }
}

static inline void skip_space(tc_t *t) {
    while (t->p < t->end && (*t->p == ' ' || *t->p == '\n' || *t->p == '\r' || *t->p == '\t')) t->p++;
}

static inline int take(tc_t *t, uint8_t c) {
    skip_space(t);
    if (t->p >= t->end || *t->p != c) return NOT_MINE;
    t->p++;
    return OK;
}

/* '{' or '[': *more says whether a member or element follows. */
static inline int open_container(tc_t *t, uint8_t open, uint8_t close, int *more) {
    TRY(take(t, open));
    skip_space(t);
    *more = !(t->p < t->end && *t->p == close);
    if (!*more) t->p++;
    return OK;
}

/* After a member or element: ',' (another follows) or the closing bracket. */
static inline int next_item(tc_t *t, uint8_t close, int *more) {
    skip_space(t);
    if (t->p >= t->end) return NOT_MINE;
    if (*t->p == ',') {
        t->p++;
        *more = 1;
        return OK;
    }
    if (*t->p != close) return NOT_MINE;
    t->p++;
    *more = 0;
    return OK;
}

/* A member name and its colon. Canonical names are plain ASCII: an escape or any other
 * byte is not ours (json_format would decode the escape before matching). */
static int member_name(tc_t *t, const uint8_t **name, size_t *n) {
    TRY(take(t, '"'));
    const uint8_t *s = t->p;
    while (t->p < t->end && !STRING_STOP[*t->p]) t->p++;
    if (t->p >= t->end || *t->p != '"') return NOT_MINE;
    *name = s;
    *n = (size_t)(t->p - s);
    t->p++;
    return take(t, ':');
}

#define IS(name, n, literal) ((n) == sizeof(literal) - 1 && memcmp((name), (literal), sizeof(literal) - 1) == 0)

/* Marks a member as seen; a second one (a duplicate name) is not ours. */
static inline int first_time(uint32_t *seen, int bit) {
    if (*seen & (1u << bit)) return NOT_MINE;
    *seen |= 1u << bit;
    return OK;
}

/* One UTF-8 sequence starting at s (strict: no overlongs, surrogates or past U+10FFFF,
 * as Python's decoder and upb check it); its length, or 0 if invalid. */
static size_t utf8_sequence(const uint8_t *s, const uint8_t *end) {
    uint8_t c = s[0];
    size_t left = (size_t)(end - s);
    if (c >= 0xC2 && c <= 0xDF) return left >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F)) return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F)) return 0;
        return 4;
    }
    return 0;
}

static inline void put_utf8(tc_t *t, uint32_t cp) {
    uint8_t *o = t->out + t->len;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        t->len += 1;
    } else if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        t->len += 2;
    } else if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        t->len += 3;
    } else {
        o[0] = (uint8_t)(0xF0 | cp >> 18);
        o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[3] = (uint8_t)(0x80 | (cp & 0x3F));
        t->len += 4;
    }
}

static int read_u16_escape(const uint8_t *s, const uint8_t *end, uint32_t *cp) {
    if (end - s < 4) return NOT_MINE;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = HEX_VALUE[s[i]];
        if (d < 0) return NOT_MINE;
        v = v << 4 | (uint32_t)d;
    }
    *cp = v;
    return OK;
}

/* The decoded text of a string with escapes or non-ASCII, from t->p (after the opening
 * quote) to end (its closing quote), appended to the output. Decoded text is never
 * longer than its JSON spelling, so room for that is made once. */
static int put_escaped_text(tc_t *t, const uint8_t *end) {
    TRY(grow(t, (size_t)(end - t->p)));
    const uint8_t *p = t->p;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x20) return NOT_MINE;
        if (c >= 0x80) {
            size_t n = utf8_sequence(p, end);
            if (!n) return NOT_MINE;
            memcpy(t->out + t->len, p, n);
            t->len += n;
            p += n;
            continue;
        }
        if (c != '\\') {
            t->out[t->len++] = c;
            p++;
            continue;
        }
        if (end - p < 2) return NOT_MINE;
        uint8_t e = p[1];
        p += 2;
        uint8_t plain = 0;
        switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
            uint32_t cp, low;
            TRY(read_u16_escape(p, end, &cp));
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return NOT_MINE; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return NOT_MINE;
                TRY(read_u16_escape(p + 2, end, &low));
                if (low < 0xDC00 || low > 0xDFFF) return NOT_MINE;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            put_utf8(t, cp);
            continue;
        }
        default: return NOT_MINE;
        }
        t->out[t->len++] = plain;
    }
    return OK;
}

/* A JSON string as a string field. Empty strings are left out, as proto3 serializes
 * them, unless the field is a oneof member (keep_empty). */
static int put_string(tc_t *t, uint32_t field, int keep_empty) {
    TRY(take(t, '"'));
    const uint8_t *s = t->p;
    while (t->p < t->end && !STRING_STOP[*t->p]) t->p++;
    int plain = t->p < t->end && *t->p == '"';
    while (t->p < t->end && *t->p != '"') { /* escapes or non-ASCII: find the end, decode below */
        if (*t->p == '\\') {
            if (t->end - t->p < 2) return NOT_MINE;
            t->p++;
        }
        t->p++;
    }
    if (t->p >= t->end) return NOT_MINE;
    const uint8_t *close = t->p;
    size_t n = (size_t)(close - s);
    if (plain) {
        if (n || keep_empty) {
            TRY(grow(t, 16 + n));
            put_varint(t, (uint64_t)field << 3 | WT_LEN);
            put_varint(t, n);
            memcpy(t->out + t->len, s, n);
            t->len += n;
        }
    } else {
        size_t mark;
        TRY(open_field(t, field, &mark));
        t->p = s;
        TRY(put_escaped_text(t, close));
        TRY(close_field(t, mark));
    }
    t->p = close + 1;
    return OK;
}

/* A trace or span id: an even number of hex digits (either case), as bytes. */
static int put_hex_id(tc_t *t, uint32_t field) {
    TRY(take(t, '"'));
    const uint8_t *s = t->p;
    const uint8_t *close = memchr(s, '"', (size_t)(t->end - s));
    if (!close) return NOT_MINE;
    size_t digits = (size_t)(close - s);
    t->p = close + 1;
    if (digits % 2) return NOT_MINE;
    if (!digits) return OK;
    TRY(grow(t, 16 + digits / 2));
    put_varint(t, (uint64_t)field << 3 | WT_LEN);
    put_varint(t, digits / 2);
    for (size_t i = 0; i < digits; i += 2) { /* a backslash or any other non-digit stops it */
        int high = HEX_VALUE[s[i]], low = HEX_VALUE[s[i + 1]];
        if ((high | low) < 0) return NOT_MINE;
        t->out[t->len++] = (uint8_t)(high << 4 | low);
    }
    return OK;
}

/* Digits [s, e) as a magnitude; NOT_MINE past 2**64 - 1. */
static int magnitude(const uint8_t *s, const uint8_t *e, uint64_t *out) {
    uint64_t v = 0;
    for (; s < e; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return NOT_MINE;
        v = v * 10 + d;
    }
    *out = v;
    return OK;
}

/* An integer: a JSON number without fraction or exponent, or (strings) a digit string
 * as 64-bit integers are written: "-"? then 1 to 20 characters in all. */
static int read_integer(tc_t *t, int strings, int *negative, uint64_t *value) {
    skip_space(t);
    if (t->p >= t->end) return NOT_MINE;
    if (*t->p == '"') {
        if (!strings) return NOT_MINE;
        const uint8_t *s = ++t->p;
        *negative = t->p < t->end && *t->p == '-';
        if (*negative) t->p++;
        const uint8_t *digits = t->p;
        while (t->p < t->end && *t->p >= '0' && *t->p <= '9') t->p++;
        if (t->p >= t->end || *t->p != '"' || t->p == digits || t->p - s > 20) return NOT_MINE;
        TRY(magnitude(digits, t->p, value));
        t->p++;
        return OK;
    }
    *negative = *t->p == '-';
    if (*negative) t->p++;
    const uint8_t *digits = t->p;
    while (t->p < t->end && *t->p >= '0' && *t->p <= '9') t->p++;
    size_t n = (size_t)(t->p - digits);
    if (!n || (n > 1 && *digits == '0')) return NOT_MINE; /* JSON has no leading zeros */
    if (t->p < t->end && (*t->p == '.' || *t->p == 'e' || *t->p == 'E')) return NOT_MINE; /* a float */
    return magnitude(digits, t->p, value);
}

static int read_unsigned(tc_t *t, int strings, uint64_t max, uint64_t *value) {
    int negative;
    TRY(read_integer(t, strings, &negative, value));
    if (negative && *value) return NOT_MINE;
    return *value <= max ? OK : NOT_MINE;
}

/* A signed integer of the given bits, as the two's complement 64-bit value varints carry. */
static int read_signed(tc_t *t, int strings, int bits, uint64_t *value) {
    int negative;
    uint64_t m;
    TRY(read_integer(t, strings, &negative, &m));
    uint64_t limit = (uint64_t)1 << (bits - 1);
    if (negative ? m > limit : m >= limit) return NOT_MINE;
    *value = negative ? (uint64_t)0 - m : m;
    return OK;
}

static int put_uint32(tc_t *t, uint32_t field) {
    uint64_t v;
    TRY(read_unsigned(t, 0, UINT32_MAX, &v));
    return v ? put_tagged_varint(t, field, v) : OK;
}

static int put_fixed32(tc_t *t, uint32_t field) {
    uint64_t v;
    TRY(read_unsigned(t, 0, UINT32_MAX, &v));
    return v ? put_fixed(t, field, WT_FIXED32, v, 4) : OK;
}

static int put_fixed64(tc_t *t, uint32_t field) {
    uint64_t v;
    TRY(read_unsigned(t, 1, UINT64_MAX, &v));
    return v ? put_fixed(t, field, WT_FIXED64, v, 8) : OK;
}

/* An enum (span kind, status code) by number: names are json_format's to look up. */
static int put_enum(tc_t *t, uint32_t field) {
    uint64_t v;
    TRY(read_signed(t, 0, 32, &v));
    return v ? put_tagged_varint(t, field, v) : OK;
}

/* A JSON number as Python reads it: an integer token is an int (exact below 2**53, so
 * only those are taken), anything else float(token), which PyOS_string_to_double is. */
static int read_double(tc_t *t, double *out) {
    skip_space(t);
    const uint8_t *s = t->p;
    if (t->p < t->end && *t->p == '-') t->p++;
    const uint8_t *digits = t->p;
    while (t->p < t->end && *t->p >= '0' && *t->p <= '9') t->p++;
    size_t n = (size_t)(t->p - digits);
    if (!n || (n > 1 && *digits == '0')) return NOT_MINE;
    int integral = 1;
    if (t->p < t->end && *t->p == '.') {
        integral = 0;
        const uint8_t *fraction = ++t->p;
        while (t->p < t->end && *t->p >= '0' && *t->p <= '9') t->p++;
        if (t->p == fraction) return NOT_MINE;
    }
    if (t->p < t->end && (*t->p == 'e' || *t->p == 'E')) {
        integral = 0;
        t->p++;
        if (t->p < t->end && (*t->p == '+' || *t->p == '-')) t->p++;
        const uint8_t *exponent = t->p;
        while (t->p < t->end && *t->p >= '0' && *t->p <= '9') t->p++;
        if (t->p == exponent) return NOT_MINE;
    }
    if (integral) {
        uint64_t m;
        if (n > 15) return NOT_MINE;
        TRY(magnitude(digits, t->p, &m));
        *out = *s == '-' ? -(double)(int64_t)m : (double)m;
        if (*out == 0) *out = 0.0; /* Python's int -0 is 0 */
        return OK;
    }
    size_t len = (size_t)(t->p - s);
    if (len >= MAX_NUMBER_CHARS) return NOT_MINE;
    char text[MAX_NUMBER_CHARS];
    memcpy(text, s, len);
    text[len] = 0;
    char *stop;
    double d = PyOS_string_to_double(text, &stop, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NOT_MINE;
    }
    if (stop != text + len || !isfinite(d)) return NOT_MINE;
    *out = d;
    return OK;
}

static int read_literal(tc_t *t, const char *word, size_t n) {
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, word, n) != 0) return NOT_MINE;
    t->p += n;
    return OK;
}

/* ------------------------------------------------------------------ messages */

/* A member whose value is a message, encoded by parse into a length-delimited field. */
#define PUT_MESSAGE(t, field, parse_call)          \
    do {                                           \
        size_t mark_;                              \
        TRY(open_field((t), (field), &mark_));     \
        TRY(parse_call);                           \
        TRY(close_field((t), mark_));              \
    } while (0)

/* A member whose value is an array of messages: one field per element. */
#define PUT_REPEATED(t, field, parse_call)             \
    do {                                               \
        int more_;                                     \
        TRY(open_container((t), '[', ']', &more_));    \
        while (more_) {                                \
            PUT_MESSAGE((t), (field), parse_call);     \
            TRY(next_item((t), ']', &more_));          \
        }                                              \
    } while (0)

static int msg_key_value(tc_t *t, int depth);

static int msg_any_value(tc_t *t, int depth);

/* ArrayValue or KeyValueList: {"values": [...]} */
static int msg_value_list(tc_t *t, int depth, int pairs) {
    int more;
    uint32_t seen = 0;
    TRY(open_container(t, '{', '}', &more));
    while (more) {
        const uint8_t *name;
        size_t n;
        TRY(member_name(t, &name, &n));
        if (!IS(name, n, "values")) return NOT_MINE;
        TRY(first_time(&seen, 0));
        if (pairs) PUT_REPEATED(t, 1, msg_key_value(t, depth));
        else PUT_REPEATED(t, 1, msg_any_value(t, depth));
        TRY(next_item(t, '}', &more));
    }
    return OK;
}

/* AnyValue: {} or exactly one of its members; a oneof member is written even when
 * empty or zero, as protobuf does. */
static int msg_any_value(tc_t *t, int depth) {
    int more;
    TRY(open_container(t, '{', '}', &more));
    if (!more) return OK;
    const uint8_t *name;
    size_t n;
    TRY(member_name(t, &name, &n));
    if (IS(name, n, "stringValue")) {
        TRY(put_string(t, 1, 1));
    } else if (IS(name, n, "intValue")) {
        uint64_t v;
        TRY(read_signed(t, 1, 64, &v));
        TRY(put_tagged_varint(t, 3, v));
    } else if (IS(name, n, "boolValue")) {
        skip_space(t);
        int truth = t->p < t->end && *t->p == 't';
        TRY(read_literal(t, truth ? "true" : "false", truth ? 4 : 5));
        TRY(put_tagged_varint(t, 2, (uint64_t)truth));
    } else if (IS(name, n, "doubleValue")) {
        double d;
        uint64_t bits;
        TRY(read_double(t, &d));
        memcpy(&bits, &d, 8);
        TRY(put_fixed(t, 4, WT_FIXED64, bits, 8));
    } else if (IS(name, n, "arrayValue") && depth < MAX_VALUE_DEPTH) {
        PUT_MESSAGE(t, 5, msg_value_list(t, depth + 1, 0));
    } else if (IS(name, n, "kvlistValue") && depth < MAX_VALUE_DEPTH) {
        PUT_MESSAGE(t, 6, msg_value_list(t, depth + 1, 1));
    } else {
        return NOT_MINE; /* bytesValue (base64), the *Strindex fields, unknown names, too deep */
    }
    TRY(next_item(t, '}', &more));
    return more ? NOT_MINE : OK; /* two members of a oneof */
}

static int msg_key_value(tc_t *t, int depth) {
    int more;
    uint32_t seen = 0;
    TRY(open_container(t, '{', '}', &more));
    while (more) {
        const uint8_t *name;
        size_t n;
        TRY(member_name(t, &name, &n));
        if (IS(name, n, "key")) {
            TRY(first_time(&seen, 0));
            TRY(put_string(t, 1, 0));
        } else if (IS(name, n, "value")) {
            TRY(first_time(&seen, 1));
            PUT_MESSAGE(t, 2, msg_any_value(t, depth));
        } else {
            return NOT_MINE;
        }
        TRY(next_item(t, '}', &more));
    }
    return OK;
}

/* The other messages are plain records: a table per message says, for each canonical
 * member name, its field number and how its value is written. */
enum { M_STRING, M_HEX_ID, M_UINT32, M_FIXED32, M_FIXED64, M_ENUM, M_ATTRIBUTES, M_MESSAGE, M_REPEATED };

typedef struct schema schema_t;

typedef struct {
    const char *name;
    uint8_t name_len;
    uint8_t how;
    uint8_t number;
    const schema_t *message; /* M_MESSAGE and M_REPEATED */
} member_t;

#define MEMBER(name, how, number, message) {name, sizeof(name) - 1, how, number, message}
#define MAX_MEMBERS 16

struct schema {
    int count;
    member_t members[MAX_MEMBERS];
};

static const schema_t RESOURCE = {2, {
    MEMBER("attributes", M_ATTRIBUTES, 1, NULL),
    MEMBER("droppedAttributesCount", M_UINT32, 2, NULL),
}};
static const schema_t SCOPE = {4, {
    MEMBER("name", M_STRING, 1, NULL),
    MEMBER("version", M_STRING, 2, NULL),
    MEMBER("attributes", M_ATTRIBUTES, 3, NULL),
    MEMBER("droppedAttributesCount", M_UINT32, 4, NULL),
}};
static const schema_t STATUS = {2, {
    MEMBER("message", M_STRING, 2, NULL),
    MEMBER("code", M_ENUM, 3, NULL),
}};
static const schema_t EVENT = {4, {
    MEMBER("timeUnixNano", M_FIXED64, 1, NULL),
    MEMBER("name", M_STRING, 2, NULL),
    MEMBER("attributes", M_ATTRIBUTES, 3, NULL),
    MEMBER("droppedAttributesCount", M_UINT32, 4, NULL),
}};
static const schema_t LINK = {6, {
    MEMBER("traceId", M_HEX_ID, 1, NULL),
    MEMBER("spanId", M_HEX_ID, 2, NULL),
    MEMBER("traceState", M_STRING, 3, NULL),
    MEMBER("attributes", M_ATTRIBUTES, 4, NULL),
    MEMBER("droppedAttributesCount", M_UINT32, 5, NULL),
    MEMBER("flags", M_FIXED32, 6, NULL),
}};
static const schema_t SPAN = {16, { /* in the order senders write them (see msg_record) */
    MEMBER("traceId", M_HEX_ID, 1, NULL),
    MEMBER("spanId", M_HEX_ID, 2, NULL),
    MEMBER("parentSpanId", M_HEX_ID, 4, NULL),
    MEMBER("name", M_STRING, 5, NULL),
    MEMBER("kind", M_ENUM, 6, NULL),
    MEMBER("startTimeUnixNano", M_FIXED64, 7, NULL),
    MEMBER("endTimeUnixNano", M_FIXED64, 8, NULL),
    MEMBER("attributes", M_ATTRIBUTES, 9, NULL),
    MEMBER("status", M_MESSAGE, 15, &STATUS),
    MEMBER("events", M_REPEATED, 11, &EVENT),
    MEMBER("traceState", M_STRING, 3, NULL),
    MEMBER("flags", M_FIXED32, 16, NULL),
    MEMBER("links", M_REPEATED, 13, &LINK),
    MEMBER("droppedAttributesCount", M_UINT32, 10, NULL),
    MEMBER("droppedEventsCount", M_UINT32, 12, NULL),
    MEMBER("droppedLinksCount", M_UINT32, 14, NULL),
}};
static const schema_t SCOPE_SPANS = {3, {
    MEMBER("scope", M_MESSAGE, 1, &SCOPE),
    MEMBER("spans", M_REPEATED, 2, &SPAN),
    MEMBER("schemaUrl", M_STRING, 3, NULL),
}};
static const schema_t RESOURCE_SPANS = {3, {
    MEMBER("resource", M_MESSAGE, 1, &RESOURCE),
    MEMBER("scopeSpans", M_REPEATED, 2, &SCOPE_SPANS),
    MEMBER("schemaUrl", M_STRING, 3, NULL),
}};
static const schema_t REQUEST = {1, {
    MEMBER("resourceSpans", M_REPEATED, 1, &RESOURCE_SPANS),
}};

static int msg_record(tc_t *t, const schema_t *schema);

static int put_member(tc_t *t, const member_t *m) {
    switch (m->how) {
    case M_STRING: return put_string(t, m->number, 0);
    case M_HEX_ID: return put_hex_id(t, m->number);
    case M_UINT32: return put_uint32(t, m->number);
    case M_FIXED32: return put_fixed32(t, m->number);
    case M_FIXED64: return put_fixed64(t, m->number);
    case M_ENUM: return put_enum(t, m->number);
    case M_ATTRIBUTES: PUT_REPEATED(t, m->number, msg_key_value(t, 0)); return OK;
    case M_MESSAGE: PUT_MESSAGE(t, m->number, msg_record(t, m->message)); return OK;
    default: PUT_REPEATED(t, m->number, msg_record(t, m->message)); return OK;
    }
}

/* The schema's nesting is fixed (request > resource spans > scope spans > span > event),
 * so this recursion is bounded. */
static int msg_record(tc_t *t, const schema_t *schema) {
    int more, k = -1;
    uint32_t seen = 0;
    TRY(open_container(t, '{', '}', &more));
    while (more) {
        const uint8_t *name;
        size_t n;
        TRY(member_name(t, &name, &n));
        /* Members come in the table's order, mostly: the search starts after the last one. */
        int tries = 0;
        for (k = k + 1 < schema->count ? k + 1 : 0; tries < schema->count; k = k + 1 < schema->count ? k + 1 : 0) {
            const member_t *m = &schema->members[k];
            if (m->name_len == n && memcmp(m->name, name, n) == 0) break;
            tries++;
        }
        if (tries == schema->count) return NOT_MINE; /* snake_case, deprecated or unknown */
        TRY(first_time(&seen, k));
        TRY(put_member(t, &schema->members[k]));
        TRY(next_item(t, '}', &more));
    }
    return OK;
}

static int msg_request(tc_t *t) {
    TRY(msg_record(t, &REQUEST));
    skip_space(t);
    return t->p == t->end ? OK : NOT_MINE;
}

/* ------------------------------------------------------------------ module */

static PyObject *to_protobuf(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer body;
    if (PyObject_GetBuffer(arg, &body, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *input = body.buf;
#ifdef OTEL_AI_EXACT_INPUT
    /* scripts/decode_asan.sh: bytes objects end in a NUL that would hide a read one past
     * the end from AddressSanitizer, so the body is read from a copy of its exact size. */
    uint8_t *copy = malloc(body.len ? (size_t)body.len : 1);
    if (!copy) {
        PyBuffer_Release(&body);
        return PyErr_NoMemory();
    }
    memcpy(copy, body.buf, (size_t)body.len);
    input = copy;
#endif
    /* Protobuf is shorter than its canonical JSON: one allocation nearly always. */
    tc_t t = {.p = input, .end = input + body.len, .len = 0, .cap = (size_t)body.len + 64};
    t.out = malloc(t.cap);
    int rc = t.out ? msg_request(&t) : NOMEM;
#ifdef OTEL_AI_EXACT_INPUT
    free(copy);
#endif
    PyObject *out = NULL;
    if (rc == OK) {
        out = PyBytes_FromStringAndSize((const char *)t.out, (Py_ssize_t)t.len);
    } else if (rc == NOT_MINE) {
        out = Py_NewRef(Py_None);
    } else {
        PyErr_NoMemory();
    }
    free(t.out);
    PyBuffer_Release(&body);
    return out;
}

static PyMethodDef module_methods[] = {
    {"to_protobuf", to_protobuf, METH_O,
     "to_protobuf(body) -> the ExportTraceServiceRequest protobuf of a canonical OTLP/JSON body, or None if the "
     "body is not in the canonical shape"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_otlp_json", "Canonical OTLP/JSON -> OTLP protobuf, in C.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_json(void) {
    init_tables();
    return PyModule_Create(&module_def);
}
