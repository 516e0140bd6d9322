// CUDA kernel of multi-axis RoPE. Each block rotates tokens blockIdx.x, blockIdx.x + gridDim.x, ...: its
// threads first compute cos/sin of the token's P pairs from positions * inv_freq into shared memory (once
// per (token, pair), shared by every head), then rotate all heads of q and then k, consecutive threads on
// consecutive pairs (coalesced when head_dim is contiguous). Axis values are clamped to [0, A) on the
// device instead of checked (the CPU op checks them): reading axis on the host would synchronize.
// VLMOPS_CUDA_BACKEND=triton runs the Triton variant (vlmops/triton/rope.py) after the same checks.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include "vlmops/launch_geometry.h"
#include "vlmops/rope_checks.h"
#include "vlmops/rope_math.h"
#include "vlmops/triton_kernel.h"

namespace vlmops {
namespace {

constexpr int kThreads = kRopeThreads;
constexpr int64_t kMaxSharedBytes = 48 * 1024;  // without opting in to more

struct HeadsArgs {
  const void* in;
  void* out;
  int64_t heads;
  int64_t in_stride[4];
  int64_t out_stride[4];
};

HeadsArgs heads_args(const at::Tensor& in, const at::Tensor& out) {
  return HeadsArgs{in.const_data_ptr(),
                   out.data_ptr(),
                   in.size(2),
                   {in.stride(0), in.stride(1), in.stride(2), in.stride(3)},
                   {out.stride(0), out.stride(1), out.stride(2), out.stride(3)}};
}

// The widest access (in elements: 16 bytes, 8 bytes, else 1) that every row of q, k and their outputs
// allows: unit-stride head dims, rows starting on that many elements (pointers, and the batch, token
// and head strides of dims longer than 1), and P and the copied tail multiples of it.
int rope_vector_width(std::initializer_list<const at::Tensor*> tensors, int64_t P, int64_t D, bool copy_tail) {
  const auto fits = [&](int64_t vec) {
    if (P % vec != 0 || (copy_tail && (D - 2 * P) % vec != 0)) return false;
    for (const at::Tensor* t : tensors) {
      if (t->stride(3) != 1 || reinterpret_cast<uintptr_t>(t->const_data_ptr()) % (vec * t->itemsize()) != 0) {
        return false;
      }
      for (int64_t d = 0; d < 3; ++d) {
        if (t->size(d) > 1 && t->stride(d) % vec != 0) return false;
      }
    }
    return true;
  };
  const int64_t item = tensors.begin()[0]->itemsize();
  for (const int64_t bytes : {16, 8}) {
    const int64_t vec = bytes / item;
    if (vec > 1 && fits(vec)) return static_cast<int>(vec);
  }
  return 1;
}

// cos/sin through cospi/sinpi of angle/pi in double: their argument reduction is exact, so unlike
// cosf/sinf (and cos/sin) there is no Payne-Hanek slow path with its local-memory array, and the float
// result is the correctly rounded cos/sin (CUDA's cosf is within 2 ulp of it). For float angles up to
// kMaxCospiAngle (RoPE's reach ~1e5 rad) angle * (1/pi) in double is within |angle| * 2^-52 rad, far
// below a float ulp; larger float angles (huge positions or inv_freq) and float64 angles take
// rope_turns (rope_math.h), accurate at any magnitude.
constexpr double kInvPi = 0.318309886183790671537767526745028724;
constexpr float kMaxCospiAngle = 1048576.0f;
__device__ inline void device_cos_sin(float a, float& c, float& s) {
  const double turns = fabsf(a) <= kMaxCospiAngle ? static_cast<double>(a) * kInvPi : rope_turns(a);
  c = static_cast<float>(cospi(turns));
  s = static_cast<float>(sinpi(turns));
}
__device__ inline void device_cos_sin(double a, double& c, double& s) {
  const double turns = rope_turns(a);
  c = cospi(turns);
  s = sinpi(turns);
}

// kVec elements of a head row, moved as one access: through int4 (16 bytes) or int2 (8 bytes)
// registers, which the compiler keeps together as one LDG/STG of that width.
template <class scalar_t, int kVec>
struct Chunk {
  scalar_t v[kVec];
};

template <int kBytes>
using word_t = std::conditional_t<kBytes == 16, int4, std::conditional_t<kBytes == 8, int2, void>>;

template <class chunk_t>
__device__ inline chunk_t load_chunk(const void* p) {
  const auto word = *static_cast<const word_t<sizeof(chunk_t)>*>(p);
  chunk_t chunk;
  memcpy(&chunk, &word, sizeof(chunk_t));
  return chunk;
}

template <class chunk_t>
__device__ inline void store_chunk(void* p, const chunk_t& chunk) {
  word_t<sizeof(chunk_t)> word;
  memcpy(&word, &chunk, sizeof(chunk_t));
  // An explicit vector store: nvcc splits a plain assignment of the word into 32-bit stores.
  if constexpr (sizeof(chunk_t) == 16) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(word.x), "r"(word.y), "r"(word.z), "r"(word.w)
                 : "memory");
  } else {
    asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(p), "r"(word.x), "r"(word.y) : "memory");
  }
}

