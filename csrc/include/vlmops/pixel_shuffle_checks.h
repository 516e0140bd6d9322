#pragma once
// The contract of vlmops::pixel_shuffle, pixel_shuffle_backward, pixel_shuffle_layer_norm and
// pixel_shuffle_layer_norm_backward, for every device's entry point, and the geometry it implies.
// x is [B, H, W, C] and its shuffle [B, H/s, W/s, s*s*C]; both are read through any strides (the
// kernels index with int64), so no stride is refused.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "vlmops/checks.h"
#include "vlmops/pixel_shuffle_math.h"

namespace vlmops {

// Accumulation dtype of the LayerNorm statistics: float64 for float64 inputs, else float32.
inline at::ScalarType pixel_shuffle_stats_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Sizes of both sides of the shuffle.
struct PixelShuffleShape {
  int64_t B, H, W, C;  // x
  int64_t Ho, Wo, n;   // H/s, W/s, s*s*C
  int64_t rows;        // output tokens, B * H/s * W/s
};

// A shape from x's sizes (or the shuffled ones) and s*s*C, with its output token count.
inline PixelShuffleShape pixel_shuffle_shape(const char* op, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                             int64_t Wo, int64_t n) {
  const int64_t rows =
      checks::checked_mul(op, "output tokens B * H/s * W/s", checks::checked_mul(op, "B * H/s", B, Ho), Wo);
  return {B, H, W, C, Ho, Wo, n, rows};
}

inline void check_pixel_shuffle_scale(const char* op, int64_t scale) {
  TORCH_CHECK_VALUE(scale >= 1, "vlmops.", op, ": scale must be >= 1, got ", scale);
}

// s*s*C; a ValueError naming scale when it overflows int64.
inline int64_t pixel_shuffle_channels(const char* op, int64_t scale, int64_t C) {
  return checks::checked_mul(op, "scale * scale * C", checks::checked_mul(op, "scale * scale", scale, scale), C);
}

// x [B, H, W, C] float, H and W divisible by scale.
inline PixelShuffleShape check_pixel_shuffle_input(const char* op, const at::Tensor& x, int64_t scale) {
  checks::dims(op, "x", x, 4, "[B, H, W, C]");
  checks::float_dtype(op, "x", x);
  check_pixel_shuffle_scale(op, scale);
  const int64_t H = x.size(1), W = x.size(2), C = x.size(3);
  TORCH_CHECK_VALUE(H % scale == 0 && W % scale == 0, "vlmops.", op, ": grid (H, W) = (", H, ", ", W,
                    ") of x is not divisible by scale ", scale);
  return pixel_shuffle_shape(op, x.size(0), H, W, C, H / scale, W / scale, pixel_shuffle_channels(op, scale, C));
}

// y [B, H/s, W/s, s*s*C] float (a gradient of the shuffled tensor).
inline PixelShuffleShape check_pixel_shuffle_shuffled(const char* op, const char* name, const at::Tensor& y,
                                                      int64_t scale) {
  checks::dims(op, name, y, 4, "[B, H/s, W/s, s*s*C]");
  checks::float_dtype(op, name, y);
  check_pixel_shuffle_scale(op, scale);
  const int64_t block = checks::checked_mul(op, "scale * scale", scale, scale);
  const int64_t Ho = y.size(1), Wo = y.size(2), n = y.size(3);
  TORCH_CHECK_VALUE(n % block == 0, "vlmops.", op, ": ", name, " has ", n,
                    " channels, not a multiple of scale * scale = ", block);
  return pixel_shuffle_shape(op, y.size(0), checks::checked_mul(op, "H = H/s * scale", Ho, scale),
                             checks::checked_mul(op, "W = W/s * scale", Wo, scale), n / block, Ho, Wo, n);
}

inline PixelShuffleShape check_pixel_shuffle_backward(const at::Tensor& grad_out, int64_t scale) {
  return check_pixel_shuffle_shuffled("pixel_shuffle_backward", "grad_out", grad_out, scale);
}

// weight or bias: [s*s*C] in x's dtype, on x's device, or none.
inline void check_pixel_shuffle_affine(const char* op, const char* name, const std::optional<at::Tensor>& t,
                                       const at::Tensor& x, int64_t n) {
  if (!t) return;
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == n, "vlmops.", op, ": ", name, " must be [s*s*C] = [", n,
                    "], got shape ", t->sizes());
  checks::same_dtype(op, name, *t, "x", x);
  checks::same_device(op, name, *t, "x", x);
}

