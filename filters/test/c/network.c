/*
 * Network (TCP) filter for the tests, and the HTTP filter that reports what it saw: one
 * module, two plugins sharing a VM (same vm_id), so they share its shared data.
 *
 * Plugin configuration, first word:
 *   count         counts connections and bytes (shared data tcp_connections, tcp_bytes_down,
 *                 tcp_bytes_up) and records every callback of every connection (shared "trace")
 *   rewrite       upper-cases the client's bytes; wraps each upstream chunk in "<" ">"
 *                 (prepend and append)
 *   pause-line    holds the client's bytes until a newline has arrived
 *   pause-new MS  stops at proxy_on_new_connection, continues from a tick MS ms later
 *   hold-once MS  holds the client's first bytes (and what follows) for MS ms, then resumes
 *                 with proxy_continue_stream(Downstream) from a tick
 *   hold-mark MS  the same, and the tick first appends "!" to the bytes held (a filter edits
 *                 what it holds outside a data callback)
 *   close-on      closes the connection when the client sends "EVIL" (proxy_close_stream
 *                 Downstream) or the upstream sends "LEAK" (Upstream)
 *   hold-up       holds the upstream's bytes until its end_of_stream (buffer, then inspect)
 *   trap          traps (unreachable) when the client sends "BOOM"
 *   observe       traces, counts nothing (for an HTTP listener, whose bytes differ by proxy)
 *   report        (HTTP) answers every request with the counters and the trace
 *   report-ids    (HTTP) answers with the stream's connection.id and the last one a network
 *                 context saw ("http=<id> tcp=<id>")
 * Every other mode also counts and traces. The two plugins share one VM, so each
 * context looks up its own plugin's mode through its root context.
 */
#include "../../sdk/c/proxy_wasm.h"
#include <stdio.h>

PW_MODULE_BOILERPLATE

#define MAX_ROOTS 32
static struct { uint32_t id; char mode[32]; uint32_t hold_ms; } roots[MAX_ROOTS];

#define MAX_CONNECTIONS 1024
static struct { uint32_t id, root; char trace[1024]; size_t len; int held; } conns[MAX_CONNECTIONS];

static int root_index(uint32_t root) {
    for (int i = 0; i < MAX_ROOTS; i++) if (roots[i].id == root) return i;
    return -1;
}

/* The mode of the plugin a context (or root context) belongs to. */
static const char *mode_of(uint32_t ctx) {
    int r = root_index(ctx);
    if (r < 0 && conns[ctx % MAX_CONNECTIONS].id == ctx) r = root_index(conns[ctx % MAX_CONNECTIONS].root);
    return r < 0 ? "" : roots[r].mode;
}

static void trace(uint32_t ctx, const char *event) {
    uint32_t slot = ctx % MAX_CONNECTIONS;
    size_t n = strlen(event);
    if (conns[slot].len + n + 1 < sizeof conns[slot].trace) {
        memcpy(conns[slot].trace + conns[slot].len, event, n);
        conns[slot].len += n;
        conns[slot].trace[conns[slot].len++] = ' ';
        conns[slot].trace[conns[slot].len] = 0;
    }
}

/* Shared-data updates retry on a CAS mismatch: other workers write the same keys. */
static void shared_add(const char *key, long delta) {
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t cas = 0;
        char *old = pw_shared_get(key, &cas);
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", (old ? atol(old) : 0) + delta);
        free(old);
        if (pw_shared_set(key, buf, cas) == PW_OK) return;
    }
}

static void shared_append(const char *key, const char *text) {
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t cas = 0;
        char *old = pw_shared_get(key, &cas);
        size_t a = old ? strlen(old) : 0, b = strlen(text);
        char *joined = malloc(a + b + 1);
        if (a) memcpy(joined, old, a);
        memcpy(joined + a, text, b + 1);
        free(old);
        pw_status s = pw_shared_set(key, joined, cas);
        free(joined);
        if (s == PW_OK) return;
    }
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    size_t len = 0;
    char *config = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    if (!config) return 0;
    int r = root_index(0);
    if (r < 0) { free(config); return 0; }
    roots[r].id = root;
    sscanf(config, "%31s %u", roots[r].mode, &roots[r].hold_ms);
    free(config);
    return 1;
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t root) {
    if (root == 0) return;
    uint32_t slot = ctx % MAX_CONNECTIONS;
    conns[slot].id = ctx;
    conns[slot].root = root;
    conns[slot].len = 0;
    conns[slot].held = 0;
    conns[slot].trace[0] = 0;
}

