/*
 * grng's optional native matMul: cblas_sgemm from a BLAS found at run time (dlopen), applied to
 * float32 matrices that live in a JavaScript typed array (tfjs-backend-wasm's heap).
 *
 * Why dlopen rather than linking: the addon must build on machines without BLAS development
 * files (no cblas.h, no libopenblas.so symlink), and must load on machines with no BLAS at all,
 * where grng then keeps the wasm kernel. So the prototype of cblas_sgemm is declared here.
 */
#include <dlfcn.h>
#include <float.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CBLAS enum values are fixed by the CBLAS standard (netlib cblas.h). */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112, CBLAS_UPPER = 121 };

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef double (*dsdot_fn)(int n, const float *x, int incx, const float *y, int incy);
typedef void (*ssyrk_fn)(int order, int uplo, int trans, int n, int k, float alpha, const float *a,
                         int lda, float beta, float *c, int ldc);
typedef void (*dgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, double alpha,
                         const double *a, int lda, const double *b, int ldb, double beta, double *c,
                         int ldc);
/* LAPACK's Fortran interface (dpotrf_, dpotri_): every argument by reference, hidden string
 * lengths omitted, which the gfortran ABI tolerates for single-character arguments. */
typedef void (*potr_fn)(const char *uplo, const int *n, double *a, const int *lda, int *info);
typedef void (*set_threads_fn)(int threads);
typedef int (*get_threads_fn)(void);

static sgemm_fn sgemm = NULL;
static ssyrk_fn ssyrk = NULL;
static dsdot_fn dsdot = NULL;
/* For spdInverse; NULL when the library has no LAPACK (the reference libblas has none). */
static dgemm_fn dgemm = NULL;
static potr_fn dpotrf = NULL;
static potr_fn dpotri = NULL;
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
  /* OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call before they sleep, so
   * between the products of a training step they keep both cores of a small machine busy: ~2x
   * the CPU time of the step, taken from the dashboard, the browser and the recorder. 2^16
   * cycles measured the same step time (784-512-512-10 SGD, 6.3 vs 6.2 ms) at 15-20% less CPU.
   * Read by OpenBLAS when it loads, so it is set just before; a value the user set wins. */
  setenv("OPENBLAS_THREAD_TIMEOUT", "16", 0);
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
    ssyrk = (ssyrk_fn)dlsym(handle, "cblas_ssyrk");
    dsdot = (dsdot_fn)dlsym(handle, "cblas_dsdot");
    dgemm = (dgemm_fn)dlsym(handle, "cblas_dgemm");
    dpotrf = (potr_fn)dlsym(handle, "dpotrf_");
    dpotri = (potr_fn)dlsym(handle, "dpotri_");
    if (!dpotrf || !dpotri || !dgemm) {
      /* Reference BLAS: LAPACK lives next to it (liblapack.so.3 links libblas.so.3 itself). */
      void *lapack = dlopen("liblapack.so.3", RTLD_NOW | RTLD_LOCAL);
      if (lapack && !dgemm) dgemm = (dgemm_fn)dlsym(lapack, "cblas_dgemm");
      if (lapack) {
        dpotrf = (potr_fn)dlsym(lapack, "dpotrf_");
        dpotri = (potr_fn)dlsym(lapack, "dpotri_");
      }
      if (!dpotrf || !dpotri || !dgemm) dpotrf = dpotri = NULL;
    }
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
      napi_throw_error(env, NULL, "grng_native: N-API call failed: " #call);          \
      return NULL;                                                                     \
    }                                                                                  \
  } while (0)

static napi_value make_string(napi_env env, const char *text) {
  napi_value value;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &value);
  return value;
}

/* The Float32Array heap argument and its length in elements; NULL after throwing a TypeError
 * that names the function. */
static float *float_heap(napi_env env, napi_value value, const char *who, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *data = NULL;
  *length = 0;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &data, NULL, NULL) != napi_ok || type != napi_float32_array) {
    char message[160];
    snprintf(message, sizeof message, "grng_native.%s: heap must be a Float32Array", who);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  return (float *)data;
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
  napi_value gram;
  CHECK(napi_get_boolean(env, ssyrk != NULL, &gram));
  CHECK(napi_set_named_property(env, result, "gram", gram));
  napi_value lapack;
  CHECK(napi_get_boolean(env, dpotrf != NULL, &lapack));
  CHECK(napi_set_named_property(env, result, "lapack", lapack));
  return result;
}

