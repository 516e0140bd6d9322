// CPU kernels of block-diagonal packed (varlen) attention: flash-attention style, tiled with an
// online softmax, the score tile never leaving a per-thread buffer (no N x N matrix, no mask).
//
// Forward: one task per (query tile of a segment, head); the tile's scores against each key block
// are one BLAS GEMM into a [block_q, block_k] buffer, exponentiated in place, then multiplied into
// the output rows with a second GEMM. Backward (flash-attention 2): one task per (segment, k/v head),
// which recomputes the probabilities from the saved log-sum-exp and owns the dK/dV rows of its
// segment and the dQ rows of its query heads, so no two tasks write the same element: the result
// does not depend on the thread count or the schedule (deterministic).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "vlmops/varlen_attention_checks.h"

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
                                  const double* alpha, const double* a, const int* lda, const double* b,
                                  const int* ldb, const double* beta, double* c, const int* ldc);
// MKL's per-thread thread count (the C entry point; mkl_service.h maps mkl_set_num_threads_local to it):
// each worker below runs its GEMMs on its own core; left alone, MKL
// would start a thread team per call from every worker (measured 10x slower on 2 cores).
__attribute__((weak)) int MKL_Set_Num_Threads_Local(int threads);
}

namespace vlmops {
namespace {

enum class TransposeType { NoTranspose, Transpose };

// Column-major C [m, n] = alpha * op(A) @ op(B) + beta * C, as BLAS defines it; a row-major matrix
// is the column-major view of its transpose, which is how the kernels below call it.
template <class T>
void gemm(TransposeType transa, TransposeType transb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const char ta = transa == TransposeType::Transpose ? 'T' : 'N', tb = transb == TransposeType::Transpose ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
  } else {
    dgemm_(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
  }
}

void check_blas_available() {
  TORCH_CHECK(sgemm_ != nullptr && dgemm_ != nullptr,
              "vlmops.varlen_attention: the CPU kernel needs the BLAS GEMMs (sgemm_, dgemm_) of libtorch, which this "
              "torch build does not export");
}

// Tile sizes: a [256, 512] fp32 score tile (512 KiB) and a key block fit L2; 256 query rows amortize
// the packing of each key block inside the GEMM (the split PyTorch's CPU flash attention uses).
constexpr int64_t kBlockQ = 256;
constexpr int64_t kBlockK = 512;

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

VLMOPS_AVX2 float row_max_avx2(const float* x, int64_t n) {
  __m256 acc = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + c));
  float result = reduce_max8(acc);
  for (; c < n; ++c) result = std::max(result, x[c]);
  return result;
}

// x[c] = exp(x[c] - shift) in place; returns the sum.
VLMOPS_AVX2 float exp_shift_sum_avx2(float* x, int64_t n, float shift) {
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

const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

float row_max(const float* x, int64_t n) {
#ifdef VLMOPS_X86_AVX2
  if (kHasAvx2) return row_max_avx2(x, n);
#endif
  float result = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < n; ++c) result = std::max(result, x[c]);
  return result;
}

float exp_shift_sum(float* x, int64_t n, float shift) {
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
void online_softmax_tile(float* s, int64_t m, int64_t n, float* row_max_io, float* row_sum, float* rescale) {
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
void probabilities_tile(float* s, int64_t m, int64_t n, const float* lse) {
  for (int64_t r = 0; r < m; ++r) exp_shift_sum(s + r * n, n, lse[r]);
}

// dS = P * (dP - delta), in place in dp (backward); a loop the compiler vectorizes.
void score_grad_tile(const float* p, float* dp, int64_t m, int64_t n, const float* delta) {
  for (int64_t r = 0; r < m; ++r) {
    const float* pr = p + r * n;
    float* dr = dp + r * n;
    const float d = delta[r];
    for (int64_t c = 0; c < n; ++c) dr[c] = pr[c] * (dr[c] - d);
  }
}

// float64 (tests, gradcheck): exact exp, no vectorization needed.
void online_softmax_tile(double* s, int64_t m, int64_t n, double* row_max, double* row_sum, double* rescale) {
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

void probabilities_tile(double* s, int64_t m, int64_t n, const double* lse) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) s[r * n + c] = std::exp(s[r * n + c] - lse[r]);
  }
}

void score_grad_tile(const double* p, double* dp, int64_t m, int64_t n, const double* delta) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) dp[r * n + c] = p[r * n + c] * (dp[r * n + c] - delta[r]);
  }
}

// Rows of one [N, heads, D] operand: element (row, head, d) at data[row * row_stride + head * head_stride + d].
template <class acc_t>
struct Rows {
  acc_t* data;
  int64_t row_stride;
  int64_t head_stride;
  acc_t* at(int64_t row, int64_t head) const { return data + row * row_stride + head * head_stride; }
};

