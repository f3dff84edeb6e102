/*
 * Sluice C SDK for Proxy-Wasm filters: the ABI imports (0.2.1) and small helpers.
 * Build with wasi-libc:  filters/build.sh  (see filters/README.md).
 */
#ifndef SLUICE_PROXY_WASM_H
#define SLUICE_PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PW_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define PW_EXPORT(name) __attribute__((export_name(#name)))

typedef enum { PW_OK = 0, PW_NOT_FOUND = 1, PW_BAD_ARGUMENT = 2, PW_PARSE_FAILURE = 4, PW_INVALID_MEMORY_ACCESS = 6, PW_EMPTY = 7,
               PW_CAS_MISMATCH = 8, PW_INTERNAL_FAILURE = 10, PW_UNIMPLEMENTED = 12 } pw_status;
typedef enum { PW_TRACE, PW_DEBUG, PW_INFO, PW_WARN, PW_ERROR, PW_CRITICAL } pw_log_level;
typedef enum { PW_REQUEST_HEADERS = 0, PW_REQUEST_TRAILERS, PW_RESPONSE_HEADERS, PW_RESPONSE_TRAILERS,
               PW_GRPC_INITIAL, PW_GRPC_TRAILING, PW_HTTP_CALL_RESPONSE_HEADERS, PW_HTTP_CALL_RESPONSE_TRAILERS } pw_map;
typedef enum { PW_REQUEST_BODY = 0, PW_RESPONSE_BODY, PW_DOWNSTREAM_DATA, PW_UPSTREAM_DATA, PW_HTTP_CALL_RESPONSE_BODY,
               PW_GRPC_MESSAGE, PW_VM_CONFIGURATION, PW_PLUGIN_CONFIGURATION } pw_buffer;
typedef enum { PW_STREAM_REQUEST = 0, PW_STREAM_RESPONSE = 1, PW_STREAM_DOWNSTREAM = 2, PW_STREAM_UPSTREAM = 3 } pw_stream;
/* Who closed a TCP connection (proxy_on_*_connection_close). */
typedef enum { PW_PEER_UNKNOWN = 0, PW_PEER_LOCAL = 1, PW_PEER_REMOTE = 2 } pw_peer;
typedef enum { PW_COUNTER = 0, PW_GAUGE = 1, PW_HISTOGRAM = 2 } pw_metric;
enum { PW_CONTINUE = 0, PW_PAUSE = 1 };

PW_IMPORT(proxy_log) pw_status proxy_log(uint32_t level, const char *msg, size_t len);
PW_IMPORT(proxy_get_log_level) pw_status proxy_get_log_level(uint32_t *level);
PW_IMPORT(proxy_get_current_time_nanoseconds) pw_status proxy_get_current_time_nanoseconds(uint64_t *out);
PW_IMPORT(proxy_get_property) pw_status proxy_get_property(const char *path, size_t path_len, char **value, size_t *value_len);
PW_IMPORT(proxy_set_property) pw_status proxy_set_property(const char *path, size_t path_len, const char *value, size_t value_len);
PW_IMPORT(proxy_get_header_map_value) pw_status proxy_get_header_map_value(uint32_t map, const char *key, size_t key_len, char **value, size_t *value_len);
PW_IMPORT(proxy_add_header_map_value) pw_status proxy_add_header_map_value(uint32_t map, const char *key, size_t key_len, const char *value, size_t value_len);
PW_IMPORT(proxy_replace_header_map_value) pw_status proxy_replace_header_map_value(uint32_t map, const char *key, size_t key_len, const char *value, size_t value_len);
PW_IMPORT(proxy_remove_header_map_value) pw_status proxy_remove_header_map_value(uint32_t map, const char *key, size_t key_len);
PW_IMPORT(proxy_get_header_map_pairs) pw_status proxy_get_header_map_pairs(uint32_t map, char **pairs, size_t *pairs_len);
PW_IMPORT(proxy_set_header_map_pairs) pw_status proxy_set_header_map_pairs(uint32_t map, const char *pairs, size_t pairs_len);
PW_IMPORT(proxy_get_header_map_size) pw_status proxy_get_header_map_size(uint32_t map, size_t *size);
PW_IMPORT(proxy_get_buffer_bytes) pw_status proxy_get_buffer_bytes(uint32_t buffer, size_t start, size_t max, char **data, size_t *len);
PW_IMPORT(proxy_set_buffer_bytes) pw_status proxy_set_buffer_bytes(uint32_t buffer, size_t start, size_t size, const char *data, size_t len);
PW_IMPORT(proxy_get_buffer_status) pw_status proxy_get_buffer_status(uint32_t buffer, size_t *len, uint32_t *flags);
PW_IMPORT(proxy_continue_stream) pw_status proxy_continue_stream(uint32_t stream);
PW_IMPORT(proxy_close_stream) pw_status proxy_close_stream(uint32_t stream);
PW_IMPORT(proxy_send_local_response) pw_status proxy_send_local_response(uint32_t status, const char *details, size_t details_len,
    const char *body, size_t body_len, const char *headers, size_t headers_len, int32_t grpc_status);
