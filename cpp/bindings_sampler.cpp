// Bindings of the sampler part of modelbench._core (merged into bindings.cpp later).
#include <pybind11/pybind11.h>
namespace py = pybind11;
void bind_sampler(py::module_& m) { (void)m; }
