// The part of Wasmtime's C API that Sluice uses, declared here and resolved at run time
// with dlopen, so Sluice builds without Wasmtime and runs with WasmKit alone when the
// library is absent. The declarations follow Wasmtime 50's C API (the version
// scripts/install-wasmtime.sh pins): the handle structs below must match its layout.
#ifndef SLUICE_CWASMTIME_H
#define SLUICE_CWASMTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wasm_engine_t wasm_engine_t;
typedef struct wasm_config_t wasm_config_t;
typedef struct wasm_trap_t wasm_trap_t;
typedef struct wasm_functype_t wasm_functype_t;
typedef struct wasm_valtype_t wasm_valtype_t;
typedef struct wasm_externtype_t wasm_externtype_t;
typedef struct wasm_importtype_t wasm_importtype_t;
typedef struct wasm_exporttype_t wasm_exporttype_t;
typedef struct wasmtime_module wasmtime_module_t;
typedef struct wasmtime_store wasmtime_store_t;
typedef struct wasmtime_context wasmtime_context_t;
typedef struct wasmtime_caller wasmtime_caller_t;
typedef struct wasmtime_linker wasmtime_linker_t;
typedef struct wasmtime_instance_pre wasmtime_instance_pre_t;
typedef struct wasmtime_error wasmtime_error_t;

typedef struct { size_t size; uint8_t *data; } wasm_byte_vec_t;
typedef struct { size_t size; wasm_importtype_t **data; } wasm_importtype_vec_t;
typedef struct { size_t size; wasm_exporttype_t **data; } wasm_exporttype_vec_t;
typedef struct { size_t size; wasm_valtype_t **data; } wasm_valtype_vec_t;

// Store-scoped handles (plain values; the store owns what they name).
typedef struct { uint64_t store_id; void *private_index; } wasmtime_func_t;
typedef struct { struct { uint64_t store_id; uint32_t private1; }; uint32_t private2; } wasmtime_memory_t;
typedef struct { struct { uint64_t store_id; uint32_t private1; }; uint32_t private2; } wasmtime_table_t;
typedef struct { uint64_t store_id; uint32_t private1, private2, private3; } wasmtime_global_t;
typedef struct { uint64_t store_id; size_t private_index; } wasmtime_instance_t;

typedef union {
  wasmtime_func_t func;
  wasmtime_global_t global;
  wasmtime_table_t table;
  wasmtime_memory_t memory;
  void *sharedmemory;
} wasmtime_extern_union_t;

typedef struct { uint8_t kind; wasmtime_extern_union_t of; } wasmtime_extern_t;

enum { SLUICE_WASMTIME_EXTERN_FUNC = 0, SLUICE_WASMTIME_EXTERN_MEMORY = 3 };
enum { SLUICE_WASM_EXTERN_FUNC = 0 };
enum { SLUICE_WASM_I32 = 0, SLUICE_WASM_I64 = 1 };
enum { SLUICE_WASMTIME_TRAP_STACK_OVERFLOW = 0, SLUICE_WASMTIME_TRAP_INTERRUPT = 10, SLUICE_WASMTIME_TRAP_OUT_OF_FUEL = 11 };

// One argument or result slot of an unchecked call (16 bytes: the union holds a v128).
typedef union {
  int32_t i32;
  int64_t i64;
  float f32;
  double f64;
  uint8_t v128[16];
  void *funcref;
} wasmtime_val_raw_t;

typedef wasm_trap_t *(*wasmtime_func_unchecked_callback_t)(void *env, wasmtime_caller_t *caller,
                                                          wasmtime_val_raw_t *args_and_results,
                                                          size_t num_args_and_results);

