// RMSNorm row kernels (compiled once per CPU capability, see cpu_dispatch.h). Rows are read in place
// through x's strides; a row with a unit-stride last dim runs the at::vec loops (two vectors of the
// math type per step), any other row the scalar loop. Both evaluate rms_norm_math.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <type_traits>
#include <vector>

#include "kernels/rms_norm_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/rms_norm_math.h"

namespace vlmops::cpu::CPU_CAPABILITY {
namespace {

template <class T>
using Vec = at::vec::Vectorized<T>;

template <class T>
constexpr bool kReduced = std::is_same_v<T, at::BFloat16> || std::is_same_v<T, at::Half>;

// 2 * Vec<opmath(T)>::size() elements of T to and from two vectors of its math type.
template <class T>
struct VecIO {
  using acc_t = at::opmath_type<T>;
  static constexpr int64_t kW = Vec<acc_t>::size();
  static constexpr int64_t kStep = 2 * kW;

  static void load(const T* p, Vec<acc_t>& a, Vec<acc_t>& b) {
    if constexpr (kReduced<T>) {
      std::tie(a, b) = at::vec::convert_to_float<T>(Vec<T>::loadu(p));
    } else {
      a = Vec<acc_t>::loadu(p);
      b = Vec<acc_t>::loadu(p + kW);
    }
  }

  static void store(T* p, const Vec<acc_t>& a, const Vec<acc_t>& b) {
    if constexpr (kReduced<T>) {
      at::vec::convert_from_float<T>(a, b).store(p);
    } else {
      a.store(p);
      b.store(p + kW);
    }
  }

  // Rounds to T and back (rms_normalize's rounding, vectorized).
  static void round(Vec<acc_t>& a, Vec<acc_t>& b) {
    if constexpr (kReduced<T>) std::tie(a, b) = at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(a, b));
  }
};

template <class acc_t>
acc_t reduce_sum(const Vec<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v);
}

// Element offset of row r of a tensor [..., C]: the leading dims are walked through their strides, so
// any view (padded rows, permuted batch dims, expanded gradients) is read in place.
class RowIndexer {
 public:
  explicit RowIndexer(const at::Tensor& t) {
    for (int64_t d = t.dim() - 2; d >= 0; --d) {
      if (t.size(d) == 1) continue;
      sizes_.push_back(t.size(d));
      strides_.push_back(t.stride(d));
    }
  }

  int64_t offset(int64_t r) const {
    int64_t off = 0;
    for (size_t d = 0; d < sizes_.size(); ++d) {
      off += (r % sizes_[d]) * strides_[d];
      r /= sizes_[d];
    }
    return off;
  }

 private:
  std::vector<int64_t> sizes_, strides_;  // innermost leading dim first
};

template <class x_t, class acc_t>
acc_t sum_squares(const x_t* x, int64_t sx, int64_t C) {
  int64_t c = 0;
  acc_t total = 0;
  if (sx == 1) {
    Vec<acc_t> s0(0), s1(0), v0, v1;
    for (; c + VecIO<x_t>::kStep <= C; c += VecIO<x_t>::kStep) {
      VecIO<x_t>::load(x + c, v0, v1);
      s0 = at::vec::fmadd(v0, v0, s0);
      s1 = at::vec::fmadd(v1, v1, s1);
    }
    total = reduce_sum(s0 + s1);
  }
  for (; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(x[c * sx]);
    total += v * v;
  }
  return total;
}

// The vector loops need the output's math type to be the statistics type (every case but a float64
// weight with a lower-precision x, which takes the scalar loop).
template <class x_t, class out_t>
constexpr bool kVectorizable = std::is_same_v<at::opmath_type<x_t>, at::opmath_type<out_t>>;

