/* Arcana audit plugin in C (wasi-libc): the same policy as the Rust plugin in ../audit.
 *
 * The Rust plugin decodes the event with serde_json into a struct of five strings, so it
 * answers -1 for anything serde_json would reject: text that is not JSON (syntax, UTF-8,
 * lone surrogates), a value that is neither an object nor an array of exactly five
 * strings, a missing or duplicated field, a field that is not a string. This file checks the
 * same things with a small strict JSON reader, then applies the policy:
 *   user.data_access -> 1 if action is "export", else 0; admin.config_change -> 1; else 0.
 * An event it cannot read is reported on stderr (WASI fd_write), which the host logs under the
 * plugin's name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))

enum { EVENT_TYPE, USER_ID, RESOURCE, ACTION, TIMESTAMP, NFIELDS };
static const char *const FIELD_NAMES[NFIELDS] = {"event_type", "user_id", "resource", "action",
                                                 "timestamp"};
#define MAX_KEPT 32 /* longer values are never one the policy compares against */

typedef struct {
    const uint8_t *p, *end;
} reader;

typedef struct {
    char text[MAX_KEPT + 1];
    size_t len; /* decoded length; > MAX_KEPT means "longer than kept" */
} str_value;

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(reader *r, uint32_t *out) {
    uint32_t v = 0;
    if (r->end - r->p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = *r->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

static void keep(str_value *out, const uint8_t *bytes, size_t n) {
    if (!out) return;
    for (size_t i = 0; i < n; i++, out->len++)
        if (out->len < MAX_KEPT) out->text[out->len] = (char)bytes[i];
}

static size_t utf8_encode(uint32_t cp, uint8_t *buf) {
    if (cp < 0x80) { buf[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { buf[0] = 0xC0 | (cp >> 6); buf[1] = 0x80 | (cp & 0x3F); return 2; }
    if (cp < 0x10000) {
        buf[0] = 0xE0 | (cp >> 12); buf[1] = 0x80 | ((cp >> 6) & 0x3F);
        buf[2] = 0x80 | (cp & 0x3F); return 3;
    }
    buf[0] = 0xF0 | (cp >> 18); buf[1] = 0x80 | ((cp >> 12) & 0x3F);
    buf[2] = 0x80 | ((cp >> 6) & 0x3F); buf[3] = 0x80 | (cp & 0x3F); return 4;
}

/* One well-formed UTF-8 sequence starting at r->p (no overlongs, no surrogates). */
static int utf8_char(reader *r, str_value *out) {
    const uint8_t *s = r->p;
    uint8_t c = s[0];
    size_t n;
    uint32_t min, cp;
    if (c < 0x80) { n = 1; cp = c; min = 0; }
    else if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)(r->end - s) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    keep(out, s, n);
    r->p += n;
    return 1;
}

/* A string at r->p (after the opening quote has been checked); decoded into out if given. */
static int read_string(reader *r, str_value *out) {
    if (out) out->len = 0;
    r->p++; /* the opening quote */
    while (r->p < r->end) {
        uint8_t c = *r->p;
        if (c == '"') { r->p++; return 1; }
        if (c < 0x20) return 0;
        if (c != '\\') {
            if (!utf8_char(r, out)) return 0;
            continue;
        }
        if (++r->p >= r->end) return 0;
        uint8_t e = *r->p++;
        uint8_t one;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            uint8_t buf[4];
            if (!hex4(r, &cp)) return 0;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return 0; /* lone trailing surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {           /* needs its trailing half */
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') return 0;
                r->p += 2;
                if (!hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) return 0;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            keep(out, buf, utf8_encode(cp, buf));
            continue;
        }
        default: return 0;
        }
        keep(out, &one, 1);
    }
    return 0;
}

static int read_number(reader *r) {
    const uint8_t *p = r->p, *end = r->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return 0;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
    else return 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    r->p = p;
    return 1;
}

static int read_literal(reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return 0;
    r->p += n;
    return 1;
}

static int read_key(reader *r) {
    skip_ws(r);
    if (r->p >= r->end || *r->p != '"' || !read_string(r, NULL)) return 0;
    skip_ws(r);
    return r->p < r->end && *r->p++ == ':';
}

/* Any JSON value, checked and skipped. Iterative, like serde_json's skipping of a value it
 * ignores: any nesting depth is accepted (the Rust plugin accepts it), without recursion. */
static int read_value(reader *r) {
    uint8_t small[64];
    size_t cap = (size_t)(r->end - r->p) + 1;
    uint8_t *closers = cap <= sizeof small ? small : malloc(cap);
    size_t depth = 0;
    int ok = 0;
    if (!closers) return 0;
    for (;;) {
        /* a value is expected */
        skip_ws(r);
        if (r->p >= r->end) goto done;
        uint8_t c = *r->p;
        if (c == '{' || c == '[') {
            uint8_t close = c == '{' ? '}' : ']';
            r->p++;
            skip_ws(r);
            if (r->p < r->end && *r->p == close) {
                r->p++;
            } else {
                closers[depth++] = close;
                if (close == '}' && !read_key(r)) goto done;
                continue;
            }
        } else if (c == '"') {
            if (!read_string(r, NULL)) goto done;
        } else if (c == 't') {
            if (!read_literal(r, "true")) goto done;
        } else if (c == 'f') {
            if (!read_literal(r, "false")) goto done;
        } else if (c == 'n') {
            if (!read_literal(r, "null")) goto done;
        } else if (!read_number(r)) {
            goto done;
        }
        /* a value is complete: close containers, or go on to the next element */
        for (;;) {
            if (depth == 0) { ok = 1; goto done; }
            skip_ws(r);
            if (r->p >= r->end) goto done;
            if (*r->p == closers[depth - 1]) { r->p++; depth--; continue; }
            if (*r->p != ',') goto done;
            r->p++;
            if (closers[depth - 1] == '}' && !read_key(r)) goto done;
            break;
        }
    }
done:
    if (closers != small) free(closers);
    return ok;
}

static int field_index(const str_value *key) {
    for (int i = 0; i < NFIELDS; i++)
        if (key->len == strlen(FIELD_NAMES[i]) && memcmp(key->text, FIELD_NAMES[i], key->len) == 0)
            return i;
    return -1;
}

/* The five fields, from an object or (as serde accepts for a struct) an array of five. */
static int read_event(reader *r, str_value fields[NFIELDS]) {
    int seen[NFIELDS] = {0};
    skip_ws(r);
    if (r->p >= r->end) return 0;
    if (*r->p == '[') {
        r->p++;
        for (int i = 0; i < NFIELDS; i++) {
            skip_ws(r);
            if (i > 0) {
                if (r->p >= r->end || *r->p++ != ',') return 0;
                skip_ws(r);
            }
            if (r->p >= r->end || *r->p != '"' || !read_string(r, &fields[i])) return 0;
        }
        skip_ws(r);
        return r->p < r->end && *r->p++ == ']';
    }
    if (*r->p != '{') return 0;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') return 0; /* every field is missing */
    for (;;) {
        str_value key;
        skip_ws(r);
        if (r->p >= r->end || *r->p != '"' || !read_string(r, &key)) return 0;
        skip_ws(r);
        if (r->p >= r->end || *r->p++ != ':') return 0;
        int i = key.len <= MAX_KEPT ? field_index(&key) : -1;
        if (i >= 0) {
            if (seen[i]) return 0; /* duplicate field */
            seen[i] = 1;
            skip_ws(r);
            if (r->p >= r->end || *r->p != '"' || !read_string(r, &fields[i])) return 0;
        } else if (!read_value(r)) {
            return 0;
        }
        skip_ws(r);
        if (r->p >= r->end) return 0;
        if (*r->p == ',') { r->p++; continue; }
        if (*r->p++ != '}') return 0;
        break;
    }
    for (int i = 0; i < NFIELDS; i++)
        if (!seen[i]) return 0;
    return 1;
}

static int equals(const str_value *v, const char *text) {
    return v->len == strlen(text) && memcmp(v->text, text, v->len) == 0;
}

EXPORT("on_audit_event") int32_t on_audit_event(int32_t ptr, int32_t len) {
    if (len < 0) return -1;
    const uint8_t *p = (const uint8_t *)(uintptr_t)ptr;
    reader r = {p, p + len};
    str_value fields[NFIELDS];
    int ok = read_event(&r, fields);
    skip_ws(&r);
    if (!ok || r.p != r.end) { /* not an audit event, or trailing characters */
        fprintf(stderr, "unreadable audit event (%d bytes) at byte %d\n", (int)len,
                (int)(r.p - p));
        return -1;
    }
    if (equals(&fields[EVENT_TYPE], "user.data_access"))
        return equals(&fields[ACTION], "export") ? 1 : 0;
    if (equals(&fields[EVENT_TYPE], "admin.config_change")) return 1;
    return 0;
}

EXPORT("alloc") int32_t alloc(int32_t len) {
    return (int32_t)(uintptr_t)malloc(len > 0 ? (size_t)len : 1);
}

EXPORT("dealloc") void dealloc(int32_t ptr, int32_t len) {
    (void)len;
    free((void *)(uintptr_t)ptr);
}

EXPORT("get_plugin_version") int32_t get_plugin_version(void) { return 1; }
