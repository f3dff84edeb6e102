// Resolves Wasmtime's C API from its shared library at run time (see CWasmtime.h).
#include "CWasmtime.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

sluice_wasmtime_api_t sluice_wasmtime_api;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded = 0;

int sluice_wasmtime_load(const char *path, char *error, size_t error_len) {
  pthread_mutex_lock(&load_lock);
  if (loaded) {
    pthread_mutex_unlock(&load_lock);
    return 0;
  }
  // RTLD_LOCAL: Wasmtime's symbols stay out of the global namespace.
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    snprintf(error, error_len, "%s", dlerror());
    pthread_mutex_unlock(&load_lock);
    return -1;
  }
  sluice_wasmtime_api_t api;
#define SLUICE_WASMTIME_RESOLVE(name, ret, params, args)                              \
  *(void **)(&api.name) = dlsym(handle, #name);                                       \
  if (!api.name) {                                                                    \
    snprintf(error, error_len, "%s has no %s (Sluice needs Wasmtime 50's C API)", path, #name); \
    dlclose(handle);                                                                  \
    pthread_mutex_unlock(&load_lock);                                                 \
    return -1;                                                                        \
  }
  SLUICE_WASMTIME_FUNCTIONS(SLUICE_WASMTIME_RESOLVE)
#undef SLUICE_WASMTIME_RESOLVE
  sluice_wasmtime_api = api;
  loaded = 1;
  pthread_mutex_unlock(&load_lock);
  return 0;
}
