#pragma once
// Per-pair rotary math shared by the CPU and CUDA kernels.
//
// Rotary pair i in [0, R/2) of a head (R = rotary_dim) is the half-split pair (x[i], x[i + R/2]) of
// transformers' `rotate_half`. It gets an axis a(i) and an inverse frequency f(i); for a token with
// integer positions pos[A], its angle is pos[a(i)] * f(i), computed in float32 exactly as
// transformers computes `position_ids.float() * inv_freq`.
#include <cmath>
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

namespace rope_detail {

// x mod 2, in (-1, 1]: exact for every double (|x| >= 2^53 is an even integer: 0). NaN for +-inf.
VLMOPS_HD double mod2(double x) { return x - 2.0 * rint(0.5 * x); }

// a * c mod 2 from the exact product a * c = hi + lo (lo by fma): both parts reduced exactly.
VLMOPS_HD double product_mod2(double a, double c) {
  const double hi = mul_rn(a, c);
  return add_rn(mod2(hi), mod2(fma(a, c, -hi)));
}

}  // namespace rope_detail

// angle / pi mod 2, in (-1, 1], for cospi/sinpi (period 2): cos/sin of the angle at any magnitude, with
// no table (so no local memory in a GPU kernel). 1/pi is split into five doubles (~270 bits); each
// exact product with the angle is reduced mod 2 exactly, so the result is within a few double ulp for
// every float angle and for double angles below ~2^200. NaN and infinities give NaN.
VLMOPS_HD double rope_turns(double angle) {
  double t = rope_detail::product_mod2(angle, 0x1.45f306dc9c883p-2);
  t = add_rn(t, rope_detail::product_mod2(angle, -0x1.6b01ec5417056p-56));
  t = add_rn(t, rope_detail::product_mod2(angle, -0x1.6447e493ad4cep-110));
  t = add_rn(t, rope_detail::product_mod2(angle, 0x1.e21c820ff28b2p-164));
  t = add_rn(t, rope_detail::product_mod2(angle, -0x1.508510ea79237p-219));
  return rope_detail::mod2(t);
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
