#pragma once
// The contract of vlmops::varlen_attention and vlmops::varlen_attention_backward, for every device's
// entry point, and the rules both attention families share (namespace attention_checks, also used by
// gated_cross_attention_checks.h).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>

#include "vlmops/checks.h"

namespace vlmops {

// Head dims of the attention kernels, on every device: 1 to 256.
inline constexpr int64_t kMaxAttentionHeadDim = 256;

// Tokens of one attention operand (Nq, Nk; Lq, Lk): the kernels index rows with int32, tiles up to
// 2^16 rows past the last.
inline constexpr int64_t kMaxAttentionTokens = (int64_t{1} << 31) - (int64_t{1} << 16);

// The dtype of the log-sum-exp and of the CPU kernels' accumulation: float64 for float64 inputs, else float32.
inline at::ScalarType attention_lse_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

namespace attention_checks {

using Named = std::pair<const char*, const at::Tensor*>;  // an argument's name and value

// q, k and v: `ndim` dims ([..., tokens, heads, D]), one float dtype, one device; v has k's shape, k
// has q's head dim D in [1, kMaxAttentionHeadDim]; the q heads are a multiple of the k/v heads; a token's
// heads (H * D and Hk * D elements) index with 32 bits; at most kMaxAttentionTokens tokens.
inline void qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t ndim,
                const char* q_layout, const char* k_layout) {
  checks::dims(op, "q", q, ndim, q_layout);
  checks::dims(op, "k", k, ndim, k_layout);
  checks::float_dtype(op, "q", q);
  checks::same_dtype(op, "k", k, "q", q);
  checks::same_dtype(op, "v", v, "q", q);
  checks::same_device(op, "k", k, "q", q);
  checks::same_device(op, "v", v, "q", q);
  checks::shape_is(op, "v", v, k.sizes(), "k's shape");
  const int64_t D = q.size(-1), H = q.size(-2), Hk = k.size(-2);
  TORCH_CHECK_VALUE(D >= 1 && D <= kMaxAttentionHeadDim, "vlmops.", op, ": q's head dim (last dim) must be in [1, ",
                    kMaxAttentionHeadDim, "], got ", D);
  TORCH_CHECK_VALUE(k.size(-1) == D, "vlmops.", op, ": k's head dim ", k.size(-1), " must equal q's ", D);
  TORCH_CHECK_VALUE(Hk >= 1 && H % Hk == 0, "vlmops.", op, ": k's heads (", Hk,
                    ") must be at least 1 and divide q's heads (", H, ")");
  TORCH_CHECK_VALUE(checks::fits_int32(checks::checked_mul(op, "q heads * head dim", H, D)), "vlmops.", op,
                    ": q's heads * head dim = ", H, " * ", D, " must be < 2^31");
  for (const auto& [name, t] : {Named{"q", &q}, Named{"k", &k}}) {
    TORCH_CHECK_VALUE(t->size(-3) <= kMaxAttentionTokens, "vlmops.", op, ": ", name, " has ", t->size(-3),
                      " tokens; the kernels take at most 2^31 - 2^16 = ", kMaxAttentionTokens);
  }
}

// softmax_scale, when given, is finite.
inline void softmax_scale(const char* op, std::optional<double> scale) {
  TORCH_CHECK_VALUE(!scale.has_value() || std::isfinite(*scale), "vlmops.", op,
                    ": softmax_scale must be finite or None, got ", *scale);
}

// grad_out and out of a backward: q's shape, dtype and device.
inline void grad_out_and_out(const char* op, const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& q) {
  for (const auto& [name, t] : {Named{"grad_out", &grad_out}, Named{"out", &out}}) {
    checks::shape_is(op, name, *t, q.sizes(), "q's shape");
    checks::same_dtype(op, name, *t, "q", q);
    checks::same_device(op, name, *t, "q", q);
  }
}

// The saved log-sum-exp of a backward: `shape` in attention_lse_dtype(q), on q's device.
inline void lse(const char* op, const at::Tensor& lse, at::IntArrayRef shape, const char* layout, const at::Tensor& q) {
  checks::shape_is(op, "lse", lse, shape, layout);
  checks::dtype_is(op, "lse", lse, attention_lse_dtype(q.scalar_type()));
  checks::same_device(op, "lse", lse, "q", q);
}

// The CUDA kernels (Triton) compute in float32, float16 and bfloat16; float64 runs on CPU.
inline void cuda_dtype(const char* op, const at::Tensor& q) {
  TORCH_CHECK_VALUE(q.scalar_type() != at::kDouble, "vlmops.", op,
                    ": q must be float32, float16 or bfloat16 on CUDA (float64 runs on CPU), got ", q.scalar_type());
}

}  // namespace attention_checks

