// CPU kernels of pixel shuffle and fused pixel shuffle + LayerNorm.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "vlmops/pixel_shuffle_checks.h"
#include "vlmops/pixel_shuffle_math.h"

namespace vlmops {
namespace {

// Copies n elements between strided runs; the unit-stride case (the common one) is a memcpy.
template <class E>
void copy_run(E* dst, int64_t dst_stride, const E* src, int64_t src_stride, int64_t n) {
  if (dst_stride == 1 && src_stride == 1) {
    std::memcpy(dst, src, n * sizeof(E));
    return;
  }
  for (int64_t c = 0; c < n; ++c) dst[c * dst_stride] = src[c * src_stride];
}

// Rows of output tokens handed to one task: enough elements to amortize scheduling.
int64_t row_grain(int64_t row_elems) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_elems)); }

// Moves every element between x-space ([B, H, W, C] with geometry `g`) and shuffled space
// ([B, H/s, W/s, s*s*C] with strides `ys`). The map is a bijection, so tasks never collide.
template <class E, bool kToShuffled>
void shuffle_copy(const PixelShuffleGeometry& g, E* x, E* y, const int64_t* ys, int64_t B, int64_t Ho,
                  int64_t Wo) {
  const int64_t s = g.scale, C = g.channels;
  at::parallel_for(0, B * Ho * Wo, row_grain(s * s * C), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (Ho * Wo), i = (row / Wo) % Ho, j = row % Wo;
      E* y_row = y + b * ys[0] + i * ys[1] + j * ys[2];
      for (int64_t dy = 0; dy < s; ++dy) {
        for (int64_t dx = 0; dx < s; ++dx) {
          E* x_run = x + g.chunk_offset(b, i, j, dy) + dx * g.stride_w;
          E* y_run = y_row + (dy * s + dx) * C * ys[3];
          if (kToShuffled) {
            copy_run(y_run, ys[3], x_run, g.stride_c, C);
          } else {
            copy_run(x_run, g.stride_c, y_run, ys[3], C);
          }
        }
      }
    }
  });
}

// Element type of the byte copy: shuffling only moves elements, so their size is all that matters.
template <bool kToShuffled>
void shuffle_copy_any(const PixelShuffleGeometry& g, const at::Tensor& x, const at::Tensor& y) {
  const int64_t ys[4] = {y.stride(0), y.stride(1), y.stride(2), y.stride(3)};
  const int64_t B = y.size(0), Ho = y.size(1), Wo = y.size(2);
  switch (x.element_size()) {
    case 2:
      shuffle_copy<uint16_t, kToShuffled>(g, static_cast<uint16_t*>(x.data_ptr()),
                                          static_cast<uint16_t*>(y.data_ptr()), ys, B, Ho, Wo);
      break;
    case 4:
      shuffle_copy<uint32_t, kToShuffled>(g, static_cast<uint32_t*>(x.data_ptr()),
                                          static_cast<uint32_t*>(y.data_ptr()), ys, B, Ho, Wo);
      break;
    case 8:
      shuffle_copy<uint64_t, kToShuffled>(g, static_cast<uint64_t*>(x.data_ptr()),
                                          static_cast<uint64_t*>(y.data_ptr()), ys, B, Ho, Wo);
      break;
    default:
      TORCH_CHECK(false, "vlmops.pixel_shuffle: unsupported element size ", x.element_size());
  }
}

at::Tensor pixel_shuffle_cpu(const at::Tensor& x, int64_t scale) {
  check_shuffle_input(x, scale);
  const int64_t s = scale;
  at::Tensor out = at::empty({x.size(0), x.size(1) / s, x.size(2) / s, x.size(3) * s * s}, x.options());
  if (out.numel() > 0) shuffle_copy_any<true>(geometry_of(x, s), x, out);
  return out;
}

at::Tensor pixel_shuffle_backward_cpu(const at::Tensor& grad_out, int64_t scale) {
  check_shuffled(grad_out, scale, "grad_out");
  const int64_t s = scale, C = grad_out.size(3) / (s * s), H = grad_out.size(1) * s, W = grad_out.size(2) * s;
  at::Tensor grad_x = at::empty({grad_out.size(0), H, W, C}, grad_out.options());
  if (grad_x.numel() > 0) shuffle_copy_any<false>(contiguous_geometry(H, W, C, s), grad_x, grad_out);
  return grad_x;
}

