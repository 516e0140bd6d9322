#pragma once
// Per-pair rotary math shared by the CPU and CUDA kernels.
//
// Rotary pair i in [0, R/2) of a head (R = rotary_dim) is the half-split pair (x[i], x[i + R/2]) of
// transformers' `rotate_half`. It gets an axis a(i) and an inverse frequency f(i); for a token with
// integer positions pos[A], its angle is pos[a(i)] * f(i), computed in float32 exactly as
// transformers computes `position_ids.float() * inv_freq`.
#include <cstdint>
#include <type_traits>

#include "vlmops/macros.h"

namespace vlmops {

// Products and sums are rounded separately (no FMA contraction): transformers computes
// `x * cos + rotate_half(x) * sin` as two products and one sum, and float32 results must match it.
template <class T>
VLMOPS_HD T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  if constexpr (std::is_same_v<T, double>) return __dmul_rn(a, b);
#endif
  return a * b;
}

template <class T>
VLMOPS_HD T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b);
  if constexpr (std::is_same_v<T, double>) return __dadd_rn(a, b);
#endif
  return a + b;
}

// Angle of one pair: float(pos) * f in the math type (float32, or float64 for float64 tensors).
template <class acc_t>
VLMOPS_HD acc_t rope_angle(int64_t pos, acc_t inv_freq) {
  return mul_rn(static_cast<acc_t>(pos), inv_freq);
}

// Rounds a math-type value to the activation dtype and back: identity for float32/float64 tensors,
// the bf16/fp16 rounding of eager PyTorch otherwise.
template <class scalar_t, class acc_t>
VLMOPS_HD acc_t round_to(acc_t v) {
  return static_cast<acc_t>(static_cast<scalar_t>(v));
}

// Rotates (x0, x1) by the angle whose cosine and sine are (c, s):
//   y0 = x0 * c - x1 * s,  y1 = x1 * c + x0 * s.
// kRoundProducts reproduces the activation-dtype convention (Pixtral, text M-RoPE): c and s are
// already rounded to the activation dtype by the caller, and each product and the sum are rounded to
// it as eager bf16/fp16 PyTorch does. Without it the math runs in acc_t and only the result is rounded
// (Qwen vision's float32 convention). The backward pass is the same rotation with s negated.
template <class scalar_t, bool kRoundProducts, class acc_t>
VLMOPS_HD void rotate_pair(acc_t x0, acc_t x1, acc_t c, acc_t s, acc_t& y0, acc_t& y1) {
  acc_t p00 = mul_rn(x0, c), p11 = mul_rn(x1, s), p10 = mul_rn(x1, c), p01 = mul_rn(x0, s);
  if constexpr (kRoundProducts) {
    p00 = round_to<scalar_t>(p00);
    p11 = round_to<scalar_t>(p11);
    p10 = round_to<scalar_t>(p10);
    p01 = round_to<scalar_t>(p01);
  }
  y0 = add_rn(p00, -p11);
  y1 = add_rn(p10, p01);
}

}  // namespace vlmops