template <class x_t, class out_t>
void forward_impl(const at::Tensor& x, const at::Tensor* weight, double eps, at::Tensor& out, at::Tensor& rstd) {
  using acc_t = at::opmath_type<x_t>;
  using pacc_t = at::opmath_type<out_t>;
  const int64_t C = x.size(-1), rows = rstd.numel(), sx = x.stride(-1);
  const RowIndexer xi(x);
  const x_t* xp = x.const_data_ptr<x_t>();
  out_t* op = out.mutable_data_ptr<out_t>();
  acc_t* rp = rstd.mutable_data_ptr<acc_t>();
  const pacc_t* wp = weight ? weight->const_data_ptr<pacc_t>() : nullptr;
  const acc_t eps_acc = static_cast<acc_t>(eps);
  at::parallel_for(0, rows, row_grain(C), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const x_t* xr = xp + xi.offset(r);
      out_t* orow = op + r * C;
      const acc_t rs = rms_rstd(sum_squares<x_t, acc_t>(xr, sx, C), C, eps_acc);
      rp[r] = rs;
      int64_t c = 0;
      if constexpr (kVectorizable<x_t, out_t>) {
        if (sx == 1) {
          const Vec<acc_t> vrs(rs);
          Vec<acc_t> v0, v1;
          for (; c + VecIO<x_t>::kStep <= C; c += VecIO<x_t>::kStep) {
            VecIO<x_t>::load(xr + c, v0, v1);
            v0 = v0 * vrs;
            v1 = v1 * vrs;
            VecIO<x_t>::round(v0, v1);
            if (wp) {
              v0 = v0 * Vec<acc_t>::loadu(wp + c);
              v1 = v1 * Vec<acc_t>::loadu(wp + c + VecIO<x_t>::kW);
            }
            VecIO<out_t>::store(orow + c, v0, v1);
          }
        }
      }
      for (; c < C; ++c) {
        const acc_t h = rms_normalize<x_t>(static_cast<acc_t>(xr[c * sx]), rs);
        orow[c] = wp ? rms_scale<out_t>(static_cast<pacc_t>(h), wp[c]) : static_cast<out_t>(h);
      }
    }
  });
}

// One row of the backward: x and grad_out through their column strides, the weight and the row's
// grad_weight partial (null without a weight) in the output's math type.
template <class x_t, class out_t>
struct BackwardRow {
  using acc_t = at::opmath_type<x_t>;
  using pacc_t = at::opmath_type<out_t>;
  const x_t* x;
  int64_t sx;
  const out_t* grad_out;
  int64_t sg;
  const pacc_t* weight;
  pacc_t* grad_weight;
  acc_t rstd;
  int64_t C;
  int64_t vec_end;  // columns [0, vec_end) take the vector loops, the rest the scalar loop

  // Pass 1: sum(gn * x) with gn = grad_out * weight; adds grad_out * h to grad_weight.
  acc_t dot_and_grad_weight() const {
    acc_t dot = 0;
    if constexpr (kVectorizable<x_t, out_t>) {
      const Vec<acc_t> vrs(rstd);
      Vec<acc_t> d0(0), d1(0), x0, x1, g0, g1;
      for (int64_t c = 0; c < vec_end; c += VecIO<x_t>::kStep) {
        VecIO<x_t>::load(x + c, x0, x1);
        VecIO<out_t>::load(grad_out + c, g0, g1);
        if (weight) {
          Vec<acc_t> h0 = x0 * vrs, h1 = x1 * vrs;
          VecIO<x_t>::round(h0, h1);
          pacc_t* gw = grad_weight + c;
          at::vec::fmadd(g0, h0, Vec<acc_t>::loadu(gw)).store(gw);
          at::vec::fmadd(g1, h1, Vec<acc_t>::loadu(gw + VecIO<x_t>::kW)).store(gw + VecIO<x_t>::kW);
          g0 = g0 * Vec<acc_t>::loadu(weight + c);
          g1 = g1 * Vec<acc_t>::loadu(weight + c + VecIO<x_t>::kW);
        }
        d0 = at::vec::fmadd(g0, x0, d0);
        d1 = at::vec::fmadd(g1, x1, d1);
      }
      dot = reduce_sum(d0 + d1);
    }
    for (int64_t c = vec_end; c < C; ++c) {
      const acc_t xv = static_cast<acc_t>(x[c * sx]);
      const pacc_t g = static_cast<pacc_t>(grad_out[c * sg]);
      acc_t gn = static_cast<acc_t>(g);
      if (weight) {
        grad_weight[c] += g * static_cast<pacc_t>(rms_normalize<x_t>(xv, rstd));
        gn = static_cast<acc_t>(g * weight[c]);
      }
      dot += gn * xv;
    }
    return dot;
  }

