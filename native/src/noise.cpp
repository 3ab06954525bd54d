// noise.cpp: injected draws and the portable generator.
#include "noise.h"

#include <cmath>
#include <cstring>
#include <random>

#include "error.h"

namespace cyclediff {

namespace {

class InjectedNoise : public NoiseSource {
public:
    explicit InjectedNoise(const cyclediff_draws &d) : d_(d) {}

    void randn(Tensor &out) override {
        const float *src = nullptr;
        if (calls_ == 0) src = take(d_.n_vae, d_.n_vae_count, 0, out.size(), "n_vae");
        else if (calls_ == 1) src = take(d_.n0, d_.n0_count, 0, out.size(), "n0");
        else src = take(d_.steps, d_.steps_count, steps_used_, out.size(), "steps");
        if (calls_ >= 2) steps_used_ += out.size();
        ++calls_;
        std::memcpy(out.data(), src, out.size() * sizeof(float));
    }

private:
    static const float *take(const float *p, size_t count, size_t offset, size_t n, const char *what) {
        require(p != nullptr && offset + n <= count, CYCLEDIFF_ERR_INVALID_ARGUMENT,
                std::string("draws.") + what + " holds " + std::to_string(count) + " floats; the edit needs " +
                    std::to_string(offset + n) + " (see cyclediff_draws_count)");
        return p + offset;
    }

    cyclediff_draws d_;
    int calls_ = 0;
    size_t steps_used_ = 0;
};

class PortableNoise : public NoiseSource {
public:
    explicit PortableNoise(uint64_t seed) : rng_(seed) {}

    void randn(Tensor &out) override {
        std::uniform_real_distribution<double> uniform(0.0, 1.0);
        for (size_t i = 0; i < out.size(); i += 2) {
            double u1 = 1.0 - uniform(rng_), u2 = uniform(rng_);
            double r = std::sqrt(-2.0 * std::log(u1));
            out.values[i] = static_cast<float>(r * std::cos(2 * M_PI * u2));
            if (i + 1 < out.size()) out.values[i + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2));
        }
    }

private:
    std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<NoiseSource> noise_injected(const cyclediff_draws &draws) {
    return std::make_unique<InjectedNoise>(draws);
}

std::unique_ptr<NoiseSource> noise_portable(uint64_t seed) { return std::make_unique<PortableNoise>(seed); }

}  // namespace cyclediff
