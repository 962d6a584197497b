/*
 * otel_ai.decode._otlp: OTLP ExportTraceServiceRequest protobuf -> span rows, in C.
 *
 * The native reader of otel_ai/decode/native.py. It reads only the fields otel-ai uses
 * (the view in proto/otel_ai/v1/otlp_view.proto) and skips the rest by wire type.
 *
 * Pass 1 (GIL released) walks the whole body once, validating it as upb would (wire
 * format, UTF-8 of every string field of the view) and recording one row per SERVER or
 * CLIENT span with the strings that name its subject. Pass 2 (GIL held) resolves
 * resources and subjects through caches keyed by raw bytes; a miss calls back into
 * Python (otel_ai.decode.naming), so the naming rules exist once. Rows come back as one
 * bytes object of fixed-size records that numpy views as columns.
 *
 * Anything unusual (a malformed body, groups, a non-canonical tag) makes read() return
 * None: the Python reference reader then decides, so both give the same answer and the
 * same error message. Untrusted input: every length is checked before a read, nothing is
 * allocated from a claimed length, nesting is fixed by the schema (no recursion), and
 * every cache is bounded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define BAIL 1   /* unusual or malformed: the reference reader decides */
#define NOMEM 2

#define KIND_UNSPECIFIED 0
#define KIND_INTERNAL 1
#define KIND_SERVER 2
#define KIND_CLIENT 3

#define MAX_VALUE_CHARS 128
#define MAX_MESSAGE_CHARS 200
#define MAX_EXCEPTIONS 4
#define RESOURCE_CACHE_MAX 10000
#define CACHE_KEY_MAX 1024       /* longer keys are resolved in Python every time */
#define TABLE_SLOTS (1u << 16)    /* half of them used at most, then the table starts over */
#define TABLE_ARENA_MAX (4u << 20)
#define TABLE_MAX_PROBES 32

/* ------------------------------------------------------------------ wire reading */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} rd_t;

/* Up to 10 bytes, bits past 64 dropped: what upb accepts. */
static inline int rd_varint(rd_t *r, uint64_t *out) {
    if (r->p < r->end && *r->p < 0x80) { /* most tags, lengths and values: one byte */
        *out = *r->p++;
        return OK;
    }
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return BAIL;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return OK;
        }
    }
    return BAIL;
}

static inline int rd_tag(rd_t *r, uint32_t *field, int *wire_type) {
    const uint8_t *start = r->p;
    uint64_t tag;
    if (rd_varint(r, &tag) != OK) return BAIL;
    if (r->p - start > 5 || tag > UINT32_MAX || (tag >> 3) == 0) return BAIL;
    *field = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    return OK;
}

static inline int rd_bytes(rd_t *r, const uint8_t **s, size_t *n) {
    uint64_t len;
    if (rd_varint(r, &len) != OK) return BAIL;
    if (len > (uint64_t)(r->end - r->p) || len > INT32_MAX) return BAIL;
    *s = r->p;
    *n = (size_t)len;
    r->p += len;
    return OK;
}

static inline int rd_fixed64(rd_t *r, uint64_t *out) {
    if (r->end - r->p < 8) return BAIL;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | r->p[i];
    r->p += 8;
    *out = v;
    return OK;
}

/* Skip one field by wire type. Groups (3) go to the reference reader; 4, 6 and 7 are
 * malformed anyway. */
static int rd_skip(rd_t *r, int wire_type) {
    uint64_t v;
    const uint8_t *s;
    size_t n;
    switch (wire_type) {
    case 0: return rd_varint(r, &v);
    case 1:
        if (r->end - r->p < 8) return BAIL;
        r->p += 8;
        return OK;
    case 2: return rd_bytes(r, &s, &n);
    case 5:
        if (r->end - r->p < 4) return BAIL;
        r->p += 4;
        return OK;
    default: return BAIL;
    }
}

/* Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF), as upb checks it. */
static int utf8_valid(const uint8_t *s, size_t n) {
    /* ASCII, as nearly every attribute is: a word at a time (short strings dominate) */
    uint64_t high = 0;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t w;
        memcpy(&w, s + k, 8);
        high |= w;
    }
    for (; k < n; k++) high |= s[k];
    if (!(high & 0x8080808080808080ULL)) return 1;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0;
            if (c == 0xED && c1 > 0x9F) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0;
            if (c == 0xF4 && c1 > 0x8F) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static inline int rd_string(rd_t *r, const uint8_t **s, size_t *n) {
    if (rd_bytes(r, s, n) != OK) return BAIL;
    return utf8_valid(*s, *n) ? OK : BAIL;
}

