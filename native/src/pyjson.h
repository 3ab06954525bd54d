// pyjson.h: Python's json.dumps(value, sort_keys=True) byte for byte, so C++ computes the same digests.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cyclediff {

// float.__repr__ of a double: shortest round-trip digits, Python's fixed/exponent rule.
std::string py_float_repr(double value);
// json.dumps(value, sort_keys=True): ", " and ": " separators, ensure_ascii escapes.
std::string py_json_dumps(const nlohmann::json &value);

}  // namespace cyclediff
