// CPU kernels of block-diagonal packed (varlen) attention: flash-attention style, tiled with an
// online softmax, the score tile never leaving a per-thread buffer (no N x N matrix, no mask).
//
// Forward: one task per (query tile of a segment, head); the tile's scores against each key block
// are one BLAS GEMM into a [block_q, block_k] buffer, exponentiated in place, then multiplied into
// the output rows with a second GEMM. Backward (flash-attention 2): one task per (segment, k/v head),
// which recomputes the probabilities from the saved log-sum-exp and owns the dK/dV rows of its
// segment and the dQ rows of its query heads, so no two tasks write the same element: the result
// does not depend on the thread count or the schedule (deterministic).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "flash_tiles.h"
#include "vlmops/varlen_attention_checks.h"

namespace vlmops {
namespace {

using namespace flash_tiles;

// Tile sizes: a [256, 512] fp32 score tile (512 KiB) and a key block fit L2; 256 query rows amortize
// the packing of each key block inside the GEMM (the split PyTorch's CPU flash attention uses).
constexpr int64_t kBlockQ = 256;
constexpr int64_t kBlockK = 512;

// Rows of one [N, heads, D] operand: element (row, head, d) at data[row * row_stride + head * head_stride + d];
// row_stride is the BLAS leading dimension of the rows (flash_tiles::leading_dim).
template <class acc_t>
struct Rows {
  acc_t* data;
  int64_t row_stride;
  int64_t head_stride;
  acc_t* at(int64_t row, int64_t head) const { return data + row * row_stride + head * head_stride; }
};

// t laid out by flash_tiles::blas_operand (or a fresh output).
template <class acc_t>
Rows<acc_t> rows_of(const at::Tensor& t) {
  return Rows<acc_t>{static_cast<acc_t*>(t.data_ptr()), leading_dim(t, 0), t.stride(1)};
}

struct QueryTile {
  int64_t segment;
  int64_t q_begin;  // first row of the tile
  int64_t rows;
  int64_t cost;  // rows * keys of the segment: work of one head
};

// Query tiles of every segment, costliest first so the dynamic schedule ends balanced.
std::vector<QueryTile> query_tiles(const int32_t* cu_q, const int32_t* cu_k, int64_t segments) {
  std::vector<QueryTile> tiles;
  for (int64_t b = 0; b < segments; ++b) {
    const int64_t keys = cu_k[b + 1] - cu_k[b];
    for (int64_t q = cu_q[b]; q < cu_q[b + 1]; q += kBlockQ) {
      const int64_t rows = std::min<int64_t>(kBlockQ, cu_q[b + 1] - q);
      tiles.push_back({b, q, rows, rows * std::max<int64_t>(keys, 1)});
    }
  }
  std::stable_sort(tiles.begin(), tiles.end(), [](const QueryTile& a, const QueryTile& b) { return a.cost > b.cost; });
  return tiles;
}

template <class acc_t>
void forward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const int32_t* cu_q,
                    const int32_t* cu_k, int64_t segments, acc_t scale, at::Tensor& out, at::Tensor& lse) {
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), group = H / k.size(1);
  const Rows<acc_t> Q = rows_of<acc_t>(q), K = rows_of<acc_t>(k), V = rows_of<acc_t>(v), O = rows_of<acc_t>(out);
  acc_t* lse_data = lse.data_ptr<acc_t>();
  const std::vector<QueryTile> tiles = query_tiles(cu_q, cu_k, segments);
  struct Scratch {
    std::vector<acc_t> scores = std::vector<acc_t>(kBlockQ * kBlockK);
    std::vector<acc_t> row_max = std::vector<acc_t>(kBlockQ), row_sum = std::vector<acc_t>(kBlockQ),
                       rescale = std::vector<acc_t>(kBlockQ);
  };
  run_tasks(
      static_cast<int64_t>(tiles.size()) * H, [] { return Scratch(); },
      [&](int64_t t, Scratch& scratch) {
        auto& [scores, row_max, row_sum, rescale] = scratch;
        const QueryTile& tile = tiles[t / H];
        const int64_t head = t % H, kv_head = head / group, m = tile.rows;
        const int64_t k_begin = cu_k[tile.segment], keys = cu_k[tile.segment + 1] - k_begin;
        acc_t* o = O.at(tile.q_begin, head);
        acc_t* tile_lse = lse_data + head * Nq + tile.q_begin;
        if (keys == 0) {  // no keys: the softmax is empty; the output is 0 and the log-sum-exp -inf
          for (int64_t r = 0; r < m; ++r) {
            std::fill(o + r * O.row_stride, o + r * O.row_stride + D, acc_t(0));
            tile_lse[r] = -std::numeric_limits<acc_t>::infinity();
          }
          return;
        }
        std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<acc_t>::infinity());
        std::fill(row_sum.begin(), row_sum.end(), acc_t(0));
        for (int64_t kb = 0; kb < keys; kb += kBlockK) {
          const int64_t n = std::min<int64_t>(kBlockK, keys - kb);
          // scores [m, n] = scale * q_tile [m, D] @ k_block [n, D]^T (column-major BLAS view: [n, m]).
          gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, scale, K.at(k_begin + kb, kv_head),
               K.row_stride, Q.at(tile.q_begin, head), Q.row_stride, acc_t(0), scores.data(), n);
          online_softmax_tile(scores.data(), m, n, row_max.data(), row_sum.data(), rescale.data());
          if (kb > 0) {
            for (int64_t r = 0; r < m; ++r) {
              acc_t* orow = o + r * O.row_stride;
              for (int64_t d = 0; d < D; ++d) orow[d] *= rescale[r];
            }
          }
          // out [m, D] (+)= p [m, n] @ v_block [n, D].
          gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, acc_t(1), V.at(k_begin + kb, kv_head),
               V.row_stride, scores.data(), n, kb == 0 ? acc_t(0) : acc_t(1), o, O.row_stride);
        }
        for (int64_t r = 0; r < m; ++r) {
          const acc_t inv = acc_t(1) / row_sum[r];
          acc_t* orow = o + r * O.row_stride;
          for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
          tile_lse[r] = row_max[r] + std::log(row_sum[r]);
        }
      });
}

