// latent_code.h: the DPM-Encoder's code (x_T, z_K … z_1) and its safetensors file, shared with Python.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor.h"

namespace cyclediff {

constexpr const char *kLatentCodeFormat = "cyclediff.latent_code/1";

struct LatentCode {
    Tensor x_T;                         // (B, C, h, w) the noised latents both branches start from
    Tensor noises;                      // (K, B, C, h, w) z recorded at each step (zeros when eta = 0)
    std::vector<int64_t> timesteps;     // (K,)
    int num_inference_steps = 0;
    double strength = 0.0;
    double eta = 0.0;
    std::vector<std::string> source_prompts;  // (B,)
    double source_guidance_scale = 1.0;
    std::string engine_digest;          // Manifest.digest of the export that encoded it

    int64_t batch() const { return x_T.shape.empty() ? 0 : x_T.shape[0]; }
    // CODE_MISMATCH unless the shapes and metadata agree with each other.
    void check_consistent() const;
    // runtime/core/latent_code.py LatentCode.save / load: safetensors with "format" and "meta" metadata.
    void save(const std::string &path) const;
    static LatentCode load(const std::string &path);
};

}  // namespace cyclediff