/* Bytes of the first max_chars code points of valid UTF-8 (Python's text[:max_chars]). */
static size_t utf8_prefix(const uint8_t *s, size_t n, size_t max_chars) {
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            if (chars == max_chars) return i;
            chars++;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ AnyValue and maps */

enum { V_NONE = 0, V_STRING = 1, V_BOOL = 2, V_INT = 3, V_DOUBLE = 4 };

typedef struct {
    int kind;
    const uint8_t *s;
    size_t n;
    int64_t i;
    double d;
} anyv_t;

/* Merges into v, as protobuf merges a repeated occurrence: the last oneof field wins. */
static int parse_anyvalue(const uint8_t *s, size_t n, anyv_t *v) {
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (f == 1 && wt == 2) {
            if (rd_string(&r, &v->s, &v->n) != OK) return BAIL;
            v->kind = V_STRING;
        } else if ((f == 2 || f == 3) && wt == 0) {
            uint64_t x;
            if (rd_varint(&r, &x) != OK) return BAIL;
            v->kind = f == 2 ? V_BOOL : V_INT;
            v->i = f == 2 ? (x != 0) : (int64_t)x;
        } else if (f == 4 && wt == 1) {
            uint64_t x;
            if (rd_fixed64(&r, &x) != OK) return BAIL;
            v->kind = V_DOUBLE;
            memcpy(&v->d, &x, sizeof(v->d));
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    return OK;
}

/* One map<string, AnyValue> entry (wire-identical to KeyValue). A missing key is "". An
 * entry with any other field (even a key or value of the wrong wire type) is validated
 * but left out of the map, as upb keeps it aside as unknown: *dropped says so. */
static int parse_entry(const uint8_t *s, size_t n, const uint8_t **key, size_t *key_len, anyv_t *v, int *dropped) {
    rd_t r = {s, s + n};
    *key = s;
    *key_len = 0;
    *dropped = 0;
    memset(v, 0, sizeof(*v));
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (f == 1 && wt == 2) {
            if (rd_string(&r, key, key_len) != OK) return BAIL;
        } else if (f == 2 && wt == 2) {
            const uint8_t *q;
            size_t m;
            if (rd_bytes(&r, &q, &m) != OK || parse_anyvalue(q, m, v) != OK) return BAIL;
        } else {
            if (rd_skip(&r, wt) != OK) return BAIL;
            *dropped = 1;
        }
    }
    return OK;
}

static int validate_map_field(rd_t *r) {
    const uint8_t *q, *key;
    size_t m, key_len;
    anyv_t v;
    int dropped;
    if (rd_bytes(r, &q, &m) != OK) return BAIL;
    return parse_entry(q, m, &key, &key_len, &v, &dropped);
}

/* A message whose only checked fields are one string and one map (Resource, scope, Event);
 * 0 for neither. */
static int validate_message(const uint8_t *s, size_t n, uint32_t string_field, uint32_t map_field) {
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (f == string_field && wt == 2) {
            if (rd_string(&r, &q, &m) != OK) return BAIL;
        } else if (f == map_field && wt == 2) {
            if (validate_map_field(&r) != OK) return BAIL;
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    return OK;
}

/* ------------------------------------------------------------------ attributes that name a subject */

enum {
    A_HTTP_RESPONSE_STATUS, A_HTTP_STATUS_CODE, A_RPC_SERVICE, A_RPC_GRPC_STATUS, A_HTTP_REQUEST_METHOD,
    A_HTTP_METHOD, A_HTTP_ROUTE, A_RPC_METHOD, A_RPC_SYSTEM, A_PEER_SERVICE, A_SERVER_ADDRESS,
    A_NET_PEER_NAME, A_DB_SYSTEM_NAME, A_DB_SYSTEM, A_DB_NAMESPACE, A_DB_NAME, A_RESEND_COUNT,
    A_SAMPLING_PRIORITY, A_SAMPLE_RATE, A_TAIL_SAMPLING_POLICY, A_COUNT
};

static const struct {
    const char *name;
    size_t len;
} ATTR_NAMES[A_COUNT] = {
    {"http.response.status_code", 25}, {"http.status_code", 16}, {"rpc.service", 11},
    {"rpc.grpc.status_code", 20}, {"http.request.method", 19}, {"http.method", 11}, {"http.route", 10},
    {"rpc.method", 10}, {"rpc.system", 10}, {"peer.service", 12}, {"server.address", 14},
    {"net.peer.name", 13}, {"db.system.name", 14}, {"db.system", 9}, {"db.namespace", 12}, {"db.name", 7},
    {"http.request.resend_count", 25}, {"sampling.priority", 17}, {"SampleRate", 10},
    {"tailsampling.policy", 19},
};

/* The names of each length (at most 4 share one), so that an attribute's key is compared
 * with those few rather than all twenty: the scan over all of them was a third of the
 * reader's time. Filled once, at module init. */
enum { MIN_ATTR_LEN = 7, MAX_ATTR_LEN = 25, PER_LEN = 4 };
static int8_t ATTRS_BY_LEN[MAX_ATTR_LEN + 1][PER_LEN];

static int index_attr_names(void) {
    memset(ATTRS_BY_LEN, -1, sizeof(ATTRS_BY_LEN));
    for (int a = 0; a < A_COUNT; a++) {
        int8_t *slots = ATTRS_BY_LEN[ATTR_NAMES[a].len];
        int k = 0;
        while (k < PER_LEN && slots[k] >= 0) k++;
        if (k == PER_LEN) return -1; /* a fifth name of one length: PER_LEN must grow */
        slots[k] = (int8_t)a;
    }
    return 0;
}

static inline int attr_index(const uint8_t *key, size_t n) {
    if (n < MIN_ATTR_LEN || n > MAX_ATTR_LEN) return -1;
    const int8_t *slots = ATTRS_BY_LEN[n];
    for (int k = 0; k < PER_LEN && slots[k] >= 0; k++) {
        const char *name = ATTR_NAMES[slots[k]].name;
        if (name[0] == key[0] && name[n - 1] == key[n - 1] && memcmp(name, key, n) == 0) return slots[k];
    }
    return -1;
}

/* Python: value.int_value if nonzero, else a string of 1-5 ASCII digits, else 0. */
static int64_t int_of(const anyv_t *v) {
    if (v->kind == V_INT && v->i != 0) return v->i;
    if (v->kind != V_STRING || v->n == 0 || v->n >= 6) return 0;
    int64_t x = 0;
    for (size_t k = 0; k < v->n; k++) {
        if (v->s[k] < '0' || v->s[k] > '9') return 0;
        x = x * 10 + (v->s[k] - '0');
    }
    return x;
}

/* Saturated to int32: later stages only compare these with small constants. */
static inline int32_t clamp32(int64_t x) {
    return x > INT32_MAX ? INT32_MAX : (x < INT32_MIN ? INT32_MIN : (int32_t)x);
}

/* ------------------------------------------------------------------ sampling weight */

/* 2^56 / (2^56 - t) rounded once to the nearest double (ties to even), as Python's int / int
 * does it: otel_ai/sampling.py, threshold_adjusted_count. */
static double adjusted_count(uint64_t t) {
    const uint64_t one = (uint64_t)1 << 56;
    uint64_t d = one - t;                                   /* 1 .. 2^56 */
    __uint128_t num = (__uint128_t)one << 64;               /* 2^120 */
    __uint128_t q = num / d, r = num % d;                   /* q in [2^64, 2^120] */
    int bits = 0;
    for (__uint128_t x = q; x; x >>= 1) bits++;
    int drop = bits - 53;                                   /* >= 12 */
    uint64_t mantissa = (uint64_t)(q >> drop);
    __uint128_t rest = q & ((((__uint128_t)1) << drop) - 1), half = ((__uint128_t)1) << (drop - 1);
    if (rest > half || (rest == half && (r != 0 || (mantissa & 1)))) mantissa++;
    return ldexp((double)mantissa, drop - 64);
}

/* The adjusted count of a valid `th` value, or 0 for none (the caller uses 1). */
static double threshold_count(const uint8_t *d, size_t n) {
    if (n < 1 || n > 14) return 0;
    uint64_t t = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t c = d[k];
        int digit;
        if (c >= '0' && c <= '9') digit = c - '0';
        else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
        else return 0;
        t = (t << 4) | (uint64_t)digit;
    }
    return adjusted_count(t << (4 * (14 - n)));
}

/* Python's str.isspace() for ASCII. */
static inline int is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

/* otel_ai/sampling.py, tracestate_adjusted_count: the `th` of the first `ot` member, 0 when
 * there is none or it is invalid. -1 for a non-ASCII tracestate (never valid W3C, and
 * Unicode whitespace would need Python's tables): the reference reader decides. */
static double tracestate_weight(const uint8_t *s, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (s[k] >= 0x80) return -1;
    }
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != ',') j++;
        size_t a = i, b = j;
        while (a < b && is_space(s[a])) a++;
        while (b > a && is_space(s[b - 1])) b--;
        size_t eq = a;
        while (eq < b && s[eq] != '=') eq++;
        if (eq - a == 2 && s[a] == 'o' && s[a + 1] == 't') {
            size_t k = eq < b ? eq + 1 : b;
            while (k <= b) {
                size_t e = k;
                while (e < b && s[e] != ';') e++;
                size_t c = k;
                while (c < e && s[c] != ':') c++;
                if (c - k == 2 && s[k] == 't' && s[k + 1] == 'h') return c < e ? threshold_count(s + c + 1, e - c - 1) : 0;
                k = e + 1;
            }
            return 0;
        }
        i = j + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ rows */

typedef struct {
    uint32_t off, len;
} ref_t;

/* One counted span as pass 1 found it. */
typedef struct {
    int64_t start, end;
    uint64_t trace_key, span_id, parent_span_id;
    int32_t status, http_status, grpc_status, resend;
    int32_t sid, block;
    uint32_t span_off, span_len;
    float weight;
    uint8_t kind, sample_byte, rule, sampling_attribute;
    ref_t str[3]; /* the strings the naming rule reads */
} row_t;

typedef struct {
    uint32_t rs_off, rs_len; /* the ResourceSpans message */
    uint32_t resource_fields;
    ref_t resource;          /* the resource field, when there is exactly one */
    size_t first_row, rows;
    uint64_t spans;
} block_t;

/* An INTERNAL span (or UNSPECIFIED, which receivers may take for INTERNAL): not a row, but
 * the rows under it are re-parented through it (otel_ai/decode/columns.py). */
typedef struct {
    uint64_t trace_key, span_id, parent_span_id;
    size_t block;
} internal_t;

typedef struct {
    const uint8_t *base;
    row_t *rows;
    size_t nrows, cap_rows;
    block_t *blocks;
    size_t nblocks, cap_blocks;
    internal_t *internal;
    size_t ninternal, cap_internal;
} pass1_t;

static const uint64_t MIX = 0x9E3779B97F4A7C15ULL;

static inline uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static inline ref_t ref_of(const pass1_t *st, const uint8_t *s, size_t n) {
    ref_t r = {(uint32_t)(s - st->base), (uint32_t)n};
    return r;
}

static inline ref_t string_ref(const pass1_t *st, const anyv_t *v, int present) {
    ref_t r = {0, 0};
    if (present && v->kind == V_STRING) r = ref_of(st, v->s, v->n);
    return r;
}

static int push_row(pass1_t *st, row_t **out) {
    if (st->nrows == st->cap_rows) {
        size_t cap = st->cap_rows ? st->cap_rows * 2 : 256;
        row_t *grown = realloc(st->rows, cap * sizeof(row_t));
        if (!grown) return NOMEM;
        st->rows = grown;
        st->cap_rows = cap;
    }
    *out = &st->rows[st->nrows++];
    memset(*out, 0, sizeof(row_t));
    return OK;
}

static int push_internal(pass1_t *st, const uint8_t *trace_id, size_t trace_id_len, const uint8_t *span_id,
                         size_t span_id_len, const uint8_t *parent, size_t parent_len, size_t block) {
    if (span_id_len != 8 || le64(span_id) == 0) return OK; /* nothing can name it as a parent */
    if (st->ninternal == st->cap_internal) {
        size_t cap = st->cap_internal ? st->cap_internal * 2 : 64;
        internal_t *grown = realloc(st->internal, cap * sizeof(internal_t));
        if (!grown) return NOMEM;
        st->internal = grown;
        st->cap_internal = cap;
    }
    internal_t *it = &st->internal[st->ninternal++];
    it->trace_key = trace_id_len == 16 ? (le64(trace_id) * MIX) ^ le64(trace_id + 8) : 0;
    it->span_id = le64(span_id);
    it->parent_span_id = parent_len == 8 ? le64(parent) : 0;
    it->block = block;
    return OK;
}

#define PRESENT(a) (present & (1u << (a)))
#define TAG(field, wire_type) (((uint32_t)(field) << 3) | (uint32_t)(wire_type))

