#pragma once
// Host-side argument checks of the varlen attention ops, shared by every C++ entry point (the Python
// wrapper checks the same things first, with the user's argument names).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace vlmops {

inline bool is_attention_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Head dims the kernels support: multiples of 8 from 32 to 256 (the Triton kernel pads D only to
// the next multiple of 16 in registers).
inline bool is_supported_head_dim(int64_t d) { return d >= 32 && d <= 256 && d % 8 == 0; }

// Shapes, dtypes and devices of q [Nq, H, D], k/v [Nk, Hk, D] and cu_seqlens_* int32 [B + 1].
inline void check_varlen_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k) {
  TORCH_CHECK(q.dim() == 3, "vlmops.varlen_attention: q must be [Nq, H, D], got ", q.dim(), " dims");
  TORCH_CHECK(k.dim() == 3, "vlmops.varlen_attention: k must be [Nk, Hk, D], got ", k.dim(), " dims");
  TORCH_CHECK(v.sizes() == k.sizes(), "vlmops.varlen_attention: v must have k's shape ", k.sizes(), ", got ",
              v.sizes());
  TORCH_CHECK(is_attention_float(q.scalar_type()),
              "vlmops.varlen_attention: q must be float32, float64, float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "vlmops.varlen_attention: q, k, v must share one dtype, got ", q.scalar_type(), ", ", k.scalar_type(),
              ", ", v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "vlmops.varlen_attention: q is on ", q.device(),
              " but k is on ", k.device(), " and v on ", v.device());
  const int64_t H = q.size(1), Hk = k.size(1), D = q.size(2);
  TORCH_CHECK(k.size(2) == D, "vlmops.varlen_attention: k has head dim ", k.size(2), " but q has ", D);
  TORCH_CHECK(is_supported_head_dim(D), "vlmops.varlen_attention: head dim must be a multiple of 8 in [32, 256], got ",
              D);
  TORCH_CHECK(Hk >= 1 && H % Hk == 0, "vlmops.varlen_attention: q heads (", H,
              ") must be a multiple of k/v heads (", Hk, ")");
  for (const at::Tensor* cu : {&cu_seqlens_q, &cu_seqlens_k}) {
    const char* name = cu == &cu_seqlens_q ? "cu_seqlens_q" : "cu_seqlens_k";
    TORCH_CHECK(cu->scalar_type() == at::kInt, "vlmops.varlen_attention: ", name, " must be int32, got ",
                cu->scalar_type());
    TORCH_CHECK(cu->dim() == 1 && cu->size(0) >= 1, "vlmops.varlen_attention: ", name, " must be [B + 1], got ",
                cu->sizes());
    TORCH_CHECK(cu->device() == q.device(), "vlmops.varlen_attention: ", name, " is on ", cu->device(),
                " but q is on ", q.device());
  }
  TORCH_CHECK(cu_seqlens_q.size(0) == cu_seqlens_k.size(0), "vlmops.varlen_attention: cu_seqlens_q has ",
              cu_seqlens_q.size(0), " entries but cu_seqlens_k has ", cu_seqlens_k.size(0));
}

// Values of a CPU cu_seqlens: starts at 0, never decreases, ends at the token count. Checked eagerly
// because the kernels index q/k/v with them.
inline void check_cu_seqlens_values(const int32_t* cu, int64_t entries, int64_t tokens, const char* name) {
  TORCH_CHECK(cu[0] == 0, "vlmops.varlen_attention: ", name, "[0] must be 0, got ", cu[0]);
  for (int64_t b = 1; b < entries; ++b) {
    TORCH_CHECK(cu[b] >= cu[b - 1], "vlmops.varlen_attention: ", name, " must be non-decreasing, but ", name, "[",
                b, "] = ", cu[b], " < ", name, "[", b - 1, "] = ", cu[b - 1]);
  }
  TORCH_CHECK(cu[entries - 1] == tokens, "vlmops.varlen_attention: ", name, "[-1] must equal the token count ",
              tokens, ", got ", cu[entries - 1]);
}

// max_seqlen, when given, must bound every segment: the CUDA grids are sized from it.
inline void check_max_seqlen(const int32_t* cu, int64_t entries, c10::optional<int64_t> max_seqlen, const char* name) {
  if (!max_seqlen.has_value()) return;
  for (int64_t b = 1; b < entries; ++b) {
    TORCH_CHECK(cu[b] - cu[b - 1] <= *max_seqlen, "vlmops.varlen_attention: max_seqlen_", name, " = ", *max_seqlen,
                " is smaller than segment ", b - 1, " of length ", cu[b] - cu[b - 1]);
  }
}

}  // namespace vlmops
