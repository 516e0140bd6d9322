// Every vlmops schema, defined once. Kernels register next to their implementations with
// TORCH_LIBRARY_IMPL, so a device that was not compiled simply has no kernel.
#include <torch/library.h>

// Defines op `name` and, with the same signature, `triton_name`: the entry of its Triton kernel, which
// the C++ CUDA entry of `name` calls after its checks (csrc/include/vlmops/triton_kernel.h).
#define VLMOPS_DEF_WITH_TRITON(m, name, triton_name, signature) \
  do {                                                          \
    (m).def(name signature);                                    \
    (m).def(triton_name signature);                             \
  } while (0)

TORCH_LIBRARY(vlmops, m) {
  // Pixel shuffle: token merging of InternVL / Idefics3 / SmolVLM. Each op has a Triton variant that its
  // CUDA entry runs with VLMOPS_CUDA_BACKEND=triton (vlmops/triton/pixel_shuffle.py).
  // x [B, H, W, C] (any strides) -> [B, H/s, W/s, s*s*C].
  VLMOPS_DEF_WITH_TRITON(m, "pixel_shuffle", "_pixel_shuffle_triton", "(Tensor x, int scale) -> Tensor");
  // grad_out [B, H/s, W/s, s*s*C] -> grad_x [B, H, W, C]: the inverse permutation.
  VLMOPS_DEF_WITH_TRITON(m, "pixel_shuffle_backward", "_pixel_shuffle_backward_triton",
                         "(Tensor grad_out, int scale) -> Tensor");
  // Fused pixel_shuffle + LayerNorm(s*s*C) -> (out, mean [B, H/s, W/s], rstd [B, H/s, W/s]).
  VLMOPS_DEF_WITH_TRITON(m, "pixel_shuffle_layer_norm", "_pixel_shuffle_layer_norm_triton",
                         "(Tensor x, int scale, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  // -> (grad_x [B, H, W, C], grad_weight [s*s*C], grad_bias [s*s*C]).
  VLMOPS_DEF_WITH_TRITON(m, "pixel_shuffle_layer_norm_backward", "_pixel_shuffle_layer_norm_backward_triton",
                         "(Tensor grad_out, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, int scale) -> "
                         "(Tensor, Tensor, Tensor)");
}

// Patch embedding (Conv2d/Conv3d with kernel == stride) as one GEMM; see vlmops/ops/patch_embed.py.
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // x [N, C*T*Ph*Pw] rows | [B, C, H, W] | [B, C, F, H, W] (uint8 or float), weight [D, C, (T,) Ph, Pw] -> [N, D] | [B,
  // ncls + L, D].
  VLMOPS_DEF_WITH_TRITON(m, "patch_embed", "_patch_embed_triton",
                         "(Tensor x, Tensor weight, Tensor? bias, Tensor? mean, Tensor? std, float? rescale, "
                         "Tensor? pos_embed, Tensor? cls_token) -> Tensor");
  // grad_patches [N, D] | [B, L, D] (no CLS row) -> (grad_x (x's shape, or [0] unless compute_grad_x), grad_weight,
  // grad_bias [D]).
  VLMOPS_DEF_WITH_TRITON(m, "patch_embed_backward", "_patch_embed_backward_triton",
                         "(Tensor grad_patches, Tensor x, Tensor weight, Tensor? mean, Tensor? std, float? rescale, "
                         "bool compute_grad_x) -> (Tensor, Tensor, Tensor)");
}

// Multi-axis rotary embedding (2D vision RoPE, 3D M-RoPE, 1D): pair i of rotary_dim/2 turns by
// positions[b, s, axis[i]] * inv_freq[i]; q [B, S, H, D] and k [B, S, H_kv, D] (any strides) in one pass.
// Their Triton variants (_rope_triton, _rope_triton_) run under VLMOPS_CUDA_BACKEND=triton.
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // -> (q_out, k_out) in q's/k's layout; fp32_math: float32 math (Qwen vision) vs activation-dtype cos/sin
  // and products (Pixtral, text M-RoPE); inverse: rotate by -angle (the backward).
  VLMOPS_DEF_WITH_TRITON(m, "rope", "_rope_triton",
                         "(Tensor q, Tensor k, Tensor positions, Tensor axis, Tensor inv_freq, bool fp32_math, "
                         "bool inverse=False) -> (Tensor, Tensor)");
  // The same rotation written into q and k (which must not share memory).
  VLMOPS_DEF_WITH_TRITON(m, "rope_", "_rope_triton_",
                         "(Tensor(a!) q, Tensor(b!) k, Tensor positions, Tensor axis, Tensor inv_freq, "
                         "bool fp32_math, bool inverse=False) -> ()");
}

