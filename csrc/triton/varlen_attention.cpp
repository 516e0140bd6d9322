// CUDA entries of varlen attention: the op's checks, then its Triton kernels (vlmops/triton/varlen_attention.py).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "vlmops/triton_kernel.h"
#include "vlmops/varlen_attention_checks.h"

namespace vlmops {
namespace {

std::tuple<at::Tensor, at::Tensor> varlen_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                                         std::optional<int64_t> max_seqlen_q,
                                                         std::optional<int64_t> max_seqlen_k,
                                                         std::optional<double> softmax_scale) {
  check_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale);
  attention_checks::cuda_dtype("varlen_attention", q);
  return triton_kernel<decltype(varlen_attention_cuda)>("vlmops::_varlen_attention_triton")
      .call(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> varlen_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
    std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_k, std::optional<double> softmax_scale) {
  check_varlen_attention_backward(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  softmax_scale);
  attention_checks::cuda_dtype("varlen_attention_backward", q);
  return triton_kernel<decltype(varlen_attention_backward_cuda)>("vlmops::_varlen_attention_backward_triton")
      .call(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("varlen_attention", &varlen_attention_cuda);
  m.impl("varlen_attention_backward", &varlen_attention_backward_cuda);
}

}  // namespace vlmops
