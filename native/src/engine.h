// engine.h: one loaded export directory: encode, decode and edit as runtime/engine.py (batch = one image).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "cyclediff.h"
#include "encoder.h"
#include "executor.h"
#include "latent_code.h"
#include "manifest.h"
#include "prompts.h"
#include "schedule.h"

namespace cyclediff {

struct ImageView {
    const uint8_t *rgb = nullptr;  // height rows of `stride` bytes, RGB8
    int width = 0;
    int height = 0;
    size_t stride = 0;
};

class Engine {
public:
    static std::unique_ptr<Engine> open(const std::string &folder, const cyclediff_engine_options &options);

    // The DPM-Encoder. guided: run the source branch with classifier-free guidance.
    LatentCode encode(const ImageView &image, const std::string &source_prompt, const cyclediff_params &params,
                      const cyclediff_draws *draws, bool guided);
    // The DDIM loop with the target prompt, then the VAE decoder: (B, 3, H, W) in about [-1, 1].
    Tensor decode(const LatentCode &code, const std::string &prompt, const cyclediff_params &params);

    // Counts of the three draws an encode of a width x height image takes (cyclediff_draws_count).
    void draws_count(int width, int height, const cyclediff_params &params, size_t counts[3]) const;
    void check_code(const LatentCode &code) const;
    int image_multiple() const { return manifest_.dims.vae_scale * manifest_.dims.unet_downscale; }
    const Manifest &manifest() const { return manifest_; }
    const std::string &executor_name() const { return executor_name_; }
    std::string executor_dtype() const { return executor_->dtype(); }
    std::mutex &mutex() { return mutex_; }

private:
    Engine(Manifest manifest, std::unique_ptr<Executor> executor, Tokenizer tokenizer, int max_batch);
    StepTable table(int steps, double strength, double eta) const;
    void check_draws(const cyclediff_draws &draws, const ImageView &image, const cyclediff_params &params) const;
    Tensor clean_latents(const ImageView &image, int64_t batch, NoiseSource &noise);
    Conditioning text(const std::string &prompt, int64_t batch, int clip_skip, bool guided, double scale);

    Manifest manifest_;
    SchedulerConfig scheduler_;
    std::unique_ptr<Executor> executor_;
    std::string executor_name_;
    PromptEncoder prompts_;
    DpmEncoder encoder_;
    std::mutex mutex_;  // one call at a time per engine
};

}  // namespace cyclediff