PW_IMPORT(proxy_http_call) pw_status proxy_http_call(const char *upstream, size_t upstream_len, const char *headers, size_t headers_len,
    const char *body, size_t body_len, const char *trailers, size_t trailers_len, uint32_t timeout_ms, uint32_t *token);
PW_IMPORT(proxy_grpc_call) pw_status proxy_grpc_call(const char *service, size_t service_len, const char *service_name, size_t service_name_len,
    const char *method, size_t method_len, const char *metadata, size_t metadata_len, const char *message, size_t message_len,
    uint32_t timeout_ms, uint32_t *token);
PW_IMPORT(proxy_grpc_stream) pw_status proxy_grpc_stream(const char *service, size_t service_len, const char *service_name, size_t service_name_len,
    const char *method, size_t method_len, const char *metadata, size_t metadata_len, uint32_t *token);
PW_IMPORT(proxy_grpc_send) pw_status proxy_grpc_send(uint32_t token, const char *message, size_t message_len, uint32_t end_stream);
PW_IMPORT(proxy_grpc_cancel) pw_status proxy_grpc_cancel(uint32_t token);
PW_IMPORT(proxy_grpc_close) pw_status proxy_grpc_close(uint32_t token);
PW_IMPORT(proxy_set_tick_period_milliseconds) pw_status proxy_set_tick_period_milliseconds(uint32_t ms);
PW_IMPORT(proxy_get_shared_data) pw_status proxy_get_shared_data(const char *key, size_t key_len, char **value, size_t *value_len, uint32_t *cas);
PW_IMPORT(proxy_set_shared_data) pw_status proxy_set_shared_data(const char *key, size_t key_len, const char *value, size_t value_len, uint32_t cas);
PW_IMPORT(proxy_register_shared_queue) pw_status proxy_register_shared_queue(const char *name, size_t name_len, uint32_t *id);
PW_IMPORT(proxy_resolve_shared_queue) pw_status proxy_resolve_shared_queue(const char *vm_id, size_t vm_id_len, const char *name, size_t name_len, uint32_t *id);
PW_IMPORT(proxy_enqueue_shared_queue) pw_status proxy_enqueue_shared_queue(uint32_t id, const char *value, size_t len);
PW_IMPORT(proxy_dequeue_shared_queue) pw_status proxy_dequeue_shared_queue(uint32_t id, char **value, size_t *len);
PW_IMPORT(proxy_define_metric) pw_status proxy_define_metric(uint32_t type, const char *name, size_t name_len, uint32_t *id);
PW_IMPORT(proxy_increment_metric) pw_status proxy_increment_metric(uint32_t id, int64_t delta);
PW_IMPORT(proxy_record_metric) pw_status proxy_record_metric(uint32_t id, uint64_t value);
PW_IMPORT(proxy_get_metric) pw_status proxy_get_metric(uint32_t id, uint64_t *value);
PW_IMPORT(proxy_set_effective_context) pw_status proxy_set_effective_context(uint32_t context_id);
PW_IMPORT(proxy_done) pw_status proxy_done(void);
PW_IMPORT(proxy_get_status) pw_status proxy_get_status(uint32_t *code, char **message, size_t *len);
PW_IMPORT(proxy_call_foreign_function) pw_status proxy_call_foreign_function(const char *name, size_t name_len, const char *args, size_t args_len, char **result, size_t *result_len);

