#pragma once
// Host-side argument checks of the rope ops, shared by the CPU and CUDA entry points (the Python
// wrapper checks the same things first, with the user's argument names).
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace vlmops {

inline bool rope_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// q [B, S, Hq, D], k [B, S, Hk, D] (any strides), positions [B, S, A] int32/int64,
// axis [P] int64, inv_freq [P] float32, with 2 * P <= D.
inline void check_rope_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& positions,
                            const at::Tensor& axis, const at::Tensor& inv_freq) {
  TORCH_CHECK(q.dim() == 4, "vlmops.rope: q must be [B, S, H, D], got ", q.dim(), " dims");
  TORCH_CHECK(k.dim() == 4, "vlmops.rope: k must be [B, S, H_kv, D], got ", k.dim(), " dims");
  TORCH_CHECK(rope_float_dtype(q.scalar_type()),
              "vlmops.rope: q must be float32, float64, float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), "vlmops.rope: k dtype ", k.scalar_type(), " != q dtype ",
              q.scalar_type());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
              "vlmops.rope: k ", k.sizes(), " must match q ", q.sizes(), " in B, S and head_dim");
  TORCH_CHECK(positions.dim() == 3 && positions.size(0) == q.size(0) && positions.size(1) == q.size(1) &&
                  positions.size(2) >= 1,
              "vlmops.rope: positions must be [B, S, A] = [", q.size(0), ", ", q.size(1), ", A>=1], got ",
              positions.sizes());
  TORCH_CHECK(positions.scalar_type() == at::kLong || positions.scalar_type() == at::kInt,
              "vlmops.rope: positions must be int64 or int32, got ", positions.scalar_type());
  TORCH_CHECK(axis.dim() == 1 && axis.size(0) >= 1, "vlmops.rope: axis must be [rotary_dim/2], got ", axis.sizes());
  TORCH_CHECK(axis.scalar_type() == at::kLong, "vlmops.rope: axis must be int64, got ", axis.scalar_type());
  TORCH_CHECK(inv_freq.dim() == 1 && inv_freq.size(0) == axis.size(0), "vlmops.rope: inv_freq must be [",
              axis.size(0), "] like axis, got ", inv_freq.sizes());
  TORCH_CHECK(inv_freq.scalar_type() == at::kFloat, "vlmops.rope: inv_freq must be float32, got ",
              inv_freq.scalar_type());
  TORCH_CHECK(2 * axis.size(0) <= q.size(3), "vlmops.rope: rotary_dim = 2 * len(axis) = ", 2 * axis.size(0),
              " exceeds head_dim ", q.size(3));
  for (const at::Tensor* t : {&k, &positions, &axis, &inv_freq}) {
    TORCH_CHECK(t->device() == q.device(), "vlmops.rope: all tensors must be on q's device ", q.device(),
                ", got one on ", t->device());
  }
}

// In place, every element is written once: q and k must not alias themselves or each other.
inline void check_rope_inplace(const at::Tensor& q, const at::Tensor& k) {
  TORCH_CHECK(at::has_internal_overlap(q) != at::MemOverlap::Yes,
              "vlmops.rope_: q has overlapping memory (e.g. an expanded tensor); rotate a copy");
  TORCH_CHECK(at::has_internal_overlap(k) != at::MemOverlap::Yes,
              "vlmops.rope_: k has overlapping memory (e.g. an expanded tensor); rotate a copy");
  const auto overlap = at::get_overlap_status(q, k);
  TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
              "vlmops.rope_: q and k share memory; rotate them in place as separate tensors");
}

}  // namespace vlmops
