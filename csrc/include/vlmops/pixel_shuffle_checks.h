#pragma once
// Host-side argument checks of the pixel shuffle ops, shared by the CPU and CUDA entry points
// (the Python wrapper checks the same things first, with the user's argument names).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "vlmops/pixel_shuffle_math.h"

namespace vlmops {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_shuffle_input(const at::Tensor& x, int64_t scale) {
  TORCH_CHECK(x.dim() == 4, "vlmops.pixel_shuffle: x must be [B, H, W, C], got ", x.dim(), " dims");
  TORCH_CHECK(is_supported_float(x.scalar_type()),
              "vlmops.pixel_shuffle: x must be float32, float64, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(scale >= 1, "vlmops.pixel_shuffle: scale must be >= 1, got ", scale);
  TORCH_CHECK(x.size(1) % scale == 0 && x.size(2) % scale == 0, "vlmops.pixel_shuffle: grid (H, W) = (",
              x.size(1), ", ", x.size(2), ") is not divisible by scale ", scale);
}

inline void check_shuffled(const at::Tensor& y, int64_t scale, const char* name) {
  TORCH_CHECK(y.dim() == 4, "vlmops.pixel_shuffle: ", name, " must be [B, H/s, W/s, s*s*C], got ", y.dim(), " dims");
  TORCH_CHECK(scale >= 1, "vlmops.pixel_shuffle: scale must be >= 1, got ", scale);
  TORCH_CHECK(y.size(3) % (scale * scale) == 0, "vlmops.pixel_shuffle: ", name, " has ", y.size(3),
              " channels, not a multiple of scale*scale = ", scale * scale);
  TORCH_CHECK(is_supported_float(y.scalar_type()), "vlmops.pixel_shuffle: ", name,
              " must be float32, float64, float16 or bfloat16, got ", y.scalar_type());
}

inline void check_affine(const c10::optional<at::Tensor>& t, const at::Tensor& x, int64_t features,
                         const char* name) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == features, "vlmops.pixel_shuffle_layer_norm: ", name,
              " must be [", features, "] (s*s*C), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == x.scalar_type(), "vlmops.pixel_shuffle_layer_norm: ", name,
              " must have x's dtype ", x.scalar_type(), ", got ", t->scalar_type());
  TORCH_CHECK(t->device() == x.device(), "vlmops.pixel_shuffle_layer_norm: ", name, " is on ", t->device(),
              " but x is on ", x.device());
}

inline void check_stats(const at::Tensor& stat, const at::Tensor& grad_out, const char* name) {
  TORCH_CHECK(stat.dim() == 3 && stat.size(0) == grad_out.size(0) && stat.size(1) == grad_out.size(1) &&
                  stat.size(2) == grad_out.size(2),
              "vlmops.pixel_shuffle_layer_norm_backward: ", name, " must be [B, H/s, W/s], got ", stat.sizes());
  TORCH_CHECK(stat.device() == grad_out.device(), "vlmops.pixel_shuffle_layer_norm_backward: ", name,
              " is on ", stat.device(), " but grad_out is on ", grad_out.device());
}

// Accumulation dtype of the LayerNorm statistics: float64 for float64 inputs, else float32.
inline at::ScalarType stats_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline PixelShuffleGeometry geometry_of(const at::Tensor& x, int64_t scale) {
  return PixelShuffleGeometry{scale, x.size(3), x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

// Geometry of a contiguous [B, H, W, C] tensor (the layout gradients of x are written in).
inline PixelShuffleGeometry contiguous_geometry(int64_t H, int64_t W, int64_t C, int64_t scale) {
  return PixelShuffleGeometry{scale, C, H * W * C, W * C, C, 1};
}

// Checks shared by both backward entry points: grad_out matches the shuffled shape of x.
inline void check_backward_pair(const at::Tensor& grad_out, const at::Tensor& x, int64_t scale) {
  check_shuffle_input(x, scale);
  check_shuffled(grad_out, scale, "grad_out");
  TORCH_CHECK(grad_out.size(0) == x.size(0) && grad_out.size(1) * scale == x.size(1) &&
                  grad_out.size(2) * scale == x.size(2) && grad_out.size(3) == x.size(3) * scale * scale,
              "vlmops.pixel_shuffle_layer_norm_backward: grad_out ", grad_out.sizes(),
              " does not match the shuffled shape of x ", x.sizes());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "vlmops.pixel_shuffle_layer_norm_backward: grad_out dtype ",
              grad_out.scalar_type(), " != x dtype ", x.scalar_type());
  TORCH_CHECK(grad_out.device() == x.device(), "vlmops.pixel_shuffle_layer_norm_backward: grad_out is on ",
              grad_out.device(), " but x is on ", x.device());
}

// Every check of the fused forward, shared by the CPU and CUDA entry points.
inline void check_layer_norm_forward(const at::Tensor& x, int64_t scale, const c10::optional<at::Tensor>& weight,
                                     const c10::optional<at::Tensor>& bias, double eps) {
  check_shuffle_input(x, scale);
  const int64_t n = x.size(3) * scale * scale;
  check_affine(weight, x, n, "weight");
  check_affine(bias, x, n, "bias");
  TORCH_CHECK(eps >= 0, "vlmops.pixel_shuffle_layer_norm: eps must be >= 0, got ", eps);
}

// Every check of the fused backward, shared by the CPU and CUDA entry points.
inline void check_layer_norm_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean,
                                      const at::Tensor& rstd, const c10::optional<at::Tensor>& weight, int64_t scale) {
  check_backward_pair(grad_out, x, scale);
  check_affine(weight, x, grad_out.size(3), "weight");
  check_stats(mean, grad_out, "mean");
  check_stats(rstd, grad_out, "rstd");
  const auto acc_dtype = stats_dtype(x.scalar_type());
  TORCH_CHECK(mean.scalar_type() == acc_dtype && rstd.scalar_type() == acc_dtype,
              "vlmops.pixel_shuffle_layer_norm_backward: mean and rstd must be ", acc_dtype);
}

}  // namespace vlmops