/*
 * Callbacks a module may export (define the ones it needs):
 *   TCP (network) filters, on a connection's context:
 *     uint32_t proxy_on_new_connection(uint32_t ctx)                                   -> PW_CONTINUE / PW_PAUSE
 *     uint32_t proxy_on_downstream_data(uint32_t ctx, uint32_t size, uint32_t end)     -> PW_CONTINUE / PW_PAUSE
 *     uint32_t proxy_on_upstream_data(uint32_t ctx, uint32_t size, uint32_t end)       -> PW_CONTINUE / PW_PAUSE
 *     void proxy_on_downstream_connection_close(uint32_t ctx, uint32_t peer)          (pw_peer)
 *     void proxy_on_upstream_connection_close(uint32_t ctx, uint32_t peer)
 *   The bytes are PW_DOWNSTREAM_DATA / PW_UPSTREAM_DATA; proxy_continue_stream(PW_STREAM_DOWNSTREAM)
 *   resumes a paused connection, proxy_close_stream(PW_STREAM_DOWNSTREAM or _UPSTREAM) closes it.
 *   gRPC callouts, on the root context:
 *     void proxy_on_grpc_receive_initial_metadata(uint32_t root, uint32_t token, uint32_t count)   (PW_GRPC_INITIAL)
 *     void proxy_on_grpc_receive(uint32_t root, uint32_t token, uint32_t size)                    (PW_GRPC_MESSAGE)
 *     void proxy_on_grpc_receive_trailing_metadata(uint32_t root, uint32_t token, uint32_t count)  (PW_GRPC_TRAILING)
 *     void proxy_on_grpc_close(uint32_t root, uint32_t token, uint32_t status)   (proxy_get_status: the message)
 *   A unary call that succeeds ends with proxy_on_grpc_receive alone; any other end is proxy_on_grpc_close.
 */

/* Every module marks its ABI and exports the allocator the host uses to hand it data. */
#define PW_MODULE_BOILERPLATE \
    PW_EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {} \
    PW_EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t n) { return malloc(n); }

/* ---- helpers (strings are NUL-terminated copies the caller frees) ---- */

static inline void pw_log(pw_log_level level, const char *msg) { proxy_log(level, msg, strlen(msg)); }

static inline char *pw_header(pw_map map, const char *name) {
    char *value = NULL; size_t len = 0;
    if (proxy_get_header_map_value(map, name, strlen(name), &value, &len) != PW_OK) return NULL;
    char *out = malloc(len + 1);
    if (len) memcpy(out, value, len);
    out[len] = 0;
    free(value);
    return out;
}

static inline pw_status pw_add_header(pw_map map, const char *name, const char *value) {
    return proxy_add_header_map_value(map, name, strlen(name), value, strlen(value));
}

static inline pw_status pw_replace_header(pw_map map, const char *name, const char *value) {
    return proxy_replace_header_map_value(map, name, strlen(name), value, strlen(value));
}

static inline pw_status pw_remove_header(pw_map map, const char *name) {
    return proxy_remove_header_map_value(map, name, strlen(name));
}

/* Reads a whole buffer; *len receives its size. NUL-terminated for convenience. */
static inline char *pw_buffer_bytes(pw_buffer buffer, size_t *len) {
    char *data = NULL; size_t n = 0;
    if (proxy_get_buffer_bytes(buffer, 0, 0xFFFFFFFF, &data, &n) != PW_OK) { *len = 0; return NULL; }
    char *out = malloc(n + 1);
    if (n) memcpy(out, data, n);
    out[n] = 0;
    free(data);
    *len = n;
    return out;
}

/* Property path segments joined with NUL: pw_property("request\0path", 12). */
static inline char *pw_property(const char *path, size_t path_len, size_t *len) {
    char *value = NULL; size_t n = 0;
    if (proxy_get_property(path, path_len, &value, &n) != PW_OK) { *len = 0; return NULL; }
    char *out = malloc(n + 1);
    if (n) memcpy(out, value, n);
    out[n] = 0;
    free(value);
    *len = n;
    return out;
}

/* Serializes up to 16 header pairs ("pairs" format) into a malloc'd buffer. */
static inline char *pw_serialize_pairs(const char **keys, const char **values, int n, size_t *out_len) {
    size_t size = 4;
    for (int i = 0; i < n; i++) size += 8 + strlen(keys[i]) + strlen(values[i]) + 2;
    char *buf = malloc(size), *p = buf;
    uint32_t count = (uint32_t)n;
    memcpy(p, &count, 4); p += 4;
    for (int i = 0; i < n; i++) {
        uint32_t kl = strlen(keys[i]), vl = strlen(values[i]);
        memcpy(p, &kl, 4); memcpy(p + 4, &vl, 4); p += 8;
    }
    for (int i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]), vl = strlen(values[i]);
        memcpy(p, keys[i], kl); p += kl; *p++ = 0;
        memcpy(p, values[i], vl); p += vl; *p++ = 0;
    }
    *out_len = size;
    return buf;
}

static inline pw_status pw_send_response(uint32_t status, const char *body, const char **keys, const char **values, int n) {
    size_t hlen = 0;
    char *headers = pw_serialize_pairs(keys, values, n, &hlen);
    pw_status s = proxy_send_local_response(status, "", 0, body, strlen(body), headers, hlen, -1);
    free(headers);
    return s;
}