// Rotates (and, out of place, copies the tail of) every head of token (b, t): pairs (j, j + P) of kVec
// consecutive j at a time. kVec > 1 needs unit-stride head dims, P and the tail multiples of kVec, and
// rows starting on kVec-element boundaries (rope_vector_width checks all of it on the host).
template <class scalar_t, bool kRound, int kVec, class acc_t>
__device__ void rotate_heads(const HeadsArgs& h, int64_t b, int64_t t, const acc_t* c, const acc_t* s, int64_t P,
                             int64_t D, bool copy_tail) {
  using chunk_t = Chunk<scalar_t, kVec>;
  const scalar_t* x = static_cast<const scalar_t*>(h.in) + b * h.in_stride[0] + t * h.in_stride[1];
  scalar_t* y = static_cast<scalar_t*>(h.out) + b * h.out_stride[0] + t * h.out_stride[1];
  const int64_t pairs = P / kVec;
  for (int64_t e = threadIdx.x; e < h.heads * pairs; e += blockDim.x) {
    const int64_t head = e / pairs;
    const int64_t j = (e - head * pairs) * kVec;
    const scalar_t* xh = x + head * h.in_stride[2];
    scalar_t* yh = y + head * h.out_stride[2];
    chunk_t x0, x1, y0, y1;
    if constexpr (kVec == 1) {
      x0.v[0] = xh[j * h.in_stride[3]];
      x1.v[0] = xh[(j + P) * h.in_stride[3]];
    } else {
      x0 = load_chunk<chunk_t>(xh + j);
      x1 = load_chunk<chunk_t>(xh + j + P);
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      acc_t r0, r1;
      rotate_pair<scalar_t, kRound>(static_cast<acc_t>(x0.v[i]), static_cast<acc_t>(x1.v[i]), c[j + i], s[j + i], r0,
                                    r1);
      y0.v[i] = static_cast<scalar_t>(r0);
      y1.v[i] = static_cast<scalar_t>(r1);
    }
    if constexpr (kVec == 1) {
      yh[j * h.out_stride[3]] = y0.v[0];
      yh[(j + P) * h.out_stride[3]] = y1.v[0];
    } else {
      store_chunk(yh + j, y0);
      store_chunk(yh + j + P, y1);
    }
  }
  if (!copy_tail) return;
  // Out of place, dims [2P, D) pass through unchanged.
  const int64_t tail = (D - 2 * P) / kVec;
  for (int64_t e = threadIdx.x; e < h.heads * tail; e += blockDim.x) {
    const int64_t head = e / tail;
    const int64_t d = 2 * P + (e - head * tail) * kVec;
    const scalar_t* xh = x + head * h.in_stride[2];
    scalar_t* yh = y + head * h.out_stride[2];
    if constexpr (kVec == 1) {
      yh[d * h.out_stride[3]] = xh[d * h.in_stride[3]];
    } else {
      store_chunk(yh + d, load_chunk<chunk_t>(xh + d));
    }
  }
}

template <class scalar_t, class pos_t, bool kRound, int kVec>
__global__ void rope_kernel(HeadsArgs q, HeadsArgs k, const pos_t* __restrict__ positions, int64_t ps0, int64_t ps1,
                            int64_t ps2, int64_t A, const int64_t* __restrict__ axis,
                            const float* __restrict__ inv_freq, int64_t tokens, int64_t S, int64_t P, int64_t D,
                            bool inverse, bool copy_tail) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem[];
  acc_t* c = reinterpret_cast<acc_t*>(smem);
  acc_t* s = c + P;
  for (int64_t token = blockIdx.x; token < tokens; token += gridDim.x) {
    const int64_t b = token / S, t = token - (token / S) * S;
    const pos_t* pos = positions + b * ps0 + t * ps1;
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
      const int64_t a = min(max(axis[i], int64_t(0)), A - 1);
      const acc_t angle = rope_angle<acc_t>(static_cast<int64_t>(pos[a * ps2]), static_cast<acc_t>(inv_freq[i]));
      acc_t ci, si;
      device_cos_sin(angle, ci, si);
      if constexpr (kRound) {
        ci = round_to<scalar_t>(ci);
        si = round_to<scalar_t>(si);
      }
      c[i] = ci;
      s[i] = inverse ? -si : si;
    }
    __syncthreads();
    rotate_heads<scalar_t, kRound, kVec>(q, b, t, c, s, P, D, copy_tail);
    rotate_heads<scalar_t, kRound, kVec>(k, b, t, c, s, P, D, copy_tail);
    __syncthreads();  // c and s are rewritten for the block's next token
  }
}

