#pragma once
// The contract of vlmops::patch_embed and vlmops::patch_embed_backward, for every device's entry
// point, and the gather geometry of x it implies (patch_embed_math.h). x is read through any strides
// (the kernels index with int64); the GEMM operands the CPU kernels hand to BLAS are their own tiles
// or go through ATen's mm, which copies operands whose strides BLAS cannot take.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "vlmops/checks.h"
#include "vlmops/patch_embed_math.h"

namespace vlmops {

struct PatchEmbedShape {
  PatchGeometry geometry;  // of x's gather
  bool rows;               // x is [N, K] pre-patchified rows
  int64_t samples;         // B, or 1 for rows
  int64_t length;          // patches per sample L, or N for rows
  int64_t dim;             // D
  int64_t columns;         // K = C*T*Ph*Pw
};

inline bool patch_embed_normalizes(const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                                   std::optional<double> rescale) {
  return mean.has_value() || std.has_value() || rescale.has_value();
}

// weight [D, C, Ph, Pw] (Conv2d) or [D, C, T, Ph, Pw] (Conv3d), float, no size 0 (as nn.Conv2d/Conv3d).
inline void check_patch_embed_weight(const char* op, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 4 || weight.dim() == 5, "vlmops.", op,
                    ": weight must be [D, C, P, P] (Conv2d) or [D, C, T, P, P] (Conv3d), got shape ", weight.sizes());
  checks::float_dtype(op, "weight", weight);
  for (int64_t d = 0; d < weight.dim(); ++d) {
    TORCH_CHECK_VALUE(weight.size(d) > 0, "vlmops.", op,
                      ": weight must have D, C and a kernel of sizes >= 1, got shape ", weight.sizes());
  }
}

// g (the sizes of x's patches and grid) with the strides of t, a tensor of x's shape.
inline PatchGeometry patch_geometry_with_strides_of(PatchGeometry g, const at::Tensor& t) {
  if (t.dim() == 2) {
    // Column (c, t, i, j) of a row sits at ((c*T + t)*Ph + i)*Pw + j columns from its start. The
    // products below are at most K * stride(1), within the tensor's memory (an unread stride is 0).
    const int64_t s = g.columns() > 1 && t.size(0) > 0 ? t.stride(1) : 0;
    g.stride_b = t.stride(0);
    g.stride_w = s;
    g.stride_h = g.patch_w * s;
    g.stride_f = g.patch_h * g.patch_w * s;
    g.stride_c = g.patch_t * g.patch_h * g.patch_w * s;
  } else {
    g.stride_b = t.stride(0);
    g.stride_c = t.stride(1);
    g.stride_f = t.dim() == 5 ? t.stride(2) : 0;
    g.stride_h = t.stride(-2);
    g.stride_w = t.stride(-1);
  }
  return g;
}

