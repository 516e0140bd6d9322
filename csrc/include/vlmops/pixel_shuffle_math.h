#pragma once
// Pixel shuffle (token merging) index math and LayerNorm per-element math, shared by the CPU and
// CUDA kernels so the CPU tests exercise the code the GPU runs.
//
// x is [B, H, W, C] (any strides); the output token (b, i, j) of [B, H/s, W/s, s*s*C] holds, at
// channel k = (dy*s + dx)*C + c, the input x[b, s*i + dy, s*j + dx, c]: the order of transformers'
// InternVLModel.pixel_shuffle and Idefics3Connector.pixel_shuffle.
#include <cstdint>

#include "vlmops/macros.h"

namespace vlmops {

struct PixelShuffleGeometry {
  int64_t scale;                                   // s
  int64_t channels;                                // C of the input
  int64_t stride_b, stride_h, stride_w, stride_c;  // strides of x, in elements

  // Offset in x of the first input element of row-chunk dy (s*dx + c spans s*C channels) of
  // output token (b, i, j). Within a chunk, channel r = dx*C + c sits at dx*stride_w + c*stride_c.
  VLMOPS_HD int64_t chunk_offset(int64_t b, int64_t i, int64_t j, int64_t dy) const {
    return b * stride_b + (scale * i + dy) * stride_h + (scale * j) * stride_w;
  }

  // Offset in x of the input element that feeds channel k of output token (b, i, j).
  VLMOPS_HD int64_t src_offset(int64_t b, int64_t i, int64_t j, int64_t k) const {
    const int64_t chunk = scale * channels;
    const int64_t dy = k / chunk;
    const int64_t r = k - dy * chunk;
    const int64_t dx = r / channels;
    const int64_t c = r - dx * channels;
    return chunk_offset(b, i, j, dy) + dx * stride_w + c * stride_c;
  }
};

// LayerNorm of one element given the row statistics; T is a scalar or a SIMD vector type.
template <class T>
VLMOPS_HD T layer_norm_apply(T x, T mean, T rstd, T weight, T bias) {
  return (x - mean) * rstd * weight + bias;
}

// Gradient of LayerNorm's input for one element, with g = grad_out * weight,
// mean_g = mean(g) and mean_g_xhat = mean(g * xhat) over the row.
template <class T>
VLMOPS_HD T layer_norm_grad_input(T g, T xhat, T rstd, T mean_g, T mean_g_xhat) {
  return rstd * (g - mean_g - xhat * mean_g_xhat);
}

}  // namespace vlmops