// The kernels read rows through strides; they need unit stride along D and rows that do not overlap
// (BLAS leading dimensions >= D). Anything else, and any dtype other than the accumulation one, is
// converted once here.
at::Tensor as_kernel_operand(const at::Tensor& t, at::ScalarType acc) {
  at::Tensor out = t.scalar_type() == acc ? t : t.to(acc);
  const int64_t D = out.size(2);
  const bool strided_ok = out.stride(2) == 1 && (out.size(0) <= 1 || out.stride(0) >= D) &&
                          (out.size(1) <= 1 || out.stride(1) >= D);
  return strided_ok ? out : out.contiguous();
}

template <class acc_t>
Rows<acc_t> rows_of(const at::Tensor& t) {
  return Rows<acc_t>{static_cast<acc_t*>(t.data_ptr()), t.stride(0), t.stride(1)};
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
void run_tasks(int64_t tasks, const MakeScratch& make_scratch, const Body& body) {
  if (tasks == 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    const SingleThreadedBlas blas_guard;
    auto scratch = make_scratch();
    for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) body(t, scratch);
  });
}

struct QueryTile {
  int64_t segment;
  int64_t q_begin;  // first row of the tile
  int64_t rows;
  int64_t cost;     // rows * keys of the segment: work of one head
};

// Query tiles of every segment, costliest first so the dynamic schedule ends balanced.
std::vector<QueryTile> query_tiles(const int32_t* cu_q, const int32_t* cu_k, int64_t segments) {
  std::vector<QueryTile> tiles;
  for (int64_t b = 0; b < segments; ++b) {
    const int64_t keys = cu_k[b + 1] - cu_k[b];
    for (int64_t q = cu_q[b]; q < cu_q[b + 1]; q += kBlockQ) {
      const int64_t rows = std::min<int64_t>(kBlockQ, cu_q[b + 1] - q);
      tiles.push_back({b, q, rows, rows * std::max<int64_t>(keys, 1)});
    }
  }
  std::stable_sort(tiles.begin(), tiles.end(), [](const QueryTile& a, const QueryTile& b) { return a.cost > b.cost; });
  return tiles;
}

template <class acc_t>
void forward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const int32_t* cu_q,
                    const int32_t* cu_k, int64_t segments, acc_t scale, at::Tensor& out, at::Tensor& lse) {
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), group = H / k.size(1);
  const Rows<acc_t> Q = rows_of<acc_t>(q), K = rows_of<acc_t>(k), V = rows_of<acc_t>(v), O = rows_of<acc_t>(out);
  acc_t* lse_data = lse.data_ptr<acc_t>();
  const std::vector<QueryTile> tiles = query_tiles(cu_q, cu_k, segments);
  struct Scratch {
    std::vector<acc_t> scores = std::vector<acc_t>(kBlockQ * kBlockK);
    std::vector<acc_t> row_max = std::vector<acc_t>(kBlockQ), row_sum = std::vector<acc_t>(kBlockQ),
                       rescale = std::vector<acc_t>(kBlockQ);
  };
  run_tasks(
      static_cast<int64_t>(tiles.size()) * H, [] { return Scratch(); },
      [&](int64_t t, Scratch& scratch) {
        auto& [scores, row_max, row_sum, rescale] = scratch;
      const QueryTile& tile = tiles[t / H];
      const int64_t head = t % H, kv_head = head / group, m = tile.rows;
      const int64_t k_begin = cu_k[tile.segment], keys = cu_k[tile.segment + 1] - k_begin;
      acc_t* o = O.at(tile.q_begin, head);
      acc_t* tile_lse = lse_data + head * Nq + tile.q_begin;
      if (keys == 0) {  // no keys: the softmax is empty; the output is 0 and the log-sum-exp -inf
        for (int64_t r = 0; r < m; ++r) {
          std::fill(o + r * O.row_stride, o + r * O.row_stride + D, acc_t(0));
          tile_lse[r] = -std::numeric_limits<acc_t>::infinity();
        }
        return;
      }
      std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<acc_t>::infinity());
      std::fill(row_sum.begin(), row_sum.end(), acc_t(0));
      for (int64_t kb = 0; kb < keys; kb += kBlockK) {
        const int64_t n = std::min<int64_t>(kBlockK, keys - kb);
        // scores [m, n] = scale * q_tile [m, D] @ k_block [n, D]^T (column-major BLAS view: [n, m]).
        gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, scale,
                      K.at(k_begin + kb, kv_head), K.row_stride, Q.at(tile.q_begin, head), Q.row_stride, acc_t(0),
                      scores.data(), n);
        online_softmax_tile(scores.data(), m, n, row_max.data(), row_sum.data(), rescale.data());
        if (kb > 0) {
          for (int64_t r = 0; r < m; ++r) {
            acc_t* orow = o + r * O.row_stride;
            for (int64_t d = 0; d < D; ++d) orow[d] *= rescale[r];
          }
        }
        // out [m, D] (+)= p [m, n] @ v_block [n, D].
        gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, acc_t(1),
                      V.at(k_begin + kb, kv_head), V.row_stride, scores.data(), n, kb == 0 ? acc_t(0) : acc_t(1), o,
                      O.row_stride);
      }
      for (int64_t r = 0; r < m; ++r) {
        const acc_t inv = acc_t(1) / row_sum[r];
        acc_t* orow = o + r * O.row_stride;
        for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
        tile_lse[r] = row_max[r] + std::log(row_sum[r]);
      }
      });
}

