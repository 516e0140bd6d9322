// CUDA entries of gated cross-attention: the op's checks, then its Triton kernels
// (vlmops/triton/gated_cross_attention.py).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "vlmops/gated_cross_attention_checks.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

std::tuple<at::Tensor, at::Tensor> gated_cross_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                                              const at::Tensor& v, const at::Tensor& kv_start,
                                                              const at::Tensor& kv_end,
                                                              const std::optional<at::Tensor>& gate,
                                                              std::optional<double> softmax_scale) {
  check_gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale);
  attention_checks::cuda_dtype("gated_cross_attention", q);
  return triton_kernel<decltype(gated_cross_attention_cuda)>("vlmops::_gated_cross_attention_triton")
      .call(q, k, v, kv_start, kv_end, gate, softmax_scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gated_cross_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& kv_start, const at::Tensor& kv_end, const std::optional<at::Tensor>& gate,
    std::optional<double> softmax_scale) {
  check_gated_cross_attention_backward(grad_out, q, k, v, out, lse, kv_start, kv_end, gate, softmax_scale);
  attention_checks::cuda_dtype("gated_cross_attention_backward", q);
  return triton_kernel<decltype(gated_cross_attention_backward_cuda)>("vlmops::_gated_cross_attention_backward_triton")
      .call(grad_out, q, k, v, out, lse, kv_start, kv_end, gate, softmax_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("gated_cross_attention", &gated_cross_attention_cuda);
  m.impl("gated_cross_attention_backward", &gated_cross_attention_backward_cuda);
}

}  // namespace vlmops