/* setThreads(n): OpenBLAS's pool size; a no-op (returns false) for BLASes without the call. */
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t threads = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &threads) != napi_ok || threads < 1) {
    napi_throw_type_error(env, NULL, "grng_native.setThreads: expected an integer >= 1");
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
    napi_throw_type_error(env, NULL, "grng_native.sgemm: expected 12 arguments");
    return NULL;
  }
  if (!sgemm) {
    napi_throw_error(env, NULL, "grng_native.sgemm: no BLAS loaded (call load() first)");
    return NULL;
  }
  size_t length = 0;
  float *data = float_heap(env, argv[0], "sgemm", &length);
  if (!data) return NULL;
  bool trans_a = false, trans_b = false;
  CHECK(napi_get_value_bool(env, argv[1], &trans_a));
  CHECK(napi_get_value_bool(env, argv[2], &trans_b));
  int64_t v[9];
  for (int i = 0; i < 9; i++) {
    if (napi_get_value_int64(env, argv[3 + i], &v[i]) != napi_ok || v[i] < 0) {
      napi_throw_type_error(env, NULL, "grng_native.sgemm: sizes, offsets and strides must be integers >= 0");
      return NULL;
    }
  }
  int64_t m = v[0], n = v[1], k = v[2], a_off = v[3], b_off = v[4], c_off = v[5], batch = v[6],
          a_stride = v[7], b_stride = v[8];
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
    napi_throw_range_error(env, NULL, "grng_native.sgemm: a dimension exceeds the BLAS int range");
    return NULL;
  }
  if (batch == 0 || m == 0 || n == 0) return NULL;
  int64_t len = (int64_t)length;
  if (a_off + (batch - 1) * a_stride + m * k > len || b_off + (batch - 1) * b_stride + k * n > len ||
      c_off + batch * m * n > len) {
    napi_throw_range_error(env, NULL, "grng_native.sgemm: a matrix extends past the end of the heap");
    return NULL;
  }
  float *heap = data;
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

/*
 * gramUpdate(heap, m, n, xOffset, previousOffset, outOffset, alpha, beta)
 * OUT (n x n) = alpha * X^T X + beta * PREVIOUS, X m x n row-major; previousOffset < 0 means no
 * PREVIOUS (beta ignored). The symmetric product through ssyrk costs half a general product's
 * flops and no transposed copy of X; the upper triangle it computes is mirrored into the lower.
 * This is K-FAC's factor statistic and its moving average in one call.
 */
static napi_value js_gram_update(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 8) {
    napi_throw_type_error(env, NULL, "grng_native.gramUpdate: expected 8 arguments");
    return NULL;
  }
  if (!ssyrk) {
    napi_throw_error(env, NULL, "grng_native.gramUpdate: no cblas_ssyrk loaded (call load() first)");
    return NULL;
  }
  size_t length = 0;
  float *data = float_heap(env, argv[0], "gramUpdate", &length);
  if (!data) return NULL;
  int64_t v[5];
  for (int i = 0; i < 5; i++) {
    if (napi_get_value_int64(env, argv[1 + i], &v[i]) != napi_ok || (v[i] < 0 && i != 3)) {
      napi_throw_type_error(env, NULL, "grng_native.gramUpdate: sizes and offsets must be integers >= 0");
      return NULL;
    }
  }
  double alpha = 0, beta = 0;
  CHECK(napi_get_value_double(env, argv[6], &alpha));
  CHECK(napi_get_value_double(env, argv[7], &beta));
  int64_t m = v[0], n = v[1], x_off = v[2], prev_off = v[3], out_off = v[4];
  int64_t len = (int64_t)length;
  if (m > INT32_MAX || n == 0 || n > 46340 || x_off + m * n > len || out_off + n * n > len ||
      (prev_off >= 0 && prev_off + n * n > len)) {
    napi_throw_range_error(env, NULL, "grng_native.gramUpdate: a matrix extends past the end of the heap");
    return NULL;
  }
  float *heap = data;
  float *out = heap + out_off;
  size_t nn = (size_t)n * (size_t)n;
  if (prev_off >= 0) memmove(out, heap + prev_off, nn * sizeof(float));
  float b = prev_off >= 0 ? (float)beta : 0.0f;
  if (m > 0) ssyrk(CBLAS_ROW_MAJOR, CBLAS_UPPER, CBLAS_TRANS, (int)n, (int)m, (float)alpha, heap + x_off, (int)n, b, out, (int)n);
  else if (prev_off >= 0) for (size_t i = 0; i < nn; i++) out[i] *= b;
  /* Mirror in 64x64 tiles: a plain row loop reads the upper triangle down its columns, which
   * costs more than the product itself at n = 785 (a cache miss per element). */
  enum { TILE = 64 };
  for (int64_t r0 = 0; r0 < n; r0 += TILE)
    for (int64_t c0 = 0; c0 <= r0; c0 += TILE)
      for (int64_t r = r0; r < r0 + TILE && r < n; r++)
        for (int64_t c = c0; c < c0 + TILE && c < r; c++) out[r * n + c] = out[c * n + r];
  return NULL;
}

/* Rademacher probe entries (+1/-1) from a fixed LCG: the residual estimate is deterministic. */
static double probe_sign(uint64_t *state) {
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (*state >> 63) ? 1.0 : -1.0;
}

enum { RESIDUAL_PROBES = 4 };

/*
 * spdInverse(heap, n, mOffset, xOffset) -> residual >= 0, or -info when M is not positive
 * definite (dpotrf's info: the order of the leading minor that is not), or -1e300 when memory
 * ran out.
 * X (n x n, float32, at xOffset) = M^-1 for the symmetric positive definite M (float32 at
 * mOffset; only its lower triangle is read, in row-major terms the upper), by Cholesky in
 * float64: dpotrf + dpotri, about n^3 flops against ~4 n^3 per Newton-Schulz iteration.
 * The residual ||I - M X||_F / sqrt(n) is estimated in float64 for the float32 X actually
 * returned, from RESIDUAL_PROBES random sign vectors v (E||R v||^2 = ||R||_F^2): O(n^2).
 */
