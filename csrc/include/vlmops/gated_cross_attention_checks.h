#pragma once
// Host-side argument checks of the gated cross-attention ops, shared by every C++ entry point (the
// Python wrapper checks the same things first, with the user's argument names).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace vlmops {

// Shapes, dtypes and devices of q [B, Lq, H, D], k/v [B, Lk, Hk, D], kv_start/kv_end int32 [B, Lq] and
// the optional one-element gate.
inline void check_gated_cross_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const at::Tensor& kv_start, const at::Tensor& kv_end,
                                               const c10::optional<at::Tensor>& gate) {
  constexpr const char* fn = "vlmops.gated_cross_attention: ";
  TORCH_CHECK(q.dim() == 4, fn, "q must be [B, Lq, H, D], got ", q.dim(), " dims");
  TORCH_CHECK(k.dim() == 4, fn, "k must be [B, Lk, Hk, D], got ", k.dim(), " dims");
  TORCH_CHECK(v.sizes() == k.sizes(), fn, "v must have k's shape ", k.sizes(), ", got ", v.sizes());
  const at::ScalarType t = q.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, fn,
              "q must be float32, float64, float16 or bfloat16, got ", t);
  TORCH_CHECK(k.scalar_type() == t && v.scalar_type() == t, fn, "q, k, v must share one dtype, got ", t, ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), fn, "q is on ", q.device(), " but k is on ",
              k.device(), " and v on ", v.device());
  const int64_t B = q.size(0), Lq = q.size(1), H = q.size(2), D = q.size(3), Hk = k.size(2);
  TORCH_CHECK(k.size(0) == B, fn, "k has batch ", k.size(0), " but q has ", B);
  TORCH_CHECK(k.size(3) == D, fn, "k has head dim ", k.size(3), " but q has ", D);
  TORCH_CHECK(D >= 8 && D <= 256 && D % 8 == 0, fn, "head dim must be a multiple of 8 in [8, 256], got ", D);
  TORCH_CHECK(Hk >= 1 && H % Hk == 0, fn, "q heads (", H, ") must be a multiple of k/v heads (", Hk, ")");
  for (const at::Tensor* r : {&kv_start, &kv_end}) {
    const char* name = r == &kv_start ? "kv_start" : "kv_end";
    TORCH_CHECK(r->scalar_type() == at::kInt, fn, name, " must be int32, got ", r->scalar_type());
    TORCH_CHECK(r->dim() == 2 && r->size(0) == B && r->size(1) == Lq, fn, name, " must be [B, Lq] = [", B, ", ", Lq,
                "], got ", r->sizes());
    TORCH_CHECK(r->device() == q.device(), fn, name, " is on ", r->device(), " but q is on ", q.device());
  }
  if (gate.has_value()) {
    TORCH_CHECK(gate->numel() == 1 && gate->dim() <= 1, fn, "gate must be a scalar tensor (shape [] or [1]), got ",
                gate->sizes());
    TORCH_CHECK(at::isFloatingType(gate->scalar_type()), fn, "gate must be a float tensor, got ", gate->scalar_type());
    TORCH_CHECK(gate->device() == q.device(), fn, "gate is on ", gate->device(), " but q is on ", q.device());
  }
}

// Values of CPU key ranges: 0 <= kv_start <= kv_end <= Lk for every row. Checked eagerly because the
// kernels index k/v with them.
inline void check_kv_range_values(const int32_t* start, const int32_t* end, int64_t rows, int64_t Lq, int64_t Lk) {
  for (int64_t i = 0; i < rows; ++i) {
    TORCH_CHECK(start[i] >= 0 && end[i] <= Lk && start[i] <= end[i],
                "vlmops.gated_cross_attention: row ", i % Lq, " of batch ", i / Lq, " has key range [", start[i], ", ",
                end[i], "), which must satisfy 0 <= kv_start <= kv_end <= Lk = ", Lk);
  }
}

}  // namespace vlmops
