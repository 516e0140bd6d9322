// CPU kernels of patch embedding as a GEMM: Conv2d/Conv3d with kernel == stride.
//
// The output rows are cut into blocks of patches (block_rows) that never straddle two samples, so
// each block's output (and its position embeddings) is one 2-D slice. Each thread gathers a block
// of patches into its own small tile (converting and normalizing the pixels on the way) and runs
// a single-threaded GEMM on it: the [patches, C*T*Ph*Pw] operand is never written whole. Rows
// that are already patchified in the weight's dtype skip the gather: the GEMM reads them in place.
#include <ATen/Config.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "vlmops/patch_embed_checks.h"
#include "vlmops/patch_embed_math.h"

#if AT_MKL_ENABLED()
// The C entry point behind mkl_service.h's mkl_set_num_threads_local macro, exported by libtorch_cpu.
extern "C" int MKL_Set_Num_Threads_Local(int nthreads);
#endif

namespace vlmops {
namespace {

// Each worker runs its GEMMs on one thread: MKL called inside the parallel region would otherwise
// start a team of its own on every worker (measured 2x slower than one thread per worker with two workers).
class SequentialBlasGuard {
 public:
#if AT_MKL_ENABLED()
  SequentialBlasGuard() : previous_(MKL_Set_Num_Threads_Local(1)) {}
  ~SequentialBlasGuard() { MKL_Set_Num_Threads_Local(previous_); }

 private:
  int previous_;
#endif
};

// Rows per GEMM block. Each GEMM call packs the whole weight again (6 MB for Qwen2.5-VL's
// 1280 x 1176 fp32), so short blocks pay for it: on one core 256-row blocks measured ~16% slower
// than one GEMM over all rows, 1024-row blocks ~10%. Blocks grow with the work up to a cap, while
// leaving about four blocks per thread to balance threads slowed down by other processes. The cap
// of gathered blocks bounds each thread's tile (1024 x 1176 fp32 = 4.8 MB).
constexpr int64_t kMinBlockRows = 256;
constexpr int64_t kMaxBlockRows = 1024;

int64_t block_rows(int64_t total_rows) {
  const int64_t balanced = (total_rows + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  return std::clamp(balanced, kMinBlockRows, kMaxBlockRows);
}

// The per-channel scale and shift of the processor's rescale + normalize, in accumulation precision.
template <class acc_t>
struct PixelNormalization {
  bool active = false;
  std::vector<acc_t> scale, shift;
};

template <class acc_t>
PixelNormalization<acc_t> pixel_normalization(const std::optional<at::Tensor>& mean,
                                              const std::optional<at::Tensor>& std, std::optional<double> rescale,
                                              int64_t C) {
  PixelNormalization<acc_t> norm;
  norm.active = patch_embed_normalizes(mean, std, rescale);
  if (!norm.active) return norm;
  const at::Tensor m = mean ? mean->to(at::kDouble).contiguous() : at::Tensor();
  const at::Tensor s = std ? std->to(at::kDouble).contiguous() : at::Tensor();
  const double r = rescale.value_or(1.0);
  norm.scale.resize(C);
  norm.shift.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const double sd = s.defined() ? s.const_data_ptr<double>()[c] : 1.0;
    const double mu = m.defined() ? m.const_data_ptr<double>()[c] : 0.0;
    norm.scale[c] = static_cast<acc_t>(r / sd);
    norm.shift[c] = static_cast<acc_t>(-mu / sd);
  }
  return norm;
}

// Copies patch m of x into one operand row of C*T*Ph*Pw columns, converted (and normalized).
template <class src_t, class dst_t, class acc_t>
void gather_patch(const PatchGeometry& g, const src_t* x, int64_t m, const PixelNormalization<acc_t>& norm,
                  dst_t* row) {
  const src_t* patch = x + g.patch_offset(m);
  const int64_t Pw = g.patch_w, sw = g.stride_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const acc_t scale = norm.active ? norm.scale[c] : acc_t(1), shift = norm.active ? norm.shift[c] : acc_t(0);
    for (int64_t t = 0; t < g.patch_t; ++t) {
      for (int64_t i = 0; i < g.patch_h; ++i, row += Pw) {
        const src_t* src = patch + g.run_offset(c, t, i);
        if (norm.active) {
          for (int64_t j = 0; j < Pw; ++j) {
            row[j] = static_cast<dst_t>(normalize_pixel(static_cast<acc_t>(src[j * sw]), scale, shift));
          }
        } else if (std::is_same_v<src_t, dst_t> && sw == 1) {
          std::memcpy(row, src, Pw * sizeof(dst_t));
        } else {
          for (int64_t j = 0; j < Pw; ++j) row[j] = static_cast<dst_t>(static_cast<acc_t>(src[j * sw]));
        }
      }
    }
  }
}

// The inverse of gather_patch for gradients: d(loss)/d(pixel) = d(loss)/d(operand) * scale[c].
template <class dst_t, class acc_t>
void scatter_patch(const PatchGeometry& g, dst_t* grad_x, int64_t m, const PixelNormalization<acc_t>& norm,
                   const acc_t* row) {
  dst_t* patch = grad_x + g.patch_offset(m);
  const int64_t Pw = g.patch_w, sw = g.stride_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const acc_t scale = norm.active ? norm.scale[c] : acc_t(1);
    for (int64_t t = 0; t < g.patch_t; ++t) {
      for (int64_t i = 0; i < g.patch_h; ++i, row += Pw) {
        dst_t* dst = patch + g.run_offset(c, t, i);
        for (int64_t j = 0; j < Pw; ++j) dst[j * sw] = static_cast<dst_t>(row[j] * scale);
      }
    }
  }
}

