#pragma once
// CUDA entries of ops whose CUDA kernel is written in Triton. The C++ entry checks the op's inputs
// (its contract) and then calls the private op vlmops::_<op>_triton, whose CUDA kernel is the Triton
// launcher that vlmops/ops/registry.py registers when `import vlmops` finds triton and a CUDA device.
// The private op has the public op's schema and no checks of its own: call the public op.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace vlmops {

// The Triton kernel entry `name` ("vlmops::_<op>_triton"), typed as the public op.
template <class Signature>
c10::TypedOperatorHandle<Signature> triton_kernel(const char* name) {
  const c10::OperatorHandle handle = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  TORCH_CHECK(handle.hasKernelForDispatchKey(c10::DispatchKey::CUDA), name,
              " has no CUDA kernel: vlmops registers its Triton kernels at import when triton is installed and a "
              "CUDA device is visible (pip install triton)");
  return handle.typed<Signature>();
}

// VLMOPS_CUDA_BACKEND=triton runs the Triton variant of an op whose CUDA kernel is CUDA C++ (for
// benchmarks and tests); unset or "cuda" runs the CUDA C++ kernel.
inline bool cuda_backend_is_triton() {
  const char* value = std::getenv("VLMOPS_CUDA_BACKEND");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "cuda") == 0) return false;
  TORCH_CHECK_VALUE(std::strcmp(value, "triton") == 0, "VLMOPS_CUDA_BACKEND must be cuda or triton, got '", value, "'");
  return true;
}

}  // namespace vlmops