void rope_launch(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_out, const at::Tensor& k_out,
                 const at::Tensor& positions, const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math,
                 bool inverse) {
  const int64_t tokens = q.size(0) * q.size(1);
  if (tokens == 0) return;
  const c10::cuda::CUDAGuard device_guard(q.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t P = axis.size(0), D = q.size(3), A = positions.size(2);
  const bool copy_tail = !q.is_same(q_out) && 2 * P < D;
  const HeadsArgs qa = heads_args(q, q_out), ka = heads_args(k, k_out);
  const at::Tensor axis_c = axis.contiguous(), freq_c = inv_freq.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "rope_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Blocks loop over tokens: the grid's x dimension holds at most 2^31 - 1 blocks.
    const LaunchGeometry geometry = rope_launch_geometry(tokens, P, sizeof(acc_t));
    const auto blocks = static_cast<unsigned int>(geometry.grid_x);
    const int64_t smem = geometry.shared_bytes;
    TORCH_CHECK_VALUE(smem <= kMaxSharedBytes, "vlmops.rope: rotary_dim = 2 * ", P,
                      " is more than the CUDA kernel "
                      "takes (its cos/sin rows live in ",
                      kMaxSharedBytes, " bytes of shared memory: rotary_dim <= ", kMaxSharedBytes / sizeof(acc_t),
                      " for ", q.scalar_type(),
                      "); VLMOPS_CUDA_BACKEND=triton "
                      "runs the Triton variant");
    const int vec = rope_vector_width({&q, &k, &q_out, &k_out}, P, D, copy_tail);
    auto launch = [&](auto pos_tag, auto round_tag, auto vec_tag) {
      using pos_t = decltype(pos_tag);
      rope_kernel<scalar_t, pos_t, decltype(round_tag)::value, decltype(vec_tag)::value>
          <<<blocks, kThreads, smem, stream>>>(qa, ka, positions.const_data_ptr<pos_t>(), positions.stride(0),
                                               positions.stride(1), positions.stride(2), A,
                                               axis_c.const_data_ptr<int64_t>(), freq_c.const_data_ptr<float>(), tokens,
                                               q.size(1), P, D, inverse, copy_tail);
    };
    // 16-byte, 8-byte or single-element accesses (the widest the layouts allow).
    constexpr int kWide = std::max<int>(1, 16 / sizeof(scalar_t)), kNarrow = std::max<int>(1, 8 / sizeof(scalar_t));
    auto launch_vec = [&](auto pos_tag, auto round_tag) {
      if (vec == kWide) {
        launch(pos_tag, round_tag, std::integral_constant<int, kWide>{});
      } else if (vec == kNarrow) {
        launch(pos_tag, round_tag, std::integral_constant<int, kNarrow>{});
      } else {
        launch(pos_tag, round_tag, std::integral_constant<int, 1>{});
      }
    };
    // Rounding to the activation dtype only exists for half and bfloat16 (float math otherwise).
    auto launch_round = [&](auto pos_tag) {
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        launch_vec(pos_tag, std::false_type{});
      } else if (!fp32_math) {
        launch_vec(pos_tag, std::true_type{});
      } else {
        launch_vec(pos_tag, std::false_type{});
      }
    };
    if (positions.scalar_type() == at::kLong) {
      launch_round(int64_t{});
    } else {
      launch_round(int32_t{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> rope_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                             const at::Tensor& positions_in, const at::Tensor& axis,
                                             const at::Tensor& inv_freq, bool fp32_math, bool inverse) {
  const auto [q, k, positions, packed] = rope_operands("rope", q_in, k_in, positions_in);
  check_rope("rope", q, k, positions, axis, inv_freq);
  at::Tensor q_out, k_out;
  if (cuda_backend_is_triton()) {
    std::tie(q_out, k_out) = triton_kernel<decltype(rope_cuda)>("vlmops::_rope_triton")
                                 .call(q, k, positions, axis, inv_freq, fp32_math, inverse);
  } else {
    q_out = at::empty_like(q);
    k_out = at::empty_like(k);
    rope_launch(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse);
  }
  if (packed) return {q_out.squeeze(0), k_out.squeeze(0)};
  return {q_out, k_out};
}

void rope_inplace_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& positions_in,
                       const at::Tensor& axis, const at::Tensor& inv_freq, bool fp32_math, bool inverse) {
  const auto [q, k, positions, packed] = rope_operands("rope_", q_in, k_in, positions_in);
  check_rope("rope_", q, k, positions, axis, inv_freq);
  check_rope_inplace(q, k);
  if (cuda_backend_is_triton()) {
    return triton_kernel<decltype(rope_inplace_cuda)>("vlmops::_rope_triton_")
        .call(q, k, positions, axis, inv_freq, fp32_math, inverse);
  }
  rope_launch(q, k, q, k, positions, axis, inv_freq, fp32_math, inverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmops, CUDA, m) {
  m.impl("rope", &rope_cuda);
  m.impl("rope_", &rope_inplace_cuda);
}

}  // namespace vlmops