// The blocks of the output: `samples` runs of `length` patch rows, cut every `block` rows.
struct BlockGrid {
  int64_t samples, length, block, blocks_per_sample;

  BlockGrid(int64_t samples_, int64_t length_)
      : samples(samples_),
        length(length_),
        block(std::max<int64_t>(1, std::min(length_, block_rows(samples_ * length_)))),
        blocks_per_sample((length_ + block - 1) / block) {}
  int64_t items() const { return samples * blocks_per_sample; }
  int64_t sample(int64_t item) const { return item / blocks_per_sample; }
  int64_t first_row(int64_t item) const { return (item % blocks_per_sample) * block; }
  int64_t rows(int64_t item) const { return std::min(block, length - first_row(item)); }
  int64_t workers() const { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items())); }
};

// Runs fn(worker, item) for every block on `workers` threads. Blocks are handed out from a shared
// counter, so a thread slowed down by another process on its core does not hold the others up.
// fn only calls the CPU kernels (at::cpu::) and view ops on tensors that do not require grad.
template <class Fn>
void for_each_block(const BlockGrid& grid, int64_t workers, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t items = grid.items();
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlasGuard sequential_blas;
    for (int64_t worker = begin; worker < end; ++worker) {
      for (int64_t item = next++; item < items; item = next++) fn(worker, item);
    }
  });
}

// --- forward ---------------------------------------------------------------------------------------

// What the GEMM adds to each output row: its position embedding plus the bias, the bias alone (the
// same for every row), or nothing (undefined).
at::Tensor gemm_addend(const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& pos_embed, int64_t ncls,
                       int64_t length) {
  at::Tensor addend;
  if (pos_embed) {
    addend = pos_embed->detach().narrow(0, ncls, length);
    if (bias) addend = at::add(addend, bias->detach());
  } else if (bias) {
    addend = bias->detach();
  }
  return addend.defined() ? addend.contiguous() : addend;
}

// Row 0 of every sample: the CLS token plus its position embedding.
void write_cls_rows(const at::Tensor& out3, const at::Tensor& cls_token, const std::optional<at::Tensor>& pos_embed) {
  at::Tensor cls_row = cls_token.detach();
  if (pos_embed) cls_row = at::add(cls_row, pos_embed->detach().select(0, 0));
  out3.select(1, 0).copy_(cls_row);
}

// Pre-patchified rows already in the weight's dtype need no gather: the GEMM reads them in place.
bool gemm_reads_rows_in_place(const PatchEmbedShape& s, const at::Tensor& x, at::ScalarType gemm_dtype,
                              bool normalizes) {
  return s.rows && !normalizes && x.scalar_type() == gemm_dtype && x.stride(1) == 1;
}

// out_block[r, :] += addend_row(r) in accumulation precision, while the block is in cache (addmm's
// bias path measured 1.7x slower here). A per-row addend advances one row per output row.
template <class tile_t>
void add_rows(const at::Tensor& out_block, const tile_t* add_row, bool per_row, int64_t dim) {
  using acc_t = at::opmath_type<tile_t>;
  tile_t* out_row = out_block.mutable_data_ptr<tile_t>();
  for (int64_t r = 0; r < out_block.size(0); ++r, out_row += dim, add_row += per_row ? dim : 0) {
    for (int64_t d = 0; d < dim; ++d) {
      out_row[d] = static_cast<tile_t>(static_cast<acc_t>(out_row[d]) + static_cast<acc_t>(add_row[d]));
    }
  }
}

