// CPU kernels of gated cross-attention: every query row attends to its own key range
// [kv_start, kv_end), the output scaled by tanh(gate) in the epilogue; flash-attention style, no
// [B, Lq, Lk] mask and no expanded K/V.
//
// Rows are grouped into runs: consecutive rows of a batch entry with the same non-empty key range (all
// text rows after one Mllama image, or after one Flamingo <image>, form one run). A run and one k/v
// head make one dense problem whose queries are the run's rows of the group's q heads stacked, so a
// GQA group shares each key block's GEMMs and the GEMMs are as tall as the run allows. Rows with an
// empty range keep a zero output and a -inf log-sum-exp, and are never visited.
//
// Forward: one task per (run, k/v head, tile of stacked rows); the tile is packed into a per-thread
// buffer, scores against each key block are one BLAS GEMM, exponentiated in place (online softmax),
// then multiplied into the tile's output accumulator. Backward (flash-attention 2): one task per
// (batch entry, k/v head), which owns the dK/dV rows of its entry and head and the dQ rows of its
// q heads, so no two tasks write one element (deterministic), and accumulates the gate's gradient
// sum(grad_out * ungated out) = sum(P * (grad_out @ V^T)) on the probability tiles it recomputes.
#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "flash_tiles.h"
#include "vlmops/gated_cross_attention_checks.h"

namespace vlmops {
namespace {

using namespace flash_tiles;

// A [256, 512] fp32 score tile (512 KiB) and a key block fit L2; 256 stacked rows amortize the packing
// of each key block inside the GEMM.
constexpr int64_t kBlockQ = 256;
constexpr int64_t kBlockK = 512;

// Consecutive rows [row_begin, row_end) of batch entry b that see keys [key_begin, key_end).
struct Run {
  int64_t b, row_begin, row_end, key_begin, key_end;
};

std::vector<Run> runs_of(const int32_t* start, const int32_t* end, int64_t B, int64_t Lq) {
  std::vector<Run> runs;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t r = 0; r < Lq;) {
      const int64_t i = b * Lq + r;
      int64_t r_end = r + 1;
      while (r_end < Lq && start[b * Lq + r_end] == start[i] && end[b * Lq + r_end] == end[i]) ++r_end;
      if (end[i] > start[i]) runs.push_back({b, r, r_end, start[i], end[i]});
      r = r_end;
    }
  }
  return runs;
}

// Element (b, row, head, 0) of a [B, L, heads, D] operand with unit stride along D; sl, the stride
// between rows, is their BLAS leading dimension (flash_tiles::leading_dim) where BLAS reads them in place.
template <class acc_t>
struct Operand {
  acc_t* data;
  int64_t sb, sl, sh;
  acc_t* at(int64_t b, int64_t row, int64_t head) const { return data + b * sb + row * sl + head * sh; }
};

// k, v (flash_tiles::blas_operand along dim 1), q, grad_out (flash_tiles::unit_stride_operand: their
// rows are copied into packed tiles) or a fresh output.
template <class acc_t>
Operand<acc_t> operand_of(const at::Tensor& t) {
  return Operand<acc_t>{static_cast<acc_t*>(t.data_ptr()), t.stride(0), leading_dim(t, 1), t.stride(2)};
}

// Stacked row s of a run's tile: q head head_first + s / len, query row row_begin + s % len.
struct Stacked {
  int64_t len, row_begin, head_first;
  int64_t row(int64_t s) const { return row_begin + s % len; }
  int64_t head(int64_t s) const { return head_first + s / len; }
};

struct ForwardTask {
  int64_t run, kv_head, s_begin, rows, cost;
};

