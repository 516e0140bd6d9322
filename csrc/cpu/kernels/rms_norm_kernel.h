#pragma once
// Row kernels of RMSNorm, compiled once per CPU capability (see cpu_dispatch.h).
#include <ATen/core/Tensor.h>

#include <cstdint>

// x [..., C] (any strides); weight: nullptr or [C] contiguous in the output's math type (float32 or
// float64, which hold every weight dtype the output dtype holds); out contiguous in the output dtype;
// rstd contiguous [...] in the statistics dtype. Backward: grad_out [..., C] (any strides) in the output
// dtype; grad_x contiguous in x's dtype; grad_weight_partial [chunks, C] zeroed, in the output's math
// type, one row per chunk of rows_per_chunk rows (the caller sums them: deterministic, no atomics);
// [0, C] without a weight.
#define VLMOPS_DECLARE_RMS_NORM_KERNELS(CAP)                                                                          \
  namespace vlmops::cpu::CAP {                                                                                        \
  void rms_norm_kernel(const at::Tensor& x, const at::Tensor* weight, double eps, at::Tensor& out, at::Tensor& rstd); \
  void rms_norm_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor* weight,            \
                                const at::Tensor& rstd, at::Tensor& grad_x, at::Tensor& grad_weight_partial,          \
                                int64_t rows_per_chunk);                                                              \
  }

VLMOPS_DECLARE_RMS_NORM_KERNELS(DEFAULT)
VLMOPS_DECLARE_RMS_NORM_KERNELS(AVX2)
