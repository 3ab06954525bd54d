// encoder.h: the DPM-Encoder: clean latents x0 -> (x_T, recorded noises), UNet calls batched over steps.
#pragma once

#include "conditioning.h"
#include "executor.h"
#include "noise.h"
#include "schedule.h"

namespace cyclediff {

class DpmEncoder {
public:
    DpmEncoder(Executor &executor, int max_batch);

    // x_T = sqrt(ᾱ_t0)·x0 + sqrt(1−ᾱ_t0)·n0, drawing n0 (B, C, h, w).
    Tensor noised(const Tensor &x0, const StepTable &table, NoiseSource &noise) const;
    // (K+1, B, C, h, w): xs_0 = x_T, xs_{i+1} ~ q(· | xs_i, x0), = x0 where no draw.
    Tensor trajectory(const Tensor &x0, const Tensor &x_T, const StepTable &table, NoiseSource &noise) const;
    // ε_src (K, B, C, h, w) from ceil(K·B·g / max_batch) UNet calls.
    Tensor source_eps(const Tensor &xs, const StepTable &table, const Conditioning &text) const;
    // z (K, B, C, h, w): the noise that makes each DDIM step land on the trajectory.
    Tensor record(const Tensor &xs, const Tensor &eps, const StepTable &table) const;

private:
    Tensor unet_batched(const Tensor &xs, const StepTable &table, const Conditioning &text, int groups) const;

    Executor &executor_;
    int max_batch_;
};

}  // namespace cyclediff