// X(name, return type, parameter list, argument names): every function resolved at load.
#define SLUICE_WASMTIME_FUNCTIONS(X) \
  X(wasm_config_new, wasm_config_t *, (void), ()) \
  X(wasm_engine_new_with_config, wasm_engine_t *, (wasm_config_t *c), (c)) \
  X(wasmtime_config_epoch_interruption_set, void, (wasm_config_t *c, bool on), (c, on)) \
  X(wasmtime_config_cranelift_opt_level_set, void, (wasm_config_t *c, uint8_t level), (c, level)) \
  X(wasmtime_config_parallel_compilation_set, void, (wasm_config_t *c, bool on), (c, on)) \
  X(wasmtime_config_max_wasm_stack_set, void, (wasm_config_t *c, size_t size), (c, size)) \
  X(wasmtime_engine_increment_epoch, void, (wasm_engine_t *e), (e)) \
  X(wasmtime_module_new, wasmtime_error_t *, (wasm_engine_t *e, const uint8_t *wasm, size_t len, wasmtime_module_t **out), (e, wasm, len, out)) \
  X(wasmtime_module_deserialize, wasmtime_error_t *, (wasm_engine_t *e, const uint8_t *bytes, size_t len, wasmtime_module_t **out), (e, bytes, len, out)) \
  X(wasmtime_module_serialize, wasmtime_error_t *, (wasmtime_module_t *m, wasm_byte_vec_t *out), (m, out)) \
  X(wasmtime_module_delete, void, (wasmtime_module_t *m), (m)) \
  X(wasmtime_module_imports, void, (const wasmtime_module_t *m, wasm_importtype_vec_t *out), (m, out)) \
  X(wasmtime_module_exports, void, (const wasmtime_module_t *m, wasm_exporttype_vec_t *out), (m, out)) \
  X(wasm_importtype_vec_delete, void, (wasm_importtype_vec_t *v), (v)) \
  X(wasm_exporttype_vec_delete, void, (wasm_exporttype_vec_t *v), (v)) \
  X(wasm_importtype_module, const wasm_byte_vec_t *, (const wasm_importtype_t *t), (t)) \
  X(wasm_importtype_name, const wasm_byte_vec_t *, (const wasm_importtype_t *t), (t)) \
  X(wasm_importtype_type, const wasm_externtype_t *, (const wasm_importtype_t *t), (t)) \
  X(wasm_exporttype_name, const wasm_byte_vec_t *, (const wasm_exporttype_t *t), (t)) \
  X(wasm_exporttype_type, const wasm_externtype_t *, (const wasm_exporttype_t *t), (t)) \
  X(wasm_externtype_kind, uint8_t, (const wasm_externtype_t *t), (t)) \
  X(wasm_externtype_as_functype_const, const wasm_functype_t *, (const wasm_externtype_t *t), (t)) \
  X(wasm_functype_params, const wasm_valtype_vec_t *, (const wasm_functype_t *t), (t)) \
  X(wasm_functype_results, const wasm_valtype_vec_t *, (const wasm_functype_t *t), (t)) \
  X(wasm_valtype_kind, uint8_t, (const wasm_valtype_t *t), (t)) \
  X(wasmtime_linker_new, wasmtime_linker_t *, (wasm_engine_t *e), (e)) \
  X(wasmtime_linker_delete, void, (wasmtime_linker_t *l), (l)) \
  X(wasmtime_linker_define_func_unchecked, wasmtime_error_t *, (wasmtime_linker_t *l, const char *module, size_t module_len, const char *name, size_t name_len, const wasm_functype_t *ty, wasmtime_func_unchecked_callback_t cb, void *env, void (*finalizer)(void *)), (l, module, module_len, name, name_len, ty, cb, env, finalizer)) \
  X(wasmtime_linker_instantiate_pre, wasmtime_error_t *, (const wasmtime_linker_t *l, const wasmtime_module_t *m, wasmtime_instance_pre_t **out), (l, m, out)) \
  X(wasmtime_instance_pre_delete, void, (wasmtime_instance_pre_t *p), (p)) \
  X(wasmtime_instance_pre_instantiate, wasmtime_error_t *, (const wasmtime_instance_pre_t *p, wasmtime_context_t *ctx, wasmtime_instance_t *out, wasm_trap_t **trap), (p, ctx, out, trap)) \
  X(wasmtime_store_new, wasmtime_store_t *, (wasm_engine_t *e, void *data, void (*finalizer)(void *)), (e, data, finalizer)) \
  X(wasmtime_store_delete, void, (wasmtime_store_t *s), (s)) \
  X(wasmtime_store_context, wasmtime_context_t *, (wasmtime_store_t *s), (s)) \
  X(wasmtime_store_limiter, void, (wasmtime_store_t *s, int64_t memory_size, int64_t table_elements, int64_t instances, int64_t tables, int64_t memories), (s, memory_size, table_elements, instances, tables, memories)) \
  X(wasmtime_context_get_data, void *, (const wasmtime_context_t *ctx), (ctx)) \
  X(wasmtime_context_set_epoch_deadline, void, (wasmtime_context_t *ctx, uint64_t ticks), (ctx, ticks)) \
  X(wasmtime_caller_context, wasmtime_context_t *, (wasmtime_caller_t *c), (c)) \
  X(wasmtime_instance_export_get, bool, (wasmtime_context_t *ctx, const wasmtime_instance_t *i, const char *name, size_t len, wasmtime_extern_t *out), (ctx, i, name, len, out)) \
  X(wasmtime_instance_export_nth, bool, (wasmtime_context_t *ctx, const wasmtime_instance_t *i, size_t index, char **name, size_t *len, wasmtime_extern_t *out), (ctx, i, index, name, len, out)) \
  X(wasmtime_func_type, wasm_functype_t *, (const wasmtime_context_t *ctx, const wasmtime_func_t *f), (ctx, f)) \
  X(wasm_functype_delete, void, (wasm_functype_t *t), (t)) \
  X(wasmtime_func_call_unchecked, wasmtime_error_t *, (wasmtime_context_t *ctx, const wasmtime_func_t *f, wasmtime_val_raw_t *args_and_results, size_t len, wasm_trap_t **trap), (ctx, f, args_and_results, len, trap)) \
  X(wasmtime_memory_data, uint8_t *, (const wasmtime_context_t *ctx, const wasmtime_memory_t *m), (ctx, m)) \
  X(wasmtime_memory_data_size, size_t, (const wasmtime_context_t *ctx, const wasmtime_memory_t *m), (ctx, m)) \
  X(wasmtime_error_message, void, (const wasmtime_error_t *e, wasm_byte_vec_t *out), (e, out)) \
  X(wasmtime_error_delete, void, (wasmtime_error_t *e), (e)) \
  X(wasm_trap_message, void, (const wasm_trap_t *t, wasm_byte_vec_t *out), (t, out)) \
  X(wasm_trap_delete, void, (wasm_trap_t *t), (t)) \
  X(wasmtime_trap_code, bool, (const wasm_trap_t *t, uint8_t *code), (t, code)) \
  X(wasmtime_trap_new, wasm_trap_t *, (const char *msg, size_t len), (msg, len)) \
  X(wasm_byte_vec_delete, void, (wasm_byte_vec_t *v), (v))

#define SLUICE_WASMTIME_POINTER(name, ret, params, args) ret(*name) params;
typedef struct {
  SLUICE_WASMTIME_FUNCTIONS(SLUICE_WASMTIME_POINTER)
} sluice_wasmtime_api_t;
#undef SLUICE_WASMTIME_POINTER

/// The resolved functions; valid after sluice_wasmtime_load returned 0.
extern sluice_wasmtime_api_t sluice_wasmtime_api;

/// Loads the library at `path` and resolves every function above. Returns 0, or -1 with a
/// reason in `error` (a missing library, or a version without one of the functions).
/// Idempotent: a second call after a success does nothing.
int sluice_wasmtime_load(const char *path, char *error, size_t error_len);

// Calls named as the C API names them, for Swift (a static inline function per entry).
#define SLUICE_WASMTIME_WRAPPER(name, ret, params, args) \
  static inline ret sw_##name params { return sluice_wasmtime_api.name args; }
SLUICE_WASMTIME_FUNCTIONS(SLUICE_WASMTIME_WRAPPER)
#undef SLUICE_WASMTIME_WRAPPER

#endif
