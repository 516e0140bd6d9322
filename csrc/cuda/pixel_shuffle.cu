// CUDA entries of pixel shuffle and fused pixel shuffle + LayerNorm: the op's checks, then the CUDA
// kernels below, or with VLMOPS_CUDA_BACKEND=triton the Triton variant (vlmops/triton/pixel_shuffle.py).
// The index math and the LayerNorm element math come from pixel_shuffle_math.h, the code the CPU
// tests exercise; grids and vector widths from launch_geometry.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "vlmops/launch_geometry.h"
#include "vlmops/pixel_shuffle_checks.h"
#include "vlmops/pixel_shuffle_math.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

constexpr int kThreads = kPixelShuffleThreads;
constexpr int kWarps = kThreads / 32;

struct ShuffledLayout {  // shape and strides of a [B, H/s, W/s, s*s*C] tensor
  int64_t Ho, Wo, n;
  int64_t stride[4];
};

ShuffledLayout layout_of(const at::Tensor& y) {
  return ShuffledLayout{y.size(1), y.size(2), y.size(3), {y.stride(0), y.stride(1), y.stride(2), y.stride(3)}};
}

// One thread per element of the shuffled tensor; kToShuffled picks the copy direction. The map is
// a bijection, so every destination element is written exactly once. E is the element, or a vector of
// v elements (launch_shuffle_copy): the same map over channel runs of C / v vectors.
template <class E, bool kToShuffled>
__global__ void shuffle_copy_kernel(E* __restrict__ x, E* __restrict__ y, PixelShuffleGeometry g, ShuffledLayout ly,
                                    int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx % ly.n, row = idx / ly.n;
    const int64_t j = row % ly.Wo, i = (row / ly.Wo) % ly.Ho, b = row / (ly.Wo * ly.Ho);
    const int64_t xo = g.src_offset(b, i, j, k);
    const int64_t yo = b * ly.stride[0] + i * ly.stride[1] + j * ly.stride[2] + k * ly.stride[3];
    if (kToShuffled) {
      y[yo] = x[xo];
    } else {
      x[xo] = y[yo];
    }
  }
}

