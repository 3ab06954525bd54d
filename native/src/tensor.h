// tensor.h: a dense row-major float32 array with a shape; the runtime's only tensor type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cyclediff {

using Shape = std::vector<int64_t>;

inline size_t shape_numel(const Shape &shape) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
}

std::string shape_str(const Shape &shape);

struct Tensor {
    Shape shape;
    std::vector<float> values;

    Tensor() = default;
    explicit Tensor(Shape s, float fill = 0.0f) : shape(std::move(s)), values(shape_numel(shape), fill) {}

    size_t size() const { return values.size(); }
    float *data() { return values.data(); }
    const float *data() const { return values.data(); }
    // Elements of one index along the first axis: shape[1:] flattened.
    size_t row_size() const { return shape.empty() || shape[0] == 0 ? 0 : values.size() / shape[0]; }
    float *row(int64_t i) { return values.data() + i * row_size(); }
    const float *row(int64_t i) const { return values.data() + i * row_size(); }
};

}  // namespace cyclediff
