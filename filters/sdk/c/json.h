/*
 * A tiny JSON tokenizer for filter configuration (in the spirit of jsmn): parses into a flat
 * token array; objects hold key and value tokens in order. No allocation beyond the doc.
 */
#ifndef SLUICE_PWJ_H
#define SLUICE_PWJ_H
#include <string.h>

#define PWJ_MAX_TOKENS 512
typedef enum { PWJ_OBJECT, PWJ_ARRAY, PWJ_STRING, PWJ_PRIMITIVE } pwj_type;
typedef struct { pwj_type type; int start, end, size, parent; } pwj_token;
typedef struct { const char *text; int count; pwj_token t[PWJ_MAX_TOKENS]; } pwj_doc;

static int pwj__new(pwj_doc *d, pwj_type type, int start, int parent) {
    if (d->count >= PWJ_MAX_TOKENS) return -1;
    pwj_token *t = &d->t[d->count];
    t->type = type; t->start = start; t->end = -1; t->size = 0; t->parent = parent;
    if (parent >= 0) d->t[parent].size++;
    return d->count++;
}

/* Returns 1 on success. */
static int pwj_parse(pwj_doc *d, const char *s, size_t len) {
    d->text = s; d->count = 0;
    int parent = -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ':') continue;
        if (c == '{' || c == '[') {
            int t = pwj__new(d, c == '{' ? PWJ_OBJECT : PWJ_ARRAY, (int)i, parent);
            if (t < 0) return 0;
            parent = t;
        } else if (c == '}' || c == ']') {
            if (parent < 0) return 0;
            d->t[parent].end = (int)i + 1;
            parent = d->t[parent].parent;
        } else if (c == '"') {
            size_t j = i + 1;
            while (j < len && s[j] != '"') { if (s[j] == '\\') j++; j++; }
            if (j >= len) return 0;
            int t = pwj__new(d, PWJ_STRING, (int)i + 1, parent);
            if (t < 0) return 0;
            d->t[t].end = (int)j;
            i = j;
        } else {
            size_t j = i;
            while (j < len && !strchr(" \t\r\n,:]}", s[j])) j++;
            int t = pwj__new(d, PWJ_PRIMITIVE, (int)i, parent);
            if (t < 0) return 0;
            d->t[t].end = (int)j;
            i = j - 1;
        }
    }
    return parent == -1 && d->count > 0;
}

/* Index just past token i and everything inside it. */
static int pwj_skip(const pwj_doc *d, int i) {
    int end = d->t[i].end, j = i + 1;
    while (j < d->count && d->t[j].start < end) j++;
    return j;
}

/* In object token `obj`, the token index of the member key's first member; -1 if none. */
static int pwj_first_member(const pwj_doc *d, int obj) {
    if (obj < 0 || obj >= d->count || d->t[obj].type != PWJ_OBJECT || d->t[obj].size == 0) return -1;
    return obj + 1;
}

/* The key token of the member after the one whose key token is `key`; -1 at the end. */
static int pwj_next_member(const pwj_doc *d, int key) {
    int parent = d->t[key].parent;
    int next = pwj_skip(d, key + 1);
    return (next < d->count && d->t[next].parent == parent) ? next : -1;
}

static int pwj_eq(const pwj_doc *d, int i, const char *s) {
    int n = d->t[i].end - d->t[i].start;
    return d->t[i].type == PWJ_STRING && (int)strlen(s) == n && strncmp(d->text + d->t[i].start, s, n) == 0;
}

/* The value token for `key` in object `obj`; -1 if absent. */
static int pwj_get(const pwj_doc *d, int obj, const char *key) {
    for (int m = pwj_first_member(d, obj); m >= 0; m = pwj_next_member(d, m))
        if (pwj_eq(d, m, key)) return m + 1;
    return -1;
}

/* Copies a string or primitive token's text (escapes kept as-is except \" and \\). */
static void pwj_copy_string(const pwj_doc *d, int i, char *out, size_t size) {
    if (i < 0 || i >= d->count || size == 0 || (d->t[i].type != PWJ_STRING && d->t[i].type != PWJ_PRIMITIVE)) return;
    size_t o = 0;
    for (int j = d->t[i].start; j < d->t[i].end && o + 1 < size; j++) {
        char c = d->text[j];
        if (c == '\\' && j + 1 < d->t[i].end) c = d->text[++j];
        out[o++] = c;
    }
    out[o] = 0;
}
#endif