/* ---- shared data, metrics, callouts ---- */

/* Reads a shared value as a NUL-terminated copy (free it); *cas receives its CAS token. */
static inline char *pw_shared_get(const char *key, uint32_t *cas) {
    char *value = NULL; size_t len = 0;
    if (proxy_get_shared_data(key, strlen(key), &value, &len, cas) != PW_OK) return NULL;
    char *out = malloc(len + 1);
    if (len) memcpy(out, value, len);
    out[len] = 0;
    free(value);
    return out;
}

/* Writes a shared value; with a non-zero cas it fails (PW_CAS_MISMATCH) if someone wrote first. */
static inline pw_status pw_shared_set(const char *key, const char *value, uint32_t cas) {
    return proxy_set_shared_data(key, strlen(key), value, strlen(value), cas);
}

static inline uint32_t pw_define_metric(pw_metric type, const char *name) {
    uint32_t id = 0;
    proxy_define_metric(type, name, strlen(name), &id);
    return id;
}

/* HTTP callouts with a per-call callback, dispatched by the module's proxy_on_http_call_response
 * (define PW_HTTP_CALL_DISPATCH in one source file to get it). The callback runs with the
 * calling stream as the effective context; n_headers == 0 means the call failed. */
typedef void (*pw_http_callback)(uint32_t stream, uint32_t n_headers, size_t body_size);
#define PW_MAX_CALLOUTS 256
static struct { uint32_t token, stream; pw_http_callback cb; } pw__callouts[PW_MAX_CALLOUTS];

static inline pw_status pw_http_call(const char *cluster, const char **keys, const char **values, int n,
                                     const char *body, size_t body_len, uint32_t timeout_ms, uint32_t stream, pw_http_callback cb) {
    size_t hlen = 0;
    char *headers = pw_serialize_pairs(keys, values, n, &hlen);
    uint32_t token = 0;
    pw_status s = proxy_http_call(cluster, strlen(cluster), headers, hlen, body, body_len, NULL, 0, timeout_ms, &token);
    free(headers);
    if (s == PW_OK) {
        pw__callouts[token % PW_MAX_CALLOUTS].token = token;
        pw__callouts[token % PW_MAX_CALLOUTS].stream = stream;
        pw__callouts[token % PW_MAX_CALLOUTS].cb = cb;
    }
    return s;
}

/* Reads a buffer and replaces it whole (the bytes the current callback is about). */
static inline pw_status pw_buffer_replace(pw_buffer buffer, const char *data, size_t len) {
    size_t old = 0; uint32_t flags = 0;
    if (proxy_get_buffer_status(buffer, &old, &flags) != PW_OK) old = 0;
    return proxy_set_buffer_bytes(buffer, 0, old, data, len);
}

/* A unary gRPC call to a cluster (the service given as a bare cluster name, as the Rust and Go
 * SDKs send it); metadata as n header pairs. */
static inline pw_status pw_grpc_call(const char *cluster, const char *service, const char *method, const char **keys, const char **values, int n,
                                     const char *message, size_t message_len, uint32_t timeout_ms, uint32_t *token) {
    size_t mlen = 0;
    char *metadata = pw_serialize_pairs(keys, values, n, &mlen);
    pw_status s = proxy_grpc_call(cluster, strlen(cluster), service, strlen(service), method, strlen(method), metadata, mlen, message, message_len, timeout_ms, token);
    free(metadata);
    return s;
}

static inline pw_status pw_grpc_stream(const char *cluster, const char *service, const char *method, const char **keys, const char **values, int n, uint32_t *token) {
    size_t mlen = 0;
    char *metadata = pw_serialize_pairs(keys, values, n, &mlen);
    pw_status s = proxy_grpc_stream(cluster, strlen(cluster), service, strlen(service), method, strlen(method), metadata, mlen, token);
    free(metadata);
    return s;
}

#ifdef PW_HTTP_CALL_DISPATCH
PW_EXPORT(proxy_on_http_call_response) void pw__on_http_call_response(uint32_t root, uint32_t token, uint32_t nh, uint32_t body, uint32_t nt) {
    uint32_t slot = token % PW_MAX_CALLOUTS;
    if (pw__callouts[slot].token != token || !pw__callouts[slot].cb) return;
    pw_http_callback cb = pw__callouts[slot].cb;
    pw__callouts[slot].cb = NULL;
    if (proxy_set_effective_context(pw__callouts[slot].stream) != PW_OK) return;  /* the stream is gone */
    cb(pw__callouts[slot].stream, nh, body);
}
#endif

#endif
