#pragma once
// Launch geometry of the CUDA C++ kernels: plain host functions of sizes and strides, used by the
// launchers (csrc/cuda/*.cu) and exposed by vlmops._C.launch_geometry (the grid table of
// tools/kernel_report.py), so the table shows the grids the launchers compute.
#include <algorithm>
#include <cstdint>
#include <limits>

namespace vlmops {

struct LaunchGeometry {
  int64_t grid_x, grid_y;   // blocks
  int64_t threads;          // per block
  int64_t shared_bytes;     // dynamic shared memory per block
  int64_t vector_elements;  // elements one thread moves per global access (1: scalar accesses)
};

namespace launch {

constexpr int64_t kVectorBytes = 16;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The largest power of two v with v * element_size <= 16 bytes that divides every value of `counts`
// (sizes and strides in elements) and every address of `addresses` by v * element_size.
template <int kCounts, int kAddresses>
int64_t vector_elements(int64_t element_size, const int64_t (&counts)[kCounts],
                        const uint64_t (&addresses)[kAddresses]) {
  int64_t v = kVectorBytes / element_size;
  const auto fits = [&](int64_t w) {
    for (const int64_t c : counts) {
      if (c % w != 0) return false;
    }
    for (const uint64_t a : addresses) {
      if (a % static_cast<uint64_t>(w * element_size) != 0) return false;
    }
    return true;
  };
  while (v > 1 && !fits(v)) v /= 2;
  return std::max<int64_t>(v, 1);
}

}  // namespace launch

// ---- pixel shuffle (csrc/cuda/pixel_shuffle.cu)

constexpr int64_t kPixelShuffleThreads = 256;

// Elements per thread and access of the shuffle copy between x [B, H, W, C] and its shuffle
// [B, H/s, W/s, s*s*C]: a channel run of C elements is contiguous on both sides when both channel
// strides are 1, so the copy may move v elements as one when v divides C, the other strides of both
// tensors and both data addresses (in bytes: v * element_size).
inline int64_t pixel_shuffle_copy_vector(int64_t element_size, int64_t C, const int64_t (&x_strides)[4],
                                         const int64_t (&y_strides)[4], uint64_t x_address, uint64_t y_address) {
  if (x_strides[3] != 1 || y_strides[3] != 1) return 1;
  const int64_t counts[7] = {C, x_strides[0], x_strides[1], x_strides[2], y_strides[0], y_strides[1], y_strides[2]};
  const uint64_t addresses[2] = {x_address, y_address};
  return launch::vector_elements(element_size, counts, addresses);
}

// One thread per vector of `vector` elements of the `total`-element shuffled tensor; at most 2^20
// blocks, which then loop over the rest.
inline LaunchGeometry pixel_shuffle_copy_launch_geometry(int64_t total, int64_t vector) {
  const int64_t items = total / vector;
  return {std::min(launch::ceil_div(items, kPixelShuffleThreads), int64_t(1) << 20), 1, kPixelShuffleThreads, 0,
          vector};
}

// Fused LayerNorm forward and the grad_x kernel of its backward: one block per output token, up to
// the grid's limit (blocks then loop over tokens).
inline LaunchGeometry pixel_shuffle_layer_norm_launch_geometry(int64_t rows) {
  return {std::min<int64_t>(rows, std::numeric_limits<int>::max()), 1, kPixelShuffleThreads, 0, 1};
}

// Tokens one block of the dW/db kernel sums per tile, and the grid's y limit.
constexpr int64_t kPixelShuffleRowsPerTile = 64;
constexpr int64_t kPixelShuffleMaxTileBlocks = 65535;

// dW/db of the fused LayerNorm backward: one thread per channel (x), tiles of kPixelShuffleRowsPerTile
// tokens (y), up to the y limit (blocks then loop over tiles).
inline LaunchGeometry pixel_shuffle_layer_norm_affine_launch_geometry(int64_t rows, int64_t n) {
  const int64_t tiles =
      std::clamp<int64_t>(launch::ceil_div(rows, kPixelShuffleRowsPerTile), 1, kPixelShuffleMaxTileBlocks);
  return {launch::ceil_div(n, kPixelShuffleThreads), tiles, kPixelShuffleThreads, 0, 1};
}

// ---- RoPE (csrc/cuda/rope.cu)

constexpr int64_t kRopeThreads = 128;

// One block per token, up to 2^31 - 1 blocks (blocks then loop over tokens); cos/sin of the token's P
// pairs in shared memory, in the math type (acc_bytes: 4 for float32 math, 8 for float64).
inline LaunchGeometry rope_launch_geometry(int64_t tokens, int64_t P, int64_t acc_bytes) {
  return {std::min<int64_t>(tokens, std::numeric_limits<int32_t>::max()), 1, kRopeThreads, 2 * P * acc_bytes, 1};
}

}  // namespace vlmops
