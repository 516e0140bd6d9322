// vlmops._C's Python face: build information only. Tensor ops never pass through pybind11; they
// are registered with the dispatcher by the TORCH_LIBRARY blocks linked into this same library,
// so importing vlmops._C is what makes torch.ops.vlmops.* exist.
#include <pybind11/pybind11.h>

#include "vlmops_build_config.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "vlmops native library: build information (importing it registers torch.ops.vlmops)";
  m.attr("built_with_cuda") = py::bool_(VLMOPS_BUILT_WITH_CUDA != 0);
  m.attr("cuda_archs") = py::str(VLMOPS_CUDA_ARCHS);
#ifdef _OPENMP
  m.attr("openmp") = py::bool_(true);
#else
  m.attr("openmp") = py::bool_(false);
#endif
  m.attr("torch_version") = py::str(VLMOPS_TORCH_VERSION);
}
