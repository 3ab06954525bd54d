// tensor.cpp: shape formatting for messages.
#include "tensor.h"

namespace cyclediff {

std::string shape_str(const Shape &shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

}  // namespace cyclediff
