#pragma once
// The contract of vlmops::rope and vlmops::rope_, for every device's entry point: shapes, dtypes and
// devices of the arguments; the axis values on CPU (the CUDA kernels clamp them to [0, A) instead:
// reading axis on the host would synchronize); for rope_, memory that q and k may write twice.
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "vlmops/checks.h"

namespace vlmops {

// The operands as [B, S, ...]: packed tokens q [N, H, D], k [N, H_kv, D] and positions [N, A] are one
// batch of N ([1, N, ...] views), so that callers of packed vision tokens pass them as they are.
struct RopeOperands {
  at::Tensor q, k, positions;
  bool packed;  // the outputs are squeezed back to [N, ...]
};

inline RopeOperands rope_operands(const char* op, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& positions) {
  if (q.dim() != 3) return {q, k, positions, false};
  checks::dims(op, "k", k, 3, "[N, H_kv, D] like the packed q [N, H, D]");
  checks::dims(op, "positions", positions, 2, "[N, A] like the packed q [N, H, D]");
  return {q.unsqueeze(0), k.unsqueeze(0), positions.unsqueeze(0), true};
}

// q [B, S, H, D] and k [B, S, H_kv, D] float (any strides), positions [B, S, A] int64 or int32 (any
// strides), axis [P] int64 and inv_freq [P] float32 with 1 <= P and 2 * P <= D, all on q's device
// (packed operands as rope_operands gives them).
inline void check_rope(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& positions,
                       const at::Tensor& axis, const at::Tensor& inv_freq) {
  checks::dims(op, "q", q, 4, "[B, S, H, D] or packed [N, H, D]");
  checks::float_dtype(op, "q", q);
  checks::dims(op, "k", k, 4, "[B, S, H_kv, D]");
  checks::same_dtype(op, "k", k, "q", q);
  const int64_t B = q.size(0), S = q.size(1), D = q.size(3);
  TORCH_CHECK_VALUE(k.size(0) == B && k.size(1) == S && k.size(3) == D, "vlmops.", op,
                    ": k must be [B, S, H_kv, D] = [", B, ", ", S, ", H_kv, ", D, "] like q, got shape ", k.sizes());
  checks::dims(op, "positions", positions, 3, "[B, S, A]");
  TORCH_CHECK_VALUE(positions.scalar_type() == at::kLong || positions.scalar_type() == at::kInt, "vlmops.", op,
                    ": positions must be int64 or int32, got ", positions.scalar_type());
  TORCH_CHECK_VALUE(positions.size(0) == B && positions.size(1) == S && positions.size(2) >= 1, "vlmops.", op,
                    ": positions must be [B, S, A] = [", B, ", ", S, ", A >= 1], got shape ", positions.sizes());
  checks::dims(op, "axis", axis, 1, "[P]");
  checks::dtype_is(op, "axis", axis, at::kLong);
  const int64_t P = axis.size(0);
  TORCH_CHECK_VALUE(P >= 1, "vlmops.", op, ": axis must be [P] with P = rotary_dim / 2 >= 1, got shape ", axis.sizes());
  checks::dims(op, "inv_freq", inv_freq, 1, "[P]");
  checks::dtype_is(op, "inv_freq", inv_freq, at::kFloat);
  TORCH_CHECK_VALUE(inv_freq.size(0) == P, "vlmops.", op, ": inv_freq must be [P] = [", P, "] like axis, got shape ",
                    inv_freq.sizes());
  TORCH_CHECK_VALUE(P <= D / 2, "vlmops.", op, ": rotary_dim = 2 * len(axis) = 2 * ", P, " exceeds head_dim ", D);
  checks::same_device(op, "k", k, "q", q);
  checks::same_device(op, "positions", positions, "q", q);
  checks::same_device(op, "axis", axis, "q", q);
  checks::same_device(op, "inv_freq", inv_freq, "q", q);
}

// axis values in [0, A), read on the host (CPU tensors only).
inline void check_rope_axis_values(const char* op, const at::Tensor& axis, int64_t A) {
  const int64_t* values = axis.const_data_ptr<int64_t>();
  const int64_t stride = axis.stride(0);
  for (int64_t i = 0; i < axis.size(0); ++i) {
    const int64_t a = values[i * stride];
    TORCH_CHECK_VALUE(a >= 0 && a < A, "vlmops.", op, ": axis[", i, "] = ", a, " must be in [0, A) = [0, ", A,
                      "), a column of positions");
  }
}

namespace rope_detail {

// The bytes a strided tensor addresses, relative to the start of its storage: element i covers
// [offset + sum(i_d * stride_d), ... + item). Only dims of size > 1 are kept (the others never move).
struct ByteLayout {
  int64_t offset = 0;
  int64_t item = 0;
  c10::SmallVector<std::pair<int64_t, int64_t>, 6> dims;  // (size, stride in bytes)
  int64_t span = 0;                                       // bytes from the first element to past the last