// Gathers the s*s*C inputs of output token (b, i, j) into `row` in accumulation precision.
template <class scalar_t, class acc_t>
void gather_row(const PixelShuffleGeometry& g, const scalar_t* x, int64_t b, int64_t i, int64_t j, acc_t* row) {
  const int64_t s = g.scale, C = g.channels;
  for (int64_t dy = 0; dy < s; ++dy) {
    for (int64_t dx = 0; dx < s; ++dx) {
      const scalar_t* src = x + g.chunk_offset(b, i, j, dy) + dx * g.stride_w;
      acc_t* dst = row + (dy * s + dx) * C;
      if (g.stride_c == 1) {
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<acc_t>(src[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<acc_t>(src[c * g.stride_c]);
      }
    }
  }
}

template <class acc_t>
acc_t row_sum(const acc_t* v, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  Vec acc(0);
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) acc += Vec::loadu(v + k);
  acc_t total = at::vec::vec_reduce_all<acc_t>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; k < n; ++k) total += v[k];
  return total;
}

template <class acc_t>
acc_t row_centered_sum_squares(const acc_t* v, acc_t mean, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  Vec acc(0);
  const Vec m(mean);
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    const Vec d = Vec::loadu(v + k) - m;
    acc += d * d;
  }
  acc_t total = at::vec::vec_reduce_all<acc_t>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; k < n; ++k) total += (v[k] - mean) * (v[k] - mean);
  return total;
}

template <class scalar_t, class acc_t>
std::vector<acc_t> affine_or(const c10::optional<at::Tensor>& t, int64_t n, acc_t fill) {
  std::vector<acc_t> out(n, fill);
  if (t.has_value() && t->defined()) {
    const at::Tensor tc = t->contiguous();
    const scalar_t* p = tc.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < n; ++k) out[k] = static_cast<acc_t>(p[k]);
  }
  return out;
}