/* Status {message = 2, code = 3}; a repeated Status merges: the last values win. */
static int parse_status(const uint8_t *s, size_t n, int32_t *code, const uint8_t **message, size_t *message_len) {
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        uint64_t x;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (f == 2 && wt == 2) {
            if (rd_string(&r, message, message_len) != OK) return BAIL;
        } else if (f == 3 && wt == 0) {
            if (rd_varint(&r, &x) != OK) return BAIL;
            *code = (int32_t)(uint32_t)x;
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    return OK;
}

/* otel_ai/sampling.py, adjusted_count without a valid `th`: 1 for sampling.priority > 0, else
 * SampleRate in [1, 2^56] (an integer as int_of reads it, else a double), else 1. */
static double attribute_weight(const anyv_t *attrs, uint32_t present) {
    if (PRESENT(A_SAMPLING_PRIORITY) && int_of(&attrs[A_SAMPLING_PRIORITY]) > 0) return 1.0;
    if (PRESENT(A_SAMPLE_RATE)) {
        const anyv_t *v = &attrs[A_SAMPLE_RATE];
        int64_t whole = int_of(v);
        double rate = whole ? (double)whole : (v->kind == V_DOUBLE ? v->d : 0.0);
        if (rate >= 1.0 && rate <= 72057594037927936.0) return rate; /* 2^56 */
    }
    return 1.0;
}

static int parse_span(pass1_t *st, const uint8_t *s, size_t n, size_t block) {
    rd_t r = {s, s + n};
    const uint8_t *trace_id = NULL, *span_id = NULL, *parent = NULL, *trace_state = NULL, *name = s;
    size_t trace_id_len = 0, span_id_len = 0, parent_len = 0, trace_state_len = 0, name_len = 0;
    int32_t kind = 0, status = 0;
    uint64_t start = 0, end = 0;
    const uint8_t *message = s;
    size_t message_len = 0;
    anyv_t attrs[A_COUNT];
    uint32_t present = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        uint64_t x;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        switch (TAG(f, wt)) {
        case TAG(1, 2): if (rd_bytes(&r, &trace_id, &trace_id_len) != OK) return BAIL; break;
        case TAG(2, 2): if (rd_bytes(&r, &span_id, &span_id_len) != OK) return BAIL; break;
        case TAG(3, 2): if (rd_string(&r, &trace_state, &trace_state_len) != OK) return BAIL; break;
        case TAG(4, 2): if (rd_bytes(&r, &parent, &parent_len) != OK) return BAIL; break;
        case TAG(5, 2): if (rd_string(&r, &name, &name_len) != OK) return BAIL; break;
        case TAG(6, 0):
            if (rd_varint(&r, &x) != OK) return BAIL;
            kind = (int32_t)(uint32_t)x;
            break;
        case TAG(7, 1): if (rd_fixed64(&r, &start) != OK) return BAIL; break;
        case TAG(8, 1): if (rd_fixed64(&r, &end) != OK) return BAIL; break;
        case TAG(9, 2): {
            const uint8_t *key;
            size_t key_len;
            anyv_t v;
            int dropped;
            if (rd_bytes(&r, &q, &m) != OK || parse_entry(q, m, &key, &key_len, &v, &dropped) != OK) return BAIL;
            int a = dropped ? -1 : attr_index(key, key_len);
            if (a >= 0) {
                attrs[a] = v; /* a later entry with the same key replaces it, as in a map */
                present |= 1u << a;
            }
            break;
        }
        case TAG(11, 2):
            if (rd_bytes(&r, &q, &m) != OK || validate_message(q, m, 2, 3) != OK) return BAIL;
            break;
        case TAG(15, 2):
            if (rd_bytes(&r, &q, &m) != OK || parse_status(q, m, &status, &message, &message_len) != OK) return BAIL;
            break;
        default:
            if (rd_skip(&r, wt) != OK) return BAIL;
        }
    }
    st->blocks[block].spans++;
    if (kind == KIND_INTERNAL || kind == KIND_UNSPECIFIED)
        return push_internal(st, trace_id, trace_id_len, span_id, span_id_len, parent, parent_len, block);
    if (kind != KIND_SERVER && kind != KIND_CLIENT) return OK;

    /* The rules of otel_ai/decode/reference.py, ReferenceReader.read_view. */
    int32_t http_status = 0, grpc_status = -1, resend = 0;
    uint8_t rule;
    ref_t str[3] = {{0, 0}, {0, 0}, {0, 0}};
    if (PRESENT(A_HTTP_RESPONSE_STATUS)) http_status = clamp32(int_of(&attrs[A_HTTP_RESPONSE_STATUS]));
    else if (PRESENT(A_HTTP_STATUS_CODE)) http_status = clamp32(int_of(&attrs[A_HTTP_STATUS_CODE]));
    int rpc = PRESENT(A_RPC_SERVICE) != 0;
    if (rpc && PRESENT(A_RPC_GRPC_STATUS)) grpc_status = clamp32(int_of(&attrs[A_RPC_GRPC_STATUS]));
    if (kind == KIND_SERVER) {
        int method = PRESENT(A_HTTP_REQUEST_METHOD) ? A_HTTP_REQUEST_METHOD : A_HTTP_METHOD;
        ref_t method_ref = string_ref(st, &attrs[method], PRESENT(method));
        if (PRESENT(A_HTTP_ROUTE)) {
            rule = 'R';
            str[0] = method_ref;
            str[1] = string_ref(st, &attrs[A_HTTP_ROUTE], 1);
        } else if (rpc) {
            rule = 'P';
            str[0] = string_ref(st, &attrs[A_RPC_SERVICE], 1);
            str[1] = string_ref(st, &attrs[A_RPC_METHOD], PRESENT(A_RPC_METHOD));
            str[2] = string_ref(st, &attrs[A_RPC_SYSTEM], PRESENT(A_RPC_SYSTEM));
        } else {
            rule = 'N';
            str[0] = method_ref;
            str[1] = ref_of(st, name, name_len);
        }
    } else {
        static const int named_by[3] = {A_PEER_SERVICE, A_SERVER_ADDRESS, A_NET_PEER_NAME};
        rule = 0;
        for (int k = 0; k < 3 && !rule; k++) {
            int a = named_by[k];
            if (PRESENT(a) && attrs[a].kind == V_STRING && attrs[a].n) {
                rule = 'D';
                str[0] = string_ref(st, &attrs[a], 1);
            }
        }
        if (!rule) {
            int system = PRESENT(A_DB_SYSTEM_NAME) ? A_DB_SYSTEM_NAME : A_DB_SYSTEM;
            if (PRESENT(system) && attrs[system].kind == V_STRING && attrs[system].n) {
                int ns = PRESENT(A_DB_NAMESPACE) ? A_DB_NAMESPACE : A_DB_NAME;
                str[0] = string_ref(st, &attrs[system], 1);
                if (PRESENT(ns) && attrs[ns].kind == V_STRING && attrs[ns].n) {
                    rule = 'B';
                    str[1] = string_ref(st, &attrs[ns], 1);
                } else {
                    rule = 'D';
                }
            } else if (rpc && attrs[A_RPC_SERVICE].kind == V_STRING && attrs[A_RPC_SERVICE].n) {
                rule = 'D';
                str[0] = string_ref(st, &attrs[A_RPC_SERVICE], 1);
            }
        }
        if (!rule) return OK; /* a CLIENT span without a dependency name is not counted */
        if (PRESENT(A_RESEND_COUNT)) resend = clamp32(int_of(&attrs[A_RESEND_COUNT]));
    }

    row_t *row;
    if (push_row(st, &row) != OK) return NOMEM;
    row->start = start > (uint64_t)INT64_MAX ? 0 : (int64_t)start;
    row->end = end > (uint64_t)INT64_MAX ? 0 : (int64_t)end;
    if (trace_id_len == 16) row->trace_key = (le64(trace_id) * MIX) ^ le64(trace_id + 8);
    row->sample_byte = trace_id_len ? trace_id[trace_id_len - 1] : 0;
    if (span_id_len == 8) row->span_id = le64(span_id);
    if (parent_len == 8) row->parent_span_id = le64(parent);
    row->status = status;
    row->http_status = http_status;
    row->grpc_status = grpc_status;
    row->resend = resend;
    row->block = (int32_t)block;
    row->span_off = (uint32_t)(s - st->base);
    row->span_len = (uint32_t)n;
    double weight = trace_state_len ? tracestate_weight(trace_state, trace_state_len) : 0;
    if (weight < 0) return BAIL;
    row->weight = (float)(weight > 0 ? weight : attribute_weight(attrs, present));
    row->sampling_attribute = (present & ((1u << A_SAMPLING_PRIORITY) | (1u << A_SAMPLE_RATE) |
                                          (1u << A_TAIL_SAMPLING_POLICY))) != 0;
    row->kind = (uint8_t)kind;
    row->rule = rule;
    memcpy(row->str, str, sizeof(str));
    return OK;
}