  explicit ByteLayout(const at::Tensor& t) : offset(t.storage_offset() * t.itemsize()), item(t.itemsize()) {
    span = item;
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (t.size(d) <= 1) continue;
      dims.emplace_back(t.size(d), t.stride(d) * item);
      span += (t.size(d) - 1) * t.stride(d) * item;
    }
  }
};

// The residues modulo `period` of the bytes of t form one interval [start, start + length) (mod
// period) when every stride is a multiple of the period or is below it, the strides below it spanning
// less than one period: then (start, length). Otherwise nothing is known.
inline std::optional<std::pair<int64_t, int64_t>> residue_interval(const ByteLayout& t, int64_t period) {
  int64_t length = t.item;
  for (const auto& [size, stride] : t.dims) {
    if (stride % period == 0) continue;
    if (stride > period) return std::nullopt;
    length += (size - 1) * stride;
    if (length > period) return std::nullopt;
  }
  return std::make_pair(t.offset % period, length);
}

}  // namespace rope_detail

// Whether two distinct indices of t may address the same bytes: exact for dense and for expanded
// tensors; otherwise true unless, in the order of their strides, each dim steps over all the bytes
// the smaller ones span (a conservative answer from the strides alone).
inline bool rope_may_overlap_itself(const at::Tensor& t) {
  const at::MemOverlap status = at::has_internal_overlap(t);
  if (status != at::MemOverlap::TooHard) return status == at::MemOverlap::Yes;
  rope_detail::ByteLayout layout(t);
  std::sort(layout.dims.begin(), layout.dims.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  int64_t span = layout.item;
  for (const auto& [size, stride] : layout.dims) {
    if (stride < span) return true;
    span += (size - 1) * stride;
  }
  return false;
}

// Whether a and b (same dtype) may address a common byte, from their sizes and strides only (no loop
// over elements). Exact when they live in different storages, when their byte ranges are disjoint and
// when ATen can tell (dense tensors). Otherwise, for interleaved views of one buffer (q = qkv[:, 0] and
// k = qkv[:, 1] of a [N, 3, H, D] projection, GQA slices of a [N, (H + 2 H_kv) D] one), they are
// disjoint when some stride P is a period that both tensors' bytes fill within disjoint intervals of
// residues mod P; when no stride proves that, the answer is a conservative true.
inline bool rope_may_share_memory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.storage().is_alias_of(b.storage())) return false;
  const rope_detail::ByteLayout la(a), lb(b);
  if (la.offset + la.span <= lb.offset || lb.offset + lb.span <= la.offset) return false;
  const at::MemOverlapStatus status = at::get_overlap_status(a, b);
  if (status != at::MemOverlapStatus::TooHard) return status != at::MemOverlapStatus::No;
  for (const auto* layout : {&la, &lb}) {
    for (const auto& [size, period] : layout->dims) {
      if (period <= 0) continue;
      const auto ra = rope_detail::residue_interval(la, period), rb = rope_detail::residue_interval(lb, period);
      if (!ra || !rb) continue;
      const int64_t a_to_b = ((rb->first - ra->first) % period + period) % period;
      const int64_t b_to_a = ((ra->first - rb->first) % period + period) % period;
      if (a_to_b >= ra->second && b_to_a >= rb->second) return false;
    }
  }
  return true;
}

// rope_ writes every element of q and k once: neither may address one element twice, and they may
// not share memory.
inline void check_rope_inplace(const at::Tensor& q, const at::Tensor& k) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"q", q}, {"k", k}}) {
    TORCH_CHECK_VALUE(!rope_may_overlap_itself(t), "vlmops.rope_: ", name,
                      " may address the same memory from several elements (sizes ", t.sizes(), ", strides ",
                      t.strides(),
                      ", e.g. an expanded tensor); rotate it out of place or pass a tensor whose "
                      "elements have their own memory");
  }
  TORCH_CHECK_VALUE(!rope_may_share_memory(q, k),
                    "vlmops.rope_: q and k may share memory (views of one buffer whose elements may coincide: "
                    "q strides ",
                    q.strides(), ", k strides ", k.strides(),
                    "); in place they must be disjoint: rotate them out of place or pass separate tensors");
}

}  // namespace vlmops
