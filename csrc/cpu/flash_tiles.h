#pragma once
// Building blocks of the flash-style CPU attention kernels (varlen_attention, gated_cross_attention):
// operands laid out as BLAS reads them, BLAS GEMMs on row-major tiles, the online-softmax and backward
// score-tile steps, and a dynamic task scheduler whose workers run single-threaded BLAS.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

// The elementwise softmax loops have an AVX2+FMA version (intrinsics, chosen at run time where the
// CPU has them) and a portable one; GEMMs come from libtorch's BLAS, which dispatches on its own.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define VLMOPS_X86_AVX2 1
#endif

// The BLAS that libtorch links (MKL or OpenBLAS) exports the Fortran GEMMs; ATen's own C++ wrappers
// (at::native::cpublas::gemm) are not exported. Weak, so a libtorch without them fails with a clear
// error at the first call rather than at load time.
extern "C" {
__attribute__((weak)) void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                                  const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                                  const float* beta, float* c, const int* ldc);
__attribute__((weak)) void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                                  const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
                                  const double* beta, double* c, const int* ldc);
// MKL's per-thread thread count (the C entry point; mkl_service.h maps mkl_set_num_threads_local to it):
// each worker below runs its GEMMs on its own core; left alone, MKL would start a thread team per
// call from every worker and oversubscribe the cores.
__attribute__((weak)) int MKL_Set_Num_Threads_Local(int threads);
}

namespace vlmops {
namespace flash_tiles {

enum class TransposeType { NoTranspose, Transpose };

inline bool fits_blas_int(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

// Column-major C [m, n] = alpha * op(A) @ op(B) + beta * C, as BLAS defines it; a row-major matrix
// is the column-major view of its transpose, which is how the kernels below call it. Sizes and
// leading dimensions are BLAS ints: the operands come from blas_operand() and the tiles are small.
template <class T>
inline void gemm(TransposeType transa, TransposeType transb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                 int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  TORCH_INTERNAL_ASSERT(fits_blas_int(m) && fits_blas_int(n) && fits_blas_int(k) && fits_blas_int(lda) &&
                            fits_blas_int(ldb) && fits_blas_int(ldc),
                        "flash_tiles::gemm: a size or leading dimension does not fit a BLAS int");
  const char ta = transa == TransposeType::Transpose ? 'T' : 'N', tb = transb == TransposeType::Transpose ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
  } else {
    dgemm_(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
  }
}

// Operands of the kernels are [..., rows, ..., D] tensors read as rows of D elements: unit stride
// along D (the last dim) and a stride between rows that BLAS takes as its leading dimension.

// The leading dimension of t's rows along dim `row_dim`: its stride, or D when the dim has size 1.
// torch leaves the stride of a size-1 dim arbitrary (a [1, H, D] view with stride(0) == 1 is
// "contiguous"), and BLAS rejects a leading dimension below D even when it reads a single row.
inline int64_t leading_dim(const at::Tensor& t, int64_t row_dim) {
  return t.size(row_dim) == 1 ? t.size(-1) : t.stride(row_dim);
}

inline bool unit_stride_rows(const at::Tensor& t) { return t.size(-1) == 1 || t.stride(-1) == 1; }

// t in dtype `acc` with unit stride along D: t itself when it qualifies, else converted or copied once.
inline at::Tensor unit_stride_operand(const at::Tensor& t, at::ScalarType acc) {
  const at::Tensor out = t.scalar_type() == acc ? t : t.to(acc);
  return unit_stride_rows(out) ? out : out.contiguous();
}

// t in dtype `acc` whose rows along `row_dim` BLAS reads in place: unit stride along D and a leading
// dimension in [D, 2^31) (rows that are not overlapping, e.g. not expanded, and a stride that is a BLAS
// int). t itself when it qualifies, else converted or copied once; the contracts bound the rows of a
// contiguous copy (H * D < 2^31).
inline at::Tensor blas_operand(const at::Tensor& t, int64_t row_dim, at::ScalarType acc) {
  at::Tensor out = t.scalar_type() == acc ? t : t.to(acc);
  const auto in_place = [row_dim](const at::Tensor& x) {
    const int64_t ld = leading_dim(x, row_dim);
    return x.numel() == 0 || (unit_stride_rows(x) && ld >= x.size(-1) && fits_blas_int(ld));
  };
  if (in_place(out)) return out;
  out = out.contiguous();
  TORCH_INTERNAL_ASSERT(in_place(out), "flash_tiles::blas_operand: a contiguous operand's rows do not fit BLAS");
  return out;
}

inline void check_blas_available(const char* op) {
  TORCH_CHECK(sgemm_ != nullptr && dgemm_ != nullptr, "vlmops.", op,
              ": the CPU kernel needs the BLAS GEMMs (sgemm_, dgemm_) of libtorch, which this torch build does not "
              "export");
}

// exp(x) for x <= 0: Cody-Waite range reduction, Cephes' degree-5 polynomial (about 1 ulp), the
// power of two built from the exponent bits; exp(x < -87) is 0 and NaN stays NaN.
inline float exp_nonpositive(float x) {
  const float clamped = std::max(x, -87.0f);
  const float shifted = clamped * 1.44269504088896341f + 12582912.0f;  // round(x / ln 2) in the low bits
  const float n = shifted - 12582912.0f;
  const int32_t exponent = std::bit_cast<int32_t>(shifted) - 0x4B400000;
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r * r + r + 1.0f) * std::bit_cast<float>((exponent + 127) << 23);
  return x < -87.0f ? 0.0f : y;
}

#ifdef VLMOPS_X86_AVX2
#define VLMOPS_AVX2 __attribute__((target("avx2,fma")))

// exp_nonpositive on 8 lanes.
VLMOPS_AVX2 inline __m256 exp8_nonpositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.0f);
  const __m256 clamped = _mm256_max_ps(lowest, x);  // max_ps returns its 2nd operand for NaN
  const __m256 shifted = _mm256_fmadd_ps(clamped, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(12582912.0f));
  const __m256 n = _mm256_sub_ps(shifted, _mm256_set1_ps(12582912.0f));
  const __m256i exponent = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), clamped);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 poly = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256 power = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(exponent, _mm256_set1_epi32(127)), 23));
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(poly, power));
}

