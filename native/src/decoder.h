// decoder.h: the DDIM loop from x_T with the target prompt, injecting the recorded noises.
#pragma once

#include "conditioning.h"
#include "executor.h"
#include "schedule.h"

namespace cyclediff {

// x_T (B, C, h, w), noises (K, B, C, h, w) or nullptr (eta = 0) -> final latents (B, C, h, w).
Tensor ddim_decode(Executor &executor, const Tensor &x_T, const Tensor *noises, const StepTable &table,
                   const Conditioning &text);

}  // namespace cyclediff
