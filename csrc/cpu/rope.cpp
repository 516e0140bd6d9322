// CPU kernel of multi-axis RoPE: q and k rotated in one pass over tokens; cos/sin computed once per
// (token, pair) from pos * inv_freq into a per-thread row shared by every head of q and k (no table).
// Also the autograd kernel of rope_, for every device.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "vlmops/cpu_memory.h"
#include "vlmops/rope_checks.h"
#include "vlmops/rope_math.h"

#include <ATen/Config.h>

#if AT_MKL_ENABLED()
// torch.cos/torch.sin of float tensors run MKL's VML in high-accuracy mode (ATen/cpu/vml.h) when
// torch is built with MKL: calling the same functions (exported by libtorch_cpu) keeps float32 results
// bit-identical to transformers' eager `freqs.cos()`. LP64 MKL (MKL_INT = int), as vml.h assumes.
extern "C" {
void vmsCos(int n, const float* a, float* r, long long mode);
void vmsSin(int n, const float* a, float* r, long long mode);
}
#define VLMOPS_ROPE_MKL 1
#elif defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
// Without MKL, torch.cos/torch.sin run ATen's Vectorized<float> sin()/cos(), i.e. these Sleef entry
// points (exported by libtorch_cpu) at torch's AVX2 or AVX-512 capability.
extern "C" {
__m256 Sleef_sinf8_u35(__m256);
__m256 Sleef_cosf8_u35(__m256);
__m512 Sleef_sinf16_u35(__m512);
__m512 Sleef_cosf16_u35(__m512);
}
#define VLMOPS_ROPE_SLEEF 1
#endif

namespace vlmops {
namespace {

#ifdef VLMOPS_ROPE_SLEEF
enum class SimdLevel { kScalar, kAvx2, kAvx512 };

// The vector width torch's own float kernels use (ATEN_CPU_CAPABILITY included), so that cos/sin
// agree with transformers' eager `freqs.cos()` bit for bit.
SimdLevel torch_simd_level() {
  static const SimdLevel level = [] {
    const std::string cap = at::get_cpu_capability();
    if (cap.rfind("AVX512", 0) == 0) return SimdLevel::kAvx512;
    if (cap.rfind("AVX2", 0) == 0) return SimdLevel::kAvx2;
    return SimdLevel::kScalar;
  }();
  return level;
}

__attribute__((target("avx2,fma"))) void cos_sin_avx2(const float* angle, float* c, float* s, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    alignas(32) float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t m = std::min<int64_t>(8, n - i);
    for (int64_t j = 0; j < m; ++j) lane[j] = angle[i + j];
    const __m256 a = _mm256_load_ps(lane);
    alignas(32) float cv[8], sv[8];
    _mm256_store_ps(cv, Sleef_cosf8_u35(a));
    _mm256_store_ps(sv, Sleef_sinf8_u35(a));
    for (int64_t j = 0; j < m; ++j) {
      c[i + j] = cv[j];
      s[i + j] = sv[j];
    }
  }
}

__attribute__((target("avx512f"))) void cos_sin_avx512(const float* angle, float* c, float* s, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    alignas(64) float lane[16] = {};
    const int64_t m = std::min<int64_t>(16, n - i);
    for (int64_t j = 0; j < m; ++j) lane[j] = angle[i + j];
    const __m512 a = _mm512_load_ps(lane);
    alignas(64) float cv[16], sv[16];
    _mm512_store_ps(cv, Sleef_cosf16_u35(a));
    _mm512_store_ps(sv, Sleef_sinf16_u35(a));
    for (int64_t j = 0; j < m; ++j) {
      c[i + j] = cv[j];
      s[i + j] = sv[j];
    }
  }
}
#endif

void cos_sin(const float* angle, float* c, float* s, int64_t n) {
#ifdef VLMOPS_ROPE_MKL
  // VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE: the mode ATen's vcos/vsin pass. VML counts in int.
  constexpr long long kMode = 0x00000002 | 0x00140000 | 0x00000100;
  constexpr int64_t kMaxCount = std::numeric_limits<int>::max();
  for (int64_t i = 0; i < n; i += kMaxCount) {
    const int m = static_cast<int>(std::min(kMaxCount, n - i));
    vmsCos(m, angle + i, c + i, kMode);
    vmsSin(m, angle + i, s + i, kMode);
  }
#else
#ifdef VLMOPS_ROPE_SLEEF
  switch (torch_simd_level()) {
    case SimdLevel::kAvx512:
      return cos_sin_avx512(angle, c, s, n);
    case SimdLevel::kAvx2:
      return cos_sin_avx2(angle, c, s, n);
    case SimdLevel::kScalar:
      break;
  }
#endif
  for (int64_t i = 0; i < n; ++i) {
    c[i] = std::cos(angle[i]);
    s[i] = std::sin(angle[i]);
  }
#endif
}

