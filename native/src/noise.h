// noise.h: where every random draw comes from: the executor's seeded generator or the caller's own arrays.
#pragma once

#include <cstdint>
#include <memory>

#include "cyclediff.h"
#include "tensor.h"

namespace cyclediff {

class NoiseSource {
public:
    virtual ~NoiseSource() = default;
    // Fill out (its shape set) with N(0, 1) draws, as torch.randn(out.shape, generator=g).
    virtual void randn(Tensor &out) = 0;
};

// The caller's draws (cyclediff_draws) in the runtime's order: n_vae, n0, then one per drawing step.
// The arrays are borrowed; sizes are checked per draw (INVALID_ARGUMENT).
std::unique_ptr<NoiseSource> noise_injected(const cyclediff_draws &draws);

// std::mt19937_64 + Box-Muller: for executors without torch's generator. Not torch's numbers.
std::unique_ptr<NoiseSource> noise_portable(uint64_t seed);

}  // namespace cyclediff