template <class acc_t>
void backward_kernel(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& lse, const at::Tensor& delta, const int32_t* cu_q, const int32_t* cu_k,
                     int64_t segments, acc_t scale, at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v) {
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), Hk = k.size(1), group = H / Hk;
  const Rows<acc_t> Q = rows_of<acc_t>(q), K = rows_of<acc_t>(k), V = rows_of<acc_t>(v),
                    dO = rows_of<acc_t>(grad_out), dQ = rows_of<acc_t>(grad_q), dK = rows_of<acc_t>(grad_k),
                    dV = rows_of<acc_t>(grad_v);
  const acc_t* lse_data = lse.data_ptr<acc_t>();
  const acc_t* delta_data = delta.data_ptr<acc_t>();
  // Tasks: (segment, k/v head), costliest segments first.
  std::vector<int64_t> order;
  for (int64_t b = 0; b < segments; ++b) {
    if (cu_q[b + 1] > cu_q[b] && cu_k[b + 1] > cu_k[b]) order.push_back(b);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return int64_t(cu_q[a + 1] - cu_q[a]) * (cu_k[a + 1] - cu_k[a]) >
           int64_t(cu_q[b + 1] - cu_q[b]) * (cu_k[b + 1] - cu_k[b]);
  });
  struct Scratch {
    std::vector<acc_t> probs = std::vector<acc_t>(kBlockQ * kBlockK), dprobs = std::vector<acc_t>(kBlockQ * kBlockK);
  };
  run_tasks(
      static_cast<int64_t>(order.size()) * Hk, [] { return Scratch(); },
      [&](int64_t t, Scratch& scratch) {
        auto& [probs, dprobs] = scratch;
      const int64_t b = order[t / Hk], kv_head = t % Hk;
      const int64_t q_begin = cu_q[b], queries = cu_q[b + 1] - q_begin;
      const int64_t k_begin = cu_k[b], keys = cu_k[b + 1] - k_begin;
      for (int64_t kb = 0; kb < keys; kb += kBlockK) {
        const int64_t n = std::min<int64_t>(kBlockK, keys - kb);
        const acc_t* k_blk = K.at(k_begin + kb, kv_head);
        const acc_t* v_blk = V.at(k_begin + kb, kv_head);
        acc_t* dk_blk = dK.at(k_begin + kb, kv_head);
        acc_t* dv_blk = dV.at(k_begin + kb, kv_head);
        for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
          for (int64_t qb = 0; qb < queries; qb += kBlockQ) {
            const int64_t m = std::min<int64_t>(kBlockQ, queries - qb), row = q_begin + qb;
            const acc_t* q_blk = Q.at(row, head);
            const acc_t* do_blk = dO.at(row, head);
            gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, scale, k_blk, K.row_stride,
                          q_blk, Q.row_stride, acc_t(0), probs.data(), n);
            probabilities_tile(probs.data(), m, n, lse_data + head * Nq + row);
            // dV [n, D] += P^T [n, m] @ dO [m, D].
            gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, acc_t(1), do_blk,
                          dO.row_stride, probs.data(), n, acc_t(1), dv_blk, dV.row_stride);
            // dP [m, n] = dO [m, D] @ V^T [D, n].
            gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, acc_t(1), v_blk,
                          V.row_stride, do_blk, dO.row_stride, acc_t(0), dprobs.data(), n);
            score_grad_tile(probs.data(), dprobs.data(), m, n, delta_data + head * Nq + row);
            // dQ [m, D] += scale * dS [m, n] @ K [n, D];  dK [n, D] += scale * dS^T [n, m] @ Q [m, D].
            gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, scale, k_blk,
                          K.row_stride, dprobs.data(), n, acc_t(1), dQ.at(row, head), dQ.row_stride);
            gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, scale, q_blk, Q.row_stride,
                          dprobs.data(), n, acc_t(1), dk_blk, dK.row_stride);
          }
        }
      }
      });
}

at::ScalarType accumulation_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

double resolve_scale(c10::optional<double> softmax_scale, int64_t D) {
  return softmax_scale.has_value() ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(D));
}