void cos_sin(const double* angle, double* c, double* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    c[i] = std::cos(angle[i]);
    s[i] = std::sin(angle[i]);
  }
}

// One head: rotate pairs [0, P) and (out of place) copy the untouched tail [2P, D).
// kUnitStride lets the compiler vectorize the common contiguous-head_dim case.
template <class scalar_t, bool kRound, bool kUnitStride, class acc_t>
inline void rotate_head(const scalar_t* x, scalar_t* y, int64_t sx, int64_t sy, const acc_t* c, const acc_t* s,
                        int64_t P, int64_t D, bool copy_tail) {
  if constexpr (kUnitStride) sx = sy = 1;
  for (int64_t i = 0; i < P; ++i) {
    acc_t y0, y1;
    rotate_pair<scalar_t, kRound>(static_cast<acc_t>(x[i * sx]), static_cast<acc_t>(x[(i + P) * sx]), c[i], s[i], y0,
                                  y1);
    y[i * sy] = static_cast<scalar_t>(y0);
    y[(i + P) * sy] = static_cast<scalar_t>(y1);
  }
  if (copy_tail) {
    for (int64_t d = 2 * P; d < D; ++d) y[d * sy] = x[d * sx];
  }
}

struct HeadsView {
  const void* in;
  void* out;
  int64_t heads;
  int64_t in_strides[4];
  int64_t out_strides[4];
};

HeadsView heads_view(const at::Tensor& in, const at::Tensor& out) {
  return HeadsView{in.const_data_ptr(),
                   out.data_ptr(),
                   in.size(2),
                   {in.stride(0), in.stride(1), in.stride(2), in.stride(3)},
                   {out.stride(0), out.stride(1), out.stride(2), out.stride(3)}};
}

// Walks a block of tokens in memory order: tokens outer and heads inner when tokens are the outer
// dimension in memory ([B, S, H, D]), heads outer when heads are ([B, H, S, D]), so each pass streams
// through contiguous rows instead of jumping between heads S*D elements apart.
template <class scalar_t, bool kRound, class acc_t>
void rotate_block_heads(const HeadsView& v, int64_t S, int64_t first, int64_t count, const acc_t* c, const acc_t* s,
                        int64_t P, int64_t D, bool copy_tail) {
  const bool unit = v.in_strides[3] == 1 && v.out_strides[3] == 1;
  const bool heads_outer = v.in_strides[2] > v.in_strides[1];
  const int64_t outer = heads_outer ? v.heads : count, inner = heads_outer ? count : v.heads;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t n = 0; n < inner; ++n) {
      const int64_t h = heads_outer ? o : n, j = heads_outer ? n : o;
      const int64_t b = (first + j) / S, t = (first + j) % S;
      const scalar_t* xh =
          static_cast<const scalar_t*>(v.in) + b * v.in_strides[0] + t * v.in_strides[1] + h * v.in_strides[2];
      scalar_t* yh = static_cast<scalar_t*>(v.out) + b * v.out_strides[0] + t * v.out_strides[1] + h * v.out_strides[2];
      const acc_t* cj = c + j * P;
      const acc_t* sj = s + j * P;
      if (unit) {
        rotate_head<scalar_t, kRound, true>(xh, yh, 1, 1, cj, sj, P, D, copy_tail);
      } else {
        rotate_head<scalar_t, kRound, false>(xh, yh, v.in_strides[3], v.out_strides[3], cj, sj, P, D, copy_tail);
      }
    }
  }
}

