#pragma once
// The contract of vlmops::silu_mul and vlmops::silu_mul_backward, for every device's entry point.
#include <ATen/core/Tensor.h>

#include "vlmops/checks.h"

namespace vlmops {

// gate [..., I] float (any strides, stride 0 included).
inline void check_silu_mul_gate(const char* op, const at::Tensor& gate) {
  TORCH_CHECK_VALUE(gate.dim() >= 1, "vlmops.", op, ": gate must be [..., I] with at least 1 dim, got a 0-dim tensor");
  checks::float_dtype(op, "gate", gate);
}

// `name` has gate's shape, dtype and device (any strides).
inline void check_silu_mul_like_gate(const char* op, const char* name, const at::Tensor& t, const at::Tensor& gate) {
  checks::shape_is(op, name, t, gate.sizes(), "gate's shape");
  checks::same_dtype(op, name, t, "gate", gate);
  checks::same_device(op, name, t, "gate", gate);
}

inline void check_silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  check_silu_mul_gate("silu_mul", gate);
  check_silu_mul_like_gate("silu_mul", "up", up, gate);
}

inline void check_silu_mul_backward(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  check_silu_mul_gate("silu_mul_backward", gate);
  check_silu_mul_like_gate("silu_mul_backward", "up", up, gate);
  check_silu_mul_like_gate("silu_mul_backward", "grad_out", grad_out, gate);
}

}  // namespace vlmops
