#pragma once
// Patch embedding index math and pixel normalization, shared by the kernels of the patch_embed ops.
//
// Every input form is a strided 5-D view [B, C, F, H, W] cut into patches of C x T x Ph x Pw:
//   images [B, C, H, W]        -> F = T = 1 (the frame stride is never used);
//   videos [B, C, F, H, W]     -> as is, F % T == 0;
//   rows   [N, C*T*Ph*Pw]      -> [N, C, T, Ph, Pw], one patch per row (F = T, H = Ph, W = Pw).
// Patch m (row m of the GEMM operand) is (b, f, ph, pw) in row-major order, so patches of one
// sample are frame-major then row-major: Conv2d/Conv3d's output after flatten(2).transpose(1, 2).
// Column k of the operand is (c, t, i, j) in row-major order: the flattening of the conv weight
// [D, C, T, Ph, Pw] and the order the Qwen2-VL image/video processors emit rows in.
#include <cstdint>

#include "vlmops/macros.h"

namespace vlmops {

struct PatchGeometry {
  int64_t channels, patch_t, patch_h, patch_w;               // C, T, Ph, Pw
  int64_t patches_t, patches_h, patches_w;                   // F / T, H / Ph, W / Pw
  int64_t stride_b, stride_c, stride_f, stride_h, stride_w;  // of the 5-D view, in elements

  VLMOPS_HD int64_t columns() const { return channels * patch_t * patch_h * patch_w; }
  VLMOPS_HD int64_t patches_per_sample() const { return patches_t * patches_h * patches_w; }

  // Offset of element (c, t, i, j) = (0, 0, 0, 0) of patch m.
  VLMOPS_HD int64_t patch_offset(int64_t m) const {
    const int64_t per_frame = patches_h * patches_w;
    const int64_t b = m / patches_per_sample();
    int64_t r = m - b * patches_per_sample();
    const int64_t f = r / per_frame;
    r -= f * per_frame;
    const int64_t ph = r / patches_w;
    const int64_t pw = r - ph * patches_w;
    return b * stride_b + f * patch_t * stride_f + ph * patch_h * stride_h + pw * patch_w * stride_w;
  }

  // Offset, from the patch's first element, of the run of Pw pixels that starts column
  // ((c * T + t) * Ph + i) * Pw.
  VLMOPS_HD int64_t run_offset(int64_t c, int64_t t, int64_t i) const {
    return c * stride_c + t * stride_f + i * stride_h;
  }
};

// The image processor's rescale + normalize, ((x * rescale) - mean) / std, folded per channel into
// x * scale + shift with scale = rescale / std and shift = -mean / std.
template <class T>
VLMOPS_HD T normalize_pixel(T x, T scale, T shift) {
  return x * scale + shift;
}

}  // namespace vlmops
