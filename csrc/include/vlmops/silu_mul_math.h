#pragma once
// SwiGLU gating math shared by the CPU kernels (scalar and at::vec::Vectorized code) and any CUDA
// kernel: out = silu(gate) * up, rounded the way transformers' `act_fn(gate_proj(x)) * up_proj(x)`
// rounds in eager PyTorch.
//
// T is the math type (float32, float64 for float64 tensors) or a SIMD vector of it; `e` is
// exp(-g), computed by the caller with its own exp (Sleef through Vectorized::exp on CPU vectors,
// std::exp on scalars), so that the algebra below is the one of PyTorch's silu kernels:
//   silu(g)   = g / (1 + exp(-g))
//   sigmoid   = 1 / (1 + exp(-g))
//   dy * dsilu/dg = dy * sigmoid * (1 + g * (1 - sigmoid))   (left to right, as silu_backward)
#include <cmath>

#include "vlmops/macros.h"

namespace vlmops {

template <class T>
VLMOPS_HD T silu_from_exp(T g, T e) {
  return g / (T(1.0f) + e);
}

template <class T>
VLMOPS_HD T silu_backward_from_exp(T dy, T g, T e) {
  const T one(1.0f);
  const T s = one / (one + e);
  return dy * s * (one + g * (one - s));
}

template <class T>
VLMOPS_HD T silu(T g) {
  return silu_from_exp(g, static_cast<T>(std::exp(-g)));
}

// Rounds a math-type value to the activation dtype and back (identity for float32/float64 tensors):
// silu(gate) is rounded before it multiplies up, as F.silu returns an activation-dtype tensor.
template <class scalar_t, class acc_t>
VLMOPS_HD acc_t to_activation(acc_t v) {
  return static_cast<acc_t>(static_cast<scalar_t>(v));
}

// One output element: round(round(silu(g)) * u); the caller rounds the returned product once.
template <class scalar_t, class acc_t>
VLMOPS_HD acc_t silu_mul_value(acc_t g, acc_t u) {
  return to_activation<scalar_t>(silu(g)) * u;
}

// One element of the backward, as autograd of `silu(gate) * up` computes it in eager PyTorch:
//   grad_up   = grad_out * round(silu(g))                      (MulBackward, rounded once)
//   grad_gate = round(grad_out * up) * dsilu/dg                (MulBackward rounds grad_out * up,
//                                                               then silu_backward rounds once)
template <class scalar_t, class acc_t>
VLMOPS_HD void silu_mul_grad_values(acc_t go, acc_t g, acc_t u, acc_t& grad_gate, acc_t& grad_up) {
  const acc_t e = static_cast<acc_t>(std::exp(-g));
  grad_up = go * to_activation<scalar_t>(silu_from_exp(g, e));
  grad_gate = silu_backward_from_exp(to_activation<scalar_t>(go * u), g, e);
}

}  // namespace vlmops
