/*
 * gRPC callouts for the tests: an HTTP filter that, per request path, calls the test gRPC
 * server (Tests/support/grpc_peer.py, service sluice.test.Echo) from its root context and
 * answers the request with everything the callout delivered, in order:
 *   /unary/<text>        Unary call, metadata x-from: wasm
 *   /meta                Meta: the metadata the server received (x-from: wasm sent)
 *   /fail                Fail (NOT_FOUND "no such thing")
 *   /hold/<timeout>      a call the server never answers, with a timeout (the cut server's
 *                        Hold: only the proxy's deadline ends it)
 *   /unknown             a call naming no cluster (the hostcall's status)
 *   /dead                a call to a cluster nothing listens on
 *   /count/<n>           server stream: Count
 *   /sum                 client stream: three messages, then proxy_grpc_close
 *   /chat                bidirectional: two messages, half-close, the replies
 *   /cut                 a stream to a server that drops the connection mid-stream
 *   /many                a unary call answered with three messages
 *   /cancel              a Slow(300) call cancelled at once; answered after 600 ms with the
 *                        callbacks that arrived for it (none expected)
 * Cluster names: plugin configuration "<grpc cluster> <dead cluster> <cut cluster>".
 */
#include "../../sdk/c/proxy_wasm.h"
#include <stdio.h>

PW_MODULE_BOILERPLATE

static char cluster[64], dead[64], cut[64];
static const char *service = "sluice.test.Echo";

#define MAX_CALLS 64
static struct { uint32_t token, stream; char log[2048]; size_t len; int cancelled; } calls[MAX_CALLS];
static uint32_t waiting_stream;  /* /cancel: answered from the tick */
static int cancelled_slot = -1;

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    size_t len = 0;
    char *config = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    if (!config) return 0;
    sscanf(config, "%63s %63s %63s", cluster, dead, cut);
    free(config);
    return 1;
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t root) {}

static int slot_of(uint32_t token) {
    for (int i = 0; i < MAX_CALLS; i++) if (calls[i].token == token && calls[i].stream) return i;
    return -1;
}

static int new_slot(uint32_t token, uint32_t stream) {
    for (int i = 0; i < MAX_CALLS; i++) if (!calls[i].stream) {
        calls[i].token = token; calls[i].stream = stream; calls[i].len = 0; calls[i].log[0] = 0; calls[i].cancelled = 0;
        return i;
    }
    return -1;
}

static void note(int slot, const char *text) {
    size_t n = strlen(text);
    if (calls[slot].len + n + 2 >= sizeof calls[slot].log) return;
    memcpy(calls[slot].log + calls[slot].len, text, n);
    calls[slot].len += n;
    calls[slot].log[calls[slot].len++] = '\n';
    calls[slot].log[calls[slot].len] = 0;
}

static void answer(uint32_t stream, const char *body) {
    if (proxy_set_effective_context(stream) != PW_OK) return;
    pw_send_response(200, body, NULL, NULL, 0);
}

static void finish(int slot) {
    answer(calls[slot].stream, calls[slot].log);
    calls[slot].stream = 0;
}

/* A started callout is tracked for its stream; a refused one is answered with the status. */
static uint32_t started(const char *kind, pw_status s, uint32_t token, uint32_t stream) {
    if (s != PW_OK) {
        char body[64];
        snprintf(body, sizeof body, "%s status %d\n", kind, s);
        pw_send_response(200, body, NULL, NULL, 0);
        return 0;
    }
    new_slot(token, stream);
    return token;
}

static uint32_t start_call(uint32_t stream, const char *target, const char *method, const char *message, uint32_t timeout) {
    const char *keys[] = {"x-from"}, *values[] = {"wasm"};
    uint32_t token = 0;
    return started("call", pw_grpc_call(target, service, method, keys, values, 1, message, strlen(message), timeout, &token), token, stream);
}

static uint32_t start_stream(uint32_t stream, const char *target, const char *method) {
    uint32_t token = 0;
    return started("stream", pw_grpc_stream(target, service, method, NULL, NULL, 0, &token), token, stream);
}

