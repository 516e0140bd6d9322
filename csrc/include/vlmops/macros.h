#pragma once

// Functions shared by the CPU (C++) and CUDA kernels are compiled by both compilers.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define VLMOPS_HD __host__ __device__ __forceinline__
#else
#define VLMOPS_HD inline
#endif
