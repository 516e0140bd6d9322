#pragma once
// Building blocks of the op contracts (csrc/include/vlmops/<op>_checks.h). Every message names the op
// and the argument; mistakes in shapes, dtypes, devices and values raise ValueError in Python
// (TORCH_CHECK_VALUE), sizes beyond what a kernel indexes raise ValueError too.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

namespace vlmops::checks {

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// float32, float64, float16 or bfloat16.
inline void float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(is_float_dtype(t.scalar_type()), "vlmops.", op, ": ", name,
                    " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

inline void dtype_is(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected) {
  TORCH_CHECK_VALUE(t.scalar_type() == expected, "vlmops.", op, ": ", name, " must be ", expected, ", got ",
                    t.scalar_type());
}

inline void same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), "vlmops.", op, ": ", name, " dtype ", t.scalar_type(),
                    " must match ", ref_name, " dtype ", ref.scalar_type());
}

inline void same_device(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                        const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), "vlmops.", op, ": ", name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device());
}

// t has `ndim` dims; `layout` describes them, e.g. "[B, H, W, C]".
inline void dims(const char* op, const char* name, const at::Tensor& t, int64_t ndim, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == ndim, "vlmops.", op, ": ", name, " must be ", layout, " (", ndim, " dims), got shape ",
                    t.sizes());
}

inline void shape_is(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected,
                     const char* layout) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "vlmops.", op, ": ", name, " must be ", layout, " = ", expected,
                    ", got shape ", t.sizes());
}

// a * b without overflow, or a ValueError naming what the product is.
inline int64_t checked_mul(const char* op, const char* what, int64_t a, int64_t b) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(a, b, &out), "vlmops.", op, ": ", what, " = ", a, " * ", b,
                    " overflows int64");
  return out;
}

inline bool fits_int32(int64_t v) {
  return v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max();
}

}  // namespace vlmops::checks
