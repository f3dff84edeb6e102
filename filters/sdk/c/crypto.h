/* SHA-256, HMAC-SHA256 and base64url for C filters. */
#ifndef SLUICE_PW_CRYPTO_H
#define SLUICE_PW_CRYPTO_H
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static const uint32_t pw__k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define PW__ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void pw_sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t total = ((len + 9 + 63) / 64) * 64;
    uint8_t *m = calloc(total, 1);
    memcpy(m, data, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t c = 0; c < total; c += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++) w[i] = (uint32_t)m[c + 4 * i] << 24 | (uint32_t)m[c + 4 * i + 1] << 16 | (uint32_t)m[c + 4 * i + 2] << 8 | m[c + 4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = PW__ROTR(w[i - 15], 7) ^ PW__ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = PW__ROTR(w[i - 2], 17) ^ PW__ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], cc = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = hh + (PW__ROTR(e, 6) ^ PW__ROTR(e, 11) ^ PW__ROTR(e, 25)) + ((e & f) ^ (~e & g)) + pw__k[i] + w[i];
            uint32_t t2 = (PW__ROTR(a, 2) ^ PW__ROTR(a, 13) ^ PW__ROTR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
            hh = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += cc; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    free(m);
    for (int i = 0; i < 8; i++) { out[4 * i] = h[i] >> 24; out[4 * i + 1] = h[i] >> 16; out[4 * i + 2] = h[i] >> 8; out[4 * i + 3] = h[i]; }
}

static void pw_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len, uint8_t out[32]) {
    uint8_t k[64] = {0}, kh[32];
    if (key_len > 64) { pw_sha256(key, key_len, kh); memcpy(k, kh, 32); } else memcpy(k, key, key_len);
    uint8_t *inner = malloc(64 + msg_len), outer[64 + 32], ih[32];
    for (int i = 0; i < 64; i++) { inner[i] = k[i] ^ 0x36; outer[i] = k[i] ^ 0x5c; }
    memcpy(inner + 64, msg, msg_len);
    pw_sha256(inner, 64 + msg_len, ih);
    free(inner);
    memcpy(outer + 64, ih, 32);
    pw_sha256(outer, 96, out);
}

/* base64url decode into out (capacity at least len); returns the length, -1 on bad input. */
static int pw_base64url_decode(const char *s, size_t len, uint8_t *out) {
    uint32_t buf = 0; int bits = 0, n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i]; uint32_t v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '-' || c == '+') v = 62;
        else if (c == '_' || c == '/') v = 63;
        else if (c == '=') continue;
        else return -1;
        buf = buf << 6 | v; bits += 6;
        if (bits >= 8) { bits -= 8; out[n++] = (uint8_t)(buf >> bits); }
    }
    return n;
}

static int pw_constant_time_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= a[i] ^ b[i];
    return d == 0;
}
#endif
