// ddim.cpp: one rounding per torch op (built with -ffp-contract=off), so results match torch's kernels.
#include "ddim.h"

namespace cyclediff {

void ddim_guide(float *eps, const float *uncond, const float *cond, float scale, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        float tmp = cond[i] - uncond[i];
        tmp = tmp * scale;
        eps[i] = uncond[i] + tmp;
    }
}

void ddim_posterior_step(float *out, const float *xs, const float *x0, float sqrt_a, float sqrt_b,
                         float sqrt_a_prev, float dir_coef, float sigma, const float *noise, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        float tmp = x0[i] * sqrt_a;
        tmp = xs[i] - tmp;
        tmp = tmp / sqrt_b;
        tmp = tmp * dir_coef;
        float o = x0[i] * sqrt_a_prev;
        o = o + tmp;
        tmp = noise[i] * sigma;
        out[i] = o + tmp;
    }
}

static inline float mean_at(float x, float eps, float sqrt_a, float sqrt_b, float sqrt_a_prev, float dir_coef) {
    float x0 = eps * sqrt_b;  // predicted x0
    x0 = x - x0;
    x0 = x0 / sqrt_a;
    float mu = x0 * sqrt_a_prev;
    float d = eps * dir_coef;
    return mu + d;
}

void ddim_mean(float *out, const float *x, const float *eps, float sqrt_a, float sqrt_b, float sqrt_a_prev,
               float dir_coef, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = mean_at(x[i], eps[i], sqrt_a, sqrt_b, sqrt_a_prev, dir_coef);
}

void ddim_recorded_noise(float *z, const float *xs_prev, const float *xs, const float *eps, float sqrt_a,
                         float sqrt_b, float sqrt_a_prev, float dir_coef, float sigma_den, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        float mu = mean_at(xs[i], eps[i], sqrt_a, sqrt_b, sqrt_a_prev, dir_coef);
        z[i] = (xs_prev[i] - mu) / sigma_den;
    }
}

void ddim_step(float *x, const float *eps, const float *z, float sqrt_a, float sqrt_b, float sqrt_a_prev,
               float dir_coef, float sigma, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        float mu = mean_at(x[i], eps[i], sqrt_a, sqrt_b, sqrt_a_prev, dir_coef);
        x[i] = z == nullptr ? mu : mu + z[i] * sigma;
    }
}

}  // namespace cyclediff
