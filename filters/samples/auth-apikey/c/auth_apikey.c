/*
 * Sample filter `auth-apikey`, in C: the same behaviour and configuration as the Swift one.
 *   { "header": "x-api-key", "keys": { "<key>": "<key id>" }, "forward_header": "x-api-key-id", "realm": "api" }
 */
#include <stdio.h>
#include "../../../sdk/c/proxy_wasm.h"
#include "../../../sdk/c/json.h"

PW_MODULE_BOILERPLATE

#define MAX_KEYS 64
static char header[64] = "x-api-key", forward_header[64] = "x-api-key-id", realm[64] = "api";
static char keys[MAX_KEYS][128], ids[MAX_KEYS][128];
static int nkeys;

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    size_t len = 0;
    char *conf = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    if (!conf) return 0;
    pwj_doc doc;
    int ok = pwj_parse(&doc, conf, len);
    if (ok) {
        pwj_copy_string(&doc, pwj_get(&doc, 0, "header"), header, sizeof header);
        pwj_copy_string(&doc, pwj_get(&doc, 0, "forward_header"), forward_header, sizeof forward_header);
        pwj_copy_string(&doc, pwj_get(&doc, 0, "realm"), realm, sizeof realm);
        int k = pwj_get(&doc, 0, "keys");
        nkeys = 0;
        for (int m = pwj_first_member(&doc, k); m >= 0 && nkeys < MAX_KEYS; m = pwj_next_member(&doc, m)) {
            pwj_copy_string(&doc, m, keys[nkeys], sizeof keys[0]);            /* the member's key */
            pwj_copy_string(&doc, m + 1, ids[nkeys], sizeof ids[0]);         /* its value */
            nkeys++;
        }
    } else {
        pw_log(PW_ERROR, "auth-apikey: configuration must be JSON with a 'keys' object");
    }
    free(conf);
    return ok ? 1 : 0;
}

static uint32_t deny(const char *reason) {
    char challenge[128], body[96];
    snprintf(challenge, sizeof challenge, "ApiKey realm=\"%s\"", realm);
    snprintf(body, sizeof body, "%s\n", reason);
    const char *k[] = {"www-authenticate"}, *v[] = {challenge};
    pw_send_response(401, body, k, v, 1);
    return PW_PAUSE;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    char *presented = pw_header(PW_REQUEST_HEADERS, header);
    if (!presented) return deny("missing API key");
    for (int i = 0; i < nkeys; i++) {
        if (strcmp(presented, keys[i]) == 0) {
            free(presented);
            pw_remove_header(PW_REQUEST_HEADERS, header);
            pw_replace_header(PW_REQUEST_HEADERS, forward_header, ids[i]);
            return PW_CONTINUE;
        }
    }
    free(presented);
    return deny("unknown API key");
}
