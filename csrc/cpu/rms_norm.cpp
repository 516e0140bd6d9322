// CPU entry points of RMSNorm: checks, allocation, and the choice of the row kernels
// (csrc/cpu/kernels/rms_norm_kernel.cpp, one build per CPU capability). x and grad_out are read
// through their strides (no copies); outputs are contiguous.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "kernels/rms_norm_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/cpu_memory.h"
#include "vlmops/rms_norm_checks.h"

namespace vlmops {
namespace {

// The weight in the output's math type (exact: the output dtype holds every weight value).
at::Tensor weight_in_math_type(const std::optional<at::Tensor>& weight, at::ScalarType out) {
  return weight->to(at::toOpMathType(out)).contiguous();
}

std::tuple<at::Tensor, at::Tensor> rms_norm_cpu(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                double eps) {
  check_rms_norm(x, weight, eps);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(rms_norm_out_dtype(x, weight)));
  vlmops::cpu::advise_huge_pages(out);
  at::Tensor rstd =
      at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(rms_norm_stats_dtype(x.scalar_type())));
  if (rstd.numel() == 0) return {out, rstd};
  const at::Tensor w = weight ? weight_in_math_type(weight, out.scalar_type()) : at::Tensor();
  VLMOPS_CPU_DISPATCH(rms_norm_kernel, x, weight ? &w : nullptr, eps, out, rstd);
  return {out, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& weight,
                                                         const at::Tensor& rstd) {
  check_rms_norm_backward(grad_out, x, weight, rstd);
  const at::ScalarType out_type = grad_out.scalar_type();
  const int64_t C = x.size(-1), rows = rstd.numel();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  vlmops::cpu::advise_huge_pages(grad_x);
  // Rows are split into a number of chunks that depends on the shape only, so the sum of the
  // per-chunk grad_weight partials is the same whatever the thread count.
  constexpr int64_t kMaxChunks = 256;
  const int64_t rows_per_chunk =
      std::max<int64_t>({1, vlmops::cpu::row_grain(C), (rows + kMaxChunks - 1) / kMaxChunks});
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  const at::Tensor w = weight ? weight_in_math_type(weight, out_type) : at::Tensor();
  at::Tensor partial = at::zeros({weight ? chunks : 0, C}, x.options().dtype(at::toOpMathType(out_type)));
  if (rows > 0 && C > 0) {
    at::Tensor rstd_c = rstd.contiguous();
    VLMOPS_CPU_DISPATCH(rms_norm_backward_kernel, grad_out, x, weight ? &w : nullptr, rstd_c, grad_x, partial,
                        rows_per_chunk);
  }
  if (!weight) return {grad_x, at::empty({0}, x.options())};
  return {grad_x, partial.sum(0).to(weight->scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("rms_norm_backward", &rms_norm_backward_cpu);
}

}  // namespace vlmops