// Block-diagonal packed (varlen) attention, non-causal; q [Nq, H, D], k/v [Nk, Hk, D], cu_seqlens int32 [B + 1].
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // -> (out [Nq, H, D] in q's dtype, lse [H, Nq] float32 (float64 for float64 inputs)); scale defaults to D^-0.5.
  VLMOPS_DEF_WITH_TRITON(m, "varlen_attention", "_varlen_attention_triton",
                         "(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
                         "int? max_seqlen_q=None, int? max_seqlen_k=None, float? softmax_scale=None) "
                         "-> (Tensor, Tensor)");
  // -> (grad_q, grad_k, grad_v): flash-attention 2 backward, probabilities recomputed from lse.
  VLMOPS_DEF_WITH_TRITON(m, "varlen_attention_backward", "_varlen_attention_backward_triton",
                         "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                         "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int? max_seqlen_q=None, int? max_seqlen_k=None, "
                         "float? softmax_scale=None) -> (Tensor, Tensor, Tensor)");
}

// Gated cross-attention (Flamingo, Llama 3.2 Vision): q [B, Lq, H, D] attends to k/v [B, Lk, Hk, D]
// rows [kv_start, kv_end) (int32 [B, Lq] each; empty range: zero row), output times tanh(gate).
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // -> (out [B, Lq, H, D] in q's dtype, lse [B, H, Lq] float32 (float64 for float64 inputs)); scale defaults to D^-0.5.
  VLMOPS_DEF_WITH_TRITON(m, "gated_cross_attention", "_gated_cross_attention_triton",
                         "(Tensor q, Tensor k, Tensor v, Tensor kv_start, Tensor kv_end, Tensor? gate=None, "
                         "float? softmax_scale=None) -> (Tensor, Tensor)");
  // -> (grad_q, grad_k, grad_v, grad_gate (gate's shape; [0] without a gate)): flash-attention 2 backward.
  VLMOPS_DEF_WITH_TRITON(m, "gated_cross_attention_backward", "_gated_cross_attention_backward_triton",
                         "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor kv_start, "
                         "Tensor kv_end, Tensor? gate=None, float? softmax_scale=None) "
                         "-> (Tensor, Tensor, Tensor, Tensor)");
}

// RMSNorm over the last dim, Qwen2/T5 convention: float32 statistics, normalized value rounded to x's
// dtype, then times weight (out dtype = promote(x, weight)); x [..., C] (any strides), weight [C].
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // -> (out [..., C], rstd [...] float32 (float64 for float64 inputs)).
  VLMOPS_DEF_WITH_TRITON(m, "rms_norm", "_rms_norm_triton",
                         "(Tensor x, Tensor? weight, float eps) -> (Tensor, Tensor)");
  // -> (grad_x (x's shape and dtype), grad_weight [C] (weight's dtype; [0] without a weight)).
  VLMOPS_DEF_WITH_TRITON(m, "rms_norm_backward", "_rms_norm_backward_triton",
                         "(Tensor grad_out, Tensor x, Tensor? weight, Tensor rstd) -> (Tensor, Tensor)");
}

// SwiGLU gating of gated MLPs (Qwen2.5-VL vision, Llama-style): silu(gate) * up, rounded as
// transformers' act_fn(gate) * up rounds; gate and up [..., I] (any strides, e.g. padded GEMM rows).
TORCH_LIBRARY_FRAGMENT(vlmops, m) {
  // -> out [..., I], contiguous, in gate's dtype.
  VLMOPS_DEF_WITH_TRITON(m, "silu_mul", "_silu_mul_triton", "(Tensor gate, Tensor up) -> Tensor");
  // -> (grad_gate, grad_up), contiguous.
  VLMOPS_DEF_WITH_TRITON(m, "silu_mul_backward", "_silu_mul_backward_triton",
                         "(Tensor grad_out, Tensor gate, Tensor up) -> (Tensor, Tensor)");
}