inline PixelShuffleShape check_pixel_shuffle_layer_norm(const at::Tensor& x, int64_t scale,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& bias, double eps) {
  constexpr const char* op = "pixel_shuffle_layer_norm";
  const PixelShuffleShape shape = check_pixel_shuffle_input(op, x, scale);
  check_pixel_shuffle_affine(op, "weight", weight, x, shape.n);
  check_pixel_shuffle_affine(op, "bias", bias, x, shape.n);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "vlmops.", op, ": eps must be finite and >= 0, got ", eps);
  return shape;
}

// grad_out: the shuffled shape of x in x's dtype; mean, rstd: [B, H/s, W/s] in the statistics dtype.
inline PixelShuffleShape check_pixel_shuffle_layer_norm_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                                 const at::Tensor& mean, const at::Tensor& rstd,
                                                                 const std::optional<at::Tensor>& weight,
                                                                 int64_t scale) {
  constexpr const char* op = "pixel_shuffle_layer_norm_backward";
  const PixelShuffleShape shape = check_pixel_shuffle_input(op, x, scale);
  checks::shape_is(op, "grad_out", grad_out, {shape.B, shape.Ho, shape.Wo, shape.n}, "the shuffled shape of x");
  checks::same_dtype(op, "grad_out", grad_out, "x", x);
  checks::same_device(op, "grad_out", grad_out, "x", x);
  check_pixel_shuffle_affine(op, "weight", weight, x, shape.n);
  const at::ScalarType stats = pixel_shuffle_stats_dtype(x.scalar_type());
  const auto check_stat = [&](const char* name, const at::Tensor& stat) {
    checks::shape_is(op, name, stat, {shape.B, shape.Ho, shape.Wo}, "[B, H/s, W/s]");
    checks::dtype_is(op, name, stat, stats);
    checks::same_device(op, name, stat, "x", x);
  };
  check_stat("mean", mean);
  check_stat("rstd", rstd);
  return shape;
}

// The Triton variant launches a program per output token and addresses the inputs of one token
// (its s x s patch of x, or the row of weight or bias) with int32 offsets from an int64 base.
// The copy kernel's grid is (output tokens, s*s*C / 1024).
inline void check_pixel_shuffle_triton_rows(const char* op, const PixelShuffleShape& shape) {
  TORCH_CHECK_VALUE(shape.rows < (int64_t(1) << 31), "vlmops.", op, ": x has ", shape.rows,
                    " output tokens; the Triton kernels take fewer than 2**31");
  TORCH_CHECK_VALUE(shape.n <= int64_t(65535) * 1024, "vlmops.", op, ": s*s*C = ", shape.n,
                    " output channels; the Triton kernels take at most 65535 * 1024");
}

// A [B, H, W, C] tensor with `strides` (>= 0, as torch's are): the elements of one s x s patch lie
// within (s - 1) * (stride_h + stride_w) + (C - 1) * stride_c of its first.
inline void check_pixel_shuffle_triton_patch(const char* op, const char* name, int64_t C, at::IntArrayRef strides,
                                             int64_t scale) {
  const __int128 span = __int128(scale - 1) * (__int128(strides[1]) + strides[2]) + __int128(C - 1) * strides[3];
  TORCH_CHECK_VALUE(span < (__int128(1) << 31), "vlmops.", op, ": ", name, " with strides ", strides,
                    " spans more than 2**31 - 1 elements within one output token, beyond the Triton kernels");
}

inline void check_pixel_shuffle_triton_vector(const char* op, const char* name, const std::optional<at::Tensor>& t) {
  if (!t || t->size(0) == 0) return;
  TORCH_CHECK_VALUE(__int128(t->size(0) - 1) * t->stride(0) < (__int128(1) << 31), "vlmops.", op, ": ", name,
                    " with stride ", t->stride(0), " spans more than 2**31 - 1 elements, beyond the Triton kernels");
}

// The offsets a kernel adds to x's data pointer: x's strides, the geometry of the index map.
inline PixelShuffleGeometry pixel_shuffle_geometry(const at::Tensor& x, int64_t scale) {
  return PixelShuffleGeometry{scale, x.size(3), x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

// The geometry of a contiguous [B, H, W, C] tensor (the layout gradients of x are written in).
inline PixelShuffleGeometry pixel_shuffle_contiguous_geometry(int64_t H, int64_t W, int64_t C, int64_t scale) {
  return PixelShuffleGeometry{scale, C, H * W * C, W * C, C, 1};
}

}  // namespace vlmops