static int current_ctx;
static int is(const char *m) { return strcmp(mode_of(current_ctx), m) == 0; }

/* A property's status and whether it has a value: "name:0+" found, "name:1" NotFound. */
static void trace_property(uint32_t ctx, const char *label, const char *path, size_t path_len) {
    char *value = NULL; size_t len = 0;
    pw_status s = proxy_get_property(path, path_len, &value, &len);
    char event[96];
    snprintf(event, sizeof event, "%s:%d%s", label, s, s == PW_OK && len > 0 ? "+" : "");
    free(value);
    trace(ctx, event);
}

/* connection.id: an 8-byte little-endian integer. */
static uint64_t connection_id(void) {
    char *value = NULL; size_t len = 0;
    uint64_t id = 0;
    if (proxy_get_property("connection\0id", 13, &value, &len) == PW_OK && len == 8) memcpy(&id, value, 8);
    free(value);
    return id;
}

PW_EXPORT(proxy_on_new_connection) uint32_t on_new_connection(uint32_t ctx) {
    current_ctx = ctx;
    trace(ctx, "new");
    trace_property(ctx, "source", "source\0address", 14);
    trace_property(ctx, "destination", "destination\0address", 19);
    trace_property(ctx, "connection_id", "connection\0id", 13);
    trace_property(ctx, "request_path", "request\0path", 12);
    if (!is("observe")) shared_add("tcp_connections", 1);
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)connection_id());
    pw_shared_set("last_tcp_connection_id", id, 0);
    if (is("pause-new")) {
        conns[ctx % MAX_CONNECTIONS].held = 1;
        proxy_set_tick_period_milliseconds(roots[root_index(conns[ctx % MAX_CONNECTIONS].root)].hold_ms);
        return PW_PAUSE;
    }
    return PW_CONTINUE;
}

static char *data_bytes(pw_buffer which, size_t *len) { return pw_buffer_bytes(which, len); }

PW_EXPORT(proxy_on_downstream_data) uint32_t on_downstream_data(uint32_t ctx, uint32_t size, uint32_t end) {
    current_ctx = ctx;
    char event[64];
    snprintf(event, sizeof event, "down(%u,%u)", size, end);
    trace(ctx, event);
    size_t len = 0;
    char *data = data_bytes(PW_DOWNSTREAM_DATA, &len);
    uint32_t result = PW_CONTINUE;
    if (is("rewrite") && data) {
        for (size_t i = 0; i < len; i++) if (data[i] >= 'a' && data[i] <= 'z') data[i] -= 32;
        pw_buffer_replace(PW_DOWNSTREAM_DATA, data, len);
    } else if (is("pause-line")) {
        result = (data && memchr(data, '\n', len)) ? PW_CONTINUE : PW_PAUSE;
    } else if (is("hold-once") || is("hold-mark")) {
        uint32_t slot = ctx % MAX_CONNECTIONS;
        if (conns[slot].held == 0) {
            conns[slot].held = 1;
            proxy_set_tick_period_milliseconds(roots[root_index(conns[slot].root)].hold_ms);
        }
        if (conns[slot].held == 1) result = PW_PAUSE;
    } else if (is("trap") && data && len >= 4) {
        for (size_t i = 0; i + 4 <= len; i++) if (memcmp(data + i, "BOOM", 4) == 0) __builtin_trap();
    } else if (is("close-on") && data && len >= 4) {
        for (size_t i = 0; i + 4 <= len; i++) if (memcmp(data + i, "EVIL", 4) == 0) {
            trace(ctx, "close-downstream");
            proxy_close_stream(PW_STREAM_DOWNSTREAM);
            result = PW_PAUSE;
            break;
        }
    }
    if (result == PW_CONTINUE && !is("observe")) shared_add("tcp_bytes_down", (long)len);
    free(data);
    return result;
}

