// CUDA entries of patch embedding: the op's checks, then its Triton kernel (vlmops/triton/patch_embed.py).
// On CUDA the values of mean and std are not checked: reading them would synchronize.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "vlmops/patch_embed_checks.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

at::Tensor patch_embed_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                            std::optional<double> rescale, const std::optional<at::Tensor>& pos_embed,
                            const std::optional<at::Tensor>& cls_token) {
  check_patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token);
  return triton_kernel<decltype(patch_embed_cuda)>("vlmops::_patch_embed_triton")
      .call(x, weight, bias, mean, std, rescale, pos_embed, cls_token);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_embed_backward_cuda(const at::Tensor& grad_patches,
                                                                         const at::Tensor& x, const at::Tensor& weight,
                                                                         const std::optional<at::Tensor>& mean,
                                                                         const std::optional<at::Tensor>& std,
                                                                         std::optional<double> rescale,
                                                                         bool compute_grad_x) {
  check_patch_embed_backward(grad_patches, x, weight, mean, std, rescale, compute_grad_x);
  return triton_kernel<decltype(patch_embed_backward_cuda)>("vlmops::_patch_embed_backward_triton")
      .call(grad_patches, x, weight, mean, std, rescale, compute_grad_x);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("patch_embed", &patch_embed_cuda);
  m.impl("patch_embed_backward", &patch_embed_backward_cuda);
}

}  // namespace vlmops
