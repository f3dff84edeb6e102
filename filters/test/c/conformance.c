/*
 * The host conformance filter: one filter that exercises every hostcall family, chosen per
 * request by the `x-test` request header. Used by the Proxy-Wasm integration tests.
 */
#include <stdio.h>
#include "../../sdk/c/proxy_wasm.h"

PW_MODULE_BOILERPLATE

#define MAX_CONTEXTS 4096
static char configuration[256];
static uint32_t requests_metric, gauge_metric, latency_metric;
static uint32_t queue_id;
/* Per stream: the x-test mode, and the callout token if one is pending. */
static char modes[MAX_CONTEXTS][32];
static uint32_t callout_stream[64];
/* ten-callouts: which callouts belong to a response fan-out, and how many are outstanding. */
static uint8_t callout_fanout[64];
static uint32_t fanout_pending[MAX_CONTEXTS];
static uint32_t response_chunks[MAX_CONTEXTS];

static const char *mode(uint32_t ctx) { return modes[ctx % MAX_CONTEXTS]; }
static int is(uint32_t ctx, const char *m) { return strcmp(mode(ctx), m) == 0; }

/* Two ways to run out of stack. "recurse-memory": each frame keeps a buffer on C's shadow
   stack in linear memory, which runs past the start of memory. "recurse": frames hold only
   Wasm locals and the call is indirect (no tail-call elimination), so the engine's own call
   stack runs out. */
static uint32_t recurse_memory(uint32_t n) {
    volatile char frame[256];
    frame[n % sizeof frame] = (char)n;
    return recurse_memory(n + 1) + frame[(n * 7) % sizeof frame];
}
static uint32_t recurse_calls(uint32_t n);
static uint32_t (*volatile recurse_next)(uint32_t) = recurse_calls;
static uint32_t recurse_calls(uint32_t n) { return recurse_next(n + 1) + 1; }

static void set_shared_counter(const char *key, int delta) {
    /* Increment with compare-and-swap, retrying on contention from other workers. */
    for (int attempt = 0; attempt < 100; attempt++) {
        char *value = NULL; size_t len = 0; uint32_t cas = 0;
        long current = 0;
        if (proxy_get_shared_data(key, strlen(key), &value, &len, &cas) == PW_OK) {
            char tmp[32] = {0};
            memcpy(tmp, value, len < 31 ? len : 31);
            current = atol(tmp);
            free(value);
        }
        char next[32];
        snprintf(next, sizeof next, "%ld", current + delta);
        if (proxy_set_shared_data(key, strlen(key), next, strlen(next), cas) == PW_OK) return;
    }
}

static long get_shared_counter(const char *key) {
    char *value = NULL; size_t len = 0; uint32_t cas = 0;
    if (proxy_get_shared_data(key, strlen(key), &value, &len, &cas) != PW_OK) return -1;
    char tmp[32] = {0};
    memcpy(tmp, value, len < 31 ? len : 31);
    free(value);
    return atol(tmp);
}

/* A property as the tests compare it: "status:hex" (values may be binary), cut to fit `out`. */
static void property_status_hex(const char *path, size_t path_len, char *out, size_t cap) {
    char *value = NULL; size_t n = 0;
    pw_status st = proxy_get_property(path, path_len, &value, &n);
    int o = snprintf(out, cap, "%d:", st);
    for (size_t b = 0; b < n && o < (int)cap - 3; b++) o += snprintf(out + o, cap - o, "%02x", (unsigned char)value[b]);
    free(value);
}

PW_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) {
    pw_log(PW_INFO, "conformance filter: vm start");
    return 1;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    size_t len = 0;
    char *conf = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    if (conf) {
        snprintf(configuration, sizeof configuration, "%s", conf);
        free(conf);
    }
    if (strcmp(configuration, "reject") == 0) return 0;
    if (strcmp(configuration, "trap-on-configure") == 0) __builtin_trap();
    /* Create the shared counter before any traffic: CAS 0 means "unconditional", so two
       workers racing to create a missing key could both write (an ABI property, not a bug). */
    if (get_shared_counter("hits") < 0) proxy_set_shared_data("hits", 4, "0", 1, 0);
    proxy_define_metric(PW_COUNTER, "requests", 8, &requests_metric);
    proxy_define_metric(PW_GAUGE, "in_flight", 9, &gauge_metric);
    proxy_define_metric(PW_HISTOGRAM, "body_bytes", 10, &latency_metric);
    /* A Wasm service feeding the queue (configuration "service-feed") does not own it. */
    if (!strstr(configuration, "service-feed")) proxy_register_shared_queue("events", 6, &queue_id);
    if (strstr(configuration, "tick")) proxy_set_tick_period_milliseconds(20);
    return 1;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
    set_shared_counter("ticks", 1);
    if (strstr(configuration, "service-feed")) {
        /* A Wasm service (envoy.bootstrap.wasm): feeds the queue the HTTP filters registered. */
        uint32_t id = 0;
        if (proxy_resolve_shared_queue("", 0, "events", 6, &id) == PW_OK) proxy_enqueue_shared_queue(id, "from-service", 12);
    }
}