PW_EXPORT(proxy_on_upstream_data) uint32_t on_upstream_data(uint32_t ctx, uint32_t size, uint32_t end) {
    current_ctx = ctx;
    char event[64];
    snprintf(event, sizeof event, "up(%u,%u)", size, end);
    trace(ctx, event);
    size_t len = 0;
    char *data = data_bytes(PW_UPSTREAM_DATA, &len);
    uint32_t result = PW_CONTINUE;
    if (is("hold-up") && !end) {
        result = PW_PAUSE;
    } else if (is("rewrite") && len > 0) {
        proxy_set_buffer_bytes(PW_UPSTREAM_DATA, 0, 0, "<", 1);
        proxy_set_buffer_bytes(PW_UPSTREAM_DATA, len + 1, 0, ">", 1);
    } else if (is("close-on") && data && len >= 4) {
        for (size_t i = 0; i + 4 <= len; i++) if (memcmp(data + i, "LEAK", 4) == 0) {
            trace(ctx, "close-upstream");
            proxy_close_stream(PW_STREAM_UPSTREAM);
            result = PW_PAUSE;
            break;
        }
    }
    if (result == PW_CONTINUE && !is("observe")) shared_add("tcp_bytes_up", (long)len);
    free(data);
    return result;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
    proxy_set_tick_period_milliseconds(0);
    for (int i = 0; i < MAX_CONNECTIONS; i++) {
        if (conns[i].held != 1) continue;
        conns[i].held = 2;
        if (proxy_set_effective_context(conns[i].id) != PW_OK) continue;
        /* The held bytes are still the filter's to edit from another callback (hold-once
         * adds a mark; pause-new holds nothing yet). */
        char event[64] = "";
        if (strcmp(mode_of(conns[i].id), "hold-once") != 0) {
            size_t held = 0; uint32_t flags = 0;
            pw_status got = proxy_get_buffer_status(PW_DOWNSTREAM_DATA, &held, &flags);
            pw_status added = proxy_set_buffer_bytes(PW_DOWNSTREAM_DATA, 0xFFFFFFFF, 0, "!", 1);
            snprintf(event, sizeof event, "held:%d:%u append:%d ", got, (unsigned)held, added);
        }
        pw_status s = proxy_continue_stream(PW_STREAM_DOWNSTREAM);
        snprintf(event + strlen(event), sizeof event - strlen(event), "resume:%d", s);
        trace(conns[i].id, event);
    }
}

PW_EXPORT(proxy_on_downstream_connection_close) void on_downstream_close(uint32_t ctx, uint32_t peer) {
    char event[32];
    snprintf(event, sizeof event, "downclose(%u)", peer);
    trace(ctx, event);
}

PW_EXPORT(proxy_on_upstream_connection_close) void on_upstream_close(uint32_t ctx, uint32_t peer) {
    char event[32];
    snprintf(event, sizeof event, "upclose(%u)", peer);
    trace(ctx, event);
}

PW_EXPORT(proxy_on_done) uint32_t on_done(uint32_t ctx) {
    trace(ctx, "done");
    return 1;
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) {
    current_ctx = ctx;
    if (is("report")) return;
    trace(ctx, "log");
    trace_property(ctx, "cluster", "xds\0cluster_name", 16);
    trace_property(ctx, "upstream", "upstream\0address", 16);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
    current_ctx = ctx;
    if (is("report")) return;
    uint32_t slot = ctx % MAX_CONNECTIONS;
    if (conns[slot].id != ctx) return;
    trace(ctx, "delete");
    conns[slot].trace[conns[slot].len > 0 ? conns[slot].len - 1 : 0] = '\n';
    shared_append("trace", conns[slot].trace);
    conns[slot].id = 0;
}

/* The HTTP side (report): what every connection left in shared data. */
PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t end) {
    uint32_t cas = 0;
    current_ctx = ctx;
    if (is("report-ids")) {
        char *tcp = pw_shared_get("last_tcp_connection_id", &cas);
        char body[96];
        snprintf(body, sizeof body, "http=%llu tcp=%s", (unsigned long long)connection_id(), tcp ? tcp : "-");
        free(tcp);
        pw_send_response(200, body, NULL, NULL, 0);
        return PW_PAUSE;
    }
    char *connections = pw_shared_get("tcp_connections", &cas);
    char *down = pw_shared_get("tcp_bytes_down", &cas);
    char *up = pw_shared_get("tcp_bytes_up", &cas);
    char *all = pw_shared_get("trace", &cas);
    size_t size = 128 + (all ? strlen(all) : 0);
    char *body = malloc(size);
    snprintf(body, size, "connections=%s down=%s up=%s\n%s", connections ? connections : "0", down ? down : "0", up ? up : "0", all ? all : "");
    pw_send_response(200, body, NULL, NULL, 0);
    free(body); free(connections); free(down); free(up); free(all);
    return PW_PAUSE;
}