static napi_value js_spd_inverse(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 4) {
    napi_throw_type_error(env, NULL, "grng_native.spdInverse: expected 4 arguments");
    return NULL;
  }
  if (!dpotrf) {
    napi_throw_error(env, NULL, "grng_native.spdInverse: no LAPACK loaded (call load() first)");
    return NULL;
  }
  size_t length = 0;
  float *data = float_heap(env, argv[0], "spdInverse", &length);
  if (!data) return NULL;
  int64_t v[3];
  for (int i = 0; i < 3; i++) {
    if (napi_get_value_int64(env, argv[1 + i], &v[i]) != napi_ok || v[i] < 0) {
      napi_throw_type_error(env, NULL, "grng_native.spdInverse: size and offsets must be integers >= 0");
      return NULL;
    }
  }
  int64_t n64 = v[0], m_off = v[1], x_off = v[2];
  if (n64 == 0 || n64 > 46340) {
    napi_throw_range_error(env, NULL, "grng_native.spdInverse: n must be in 1..46340");
    return NULL;
  }
  if (m_off + n64 * n64 > (int64_t)length || x_off + n64 * n64 > (int64_t)length) {
    napi_throw_range_error(env, NULL, "grng_native.spdInverse: a matrix extends past the end of the heap");
    return NULL;
  }
  int n = (int)n64;
  size_t nn = (size_t)n * (size_t)n;
  float *heap = data;
  double *m = malloc(nn * sizeof(double));
  double *x = malloc(nn * sizeof(double));
  double *probes = malloc((size_t)n * 2 * RESIDUAL_PROBES * sizeof(double));
  double result;
  if (!m || !x || !probes) {
    result = -1e300;
    goto done;
  }
  for (size_t i = 0; i < nn; i++) m[i] = x[i] = heap[m_off + i];
  int info_code = 0;
  /* Column-major "L" is row-major upper: which triangle does not matter for a symmetric M. */
  dpotrf("L", &n, x, &n, &info_code);
  if (info_code != 0) {
    result = -(double)(info_code > 0 ? info_code : 1);
    goto done;
  }
  dpotri("L", &n, x, &n, &info_code);
  if (info_code != 0) {
    result = -(double)(info_code > 0 ? info_code : 1);
    goto done;
  }
  /* dpotri leaves one triangle (column-major lower: x[i + j n], i >= j); mirror it, round to
   * float32 for the output, and keep the rounded values for the residual. */
  float *out = heap + x_off;
  for (int r = 0; r < n; r++) {
    for (int c = r; c < n; c++) {
      float value = (float)x[c + (size_t)r * n];
      out[(size_t)r * n + c] = value;
      out[(size_t)c * n + r] = value;
    }
  }
  for (size_t i = 0; i < nn; i++) x[i] = out[i];
  /* V (n x P) random signs; Y = X V; Z = M Y - V. */
  double *vs = probes, *ys = probes + (size_t)n * RESIDUAL_PROBES;
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  for (size_t i = 0; i < (size_t)n * RESIDUAL_PROBES; i++) vs[i] = probe_sign(&state);
  dgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, n, RESIDUAL_PROBES, n, 1.0, x, n, vs, RESIDUAL_PROBES, 0.0, ys, RESIDUAL_PROBES);
  dgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, n, RESIDUAL_PROBES, n, 1.0, m, n, ys, RESIDUAL_PROBES, -1.0, vs, RESIDUAL_PROBES);
  double squares = 0;
  for (size_t i = 0; i < (size_t)n * RESIDUAL_PROBES; i++) squares += vs[i] * vs[i];
  result = sqrt(squares / RESIDUAL_PROBES / n);
done:
  free(m);
  free(x);
  free(probes);
  napi_value value;
  CHECK(napi_create_double(env, result, &value));
  return value;
}

/* The float32 array argument i of a call, checked against the heap: NULL after throwing. */
/* The arguments of an elementwise entry point: exactly `expected` of them, argv[1] the element
 * count n in 0..limit. False after throwing a TypeError that names the function. */