// Moves the elements between x [B, H, W, C] and y [B, H/s, W/s, s*s*C] (the direction kToShuffled) in
// vectors of v = pixel_shuffle_copy_vector(...) elements: with unit channel strides, v dividing C and
// every other stride, element k = v * k' + r of a token is element r of vector k' of the same map on C / v
// channels and strides / v, and the data addresses are aligned to v elements; v = 1 is the plain copy.
template <bool kToShuffled>
void launch_shuffle_copy(const PixelShuffleGeometry& g, const at::Tensor& x, const at::Tensor& y) {
  const int64_t esize = x.element_size();
  const int64_t x_strides[4] = {g.stride_b, g.stride_h, g.stride_w, g.stride_c};
  const int64_t y_strides[4] = {y.stride(0), y.stride(1), y.stride(2), y.stride(3)};
  const int64_t v =
      pixel_shuffle_copy_vector(esize, g.channels, x_strides, y_strides, reinterpret_cast<uint64_t>(x.data_ptr()),
                                reinterpret_cast<uint64_t>(y.data_ptr()));
  const PixelShuffleGeometry gv{g.scale, g.channels / v, g.stride_b / v, g.stride_h / v, g.stride_w / v, g.stride_c};
  const ShuffledLayout ly{
      y.size(1), y.size(2), y.size(3) / v, {y_strides[0] / v, y_strides[1] / v, y_strides[2] / v, y_strides[3]}};
  const LaunchGeometry launch = pixel_shuffle_copy_launch_geometry(y.numel(), v);
  const int64_t total = y.numel() / v;
  auto stream = c10::cuda::getCurrentCUDAStream();
  switch (esize * v) {
#define VLMOPS_SHUFFLE_CASE(BYTES, E)                                                                   \
  case BYTES:                                                                                           \
    shuffle_copy_kernel<E, kToShuffled><<<static_cast<unsigned>(launch.grid_x), kThreads, 0, stream>>>( \
        static_cast<E*>(x.data_ptr()), static_cast<E*>(y.data_ptr()), gv, ly, total);                   \
    break;
    VLMOPS_SHUFFLE_CASE(2, uint16_t)
    VLMOPS_SHUFFLE_CASE(4, uint32_t)
    VLMOPS_SHUFFLE_CASE(8, uint64_t)
    VLMOPS_SHUFFLE_CASE(16, uint4)
#undef VLMOPS_SHUFFLE_CASE
    default:
      TORCH_CHECK(false, "vlmops.pixel_shuffle: unsupported element size ", esize);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor pixel_shuffle_cuda(const at::Tensor& x, int64_t scale) {
  const PixelShuffleShape shape = check_pixel_shuffle_input("pixel_shuffle", x, scale);
  if (cuda_backend_is_triton()) {
    check_pixel_shuffle_triton_rows("pixel_shuffle", shape);
    check_pixel_shuffle_triton_patch("pixel_shuffle", "x", shape.C, x.strides(), scale);
    return triton_kernel<decltype(pixel_shuffle_cuda)>("vlmops::_pixel_shuffle_triton").call(x, scale);
  }
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({shape.B, shape.Ho, shape.Wo, shape.n}, x.options());
  if (out.numel() > 0) launch_shuffle_copy<true>(pixel_shuffle_geometry(x, scale), x, out);
  return out;
}

at::Tensor pixel_shuffle_backward_cuda(const at::Tensor& grad_out, int64_t scale) {
  const PixelShuffleShape shape = check_pixel_shuffle_backward(grad_out, scale);
  if (cuda_backend_is_triton()) {
    check_pixel_shuffle_triton_rows("pixel_shuffle_backward", shape);
    const int64_t contiguous[4] = {shape.H * shape.W * shape.C, shape.W * shape.C, shape.C, 1};
    check_pixel_shuffle_triton_patch("pixel_shuffle_backward", "grad_x", shape.C, contiguous, scale);
    return triton_kernel<decltype(pixel_shuffle_backward_cuda)>("vlmops::_pixel_shuffle_backward_triton")
        .call(grad_out, scale);
  }
  c10::cuda::CUDAGuard guard(grad_out.device());
  at::Tensor grad_x = at::empty({shape.B, shape.H, shape.W, shape.C}, grad_out.options());
  if (grad_x.numel() > 0) {
    launch_shuffle_copy<false>(pixel_shuffle_contiguous_geometry(shape.H, shape.W, shape.C, scale), grad_x, grad_out);
  }
  return grad_x;
}

// Block-wide sum of `count` accumulators (warp shuffles, then one warp over the warp partials). Ends
// with a barrier, so a block may call it again (the next row) without racing on `partial`.
template <class acc_t, int count>
__device__ void block_sum(acc_t (&v)[count]) {
  __shared__ acc_t partial[count][kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int c = 0; c < count; ++c) {
    for (int offset = 16; offset > 0; offset /= 2) v[c] += __shfl_xor_sync(0xffffffffu, v[c], offset);
    if (lane == 0) partial[c][warp] = v[c];
  }
  __syncthreads();
#pragma unroll
  for (int c = 0; c < count; ++c) {
    acc_t t = lane < kWarps ? partial[c][lane] : acc_t(0);
    for (int offset = 16; offset > 0; offset /= 2) t += __shfl_xor_sync(0xffffffffu, t, offset);
    v[c] = t;
  }
  __syncthreads();
}

// Blocks of a one-block-per-row kernel (pixel_shuffle_layer_norm_launch_geometry).
unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(pixel_shuffle_layer_norm_launch_geometry(rows).grid_x);
}

// One block per output token: pass 1 accumulates sums shifted by the row's first element (stable,
// one pass; x is gathered through the shared index map), pass 2 re-reads the row (now in L1/L2) and
// writes the normalized output.
template <class scalar_t, class acc_t>
__global__ void layer_norm_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                                          const scalar_t* __restrict__ bias, scalar_t* __restrict__ out,
                                          acc_t* __restrict__ mean, acc_t* __restrict__ rstd, PixelShuffleGeometry g,
                                          int64_t rows, int64_t Ho, int64_t Wo, int64_t n, acc_t eps) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / (Ho * Wo), i = (row / Wo) % Ho, j = row % Wo;
    acc_t sums[2] = {0, 0};
    const acc_t shift = static_cast<acc_t>(x[g.src_offset(b, i, j, 0)]);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const acc_t d = static_cast<acc_t>(x[g.src_offset(b, i, j, k)]) - shift;
      sums[0] += d;
      sums[1] += d * d;
    }
    block_sum<acc_t, 2>(sums);
    const acc_t mean_shifted = sums[0] / n;
    const acc_t var = max(sums[1] / n - mean_shifted * mean_shifted, acc_t(0));
    const acc_t mu = shift + mean_shifted;
    const acc_t rs = acc_t(1) / sqrt(var + eps);
    if (threadIdx.x == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const acc_t w = weight ? static_cast<acc_t>(weight[k]) : acc_t(1);
      const acc_t bb = bias ? static_cast<acc_t>(bias[k]) : acc_t(0);
      const acc_t xk = static_cast<acc_t>(x[g.src_offset(b, i, j, k)]);
      out[row * n + k] = static_cast<scalar_t>(layer_norm_apply(xk, mu, rs, w, bb));
    }
  }
}

