// schedule.h: DDIM schedule tables from the manifest's scheduler config, as runtime/core/schedule.py computes them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cyclediff {

// Elementwise float32 sqrt in place. nullptr: std::sqrt (correctly rounded). torch's CPU sqrt goes through
// MKL's vector math and is up to 1 ulp off that; the torch executor passes its own for bit-equal tables.
using SqrtFn = void (*)(float *values, size_t count);

struct SchedulerConfig {
    int num_train_timesteps = 1000;
    double beta_start = 0.00085;
    double beta_end = 0.012;
    std::string beta_schedule = "scaled_linear";  // linear | scaled_linear | squaredcos_cap_v2
    bool has_trained_betas = false;
    std::vector<double> trained_betas;
    bool set_alpha_to_one = false;
    int steps_offset = 1;
    std::string timestep_spacing = "leading";  // leading | trailing | linspace

    // SchedulerConfig.to_json() -> config; UNSUPPORTED for schedules the runtime does not serve.
    static SchedulerConfig from_json(const nlohmann::json &j);
    // ᾱ (num_train_timesteps,) by DDIMScheduler's float32 ops (torch.linspace, cumprod in double).
    std::vector<float> alphas_cumprod() const;
    // DDIMScheduler.set_timesteps' integer timesteps, highest first.
    std::vector<int64_t> timesteps(int num_inference_steps) const;
};

// min(int(N * strength), N) with Python's float truncation.
int num_edit_steps(int num_inference_steps, double strength);
// INVALID_ARGUMENT for N < 1, strength outside (0, 1], eta < 0 or not finite.
void check_schedule_args(int num_inference_steps, double strength, double eta);

// Per-step float32 coefficients of one edit, each (K,), K = steps the edit runs.
struct StepTable {
    std::vector<int64_t> timesteps;  // (K,) e.g. 781 ... 1
    std::vector<float> sqrt_a;       // sqrt(ᾱ_t)
    std::vector<float> sqrt_b;       // sqrt(1 − ᾱ_t)
    std::vector<float> sqrt_a_prev;  // sqrt(ᾱ_prev)
    std::vector<float> sigma;        // eta · sqrt(var_t)
    std::vector<float> sigma_den;    // sqrt(var_t) · eta (the reference's divisor)
    std::vector<float> dir_coef;     // sqrt(1 − ᾱ_prev − σ²)
    std::vector<bool> draws;         // does the source posterior draw noise at this step
    float a_t0 = 0.0f;               // ᾱ at the first step
    double eta = 0.0;
    int num_inference_steps = 0;
    double strength = 0.0;

    int num_steps() const { return static_cast<int>(timesteps.size()); }
    int num_draws() const;

    static StepTable build(const SchedulerConfig &cfg, int num_inference_steps, double strength, double eta,
                           SqrtFn sqrt_fn = nullptr);
};

}  // namespace cyclediff