static bool elementwise_args(napi_env env, napi_callback_info info, size_t expected, napi_value *argv, int64_t *n, int64_t limit, const char *who) {
  size_t argc = expected;
  char message[160];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != expected) {
    snprintf(message, sizeof message, "grng_native.%s: expected %zu arguments", who, expected);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  if (napi_get_value_int64(env, argv[1], n) != napi_ok || *n < 0 || *n > limit) {
    snprintf(message, sizeof message, "grng_native.%s: n must be an integer in 0..%lld", who, (long long)limit);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  return true;
}

static float *heap_array(napi_env env, napi_value heap_value, napi_value offset_value, int64_t count, const char *what, const char *who) {
  size_t length = 0;
  float *heap = float_heap(env, heap_value, who, &length);
  int64_t offset = -1;
  if (!heap) return NULL;
  if (napi_get_value_int64(env, offset_value, &offset) != napi_ok || offset < 0 || count < 0 || offset + count > (int64_t)length) {
    char message[160];
    snprintf(message, sizeof message, "grng_native.%s: %s extends past the end of the heap", who, what);
    napi_throw_range_error(env, NULL, message);
    return NULL;
  }
  return heap + offset;
}

/*
 * sophiaUpdate(heap, n, gOffset, mOffset, hOffset, pOffset, mOutOffset, uOutOffset, b1, gamma,
 *              eps, minusEta, decay) -> count of coordinates not clipped
 * SophiaG's per-coordinate step in one pass over the parameter (instead of ~14 tfjs kernels,
 * each a pass over memory and an allocation):
 *   m' = b1 m + (1 - b1) g;  r = m' / max(gamma h, eps);  u = minusEta clip(r, -1, 1) + decay p
 * NaN propagates (no fmaxf, which would hide it) so the non-finite guard still sees it; decay 0
 * leaves p out (0 * inf would be NaN).
 */
static napi_value js_sophia_update(napi_env env, napi_callback_info info) {
  napi_value argv[13];
  int64_t n = 0;
  if (!elementwise_args(env, info, 13, argv, &n, INT64_MAX, "sophiaUpdate")) return NULL;
  const float *g = heap_array(env, argv[0], argv[2], n, "g", "sophiaUpdate");
  const float *m = g ? heap_array(env, argv[0], argv[3], n, "m", "sophiaUpdate") : NULL;
  const float *h = m ? heap_array(env, argv[0], argv[4], n, "h", "sophiaUpdate") : NULL;
  const float *p = h ? heap_array(env, argv[0], argv[5], n, "p", "sophiaUpdate") : NULL;
  float *m_out = p ? heap_array(env, argv[0], argv[6], n, "m out", "sophiaUpdate") : NULL;
  float *u_out = m_out ? heap_array(env, argv[0], argv[7], n, "update out", "sophiaUpdate") : NULL;
  if (!u_out) return NULL;
  double hyper[5];
  for (int i = 0; i < 5; i++) CHECK(napi_get_value_double(env, argv[8 + i], &hyper[i]));
  const float b1 = (float)hyper[0], one_minus_b1 = (float)(1.0 - hyper[0]), gamma = (float)hyper[1],
              eps = (float)hyper[2], minus_eta = (float)hyper[3], decay = (float)hyper[4];
  int64_t unclipped = 0;
  for (int64_t i = 0; i < n; i++) {
    float mi = b1 * m[i] + one_minus_b1 * g[i];
    float denom = gamma * h[i];
    if (denom < eps) denom = eps;
    float r = mi / denom;
    unclipped += fabsf(r) < 1.0f;
    r = r > 1.0f ? 1.0f : r < -1.0f ? -1.0f : r;
    float u = minus_eta * r;
    if (decay != 0.0f) u += decay * p[i];
    m_out[i] = mi;
    u_out[i] = u;
  }
  napi_value result;
  CHECK(napi_create_double(env, (double)unclipped, &result));
  return result;
}

/*
 * dot(heap, n, xOffset, yOffset) -> sum of x[i] * y[i] over n float32 elements, accumulated in
 * float64 (cblas_dsdot; a plain loop where the library lacks it). One read of each operand, where
 * the tfjs way (square or multiply, then a reduction) writes and reads a whole temporary too.
 * NaN and infinities propagate into the result.
 */
static napi_value js_dot(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t n = 0;
  if (!elementwise_args(env, info, 4, argv, &n, INT32_MAX, "dot")) return NULL;
  const float *x = heap_array(env, argv[0], argv[2], n, "x", "dot");
  const float *y = x ? heap_array(env, argv[0], argv[3], n, "y", "dot") : NULL;
  if (!y) return NULL;
  double sum = 0;
  if (dsdot && n > 0) {
    sum = dsdot((int)n, x, 1, y, 1);
  } else {
    double partial[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; j++) partial[j] += (double)x[i + j] * (double)y[i + j];
    for (; i < n; i++) partial[0] += (double)x[i] * (double)y[i];
    sum = (partial[0] + partial[1]) + (partial[2] + partial[3]);
  }
  napi_value result;
  CHECK(napi_create_double(env, sum, &result));
  return result;
}

/*
 * unary(heap, n, xOffset, outOffset, op): out = f(x) elementwise, op 0 = expf, 1 = erff.
 * Why: tfjs-backend-wasm's Exp took 9 ms for 524k values (17 ns each) in the GPT benchmark's
 * attention softmax, and a transformer step makes eight such passes; libm's expf and erff are a
 * few ns. Same values as the tfjs kernels to float32 rounding.
 */
static napi_value js_unary(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int64_t n = 0;
  int32_t op = -1;
  if (!elementwise_args(env, info, 5, argv, &n, INT32_MAX, "unary")) return NULL;
  const float *x = heap_array(env, argv[0], argv[2], n, "x", "unary");
  float *out = x ? heap_array(env, argv[0], argv[3], n, "out", "unary") : NULL;
  if (!out) return NULL;
  if (napi_get_value_int32(env, argv[4], &op) != napi_ok || op < 0 || op > 1) {
    napi_throw_type_error(env, NULL, "grng_native.unary: op must be 0 (exp) or 1 (erf)");
    return NULL;
  }
  if (op == 0)
    for (int64_t i = 0; i < n; i++) out[i] = expf(x[i]);
  else
    for (int64_t i = 0; i < n; i++) out[i] = erff(x[i]);
  return NULL;
}

/*
 * adamUpdate(heap, n, gOffset, muOffset, nuOffset, muOutOffset, nuOutOffset, uOutOffset, b1, b2,
 *            c1, c2, eps)
 * Adam's moment updates and bias-corrected direction in one pass over a parameter:
 *   mu' = b1 mu + (1 - b1) g;  nu' = b2 nu + (1 - b2) g^2;  u = c1 mu' / (sqrt(c2 nu') + eps)
 * with c1 = 1/(1 - b1^t), c2 = 1/(1 - b2^t): what scaleByAdam's ~11 tfjs kernels compute.
 */
static napi_value js_adam_update(napi_env env, napi_callback_info info) {
  napi_value argv[13];
  int64_t n = 0;
  if (!elementwise_args(env, info, 13, argv, &n, INT64_MAX, "adamUpdate")) return NULL;
  const char *who = "adamUpdate";
  const float *g = heap_array(env, argv[0], argv[2], n, "g", who);
  const float *mu = g ? heap_array(env, argv[0], argv[3], n, "mu", who) : NULL;
  const float *nu = mu ? heap_array(env, argv[0], argv[4], n, "nu", who) : NULL;
  float *mu_out = nu ? heap_array(env, argv[0], argv[5], n, "mu out", who) : NULL;
  float *nu_out = mu_out ? heap_array(env, argv[0], argv[6], n, "nu out", who) : NULL;
  float *u_out = nu_out ? heap_array(env, argv[0], argv[7], n, "update out", who) : NULL;
  if (!u_out) return NULL;
  double hyper[5];
  for (int i = 0; i < 5; i++) CHECK(napi_get_value_double(env, argv[8 + i], &hyper[i]));
  const float b1 = (float)hyper[0], one_minus_b1 = (float)(1.0 - hyper[0]), b2 = (float)hyper[1],
              one_minus_b2 = (float)(1.0 - hyper[1]), c1 = (float)hyper[2], c2 = (float)hyper[3],
              eps = (float)hyper[4];
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    float m = b1 * mu[i] + one_minus_b1 * gi;
    float v = b2 * nu[i] + one_minus_b2 * (gi * gi);
    mu_out[i] = m;
    nu_out[i] = v;
    u_out[i] = (m * c1) / (sqrtf(v * c2) + eps);
  }
  return NULL;
}