template <class scalar_t>
void ps_layer_norm_forward(const at::Tensor& x, int64_t s, const c10::optional<at::Tensor>& weight,
                           const c10::optional<at::Tensor>& bias, double eps, at::Tensor& out, at::Tensor& mean,
                           at::Tensor& rstd) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  const PixelShuffleGeometry g = geometry_of(x, s);
  const int64_t Ho = out.size(1), Wo = out.size(2), n = out.size(3);
  const std::vector<acc_t> w = affine_or<scalar_t, acc_t>(weight, n, acc_t(1));
  const std::vector<acc_t> bb = affine_or<scalar_t, acc_t>(bias, n, acc_t(0));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  acc_t* mp = mean.mutable_data_ptr<acc_t>();
  acc_t* rp = rstd.mutable_data_ptr<acc_t>();
  at::parallel_for(0, out.size(0) * Ho * Wo, row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(n);
    for (int64_t r = begin; r < end; ++r) {
      gather_row(g, xp, r / (Ho * Wo), (r / Wo) % Ho, r % Wo, row.data());
      const acc_t mu = row_sum(row.data(), n) / n;
      const acc_t rs = acc_t(1) / std::sqrt(row_centered_sum_squares(row.data(), mu, n) / n + acc_t(eps));
      mp[r] = mu;
      rp[r] = rs;
      // The normalized row is written in place, then stored (converted) once.
      const Vec vmu(mu), vrs(rs);
      int64_t k = 0;
      for (; k + Vec::size() <= n; k += Vec::size()) {
        layer_norm_apply(Vec::loadu(row.data() + k), vmu, vrs, Vec::loadu(w.data() + k), Vec::loadu(bb.data() + k))
            .store(row.data() + k);
      }
      for (; k < n; ++k) row[k] = layer_norm_apply(row[k], mu, rs, w[k], bb[k]);
      scalar_t* dst = op + r * n;
      for (k = 0; k < n; ++k) dst[k] = static_cast<scalar_t>(row[k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_cpu(const at::Tensor& x, int64_t scale,
                                                                            const c10::optional<at::Tensor>& weight,
                                                                            const c10::optional<at::Tensor>& bias,
                                                                            double eps) {
  check_shuffle_input(x, scale);
  const int64_t s = scale, n = x.size(3) * s * s;
  check_affine(weight, x, n, "weight");
  check_affine(bias, x, n, "bias");
  TORCH_CHECK(eps >= 0, "vlmops.pixel_shuffle_layer_norm: eps must be >= 0, got ", eps);
  at::Tensor out = at::empty({x.size(0), x.size(1) / s, x.size(2) / s, n}, x.options());
  auto stats_options = x.options().dtype(stats_dtype(x.scalar_type()));
  at::Tensor mean = at::empty({out.size(0), out.size(1), out.size(2)}, stats_options);
  at::Tensor rstd = at::empty_like(mean);
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_cpu",
                                    [&] { ps_layer_norm_forward<scalar_t>(x, s, weight, bias, eps, out, mean, rstd); });
  }
  return {out, mean, rstd};
}

template <class scalar_t>
void ps_layer_norm_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean,
                            const at::Tensor& rstd, const c10::optional<at::Tensor>& weight, int64_t s,
                            at::Tensor& grad_x, at::Tensor& grad_weight_acc, at::Tensor& grad_bias_acc) {
  using acc_t = at::opmath_type<scalar_t>;
  const PixelShuffleGeometry g = geometry_of(x, s);
  const PixelShuffleGeometry gx = contiguous_geometry(x.size(1), x.size(2), x.size(3), s);
  const PixelShuffleGeometry gy = geometry_of(grad_out, 1);  // rows of grad_out, read in place
  const int64_t Ho = grad_out.size(1), Wo = grad_out.size(2), n = grad_out.size(3), C = x.size(3);
  const std::vector<acc_t> w = affine_or<scalar_t, acc_t>(weight, n, acc_t(1));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const acc_t* mp = mean_c.const_data_ptr<acc_t>();
  const acc_t* rp = rstd_c.const_data_ptr<acc_t>();
  scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
  // One partial dW/db row per thread, summed at the end (no atomics, deterministic per thread count).
  acc_t* gw_part = grad_weight_acc.mutable_data_ptr<acc_t>();
  acc_t* gb_part = grad_bias_acc.mutable_data_ptr<acc_t>();
  at::parallel_for(0, grad_out.size(0) * Ho * Wo, row_grain(n), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xhat(n), gy_row(n);
    acc_t* gw = gw_part + at::get_thread_num() * n;
    acc_t* gb = gb_part + at::get_thread_num() * n;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
      const acc_t mu = mp[r], rs = rp[r];
      gather_row(g, xp, b, i, j, xhat.data());
      gather_row(gy, gp, b, i, j, gy_row.data());
      acc_t sum_g = 0, sum_g_xhat = 0;
      for (int64_t k = 0; k < n; ++k) {
        xhat[k] = (xhat[k] - mu) * rs;
        gw[k] += gy_row[k] * xhat[k];
        gb[k] += gy_row[k];
        gy_row[k] *= w[k];
        sum_g += gy_row[k];
        sum_g_xhat += gy_row[k] * xhat[k];
      }
      const acc_t mean_g = sum_g / n, mean_g_xhat = sum_g_xhat / n;
      for (int64_t dy = 0; dy < s; ++dy) {
        scalar_t* dst = gxp + gx.chunk_offset(b, i, j, dy);
        const int64_t base = dy * s * C;
        for (int64_t k = 0; k < s * C; ++k) {
          dst[k] = static_cast<scalar_t>(layer_norm_grad_input(gy_row[base + k], xhat[base + k], rs, mean_g, mean_g_xhat));
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const c10::optional<at::Tensor>& weight, int64_t scale) {
  check_backward_pair(grad_out, x, scale);
  const int64_t s = scale, n = grad_out.size(3);
  check_affine(weight, x, n, "weight");
  check_stats(mean, grad_out, "mean");
  check_stats(rstd, grad_out, "rstd");
  const auto acc_dtype = stats_dtype(x.scalar_type());
  TORCH_CHECK(mean.scalar_type() == acc_dtype && rstd.scalar_type() == acc_dtype,
              "vlmops.pixel_shuffle_layer_norm_backward: mean and rstd must be ", acc_dtype);
  at::Tensor grad_x = at::empty({x.size(0), x.size(1), x.size(2), x.size(3)}, x.options());
  const int64_t threads = at::get_num_threads();
  at::Tensor gw_part = at::zeros({threads, n}, x.options().dtype(acc_dtype));
  at::Tensor gb_part = at::zeros({threads, n}, x.options().dtype(acc_dtype));
  if (grad_out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_backward_cpu",
                                    [&] {
                                      ps_layer_norm_backward<scalar_t>(grad_out, x, mean, rstd, weight, s, grad_x,
                                                                       gw_part, gb_part);
                                    });
  }
  return {grad_x, gw_part.sum(0).to(x.scalar_type()), gb_part.sum(0).to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("pixel_shuffle", &pixel_shuffle_cpu);
  m.impl("pixel_shuffle_backward", &pixel_shuffle_backward_cpu);
  m.impl("pixel_shuffle_layer_norm", &pixel_shuffle_layer_norm_cpu);
  m.impl("pixel_shuffle_layer_norm_backward", &pixel_shuffle_layer_norm_backward_cpu);
}

}  // namespace vlmops
