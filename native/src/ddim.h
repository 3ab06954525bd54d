// ddim.h: CycleDiffusion's DDIM arithmetic on float32 arrays of n elements, in runtime/core/ddim.py's op order.
#pragma once

#include <cstddef>

namespace cyclediff {

// eps = u + scale · (c − u)   (classifier-free guidance)
void ddim_guide(float *eps, const float *uncond, const float *cond, float scale, size_t n);

// Source posterior: out = sqrt(ᾱ_prev)·x0 + dir·(xs − sqrt(ᾱ)·x0)/sqrt(1−ᾱ) + σ·noise
void ddim_posterior_step(float *out, const float *xs, const float *x0, float sqrt_a, float sqrt_b,
                         float sqrt_a_prev, float dir_coef, float sigma, const float *noise, size_t n);

// μ = sqrt(ᾱ_prev)·(x − sqrt(1−ᾱ)·ε)/sqrt(ᾱ) + dir·ε
void ddim_mean(float *out, const float *x, const float *eps, float sqrt_a, float sqrt_b, float sqrt_a_prev,
               float dir_coef, size_t n);

// z = (xs_prev − μ(xs, ε)) / (sqrt(var)·eta)
void ddim_recorded_noise(float *z, const float *xs_prev, const float *xs, const float *eps, float sqrt_a,
                         float sqrt_b, float sqrt_a_prev, float dir_coef, float sigma_den, size_t n);

// Target branch, in place: x ← μ(x, ε) + σ·z; z == nullptr (eta = 0) adds nothing.
void ddim_step(float *x, const float *eps, const float *z, float sqrt_a, float sqrt_b, float sqrt_a_prev,
               float dir_coef, float sigma, size_t n);

}  // namespace cyclediff
