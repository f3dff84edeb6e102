/*
 * Sample filter `auth-jwt`, in C: the same configuration and behaviour as the Swift one
 * (HS256; exp, nbf, iss, aud; claims_to_headers; 401 with the reason).
 */
#include <stdio.h>
#include "../../../sdk/c/proxy_wasm.h"
#include "../../../sdk/c/json.h"
#include "../../../sdk/c/crypto.h"

PW_MODULE_BOILERPLATE

static char secret[256], issuer[256], audience[128];
static int has_issuer, has_audience;
static long leeway = 30;
static char claim_names[16][64], claim_headers[16][64];
static int nclaims;

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    size_t len = 0;
    char *conf = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    static pwj_doc doc;
    if (!conf || !pwj_parse(&doc, conf, len) || pwj_get(&doc, 0, "secret") < 0) {
        pw_log(PW_ERROR, "auth-jwt: configuration must be JSON with a non-empty 'secret'");
        free(conf);
        return 0;
    }
    pwj_copy_string(&doc, pwj_get(&doc, 0, "secret"), secret, sizeof secret);
    has_issuer = pwj_get(&doc, 0, "issuer") >= 0;
    pwj_copy_string(&doc, pwj_get(&doc, 0, "issuer"), issuer, sizeof issuer);
    has_audience = pwj_get(&doc, 0, "audience") >= 0;
    pwj_copy_string(&doc, pwj_get(&doc, 0, "audience"), audience, sizeof audience);
    char tmp[32] = "30";
    pwj_copy_string(&doc, pwj_get(&doc, 0, "leeway_seconds"), tmp, sizeof tmp);
    leeway = atol(tmp);
    nclaims = 0;
    int map = pwj_get(&doc, 0, "claims_to_headers");
    for (int m = pwj_first_member(&doc, map); m >= 0 && nclaims < 16; m = pwj_next_member(&doc, m)) {
        pwj_copy_string(&doc, m, claim_names[nclaims], 64);
        pwj_copy_string(&doc, m + 1, claim_headers[nclaims], 64);
        nclaims++;
    }
    free(conf);
    return secret[0] != 0;
}

static uint32_t deny(const char *reason) {
    char challenge[256], body[128];
    snprintf(challenge, sizeof challenge, "Bearer error=\"invalid_token\", error_description=\"%s\"", reason);
    snprintf(body, sizeof body, "%s\n", reason);
    const char *k[] = {"www-authenticate"}, *v[] = {challenge};
    pw_send_response(401, body, k, v, 1);
    return PW_PAUSE;
}

/* The claim's JSON token as text (strings without quotes), or "" if absent. */
static void claim_text(pwj_doc *d, const char *name, char *out, size_t size) {
    out[0] = 0;
    pwj_copy_string(d, pwj_get(d, 0, name), out, size);
}

static const char *verify(const char *token, pwj_doc *claims, char **payload_out) {
    const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || strchr(dot2 + 1, '.')) return "malformed token";
    size_t hl = dot1 - token, pl = dot2 - dot1 - 1, sl = strlen(dot2 + 1);
    uint8_t *header = malloc(hl + 1), *payload = malloc(pl + 1), sig[64];
    int hn = pw_base64url_decode(token, hl, header), pn = pw_base64url_decode(dot1 + 1, pl, payload);
    int sn = sl <= 86 ? pw_base64url_decode(dot2 + 1, sl, sig) : -1;
    static pwj_doc hdoc;
    if (hn < 0 || pn < 0 || sn < 0 || !pwj_parse(&hdoc, (char *)header, hn) || !pwj_parse(claims, (char *)payload, pn)) {
        free(header); free(payload);
        return "malformed token";
    }
    char alg[16] = "";
    pwj_copy_string(&hdoc, pwj_get(&hdoc, 0, "alg"), alg, sizeof alg);
    free(header);
    *payload_out = (char *)payload;  /* claims point into it */
    if (strcmp(alg, "HS256") != 0) return "unsupported algorithm";
    uint8_t mac[32];
    pw_hmac_sha256((const uint8_t *)secret, strlen(secret), (const uint8_t *)token, dot2 - token, mac);
    if (sn != 32 || !pw_constant_time_equal(mac, sig, 32)) return "invalid signature";
    uint64_t now_ns = 0;
    proxy_get_current_time_nanoseconds(&now_ns);
    long now = (long)(now_ns / 1000000000ull);
    char v[256];
    claim_text(claims, "exp", v, sizeof v);
    if (v[0] && atol(v) + leeway < now) return "token expired";
    claim_text(claims, "nbf", v, sizeof v);
    if (v[0] && atol(v) - leeway > now) return "token not yet valid";
    if (has_issuer) {
        claim_text(claims, "iss", v, sizeof v);
        if (strcmp(v, issuer) != 0) return "wrong issuer";
    }
    if (has_audience) {
        int aud = pwj_get(claims, 0, "aud"), ok = 0;
        if (aud >= 0 && claims->t[aud].type == PWJ_ARRAY) {
            for (int i = aud + 1; i < claims->count && claims->t[i].parent == aud; i = pwj_skip(claims, i)) {
                pwj_copy_string(claims, i, v, sizeof v);
                if (strcmp(v, audience) == 0) ok = 1;
            }
        } else {
            claim_text(claims, "aud", v, sizeof v);
            ok = strcmp(v, audience) == 0;
        }
        if (!ok) return "wrong audience";
    }
    return NULL;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    char *authorization = pw_header(PW_REQUEST_HEADERS, "authorization");
    if (!authorization || strncmp(authorization, "Bearer ", 7) != 0) {
        free(authorization);
        return deny("missing bearer token");
    }
    static pwj_doc claims;
    char *payload = NULL;
    const char *error = verify(authorization + 7, &claims, &payload);
    free(authorization);
    if (error) { free(payload); return deny(error); }
    pw_remove_header(PW_REQUEST_HEADERS, "authorization");
    for (int i = 0; i < nclaims; i++) {
        char v[256];
        claim_text(&claims, claim_names[i], v, sizeof v);
        if (v[0]) pw_replace_header(PW_REQUEST_HEADERS, claim_headers[i], v);
    }
    free(payload);
    return PW_CONTINUE;
}