// Checks shared by forward and backward; returns the contiguous cu_seqlens.
std::tuple<at::Tensor, at::Tensor> checked_cu_seqlens(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                                      c10::optional<int64_t> max_seqlen_q,
                                                      c10::optional<int64_t> max_seqlen_k) {
  const at::Tensor cu_q = cu_seqlens_q.contiguous(), cu_k = cu_seqlens_k.contiguous();
  const int64_t entries = cu_q.size(0);
  check_cu_seqlens_values(cu_q.data_ptr<int32_t>(), entries, q.size(0), "cu_seqlens_q");
  check_cu_seqlens_values(cu_k.data_ptr<int32_t>(), entries, k.size(0), "cu_seqlens_k");
  check_max_seqlen(cu_q.data_ptr<int32_t>(), entries, max_seqlen_q, "q");
  check_max_seqlen(cu_k.data_ptr<int32_t>(), entries, max_seqlen_k, "k");
  return {cu_q, cu_k};
}

std::tuple<at::Tensor, at::Tensor> varlen_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                                        c10::optional<int64_t> max_seqlen_q,
                                                        c10::optional<int64_t> max_seqlen_k,
                                                        c10::optional<double> softmax_scale) {
  check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k);
  check_blas_available();
  auto [cu_q, cu_k] = checked_cu_seqlens(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k);
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), segments = cu_q.size(0) - 1;
  const at::ScalarType acc = accumulation_dtype(q.scalar_type());
  const double scale = resolve_scale(softmax_scale, D);
  at::Tensor lse = at::empty({H, Nq}, q.options().dtype(acc));
  at::Tensor out_acc = at::empty({Nq, H, D}, q.options().dtype(acc));
  const at::Tensor qa = as_kernel_operand(q, acc), ka = as_kernel_operand(k, acc), va = as_kernel_operand(v, acc);
  if (acc == at::kDouble) {
    forward_kernel<double>(qa, ka, va, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments, scale, out_acc,
                           lse);
  } else {
    forward_kernel<float>(qa, ka, va, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments,
                          static_cast<float>(scale), out_acc, lse);
  }
  return {out_acc.scalar_type() == q.scalar_type() ? out_acc : out_acc.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> varlen_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
    c10::optional<int64_t> max_seqlen_q, c10::optional<int64_t> max_seqlen_k, c10::optional<double> softmax_scale) {
  check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k);
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), segments = cu_seqlens_q.size(0) - 1;
  const at::ScalarType acc = accumulation_dtype(q.scalar_type());
  for (const at::Tensor* t : {&grad_out, &out}) {
    const char* name = t == &grad_out ? "grad_out" : "out";
    TORCH_CHECK(t->sizes() == q.sizes(), "vlmops.varlen_attention_backward: ", name, " must have q's shape ",
                q.sizes(), ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                "vlmops.varlen_attention_backward: ", name, " must match q's dtype and device");
  }
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == H && lse.size(1) == Nq && lse.scalar_type() == acc &&
                  lse.device() == q.device(),
              "vlmops.varlen_attention_backward: lse must be ", acc, " [H, Nq] = [", H, ", ", Nq, "] on q's device, got ",
              lse.scalar_type(), " ", lse.sizes());
  auto [cu_q, cu_k] = checked_cu_seqlens(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k);
  check_blas_available();
  const double scale = resolve_scale(softmax_scale, D);
  const at::Tensor qa = as_kernel_operand(q, acc), ka = as_kernel_operand(k, acc), va = as_kernel_operand(v, acc),
                   doa = as_kernel_operand(grad_out, acc);
  // delta [H, Nq] = rowsum(dO * O): the softmax-gradient correction of flash-attention 2.
  const at::Tensor delta = at::sum(at::mul(doa, out.to(acc)), {-1}).t().contiguous();
  const at::Tensor lse_c = lse.contiguous();
  at::Tensor grad_q = at::zeros({Nq, H, D}, q.options().dtype(acc));
  at::Tensor grad_k = at::zeros(k.sizes(), q.options().dtype(acc));
  at::Tensor grad_v = at::zeros(k.sizes(), q.options().dtype(acc));
  if (acc == at::kDouble) {
    backward_kernel<double>(doa, qa, ka, va, lse_c, delta, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(),
                            segments, scale, grad_q, grad_k, grad_v);
  } else {
    backward_kernel<float>(doa, qa, ka, va, lse_c, delta, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(),
                           segments, static_cast<float>(scale), grad_q, grad_k, grad_v);
  }
  const at::ScalarType dtype = q.scalar_type();
  if (dtype == acc) return {grad_q, grad_k, grad_v};
  return {grad_q.to(dtype), grad_k.to(dtype), grad_v.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("varlen_attention", &varlen_attention_cpu);
  m.impl("varlen_attention_backward", &varlen_attention_backward_cpu);
}

}  // namespace vlmops