template <class acc_t>
void forward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::vector<Run>& runs,
                    acc_t scale, acc_t gate, at::Tensor& out, at::Tensor& lse) {
  const int64_t H = q.size(2), D = q.size(3), Lq = q.size(1), Hk = k.size(2), group = H / Hk;
  const Operand<acc_t> Q = operand_of<acc_t>(q), K = operand_of<acc_t>(k), V = operand_of<acc_t>(v),
                       O = operand_of<acc_t>(out);
  acc_t* lse_data = lse.data_ptr<acc_t>();
  std::vector<ForwardTask> tasks;
  for (int64_t r = 0; r < static_cast<int64_t>(runs.size()); ++r) {
    const int64_t stacked = (runs[r].row_end - runs[r].row_begin) * group, keys = runs[r].key_end - runs[r].key_begin;
    for (int64_t kv_head = 0; kv_head < Hk; ++kv_head) {
      for (int64_t s = 0; s < stacked; s += kBlockQ) {
        const int64_t m = std::min(kBlockQ, stacked - s);
        tasks.push_back({r, kv_head, s, m, m * keys});
      }
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const ForwardTask& a, const ForwardTask& b) { return a.cost > b.cost; });
  struct Scratch {
    std::vector<acc_t> q_tile, o_tile, scores, row_max, row_sum, rescale;
  };
  run_tasks(
      static_cast<int64_t>(tasks.size()),
      [D] {
        return Scratch{std::vector<acc_t>(kBlockQ * D),       std::vector<acc_t>(kBlockQ * D),
                       std::vector<acc_t>(kBlockQ * kBlockK), std::vector<acc_t>(kBlockQ),
                       std::vector<acc_t>(kBlockQ),           std::vector<acc_t>(kBlockQ)};
      },
      [&](int64_t t, Scratch& scratch) {
        auto& [q_tile, o_tile, scores, row_max, row_sum, rescale] = scratch;
        const ForwardTask& task = tasks[t];
        const Run& run = runs[task.run];
        const Stacked stack{run.row_end - run.row_begin, run.row_begin, task.kv_head * group};
        const int64_t m = task.rows, b = run.b;
        for (int64_t i = 0; i < m; ++i) {
          const int64_t s = task.s_begin + i;
          std::memcpy(q_tile.data() + i * D, Q.at(b, stack.row(s), stack.head(s)), D * sizeof(acc_t));
        }
        std::fill_n(row_max.begin(), m, -std::numeric_limits<acc_t>::infinity());
        std::fill_n(row_sum.begin(), m, acc_t(0));
        for (int64_t kb = run.key_begin; kb < run.key_end; kb += kBlockK) {
          const int64_t n = std::min(kBlockK, run.key_end - kb);
          // scores [m, n] = scale * q_tile [m, D] @ k_block [n, D]^T (column-major BLAS view: [n, m]).
          gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, scale, K.at(b, kb, task.kv_head), K.sl,
               q_tile.data(), D, acc_t(0), scores.data(), n);
          online_softmax_tile(scores.data(), m, n, row_max.data(), row_sum.data(), rescale.data());
          const bool first = kb == run.key_begin;
          if (!first) {
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t d = 0; d < D; ++d) o_tile[i * D + d] *= rescale[i];
            }
          }
          // o_tile [m, D] (+)= p [m, n] @ v_block [n, D].
          gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, acc_t(1), V.at(b, kb, task.kv_head),
               V.sl, scores.data(), n, first ? acc_t(0) : acc_t(1), o_tile.data(), D);
        }
        // Epilogue: softmax normalization and the tanh gate in one scaling.
        for (int64_t i = 0; i < m; ++i) {
          const int64_t s = task.s_begin + i, row = stack.row(s), head = stack.head(s);
          const acc_t factor = gate / row_sum[i];
          acc_t* o = O.at(b, row, head);
          for (int64_t d = 0; d < D; ++d) o[d] = o_tile[i * D + d] * factor;
          lse_data[(b * H + head) * Lq + row] = row_max[i] + std::log(row_sum[i]);
        }
      });
}

// dS = P * (gate * dP - delta) in place in dp, where dp holds grad_out @ V^T of the ungated grad_out;
// adds each row's sum(P * dP) (its share of sum(grad_out * ungated out)) to row_dot.
template <class acc_t>
void gated_score_grad_tile(const acc_t* p, acc_t* dp, int64_t m, int64_t n, const acc_t* delta, acc_t gate,
                           acc_t* row_dot) {
  for (int64_t r = 0; r < m; ++r) {
    const acc_t* pr = p + r * n;
    acc_t* dr = dp + r * n;
    const acc_t d = delta[r];
    acc_t dot = 0;
    for (int64_t c = 0; c < n; ++c) {
      dot += pr[c] * dr[c];
      dr[c] = pr[c] * (gate * dr[c] - d);
    }
    row_dot[r] += dot;
  }
}

