/*
 * grng's optional native matMul: cblas_sgemm from a BLAS found at run time (dlopen), applied to
 * float32 matrices that live in a JavaScript typed array (tfjs-backend-wasm's heap).
 *
 * Why dlopen rather than linking: the addon must build on machines without BLAS development
 * files (no cblas.h, no libopenblas.so symlink), and must load on machines with no BLAS at all,
 * where grng then keeps the wasm kernel. So the prototype of cblas_sgemm is declared here.
 */
#include <dlfcn.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* CBLAS enum values are fixed by the CBLAS standard (netlib cblas.h). */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef void (*set_threads_fn)(int threads);
typedef int (*get_threads_fn)(void);

static sgemm_fn sgemm = NULL;
static set_threads_fn set_threads = NULL;
static get_threads_fn get_threads = NULL;
static char loaded_from[256] = "";
static char load_error[1024] = "";

/* Tries each library in turn; OpenBLAS first because the reference libblas is ~10x slower. */
static int load_blas(void) {
  if (sgemm) return 1;
  static const char *candidates[] = {"libopenblas.so.0", "libopenblas.so", "libblas.so.3",
                                     "libblas.so", "libopenblas.dylib", "libblas.dylib"};
  size_t used = 0;
  load_error[0] = '\0';
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
    void *handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char *why = dlerror();
      used += (size_t)snprintf(load_error + used, used < sizeof load_error ? sizeof load_error - used : 0,
                               "%s%s", used ? "; " : "", why ? why : candidates[i]);
      continue;
    }
    sgemm_fn found = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    if (!found) {
      used += (size_t)snprintf(load_error + used, used < sizeof load_error ? sizeof load_error - used : 0,
                               "%s%s has no cblas_sgemm", used ? "; " : "", candidates[i]);
      dlclose(handle);
      continue;
    }
    sgemm = found;
    set_threads = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
    get_threads = (get_threads_fn)dlsym(handle, "openblas_get_num_threads");
    snprintf(loaded_from, sizeof loaded_from, "%s", candidates[i]);
    return 1;
  }
  if (used >= sizeof load_error) load_error[sizeof load_error - 1] = '\0';
  return 0;
}

#define CHECK(call)                                                                    \
  do {                                                                                 \
    if ((call) != napi_ok) {                                                           \
      napi_throw_error(env, NULL, "blas_matmul: N-API call failed: " #call);          \
      return NULL;                                                                     \
    }                                                                                  \
  } while (0)

static napi_value make_string(napi_env env, const char *text) {
  napi_value value;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &value);
  return value;
}

/* load() -> { library, threads } on success, { error } when no BLAS with cblas_sgemm is found. */
static napi_value js_load(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  CHECK(napi_create_object(env, &result));
  if (!load_blas()) {
    CHECK(napi_set_named_property(env, result, "error", make_string(env, load_error)));
    return result;
  }
  CHECK(napi_set_named_property(env, result, "library", make_string(env, loaded_from)));
  napi_value threads;
  CHECK(napi_create_int32(env, get_threads ? get_threads() : 0, &threads));
  CHECK(napi_set_named_property(env, result, "threads", threads));
  return result;
}

/* setThreads(n): OpenBLAS's pool size; a no-op (returns false) for BLASes without the call. */
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t threads = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &threads) != napi_ok || threads < 1) {
    napi_throw_type_error(env, NULL, "blas_matmul.setThreads: expected an integer >= 1");
    return NULL;
  }
  napi_value ok;
  if (load_blas() && set_threads) set_threads(threads);
  CHECK(napi_get_boolean(env, sgemm != NULL && set_threads != NULL, &ok));
  return ok;
}

/*
 * sgemm(heap, transA, transB, m, n, k, aOffset, bOffset, cOffset, batch, aStride, bStride)
 * For each i < batch: C_i (m x n) = op(A_i) (m x k) * op(B_i) (k x n), row-major, where
 * A_i starts at element aOffset + i*aStride of the Float32Array heap (a stride of 0 repeats one
 * matrix across the batch: broadcasting), likewise B_i, and C_i at cOffset + i*m*n.
 * Offsets are in float32 elements. Every extent is checked against the heap's length, because a
 * wrong offset would otherwise write over the wasm module's memory.
 */
static napi_value js_sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 12) {
    napi_throw_type_error(env, NULL, "blas_matmul.sgemm: expected 12 arguments");
    return NULL;
  }
  if (!sgemm) {
    napi_throw_error(env, NULL, "blas_matmul.sgemm: no BLAS loaded (call load() first)");
    return NULL;
  }
  bool is_typed = false;
  CHECK(napi_is_typedarray(env, argv[0], &is_typed));
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (is_typed) CHECK(napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL));
  if (!is_typed || type != napi_float32_array) {
    napi_throw_type_error(env, NULL, "blas_matmul.sgemm: heap must be a Float32Array");
    return NULL;
  }
  bool trans_a = false, trans_b = false;
  CHECK(napi_get_value_bool(env, argv[1], &trans_a));
  CHECK(napi_get_value_bool(env, argv[2], &trans_b));
  int64_t v[9];
  for (int i = 0; i < 9; i++) {
    if (napi_get_value_int64(env, argv[3 + i], &v[i]) != napi_ok || v[i] < 0) {
      napi_throw_type_error(env, NULL, "blas_matmul.sgemm: sizes, offsets and strides must be integers >= 0");
      return NULL;
    }
  }
  int64_t m = v[0], n = v[1], k = v[2], a_off = v[3], b_off = v[4], c_off = v[5], batch = v[6],
          a_stride = v[7], b_stride = v[8];
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
    napi_throw_range_error(env, NULL, "blas_matmul.sgemm: a dimension exceeds the BLAS int range");
    return NULL;
  }
  if (batch == 0 || m == 0 || n == 0) return NULL;
  int64_t len = (int64_t)length;
  if (a_off + (batch - 1) * a_stride + m * k > len || b_off + (batch - 1) * b_stride + k * n > len ||
      c_off + batch * m * n > len) {
    napi_throw_range_error(env, NULL, "blas_matmul.sgemm: a matrix extends past the end of the heap");
    return NULL;
  }
  float *heap = (float *)data;
  int lda = (int)(trans_a ? m : k), ldb = (int)(trans_b ? k : n);
  for (int64_t i = 0; i < batch; i++) {
    float *c = heap + c_off + i * m * n;
    if (k == 0) {
      memset(c, 0, (size_t)(m * n) * sizeof(float));
      continue;
    }
    sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS, trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS,
          (int)m, (int)n, (int)k, 1.0f, heap + a_off + i * a_stride, lda, heap + b_off + i * b_stride, ldb,
          0.0f, c, (int)n);
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"load", NULL, js_load, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"sgemm", NULL, js_sgemm, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
