#pragma once
// Host-side argument checks of the patch_embed ops (the Python wrapper checks the same things
// first, with the user's argument names), and the geometry of the operand gather they imply.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "vlmops/patch_embed_math.h"

namespace vlmops {

inline bool is_patch_weight_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline bool is_pixel_dtype(at::ScalarType t) { return t == at::kByte || is_patch_weight_dtype(t); }

// Checks x against the conv weight and returns the gather geometry of x (see patch_embed_math.h).
inline PatchGeometry patch_geometry(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 || weight.dim() == 5,
              "vlmops.patch_embed: weight must be [D, C, P, P] (Conv2d) or [D, C, T, P, P] (Conv3d), got ",
              weight.sizes());
  TORCH_CHECK(is_patch_weight_dtype(weight.scalar_type()),
              "vlmops.patch_embed: weight must be float32, float64, float16 or bfloat16, got ", weight.scalar_type());
  TORCH_CHECK(is_pixel_dtype(x.scalar_type()),
              "vlmops.patch_embed: x must be uint8, float32, float64, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.device() == weight.device(), "vlmops.patch_embed: x is on ", x.device(), " but weight is on ",
              weight.device());
  const bool video_weight = weight.dim() == 5;
  const int64_t C = weight.size(1), T = video_weight ? weight.size(2) : 1;
  const int64_t Ph = weight.size(-2), Pw = weight.size(-1);
  TORCH_CHECK(C > 0 && T > 0 && Ph > 0 && Pw > 0, "vlmops.patch_embed: weight has an empty kernel ", weight.sizes());
  PatchGeometry g{C, T, Ph, Pw, 1, 1, 1, 0, 0, 0, 0, 0};
  if (x.dim() == 2) {
    TORCH_CHECK(x.size(1) == g.columns(), "vlmops.patch_embed: rows x [N, C*T*Ph*Pw] must have ", g.columns(),
                " columns for weight ", weight.sizes(), ", got ", x.size(1));
    const int64_t s = x.stride(1);
    g.stride_b = x.stride(0);
    g.stride_w = s;
    g.stride_h = Pw * s;
    g.stride_f = Ph * Pw * s;
    g.stride_c = T * Ph * Pw * s;
    return g;
  }
  TORCH_CHECK(x.dim() == 4 || x.dim() == 5,
              "vlmops.patch_embed: x must be [N, C*T*P*P] rows, [B, C, H, W] images or [B, C, F, H, W] videos, got ",
              x.sizes());
  TORCH_CHECK(x.dim() == weight.dim(), "vlmops.patch_embed: ",
              x.dim() == 4 ? "images [B, C, H, W] need a Conv2d weight [D, C, P, P]"
                           : "videos [B, C, F, H, W] need a Conv3d weight [D, C, T, P, P]",
              ", got weight ", weight.sizes());
  TORCH_CHECK(x.size(1) == C, "vlmops.patch_embed: x has ", x.size(1), " channels but weight expects ", C);
  const int64_t H = x.size(-2), W = x.size(-1), F = x.dim() == 5 ? x.size(2) : 1;
  TORCH_CHECK(H % Ph == 0 && W % Pw == 0, "vlmops.patch_embed: image size (H, W) = (", H, ", ", W,
              ") is not divisible by the patch size (", Ph, ", ", Pw, ")");
  TORCH_CHECK(F % T == 0, "vlmops.patch_embed: ", F, " frames are not divisible by the temporal patch size ", T);
  g.patches_t = F / T;
  g.patches_h = H / Ph;
  g.patches_w = W / Pw;
  g.stride_b = x.stride(0);
  g.stride_c = x.stride(1);
  g.stride_f = x.dim() == 5 ? x.stride(2) : 0;
  g.stride_h = x.stride(-2);
  g.stride_w = x.stride(-1);
  return g;
}

// A [C] per-channel vector of the normalization (mean or std).
inline void check_channel_vector(const c10::optional<at::Tensor>& t, const at::Tensor& x, int64_t C,
                                 const char* name) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == C, "vlmops.patch_embed: ", name, " must be [", C,
              "] (one value per channel), got ", t->sizes());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), "vlmops.patch_embed: ", name, " must be a float tensor, got ",
              t->scalar_type());
  TORCH_CHECK(t->device() == x.device(), "vlmops.patch_embed: ", name, " is on ", t->device(), " but x is on ",
              x.device());
}

// bias [D], pos_embed [ncls + L, D] and cls_token [D]: the weight's dtype and device.
inline void check_epilogue_tensor(const c10::optional<at::Tensor>& t, const at::Tensor& weight,
                                  at::IntArrayRef shape, const char* name) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->sizes() == shape, "vlmops.patch_embed: ", name, " must be ", shape, ", got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == weight.scalar_type(), "vlmops.patch_embed: ", name, " must have weight's dtype ",
              weight.scalar_type(), ", got ", t->scalar_type());
  TORCH_CHECK(t->device() == weight.device(), "vlmops.patch_embed: ", name, " is on ", t->device(),
              " but weight is on ", weight.device());
}

inline bool patch_embed_given(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace vlmops
