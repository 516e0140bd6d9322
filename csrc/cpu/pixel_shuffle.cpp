// CPU entry points of pixel shuffle and fused pixel shuffle + LayerNorm: checks, allocation, and the
// choice of the row kernels (csrc/cpu/kernels/, one build per CPU capability).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include "kernels/pixel_shuffle_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/cpu_memory.h"
#include "vlmops/pixel_shuffle_checks.h"

namespace vlmops {
namespace {

// Copies n elements between strided runs; the unit-stride case (the common one) is a memcpy.
template <class E>
void copy_run(E* dst, int64_t dst_stride, const E* src, int64_t src_stride, int64_t n) {
  if (dst_stride == 1 && src_stride == 1) {
    std::memcpy(dst, src, n * sizeof(E));
    return;
  }
  for (int64_t c = 0; c < n; ++c) dst[c * dst_stride] = src[c * src_stride];
}

// Moves every element between x-space ([B, H, W, C] with geometry `g`) and shuffled space
// ([B, H/s, W/s, s*s*C] with strides `ys`). The map is a bijection, so tasks never collide.
template <class E, bool kToShuffled>
void shuffle_copy(const PixelShuffleGeometry& g, E* x, E* y, const int64_t* ys, int64_t B, int64_t Ho, int64_t Wo) {
  const int64_t s = g.scale, C = g.channels;
  at::parallel_for(0, B * Ho * Wo, vlmops::cpu::row_grain(s * s * C), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (Ho * Wo), i = (row / Wo) % Ho, j = row % Wo;
      E* y_row = y + b * ys[0] + i * ys[1] + j * ys[2];
      for (int64_t dy = 0; dy < s; ++dy) {
        for (int64_t dx = 0; dx < s; ++dx) {
          E* x_run = x + g.chunk_offset(b, i, j, dy) + dx * g.stride_w;
          E* y_run = y_row + (dy * s + dx) * C * ys[3];
          if (kToShuffled) {
            copy_run(y_run, ys[3], x_run, g.stride_c, C);
          } else {
            copy_run(x_run, g.stride_c, y_run, ys[3], C);
          }
        }
      }
    }
  });
}

// Element type of the byte copy: shuffling only moves elements, so their size is all that matters.
template <bool kToShuffled>
void shuffle_copy_any(const PixelShuffleGeometry& g, const at::Tensor& x, const at::Tensor& y) {
  const int64_t ys[4] = {y.stride(0), y.stride(1), y.stride(2), y.stride(3)};
  const int64_t B = y.size(0), Ho = y.size(1), Wo = y.size(2);
  switch (x.element_size()) {
    case 2:
      shuffle_copy<uint16_t, kToShuffled>(g, static_cast<uint16_t*>(x.data_ptr()), static_cast<uint16_t*>(y.data_ptr()),
                                          ys, B, Ho, Wo);
      break;
    case 4:
      shuffle_copy<uint32_t, kToShuffled>(g, static_cast<uint32_t*>(x.data_ptr()), static_cast<uint32_t*>(y.data_ptr()),
                                          ys, B, Ho, Wo);
      break;
    case 8:
      shuffle_copy<uint64_t, kToShuffled>(g, static_cast<uint64_t*>(x.data_ptr()), static_cast<uint64_t*>(y.data_ptr()),
                                          ys, B, Ho, Wo);
      break;
    default:
      TORCH_CHECK(false, "vlmops.pixel_shuffle: unsupported element size ", x.element_size());
  }
}

at::Tensor pixel_shuffle_cpu(const at::Tensor& x, int64_t scale) {
  const PixelShuffleShape shape = check_pixel_shuffle_input("pixel_shuffle", x, scale);
  at::Tensor out = at::empty({shape.B, shape.Ho, shape.Wo, shape.n}, x.options());
  vlmops::cpu::advise_huge_pages(out);
  if (out.numel() > 0) shuffle_copy_any<true>(pixel_shuffle_geometry(x, scale), x, out);
  return out;
}

at::Tensor pixel_shuffle_backward_cpu(const at::Tensor& grad_out, int64_t scale) {
  const PixelShuffleShape shape = check_pixel_shuffle_backward(grad_out, scale);
  at::Tensor grad_x = at::empty({shape.B, shape.H, shape.W, shape.C}, grad_out.options());
  vlmops::cpu::advise_huge_pages(grad_x);
  if (grad_x.numel() > 0) {
    shuffle_copy_any<false>(pixel_shuffle_contiguous_geometry(shape.H, shape.W, shape.C, scale), grad_x, grad_out);
  }
  return grad_x;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_cpu(const at::Tensor& x, int64_t scale,
                                                                            const std::optional<at::Tensor>& weight,
                                                                            const std::optional<at::Tensor>& bias,
                                                                            double eps) {
  const PixelShuffleShape shape = check_pixel_shuffle_layer_norm(x, scale, weight, bias, eps);
  at::Tensor out = at::empty({shape.B, shape.Ho, shape.Wo, shape.n}, x.options());
  vlmops::cpu::advise_huge_pages(out);
  const auto stats_options = x.options().dtype(pixel_shuffle_stats_dtype(x.scalar_type()));
  at::Tensor mean = at::empty({shape.B, shape.Ho, shape.Wo}, stats_options);
  at::Tensor rstd = at::empty_like(mean);
  if (out.numel() > 0) {
    VLMOPS_CPU_DISPATCH(pixel_shuffle_layer_norm_kernel, x, scale, weight, bias, eps, out, mean, rstd);
  } else {
    // No features: the statistics of an empty row, as torch's layer_norm gives them.
    mean.fill_(std::numeric_limits<double>::quiet_NaN());
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, int64_t scale) {
  const PixelShuffleShape shape = check_pixel_shuffle_layer_norm_backward(grad_out, x, mean, rstd, weight, scale);
  const auto acc_options = x.options().dtype(pixel_shuffle_stats_dtype(x.scalar_type()));
  at::Tensor grad_x = at::empty({shape.B, shape.H, shape.W, shape.C}, x.options());
  vlmops::cpu::advise_huge_pages(grad_x);
  // One partial grad_weight / grad_bias row per thread, summed here: no atomics.
  const int64_t threads = at::get_num_threads();
  at::Tensor gw_part = at::zeros({threads, shape.n}, acc_options);
  at::Tensor gb_part = at::zeros({threads, shape.n}, acc_options);
  if (grad_out.numel() > 0) {
    VLMOPS_CPU_DISPATCH(pixel_shuffle_layer_norm_backward_kernel, grad_out, x, mean, rstd, weight, scale, grad_x,
                        gw_part, gb_part);
  }
  return {grad_x, gw_part.sum(0).to(x.scalar_type()), gb_part.sum(0).to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("pixel_shuffle", &pixel_shuffle_cpu);
  m.impl("pixel_shuffle_backward", &pixel_shuffle_backward_cpu);
  m.impl("pixel_shuffle_layer_norm", &pixel_shuffle_layer_norm_cpu);
  m.impl("pixel_shuffle_layer_norm_backward", &pixel_shuffle_layer_norm_backward_cpu);
}

}  // namespace vlmops