static int parse_scope_spans(pass1_t *st, const uint8_t *s, size_t n, size_t block) {
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (wt == 2 && (f == 1 || f == 2)) {
            if (rd_bytes(&r, &q, &m) != OK) return BAIL;
            int rc = f == 1 ? validate_message(q, m, 1, 0) : parse_span(st, q, m, block);
            if (rc != OK) return rc;
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    return OK;
}

static int parse_resource_spans(pass1_t *st, const uint8_t *s, size_t n) {
    if (st->nblocks == st->cap_blocks) {
        size_t cap = st->cap_blocks ? st->cap_blocks * 2 : 16;
        block_t *grown = realloc(st->blocks, cap * sizeof(block_t));
        if (!grown) return NOMEM;
        st->blocks = grown;
        st->cap_blocks = cap;
    }
    size_t block = st->nblocks++;
    block_t *b = &st->blocks[block];
    memset(b, 0, sizeof(*b));
    b->rs_off = (uint32_t)(s - st->base);
    b->rs_len = (uint32_t)n;
    b->first_row = st->nrows;
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (wt == 2 && f == 1) {
            if (rd_bytes(&r, &q, &m) != OK || validate_message(q, m, 0, 1) != OK) return BAIL;
            st->blocks[block].resource_fields++;
            st->blocks[block].resource = ref_of(st, q, m);
        } else if (wt == 2 && f == 2) {
            int rc;
            if (rd_bytes(&r, &q, &m) != OK) return BAIL;
            if ((rc = parse_scope_spans(st, q, m, block)) != OK) return rc;
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    st->blocks[block].rows = st->nrows - st->blocks[block].first_row;
    return OK;
}

static int parse_request(pass1_t *st, const uint8_t *s, size_t n) {
    rd_t r = {s, s + n};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) return BAIL;
        if (wt == 2 && f == 1) {
            int rc;
            if (rd_bytes(&r, &q, &m) != OK) return BAIL;
            if ((rc = parse_resource_spans(st, q, m)) != OK) return rc;
        } else if (rd_skip(&r, wt) != OK) {
            return BAIL;
        }
    }
    return OK;
}

/* ------------------------------------------------------------------ bounded byte-keyed cache */

typedef struct {
    uint64_t hash; /* 0: empty */
    uint32_t off, len;
    intptr_t value;
} slot_t;

typedef struct {
    slot_t *slots;
    size_t mask, used;
    uint8_t *arena; /* key bytes, grown on demand up to TABLE_ARENA_MAX */
    size_t arena_used, arena_cap;
    int owns_objects; /* values are strong references to Python objects */
} table_t;

static uint64_t hash_bytes(const uint8_t *p, size_t n, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)n * MIX);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h | 1;
}

static int table_init(table_t *t, size_t slots, int owns_objects) {
    t->slots = calloc(slots, sizeof(slot_t));
    t->mask = slots - 1;
    t->used = t->arena_used = t->arena_cap = 0;
    t->arena = NULL;
    t->owns_objects = owns_objects;
    return t->slots ? OK : NOMEM;
}

static void table_clear(table_t *t) {
    if (!t->slots) return;
    for (size_t k = 0; t->owns_objects && k <= t->mask; k++) {
        PyObject *value = t->slots[k].hash ? (PyObject *)t->slots[k].value : NULL;
        t->slots[k].value = 0;
        Py_XDECREF(value);
    }
    memset(t->slots, 0, (t->mask + 1) * sizeof(slot_t));
    t->used = t->arena_used = 0;
}

static void table_free(table_t *t) {
    table_clear(t);
    free(t->slots);
    free(t->arena);
    t->slots = NULL;
    t->arena = NULL;
}

static int table_visit(table_t *t, visitproc visit, void *arg) {
    for (size_t k = 0; t->slots && t->owns_objects && k <= t->mask; k++) {
        if (t->slots[k].hash) Py_VISIT((PyObject *)t->slots[k].value);
    }
    return 0;
}

/* The slot holding key, or NULL. */
static slot_t *table_find(table_t *t, const uint8_t *key, size_t n, uint64_t h) {
    for (size_t k = 0; k < TABLE_MAX_PROBES; k++) {
        slot_t *slot = &t->slots[(h + k) & t->mask];
        if (!slot->hash) return NULL;
        if (slot->hash == h && slot->len == n && memcmp(t->arena + slot->off, key, n) == 0) return slot;
    }
    return NULL;
}

/* Stores key -> value (stealing a reference if the table owns objects). Full: starts
 * over, as the Python caches do. A key whose probe run is too long, or that finds no
 * memory, is not stored. */
static void table_put(table_t *t, const uint8_t *key, size_t n, uint64_t h, intptr_t value) {
    if (t->used >= (t->mask + 1) / 2 || t->arena_used + n > TABLE_ARENA_MAX) table_clear(t);
    if (t->arena_used + n > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_used + n) cap *= 2;
        uint8_t *grown = realloc(t->arena, cap);
        if (!grown) goto drop;
        t->arena = grown;
        t->arena_cap = cap;
    }
    for (size_t k = 0; k < TABLE_MAX_PROBES; k++) {
        slot_t *slot = &t->slots[(h + k) & t->mask];
        if (!slot->hash) {
            memcpy(t->arena + t->arena_used, key, n);
            slot->hash = h;
            slot->off = (uint32_t)t->arena_used;
            slot->len = (uint32_t)n;
            slot->value = value;
            t->arena_used += n;
            t->used++;
            return;
        }
    }
drop:
    if (t->owns_objects) Py_XDECREF((PyObject *)value);
}

/* A growable scratch buffer for building keys. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf_t;

static int buf_put(buf_t *b, const void *data, size_t n) {
    if (n == 0) return OK; /* memcpy's pointers must be valid even for 0 bytes; b->p may be NULL */
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *grown = realloc(b->p, cap);
        if (!grown) return NOMEM;
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return OK;
}

static int buf_put_str(buf_t *b, const uint8_t *s, size_t n) {
    uint32_t len = (uint32_t)n;
    if (buf_put(b, &len, sizeof(len)) != OK) return NOMEM;
    return buf_put(b, s, n);
}

/* ------------------------------------------------------------------ the Reader type */

typedef struct {
    PyObject_HEAD
    PyObject *resolve_subject;  /* (rule, service, a, b, c) -> (sid, overflowed) */
    PyObject *resolve_resource; /* (resource bytes) -> (ResourceInfo, rid) | None */
    PyObject *intern_pair;      /* (key, text) -> (pair | None, key refuses all values) */
    PyObject *resources;        /* dict: resource bytes -> (result, service utf-8 bytes) */
    table_t subjects;           /* naming key -> sid << 1 | overflow */
    table_t pairs;              /* pair key -> interned pair or None; key-refused markers */
    table_t not_suspect;        /* attribute keys never used as suspects */
    uint64_t seed;
    buf_t key, marker;          /* scratch for cache keys */
    int busy;
} Reader;

static PyObject *decode_str(const uint8_t *s, size_t n) {
    return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
}

static int reader_init(Reader *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"resolve_subject", "resolve_resource", "intern_pair", "not_suspect_keys", "seed", NULL};
    PyObject *resolve_subject, *resolve_resource, *intern_pair, *not_suspect;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOK", kwlist, &resolve_subject, &resolve_resource, &intern_pair,
                                     &not_suspect, &seed))
        return -1;
    if (self->resources) {
        PyErr_SetString(PyExc_RuntimeError, "Reader is already initialised");
        return -1;
    }
    Py_INCREF(resolve_subject);
    Py_INCREF(resolve_resource);
    Py_INCREF(intern_pair);
    self->resolve_subject = resolve_subject;
    self->resolve_resource = resolve_resource;
    self->intern_pair = intern_pair;
    self->seed = seed;
    self->resources = PyDict_New();
    if (!self->resources) return -1;
    if (table_init(&self->subjects, TABLE_SLOTS, 0) != OK || table_init(&self->pairs, TABLE_SLOTS, 1) != OK ||
        table_init(&self->not_suspect, 256, 0) != OK) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *it = PyObject_GetIter(not_suspect);
    if (!it) return -1;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(item, &n);
        if (!s) {
            Py_DECREF(item);
            Py_DECREF(it);
            return -1;
        }
        table_put(&self->not_suspect, (const uint8_t *)s, (size_t)n, hash_bytes((const uint8_t *)s, (size_t)n, seed), 1);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* The callbacks are usually bound methods of the object that owns this reader: a
 * cycle, which the garbage collector can only break if it sees these references. */
