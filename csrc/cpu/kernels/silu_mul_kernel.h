#pragma once
// Row kernels of SwiGLU gating (silu(gate) * up and its backward), compiled once per CPU capability.
#include <ATen/core/Tensor.h>

#define VLMOPS_DECLARE_SILU_MUL_KERNELS(CAP)                                                              \
  namespace vlmops::cpu::CAP {                                                                            \
  void silu_mul_kernel(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& out);              \
  void silu_mul_backward_kernel(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up, \
                                const at::Tensor& grad_gate, const at::Tensor& grad_up);                  \
  }

VLMOPS_DECLARE_SILU_MUL_KERNELS(DEFAULT)
VLMOPS_DECLARE_SILU_MUL_KERNELS(AVX2)