/*
 * kalmanPrior(heap, n, pOffset, outOffset, rhoG2Offset, fading, q)
 * R-Kalman's prior covariance (diagonal), one pass: with s = rho ||g||^2 read from the heap (a
 * device scalar, so no read-back is needed),
 *   q = 0:  P- = P / (s P + fading)         q > 0:  F = P / fading + q;  P- = F / (s F + 1)
 */
static napi_value js_kalman_prior(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int64_t n = 0;
  if (!elementwise_args(env, info, 7, argv, &n, INT64_MAX, "kalmanPrior")) return NULL;
  const char *who = "kalmanPrior";
  const float *p = heap_array(env, argv[0], argv[2], n, "P", who);
  float *out = p ? heap_array(env, argv[0], argv[3], n, "prior out", who) : NULL;
  const float *s_ptr = out ? heap_array(env, argv[0], argv[4], 1, "rho g2", who) : NULL;
  if (!s_ptr) return NULL;
  double fading = 1, q = 0;
  CHECK(napi_get_value_double(env, argv[5], &fading));
  CHECK(napi_get_value_double(env, argv[6], &q));
  const float s = *s_ptr, f = (float)fading, qf = (float)q;
  if (qf == 0.0f) {
    for (int64_t i = 0; i < n; i++) out[i] = p[i] / (s * p[i] + f);
  } else {
    for (int64_t i = 0; i < n; i++) {
      float faded = p[i] / f + qf;
      out[i] = faded / (s * faded + 1.0f);
    }
  }
  return NULL;
}

/*
 * kalmanPosterior(heap, n, priorOffset, reducedOffset, gainOffset, pOutOffset, uOutOffset, pMin)
 *   -> sum of the new P
 * R-Kalman's posterior and update, one pass: P = clip(P- - P-^2 R, pMin, FLT_MAX) (NaN stays
 * NaN, as tfjs's clip leaves it), u = P- G; the sum of P feeds the tr(P)/n diagnostic.
 */
static napi_value js_kalman_posterior(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int64_t n = 0;
  if (!elementwise_args(env, info, 8, argv, &n, INT64_MAX, "kalmanPosterior")) return NULL;
  const char *who = "kalmanPosterior";
  const float *prior = heap_array(env, argv[0], argv[2], n, "prior", who);
  const float *reduced = prior ? heap_array(env, argv[0], argv[3], n, "reduced", who) : NULL;
  const float *gain = reduced ? heap_array(env, argv[0], argv[4], n, "gain", who) : NULL;
  float *p_out = gain ? heap_array(env, argv[0], argv[5], n, "P out", who) : NULL;
  float *u_out = p_out ? heap_array(env, argv[0], argv[6], n, "update out", who) : NULL;
  if (!u_out) return NULL;
  double p_min = 0;
  CHECK(napi_get_value_double(env, argv[7], &p_min));
  const float floor_value = (float)p_min;
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    float pr = prior[i];
    float post = pr - (pr * pr) * reduced[i];
    if (post < floor_value) post = floor_value;
    if (post > FLT_MAX) post = FLT_MAX; /* as floorAt's clip to the largest float32 */
    p_out[i] = post;
    u_out[i] = pr * gain[i];
    sum += post;
  }
  napi_value result;
  CHECK(napi_create_double(env, sum, &result));
  return result;
}