namespace varlen_checks {

// cu_seqlens int32 [B + 1] on q's device.
inline void cu_seqlens_shape(const char* op, const char* name, const at::Tensor& cu, const at::Tensor& q) {
  checks::dtype_is(op, name, cu, at::kInt);
  TORCH_CHECK_VALUE(cu.dim() == 1 && cu.size(0) >= 1, "vlmops.", op, ": ", name,
                    " must be [B + 1] with at least 1 entry, got shape ", cu.sizes());
  checks::same_device(op, name, cu, "q", q);
}

// Values of a CPU cu_seqlens for `tokens` rows of `tensor_name`: starts at 0, never decreases, ends at
// the token count, and max_seqlen (when given) bounds every segment. The kernels index q, k and v
// with them.
inline void cu_seqlens_values(const char* op, const char* name, const at::Tensor& cu, int64_t tokens,
                              const char* tensor_name, const char* max_name, std::optional<int64_t> max_seqlen) {
  const auto c = cu.accessor<int32_t, 1>();
  const int64_t entries = cu.size(0);
  TORCH_CHECK_VALUE(c[0] == 0, "vlmops.", op, ": ", name, "[0] must be 0, got ", c[0]);
  for (int64_t b = 1; b < entries; ++b) {
    TORCH_CHECK_VALUE(c[b] >= c[b - 1], "vlmops.", op, ": ", name, " must be non-decreasing, but ", name, "[", b,
                      "] = ", c[b], " < ", name, "[", b - 1, "] = ", c[b - 1]);
    TORCH_CHECK_VALUE(!max_seqlen.has_value() || c[b] - c[b - 1] <= *max_seqlen, "vlmops.", op, ": ", max_name, " = ",
                      max_seqlen.value_or(0), " is smaller than segment ", b - 1, " of ", name, " (", c[b] - c[b - 1],
                      " tokens)");
  }
  TORCH_CHECK_VALUE(c[entries - 1] == tokens, "vlmops.", op, ": ", name, "[-1] must equal ", tensor_name,
                    "'s token count ", tokens, ", got ", c[entries - 1]);
}

}  // namespace varlen_checks

// q [Nq, H, D], k/v [Nk, Hk, D] (float, one dtype and device), cu_seqlens_q/cu_seqlens_k int32 [B + 1]
// on q's device (values checked on CPU, where reading them costs no synchronization), max_seqlen_* >= 0,
// softmax_scale finite.
inline void check_varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                   std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_k,
                                   std::optional<double> softmax_scale, const char* op = "varlen_attention") {
  attention_checks::qkv(op, q, k, v, 3, "[Nq, H, D]", "[Nk, Hk, D]");
  varlen_checks::cu_seqlens_shape(op, "cu_seqlens_q", cu_seqlens_q, q);
  varlen_checks::cu_seqlens_shape(op, "cu_seqlens_k", cu_seqlens_k, q);
  TORCH_CHECK_VALUE(cu_seqlens_k.size(0) == cu_seqlens_q.size(0), "vlmops.", op, ": cu_seqlens_k has ",
                    cu_seqlens_k.size(0), " entries but cu_seqlens_q has ", cu_seqlens_q.size(0));
  const int64_t Nq = q.size(0), Nk = k.size(0);
  TORCH_CHECK_VALUE(cu_seqlens_q.size(0) > 1 || (Nq == 0 && Nk == 0), "vlmops.", op,
                    ": cu_seqlens_q = [0] has no segment, so q and k must have no token, got ", Nq, " and ", Nk);
  TORCH_CHECK_VALUE(!max_seqlen_q.has_value() || *max_seqlen_q >= 0, "vlmops.", op,
                    ": max_seqlen_q must be >= 0 or None, got ", max_seqlen_q.value_or(0));
  TORCH_CHECK_VALUE(!max_seqlen_k.has_value() || *max_seqlen_k >= 0, "vlmops.", op,
                    ": max_seqlen_k must be >= 0 or None, got ", max_seqlen_k.value_or(0));
  attention_checks::softmax_scale(op, softmax_scale);
  if (cu_seqlens_q.is_cpu()) {
    varlen_checks::cu_seqlens_values(op, "cu_seqlens_q", cu_seqlens_q, Nq, "q", "max_seqlen_q", max_seqlen_q);
    varlen_checks::cu_seqlens_values(op, "cu_seqlens_k", cu_seqlens_k, Nk, "k", "max_seqlen_k", max_seqlen_k);
  }
}

// The forward's contract, and grad_out/out with q's shape, dtype and device, lse [H, Nq] in
// attention_lse_dtype(q) on q's device.
inline void check_varlen_attention_backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                            const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                            std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_k,
                                            std::optional<double> softmax_scale) {
  constexpr const char* op = "varlen_attention_backward";
  check_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, op);
  attention_checks::grad_out_and_out(op, grad_out, out, q);
  attention_checks::lse(op, lse, {q.size(1), q.size(0)}, "[H, Nq]", q);
}

}  // namespace vlmops
