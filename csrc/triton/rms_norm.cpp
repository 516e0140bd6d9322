// CUDA entries of RMSNorm: the op's checks, then its Triton kernels (vlmops/triton/rms_norm.py).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "vlmops/rms_norm_checks.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

std::tuple<at::Tensor, at::Tensor> rms_norm_cuda(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                 double eps) {
  check_rms_norm(x, weight, eps);
  return triton_kernel<decltype(rms_norm_cuda)>("vlmops::_rms_norm_triton").call(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& weight,
                                                          const at::Tensor& rstd) {
  check_rms_norm_backward(grad_out, x, weight, rstd);
  return triton_kernel<decltype(rms_norm_backward_cuda)>("vlmops::_rms_norm_backward_triton")
      .call(grad_out, x, weight, rstd);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("rms_norm", &rms_norm_cuda);
  m.impl("rms_norm_backward", &rms_norm_backward_cuda);
}

}  // namespace vlmops