template <class acc_t>
void backward_kernel(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& lse, const at::Tensor& delta, const int32_t* cu_q, const int32_t* cu_k,
                     int64_t segments, acc_t scale, at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v) {
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), Hk = k.size(1), group = H / Hk;
  const Rows<acc_t> Q = rows_of<acc_t>(q), K = rows_of<acc_t>(k), V = rows_of<acc_t>(v), dO = rows_of<acc_t>(grad_out),
                    dQ = rows_of<acc_t>(grad_q), dK = rows_of<acc_t>(grad_k), dV = rows_of<acc_t>(grad_v);
  const acc_t* lse_data = lse.data_ptr<acc_t>();
  const acc_t* delta_data = delta.data_ptr<acc_t>();
  // Tasks: (segment, k/v head), costliest segments first.
  std::vector<int64_t> order;
  for (int64_t b = 0; b < segments; ++b) {
    if (cu_q[b + 1] > cu_q[b] && cu_k[b + 1] > cu_k[b]) order.push_back(b);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return int64_t(cu_q[a + 1] - cu_q[a]) * (cu_k[a + 1] - cu_k[a]) >
           int64_t(cu_q[b + 1] - cu_q[b]) * (cu_k[b + 1] - cu_k[b]);
  });
  struct Scratch {
    std::vector<acc_t> probs = std::vector<acc_t>(kBlockQ * kBlockK), dprobs = std::vector<acc_t>(kBlockQ * kBlockK);
  };
  run_tasks(
      static_cast<int64_t>(order.size()) * Hk, [] { return Scratch(); },
      [&](int64_t t, Scratch& scratch) {
        auto& [probs, dprobs] = scratch;
        const int64_t b = order[t / Hk], kv_head = t % Hk;
        const int64_t q_begin = cu_q[b], queries = cu_q[b + 1] - q_begin;
        const int64_t k_begin = cu_k[b], keys = cu_k[b + 1] - k_begin;
        for (int64_t kb = 0; kb < keys; kb += kBlockK) {
          const int64_t n = std::min<int64_t>(kBlockK, keys - kb);
          const acc_t* k_blk = K.at(k_begin + kb, kv_head);
          const acc_t* v_blk = V.at(k_begin + kb, kv_head);
          acc_t* dk_blk = dK.at(k_begin + kb, kv_head);
          acc_t* dv_blk = dV.at(k_begin + kb, kv_head);
          for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
            for (int64_t qb = 0; qb < queries; qb += kBlockQ) {
              const int64_t m = std::min<int64_t>(kBlockQ, queries - qb), row = q_begin + qb;
              const acc_t* q_blk = Q.at(row, head);
              const acc_t* do_blk = dO.at(row, head);
              gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, scale, k_blk, K.row_stride, q_blk,
                   Q.row_stride, acc_t(0), probs.data(), n);
              probabilities_tile(probs.data(), m, n, lse_data + head * Nq + row);
              // dV [n, D] += P^T [n, m] @ dO [m, D].
              gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, acc_t(1), do_blk, dO.row_stride,
                   probs.data(), n, acc_t(1), dv_blk, dV.row_stride);
              // dP [m, n] = dO [m, D] @ V^T [D, n].
              gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, acc_t(1), v_blk, V.row_stride, do_blk,
                   dO.row_stride, acc_t(0), dprobs.data(), n);
              score_grad_tile(probs.data(), dprobs.data(), m, n, delta_data + head * Nq + row);
              // dQ [m, D] += scale * dS [m, n] @ K [n, D];  dK [n, D] += scale * dS^T [n, m] @ Q [m, D].
              gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, scale, k_blk, K.row_stride,
                   dprobs.data(), n, acc_t(1), dQ.at(row, head), dQ.row_stride);
              gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, scale, q_blk, Q.row_stride,
                   dprobs.data(), n, acc_t(1), dk_blk, dK.row_stride);
            }
          }
        }
      });
}

