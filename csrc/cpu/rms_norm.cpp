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

namespace vlmops {
namespace {

bool rms_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

at::ScalarType stats_dtype(at::ScalarType x) { return x == at::kDouble ? at::kDouble : at::kFloat; }

at::ScalarType out_dtype(const at::Tensor& x, const std::optional<at::Tensor>& weight) {
  return weight ? c10::promoteTypes(x.scalar_type(), weight->scalar_type()) : x.scalar_type();
}

void check_x_and_weight(const char* fn, const at::Tensor& x, const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(x.dim() >= 1, fn, ": x must be [..., C] with at least 1 dim, got a 0-dim tensor");
  TORCH_CHECK(rms_float_dtype(x.scalar_type()), fn, ": x must be float32, float64, float16 or bfloat16, got ",
              x.scalar_type());
  if (!weight) return;
  TORCH_CHECK(weight->dim() == 1 && weight->size(0) == x.size(-1), fn, ": weight must be [C] = [", x.size(-1),
              "], got ", weight->sizes());
  TORCH_CHECK(rms_float_dtype(weight->scalar_type()), fn,
              ": weight must be float32, float64, float16 or bfloat16, got ", weight->scalar_type());
  TORCH_CHECK(weight->device() == x.device(), fn, ": weight is on ", weight->device(), " but x is on ", x.device());
}

// The weight in the output's math type (exact: the output dtype holds every weight value).
at::Tensor weight_in_math_type(const std::optional<at::Tensor>& weight, at::ScalarType out) {
  return weight->to(at::toOpMathType(out)).contiguous();
}

std::tuple<at::Tensor, at::Tensor> rms_norm_cpu(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                double eps) {
  constexpr const char* fn = "vlmops.rms_norm";
  check_x_and_weight(fn, x, weight);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, fn, ": eps must be finite and >= 0, got ", eps);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype(x, weight)));
  vlmops::cpu::advise_huge_pages(out);
  at::Tensor rstd = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(stats_dtype(x.scalar_type())));
  if (rstd.numel() == 0) return {out, rstd};
  const at::Tensor w = weight ? weight_in_math_type(weight, out.scalar_type()) : at::Tensor();
  VLMOPS_CPU_DISPATCH(rms_norm_kernel, x, weight ? &w : nullptr, eps, out, rstd);
  return {out, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& weight,
                                                         const at::Tensor& rstd) {
  constexpr const char* fn = "vlmops.rms_norm_backward";
  check_x_and_weight(fn, x, weight);
  const at::ScalarType out_type = out_dtype(x, weight);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), fn, ": grad_out must have x's shape ", x.sizes(), ", got ",
              grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == out_type, fn, ": grad_out must have the output dtype ", out_type, ", got ",
              grad_out.scalar_type());
  TORCH_CHECK(rstd.sizes() == x.sizes().slice(0, x.dim() - 1), fn, ": rstd must be x.shape[:-1] = ",
              x.sizes().slice(0, x.dim() - 1), ", got ", rstd.sizes());
  TORCH_CHECK(rstd.scalar_type() == stats_dtype(x.scalar_type()), fn, ": rstd must be ",
              stats_dtype(x.scalar_type()), ", got ", rstd.scalar_type());
  TORCH_CHECK(grad_out.device() == x.device() && rstd.device() == x.device(), fn,
              ": grad_out and rstd must be on x's device ", x.device());
  const int64_t C = x.size(-1), rows = rstd.numel();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  vlmops::cpu::advise_huge_pages(grad_x);
  // Rows are split into a number of chunks that depends on the shape only, so the sum of the
  // per-chunk grad_weight partials is the same whatever the thread count.
  constexpr int64_t kMaxChunks = 256;
  const int64_t rows_per_chunk = std::max<int64_t>({1, vlmops::cpu::row_grain(C), (rows + kMaxChunks - 1) / kMaxChunks});
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