/*
 * allFinite(heap, n, offset) -> whether none of the n float32 values is NaN or infinite. Reads
 * the exponent bits (all ones only for NaN and infinities) and ORs them over 8 lanes, which the
 * compiler turns into vector code: one memory-bound pass, no early exit, no float arithmetic.
 */
static napi_value js_all_finite(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t n = 0;
  if (!elementwise_args(env, info, 3, argv, &n, INT64_MAX, "allFinite")) return NULL;
  const float *x = heap_array(env, argv[0], argv[2], n, "x", "allFinite");
  if (!x) return NULL;
  const uint32_t *bits = (const uint32_t *)x;
  const uint32_t exponent = 0x7f800000u;
  uint32_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) lanes[j] |= (uint32_t)((bits[i + j] & exponent) == exponent);
  uint32_t bad = 0;
  for (int j = 0; j < 8; j++) bad |= lanes[j];
  for (; i < n; i++) bad |= (uint32_t)((bits[i] & exponent) == exponent);
  napi_value result;
  CHECK(napi_get_boolean(env, bad == 0, &result));
  return result;
}

/*
 * Sliding windows over NHWC images (convolution patches and pooling), for tensors in the wasm
 * heap. tfjs-backend-wasm builds patches from pad, slice and concat, and max pooling's routing from
 * argMax, oneHot and transpose: measured on the benchmark CNN at batch 128, a 2x2 max pool of
 * 28x28x32 took 2.6 s and the 3x3 patches of 14x14x32 44 ms, where one pass over memory is a few
 * milliseconds. The window geometry comes as 12 integers:
 *   n, h, w, c, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w
 * and a window position outside the image is padding.
 */
typedef struct {
  int64_t n, h, w, c, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w;
} window_t;

/* Reads the geometry from argv[first..first+11]; false after throwing a RangeError. */
static bool window_args(napi_env env, napi_value *argv, size_t first, window_t *g, const char *who) {
  int64_t v[12];
  for (int i = 0; i < 12; i++) {
    if (napi_get_value_int64(env, argv[first + i], &v[i]) != napi_ok || v[i] < 0 || v[i] > INT32_MAX) {
      char message[160];
      snprintf(message, sizeof message, "grng_native.%s: window argument %d must be an integer in 0..2^31-1", who, i);
      napi_throw_range_error(env, NULL, message);
      return false;
    }
  }
  *g = (window_t){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]};
  if (g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 || g->c < 1) {
    char message[160];
    snprintf(message, sizeof message, "grng_native.%s: kernel, strides and channels must be >= 1", who);
    napi_throw_range_error(env, NULL, message);
    return false;
  }
  return true;
}

static bool call_args(napi_env env, napi_callback_info info, size_t expected, napi_value *argv, const char *who) {
  size_t argc = expected;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != expected) {
    char message[160];
    snprintf(message, sizeof message, "grng_native.%s: expected %zu arguments", who, expected);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  return true;
}

/*
 * patches(heap, n, h, w, c, kh, kw, sh, sw, padTop, padLeft, outH, outW, padValue, xOffset,
 *         outOffset, scale, homogeneous)
 * im2col: out [n, outH, outW, kh*kw*c (+1)], each patch in (row i, column j, channel) order, the
 * row-major flattening of an HWIO kernel, times scale (padding reads padValue, scaled too). With
 * homogeneous, each patch ends with scale itself: KFC's rows [s*a; s] in the same pass.
 */
