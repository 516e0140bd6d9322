// CPU entry points of SwiGLU gating: out = silu(gate) * up (rounded as transformers' act_fn(gate) * up)
// and its backward. gate, up and grad_out are read through their strides (never copied); the outputs
// are new contiguous tensors. The row kernels are in kernels/silu_mul_kernel.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "kernels/silu_mul_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/cpu_memory.h"

namespace vlmops {
namespace {

bool silu_mul_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// `name` must be gate's shape, dtype and device.
void check_like_gate(const char* op, const at::Tensor& gate, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.sizes() == gate.sizes(), "vlmops.", op, ": ", name, " must have gate's shape ", gate.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == gate.scalar_type(), "vlmops.", op, ": ", name, " must have gate's dtype ",
              gate.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == gate.device(), "vlmops.", op, ": ", name, " must be on gate's device ", gate.device(),
              ", got ", t.device());
}

void check_gate(const char* op, const at::Tensor& gate) {
  TORCH_CHECK(gate.dim() >= 1, "vlmops.", op, ": gate must be [..., I] with at least 1 dim, got a 0-dim tensor");
  TORCH_CHECK(silu_mul_float_dtype(gate.scalar_type()), "vlmops.", op,
              ": gate must be float32, float64, float16 or bfloat16, got ", gate.scalar_type());
}

at::Tensor silu_mul_cpu(const at::Tensor& gate, const at::Tensor& up) {
  check_gate("silu_mul", gate);
  check_like_gate("silu_mul", gate, up, "up");
  at::Tensor out = at::empty(gate.sizes(), gate.options());
  vlmops::cpu::advise_huge_pages(out);
  if (out.numel() > 0) VLMOPS_CPU_DISPATCH(silu_mul_kernel, gate, up, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> silu_mul_backward_cpu(const at::Tensor& grad_out, const at::Tensor& gate,
                                                         const at::Tensor& up) {
  check_gate("silu_mul_backward", gate);
  check_like_gate("silu_mul_backward", gate, up, "up");
  check_like_gate("silu_mul_backward", gate, grad_out, "grad_out");
  at::Tensor grad_gate = at::empty(gate.sizes(), gate.options());
  at::Tensor grad_up = at::empty(gate.sizes(), gate.options());
  vlmops::cpu::advise_huge_pages(grad_gate);
  vlmops::cpu::advise_huge_pages(grad_up);
  if (gate.numel() > 0) VLMOPS_CPU_DISPATCH(silu_mul_backward_kernel, grad_out, gate, up, grad_gate, grad_up);
  return {grad_gate, grad_up};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("silu_mul", &silu_mul_cpu);
  m.impl("silu_mul_backward", &silu_mul_backward_cpu);
}

}  // namespace vlmops
