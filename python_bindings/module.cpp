// vlmops._C's Python face: build information, and the launch geometry of the CUDA C++ kernels
// (launch_geometry.h, for the static kernel report). Tensor ops never pass through pybind11; they
// are registered with the dispatcher by the TORCH_LIBRARY blocks linked into this same library,
// so importing vlmops._C is what makes torch.ops.vlmops.* exist.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>

#include "vlmops/launch_geometry.h"
#include "vlmops_build_config.h"

namespace py = pybind11;

namespace {

py::dict as_dict(const vlmops::LaunchGeometry& g) {
  py::dict d;
  d["grid"] = py::make_tuple(g.grid_x, g.grid_y);
  d["threads"] = g.threads;
  d["shared_bytes"] = g.shared_bytes;
  d["vector_elements"] = g.vector_elements;
  return d;
}

// The geometry of the shuffle copy as launch_shuffle_copy computes it (pixel_shuffle.cu).
py::dict pixel_shuffle_copy(int64_t element_size, int64_t C, const std::array<int64_t, 4>& x_strides,
                            const std::array<int64_t, 4>& y_strides, uint64_t x_address, uint64_t y_address,
                            int64_t total) {
  const int64_t xs[4] = {x_strides[0], x_strides[1], x_strides[2], x_strides[3]};
  const int64_t ys[4] = {y_strides[0], y_strides[1], y_strides[2], y_strides[3]};
  return as_dict(vlmops::pixel_shuffle_copy_launch_geometry(
      total, vlmops::pixel_shuffle_copy_vector(element_size, C, xs, ys, x_address, y_address)));
}

}  // namespace

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

  py::module_ launch = m.def_submodule(
      "launch_geometry",
      "grids of the CUDA C++ kernels (csrc/include/vlmops/launch_geometry.h), as the launchers compute them");
  launch.def("pixel_shuffle_copy", &pixel_shuffle_copy, py::arg("element_size"), py::arg("C"), py::arg("x_strides"),
             py::arg("y_strides"), py::arg("x_address"), py::arg("y_address"), py::arg("total"));
  launch.def(
      "pixel_shuffle_layer_norm",
      [](int64_t rows) { return as_dict(vlmops::pixel_shuffle_layer_norm_launch_geometry(rows)); }, py::arg("rows"));
  launch.def(
      "pixel_shuffle_layer_norm_affine",
      [](int64_t rows, int64_t n) { return as_dict(vlmops::pixel_shuffle_layer_norm_affine_launch_geometry(rows, n)); },
      py::arg("rows"), py::arg("n"));
  launch.def(
      "rope",
      [](int64_t tokens, int64_t P, int64_t acc_bytes) {
        return as_dict(vlmops::rope_launch_geometry(tokens, P, acc_bytes));
      },
      py::arg("tokens"), py::arg("P"), py::arg("acc_bytes"));
}
