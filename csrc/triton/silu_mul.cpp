// CUDA entries of SwiGLU gating: the op's checks, then its Triton kernels (vlmops/triton/silu_mul.py).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

#include "vlmops/silu_mul_checks.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

at::Tensor silu_mul_cuda(const at::Tensor& gate, const at::Tensor& up) {
  check_silu_mul(gate, up);
  return triton_kernel<decltype(silu_mul_cuda)>("vlmops::_silu_mul_triton").call(gate, up);
}

std::tuple<at::Tensor, at::Tensor> silu_mul_backward_cuda(const at::Tensor& grad_out, const at::Tensor& gate,
                                                          const at::Tensor& up) {
  check_silu_mul_backward(grad_out, gate, up);
  return triton_kernel<decltype(silu_mul_backward_cuda)>("vlmops::_silu_mul_backward_triton").call(grad_out, gate, up);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("silu_mul", &silu_mul_cuda);
  m.impl("silu_mul_backward", &silu_mul_backward_cuda);
}

}  // namespace vlmops
