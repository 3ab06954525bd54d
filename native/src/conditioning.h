// conditioning.h: the text conditioning of one branch (source or target) of an edit.
#pragma once

#include "tensor.h"

namespace cyclediff {

struct Conditioning {
    Tensor cond;             // (B, 77, D)
    bool guided = false;     // classifier-free guidance on: uncond is set
    Tensor uncond;           // (1, 77, D) the "" prompt, never clip-skipped
    float guidance_scale = 1.0f;
};

}  // namespace cyclediff