static napi_value js_patches(napi_env env, napi_callback_info info) {
  napi_value argv[18];
  window_t g;
  const char *who = "patches";
  if (!call_args(env, info, 18, argv, who) || !window_args(env, argv, 1, &g, who)) return NULL;
  double pad_value = 0, scale_value = 1;
  bool homogeneous = false;
  CHECK(napi_get_value_double(env, argv[13], &pad_value));
  CHECK(napi_get_value_double(env, argv[16], &scale_value));
  CHECK(napi_get_value_bool(env, argv[17], &homogeneous));
  const float scale = (float)scale_value;
  const int64_t patch = g.kh * g.kw * g.c + (homogeneous ? 1 : 0);
  const float *x = heap_array(env, argv[0], argv[14], g.n * g.h * g.w * g.c, "x", who);
  float *out = x ? heap_array(env, argv[0], argv[15], g.n * g.out_h * g.out_w * patch, "out", who) : NULL;
  if (!out) return NULL;
  const float fill = (float)pad_value;
  const size_t run = (size_t)g.c * sizeof(float);
  for (int64_t b = 0; b < g.n; b++)
    for (int64_t oh = 0; oh < g.out_h; oh++)
      for (int64_t ow = 0; ow < g.out_w; ow++) {
        float *dst = out + ((b * g.out_h + oh) * g.out_w + ow) * patch;
        for (int64_t i = 0; i < g.kh; i++) {
          const int64_t row = oh * g.sh - g.pad_top + i;
          for (int64_t j = 0; j < g.kw; j++, dst += g.c) {
            const int64_t col = ow * g.sw - g.pad_left + j;
            if (row < 0 || row >= g.h || col < 0 || col >= g.w) {
              for (int64_t k = 0; k < g.c; k++) dst[k] = fill;
            } else if (g.c < 16) { /* a call to memcpy per few bytes costs more than the copy */
              const float *src = x + ((b * g.h + row) * g.w + col) * g.c;
              for (int64_t k = 0; k < g.c; k++) dst[k] = src[k];
            } else {
              memcpy(dst, x + ((b * g.h + row) * g.w + col) * g.c, run);
            }
          }
        }
        if (homogeneous) *dst = 1.0f;
        if (scale != 1.0f) {
          float *row_start = out + ((b * g.out_h + oh) * g.out_w + ow) * patch;
          for (int64_t k = 0; k < patch; k++) row_start[k] *= scale;
        }
      }
  return NULL;
}

/*
 * foldPatches(heap, n, h, w, c, kh, kw, sh, sw, padTop, padLeft, outH, outW, pOffset, outOffset)
 * col2im, the adjoint of patches: out [n, h, w, c] = the sum of every patch value read from each
 * image position; padding positions are dropped.
 */
static napi_value js_fold_patches(napi_env env, napi_callback_info info) {
  napi_value argv[15];
  window_t g;
  const char *who = "foldPatches";
  if (!call_args(env, info, 15, argv, who) || !window_args(env, argv, 1, &g, who)) return NULL;
  const int64_t patch = g.kh * g.kw * g.c;
  const float *p = heap_array(env, argv[0], argv[13], g.n * g.out_h * g.out_w * patch, "patches", who);
  float *out = p ? heap_array(env, argv[0], argv[14], g.n * g.h * g.w * g.c, "out", who) : NULL;
  if (!out) return NULL;
  memset(out, 0, (size_t)(g.n * g.h * g.w * g.c) * sizeof(float));
  for (int64_t b = 0; b < g.n; b++)
    for (int64_t oh = 0; oh < g.out_h; oh++)
      for (int64_t ow = 0; ow < g.out_w; ow++) {
        const float *src = p + ((b * g.out_h + oh) * g.out_w + ow) * patch;
        for (int64_t i = 0; i < g.kh; i++) {
          const int64_t row = oh * g.sh - g.pad_top + i;
          for (int64_t j = 0; j < g.kw; j++, src += g.c) {
            const int64_t col = ow * g.sw - g.pad_left + j;
            if (row < 0 || row >= g.h || col < 0 || col >= g.w) continue;
            float *dst = out + ((b * g.h + row) * g.w + col) * g.c;
            for (int64_t k = 0; k < g.c; k++) dst[k] += src[k];
          }
        }
      }
  return NULL;
}

/*
 * maxPool(heap, n, h, w, c, kh, kw, sh, sw, padTop, padLeft, outH, outW, xOffset, outOffset,
 *         indexOffset)
 * out [n, outH, outW, c] the maximum of each window over the positions inside the image, and
 * index (int32, same shape) the flat position in x it came from: the first maximum in window
 * order, as tfjs's argMax picks; a NaN wins over numbers so the non-finite guard sees it.
 */
static napi_value js_max_pool(napi_env env, napi_callback_info info) {
  napi_value argv[16];
  window_t g;
  const char *who = "maxPool";
  if (!call_args(env, info, 16, argv, who) || !window_args(env, argv, 1, &g, who)) return NULL;
  const int64_t outputs = g.n * g.out_h * g.out_w * g.c;
  if (g.n * g.h * g.w * g.c > INT32_MAX) {
    napi_throw_range_error(env, NULL, "grng_native.maxPool: input has more than 2^31-1 values");
    return NULL;
  }
  const float *x = heap_array(env, argv[0], argv[13], g.n * g.h * g.w * g.c, "x", who);
  float *out = x ? heap_array(env, argv[0], argv[14], outputs, "out", who) : NULL;
  int32_t *index = out ? (int32_t *)heap_array(env, argv[0], argv[15], outputs, "index", who) : NULL;
  if (!index) return NULL;
  for (int64_t b = 0; b < g.n; b++)
    for (int64_t oh = 0; oh < g.out_h; oh++)
      for (int64_t ow = 0; ow < g.out_w; ow++) {
        float *best = out + ((b * g.out_h + oh) * g.out_w + ow) * g.c;
        int32_t *at = index + ((b * g.out_h + oh) * g.out_w + ow) * g.c;
        bool first = true;
        for (int64_t i = 0; i < g.kh; i++) {
          const int64_t row = oh * g.sh - g.pad_top + i;
          if (row < 0 || row >= g.h) continue;
          for (int64_t j = 0; j < g.kw; j++) {
            const int64_t col = ow * g.sw - g.pad_left + j;
            if (col < 0 || col >= g.w) continue;
            const int64_t base = ((b * g.h + row) * g.w + col) * g.c;
            const float *v = x + base;
            if (first) {
              for (int64_t k = 0; k < g.c; k++) {
                best[k] = v[k];
                at[k] = (int32_t)(base + k);
              }
              first = false;
              continue;
            }
            /* Branch-free, so the channel loop vectorises. */
            for (int64_t k = 0; k < g.c; k++) {
              const float value = v[k], current = best[k];
              const int take = (value > current) | ((value != value) & (current == current));
              best[k] = take ? value : current;
              at[k] = take ? (int32_t)(base + k) : at[k];
            }
          }
        }
        if (first) /* a window wholly in the padding: no value; tfjs gives -inf there too */
          for (int64_t k = 0; k < g.c; k++) {
            best[k] = -INFINITY;
            at[k] = -1;
          }
      }
  return NULL;
}

