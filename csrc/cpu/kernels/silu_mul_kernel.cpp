// SwiGLU gating row kernels (compiled once per CPU capability, see cpu_dispatch.h).
//
// Rows are the last dim of gate and up, which may have any strides (the GEMM outputs of a gated MLP
// are often written with padded rows). A row whose inputs are unit-stride runs the at::vec path:
// exp(-g) through Vectorized::exp (Sleef's expf8_u10 at AVX2), the same vector math as PyTorch's own
// silu and silu_backward kernels, with the row tail loaded partially so every element takes the
// vector path. Any other row runs the scalar loop (std::exp, as PyTorch's strided loops do).
// Outputs are contiguous.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#include "kernels/silu_mul_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/silu_mul_math.h"

namespace vlmops::cpu::CPU_CAPABILITY {
namespace {

template <class T>
using Vec = at::vec::Vectorized<T>;

// Offset (in elements) of row `row` of t, the rows being every index of t's leading dims.
int64_t row_offset(const at::Tensor& t, int64_t row) {
  int64_t offset = 0;
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    const int64_t size = t.size(d);
    offset += (row % size) * t.stride(d);
    row /= size;
  }
  return offset;
}

template <class V>
V exp_neg(const V& g) {
  return g.neg().exp();
}

// out[0, n) = round(round(silu(g)) * u) for unit-stride rows.
template <class scalar_t>
void forward_row_vec(const scalar_t* g, const scalar_t* u, scalar_t* out, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kW = Vec<scalar_t>::size();
  for (int64_t i = 0; i < n; i += kW) {
    const int64_t m = std::min(kW, n - i);
    const Vec<scalar_t> gv = Vec<scalar_t>::loadu(g + i, m), uv = Vec<scalar_t>::loadu(u + i, m);
    Vec<scalar_t> y;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      y = silu_from_exp(gv, exp_neg(gv)) * uv;
    } else {
      auto [g0, g1] = at::vec::convert_to_float<scalar_t>(gv);
      auto [u0, u1] = at::vec::convert_to_float<scalar_t>(uv);
      // silu rounded to the activation dtype (F.silu's output), then one rounded product.
      const Vec<scalar_t> s =
          at::vec::convert_from_float<scalar_t>(silu_from_exp(g0, exp_neg(g0)), silu_from_exp(g1, exp_neg(g1)));
      auto [s0, s1] = at::vec::convert_to_float<scalar_t>(s);
      y = at::vec::convert_from_float<scalar_t>(s0 * u0, s1 * u1);
    }
    y.store(out + i, m);
  }
}

template <class scalar_t>
void forward_row_scalar(const scalar_t* g, const scalar_t* u, scalar_t* out, int64_t n, int64_t sg, int64_t su) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] =
        static_cast<scalar_t>(silu_mul_value<scalar_t>(static_cast<acc_t>(g[i * sg]), static_cast<acc_t>(u[i * su])));
  }
}

// Backward of unit-stride rows: grad_up = go * round(silu(g)), grad_gate = round(go * u) * dsilu(g).
template <class scalar_t>
void backward_row_vec(const scalar_t* go, const scalar_t* g, const scalar_t* u, scalar_t* gg, scalar_t* gu, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kW = Vec<scalar_t>::size();
  for (int64_t i = 0; i < n; i += kW) {
    const int64_t m = std::min(kW, n - i);
    const Vec<scalar_t> gov = Vec<scalar_t>::loadu(go + i, m), gv = Vec<scalar_t>::loadu(g + i, m),
                        uv = Vec<scalar_t>::loadu(u + i, m);
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      const Vec<acc_t> e = exp_neg(gv);
      (gov * silu_from_exp(gv, e)).store(gu + i, m);
      silu_backward_from_exp(gov * uv, gv, e).store(gg + i, m);
    } else {
      auto [go0, go1] = at::vec::convert_to_float<scalar_t>(gov);
      auto [g0, g1] = at::vec::convert_to_float<scalar_t>(gv);
      auto [u0, u1] = at::vec::convert_to_float<scalar_t>(uv);
      const Vec<float> e0 = exp_neg(g0), e1 = exp_neg(g1);
      auto [s0, s1] = at::vec::convert_to_float<scalar_t>(
          at::vec::convert_from_float<scalar_t>(silu_from_exp(g0, e0), silu_from_exp(g1, e1)));
      at::vec::convert_from_float<scalar_t>(go0 * s0, go1 * s1).store(gu + i, m);
      auto [t0, t1] = at::vec::convert_to_float<scalar_t>(at::vec::convert_from_float<scalar_t>(go0 * u0, go1 * u1));
      at::vec::convert_from_float<scalar_t>(silu_backward_from_exp(t0, g0, e0), silu_backward_from_exp(t1, g1, e1))
          .store(gg + i, m);
    }
  }
}

template <class scalar_t>
void backward_row_scalar(const scalar_t* go, const scalar_t* g, const scalar_t* u, scalar_t* gg, scalar_t* gu,
                         int64_t n, int64_t sgo, int64_t sg, int64_t su) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    acc_t grad_gate, grad_up;
    silu_mul_grad_values<scalar_t>(static_cast<acc_t>(go[i * sgo]), static_cast<acc_t>(g[i * sg]),
                                   static_cast<acc_t>(u[i * su]), grad_gate, grad_up);
    gg[i] = static_cast<scalar_t>(grad_gate);
    gu[i] = static_cast<scalar_t>(grad_up);
  }
}

bool unit_last_stride(const at::Tensor& t) { return t.stride(-1) == 1 || t.size(-1) == 1; }

}  // namespace

void silu_mul_kernel(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& out) {
  const int64_t n = gate.size(-1), rows = gate.numel() / n;
  const bool unit = unit_last_stride(gate) && unit_last_stride(up);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gate.scalar_type(), "silu_mul_cpu", [&] {
    const scalar_t* g = gate.const_data_ptr<scalar_t>();
    const scalar_t* u = up.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gr = g + row_offset(gate, r);
        const scalar_t* ur = u + row_offset(up, r);
        if (unit) {
          forward_row_vec(gr, ur, o + r * n, n);
        } else {
          forward_row_scalar(gr, ur, o + r * n, n, gate.stride(-1), up.stride(-1));
        }
      }
    });
  });
}

void silu_mul_backward_kernel(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up,
                              const at::Tensor& grad_gate, const at::Tensor& grad_up) {
  const int64_t n = gate.size(-1), rows = gate.numel() / n;
  const bool unit = unit_last_stride(grad_out) && unit_last_stride(gate) && unit_last_stride(up);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gate.scalar_type(), "silu_mul_backward_cpu", [&] {
    const scalar_t* go = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* g = gate.const_data_ptr<scalar_t>();
    const scalar_t* u = up.const_data_ptr<scalar_t>();
    scalar_t* gg = grad_gate.data_ptr<scalar_t>();
    scalar_t* gu = grad_up.data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gor = go + row_offset(grad_out, r);
        const scalar_t* gr = g + row_offset(gate, r);
        const scalar_t* ur = u + row_offset(up, r);
        if (unit) {
          backward_row_vec(gor, gr, ur, gg + r * n, gu + r * n, n);
        } else {
          backward_row_scalar(gor, gr, ur, gg + r * n, gu + r * n, n, grad_out.stride(-1), gate.stride(-1),
                              up.stride(-1));
        }
      }
    });
  });
}

}  // namespace vlmops::cpu::CPU_CAPABILITY
