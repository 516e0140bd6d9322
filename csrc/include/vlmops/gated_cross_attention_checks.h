#pragma once
// The contract of vlmops::gated_cross_attention and vlmops::gated_cross_attention_backward, for every
// device's entry point (the rules shared with varlen attention: vlmops/varlen_attention_checks.h).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "vlmops/checks.h"
#include "vlmops/varlen_attention_checks.h"

namespace vlmops {
namespace gated_checks {

// Values of CPU key ranges: 0 <= kv_start <= kv_end <= Lk on every row. The kernels index k and v with them.
inline void range_values(const char* op, const at::Tensor& kv_start, const at::Tensor& kv_end, int64_t Lk) {
  const auto start = kv_start.accessor<int32_t, 2>(), end = kv_end.accessor<int32_t, 2>();
  for (int64_t b = 0; b < kv_start.size(0); ++b) {
    for (int64_t i = 0; i < kv_start.size(1); ++i) {
      TORCH_CHECK_VALUE(start[b][i] >= 0 && start[b][i] <= end[b][i] && end[b][i] <= Lk, "vlmops.", op, ": row ", i,
                        " of batch ", b, " has key range [kv_start, kv_end) = [", start[b][i], ", ", end[b][i],
                        "), which must satisfy 0 <= kv_start <= kv_end <= Lk = ", Lk);
    }
  }
}

}  // namespace gated_checks

// q [B, Lq, H, D], k/v [B, Lk, Hk, D] (float, one dtype and device), kv_start/kv_end int32 [B, Lq] on
// q's device (values checked on CPU, where reading them costs no synchronization), gate a one-element
// float tensor on q's device or none, softmax_scale finite.
inline void check_gated_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& kv_start, const at::Tensor& kv_end,
                                        const std::optional<at::Tensor>& gate, std::optional<double> softmax_scale,
                                        const char* op = "gated_cross_attention") {
  attention_checks::qkv(op, q, k, v, 4, "[B, Lq, H, D]", "[B, Lk, Hk, D]");
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), "vlmops.", op, ": k's batch ", k.size(0), " must equal q's ", q.size(0));
  const int64_t B = q.size(0), Lq = q.size(1);
  using attention_checks::Named;
  for (const auto& [name, r] : {Named{"kv_start", &kv_start}, Named{"kv_end", &kv_end}}) {
    checks::dtype_is(op, name, *r, at::kInt);
    checks::shape_is(op, name, *r, {B, Lq}, "[B, Lq]");
    checks::same_device(op, name, *r, "q", q);
  }
  if (gate.has_value()) {
    TORCH_CHECK_VALUE(gate->numel() == 1 && gate->dim() <= 1, "vlmops.", op,
                      ": gate must be a one-element tensor (shape [] or [1]), got shape ", gate->sizes());
    checks::float_dtype(op, "gate", *gate);
    checks::same_device(op, "gate", *gate, "q", q);
  }
  attention_checks::softmax_scale(op, softmax_scale);
  if (kv_start.is_cpu()) gated_checks::range_values(op, kv_start, kv_end, k.size(1));
}

// The forward's contract, and grad_out/out with q's shape, dtype and device, lse [B, H, Lq] in
// attention_lse_dtype(q) on q's device.
inline void check_gated_cross_attention_backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                 const at::Tensor& kv_start, const at::Tensor& kv_end,
                                                 const std::optional<at::Tensor>& gate,
                                                 std::optional<double> softmax_scale) {
  constexpr const char* op = "gated_cross_attention_backward";
  check_gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale, op);
  attention_checks::grad_out_and_out(op, grad_out, out, q);
  attention_checks::lse(op, lse, {q.size(0), q.size(2), q.size(1)}, "[B, H, Lq]", q);
}

}  // namespace vlmops