static int reader_traverse(Reader *self, visitproc visit, void *arg) {
    Py_VISIT(self->resolve_subject);
    Py_VISIT(self->resolve_resource);
    Py_VISIT(self->intern_pair);
    Py_VISIT(self->resources);
    return table_visit(&self->pairs, visit, arg);
}

static int reader_clear(Reader *self) {
    Py_CLEAR(self->resolve_subject);
    Py_CLEAR(self->resolve_resource);
    Py_CLEAR(self->intern_pair);
    Py_CLEAR(self->resources);
    table_clear(&self->pairs);
    return 0;
}

static void reader_dealloc(Reader *self) {
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    table_free(&self->subjects);
    table_free(&self->pairs);
    table_free(&self->not_suspect);
    free(self->key.p);
    free(self->marker.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The resource of a block, from the cache or Python: (result, service UTF-8, service id,
 * resource id), result None (and the rest unused) for otel-ai's own output. */
static PyObject *block_resource(Reader *self, const uint8_t *base, const block_t *b) {
    PyObject *raw;
    if (b->resource_fields <= 1) {
        raw = PyBytes_FromStringAndSize((const char *)base + b->resource.off, b->resource.len);
    } else {
        /* A repeated Resource merges: its fields concatenated parse as the merge. */
        self->key.n = 0;
        rd_t r = {base + b->rs_off, base + b->rs_off + b->rs_len};
        while (r.p < r.end) {
            uint32_t f;
            int wt;
            const uint8_t *q;
            size_t m;
            if (rd_tag(&r, &f, &wt) != OK) return PyErr_Format(PyExc_ValueError, "resource re-read failed");
            if (f == 1 && wt == 2) {
                if (rd_bytes(&r, &q, &m) != OK) return PyErr_Format(PyExc_ValueError, "resource re-read failed");
                if (buf_put(&self->key, q, m) != OK) return PyErr_NoMemory();
            } else if (rd_skip(&r, wt) != OK) {
                return PyErr_Format(PyExc_ValueError, "resource re-read failed");
            }
        }
        raw = PyBytes_FromStringAndSize((const char *)self->key.p, (Py_ssize_t)self->key.n);
    }
    if (!raw) return NULL;
    PyObject *found = PyDict_GetItemWithError(self->resources, raw);
    if (found) {
        Py_DECREF(raw);
        Py_INCREF(found);
        return found;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    PyObject *result = PyObject_CallOneArg(self->resolve_resource, raw);
    if (!result) {
        Py_DECREF(raw);
        return NULL;
    }
    PyObject *entry;
    if (result == Py_None) {
        entry = Py_BuildValue("(OOii)", Py_None, Py_None, 0, 0);
    } else {
        /* (ResourceInfo, resource id): cached with the service's UTF-8 name and its id */
        PyObject *info = PyTuple_Check(result) && PyTuple_GET_SIZE(result) == 2 ? PyTuple_GET_ITEM(result, 0) : NULL;
        PyObject *name = info ? PyObject_GetAttrString(info, "service") : NULL;
        PyObject *service_id = info ? PyObject_GetAttrString(info, "service_id") : NULL;
        PyObject *service = name ? PyUnicode_AsUTF8String(name) : NULL;
        long sid = service_id ? PyLong_AsLong(service_id) : -1;
        long rid = info ? PyLong_AsLong(PyTuple_GET_ITEM(result, 1)) : -1;
        entry = service && !PyErr_Occurred() ? Py_BuildValue("(OOll)", result, service, sid, rid) : NULL;
        if (!info) PyErr_SetString(PyExc_TypeError, "resolve_resource must return (info, id) or None");
        Py_XDECREF(name);
        Py_XDECREF(service_id);
        Py_XDECREF(service);
    }
    Py_DECREF(result);
    if (!entry) {
        Py_DECREF(raw);
        return NULL;
    }
    if (PyDict_GET_SIZE(self->resources) >= RESOURCE_CACHE_MAX) PyDict_Clear(self->resources);
    int rc = PyDict_SetItem(self->resources, raw, entry);
    Py_DECREF(raw);
    if (rc < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    return entry;
}

/* The subject id of a row; *overflow_hits counts cached lookups of overflow subjects. */
static int row_subject(Reader *self, const uint8_t *base, const row_t *row, PyObject *service, int32_t *sid,
                       Py_ssize_t *overflow_hits) {
    buf_t *key = &self->key;
    key->n = 0;
    if (buf_put(key, &row->rule, 1) != OK || buf_put_str(key, (const uint8_t *)PyBytes_AS_STRING(service),
                                                        (size_t)PyBytes_GET_SIZE(service)) != OK)
        goto nomem;
    for (int k = 0; k < 3; k++) {
        if (buf_put_str(key, base + row->str[k].off, row->str[k].len) != OK) goto nomem;
    }
    uint64_t h = 0;
    if (key->n <= CACHE_KEY_MAX) {
        h = hash_bytes(key->p, key->n, self->seed);
        slot_t *slot = table_find(&self->subjects, key->p, key->n, h);
        if (slot) {
            *sid = (int32_t)(slot->value >> 1);
            *overflow_hits += slot->value & 1;
            return OK;
        }
    }
    char rule[2] = {(char)row->rule, 0};
    PyObject *svc = decode_str((const uint8_t *)PyBytes_AS_STRING(service), (size_t)PyBytes_GET_SIZE(service));
    PyObject *a = decode_str(base + row->str[0].off, row->str[0].len);
    PyObject *b = decode_str(base + row->str[1].off, row->str[1].len);
    PyObject *c = decode_str(base + row->str[2].off, row->str[2].len);
    PyObject *result = NULL;
    if (svc && a && b && c) result = PyObject_CallFunction(self->resolve_subject, "sOOOO", rule, svc, a, b, c);
    Py_XDECREF(svc);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    if (!result) return BAIL;
    long value;
    int overflowed;
    if (!PyArg_ParseTuple(result, "lp", &value, &overflowed)) {
        Py_DECREF(result);
        return BAIL;
    }
    Py_DECREF(result);
    if (value < 0 || value > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "resolve_subject returned an invalid id");
        return BAIL;
    }
    *sid = (int32_t)value;
    if (key->n <= CACHE_KEY_MAX) table_put(&self->subjects, key->p, key->n, h, ((intptr_t)value << 1) | (overflowed != 0));
    return OK;
nomem:
    PyErr_NoMemory();
    return BAIL;
}

/* The SpanBatch columns (otel_ai/decode/contract.py), then what capture selection and
 * details() need per row. Each is a contiguous array in one buffer. */
enum {
    C_SUBJECT, C_END, C_DURATION, C_ERROR, C_CLIENT_ERROR, C_KIND, C_SERVICE, C_RESOURCE, C_START, C_HTTP,
    C_GRPC, C_RESEND, C_WEIGHT, C_TRACE_KEY, C_SPAN_ID, C_PARENT, C_SAMPLING, C_SAMPLE, C_BLOCK, C_SPAN_OFF,
    C_SPAN_LEN, C_COUNT
};
static const struct {
    const char *name, *dtype;
    size_t size;
} COLUMNS[C_COUNT] = {
    {"subject_id", "<i4", 4}, {"end_ns", "<i8", 8}, {"duration_ms", "<f8", 8}, {"error", "?", 1},
    {"client_error", "?", 1}, {"kind", "i1", 1}, {"service_id", "<i4", 4}, {"resource_id", "<i4", 4},
    {"start_ns", "<i8", 8}, {"http_status", "<i2", 2}, {"grpc_status", "i1", 1}, {"resend_count", "<i2", 2},
    {"weight", "<f4", 4}, {"trace_key", "<u8", 8}, {"span_id", "<u8", 8}, {"parent_span_id", "<u8", 8},
    {"sampling_attribute", "?", 1}, {"sample_byte", "u1", 1}, {"block", "<i4", 4}, {"span_off", "<u4", 4}, {"span_len", "<u4", 4},
};

static inline int grpc_server_fault(int32_t code) {
    return code == 2 || code == 4 || (code >= 12 && code <= 15);
}

/* One accepted row into the columns: the classification of otel_ai/decode/columns.py. */
static void put_row(uint8_t *col[C_COUNT], size_t k, const row_t *row, int32_t service_id, int32_t resource_id) {
    int32_t http = row->http_status, grpc = row->grpc_status;
    uint8_t client_error = http >= 400 && http < 500;
    uint8_t error = (row->status == 2 || http >= 500) && !client_error;
    if (grpc >= 0) {
        uint8_t fault = (uint8_t)grpc_server_fault(grpc);
        if (row->status == 2 && !fault) client_error = 1;
        error = fault;
    }
    int16_t http16 = http > 0 && http < 1000 ? (int16_t)http : 0;
    int8_t grpc8 = grpc >= 0 && grpc < 128 ? (int8_t)grpc : -1;
    int16_t resend = (int16_t)(row->resend < 0 ? 0 : (row->resend > 32767 ? 32767 : row->resend));
    double duration = (double)(row->end - row->start) / 1e6;
    uint32_t off = row->span_off, len = row->span_len;
    memcpy(col[C_SUBJECT] + 4 * k, &row->sid, 4);
    memcpy(col[C_END] + 8 * k, &row->end, 8);
    memcpy(col[C_DURATION] + 8 * k, &duration, 8);
    col[C_ERROR][k] = error;
    col[C_CLIENT_ERROR][k] = client_error;
    col[C_KIND][k] = row->kind;
    memcpy(col[C_SERVICE] + 4 * k, &service_id, 4);
    memcpy(col[C_RESOURCE] + 4 * k, &resource_id, 4);
    memcpy(col[C_START] + 8 * k, &row->start, 8);
    memcpy(col[C_HTTP] + 2 * k, &http16, 2);
    memcpy(col[C_GRPC] + k, &grpc8, 1);
    memcpy(col[C_RESEND] + 2 * k, &resend, 2);
    memcpy(col[C_WEIGHT] + 4 * k, &row->weight, 4);
    memcpy(col[C_TRACE_KEY] + 8 * k, &row->trace_key, 8);
    memcpy(col[C_SPAN_ID] + 8 * k, &row->span_id, 8);
    memcpy(col[C_PARENT] + 8 * k, &row->parent_span_id, 8);
    col[C_SAMPLING][k] = row->sampling_attribute;
    col[C_SAMPLE][k] = row->sample_byte;
    memcpy(col[C_BLOCK] + 4 * k, &row->block, 4);
    memcpy(col[C_SPAN_OFF] + 4 * k, &off, 4);
    memcpy(col[C_SPAN_LEN] + 4 * k, &len, 4);
}

/* ------------------------------------------------------------------ re-parenting */

/* A row whose parent is an INTERNAL span of the same request gets that span's parent
 * instead, through nested ones (up to MAX_INTERNAL_DEPTH): exactly what
 * columns.skip_internal_parents does over numpy, done here so that it costs no Python per
 * request. internal: (trace key, span id, parent) triples; a key named twice resolves to
 * its first triple, as the reference's stable sort and left search do. */
#define MAX_INTERNAL_DEPTH 8
static const uint64_t SPAN_MIX = 0xD6E8FEB86659FD93ULL;

/* The slot of key in an open-addressing table of cap (a power of two) slots (slot[h]: 0
 * empty, else index + 1), hashed with the odd multiplier mult: where it is, or the empty
 * slot where it goes. */
static inline size_t probe(const uint64_t *keys, const uint32_t *slot, size_t cap, uint64_t key, uint64_t mult) {
    size_t h = (size_t)((key * mult) >> 32) & (cap - 1);
    while (slot[h] && keys[h] != key) h = (h + 1) & (cap - 1);
    return h;
}

static int reparent(const uint64_t *internal, size_t n, uint8_t *col[C_COUNT], size_t rows) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    uint64_t *keys = malloc(cap * sizeof(uint64_t));
    uint32_t *slot = malloc(cap * sizeof(uint32_t)); /* 0: empty, else index + 1 */
    if (!keys || !slot) {
        free(keys);
        free(slot);
        return NOMEM;
    }
    memset(slot, 0, cap * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        uint64_t key = internal[3 * i] ^ (internal[3 * i + 1] * SPAN_MIX);
        size_t h = probe(keys, slot, cap, key, MIX);
        if (!slot[h]) {
            keys[h] = key;
            slot[h] = (uint32_t)(i + 1);
        }
    }
    for (size_t k = 0; k < rows; k++) {
        uint64_t trace_key, parent;
        memcpy(&trace_key, col[C_TRACE_KEY] + 8 * k, 8);
        memcpy(&parent, col[C_PARENT] + 8 * k, 8);
        int moved = 0;
        for (int depth = 0; depth < MAX_INTERNAL_DEPTH && parent != 0; depth++) {
            size_t h = probe(keys, slot, cap, trace_key ^ (parent * SPAN_MIX), MIX);
            if (!slot[h]) break;
            parent = internal[3 * (slot[h] - 1) + 2];
            moved = 1;
        }
        if (moved) memcpy(col[C_PARENT] + 8 * k, &parent, 8);
    }
    free(keys);
    free(slot);
    return OK;
}

/* k-th smallest of v[0..n) (Hoare's selection, reordering v so that every value before k
 * is <= v[k]): for the median end. */
static int64_t select_kth(int64_t *v, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t pivot = v[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        do {
            while (v[i] < pivot) i++;
            while (pivot < v[j]) j--;
            if (i <= j) {
                int64_t t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        /* v[lo..j] <= pivot <= v[i..hi], and v[j+1..i-1] == pivot */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

/* int(np.median(ends)) as columns.median_ns computes it: the float64 mean of the middle one
 * or two values, truncated. 0 for none. -1 (with MemoryError set) if out of memory. */
static int median_end(const uint8_t *ends, size_t n, int64_t *out) {
    *out = 0;
    if (n == 0) return OK;
    int64_t *v = PyMem_Malloc(n * sizeof(int64_t));
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(v, ends, n * sizeof(int64_t));
    Py_ssize_t k = (Py_ssize_t)n / 2;
    int64_t upper = select_kth(v, (Py_ssize_t)n, k);
    if (n % 2) {
        *out = (int64_t)(double)upper;
    } else {
        int64_t lower = v[0]; /* after selecting k, everything below k is <= v[k]: their maximum */
        for (Py_ssize_t i = 1; i < k; i++)
            if (v[i] > lower) lower = v[i];
        *out = (int64_t)(((double)lower + (double)upper) / 2);
    }
    PyMem_Free(v);
    return OK;
}

static PyObject *reader_read(Reader *self, PyObject *args) {
    Py_buffer body;
    long long lowest, highest;
    int bounded;
    if (!PyArg_ParseTuple(args, "y*LLp", &body, &lowest, &highest, &bounded)) return NULL;
    if (body.len > INT32_MAX) {
        PyBuffer_Release(&body);
        Py_RETURN_NONE;
    }
    if (self->busy || !self->resources) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_RuntimeError, self->busy ? "Reader used from two threads at once"
                                                       : "Reader is not initialised");
        return NULL;
    }
    self->busy = 1;
    pass1_t st = {(const uint8_t *)body.buf, NULL, 0, 0, NULL, 0, 0, NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = parse_request(&st, st.base, (size_t)body.len);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL, *blocks = NULL, *buffer = NULL, *offsets = NULL, *internal = NULL;
    uint8_t *own_block = NULL;
    if (rc == NOMEM) {
        PyErr_NoMemory();
        goto done;
    }
    if (rc == BAIL) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    /* Columns sized for every row; only the accepted ones are filled. */
    size_t size = 0, at[C_COUNT];
    for (int c = 0; c < C_COUNT; c++) {
        at[c] = size;
        size += (COLUMNS[c].size * st.nrows + 7) & ~(size_t)7;
    }
    buffer = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
    offsets = PyTuple_New(C_COUNT);
    blocks = PyList_New(0);
    own_block = calloc(st.nblocks ? st.nblocks : 1, 1);
    if (!buffer || !offsets || !blocks) goto done;
    if (!own_block) {
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *col[C_COUNT];
    for (int c = 0; c < C_COUNT; c++) {
        col[c] = (uint8_t *)PyByteArray_AS_STRING(buffer) + at[c];
        PyTuple_SET_ITEM(offsets, c, PyLong_FromSize_t(at[c]));
    }
    Py_ssize_t overflow_hits = 0;
    unsigned long long total = 0, own = 0, counted = 0, invalid = 0, out_of_range = 0;
    int64_t max_end = 0;
    size_t kept = 0;
    for (size_t k = 0; k < st.nblocks; k++) {
        const block_t *b = &st.blocks[k];
        PyObject *entry = block_resource(self, st.base, b);
        if (!entry) goto done;
        PyObject *found = PyTuple_GET_ITEM(entry, 0), *service = PyTuple_GET_ITEM(entry, 1);
        if (found == Py_None) {
            own += b->spans;
            own_block[k] = 1;
            Py_DECREF(entry);
            continue;
        }
        int32_t service_id = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(entry, 2));
        int32_t resource_id = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
        total += b->spans;
        counted += b->rows;
        if (PyList_Append(blocks, found) < 0) {
            Py_DECREF(entry);
            goto done;
        }
        int32_t block_index = (int32_t)(PyList_GET_SIZE(blocks) - 1);
        for (size_t i = b->first_row; i < b->first_row + b->rows; i++) {
            row_t *row = &st.rows[i];
            /* Every counted span names its subject, accepted or not, as in the reference. */
            if (row_subject(self, st.base, row, service, &row->sid, &overflow_hits) != OK) {
                Py_DECREF(entry);
                goto done;
            }
            if (row->end <= 0 || row->start <= 0 || row->end < row->start) {
                invalid++;
                continue;
            }
            if (bounded && (row->end < lowest || row->end > highest)) {
                out_of_range++;
                continue;
            }
            row->block = block_index;
            if (row->end > max_end) max_end = row->end;
            put_row(col, kept++, row, service_id, resource_id);
        }
        Py_DECREF(entry);
    }
    /* The INTERNAL spans of the blocks that are not otel-ai's own: trace key, span id, parent. */
    internal = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(st.ninternal * 3 * sizeof(uint64_t)));
    if (!internal) goto done;
    size_t ninternal = 0;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(internal);
    for (size_t i = 0; i < st.ninternal; i++) {
        const internal_t *it = &st.internal[i];
        if (own_block[it->block]) continue;
        out[3 * ninternal] = it->trace_key;
        out[3 * ninternal + 1] = it->span_id;
        out[3 * ninternal + 2] = it->parent_span_id;
        ninternal++;
    }
    if (ninternal && kept && reparent(out, ninternal, col, kept) != OK) {
        PyErr_NoMemory();
        goto done;
    }
    if (_PyBytes_Resize(&internal, (Py_ssize_t)(ninternal * 3 * sizeof(uint64_t))) < 0) goto done;
    int64_t median = 0;
    if (median_end(col[C_END], kept, &median) < 0) goto done;
    result = Py_BuildValue("(OOnOKKKKKLnOL)", buffer, offsets, (Py_ssize_t)kept, blocks, total, own, counted, invalid,
                           out_of_range, (long long)max_end, overflow_hits, internal, (long long)median);
done:
    Py_XDECREF(buffer);
    Py_XDECREF(offsets);
    Py_XDECREF(blocks);
    Py_XDECREF(internal);
    free(own_block);
    free(st.rows);
    free(st.blocks);
    free(st.internal);
    PyBuffer_Release(&body);
    self->busy = 0;
    return result;
}

/* ------------------------------------------------------------------ pass 2: chosen spans' details */

typedef struct {
    const uint8_t *key;
    size_t key_len;
    anyv_t value;
    size_t seq;
} entry_t;

static int entry_cmp(const void *x, const void *y) {
    const entry_t *a = x, *b = y;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    if (a->key_len != b->key_len) return a->key_len < b->key_len ? -1 : 1;
    return a->seq < b->seq ? -1 : (a->seq > b->seq);
}

/* Python's value_text: the suspect value of an AnyValue, or NULL with no error for none. */
static PyObject *value_text(const anyv_t *v) {
    if (v->kind == V_STRING) return decode_str(v->s, utf8_prefix(v->s, v->n, MAX_VALUE_CHARS));
    if (v->kind == V_INT) return PyUnicode_FromFormat("%lld", (long long)v->i);
    if (v->kind == V_BOOL) return PyUnicode_FromString(v->i ? "true" : "false");
    return NULL;
}

/* Appends the interned pair of one attribute to out (or nothing). Cached: the pair (or
 * None) by key and value, and keys that refuse every value by a marker (key, kind 0). */
static int add_pair(Reader *self, PyObject *out, const entry_t *e) {
    uint64_t h = hash_bytes(e->key, e->key_len, self->seed);
    if (table_find(&self->not_suspect, e->key, e->key_len, h)) return OK;
    const anyv_t *v = &e->value;
    if (v->kind != V_STRING && v->kind != V_INT && v->kind != V_BOOL) return OK;
    buf_t *key = &self->key, *marker = &self->marker;
    uint8_t kind = (uint8_t)v->kind, refused_kind = 0;
    key->n = marker->n = 0;
    if (buf_put_str(key, e->key, e->key_len) != OK || buf_put(key, &kind, 1) != OK ||
        (v->kind == V_STRING ? buf_put(key, v->s, v->n) : buf_put(key, &v->i, sizeof(v->i))) != OK ||
        buf_put_str(marker, e->key, e->key_len) != OK || buf_put(marker, &refused_kind, 1) != OK)
        return NOMEM;
    int cacheable = key->n <= CACHE_KEY_MAX && marker->n <= CACHE_KEY_MAX;
    uint64_t hk = 0, hm = 0;
    if (cacheable) {
        hk = hash_bytes(key->p, key->n, self->seed);
        slot_t *slot = table_find(&self->pairs, key->p, key->n, hk);
        if (slot) {
            PyObject *pair = (PyObject *)slot->value;
            return pair == Py_None ? OK : (PyList_Append(out, pair) < 0 ? BAIL : OK);
        }
        hm = hash_bytes(marker->p, marker->n, self->seed);
        if (table_find(&self->pairs, marker->p, marker->n, hm)) return OK;
    }
    PyObject *k = decode_str(e->key, e->key_len);
    PyObject *text = k ? value_text(v) : NULL;
    PyObject *result = text ? PyObject_CallFunctionObjArgs(self->intern_pair, k, text, NULL) : NULL;
    Py_XDECREF(k);
    Py_XDECREF(text);
    if (!result) return BAIL;
    PyObject *pair;
    int refused;
    if (!PyArg_ParseTuple(result, "Op", &pair, &refused) || (pair != Py_None && PyList_Append(out, pair) < 0)) {
        Py_DECREF(result);
        return BAIL;
    }
    if (cacheable) {
        Py_INCREF(refused ? Py_None : pair);
        if (refused) table_put(&self->pairs, marker->p, marker->n, hm, (intptr_t)Py_None);
        else table_put(&self->pairs, key->p, key->n, hk, (intptr_t)pair);
    }
    Py_DECREF(result);
    return OK;
}

static PyObject *span_pairs(Reader *self, entry_t *entries, size_t n) {
    if (n > 1) qsort(entries, n, sizeof(entry_t), entry_cmp);
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (size_t k = 0; k < n; k++) {
        /* map semantics: of equal keys, the last one on the wire wins */
        if (k + 1 < n && entries[k + 1].key_len == entries[k].key_len &&
            memcmp(entries[k + 1].key, entries[k].key, entries[k].key_len) == 0)
            continue;
        int rc = add_pair(self, out, &entries[k]);
        if (rc != OK) {
            if (rc == NOMEM) PyErr_NoMemory();
            Py_DECREF(out);
            return NULL;
        }
    }
    PyObject *tuple = PyList_AsTuple(out);
    Py_DECREF(out);
    return tuple;
}

static PyObject *string_value(const anyv_t *v, int present, size_t max_chars) {
    if (!present || v->kind != V_STRING) return PyUnicode_FromStringAndSize("", 0);
    return decode_str(v->s, utf8_prefix(v->s, v->n, max_chars));
}

/* ((type, message), ...) of the span's exception events, else of its status message. */
static PyObject *span_exceptions(const uint8_t *s, size_t n, const uint8_t *status_message, size_t status_len) {
    PyObject *found = PyList_New(0);
    if (!found) return NULL;
    rd_t r = {s, s + n};
    while (r.p < r.end && PyList_GET_SIZE(found) < MAX_EXCEPTIONS) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) goto malformed;
        if (!(f == 11 && wt == 2)) {
            if (rd_skip(&r, wt) != OK) goto malformed;
            continue;
        }
        if (rd_bytes(&r, &q, &m) != OK) goto malformed;
        rd_t er = {q, q + m};
        const uint8_t *name = q;
        size_t name_len = 0;
        anyv_t type = {0}, message = {0};
        int has_type = 0, has_message = 0;
        while (er.p < er.end) {
            uint32_t ef;
            int ewt;
            const uint8_t *eq;
            size_t em;
            if (rd_tag(&er, &ef, &ewt) != OK) goto malformed;
            if (ef == 2 && ewt == 2) {
                if (rd_bytes(&er, &name, &name_len) != OK) goto malformed;
            } else if (ef == 3 && ewt == 2) {
                const uint8_t *key;
                size_t key_len;
                anyv_t v;
                int dropped;
                if (rd_bytes(&er, &eq, &em) != OK || parse_entry(eq, em, &key, &key_len, &v, &dropped) != OK)
                    goto malformed;
                if (dropped) continue;
                if (key_len == 14 && memcmp(key, "exception.type", 14) == 0) {
                    type = v;
                    has_type = 1;
                } else if (key_len == 17 && memcmp(key, "exception.message", 17) == 0) {
                    message = v;
                    has_message = 1;
                }
            } else if (rd_skip(&er, ewt) != OK) {
                goto malformed;
            }
        }
        if (name_len != 9 || memcmp(name, "exception", 9) != 0) continue;
        PyObject *t = string_value(&type, has_type, MAX_VALUE_CHARS);
        PyObject *msg = string_value(&message, has_message, MAX_MESSAGE_CHARS);
        PyObject *pair = t && msg ? PyTuple_Pack(2, t, msg) : NULL;
        Py_XDECREF(t);
        Py_XDECREF(msg);
        if (!pair || PyList_Append(found, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(found);
            return NULL;
        }
        Py_DECREF(pair);
    }
    if (PyList_GET_SIZE(found) == 0 && status_len) {
        PyObject *msg = decode_str(status_message, utf8_prefix(status_message, status_len, MAX_MESSAGE_CHARS));
        PyObject *pair = msg ? Py_BuildValue("(sO)", "", msg) : NULL;
        Py_XDECREF(msg);
        if (!pair || PyList_Append(found, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(found);
            return NULL;
        }
        Py_DECREF(pair);
    }
    PyObject *tuple = PyList_AsTuple(found);
    Py_DECREF(found);
    return tuple;
malformed:
    Py_DECREF(found);
    PyErr_SetString(PyExc_ValueError, "span re-read failed");
    return NULL;
}

/* (trace_id, span_id, pairs, exceptions) of one span read in pass 1. */
static PyObject *span_details(Reader *self, const uint8_t *s, size_t n, int want_pairs, int want_exceptions) {
    rd_t r = {s, s + n};
    const uint8_t *trace_id = s, *span_id = s, *status_message = s;
    size_t trace_id_len = 0, span_id_len = 0, status_len = 0, nentries = 0, cap = 0;
    entry_t *entries = NULL;
    PyObject *result = NULL, *tid = NULL, *sid = NULL, *pairs = NULL, *exceptions = NULL;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        const uint8_t *q;
        size_t m;
        if (rd_tag(&r, &f, &wt) != OK) goto malformed;
        if (wt != 2) {
            if (rd_skip(&r, wt) != OK) goto malformed;
            continue;
        }
        if (rd_bytes(&r, &q, &m) != OK) goto malformed;
        if (f == 1) {
            trace_id = q;
            trace_id_len = m;
        } else if (f == 2) {
            span_id = q;
            span_id_len = m;
        } else if (f == 9 && want_pairs) {
            if (nentries == cap) {
                cap = cap ? cap * 2 : 32;
                entry_t *grown = realloc(entries, cap * sizeof(entry_t));
                if (!grown) {
                    PyErr_NoMemory();
                    goto done;
                }
                entries = grown;
            }
            entry_t *e = &entries[nentries];
            int dropped;
            if (parse_entry(q, m, &e->key, &e->key_len, &e->value, &dropped) != OK) goto malformed;
            if (!dropped) e->seq = nentries++;
        } else if (f == 15) {
            int32_t code;
            if (parse_status(q, m, &code, &status_message, &status_len) != OK) goto malformed;
        }
    }
    tid = PyBytes_FromStringAndSize((const char *)trace_id, (Py_ssize_t)trace_id_len);
    sid = PyBytes_FromStringAndSize((const char *)span_id, (Py_ssize_t)span_id_len);
    pairs = want_pairs ? span_pairs(self, entries, nentries) : PyTuple_New(0);
    exceptions = want_exceptions ? span_exceptions(s, n, status_message, status_len) : PyTuple_New(0);
    if (tid && sid && pairs && exceptions) result = PyTuple_Pack(4, tid, sid, pairs, exceptions);
    goto done;
malformed:
    PyErr_SetString(PyExc_ValueError, "span re-read failed");
done:
    Py_XDECREF(tid);
    Py_XDECREF(sid);
    Py_XDECREF(pairs);
    Py_XDECREF(exceptions);
    free(entries);
    return result;
}

static PyObject *reader_details(Reader *self, PyObject *args) {
    Py_buffer body, offsets, lengths, flags;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &body, &offsets, &lengths, &flags)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t count = flags.len;
    if (offsets.len != count * 4 || lengths.len != count * 4) {
        PyErr_SetString(PyExc_ValueError, "details: offsets, lengths and flags must agree");
        goto done;
    }
    if (self->busy || !self->resources) {
        PyErr_SetString(PyExc_RuntimeError, self->busy ? "Reader used from two threads at once"
                                                       : "Reader is not initialised");
        goto done;
    }
    self->busy = 1;
    out = PyList_New(count);
    for (Py_ssize_t k = 0; out && k < count; k++) {
        uint32_t off, len;
        memcpy(&off, (const uint8_t *)offsets.buf + 4 * k, 4);
        memcpy(&len, (const uint8_t *)lengths.buf + 4 * k, 4);
        uint8_t flag = ((const uint8_t *)flags.buf)[k];
        if ((uint64_t)off + len > (uint64_t)body.len) {
            PyErr_SetString(PyExc_ValueError, "details: span outside the body");
            Py_CLEAR(out);
            break;
        }
        PyObject *item = span_details(self, (const uint8_t *)body.buf + off, len, flag & 1, (flag & 2) != 0);
        if (!item) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, k, item);
    }
    self->busy = 0;
done:
    PyBuffer_Release(&body);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&flags);
    return out;
}