/*
 * gatherAt(heap, count, srcOffset, srcLength, indexOffset, outOffset): out[o] = src[index[o]];
 * an index of -1 (no source) gives 0.
 * scatterAdd(heap, count, outLength, srcOffset, indexOffset, outOffset): out = 0, then
 * out[index[o]] += src[o]; -1 is skipped. The two are each other's adjoint: the gradient of max
 * pooling routes dy back to the maxima, and the gradient of that routing gathers.
 */
static napi_value js_gather_at(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int64_t count = 0, length = 0;
  const char *who = "gatherAt";
  if (!elementwise_args(env, info, 6, argv, &count, INT32_MAX, who)) return NULL;
  if (napi_get_value_int64(env, argv[3], &length) != napi_ok || length < 0 || length > INT32_MAX) {
    napi_throw_range_error(env, NULL, "grng_native.gatherAt: source length must be in 0..2^31-1");
    return NULL;
  }
  const float *src = heap_array(env, argv[0], argv[2], length, "source", who);
  const int32_t *index = src ? (const int32_t *)heap_array(env, argv[0], argv[4], count, "index", who) : NULL;
  float *out = index ? heap_array(env, argv[0], argv[5], count, "out", who) : NULL;
  if (!out) return NULL;
  for (int64_t o = 0; o < count; o++) {
    const int32_t at = index[o];
    if (at < -1 || at >= length) {
      napi_throw_range_error(env, NULL, "grng_native.gatherAt: index out of range");
      return NULL;
    }
    out[o] = at < 0 ? 0.0f : src[at];
  }
  return NULL;
}

static napi_value js_scatter_add(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int64_t count = 0, length = 0;
  const char *who = "scatterAdd";
  if (!elementwise_args(env, info, 6, argv, &count, INT32_MAX, who)) return NULL;
  if (napi_get_value_int64(env, argv[2], &length) != napi_ok || length < 0 || length > INT32_MAX) {
    napi_throw_range_error(env, NULL, "grng_native.scatterAdd: output length must be in 0..2^31-1");
    return NULL;
  }
  const float *src = heap_array(env, argv[0], argv[3], count, "source", who);
  const int32_t *index = src ? (const int32_t *)heap_array(env, argv[0], argv[4], count, "index", who) : NULL;
  float *out = index ? heap_array(env, argv[0], argv[5], length, "out", who) : NULL;
  if (!out) return NULL;
  memset(out, 0, (size_t)length * sizeof(float));
  for (int64_t o = 0; o < count; o++) {
    const int32_t at = index[o];
    if (at < -1 || at >= length) {
      napi_throw_range_error(env, NULL, "grng_native.scatterAdd: index out of range");
      return NULL;
    }
    if (at >= 0) out[at] += src[o];
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"load", NULL, js_load, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, js_set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"sgemm", NULL, js_sgemm, NULL, NULL, NULL, napi_default, NULL},
      {"spdInverse", NULL, js_spd_inverse, NULL, NULL, NULL, napi_default, NULL},
      {"gramUpdate", NULL, js_gram_update, NULL, NULL, NULL, napi_default, NULL},
      {"sophiaUpdate", NULL, js_sophia_update, NULL, NULL, NULL, napi_default, NULL},
      {"dot", NULL, js_dot, NULL, NULL, NULL, napi_default, NULL},
      {"unary", NULL, js_unary, NULL, NULL, NULL, napi_default, NULL},
      {"allFinite", NULL, js_all_finite, NULL, NULL, NULL, napi_default, NULL},
      {"adamUpdate", NULL, js_adam_update, NULL, NULL, NULL, napi_default, NULL},
      {"kalmanPrior", NULL, js_kalman_prior, NULL, NULL, NULL, napi_default, NULL},
      {"kalmanPosterior", NULL, js_kalman_posterior, NULL, NULL, NULL, napi_default, NULL},
      {"patches", NULL, js_patches, NULL, NULL, NULL, napi_default, NULL},
      {"foldPatches", NULL, js_fold_patches, NULL, NULL, NULL, napi_default, NULL},
      {"maxPool", NULL, js_max_pool, NULL, NULL, NULL, napi_default, NULL},
      {"gatherAt", NULL, js_gather_at, NULL, NULL, NULL, napi_default, NULL},
      {"scatterAdd", NULL, js_scatter_add, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