// grad_x: one block per output token.
template <class scalar_t, class acc_t>
__global__ void layer_norm_backward_input_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                                 const acc_t* __restrict__ mean, const acc_t* __restrict__ rstd,
                                                 const scalar_t* __restrict__ weight, scalar_t* __restrict__ grad_x,
                                                 PixelShuffleGeometry g, PixelShuffleGeometry gx, ShuffledLayout ly,
                                                 int64_t rows) {
  const int64_t n = ly.n;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / (ly.Ho * ly.Wo), i = (row / ly.Wo) % ly.Ho, j = row % ly.Wo;
    const scalar_t* dy_row = grad_out + b * ly.stride[0] + i * ly.stride[1] + j * ly.stride[2];
    const acc_t mu = mean[row], rs = rstd[row];
    acc_t sums[2] = {0, 0};  // sum(g), sum(g * xhat)
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const acc_t xhat = (static_cast<acc_t>(x[g.src_offset(b, i, j, k)]) - mu) * rs;
      const acc_t wk = weight ? static_cast<acc_t>(weight[k]) : acc_t(1);
      const acc_t gk = static_cast<acc_t>(dy_row[k * ly.stride[3]]) * wk;
      sums[0] += gk;
      sums[1] += gk * xhat;
    }
    block_sum<acc_t, 2>(sums);
    const acc_t mean_g = sums[0] / n, mean_g_xhat = sums[1] / n;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const acc_t xhat = (static_cast<acc_t>(x[g.src_offset(b, i, j, k)]) - mu) * rs;
      const acc_t wk = weight ? static_cast<acc_t>(weight[k]) : acc_t(1);
      const acc_t gk = static_cast<acc_t>(dy_row[k * ly.stride[3]]) * wk;
      grad_x[gx.src_offset(b, i, j, k)] =
          static_cast<scalar_t>(layer_norm_grad_input(gk, xhat, rs, mean_g, mean_g_xhat));
    }
  }
}

constexpr int64_t kRowsPerTile = kPixelShuffleRowsPerTile;

