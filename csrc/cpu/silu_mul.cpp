// CPU entry points of SwiGLU gating: out = silu(gate) * up (rounded as transformers' act_fn(gate) * up)
// and its backward, after the op's checks (vlmops/silu_mul_checks.h). gate, up and grad_out are read
// through their strides (never copied); the outputs are new contiguous tensors. The row kernels are in
// kernels/silu_mul_kernel.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "kernels/silu_mul_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/cpu_memory.h"
#include "vlmops/silu_mul_checks.h"

namespace vlmops {
namespace {

at::Tensor silu_mul_cpu(const at::Tensor& gate, const at::Tensor& up) {
  check_silu_mul(gate, up);
  at::Tensor out = at::empty(gate.sizes(), gate.options());
  vlmops::cpu::advise_huge_pages(out);
  if (out.numel() > 0) VLMOPS_CPU_DISPATCH(silu_mul_kernel, gate, up, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> silu_mul_backward_cpu(const at::Tensor& grad_out, const at::Tensor& gate,
                                                         const at::Tensor& up) {
  check_silu_mul_backward(grad_out, gate, up);
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