template <class scalar_t, class pos_t>
void rope_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_out, const at::Tensor& k_out,
                 const at::Tensor& positions, const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math,
                 bool inverse) {
  // float64 tensors compute in float64 (gradcheck, references); every other dtype in float32.
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = q.size(0), S = q.size(1), D = q.size(3), P = axis.size(0);
  const at::Tensor axis_c = axis.contiguous(), freq_c = inv_freq.contiguous();
  const int64_t* axis_p = axis_c.const_data_ptr<int64_t>();
  const float* freq_p = freq_c.const_data_ptr<float>();
  const pos_t* pos_p = positions.const_data_ptr<pos_t>();
  const int64_t ps0 = positions.stride(0), ps1 = positions.stride(1), ps2 = positions.stride(2);
  const HeadsView qv = heads_view(q, q_out), kv = heads_view(k, k_out);
  const bool copy_tail = !q.is_same(q_out) && 2 * P < D;
  // Activation-dtype convention: cos/sin rounded to the activation dtype, then rounded products.
  const bool round_products = !fp32_math && !std::is_same_v<scalar_t, acc_t>;
  const int64_t row_elems = (qv.heads + kv.heads) * D;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, row_elems));
  // cos/sin of a block of tokens in one call (amortizes the vector math library's call overhead); blocks
  // of fewer tokens when P is large keep the per-thread buffers small.
  const int64_t block = std::clamp<int64_t>(8192 / P, 1, 32);
  at::parallel_for(0, B * S, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> angle(block * P), c(block * P), s(block * P);
    for (int64_t first = begin; first < end; first += block) {
      const int64_t count = std::min(block, end - first);
      for (int64_t j = 0; j < count; ++j) {
        const int64_t token = first + j;
        const pos_t* pos = pos_p + (token / S) * ps0 + (token % S) * ps1;
        for (int64_t i = 0; i < P; ++i) {
          angle[j * P + i] = rope_angle<acc_t>(pos[axis_p[i] * ps2], static_cast<acc_t>(freq_p[i]));
        }
      }
      cos_sin(angle.data(), c.data(), s.data(), count * P);
      for (int64_t i = 0; i < count * P; ++i) {
        if (round_products) {
          c[i] = round_to<scalar_t>(c[i]);
          s[i] = round_to<scalar_t>(s[i]);
        }
        if (inverse) s[i] = -s[i];
      }
      if (round_products) {
        rotate_block_heads<scalar_t, true>(qv, S, first, count, c.data(), s.data(), P, D, copy_tail);
        rotate_block_heads<scalar_t, true>(kv, S, first, count, c.data(), s.data(), P, D, copy_tail);
      } else {
        rotate_block_heads<scalar_t, false>(qv, S, first, count, c.data(), s.data(), P, D, copy_tail);
        rotate_block_heads<scalar_t, false>(kv, S, first, count, c.data(), s.data(), P, D, copy_tail);
      }
    }
  });
}

void rope_dispatch(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_out, const at::Tensor& k_out,
                   const at::Tensor& positions, const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math,
                   bool inverse) {
  if (q.numel() == 0 && k.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "rope_cpu", [&] {
    if (positions.scalar_type() == at::kLong) {
      rope_kernel<scalar_t, int64_t>(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse);
    } else {
      rope_kernel<scalar_t, int32_t>(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rope_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                            const at::Tensor& positions_in, const at::Tensor& axis,
                                            const at::Tensor& inv_freq, bool fp32_math, bool inverse) {
  const auto [q, k, positions, packed] = rope_operands("rope", q_in, k_in, positions_in);
  check_rope("rope", q, k, positions, axis, inv_freq);
  check_rope_axis_values("rope", axis, positions.size(2));
  // Same memory layout as the inputs when they are dense (a [B, H, S, D] view stays [B, H, S, D]).
  at::Tensor q_out = at::empty_like(q), k_out = at::empty_like(k);
  vlmops::cpu::advise_huge_pages(q_out);
  vlmops::cpu::advise_huge_pages(k_out);
  rope_dispatch(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse);
  if (packed) return {q_out.squeeze(0), k_out.squeeze(0)};
  return {q_out, k_out};
}

void rope_inplace_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& positions_in,
                      const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math, bool inverse) {
  const auto [q, k, positions, packed] = rope_operands("rope_", q_in, k_in, positions_in);
  check_rope("rope_", q, k, positions, axis, inv_freq);
  check_rope_inplace(q, k);
  check_rope_axis_values("rope_", axis, positions.size(2));
  rope_dispatch(q, k, q, k, positions, axis, inv_freq, fp32_math, inverse);
}

// The autograd kernel of rope_ on every device. An op that writes its inputs has no derivative here:
// with grad mode on, q or k requiring grad raises (rather than autograd passing gradients through as if
// nothing happened). Below it, the device kernel runs; then q's and k's versions are bumped so that
// autograd rejects any tensor it saved before the write.
void rope_inplace_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& positions,
                           const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math, bool inverse) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad())),
              "vlmops.rope_ cannot be differentiated: it writes q and k in place, and q or k requires grad. "
              "Rotate out of place (vlmops.apply_rope with inplace=False) or run under torch.no_grad()");
  {
    const at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("vlmops::rope_", "").typed<decltype(rope_inplace_autograd)>();
    op.call(q, k, positions, axis, inv_freq, fp32_math, inverse);
  }
  q.unsafeGetTensorImpl()->bump_version();
  k.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("rope", &rope_cpu);
  m.impl("rope_", &rope_inplace_cpu);
}

TORCH_LIBRARY_IMPL(vlmops, Autograd, m) { m.impl("rope_", &rope_inplace_autograd); }

}  // namespace vlmops
