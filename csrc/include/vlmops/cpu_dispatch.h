#pragma once
// Runtime choice of the CPU kernel variant. Files under csrc/cpu/kernels/ are compiled once per
// capability (DEFAULT: the baseline ISA; AVX2: -mavx2 -mfma on x86-64) inside
// namespace vlmops::cpu::<CAPABILITY>, so at::vec::Vectorized is 8 floats wide with FMA where the
// processor has it, and the library still runs on one that does not.

#include <algorithm>
#include <cstdint>

namespace vlmops::cpu {

// Rows handed to one at::parallel_for task: about 32K elements, enough to amortize scheduling.
inline int64_t row_grain(int64_t row_elems) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_elems)); }

inline bool use_avx2() {
#if defined(VLMOPS_HAVE_AVX2_KERNELS)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace vlmops::cpu

// Calls vlmops::cpu::AVX2::fn or vlmops::cpu::DEFAULT::fn.
#if defined(VLMOPS_HAVE_AVX2_KERNELS)
#define VLMOPS_CPU_DISPATCH(fn, ...) \
  (::vlmops::cpu::use_avx2() ? ::vlmops::cpu::AVX2::fn(__VA_ARGS__) : ::vlmops::cpu::DEFAULT::fn(__VA_ARGS__))
#else
#define VLMOPS_CPU_DISPATCH(fn, ...) ::vlmops::cpu::DEFAULT::fn(__VA_ARGS__)
#endif
