// engine.cpp: runtime/engine.py's encode / decode for one image and num_images_per_prompt copies.
#include "engine.h"

#include <cmath>

#include "decoder.h"
#include "error.h"
#include "files.h"
#include "images.h"
#include "params.h"
#include "unicode.h"

namespace cyclediff {

Engine::Engine(Manifest manifest, std::unique_ptr<Executor> executor, Tokenizer tokenizer, int max_batch)
    : manifest_(std::move(manifest)),
      scheduler_(SchedulerConfig::from_json(manifest_.scheduler)),
      executor_(std::move(executor)),
      executor_name_(executor_->name()),
      prompts_(std::move(tokenizer), *executor_, manifest_.dims),
      encoder_(*executor_, max_batch) {}

std::unique_ptr<Engine> Engine::open(const std::string &folder, const cyclediff_engine_options &options) {
    require(options.max_batch >= 1, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "max_batch must be >= 1, got " + std::to_string(options.max_batch));
    require(options.num_threads >= 0, CYCLEDIFF_ERR_INVALID_ARGUMENT, "num_threads must be >= 0");
    Manifest manifest = Manifest::load(folder);
    manifest.verify_tokenizer(options.verify_hashes != 0);
    SchedulerConfig::from_json(manifest.scheduler);  // refuse unsupported schedules before loading models
    Tokenizer tokenizer = Tokenizer::load(path_join(folder, "tokenizer"), manifest.dims.text_len);
    ExecutorOptions eo;
    eo.name = options.executor != nullptr ? options.executor : "auto";
    eo.num_threads = options.num_threads;
    eo.dtype = options.dtype != nullptr ? options.dtype : "";
    eo.verify_hashes = options.verify_hashes != 0;
    std::unique_ptr<Executor> executor = executor_open(manifest, eo);
    return std::unique_ptr<Engine>(new Engine(std::move(manifest), std::move(executor), std::move(tokenizer),
                                              options.max_batch));
}

StepTable Engine::table(int steps, double strength, double eta) const {
    return StepTable::build(scheduler_, steps, strength, eta, executor_->float_sqrt());
}

void Engine::draws_count(int width, int height, const cyclediff_params &params, size_t counts[3]) const {
    params_check(params);
    require(width > 0 && height > 0, CYCLEDIFF_ERR_INVALID_ARGUMENT, "image size is empty");
    require(width % image_multiple() == 0 && height % image_multiple() == 0, CYCLEDIFF_ERR_IMAGE_SIZE,
            "image sides must be multiples of " + std::to_string(image_multiple()));
    const Dims &d = manifest_.dims;
    const size_t lat = static_cast<size_t>(d.latent_channels) * (height / d.vae_scale) * (width / d.vae_scale);
    const size_t b = static_cast<size_t>(params.num_images_per_prompt);
    counts[0] = lat;
    counts[1] = b * lat;
    counts[2] = static_cast<size_t>(table(params.num_inference_steps, params.strength, params.eta).num_draws()) * b * lat;
}

void Engine::check_draws(const cyclediff_draws &draws, const ImageView &image, const cyclediff_params &params) const {
    size_t want[3];
    draws_count(image.width, image.height, params, want);
    const size_t got[3] = {draws.n_vae_count, draws.n0_count, draws.steps_count};
    const char *names[3] = {"n_vae", "n0", "steps"};
    for (int i = 0; i < 3; ++i)
        require(got[i] == want[i], CYCLEDIFF_ERR_INVALID_ARGUMENT,
                std::string("draws.") + names[i] + "_count is " + std::to_string(got[i]) + ", the edit needs " +
                    std::to_string(want[i]) + " (cyclediff_draws_count)");
}

Tensor Engine::clean_latents(const ImageView &image, int64_t batch, NoiseSource &noise) {
    const Tensor pixels = image_to_pixels(image.rgb, image.width, image.height, image.stride);
    const Dims &d = manifest_.dims;
    Tensor mean({1, d.latent_channels, image.height / d.vae_scale, image.width / d.vae_scale});
    Tensor std_dev(mean.shape), n(mean.shape), one(mean.shape);
    executor_->vae_encoder(pixels, mean, std_dev);
    noise.randn(n);
    const float sf = static_cast<float>(manifest_.vae_scaling_factor);
    for (size_t i = 0; i < one.size(); ++i) {
        float v = std_dev.values[i] * n.values[i];
        v = mean.values[i] + v;
        one.values[i] = sf * v;
    }
    return PromptEncoder::repeat(one, batch);  // x0 (B, C, h, w): every item the same posterior sample
}

Conditioning Engine::text(const std::string &prompt, int64_t batch, int clip_skip, bool guided, double scale) {
    Conditioning c;
    c.cond = PromptEncoder::repeat(prompts_.encode(prompt, clip_skip), batch);
    c.guided = guided;
    if (guided) c.uncond = prompts_.encode("", -1);  // never clip-skipped, as the reference
    c.guidance_scale = static_cast<float>(scale);
    return c;
}

LatentCode Engine::encode(const ImageView &image, const std::string &source_prompt, const cyclediff_params &params,
                          const cyclediff_draws *draws, bool guided) {
    params_check(params);
    prompts_.check_clip_skip(params.clip_skip);
    utf8_decode(source_prompt);  // INVALID_ARGUMENT now, even where eta = 0 never tokenizes it
    image_check(image.rgb, image.width, image.height, image.stride, image_multiple());
    if (draws != nullptr) check_draws(*draws, image, params);
    const StepTable t = table(params.num_inference_steps, params.strength, params.eta);
    const int64_t b = params.num_images_per_prompt;
    std::unique_ptr<NoiseSource> noise = draws ? noise_injected(*draws) : executor_->seeded_noise(params.seed);
    const Tensor x0 = clean_latents(image, b, *noise);
    LatentCode code;
    code.x_T = encoder_.noised(x0, t, *noise);
    const Tensor xs = encoder_.trajectory(x0, code.x_T, t, *noise);
    Shape zshape{t.num_steps()};
    zshape.insert(zshape.end(), x0.shape.begin(), x0.shape.end());
    code.noises = Tensor(zshape);
    if (params.eta > 0) {  // at eta = 0 the decoder adds no noise: no source UNet calls needed
        const Conditioning src = text(source_prompt, b, params.clip_skip, guided, params.source_guidance_scale);
        code.noises = encoder_.record(xs, encoder_.source_eps(xs, t, src), t);
    }
    code.timesteps = t.timesteps;
    code.num_inference_steps = params.num_inference_steps;
    code.strength = params.strength;
    code.eta = params.eta;
    code.source_prompts.assign(static_cast<size_t>(b), source_prompt);
    code.source_guidance_scale = params.source_guidance_scale;
    code.engine_digest = manifest_.digest;
    return code;
}

void Engine::check_code(const LatentCode &code) const {
    code.check_consistent();
    require(code.engine_digest == manifest_.digest || code.engine_digest == manifest_.legacy_digest,
            CYCLEDIFF_ERR_CODE_MISMATCH,
            "this latent code was made by another engine export; encode the image again with this engine");
    const Dims &d = manifest_.dims;
    const int64_t h = code.x_T.shape[2], w = code.x_T.shape[3];
    require(code.x_T.shape[1] == d.latent_channels && h > 0 && w > 0 && h % d.unet_downscale == 0 &&
                w % d.unet_downscale == 0,
            CYCLEDIFF_ERR_CODE_MISMATCH, "latent code shape " + shape_str(code.x_T.shape) + " does not fit this engine");
}

Tensor Engine::decode(const LatentCode &code, const std::string &prompt, const cyclediff_params &params) {
    require(std::isfinite(params.guidance_scale), CYCLEDIFF_ERR_INVALID_ARGUMENT, "guidance_scale must be finite");
    prompts_.check_clip_skip(params.clip_skip);
    check_code(code);
    const StepTable t = table(code.num_inference_steps, code.strength, code.eta);
    require(t.timesteps == code.timesteps, CYCLEDIFF_ERR_CODE_MISMATCH,
            "latent code timesteps differ from this engine's schedule; encode the image again with this engine");
    const bool guided = params.guidance_scale > 1;
    const Conditioning target = text(prompt, code.batch(), params.clip_skip, guided, params.guidance_scale);
    Tensor latents = ddim_decode(*executor_, code.x_T, code.eta > 0 ? &code.noises : nullptr, t, target);
    const float sf = static_cast<float>(manifest_.vae_scaling_factor);
    for (float &v : latents.values) v = v / sf;
    const int vs = manifest_.dims.vae_scale;
    Tensor image({code.batch(), 3, code.x_T.shape[2] * vs, code.x_T.shape[3] * vs});
    executor_->vae_decoder(latents, image);
    return image;
}

}  // namespace cyclediff
