// images.h: RGB8 <-> model tensors, numerically as runtime/core/images.py for images already a multiple in size.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor.h"

namespace cyclediff {

// INVALID_ARGUMENT / IMAGE_SIZE unless width, height > 0, stride >= 3·width and both sides multiples of
// `multiple` (no resampling here: resize on the host first).
void image_check(const uint8_t *rgb, int width, int height, size_t stride, int multiple);
// RGB8 rows -> (1, 3, H, W) float32: 2·(v/255) − 1.
Tensor image_to_pixels(const uint8_t *rgb, int width, int height, size_t stride);
// VAE output (B, 3, H, W) -> (B, H, W, 3) float32 (x/2 + 0.5).clamp(0, 1)  (output_type="np").
void pixels_to_unit(const Tensor &image, float *out);
// (B, H, W, 3) in [0, 1] -> RGB8 rows: round-half-even(255·x) (PIL conversion of the runtime).
void unit_to_rgb8(const float *unit, int batch, int width, int height, uint8_t *out, size_t stride);

}  // namespace cyclediff