VLMOPS_AVX2 inline float reduce_max8(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

VLMOPS_AVX2 inline float reduce_sum8(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

VLMOPS_AVX2 inline float row_max_avx2(const float* x, int64_t n) {
  __m256 acc = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + c));
  float result = reduce_max8(acc);
  for (; c < n; ++c) result = std::max(result, x[c]);
  return result;
}

// x[c] = exp(x[c] - shift) in place; returns the sum.
VLMOPS_AVX2 inline float exp_shift_sum_avx2(float* x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + c), vshift));
    _mm256_storeu_ps(x + c, e);
    acc = _mm256_add_ps(acc, e);
  }
  float result = reduce_sum8(acc);
  for (; c < n; ++c) {
    x[c] = exp_nonpositive(x[c] - shift);
    result += x[c];
  }
  return result;
}

inline const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

inline float row_max(const float* x, int64_t n) {
#ifdef VLMOPS_X86_AVX2
  if (kHasAvx2) return row_max_avx2(x, n);
#endif
  float result = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < n; ++c) result = std::max(result, x[c]);
  return result;
}

inline float exp_shift_sum(float* x, int64_t n, float shift) {
#ifdef VLMOPS_X86_AVX2
  if (kHasAvx2) return exp_shift_sum_avx2(x, n, shift);
#endif
  float result = 0.0f;
  for (int64_t c = 0; c < n; ++c) {
    x[c] = exp_nonpositive(x[c] - shift);
    result += x[c];
  }
  return result;
}

// Online-softmax step on one score tile s [m, n] (row stride n): exponentiates each row in place
// against the running row max, updates max and sum, and returns in rescale the factor that scales
// the row's earlier output accumulation.
inline void online_softmax_tile(float* s, int64_t m, int64_t n, float* row_max_io, float* row_sum, float* rescale) {
  for (int64_t r = 0; r < m; ++r) {
    float* x = s + r * n;
    const float new_max = std::max(row_max_io[r], row_max(x, n));
    const float tile_sum = exp_shift_sum(x, n, new_max);
    rescale[r] = std::exp(row_max_io[r] - new_max);  // 0 on the first tile (row max -inf)
    row_sum[r] = row_sum[r] * rescale[r] + tile_sum;
    row_max_io[r] = new_max;
  }
}

// P = exp(S - lse) on one score tile, in place (backward).
inline void probabilities_tile(float* s, int64_t m, int64_t n, const float* lse) {
  for (int64_t r = 0; r < m; ++r) exp_shift_sum(s + r * n, n, lse[r]);
}

// dS = P * (dP - delta), in place in dp (backward); a loop the compiler vectorizes.
inline void score_grad_tile(const float* p, float* dp, int64_t m, int64_t n, const float* delta) {
  for (int64_t r = 0; r < m; ++r) {
    const float* pr = p + r * n;
    float* dr = dp + r * n;
    const float d = delta[r];
    for (int64_t c = 0; c < n; ++c) dr[c] = pr[c] * (dr[c] - d);
  }
}

// float64 (tests, gradcheck): exact exp, no vectorization needed.
inline void online_softmax_tile(double* s, int64_t m, int64_t n, double* row_max, double* row_sum, double* rescale) {
  for (int64_t r = 0; r < m; ++r) {
    double* x = s + r * n;
    double tile_max = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < n; ++c) tile_max = std::max(tile_max, x[c]);
    const double new_max = std::max(row_max[r], tile_max);
    double tile_sum = 0.0;
    for (int64_t c = 0; c < n; ++c) {
      x[c] = std::exp(x[c] - new_max);
      tile_sum += x[c];
    }
    rescale[r] = std::exp(row_max[r] - new_max);
    row_sum[r] = row_sum[r] * rescale[r] + tile_sum;
    row_max[r] = new_max;
  }
}

inline void probabilities_tile(double* s, int64_t m, int64_t n, const double* lse) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) s[r * n + c] = std::exp(s[r * n + c] - lse[r]);
  }
}

inline void score_grad_tile(const double* p, double* dp, int64_t m, int64_t n, const double* delta) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) dp[r * n + c] = p[r * n + c] * (dp[r * n + c] - delta[r]);
  }
}

struct SingleThreadedBlas {
  int previous = MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0;
  ~SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous);
  }
};

// Runs body(task, scratch) for every task, each worker pulling task indices from a shared counter:
// tasks have very different costs (segment lengths vary), and at::parallel_for alone would split
// them into equal-count chunks. make_scratch() gives each worker its own buffers.
template <class MakeScratch, class Body>
inline void run_tasks(int64_t tasks, const MakeScratch& make_scratch, const Body& body) {
  if (tasks == 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    const SingleThreadedBlas blas_guard;
    auto scratch = make_scratch();
    for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) body(t, scratch);
  });
}

}  // namespace flash_tiles
}  // namespace vlmops
