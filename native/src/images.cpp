// images.cpp: pre/post-processing with the runtime's float32 operations.
#include "images.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace cyclediff {

void image_check(const uint8_t *rgb, int width, int height, size_t stride, int multiple) {
    require(rgb != nullptr, CYCLEDIFF_ERR_INVALID_ARGUMENT, "image pixels are NULL");
    require(width > 0 && height > 0, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "image size " + std::to_string(width) + "x" + std::to_string(height) + " is empty");
    require(stride >= 3 * static_cast<size_t>(width), CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "image stride " + std::to_string(stride) + " is less than 3 x width = " + std::to_string(3 * width));
    if (width % multiple || height % multiple) {
        auto round_to = [multiple](int v) { return std::max(multiple, (v + multiple / 2) / multiple * multiple); };
        fail(CYCLEDIFF_ERR_IMAGE_SIZE, "image " + std::to_string(width) + "x" + std::to_string(height) +
                                           " is not a multiple of " + std::to_string(multiple) +
                                           " pixels on each side; resize it first (e.g. to " +
                                           std::to_string(round_to(width)) + "x" + std::to_string(round_to(height)) + ")");
    }
}

Tensor image_to_pixels(const uint8_t *rgb, int width, int height, size_t stride) {
    Tensor t({1, 3, height, width});
    const size_t plane = static_cast<size_t>(width) * height;
    for (int y = 0; y < height; ++y) {
        const uint8_t *row = rgb + static_cast<size_t>(y) * stride;
        for (int x = 0; x < width; ++x)
            for (int c = 0; c < 3; ++c) {
                float v = static_cast<float>(row[3 * x + c]) / 255.0f;  // np.array(img) / 255.0 in float32
                t.values[c * plane + static_cast<size_t>(y) * width + x] = 2.0f * v - 1.0f;
            }
    }
    return t;
}

void pixels_to_unit(const Tensor &image, float *out) {
    const int64_t b = image.shape[0], h = image.shape[2], w = image.shape[3];
    const size_t plane = static_cast<size_t>(h * w);
    for (int64_t i = 0; i < b; ++i)
        for (int64_t c = 0; c < 3; ++c)
            for (size_t p = 0; p < plane; ++p) {
                float v = image.values[(i * 3 + c) * plane + p] / 2.0f + 0.5f;
                out[(i * plane + p) * 3 + c] = std::min(std::max(v, 0.0f), 1.0f);
            }
}

void unit_to_rgb8(const float *unit, int batch, int width, int height, uint8_t *out, size_t stride) {
    for (int64_t r = 0; r < static_cast<int64_t>(batch) * height; ++r) {
        const float *src = unit + r * width * 3;
        uint8_t *dst = out + r * stride;
        for (int i = 0; i < width * 3; ++i) {
            float v = std::nearbyint(src[i] * 255.0f);  // np.round: half to even
            dst[i] = v >= 0.0f ? static_cast<uint8_t>(std::min(v, 255.0f)) : 0;  // NaN -> 0, no UB
        }
    }
}

}  // namespace cyclediff
