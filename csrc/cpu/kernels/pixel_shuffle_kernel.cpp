// Fused pixel shuffle + LayerNorm row kernels (compiled once per CPU capability, see cpu_dispatch.h).
// One output token is s*s*C values gathered from s rows of x; the row is staged once in an L1-sized
// buffer in accumulation precision, so x is read once and the output written once.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "kernels/pixel_shuffle_kernel.h"
#include "vlmops/cpu_dispatch.h"
#include "vlmops/pixel_shuffle_checks.h"

namespace vlmops::cpu::CPU_CAPABILITY {
namespace {

template <class acc_t>
using Vec = at::vec::Vectorized<acc_t>;

template <class acc_t>
acc_t reduce_sum(const Vec<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v);
}

// Loads n values into `dst` in accumulation precision and returns their sum.
template <class scalar_t, class acc_t>
acc_t load_run(acc_t* dst, const scalar_t* src, int64_t stride, int64_t n) {
  constexpr int64_t kW = Vec<acc_t>::size();
  Vec<acc_t> acc(0);
  int64_t c = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (stride == 1) {
      for (; c + kW <= n; c += kW) {
        const Vec<acc_t> v = Vec<acc_t>::loadu(src + c);
        v.store(dst + c);
        acc += v;
      }
    }
  }
  acc_t total = reduce_sum(acc);
  for (; c < n; ++c) {
    dst[c] = static_cast<acc_t>(src[c * stride]);
    total += dst[c];
  }
  return total;
}

// Gathers the s*s*C inputs of output token (b, i, j) into `row`; returns their sum.
template <class scalar_t, class acc_t>
acc_t gather_row(const PixelShuffleGeometry& g, const scalar_t* x, int64_t b, int64_t i, int64_t j, acc_t* row) {
  const int64_t s = g.scale, C = g.channels;
  acc_t total = 0;
  for (int64_t dy = 0; dy < s; ++dy) {
    const scalar_t* chunk = x + g.chunk_offset(b, i, j, dy);
    for (int64_t dx = 0; dx < s; ++dx) {
      total += load_run(row + (dy * s + dx) * C, chunk + dx * g.stride_w, g.stride_c, C);
    }
  }
  return total;
}

template <class acc_t>
acc_t centered_sum_squares(const acc_t* v, acc_t mean, int64_t n) {
  constexpr int64_t kW = Vec<acc_t>::size();
  Vec<acc_t> acc(0);
  const Vec<acc_t> m(mean);
  int64_t k = 0;
  for (; k + kW <= n; k += kW) {
    const Vec<acc_t> d = Vec<acc_t>::loadu(v + k) - m;
    acc = at::vec::fmadd(d, d, acc);
  }
  acc_t total = reduce_sum(acc);
  for (; k < n; ++k) total += (v[k] - mean) * (v[k] - mean);
  return total;
}

// Writes n accumulation-precision values as scalar_t (a plain vector store when they agree).
template <class scalar_t, class acc_t>
void store_run(scalar_t* dst, const acc_t* src, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::memcpy(dst, src, n * sizeof(acc_t));
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<scalar_t>(src[k]);
  }
}

template <class scalar_t, class acc_t>
std::vector<acc_t> affine_or(const std::optional<at::Tensor>& t, int64_t n, acc_t fill) {
  std::vector<acc_t> out(n, fill);
  if (t.has_value() && t->defined()) {
    const at::Tensor tc = t->contiguous();
    const scalar_t* p = tc.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < n; ++k) out[k] = static_cast<acc_t>(p[k]);
  }
  return out;
}

template <class acc_t>
acc_t run_sum(const acc_t* v, int64_t n) {
  constexpr int64_t kW = Vec<acc_t>::size();
  Vec<acc_t> acc(0);
  int64_t k = 0;
  for (; k + kW <= n; k += kW) acc += Vec<acc_t>::loadu(v + k);
  acc_t total = reduce_sum(acc);
  for (; k < n; ++k) total += v[k];
  return total;
}

