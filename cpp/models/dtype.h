// dtype names as users write them ("float32", "bfloat16", "float16").
// `param` is the field the name came from, for InvalidArgument.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

#include "core/config.h"

namespace modelbench {

inline c10::ScalarType dtype_from_name(const std::string& name, const std::string& param = "dtype") {
  if (name == "float32") return c10::kFloat;
  if (name == "bfloat16") return c10::kBFloat16;
  if (name == "float16") return c10::kHalf;
  throw InvalidArgument("dtype must be one of float32, bfloat16, float16, got '" + name + "'", param);
}

inline std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    case c10::kChar: return "int8";  // a KV cache of int8 rows with scales
    default: return c10::toString(dtype);
  }
}

}  // namespace modelbench