// Each block of patch rows: gathered into the worker's tile (converted and normalized), one GEMM
// into its slice of out3 [samples, ncls + length, D], then the addend.
template <class tile_t, class src_t>
void embed_gathered_blocks(const PatchEmbedShape& s, const src_t* x,
                           const PixelNormalization<at::opmath_type<tile_t>>& norm, const at::Tensor& wt,
                           const at::Tensor& addend, int64_t ncls, const at::Tensor& out3) {
  const BlockGrid grid(s.samples, s.length);
  const int64_t workers = grid.workers();
  const at::Tensor tiles = at::empty({workers, grid.block, s.columns}, wt.options());
  const tile_t* addend_data = addend.defined() ? addend.const_data_ptr<tile_t>() : nullptr;
  const bool per_row_addend = addend.defined() && addend.dim() == 2;
  for_each_block(grid, workers, [&](int64_t worker, int64_t item) {
    const int64_t sample = grid.sample(item), l0 = grid.first_row(item), n = grid.rows(item);
    const int64_t m0 = sample * s.length + l0;
    const at::Tensor operand = tiles.select(0, worker).narrow(0, 0, n);
    tile_t* row = operand.mutable_data_ptr<tile_t>();
    for (int64_t r = 0; r < n; ++r, row += s.columns) gather_patch(s.geometry, x, m0 + r, norm, row);
    at::Tensor out_block = out3.select(0, sample).narrow(0, ncls + l0, n);
    at::cpu::mm_out(out_block, operand, wt);
    if (addend_data != nullptr) {
      add_rows(out_block, addend_data + (per_row_addend ? l0 * s.dim : 0), per_row_addend, s.dim);
    }
  });
}

at::Tensor patch_embed_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const std::optional<at::Tensor>& bias,
                           const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                           std::optional<double> rescale, const std::optional<at::Tensor>& pos_embed,
                           const std::optional<at::Tensor>& cls_token) {
  const PatchEmbedShape s = check_patch_embed(x_in, weight_in, bias, mean, std, rescale, pos_embed, cls_token);
  check_patch_embed_normalization_values("patch_embed", mean, std);
  const int64_t ncls = cls_token ? 1 : 0;
  // Worker threads run outside the dispatcher's autograd exclusion: hand them detached aliases.
  const at::Tensor x = x_in.detach(), weight = weight_in.detach();
  at::Tensor out = s.rows ? at::empty({s.length, s.dim}, weight.options())
                          : at::empty({s.samples, ncls + s.length, s.dim}, weight.options());
  if (out.numel() == 0) return out;
  const at::Tensor out3 = out.view({s.samples, ncls + s.length, s.dim});
  if (ncls) write_cls_rows(out3, *cls_token, pos_embed);
  if (s.length == 0) return out;
  const at::Tensor wt = weight.reshape({s.dim, s.columns}).t();
  const at::Tensor addend = gemm_addend(bias, pos_embed, ncls, s.length);
  const bool normalizes = patch_embed_normalizes(mean, std, rescale);
  if (gemm_reads_rows_in_place(s, x, weight.scalar_type(), normalizes)) {
    // One GEMM over all rows, threaded by BLAS itself (nothing to gain from per-thread blocks).
    // pos_embed is refused for rows, so the addend is the bias at most.
    at::cpu::mm_out(out, x, wt);
    if (addend.defined()) out.add_(addend);
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "patch_embed_cpu", [&] {
    using tile_t = scalar_t;
    const auto norm = pixel_normalization<at::opmath_type<tile_t>>(mean, std, rescale, s.geometry.channels);
    AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "patch_embed_gather", [&] {
      embed_gathered_blocks<tile_t>(s, x.const_data_ptr<scalar_t>(), norm, wt, addend, ncls, out3);
    });
  });
  return out;
}

// --- backward --------------------------------------------------------------------------------------