// Normalizes one run of n values into dst (converted to scalar_t; a vector store when it is acc_t).
template <class scalar_t, class acc_t>
void apply_run(scalar_t* dst, const acc_t* src, const acc_t* w, const acc_t* b, acc_t mu, acc_t rs, int64_t n) {
  constexpr int64_t kW = Vec<acc_t>::size();
  const Vec<acc_t> vmu(mu), vrs(rs);
  int64_t k = 0;
  for (; k + kW <= n; k += kW) {
    const Vec<acc_t> y =
        layer_norm_apply(Vec<acc_t>::loadu(src + k), vmu, vrs, Vec<acc_t>::loadu(w + k), Vec<acc_t>::loadu(b + k));
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      y.store(dst + k);
    } else {
      acc_t tmp[kW];
      y.store(tmp);
      for (int64_t t = 0; t < kW; ++t) dst[k + t] = static_cast<scalar_t>(tmp[t]);
    }
  }
  for (; k < n; ++k) dst[k] = static_cast<scalar_t>(layer_norm_apply(src[k], mu, rs, w[k], b[k]));
}

template <class scalar_t>
void forward_impl(const at::Tensor& x, int64_t s, const std::optional<at::Tensor>& weight,
                  const std::optional<at::Tensor>& bias, double eps, at::Tensor& out, at::Tensor& mean,
                  at::Tensor& rstd) {
  using acc_t = at::opmath_type<scalar_t>;
  const PixelShuffleGeometry g = pixel_shuffle_geometry(x, s);
  const int64_t Ho = out.size(1), Wo = out.size(2), n = out.size(3), C = g.channels;
  const std::vector<acc_t> w = affine_or<scalar_t, acc_t>(weight, n, acc_t(1));
  const std::vector<acc_t> bb = affine_or<scalar_t, acc_t>(bias, n, acc_t(0));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  acc_t* mp = mean.mutable_data_ptr<acc_t>();
  acc_t* rp = rstd.mutable_data_ptr<acc_t>();
  // In the common case (x already in accumulation precision, unit channel stride) the s*s runs of C
  // channels are read in place from x: three passes over an L1/L2-resident row, one write of out.
  // Otherwise the row is staged once, converted, in a buffer that then is the only run.
  constexpr bool kSameType = std::is_same_v<scalar_t, acc_t>;
  const bool in_place = kSameType && g.stride_c == 1;
  const int64_t runs = in_place ? s * s : 1, run_len = in_place ? C : n;
  at::parallel_for(0, out.size(0) * Ho * Wo, vlmops::cpu::row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> staged(in_place ? 0 : n);
    std::vector<const acc_t*> run(runs);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
      acc_t total = 0;
      if constexpr (kSameType) {
        if (in_place) {
          for (int64_t dy = 0; dy < s; ++dy) {
            for (int64_t dx = 0; dx < s; ++dx) {
              run[dy * s + dx] = xp + g.chunk_offset(b, i, j, dy) + dx * g.stride_w;
              total += run_sum(run[dy * s + dx], C);
            }
          }
        }
      }
      if (!in_place) {
        total = gather_row(g, xp, b, i, j, staged.data());
        run[0] = staged.data();
      }
      const acc_t mu = total / n;
      acc_t squares = 0;
      for (int64_t q = 0; q < runs; ++q) squares += centered_sum_squares(run[q], mu, run_len);
      const acc_t rs = acc_t(1) / std::sqrt(squares / n + acc_t(eps));
      mp[r] = mu;
      rp[r] = rs;
      for (int64_t q = 0; q < runs; ++q) {
        const int64_t k0 = q * run_len;
        apply_run(op + r * n + k0, run[q], w.data() + k0, bb.data() + k0, mu, rs, run_len);
      }
    }
  });
}

