/*
 * A filter compiled in several versions (-DVERSION=n, -DBAD_CONFIGURE, -DBAD_IMPORT) for the
 * hot-reload tests: it stamps its version and configuration on requests and responses.
 */
#include <stdio.h>
#include "../../sdk/c/proxy_wasm.h"

#ifndef VERSION
#define VERSION 1
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

PW_MODULE_BOILERPLATE

#ifdef BAD_IMPORT
PW_IMPORT(proxy_no_such_hostcall) pw_status proxy_no_such_hostcall(void);
#endif

static char configuration[128];

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
#ifdef BAD_CONFIGURE
    __builtin_trap();
#endif
#ifdef BAD_IMPORT
    proxy_no_such_hostcall();
#endif
    size_t len = 0;
    char *conf = pw_buffer_bytes(PW_PLUGIN_CONFIGURATION, &len);
    snprintf(configuration, sizeof configuration, "%s", conf ? conf : "");
    free(conf);
    return 1;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    pw_add_header(PW_REQUEST_HEADERS, "x-filter-version", STR(VERSION));
    pw_add_header(PW_REQUEST_HEADERS, "x-filter-config", configuration);
    return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    pw_add_header(PW_RESPONSE_HEADERS, "x-filter-version", STR(VERSION));
    return PW_CONTINUE;
}