static PyObject *module_tracestate_weight(PyObject *module, PyObject *arg) {
    (void)module;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s) return NULL;
    double weight = tracestate_weight((const uint8_t *)s, (size_t)n);
    if (weight < 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(weight > 0 ? weight : 1.0); /* as reference.weight_of */
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)reader_read, METH_VARARGS,
     "read(body, lowest_ns, highest_ns, bounded) -> (columns, offsets, rows, blocks, total, own, counted, invalid, "
     "out_of_range, max_end_ns, overflow_hits, internal, median_end_ns), or None to let the reference reader decide"},
    {"details", (PyCFunction)reader_details, METH_VARARGS,
     "details(body, offsets, lengths, flags) -> [(trace_id, span_id, pairs, exceptions)]"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_ai.decode._otlp.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Reads OTLP protobuf requests into span rows (see otel_ai/decode/native.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_methods = reader_methods,
};

/* ------------------------------------------------------------------ the service graph's parent lookup */

/* For each query, the index of the first key equal to it, or -1: the service graph's join
 * finds each span's parent row this way (an open-addressing table, O(n)), instead of a
 * sort and a binary search per row, whose random reads over a million rows were most of a
 * slot close. Keys come from untrusted ids, so the hash multiplier is the caller's secret
 * (odd) seed; equal keys are one entry, the first. Runs without the GIL. */
static PyObject *module_find_rows(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer keys, queries;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y*y*K", &keys, &queries, &seed)) return NULL;
    PyObject *result = NULL;
    uint64_t *table = NULL;
    uint32_t *slot = NULL;
    size_t n = (size_t)keys.len / 8, m = (size_t)queries.len / 8;
    if (keys.len % 8 || queries.len % 8 || n >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "find_rows: keys and queries are uint64 arrays (fewer than 2**32 keys)");
        goto done;
    }
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    table = PyMem_RawMalloc(cap * sizeof(uint64_t));
    slot = PyMem_RawCalloc(cap, sizeof(uint32_t));
    result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(m * sizeof(int64_t))); /* writable for numpy */
    if (!table || !slot || !result) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *k = keys.buf, *q = queries.buf;
    int64_t *out = (int64_t *)PyByteArray_AS_STRING(result);
    uint64_t mult = (uint64_t)seed | 1;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < n; i++) {
        size_t h = probe(table, slot, cap, k[i], mult);
        if (!slot[h]) {
            table[h] = k[i];
            slot[h] = (uint32_t)(i + 1);
        }
    }
    for (size_t j = 0; j < m; j++) out[j] = (int64_t)slot[probe(table, slot, cap, q[j], mult)] - 1;
    Py_END_ALLOW_THREADS
done:
    PyMem_RawFree(table);
    PyMem_RawFree(slot);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&queries);
    return result;
}

static PyMethodDef module_methods[] = {
    {"find_rows", module_find_rows, METH_VARARGS,
     "find_rows(keys, queries, seed) -> bytearray of int64: per query, the index of the first equal key, or -1."},
    {"tracestate_weight", module_tracestate_weight, METH_O,
     "The adjusted count of a W3C tracestate (a double, before the float32 column); None if non-ASCII."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_otlp", "OTLP protobuf -> span rows, in C.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp(void) {
    if (index_attr_names() < 0) {
        PyErr_SetString(PyExc_RuntimeError, "_otlp: more attribute names of one length than PER_LEN");
        return NULL;
    }
    if (PyType_Ready(&ReaderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    PyObject *columns = PyTuple_New(C_COUNT);
    if (!columns) {
        Py_DECREF(m);
        return NULL;
    }
    for (int c = 0; c < C_COUNT; c++) PyTuple_SET_ITEM(columns, c, Py_BuildValue("(ss)", COLUMNS[c].name, COLUMNS[c].dtype));
    if (PyErr_Occurred() || PyModule_AddObject(m, "COLUMNS", columns) < 0) {
        Py_DECREF(columns);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