// Checks x against the conv weight and returns the shape of the GEMM and the gather geometry of x.
inline PatchEmbedShape check_patch_embed_x_weight(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  check_patch_embed_weight(op, weight);
  TORCH_CHECK_VALUE(x.dim() == 2 || x.dim() == 4 || x.dim() == 5, "vlmops.", op,
                    ": x must be [N, C*T*Ph*Pw] rows, [B, C, H, W] images or [B, C, F, H, W] videos, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kByte || checks::is_float_dtype(x.scalar_type()), "vlmops.", op,
                    ": x must be uint8, float32, float64, float16 or bfloat16, got ", x.scalar_type());
  checks::same_device(op, "weight", weight, "x", x);
  const bool video_weight = weight.dim() == 5;
  const int64_t D = weight.size(0), C = weight.size(1), T = video_weight ? weight.size(2) : 1;
  const int64_t Ph = weight.size(-2), Pw = weight.size(-1);
  const int64_t patch =
      checks::checked_mul(op, "T*Ph*Pw of weight", checks::checked_mul(op, "T*Ph of weight", T, Ph), Pw);
  const int64_t K = checks::checked_mul(op, "C*T*Ph*Pw of weight", C, patch);
  if (x.dim() == 2) {
    TORCH_CHECK_VALUE(x.size(1) == K, "vlmops.", op, ": rows x [N, C*T*Ph*Pw] must have ", K,
                      " columns for weight of shape ", weight.sizes(), ", got shape ", x.sizes());
    return {patch_geometry_with_strides_of({C, T, Ph, Pw, 1, 1, 1, 0, 0, 0, 0, 0}, x), true, 1, x.size(0), D, K};
  }
  TORCH_CHECK_VALUE(x.dim() == weight.dim(), "vlmops.", op, ": weight must be ",
                    x.dim() == 4 ? "[D, C, P, P] (Conv2d) for images [B, C, H, W]"
                                 : "[D, C, T, P, P] (Conv3d) for videos [B, C, F, H, W]",
                    ", got shape ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(1) == C, "vlmops.", op, ": x has ", x.size(1), " channels (dim 1) but weight expects ", C);
  const char* names[3] = {"frames F", "height H", "width W"};
  const int64_t kernel[3] = {T, Ph, Pw};
  int64_t grid[3] = {1, 1, 1};
  for (int64_t d = x.dim() == 5 ? 0 : 1; d < 3; ++d) {
    const int64_t dim = x.dim() - 3 + d, size = x.size(dim), k = kernel[d];
    if (size % k != 0) {
      // nn.Conv2d/Conv3d silently drop the remainder (SigLIP-so400m: 384 px, P=14 -> 378 px).
      std::string crop = ":";
      for (int64_t e = 1; e < dim; ++e) crop += ", :";
      TORCH_CHECK_VALUE(false, "vlmops.", op, ": ", names[d], " = ", size, " of x ", x.sizes(),
                        " is not divisible by the patch size ", k, "; nn.Conv would drop the last ", size % k,
                        ": pass the crop x[", crop, ", :", size - size % k, "] (a view, read in place) to do the same");
    }
    grid[d] = size / k;
  }
  const int64_t L =
      checks::checked_mul(op, "patches per sample (F/T)*(H/Ph)*(W/Pw)",
                          checks::checked_mul(op, "patches per sample (F/T)*(H/Ph)", grid[0], grid[1]), grid[2]);
  return {patch_geometry_with_strides_of({C, T, Ph, Pw, grid[0], grid[1], grid[2], 0, 0, 0, 0, 0}, x),
          false,
          x.size(0),
          L,
          D,
          K};
}

// mean and std [C] float on x's device, rescale finite.
inline void check_patch_embed_normalization(const char* op, const at::Tensor& x, const PatchEmbedShape& shape,
                                            const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                                            std::optional<double> rescale) {
  const int64_t C = shape.geometry.channels;
  for (const auto& [name, t] : {std::pair{"mean", &mean}, std::pair{"std", &std}}) {
    if (!t->has_value()) continue;
    const at::Tensor& v = **t;
    TORCH_CHECK_VALUE(v.dim() == 1 && v.size(0) == C, "vlmops.", op, ": ", name, " must be [C] = [", C,
                      "] (one value per channel), got shape ", v.sizes());
    checks::float_dtype(op, name, v);
    checks::same_device(op, name, v, "x", x);
  }
  TORCH_CHECK_VALUE(!rescale || std::isfinite(*rescale), "vlmops.", op, ": rescale must be finite, got ", *rescale);
}

// The values of mean and std, on the CPU (on CUDA, reading them would synchronize): mean finite, std
// finite and nonzero.
inline void check_patch_embed_normalization_values(const char* op, const std::optional<at::Tensor>& mean,
                                                   const std::optional<at::Tensor>& std) {
  if (std) {
    const at::Tensor s = std->to(at::kDouble).contiguous();
    for (int64_t c = 0; c < s.numel(); ++c) {
      const double v = s.const_data_ptr<double>()[c];
      TORCH_CHECK_VALUE(std::isfinite(v) && v != 0.0, "vlmops.", op, ": std[", c, "] must be finite and nonzero, got ",
                        v);
    }
  }
  if (mean) {
    const at::Tensor m = mean->to(at::kDouble).contiguous();
    for (int64_t c = 0; c < m.numel(); ++c) {
      const double v = m.const_data_ptr<double>()[c];
      TORCH_CHECK_VALUE(std::isfinite(v), "vlmops.", op, ": mean[", c, "] must be finite, got ", v);
    }
  }
}

// bias [D], pos_embed [ncls + L, D] and cls_token [D]: the weight's dtype and device.
inline void check_patch_embed_epilogue(const char* op, const char* name, const std::optional<at::Tensor>& t,
                                       const at::Tensor& weight, at::IntArrayRef shape, const char* layout) {
  if (!t) return;
  checks::shape_is(op, name, *t, shape, layout);
  checks::same_dtype(op, name, *t, "weight", weight);
  checks::same_device(op, name, *t, "weight", weight);
}

inline PatchEmbedShape check_patch_embed(const at::Tensor& x, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mean,
                                         const std::optional<at::Tensor>& std, std::optional<double> rescale,
                                         const std::optional<at::Tensor>& pos_embed,
                                         const std::optional<at::Tensor>& cls_token) {
  constexpr const char* op = "patch_embed";
  const PatchEmbedShape shape = check_patch_embed_x_weight(op, x, weight);
  check_patch_embed_normalization(op, x, shape, mean, std, rescale);
  TORCH_CHECK_VALUE(!shape.rows || !(pos_embed || cls_token), "vlmops.", op,
                    ": pos_embed and cls_token need images or videos (patches grouped by sample), not rows");
  const int64_t ncls = cls_token ? 1 : 0;
  int64_t positions = 0;
  TORCH_CHECK_VALUE(!__builtin_add_overflow(shape.length, ncls, &positions), "vlmops.", op,
                    ": x has too many patches per sample, ", shape.length);
  checks::checked_mul(op, "output elements", checks::checked_mul(op, "output rows", shape.samples, positions),
                      shape.dim);
  check_patch_embed_epilogue(op, "bias", bias, weight, {shape.dim}, "[D]");
  check_patch_embed_epilogue(op, "pos_embed", pos_embed, weight, {positions, shape.dim}, "[ncls + L, D]");
  check_patch_embed_epilogue(op, "cls_token", cls_token, weight, {shape.dim}, "[D]");
  return shape;
}

// grad_patches: the gradient of the patch rows ([N, D] or [B, L, D], no CLS row) in weight's dtype.
inline PatchEmbedShape check_patch_embed_backward(const at::Tensor& grad_patches, const at::Tensor& x,
                                                  const at::Tensor& weight, const std::optional<at::Tensor>& mean,
                                                  const std::optional<at::Tensor>& std, std::optional<double> rescale,
                                                  bool compute_grad_x) {
  constexpr const char* op = "patch_embed_backward";
  const PatchEmbedShape shape = check_patch_embed_x_weight(op, x, weight);
  check_patch_embed_normalization(op, x, shape, mean, std, rescale);
  if (shape.rows) {
    checks::shape_is(op, "grad_patches", grad_patches, {shape.length, shape.dim}, "[N, D]");
  } else {
    checks::shape_is(op, "grad_patches", grad_patches, {shape.samples, shape.length, shape.dim},
                     "[B, L, D] (the gradient of the patch rows, without the CLS row)");
  }
  checks::same_dtype(op, "grad_patches", grad_patches, "weight", weight);
  checks::same_device(op, "grad_patches", grad_patches, "x", x);
  TORCH_CHECK_VALUE(!compute_grad_x || checks::is_float_dtype(x.scalar_type()), "vlmops.", op, ": x of dtype ",
                    x.scalar_type(), " has no gradient (compute_grad_x must be false)");
  return shape;
}

}  // namespace vlmops