double resolve_scale(std::optional<double> softmax_scale, int64_t D) {
  return softmax_scale.has_value() ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(D));
}

std::tuple<at::Tensor, at::Tensor> varlen_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                                        std::optional<int64_t> max_seqlen_q,
                                                        std::optional<int64_t> max_seqlen_k,
                                                        std::optional<double> softmax_scale) {
  check_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale);
  check_blas_available("varlen_attention");
  const at::Tensor cu_q = cu_seqlens_q.contiguous(), cu_k = cu_seqlens_k.contiguous();
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), segments = cu_q.size(0) - 1;
  const at::ScalarType acc = attention_lse_dtype(q.scalar_type());
  const double scale = resolve_scale(softmax_scale, D);
  at::Tensor lse = at::empty({H, Nq}, q.options().dtype(acc));
  at::Tensor out_acc = at::empty({Nq, H, D}, q.options().dtype(acc));
  const at::Tensor qa = blas_operand(q, 0, acc), ka = blas_operand(k, 0, acc), va = blas_operand(v, 0, acc);
  if (acc == at::kDouble) {
    forward_kernel<double>(qa, ka, va, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments, scale, out_acc,
                           lse);
  } else {
    forward_kernel<float>(qa, ka, va, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments,
                          static_cast<float>(scale), out_acc, lse);
  }
  return {out_acc.scalar_type() == q.scalar_type() ? out_acc : out_acc.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> varlen_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
    std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_k, std::optional<double> softmax_scale) {
  check_varlen_attention_backward(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  softmax_scale);
  check_blas_available("varlen_attention_backward");
  const at::Tensor cu_q = cu_seqlens_q.contiguous(), cu_k = cu_seqlens_k.contiguous();
  const int64_t Nq = q.size(0), H = q.size(1), D = q.size(2), segments = cu_q.size(0) - 1;
  const at::ScalarType acc = attention_lse_dtype(q.scalar_type());
  const double scale = resolve_scale(softmax_scale, D);
  const at::Tensor qa = blas_operand(q, 0, acc), ka = blas_operand(k, 0, acc), va = blas_operand(v, 0, acc),
                   doa = blas_operand(grad_out, 0, acc);
  // delta [H, Nq] = rowsum(dO * O): the softmax-gradient correction of flash-attention 2.
  const at::Tensor delta = at::sum(at::mul(doa, out.to(acc)), {-1}).t().contiguous();
  const at::Tensor lse_c = lse.contiguous();
  at::Tensor grad_q = at::zeros({Nq, H, D}, q.options().dtype(acc));
  at::Tensor grad_k = at::zeros(k.sizes(), q.options().dtype(acc));
  at::Tensor grad_v = at::zeros(k.sizes(), q.options().dtype(acc));
  if (acc == at::kDouble) {
    backward_kernel<double>(doa, qa, ka, va, lse_c, delta, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments,
                            scale, grad_q, grad_k, grad_v);
  } else {
    backward_kernel<float>(doa, qa, ka, va, lse_c, delta, cu_q.data_ptr<int32_t>(), cu_k.data_ptr<int32_t>(), segments,
                           static_cast<float>(scale), grad_q, grad_k, grad_v);
  }
  const at::ScalarType dtype = q.scalar_type();
  if (dtype == acc) return {grad_q, grad_k, grad_v};
  return {grad_q.to(dtype), grad_k.to(dtype), grad_v.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("varlen_attention", &varlen_attention_cpu);
  m.impl("varlen_attention_backward", &varlen_attention_backward_cpu);
}

}  // namespace vlmops
