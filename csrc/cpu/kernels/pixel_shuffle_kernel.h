#pragma once
// Row kernels of fused pixel shuffle + LayerNorm, compiled once per CPU capability.
#include <ATen/core/Tensor.h>
#include <optional>

#define VLMOPS_DECLARE_PIXEL_SHUFFLE_KERNELS(CAP)                                                                   \
  namespace vlmops::cpu::CAP {                                                                                      \
  void pixel_shuffle_layer_norm_kernel(const at::Tensor& x, int64_t scale, const std::optional<at::Tensor>& weight, \
                                       const std::optional<at::Tensor>& bias, double eps, at::Tensor& out,          \
                                       at::Tensor& mean, at::Tensor& rstd);                                         \
  void pixel_shuffle_layer_norm_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x,                    \
                                                const at::Tensor& mean, const at::Tensor& rstd,                     \
                                                const std::optional<at::Tensor>& weight, int64_t scale,             \
                                                at::Tensor& grad_x, at::Tensor& grad_weight_partial,                \
                                                at::Tensor& grad_bias_partial);                                     \
  }

VLMOPS_DECLARE_PIXEL_SHUFFLE_KERNELS(DEFAULT)
VLMOPS_DECLARE_PIXEL_SHUFFLE_KERNELS(AVX2)