// What every backward task reads and writes: the operands, lse [B, H, Lq] and delta [B, Lq, H].
template <class acc_t>
struct BackwardOperands {
  Operand<acc_t> Q, K, V, dO, dQ, dK, dV;
  const acc_t* lse;
  const acc_t* delta;
  int64_t Lq, H, D, group;
  acc_t scale, gate;
};

// A worker's tiles: up to kBlockQ stacked rows of q, grad_out and dQ, their probabilities and
// probability gradients against one key block, lse, delta, and sum(P * dP) per row.
template <class acc_t>
struct BackwardScratch {
  std::vector<acc_t> q_tile, do_tile, dq_tile, probs, dprobs, lse_tile, delta_tile, row_dot;
  explicit BackwardScratch(int64_t D)
      : q_tile(kBlockQ * D),
        do_tile(kBlockQ * D),
        dq_tile(kBlockQ * D),
        probs(kBlockQ * kBlockK),
        dprobs(kBlockQ * kBlockK),
        lse_tile(kBlockQ),
        delta_tile(kBlockQ),
        row_dot(kBlockQ) {}
};

// Packs the stacked rows [s0, s0 + m) of a run (batch entry b) into the tiles and clears dQ and the row dots.
template <class acc_t>
void load_row_tile(const BackwardOperands<acc_t>& o, const Stacked& stack, int64_t b, int64_t s0, int64_t m,
                   BackwardScratch<acc_t>& s) {
  const int64_t D = o.D;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t row = stack.row(s0 + i), head = stack.head(s0 + i);
    std::memcpy(s.q_tile.data() + i * D, o.Q.at(b, row, head), D * sizeof(acc_t));
    std::memcpy(s.do_tile.data() + i * D, o.dO.at(b, row, head), D * sizeof(acc_t));
    s.lse_tile[i] = o.lse[(b * o.H + head) * o.Lq + row];
    s.delta_tile[i] = o.delta[(b * o.Lq + row) * o.H + head];
  }
  std::fill_n(s.dq_tile.begin(), m * D, acc_t(0));
  std::fill_n(s.row_dot.begin(), m, acc_t(0));
}

// The row tile (m rows) against keys [kb, kb + n) of batch entry b and k/v head kv_head: adds the
// block's dV and dK, the tile's dQ and its rows' sum(P * dP).
template <class acc_t>
void key_block_backward(const BackwardOperands<acc_t>& o, int64_t b, int64_t kv_head, int64_t kb, int64_t n, int64_t m,
                        BackwardScratch<acc_t>& s) {
  const int64_t D = o.D;
  const acc_t* k_blk = o.K.at(b, kb, kv_head);
  const acc_t* v_blk = o.V.at(b, kb, kv_head);
  // P [m, n] = exp(scale * q_tile @ k_block^T - lse).
  gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, o.scale, k_blk, o.K.sl, s.q_tile.data(), D,
       acc_t(0), s.probs.data(), n);
  probabilities_tile(s.probs.data(), m, n, s.lse_tile.data());
  // dV [n, D] += gate * P^T [n, m] @ dO [m, D] (the gated output's grad_out is gate * grad_out).
  gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, o.gate, s.do_tile.data(), D, s.probs.data(), n,
       acc_t(1), o.dV.at(b, kb, kv_head), o.dV.sl);
  // dP [m, n] = dO [m, D] @ V^T [D, n], ungated.
  gemm(TransposeType::Transpose, TransposeType::NoTranspose, n, m, D, acc_t(1), v_blk, o.V.sl, s.do_tile.data(), D,
       acc_t(0), s.dprobs.data(), n);
  gated_score_grad_tile(s.probs.data(), s.dprobs.data(), m, n, s.delta_tile.data(), o.gate, s.row_dot.data());
  // dQ [m, D] += scale * dS [m, n] @ K [n, D];  dK [n, D] += scale * dS^T [n, m] @ Q [m, D].
  gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, D, m, n, o.scale, k_blk, o.K.sl, s.dprobs.data(), n,
       acc_t(1), s.dq_tile.data(), D);
  gemm(TransposeType::NoTranspose, TransposeType::Transpose, D, n, m, o.scale, s.q_tile.data(), D, s.dprobs.data(), n,
       acc_t(1), o.dK.at(b, kb, kv_head), o.dK.sl);
}