// grad_weight / grad_bias partial sums: thread = channel; block.y sums the tiles of kRowsPerTile rows
// blockIdx.y, blockIdx.y + gridDim.y, ... into row blockIdx.y of the partial buffers.
template <class scalar_t, class acc_t>
__global__ void layer_norm_backward_affine_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                                  const acc_t* __restrict__ mean, const acc_t* __restrict__ rstd,
                                                  acc_t* __restrict__ gw_partial, acc_t* __restrict__ gb_partial,
                                                  PixelShuffleGeometry g, ShuffledLayout ly, int64_t rows) {
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= ly.n) return;
  acc_t gw = 0, gb = 0;
  for (int64_t start = blockIdx.y * kRowsPerTile; start < rows; start += int64_t(gridDim.y) * kRowsPerTile) {
    const int64_t row_end = min(rows, start + kRowsPerTile);
    for (int64_t row = start; row < row_end; ++row) {
      const int64_t b = row / (ly.Ho * ly.Wo), i = (row / ly.Wo) % ly.Ho, j = row % ly.Wo;
      const acc_t dy =
          static_cast<acc_t>(grad_out[b * ly.stride[0] + i * ly.stride[1] + j * ly.stride[2] + k * ly.stride[3]]);
      const acc_t xhat = (static_cast<acc_t>(x[g.src_offset(b, i, j, k)]) - mean[row]) * rstd[row];
      gw += dy * xhat;
      gb += dy;
    }
  }
  gw_partial[blockIdx.y * ly.n + k] = gw;
  gb_partial[blockIdx.y * ly.n + k] = gb;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_cuda(const at::Tensor& x, int64_t scale,
                                                                             const std::optional<at::Tensor>& weight,
                                                                             const std::optional<at::Tensor>& bias,
                                                                             double eps) {
  constexpr const char* op = "pixel_shuffle_layer_norm";
  const PixelShuffleShape shape = check_pixel_shuffle_layer_norm(x, scale, weight, bias, eps);
  if (cuda_backend_is_triton()) {
    check_pixel_shuffle_triton_rows(op, shape);
    check_pixel_shuffle_triton_patch(op, "x", shape.C, x.strides(), scale);
    check_pixel_shuffle_triton_vector(op, "weight", weight);
    check_pixel_shuffle_triton_vector(op, "bias", bias);
    return triton_kernel<decltype(pixel_shuffle_layer_norm_cuda)>("vlmops::_pixel_shuffle_layer_norm_triton")
        .call(x, scale, weight, bias, eps);
  }
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out = at::empty({shape.B, shape.Ho, shape.Wo, shape.n}, x.options());
  const auto stats_options = x.options().dtype(pixel_shuffle_stats_dtype(x.scalar_type()));
  at::Tensor mean = at::empty({shape.B, shape.Ho, shape.Wo}, stats_options);
  at::Tensor rstd = at::empty_like(mean);
  if (out.numel() == 0) {
    // No features: the statistics of an empty row.
    mean.fill_(std::numeric_limits<double>::quiet_NaN());
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return {out, mean, rstd};
  }
  const at::Tensor w = weight ? weight->contiguous() : at::Tensor();
  const at::Tensor bb = bias ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    layer_norm_forward_kernel<scalar_t, acc_t><<<row_blocks(shape.rows), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
        bb.defined() ? bb.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
        mean.mutable_data_ptr<acc_t>(), rstd.mutable_data_ptr<acc_t>(), pixel_shuffle_geometry(x, scale), shape.rows,
        shape.Ho, shape.Wo, shape.n, static_cast<acc_t>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixel_shuffle_layer_norm_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, int64_t scale) {
  constexpr const char* op = "pixel_shuffle_layer_norm_backward";
  const PixelShuffleShape shape = check_pixel_shuffle_layer_norm_backward(grad_out, x, mean, rstd, weight, scale);
  if (cuda_backend_is_triton()) {
    check_pixel_shuffle_triton_rows(op, shape);
    check_pixel_shuffle_triton_patch(op, "x", shape.C, x.strides(), scale);
    const int64_t contiguous[4] = {shape.H * shape.W * shape.C, shape.W * shape.C, shape.C, 1};
    check_pixel_shuffle_triton_patch(op, "grad_x", shape.C, contiguous, scale);
    check_pixel_shuffle_triton_vector(op, "weight", weight);
    return triton_kernel<decltype(pixel_shuffle_layer_norm_backward_cuda)>(
               "vlmops::_pixel_shuffle_layer_norm_backward_triton")
        .call(grad_out, x, mean, rstd, weight, scale);
  }
  const int64_t n = shape.n, rows = shape.rows;
  const auto acc_options = x.options().dtype(pixel_shuffle_stats_dtype(x.scalar_type()));
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const LaunchGeometry affine = pixel_shuffle_layer_norm_affine_launch_geometry(rows, n);
  const int64_t tile_blocks = affine.grid_y;
  at::Tensor grad_x = at::empty({shape.B, shape.H, shape.W, shape.C}, x.options());
  if (rows == 0 || n == 0) {
    return {grad_x, at::zeros({n}, x.options()), at::zeros({n}, x.options())};
  }
  at::Tensor gw_partial = at::empty({tile_blocks, n}, acc_options);
  at::Tensor gb_partial = at::empty({tile_blocks, n}, acc_options);
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const at::Tensor w = weight ? weight->contiguous() : at::Tensor();
  const ShuffledLayout ly = layout_of(grad_out);
  const PixelShuffleGeometry g = pixel_shuffle_geometry(x, scale);
  const PixelShuffleGeometry gx = pixel_shuffle_contiguous_geometry(shape.H, shape.W, shape.C, scale);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_shuffle_layer_norm_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        layer_norm_backward_input_kernel<scalar_t, acc_t><<<row_blocks(rows), kThreads, 0, stream>>>(
            grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), mean_c.const_data_ptr<acc_t>(),
            rstd_c.const_data_ptr<acc_t>(), w.defined() ? w.const_data_ptr<scalar_t>() : nullptr,
            grad_x.mutable_data_ptr<scalar_t>(), g, gx, ly, rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const dim3 grid(static_cast<unsigned>(affine.grid_x), static_cast<unsigned>(affine.grid_y));
        layer_norm_backward_affine_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
            grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), mean_c.const_data_ptr<acc_t>(),
            rstd_c.const_data_ptr<acc_t>(), gw_partial.mutable_data_ptr<acc_t>(), gb_partial.mutable_data_ptr<acc_t>(),
            g, ly, rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_x, gw_partial.sum(0).to(x.scalar_type()), gb_partial.sum(0).to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("pixel_shuffle", &pixel_shuffle_cuda);
  m.impl("pixel_shuffle_backward", &pixel_shuffle_backward_cuda);
  m.impl("pixel_shuffle_layer_norm", &pixel_shuffle_layer_norm_cuda);
  m.impl("pixel_shuffle_layer_norm_backward", &pixel_shuffle_layer_norm_backward_cuda);
}

}  // namespace vlmops