  // Pass 2: grad_x from the row's coefficient (rms_backward_coef of pass 1's dot).
  void grad_input(x_t* grad_x, acc_t coef) const {
    if constexpr (kVectorizable<x_t, out_t>) {
      const Vec<acc_t> vrs(rstd), vcoef(coef);
      Vec<acc_t> x0, x1, g0, g1;
      for (int64_t c = 0; c < vec_end; c += VecIO<x_t>::kStep) {
        VecIO<x_t>::load(x + c, x0, x1);
        VecIO<out_t>::load(grad_out + c, g0, g1);
        if (weight) {
          g0 = g0 * Vec<acc_t>::loadu(weight + c);
          g1 = g1 * Vec<acc_t>::loadu(weight + c + VecIO<x_t>::kW);
        }
        VecIO<x_t>::store(grad_x + c, rms_grad_input(g0, x0, vrs, vcoef), rms_grad_input(g1, x1, vrs, vcoef));
      }
    }
    for (int64_t c = vec_end; c < C; ++c) {
      const pacc_t g = static_cast<pacc_t>(grad_out[c * sg]);
      const acc_t gn = static_cast<acc_t>(weight ? g * weight[c] : g);
      grad_x[c] = static_cast<x_t>(rms_grad_input(gn, static_cast<acc_t>(x[c * sx]), rstd, coef));
    }
  }
};

template <class x_t, class out_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor* weight, const at::Tensor& rstd,
                   at::Tensor& grad_x, at::Tensor& gw_partial, int64_t rows_per_chunk) {
  using acc_t = at::opmath_type<x_t>;
  using pacc_t = at::opmath_type<out_t>;
  const int64_t C = x.size(-1), rows = rstd.numel(), sx = x.stride(-1), sg = grad_out.stride(-1);
  const RowIndexer xi(x), gi(grad_out);
  const x_t* xp = x.const_data_ptr<x_t>();
  const out_t* gp = grad_out.const_data_ptr<out_t>();
  const acc_t* rp = rstd.const_data_ptr<acc_t>();
  const pacc_t* wp = weight ? weight->const_data_ptr<pacc_t>() : nullptr;
  x_t* gxp = grad_x.mutable_data_ptr<x_t>();
  pacc_t* partial = gw_partial.mutable_data_ptr<pacc_t>();
  const bool vec = kVectorizable<x_t, out_t> && sx == 1 && sg == 1;
  const int64_t vec_end = vec ? C - C % VecIO<x_t>::kStep : 0;
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      pacc_t* gw = wp ? partial + chunk * C : nullptr;
      const int64_t row_end = std::min(rows, (chunk + 1) * rows_per_chunk);
      for (int64_t r = chunk * rows_per_chunk; r < row_end; ++r) {
        const BackwardRow<x_t, out_t> row{xp + xi.offset(r), sx, gp + gi.offset(r), sg, wp, gw, rp[r], C, vec_end};
        row.grad_input(gxp + r * C, rms_backward_coef(row.dot_and_grad_weight(), row.rstd, C));
      }
    }
  });
}

// Calls fn<x_t, out_t>() for x's dtype and the output dtype (x's own, float32 or float64).
template <class Fn>
void dispatch_types(at::ScalarType x_type, at::ScalarType out_type, Fn&& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_type, "vlmops.rms_norm_cpu", [&] {
    if (out_type == x_type) {
      fn.template operator()<scalar_t, scalar_t>();
    } else if (out_type == at::kFloat) {
      fn.template operator()<scalar_t, float>();
    } else {
      TORCH_CHECK(out_type == at::kDouble, "vlmops.rms_norm: unsupported output dtype ", out_type, " for x ", x_type);
      fn.template operator()<scalar_t, double>();
    }
  });
}

}  // namespace

void rms_norm_kernel(const at::Tensor& x, const at::Tensor* weight, double eps, at::Tensor& out, at::Tensor& rstd) {
  dispatch_types(x.scalar_type(), out.scalar_type(),
                 [&]<class x_t, class out_t>() { forward_impl<x_t, out_t>(x, weight, eps, out, rstd); });
}

void rms_norm_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor* weight,
                              const at::Tensor& rstd, at::Tensor& grad_x, at::Tensor& grad_weight_partial,
                              int64_t rows_per_chunk) {
  dispatch_types(x.scalar_type(), grad_out.scalar_type(), [&]<class x_t, class out_t>() {
    backward_impl<x_t, out_t>(grad_out, x, weight, rstd, grad_x, grad_weight_partial, rows_per_chunk);
  });
}

}  // namespace vlmops::cpu::CPU_CAPABILITY