template <class scalar_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                   const std::optional<at::Tensor>& weight, int64_t s, at::Tensor& grad_x, at::Tensor& gw_partial,
                   at::Tensor& gb_partial) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kW = Vec<acc_t>::size();
  const PixelShuffleGeometry g = pixel_shuffle_geometry(x, s);
  const PixelShuffleGeometry gx = pixel_shuffle_contiguous_geometry(x.size(1), x.size(2), x.size(3), s);
  const PixelShuffleGeometry gy = pixel_shuffle_geometry(grad_out, 1);  // scale 1: reads one row of grad_out in place
  const int64_t Ho = grad_out.size(1), Wo = grad_out.size(2), n = grad_out.size(3), C = x.size(3);
  const std::vector<acc_t> w = affine_or<scalar_t, acc_t>(weight, n, acc_t(1));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const acc_t* mp = mean_c.const_data_ptr<acc_t>();
  const acc_t* rp = rstd_c.const_data_ptr<acc_t>();
  scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
  acc_t* gw_part = gw_partial.mutable_data_ptr<acc_t>();
  acc_t* gb_part = gb_partial.mutable_data_ptr<acc_t>();
  at::parallel_for(0, grad_out.size(0) * Ho * Wo, vlmops::cpu::row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xhat(n), gy_row(n);
    // One partial dW/db row per thread, summed by the caller: no atomics.
    acc_t* gw = gw_part + at::get_thread_num() * n;
    acc_t* gb = gb_part + at::get_thread_num() * n;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
      const acc_t mu = mp[r], rs = rp[r];
      gather_row(g, xp, b, i, j, xhat.data());
      gather_row(gy, gp, b, i, j, gy_row.data());
      const Vec<acc_t> vmu(mu), vrs(rs);
      Vec<acc_t> sum_g(0), sum_g_xhat(0);
      int64_t k = 0;
      for (; k + kW <= n; k += kW) {
        const Vec<acc_t> xh = (Vec<acc_t>::loadu(xhat.data() + k) - vmu) * vrs;
        const Vec<acc_t> dy = Vec<acc_t>::loadu(gy_row.data() + k);
        at::vec::fmadd(dy, xh, Vec<acc_t>::loadu(gw + k)).store(gw + k);
        (Vec<acc_t>::loadu(gb + k) + dy).store(gb + k);
        const Vec<acc_t> gk = dy * Vec<acc_t>::loadu(w.data() + k);
        sum_g += gk;
        sum_g_xhat = at::vec::fmadd(gk, xh, sum_g_xhat);
        xh.store(xhat.data() + k);
        gk.store(gy_row.data() + k);
      }
      acc_t sg = reduce_sum(sum_g), sgx = reduce_sum(sum_g_xhat);
      for (; k < n; ++k) {
        xhat[k] = (xhat[k] - mu) * rs;
        gw[k] += gy_row[k] * xhat[k];
        gb[k] += gy_row[k];
        gy_row[k] *= w[k];
        sg += gy_row[k];
        sgx += gy_row[k] * xhat[k];
      }
      const acc_t mean_g = sg / n, mean_g_xhat = sgx / n;
      const Vec<acc_t> vmg(mean_g), vmgx(mean_g_xhat);
      for (k = 0; k + kW <= n; k += kW) {
        layer_norm_grad_input(Vec<acc_t>::loadu(gy_row.data() + k), Vec<acc_t>::loadu(xhat.data() + k), vrs, vmg, vmgx)
            .store(gy_row.data() + k);
      }
      for (; k < n; ++k) gy_row[k] = layer_norm_grad_input(gy_row[k], xhat[k], rs, mean_g, mean_g_xhat);
      // Each chunk dy of the token is s*C contiguous elements of the contiguous grad_x.
      for (int64_t dy = 0; dy < s; ++dy) {
        store_run(gxp + gx.chunk_offset(b, i, j, dy), gy_row.data() + dy * s * C, s * C);
      }
    }
  });
}

}  // namespace

void pixel_shuffle_layer_norm_kernel(const at::Tensor& x, int64_t scale, const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias, double eps, at::Tensor& out,
                                     at::Tensor& mean, at::Tensor& rstd) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_cpu",
                                  [&] { forward_impl<scalar_t>(x, scale, weight, bias, eps, out, mean, rstd); });
}

void pixel_shuffle_layer_norm_backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean,
                                              const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
                                              int64_t scale, at::Tensor& grad_x, at::Tensor& grad_weight_partial,
                                              at::Tensor& grad_bias_partial) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_backward_cpu", [&] {
        backward_impl<scalar_t>(grad_out, x, mean, rstd, weight, scale, grad_x, grad_weight_partial, grad_bias_partial);
      });
}

}  // namespace vlmops::cpu::CPU_CAPABILITY