// dW (summed over the workers' partials) and, when grad_x is defined, grad_x: each block of patch
// rows is gathered into the worker's tile, dW += grad_block^T @ operand, and grad_x's patches are
// scattered from grad_block @ W.
template <class acc_t, class src_t>
at::Tensor backward_gathered_blocks(const PatchEmbedShape& s, const src_t* x, const PixelNormalization<acc_t>& norm,
                                    const at::Tensor& grad3, const at::Tensor& w2d, at::Tensor& grad_x) {
  const BlockGrid grid(s.samples, s.length);
  const int64_t workers = grid.workers();
  const bool compute_grad_x = grad_x.defined();
  // One partial dW per worker, summed at the end: no atomics, no shared accumulator.
  const at::Tensor grad_w_parts = at::zeros({workers, s.dim, s.columns}, w2d.options());
  const at::Tensor tiles = at::empty({workers, grid.block, s.columns}, w2d.options());
  const at::Tensor grad_tiles =
      compute_grad_x ? at::empty({workers, grid.block, s.columns}, w2d.options()) : at::Tensor();
  const PatchGeometry grad_g = compute_grad_x ? patch_geometry_with_strides_of(s.geometry, grad_x) : s.geometry;
  src_t* gxp = compute_grad_x ? grad_x.mutable_data_ptr<src_t>() : nullptr;
  for_each_block(grid, workers, [&](int64_t worker, int64_t item) {
    const int64_t sample = grid.sample(item), l0 = grid.first_row(item), n = grid.rows(item);
    const int64_t m0 = sample * s.length + l0;
    const at::Tensor grad_block = grad3.select(0, sample).narrow(0, l0, n);
    at::Tensor operand = tiles.select(0, worker).narrow(0, 0, n);
    acc_t* row = operand.mutable_data_ptr<acc_t>();
    for (int64_t r = 0; r < n; ++r, row += s.columns) gather_patch(s.geometry, x, m0 + r, norm, row);
    at::Tensor grad_w = grad_w_parts.select(0, worker);
    at::cpu::addmm_(grad_w, grad_block.t(), operand);
    if (compute_grad_x) {
      at::Tensor grad_operand = grad_tiles.select(0, worker).narrow(0, 0, n);
      at::cpu::mm_out(grad_operand, grad_block, w2d);
      const acc_t* grad_row = grad_operand.const_data_ptr<acc_t>();
      for (int64_t r = 0; r < n; ++r, grad_row += s.columns) scatter_patch(grad_g, gxp, m0 + r, norm, grad_row);
    }
  });
  return grad_w_parts.sum(0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_embed_backward_cpu(
    const at::Tensor& grad_patches_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std, std::optional<double> rescale,
    bool compute_grad_x) {
  const PatchEmbedShape s =
      check_patch_embed_backward(grad_patches_in, x_in, weight_in, mean, std, rescale, compute_grad_x);
  check_patch_embed_normalization_values("patch_embed_backward", mean, std);
  // Gradients accumulate in float32 (float64 for float64 weights), as the forward GEMM does.
  const at::ScalarType acc_dtype = weight_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor x = x_in.detach();
  const at::Tensor grad3 = grad_patches_in.detach().to(acc_dtype).view({s.samples, s.length, s.dim});
  const at::Tensor w2d = weight_in.detach().reshape({s.dim, s.columns}).to(acc_dtype);
  at::Tensor grad_x = compute_grad_x ? at::empty(x.sizes(), x.options()) : at::Tensor();
  const at::Tensor grad_bias = grad3.sum(at::IntArrayRef{0, 1}).to(weight_in.scalar_type());
  const auto result = [&](const at::Tensor& grad_w2d) -> std::tuple<at::Tensor, at::Tensor, at::Tensor> {
    return {grad_x.defined() ? grad_x : at::empty({0}, x.options()),
            grad_w2d.view(weight_in.sizes()).to(weight_in.scalar_type()), grad_bias};
  };
  if (s.samples * s.length == 0) {
    if (grad_x.defined()) grad_x.zero_();
    return result(at::zeros({s.dim, s.columns}, w2d.options()));
  }
  if (gemm_reads_rows_in_place(s, x, acc_dtype, patch_embed_normalizes(mean, std, rescale))) {
    // Two plain GEMMs, as F.linear's backward.
    const at::Tensor grad2d = grad3.select(0, 0);
    if (grad_x.defined()) at::cpu::mm_out(grad_x, grad2d, w2d);
    return result(at::mm(grad2d.t(), x));
  }
  at::Tensor grad_w2d;
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "patch_embed_backward_cpu", [&] {
    using acc_t = scalar_t;
    const auto norm = pixel_normalization<acc_t>(mean, std, rescale, s.geometry.channels);
    AT_DISPATCH_FLOATING_TYPES_AND3(
        at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "patch_embed_backward_cpu_x",
        [&] { grad_w2d = backward_gathered_blocks<acc_t>(s, x.const_data_ptr<scalar_t>(), norm, grad3, w2d, grad_x); });
  });
  return result(grad_w2d);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("patch_embed", &patch_embed_cpu);
  m.impl("patch_embed_backward", &patch_embed_backward_cpu);
}

}  // namespace vlmops