static void send_message(uint32_t token, const char *text, int end) {
    pw_status s = proxy_grpc_send(token, text, strlen(text), end);
    int slot = slot_of(token);
    if (slot >= 0 && s != PW_OK) {
        char line[64];
        snprintf(line, sizeof line, "send status %d", s);
        note(slot, line);
    }
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t end) {
    char *path = pw_header(PW_REQUEST_HEADERS, ":path");
    if (!path) return PW_CONTINUE;
    char arg[256] = "";
    unsigned b = 0;
    if (sscanf(path, "/unary/%255s", arg) == 1) start_call(ctx, cluster, "Unary", arg, 5000);
    else if (strcmp(path, "/fail") == 0) start_call(ctx, cluster, "Fail", "", 5000);
    else if (strcmp(path, "/meta") == 0) start_call(ctx, cluster, "Meta", "", 5000);
    else if (sscanf(path, "/hold/%u", &b) == 1) start_call(ctx, cut, "Hold", "", b);
    else if (strcmp(path, "/unknown") == 0) start_call(ctx, "no_such_cluster", "Unary", "x", 1000);
    else if (strcmp(path, "/dead") == 0) start_call(ctx, dead, "Unary", "x", 5000);
    else if (strcmp(path, "/many") == 0) start_call(ctx, cut, "Many", "x", 5000);
    else if (sscanf(path, "/count/%255s", arg) == 1) {
        uint32_t t = start_stream(ctx, cluster, "Count");
        if (t) send_message(t, arg, 1);
    } else if (strcmp(path, "/sum") == 0) {
        uint32_t t = start_stream(ctx, cluster, "Sum");
        if (t) { send_message(t, "one", 0); send_message(t, "two", 0); send_message(t, "three", 0); proxy_grpc_close(t); }
    } else if (strcmp(path, "/chat") == 0) {
        uint32_t t = start_stream(ctx, cluster, "Chat");
        if (t) { send_message(t, "hello", 0); send_message(t, "grpc", 1); }
    } else if (strcmp(path, "/cut") == 0) {
        uint32_t t = start_stream(ctx, cut, "Count");
        if (t) send_message(t, "5", 1);
    } else if (strcmp(path, "/cancel") == 0) {
        uint32_t t = start_call(ctx, cluster, "Slow", "300", 5000);
        if (t) {
            int slot = slot_of(t);
            char line[64];
            snprintf(line, sizeof line, "cancel status %d", proxy_grpc_cancel(t));
            note(slot, line);
            snprintf(line, sizeof line, "cancel again status %d", proxy_grpc_cancel(t));
            note(slot, line);
            calls[slot].cancelled = 1;
            cancelled_slot = slot;
            waiting_stream = ctx;
            proxy_set_tick_period_milliseconds(600);
        }
    } else {
        free(path);
        return PW_CONTINUE;
    }
    free(path);
    return PW_PAUSE;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
    proxy_set_tick_period_milliseconds(0);
    if (cancelled_slot >= 0) {
        calls[cancelled_slot].cancelled = 0;
        finish(cancelled_slot);
        cancelled_slot = -1;
    }
}

static void note_metadata(int slot, const char *label, pw_map map, uint32_t count) {
    char line[256];
    char *status = pw_header(map, "grpc-status");
    char *message = pw_header(map, "grpc-message");
    char *type = pw_header(map, "content-type");
    char *peer = pw_header(map, "x-trailer");
    snprintf(line, sizeof line, "%s content-type=%s grpc-status=%s grpc-message=%s x-trailer=%s", label,
             type ? type : "-", status ? status : "-", message ? message : "-", peer ? peer : "-");
    free(status); free(message); free(type); free(peer);
    note(slot, line);
}

PW_EXPORT(proxy_on_grpc_receive_initial_metadata) void on_grpc_initial(uint32_t root, uint32_t token, uint32_t count) {
    int slot = slot_of(token);
    if (slot >= 0) note_metadata(slot, "initial", PW_GRPC_INITIAL, count);
}

PW_EXPORT(proxy_on_grpc_receive) void on_grpc_receive(uint32_t root, uint32_t token, uint32_t size) {
    int slot = slot_of(token);
    if (slot < 0) return;
    size_t len = 0;
    char *data = pw_buffer_bytes(PW_GRPC_MESSAGE, &len);
    char line[320];
    snprintf(line, sizeof line, "message %u %.256s", size, data ? data : "");
    for (char *c = line; *c; c++) if (*c == '\n') *c = ';';
    free(data);
    note(slot, line);
    /* A unary call that succeeds ends here. */
    if (!calls[slot].cancelled && (strncmp(calls[slot].log, "message", 7) == 0)) finish(slot);
}

PW_EXPORT(proxy_on_grpc_receive_trailing_metadata) void on_grpc_trailing(uint32_t root, uint32_t token, uint32_t count) {
    int slot = slot_of(token);
    if (slot >= 0) note_metadata(slot, "trailing", PW_GRPC_TRAILING, count);
}

PW_EXPORT(proxy_on_grpc_close) void on_grpc_close(uint32_t root, uint32_t token, uint32_t status) {
    int slot = slot_of(token);
    if (slot < 0) return;
    char *message = NULL; size_t len = 0; uint32_t code = 0;
    proxy_get_status(&code, &message, &len);
    char line[512];
    snprintf(line, sizeof line, "close %u %u %.*s", status, code, (int)len, message ? message : "");
    free(message);
    note(slot, line);
    if (!calls[slot].cancelled) finish(slot);
}