// Writes the tile's dQ rows; returns the sum of its row dots (the tile's share of the gate's gradient).
template <class acc_t>
double store_row_tile(const BackwardOperands<acc_t>& o, const Stacked& stack, int64_t b, int64_t s0, int64_t m,
                      const BackwardScratch<acc_t>& s) {
  double dot = 0;
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(o.dQ.at(b, stack.row(s0 + i), stack.head(s0 + i)), s.dq_tile.data() + i * o.D, o.D * sizeof(acc_t));
    dot += s.row_dot[i];
  }
  return dot;
}

// One task: every run of batch entry b ([run_begin, run_end) of runs) against k/v head kv_head; returns
// the task's share of the gate's gradient.
template <class acc_t>
double backward_task(const BackwardOperands<acc_t>& o, const std::vector<Run>& runs, int64_t run_begin, int64_t run_end,
                     int64_t b, int64_t kv_head, BackwardScratch<acc_t>& s) {
  double gate_dot = 0;
  for (int64_t r = run_begin; r < run_end; ++r) {
    const Run& run = runs[r];
    const Stacked stack{run.row_end - run.row_begin, run.row_begin, kv_head * o.group};
    const int64_t stacked = stack.len * o.group;
    for (int64_t s0 = 0; s0 < stacked; s0 += kBlockQ) {
      const int64_t m = std::min(kBlockQ, stacked - s0);
      load_row_tile(o, stack, b, s0, m, s);
      for (int64_t kb = run.key_begin; kb < run.key_end; kb += kBlockK) {
        key_block_backward(o, b, kv_head, kb, std::min(kBlockK, run.key_end - kb), m, s);
      }
      gate_dot += store_row_tile(o, stack, b, s0, m, s);
    }
  }
  return gate_dot;
}

template <class acc_t>
void backward_kernel(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& lse, const at::Tensor& delta, const std::vector<Run>& runs, int64_t B,
                     acc_t scale, acc_t gate, at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v,
                     std::vector<double>& gate_dots) {
  const int64_t Hk = k.size(2), D = q.size(3);
  const BackwardOperands<acc_t> operands{operand_of<acc_t>(q),
                                         operand_of<acc_t>(k),
                                         operand_of<acc_t>(v),
                                         operand_of<acc_t>(grad_out),
                                         operand_of<acc_t>(grad_q),
                                         operand_of<acc_t>(grad_k),
                                         operand_of<acc_t>(grad_v),
                                         lse.data_ptr<acc_t>(),
                                         delta.data_ptr<acc_t>(),
                                         q.size(1),
                                         q.size(2),
                                         D,
                                         q.size(2) / Hk,
                                         scale,
                                         gate};
  // runs_by_b[b] .. runs_by_b[b + 1]: the runs of batch entry b (runs are ordered by b).
  std::vector<int64_t> runs_by_b(B + 1, 0);
  for (const Run& run : runs) ++runs_by_b[run.b + 1];
  for (int64_t b = 0; b < B; ++b) runs_by_b[b + 1] += runs_by_b[b];
  // Tasks: (batch entry, k/v head); each owns the dK/dV rows of its entry and head.
  run_tasks(
      B * Hk, [D] { return BackwardScratch<acc_t>(D); },
      [&](int64_t t, BackwardScratch<acc_t>& scratch) {
        const int64_t b = t / Hk;
        gate_dots[t] = backward_task(operands, runs, runs_by_b[b], runs_by_b[b + 1], b, t % Hk, scratch);
      });
}

double resolve_scale(std::optional<double> softmax_scale, int64_t D) {
  return softmax_scale.has_value() ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(D));
}

double tanh_gate(const std::optional<at::Tensor>& gate) {
  return gate.has_value() ? std::tanh(gate->to(at::kDouble).item<double>()) : 1.0;
}

// The runs of the (checked) CPU key ranges.
std::vector<Run> runs_of(const at::Tensor& kv_start, const at::Tensor& kv_end) {
  const at::Tensor start = kv_start.contiguous(), end = kv_end.contiguous();
  return runs_of(start.data_ptr<int32_t>(), end.data_ptr<int32_t>(), start.size(0), start.size(1));
}