PW_EXPORT(proxy_on_queue_ready) void on_queue_ready(uint32_t root, uint32_t id) {
    char *value = NULL; size_t len = 0;
    while (proxy_dequeue_shared_queue(id, &value, &len) == PW_OK) {
        proxy_set_shared_data("last_event", 10, value, len, 0);
        free(value);
    }
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) {
    if (parent != 0) { modes[ctx % MAX_CONTEXTS][0] = 0; response_chunks[ctx % MAX_CONTEXTS] = 0; }
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    char *m = pw_header(PW_REQUEST_HEADERS, "x-test");
    snprintf(modes[ctx % MAX_CONTEXTS], 32, "%s", m ? m : "");
    free(m);
    proxy_increment_metric(requests_metric, 1);
    proxy_increment_metric(gauge_metric, 1);
    pw_add_header(PW_REQUEST_HEADERS, "x-c-filter", "seen");
    pw_add_header(PW_REQUEST_HEADERS, "x-c-config", configuration);

    if (is(ctx, "many-headers")) {
        /* 10,000 added headers: cheap per call for the host, and charged to the budget. */
        char name[] = "x-many-00000";
        for (int i = 0; i < 10000; i++) {
            for (int d = 0, n = i; d < 5; d++, n /= 10) name[11 - d] = (char)('0' + n % 10);
            proxy_add_header_map_value(PW_REQUEST_HEADERS, name, 12, "v", 1);
        }
        return PW_CONTINUE;
    }
    if (is(ctx, "replace-many")) {
        /* Replacing distinct names scans a growing map: quadratic host work, which the
           budget must stop. */
        char name[32];
        for (int i = 0; i < 20000; i++) {
            snprintf(name, sizeof name, "x-r-%d", i);
            pw_replace_header(PW_REQUEST_HEADERS, name, "v");
        }
        return PW_CONTINUE;
    }
    if (is(ctx, "grow")) {
        /* Grow memory a page at a time up to the cap: each grow copies the memory. */
        while (__builtin_wasm_memory_grow(0, 1) != (size_t)-1) {}
        return PW_CONTINUE;
    }
    if (strncmp(mode(ctx), "local-status=", 13) == 0) {
        /* A local response with whatever status the test names (-1, 0, 100, 4294967295...):
           the host answers BadArgument for anything but 200-599 and the request goes on,
           carrying the result so the test can see it. */
        uint32_t status = (uint32_t)strtoll(mode(ctx) + 13, NULL, 10);
        pw_status s = proxy_send_local_response(status, "", 0, "local\n", 6, NULL, 0, -1);
        char b[16]; snprintf(b, sizeof b, "%d", s);
        if (s != PW_OK) pw_add_header(PW_REQUEST_HEADERS, "x-local-result", b);
        return PW_CONTINUE;
    }
    if (is(ctx, "local")) {
        const char *k[] = {"x-denied"}, *v[] = {"yes"};
        pw_send_response(403, "denied by c\n", k, v, 1);
        return PW_CONTINUE;  /* the host must stop anyway: a local response was sent */
    }
    if (is(ctx, "trap")) __builtin_trap();
    if (is(ctx, "loop")) { volatile int x = 1; while (x) {} }
    /* Recursion without end must stop as a trap, never in the worker thread's own stack. */
    if (is(ctx, "recurse")) { volatile uint32_t depth = recurse_calls(1); (void)depth; }
    if (is(ctx, "recurse-memory")) { volatile uint32_t depth = recurse_memory(1); (void)depth; }
    if (is(ctx, "oob")) {
        pw_status s = proxy_log(PW_INFO, (const char *)0xFFFFFFF0, 100);
        char buf[16]; snprintf(buf, sizeof buf, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-oob-status", buf);
        s = proxy_get_header_map_value(PW_REQUEST_HEADERS, "x-test", 6, (char **)0x7FFFFFF0, (size_t *)0x7FFFFFF4);
        snprintf(buf, sizeof buf, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-oob-out-status", buf);
    }
    if (is(ctx, "property")) {
        size_t len = 0;
        char *v = pw_property("request\0path", 12, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-path", v ? v : "(none)"); free(v);
        v = pw_property("request\0method", 14, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-method", v ? v : "(none)"); free(v);
        v = pw_property("plugin_name", 11, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-plugin", v ? v : "(none)"); free(v);
        v = pw_property("source\0address", 14, &len);
        if (v) { char *colon = strrchr(v, ':'); if (colon) *colon = 0; }  /* the port varies per connection */
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-source", v ? v : "(none)"); free(v);
        v = pw_property("xds\0route_name", 14, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-route", v ? v : "(none)"); free(v);
        v = pw_property("route_name", 10, &len);  /* removed in Envoy 1.33; an alias in Sluice */
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-legacy-route", v ? v : "(none)"); free(v);
        v = pw_property("request\0headers\0x-test", 22, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-header", v ? v : "(none)"); free(v);
        uint64_t port = 0;
        v = pw_property("source\0port", 11, &len);
        if (v && len == 8) memcpy(&port, v, 8);
        free(v);
        char buf[32]; snprintf(buf, sizeof buf, "%s", port > 0 ? "int64" : "bad");
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-port-encoding", buf);
        proxy_set_property("my_state", 8, "from-c", 6);
        v = pw_property("my_state", 8, &len);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-state", v ? v : "(none)"); free(v);
        pw_status s = proxy_get_property("nope\0nothing", 12, (char **)&v, &len);
        snprintf(buf, sizeof buf, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-prop-missing", buf);
    }
    if (is(ctx, "shared")) {
        set_shared_counter("hits", 1);
        char buf[32]; snprintf(buf, sizeof buf, "%ld", get_shared_counter("hits"));
        pw_add_header(PW_REQUEST_HEADERS, "x-hits", buf);
    }
    if (is(ctx, "grpc-read")) {
        /* The gRPC statuses counted by on_log so far: OK (0) and NOT_FOUND (5). */
        const char *keys[] = {"x-grpc-ok", "x-grpc-not-found"};
        static char values[2][24];
        snprintf(values[0], sizeof values[0], "%ld", get_shared_counter("grpc_0"));
        snprintf(values[1], sizeof values[1], "%ld", get_shared_counter("grpc_5"));
        const char *vals[] = {values[0], values[1]};
        pw_send_response(200, "grpc-read\n", keys, vals, 2);
        return PW_PAUSE;
    }
    if (is(ctx, "shared-read")) {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("hits"));
        pw_add_header(PW_REQUEST_HEADERS, "x-hits", buf);
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("ticks"));
        pw_add_header(PW_REQUEST_HEADERS, "x-ticks", buf);
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("logged"));
        pw_add_header(PW_REQUEST_HEADERS, "x-logged", buf);
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("clock_ok"));
        pw_add_header(PW_REQUEST_HEADERS, "x-clock-ok", buf);
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("flags_256"));  /* NR */
        pw_add_header(PW_REQUEST_HEADERS, "x-flags-nr", buf);
        snprintf(buf, sizeof buf, "%ld", get_shared_counter("flags_32"));   /* UF */
        pw_add_header(PW_REQUEST_HEADERS, "x-flags-uf", buf);
        uint32_t level = 99;
        proxy_get_log_level(&level);
        snprintf(buf, sizeof buf, "%u", level);
        pw_add_header(PW_REQUEST_HEADERS, "x-log-level", buf);
        char *value = NULL; size_t len = 0; uint32_t cas = 0;
        if (proxy_get_shared_data("last_event", 10, &value, &len, &cas) == PW_OK) {
            char ev[64] = {0}; memcpy(ev, value, len < 63 ? len : 63); free(value);
            pw_add_header(PW_REQUEST_HEADERS, "x-last-event", ev);
        }
    }
    if (is(ctx, "meta-props") || is(ctx, "meta-props-all")) {
        /* Metadata and node properties, hex-encoded (values may be binary): header
           x-meta-N = status:hex for the N-th path below. */
        static const char *paths[] = {
            "xds\0node\0id", "xds\0node\0cluster", "xds\0node\0metadata\0team",
            "xds\0route_metadata\0filter_metadata\0acme\0tier", "xds\0route_metadata\0filter_metadata\0acme\0weight",
            "xds\0route_metadata\0filter_metadata\0acme\0canary", "xds\0cluster_metadata\0filter_metadata\0acme\0region",
            "xds\0listener_metadata\0filter_metadata\0acme\0zone", "xds\0route_metadata\0filter_metadata\0acme",
            "xds\0route_metadata", "xds\0node\0metadata", "xds\0cluster_metadata\0filter_metadata\0acme\0missing",
        };
        static const size_t lens[] = {11, 16, 22, 44, 46, 46, 48, 47, 39, 18, 17, 49};
        for (int k = 0; k < 12; k++) {
            /* Whole structs and messages: Envoy's map order is unspecified, so only with -all. */
            if ((k == 8 || k == 9) && !is(ctx, "meta-props-all")) continue;
            char out[600];
            property_status_hex(paths[k], lens[k], out, sizeof out);
            char name[16]; snprintf(name, sizeof name, "x-meta-%d", k);
            pw_add_header(PW_REQUEST_HEADERS, name, out);
        }
    }
    if (is(ctx, "tls-props")) {
        /* The connection's TLS properties and the request's protocol, answered directly:
           header x-p-N = status:hex for the N-th path below (hex: a bool is one byte). */
        static const char *paths[] = {
            "connection\0mtls", "connection\0tls_version", "connection\0requested_server_name",
            "connection\0subject_peer_certificate", "connection\0subject_local_certificate",
            "connection\0uri_san_peer_certificate", "connection\0uri_san_local_certificate",
            "connection\0dns_san_peer_certificate", "connection\0dns_san_local_certificate",
            "connection\0sha256_peer_certificate_digest", "request\0protocol", "request\0scheme",
        };
        static const size_t lens[] = {15, 22, 32, 35, 36, 35, 36, 35, 36, 41, 16, 14};
        static char values[12][300];
        static char names[12][8];
        const char *keys[12], *vals[12];
        for (int k = 0; k < 12; k++) {
            property_status_hex(paths[k], lens[k], values[k], sizeof values[k]);
            snprintf(names[k], sizeof names[k], "x-p-%d", k);
            keys[k] = names[k];
            vals[k] = values[k];
        }
        pw_send_response(200, "tls-props\n", keys, vals, 12);
        return PW_PAUSE;
    }
    if (is(ctx, "tagged-metric")) {
        /* A metric whose name carries a tag for stats_tags to extract (the only way the ABI
           can give a metric labels in Envoy). */
        uint32_t id = 0;
        if (proxy_define_metric(PW_COUNTER, "hits_route=api", 14, &id) == PW_OK) proxy_increment_metric(id, 1);
    }
    if (is(ctx, "families")) {
        /* One deterministic answer per hostcall family that leaves no other trace. */
        char buf[64];
        snprintf(buf, sizeof buf, "%d", proxy_log(PW_DEBUG, "families", 8));
        pw_add_header(PW_REQUEST_HEADERS, "x-log", buf);
        uint64_t now = 0;
        proxy_get_current_time_nanoseconds(&now);
        pw_add_header(PW_REQUEST_HEADERS, "x-clock-sane", now > 1600000000ull * 1000000000ull ? "yes" : "no");
        uint64_t count = 0;
        snprintf(buf, sizeof buf, "%d", proxy_get_metric(requests_metric, &count));
        pw_add_header(PW_REQUEST_HEADERS, "x-metric-status", buf);
        snprintf(buf, sizeof buf, "%d", proxy_increment_metric(requests_metric, 0));
        pw_add_header(PW_REQUEST_HEADERS, "x-metric-zero-delta", buf);
        size_t blen = 0; uint32_t flags = 9;
        snprintf(buf, sizeof buf, "%d/%zu", proxy_get_buffer_status(PW_PLUGIN_CONFIGURATION, &blen, &flags), blen);
        pw_add_header(PW_REQUEST_HEADERS, "x-config-buffer-outside-configure", buf);
        size_t vlen = 0;
        char *vm = pw_buffer_bytes(PW_VM_CONFIGURATION, &vlen);
        snprintf(buf, sizeof buf, "%zu", vlen);
        free(vm);
        pw_add_header(PW_REQUEST_HEADERS, "x-vm-config-bytes", buf);
        snprintf(buf, sizeof buf, "%d", proxy_set_effective_context(999999));
        pw_add_header(PW_REQUEST_HEADERS, "x-bad-context", buf);
        snprintf(buf, sizeof buf, "%d", proxy_done());
        pw_add_header(PW_REQUEST_HEADERS, "x-done-not-pending", buf);
        uint32_t qid = 0;
        snprintf(buf, sizeof buf, "%d", proxy_resolve_shared_queue("", 0, "no-such-queue", 13, &qid));
        pw_add_header(PW_REQUEST_HEADERS, "x-missing-queue", buf);
        char *v = NULL; size_t vl = 0; uint32_t cas = 0;
        snprintf(buf, sizeof buf, "%d", proxy_get_shared_data("never-set", 9, &v, &vl, &cas));
        pw_add_header(PW_REQUEST_HEADERS, "x-missing-key", buf);
        snprintf(buf, sizeof buf, "%d", proxy_continue_stream(7));
        pw_add_header(PW_REQUEST_HEADERS, "x-bad-stream-type", buf);
    }
    if (is(ctx, "queue-read")) {
        char *value = NULL; size_t len = 0; uint32_t cas = 0;
        if (proxy_get_shared_data("last_event", 10, &value, &len, &cas) == PW_OK) {
            char ev[64] = {0}; memcpy(ev, value, len < 63 ? len : 63); free(value);
            pw_add_header(PW_REQUEST_HEADERS, "x-last-event", ev);
        }
    }
    if (is(ctx, "enqueue")) {
        uint32_t id = 0;
        if (proxy_resolve_shared_queue("", 0, "events", 6, &id) == PW_OK) proxy_enqueue_shared_queue(id, "hello-queue", 11);
    }
    if (is(ctx, "headers")) {
        pw_replace_header(PW_REQUEST_HEADERS, "user-agent", "conformance");
        pw_remove_header(PW_REQUEST_HEADERS, "x-remove-me");
        char *pairs = NULL; size_t len = 0;
        proxy_get_header_map_pairs(PW_REQUEST_HEADERS, &pairs, &len);
        uint32_t count = 0; if (len >= 4) memcpy(&count, pairs, 4);
        free(pairs);
        char buf[16]; snprintf(buf, sizeof buf, "%u", count);
        pw_add_header(PW_REQUEST_HEADERS, "x-pair-count", buf);
        char *missing = pw_header(PW_REQUEST_HEADERS, "x-absent");
        pw_add_header(PW_REQUEST_HEADERS, "x-absent-is-null", missing ? "no" : "yes");
        free(missing);
    }
    if (is(ctx, "rewrite-path")) {
        pw_replace_header(PW_REQUEST_HEADERS, ":path", "/rewritten");
    }
    /* StopAllIterationAndBuffer / AndWatermark: everything after the headers waits, unseen. */
    if (is(ctx, "stop-all-buffer")) return 3;
    if (is(ctx, "stop-all-watermark")) return 4;
    if (is(ctx, "upper-body")) {
        /* Hold the headers and read the whole body before the upstream sees anything. */
        pw_remove_header(PW_REQUEST_HEADERS, "content-length");
        return PW_PAUSE;
    }
    if (is(ctx, "callout")) {
        const char *k[] = {":method", ":path", ":authority", "x-from"}, *v[] = {"GET", "/authz", "authz.local", "conformance"};
        size_t hlen = 0;
        char *h = pw_serialize_pairs(k, v, 4, &hlen);
        uint32_t token = 0;
        pw_status s = proxy_http_call("authz", 5, h, hlen, "", 0, "", 0, 2000, &token);
        free(h);
        if (s != PW_OK) {
            const char *kk[] = {"x-callout-status"}; char b[8]; snprintf(b, sizeof b, "%d", s); const char *vv[] = {b};
            pw_send_response(500, "callout failed\n", kk, vv, 1);
            return PW_PAUSE;
        }
        callout_stream[token % 64] = ctx;
        return PW_PAUSE;
    }
    if (is(ctx, "callout-bad-cluster")) {
        const char *k[] = {":method", ":path", ":authority"}, *v[] = {"GET", "/", "x"};
        size_t hlen = 0; char *h = pw_serialize_pairs(k, v, 3, &hlen);
        uint32_t token = 0;
        pw_status s = proxy_http_call("no-such-cluster", 15, h, hlen, "", 0, "", 0, 1000, &token);
        free(h);
        char b[8]; snprintf(b, sizeof b, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-callout-status", b);
    }
    if (is(ctx, "foreign")) {
        char *out = NULL; size_t len = 0;
        pw_status s = proxy_call_foreign_function("compress", 8, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40, &out, &len);
        char *back = NULL; size_t blen = 0;
        pw_status s2 = proxy_call_foreign_function("uncompress", 10, out, len, &back, &blen);
        char b[64]; snprintf(b, sizeof b, "%d/%d/%zu", s, s2, blen);
        pw_add_header(PW_REQUEST_HEADERS, "x-foreign", b);
        free(out); free(back);
        s = proxy_call_foreign_function("no_such_function", 16, "", 0, &out, &len);
        snprintf(b, sizeof b, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-foreign-missing", b);
        uint32_t code = 99; char *msg = NULL; size_t mlen = 0;
        proxy_get_status(&code, &msg, &mlen);
        free(msg);
    }
    if (is(ctx, "grpc")) {
        /* A service that names no cluster (and is no GrpcService proto): ParseFailure (4), as Envoy. */
        uint32_t token = 0;
        pw_status s = proxy_grpc_call("c", 1, "s", 1, "m", 1, "", 0, "", 0, 100, &token);
        char b[8]; snprintf(b, sizeof b, "%d", s);
        pw_add_header(PW_REQUEST_HEADERS, "x-grpc-status", b);
    }
    return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
    if (is(ctx, "upper-body")) {
        if (!eos) return PW_PAUSE;  /* keep buffering until the whole body is here */
        size_t len = 0;
        char *body = pw_buffer_bytes(PW_REQUEST_BODY, &len);
        for (size_t i = 0; i < len; i++) if (body[i] >= 'a' && body[i] <= 'z') body[i] -= 32;
        proxy_set_buffer_bytes(PW_REQUEST_BODY, 0, len, body, len);
        free(body);
        return PW_CONTINUE;
    }
    if (is(ctx, "body-local") && eos) {
        size_t len = 0;
        char *body = pw_buffer_bytes(PW_REQUEST_BODY, &len);
        char reply[128]; snprintf(reply, sizeof reply, "saw %zu body bytes\n", len);
        free(body);
        pw_send_response(200, reply, NULL, NULL, 0);
        return PW_CONTINUE;
    }
    if (is(ctx, "body-local")) return PW_PAUSE;
    return PW_CONTINUE;
}

PW_EXPORT(proxy_on_http_call_response) void on_http_call_response(uint32_t root, uint32_t token, uint32_t nheaders, uint32_t body_size, uint32_t ntrailers) {
    uint32_t stream = callout_stream[token % 64];
    if (proxy_set_effective_context(stream) != PW_OK) return;  /* the stream is gone */
    if (callout_fanout[token % 64]) {
        /* The public SDK pattern: the response waits until every callout has answered. */
        callout_fanout[token % 64] = 0;
        if (--fanout_pending[stream % MAX_CONTEXTS] == 0) {
            pw_add_header(PW_RESPONSE_HEADERS, "x-callouts", "all answered");
            proxy_continue_stream(PW_STREAM_RESPONSE);
        }
        return;
    }
    if (nheaders == 0) {
        pw_send_response(503, "authz unavailable\n", NULL, NULL, 0);
        return;
    }
    char *status = pw_header(PW_HTTP_CALL_RESPONSE_HEADERS, ":status");
    size_t len = 0;
    char *body = pw_buffer_bytes(PW_HTTP_CALL_RESPONSE_BODY, &len);
    if (status && strcmp(status, "200") == 0) {
        pw_add_header(PW_REQUEST_HEADERS, "x-authz-status", status);
        pw_add_header(PW_REQUEST_HEADERS, "x-authz-body-bytes", len > 0 ? "some" : "none");
        proxy_continue_stream(PW_STREAM_REQUEST);
    } else {
        const char *k[] = {"x-authz-status"}, *v[] = {status ? status : "?"};
        pw_send_response(403, "denied by authz\n", k, v, 1);
    }
    free(status); free(body);
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    pw_add_header(PW_RESPONSE_HEADERS, "x-c-response", "seen");
    char *status = pw_header(PW_RESPONSE_HEADERS, ":status");
    pw_add_header(PW_RESPONSE_HEADERS, "x-c-saw-status", status ? status : "?");
    /* Hold the upstream's response (StopAllIterationAndWatermark) and never release it;
       Sluice's own answers pass. */
    if (is(ctx, "hold-response") && status && strcmp(status, "200") == 0) { free(status); return 4; }
    free(status);
    if (is(ctx, "append-response")) pw_remove_header(PW_RESPONSE_HEADERS, "content-length");
    if (is(ctx, "upstream-tls-props")) {
        /* The upstream connection's TLS properties, once its response arrived: header
           x-up-N = status:hex for the N-th path below. */
        static const char *paths[] = {
            "upstream\0tls_version", "upstream\0subject_peer_certificate", "upstream\0subject_local_certificate",
            "upstream\0dns_san_peer_certificate", "upstream\0uri_san_peer_certificate",
            "upstream\0sha256_peer_certificate_digest",
        };
        static const size_t lens[] = {20, 33, 34, 33, 33, 39};
        for (int k = 0; k < 6; k++) {
            char out[300];
            property_status_hex(paths[k], lens[k], out, sizeof out);
            char name[16]; snprintf(name, sizeof name, "x-up-%d", k);
            pw_add_header(PW_RESPONSE_HEADERS, name, out);
        }
    }
    if (is(ctx, "ten-callouts")) {
        /* Pause the response while ten callouts run (each answers after 100 ms). */
        const char *k[] = {":method", ":path", ":authority"}, *v[] = {"GET", "/slow/100", "authz.local"};
        size_t hlen = 0;
        char *h = pw_serialize_pairs(k, v, 3, &hlen);
        fanout_pending[ctx % MAX_CONTEXTS] = 0;
        for (int i = 0; i < 10; i++) {
            uint32_t token = 0;
            if (proxy_http_call("authz", 5, h, hlen, "", 0, "", 0, 5000, &token) != PW_OK) continue;
            callout_stream[token % 64] = ctx;
            callout_fanout[token % 64] = 1;
            fanout_pending[ctx % MAX_CONTEXTS]++;
        }
        free(h);
        return PW_PAUSE;
    }
    if (strncmp(mode(ctx), "set-status=", 11) == 0) {
        /* Sets :status to the raw text the test names; the result code goes to the client. */
        pw_status s = pw_replace_header(PW_RESPONSE_HEADERS, ":status", mode(ctx) + 11);
        char b[16]; snprintf(b, sizeof b, "%d", s);
        pw_add_header(PW_RESPONSE_HEADERS, "x-set-status-result", b);
    }
    return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
    response_chunks[ctx % MAX_CONTEXTS]++;
    proxy_record_metric(latency_metric, size);
    if (is(ctx, "append-response")) {
        if (!eos) return PW_PAUSE;
        proxy_set_buffer_bytes(PW_RESPONSE_BODY, 0xFFFFFFFF, 0, " [appended by c]", 16);
    }
    return PW_CONTINUE;
}

/* Counts, in shared data under "<prefix>_<value>", the int64 value of a property. */
static void count_int_property(const char *path, size_t path_len, const char *prefix) {
    size_t len = 0;
    char *value = pw_property(path, path_len, &len);
    if (value && len == 8) {
        int64_t v = 0; memcpy(&v, value, 8);
        char key[32]; snprintf(key, sizeof key, "%s_%lld", prefix, (long long)v);
        set_shared_counter(key, 1);
    }
    free(value);
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) {
    set_shared_counter("logged", 1);
    uint64_t now = 0;
    if (proxy_get_current_time_nanoseconds(&now) == PW_OK && now > 1600000000ull * 1000000000ull) set_shared_counter("clock_ok", 1);
    count_int_property("response\0code", 13, "logged");
    /* Envoy's response flags as the stream ended, counted per value. */
    count_int_property("response\0flags", 14, "flags");
    /* gRPC statuses the streams ended with (response.grpc_status), counted per value. */
    count_int_property("response\0grpc_status", 20, "grpc");
}

PW_EXPORT(proxy_on_done) uint32_t on_done(uint32_t ctx) {
    if (ctx != 1) proxy_increment_metric(gauge_metric, -1);
    return 1;
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {}
