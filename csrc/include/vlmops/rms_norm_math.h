#pragma once
// Per-row RMSNorm math shared by the kernels (Qwen2/Qwen2.5-VL/Llama/T5 convention, transformers'
// `Qwen2_5_VLRMSNorm`):
//
//   rstd = 1 / sqrt(sum(x^2) / C + eps)          in acc_t (float32; float64 for float64 x)
//   h    = x_dtype(x * rstd)                      the normalized value rounded to x's dtype
//   out  = out_dtype(pacc_t(h) * pacc_t(weight))  out_dtype = promote(x, weight), pacc_t its math type
//
// Backward (gn = grad_out * weight in the product type, then acc_t):
//   grad_x = rstd * (gn - x * coef),  coef = sum(gn * x) * rstd^2 / C
//   grad_w = sum over rows of grad_out * h
// The rounding of h is treated as the identity (straight-through), as autograd treats `.to(dtype)`.
// Functions templated on T also take at::vec::Vectorized values (the CPU kernels' vector loops).
#include <cmath>
#include <cstdint>

#include "vlmops/macros.h"

namespace vlmops {

// rsqrt as 1 / sqrt with both steps correctly rounded: torch.rsqrt's CPU kernel (bit-identical).
template <class acc_t>
VLMOPS_HD acc_t rms_rstd(acc_t sum_squares, int64_t C, acc_t eps) {
  using std::sqrt;
  return acc_t(1) / sqrt(sum_squares / static_cast<acc_t>(C) + eps);
}

// x * rstd rounded to the activation dtype and back (identity for float32/float64 activations).
template <class scalar_t, class acc_t>
VLMOPS_HD acc_t rms_normalize(acc_t x, acc_t rstd) {
  return static_cast<acc_t>(static_cast<scalar_t>(x * rstd));
}

// weight * h in the output's math type, rounded once to the output dtype.
template <class out_t, class pacc_t>
VLMOPS_HD out_t rms_scale(pacc_t h, pacc_t w) {
  return static_cast<out_t>(h * w);
}

// coef of the input gradient from the row's sum(gn * x).
template <class acc_t>
VLMOPS_HD acc_t rms_backward_coef(acc_t dot, acc_t rstd, int64_t C) {
  return dot * rstd * rstd / static_cast<acc_t>(C);
}

template <class T>
VLMOPS_HD T rms_grad_input(T gn, T x, T rstd, T coef) {
  return rstd * (gn - x * coef);
}

}  // namespace vlmops