std::tuple<at::Tensor, at::Tensor> gated_cross_attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& kv_start,
                                                             const at::Tensor& kv_end,
                                                             const std::optional<at::Tensor>& gate,
                                                             std::optional<double> softmax_scale) {
  check_gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale);
  check_blas_available("gated_cross_attention");
  const std::vector<Run> runs = runs_of(kv_start, kv_end);
  const int64_t B = q.size(0), Lq = q.size(1), H = q.size(2), D = q.size(3);
  const at::ScalarType acc = attention_lse_dtype(q.scalar_type());
  const double scale = resolve_scale(softmax_scale, D), g = tanh_gate(gate);
  // Rows with an empty key range are never written by the kernel: zero output, -inf log-sum-exp.
  at::Tensor lse = at::full({B, H, Lq}, -std::numeric_limits<double>::infinity(), q.options().dtype(acc));
  at::Tensor out_acc = at::zeros({B, Lq, H, D}, q.options().dtype(acc));
  const at::Tensor qa = unit_stride_operand(q, acc), ka = blas_operand(k, 1, acc), va = blas_operand(v, 1, acc);
  if (acc == at::kDouble) {
    forward_kernel<double>(qa, ka, va, runs, scale, g, out_acc, lse);
  } else {
    forward_kernel<float>(qa, ka, va, runs, static_cast<float>(scale), static_cast<float>(g), out_acc, lse);
  }
  return {out_acc.scalar_type() == q.scalar_type() ? out_acc : out_acc.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gated_cross_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& kv_start, const at::Tensor& kv_end, const std::optional<at::Tensor>& gate,
    std::optional<double> softmax_scale) {
  check_gated_cross_attention_backward(grad_out, q, k, v, out, lse, kv_start, kv_end, gate, softmax_scale);
  check_blas_available("gated_cross_attention_backward");
  const std::vector<Run> runs = runs_of(kv_start, kv_end);
  const int64_t B = q.size(0), Lq = q.size(1), H = q.size(2), D = q.size(3);
  const at::ScalarType acc = attention_lse_dtype(q.scalar_type());
  const double scale = resolve_scale(softmax_scale, D), g = tanh_gate(gate);
  const at::Tensor qa = unit_stride_operand(q, acc), ka = blas_operand(k, 1, acc), va = blas_operand(v, 1, acc),
                   doa = unit_stride_operand(grad_out, acc);
  // delta [B, Lq, H] = rowsum(grad_out * out): the gated out already carries the gate that the
  // flash-attention 2 correction needs (rowsum(gate * grad_out * ungated out)).
  const at::Tensor delta = at::sum(at::mul(doa, out.to(acc)), {-1}).contiguous();
  const at::Tensor lse_c = lse.contiguous();
  at::Tensor grad_q = at::zeros({B, Lq, H, D}, q.options().dtype(acc));
  at::Tensor grad_k = at::zeros(k.sizes(), q.options().dtype(acc));
  at::Tensor grad_v = at::zeros(k.sizes(), q.options().dtype(acc));
  std::vector<double> gate_dots(B * k.size(2), 0.0);
  if (acc == at::kDouble) {
    backward_kernel<double>(doa, qa, ka, va, lse_c, delta, runs, B, scale, g, grad_q, grad_k, grad_v, gate_dots);
  } else {
    backward_kernel<float>(doa, qa, ka, va, lse_c, delta, runs, B, static_cast<float>(scale), static_cast<float>(g),
                           grad_q, grad_k, grad_v, gate_dots);
  }
  at::Tensor grad_gate;
  if (gate.has_value()) {
    double dot = 0;
    for (double x : gate_dots) dot += x;
    // d tanh(alpha) / d alpha = 1 - tanh(alpha)^2.
    grad_gate = at::full(gate->sizes(), dot * (1.0 - g * g), gate->options());
  } else {
    grad_gate = at::zeros({0}, q.options().dtype(acc));
  }
  const at::ScalarType dtype = q.scalar_type();
  if (dtype == acc) return {grad_q, grad_k, grad_v, grad_gate};
  return {grad_q.to(dtype), grad_k.to(dtype), grad_v.to(dtype), grad_gate};
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CPU, m) {
  m.impl("gated_cross_attention", &gated_cross_attention_cpu);
  m.impl("gated_cross_attention_backward", &gated_cross_attention_backward_cpu);
}

}  // namespace vlmops
