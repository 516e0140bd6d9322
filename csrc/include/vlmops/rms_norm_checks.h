#pragma once
// The contract of vlmops::rms_norm and vlmops::rms_norm_backward, for every device's entry point.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cmath>
#include <optional>

#include "vlmops/checks.h"

namespace vlmops {

inline at::ScalarType rms_norm_stats_dtype(at::ScalarType x) { return x == at::kDouble ? at::kDouble : at::kFloat; }

inline at::ScalarType rms_norm_out_dtype(const at::Tensor& x, const std::optional<at::Tensor>& weight) {
  return weight ? c10::promoteTypes(x.scalar_type(), weight->scalar_type()) : x.scalar_type();
}

// x [..., C] float (any strides), weight [C] float on x's device or none.
inline void check_rms_norm_x_weight(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& weight) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "vlmops.", op, ": x must be [..., C] with at least 1 dim, got a 0-dim tensor");
  checks::float_dtype(op, "x", x);
  if (!weight) return;
  TORCH_CHECK_VALUE(weight->dim() == 1 && weight->size(0) == x.size(-1), "vlmops.", op, ": weight must be [C] = [",
                    x.size(-1), "], got shape ", weight->sizes());
  checks::float_dtype(op, "weight", *weight);
  checks::same_device(op, "weight", *weight, "x", x);
}

inline void check_rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps) {
  check_rms_norm_x_weight("rms_norm", x, weight);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "vlmops.rms_norm: eps must be finite and >= 0, got ", eps);
}

// grad_out: x's shape in the output dtype; rstd: x.shape[:-1] in the statistics dtype.
inline void check_rms_norm_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                    const std::optional<at::Tensor>& weight, const at::Tensor& rstd) {
  constexpr const char* op = "rms_norm_backward";
  check_rms_norm_x_weight(op, x, weight);
  checks::shape_is(op, "grad_out", grad_out, x.sizes(), "x's shape");
  checks::dtype_is(op, "grad_out", grad_out, rms_norm_out_dtype(x, weight));
  checks::shape_is(op, "rstd", rstd, x.sizes().slice(0, x.dim() - 1), "x.shape[:-1]");
  checks::dtype_is(op, "rstd", rstd, rms_norm_stats_dtype(x.scalar_type()));
  checks::same_device(op, "grad_out", grad_out, "x", x);
  checks::same_device(op, "rstd", rstd, "x", x);
}

}  // namespace vlmops
