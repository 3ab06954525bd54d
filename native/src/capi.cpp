// capi.cpp: the C ABI. Every entry point validates its pointers and catches every exception.
#include <cstring>
#include <new>
#include <string>

#include "cyclediff.h"
#include "engine.h"
#include "error.h"
#include "images.h"
#include "params.h"

struct cyclediff_engine {
    std::unique_ptr<cyclediff::Engine> impl;
    std::string executor;
    std::string dtype;
    std::string digest;
};

struct cyclediff_code {
    cyclediff::LatentCode impl;
};

namespace {

using cyclediff::require;

thread_local std::string g_last_error;

template <typename F>
cyclediff_status guarded(F &&body) noexcept {
    try {
        body();
        g_last_error.clear();
        return CYCLEDIFF_OK;
    } catch (const cyclediff::Error &e) {
        g_last_error = e.what();
        return e.status();
    } catch (const std::bad_alloc &) {
        g_last_error = "out of memory";
        return CYCLEDIFF_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        g_last_error = std::string("internal error: ") + e.what();
        return CYCLEDIFF_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error: unknown exception";
        return CYCLEDIFF_ERR_INTERNAL;
    }
}

void need(const void *p, const char *what) {
    require(p != nullptr, CYCLEDIFF_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

cyclediff_params params_or_default(const cyclediff_params *p) {
    return p != nullptr ? *p : cyclediff::params_default();
}

cyclediff::ImageView image_view(const uint8_t *rgb, int32_t width, int32_t height, size_t stride) {
    need(rgb, "rgb");
    return cyclediff::ImageView{rgb, width, height, stride};
}

struct OutputDims {
    int b, w, h;
};

// Checked before any model runs, so a wrong buffer fails fast.
void check_unit_out(const OutputDims &d, const float *out, size_t out_count) {
    need(out, "out");
    const size_t want = static_cast<size_t>(d.b) * d.h * d.w * 3;
    require(out_count >= want, CYCLEDIFF_ERR_BUFFER_TOO_SMALL,
            "out holds " + std::to_string(out_count) + " floats; the result needs " + std::to_string(want));
}

void check_rgb8_out(const OutputDims &d, const uint8_t *out, size_t out_size, size_t out_stride) {
    need(out, "out");
    require(out_stride >= static_cast<size_t>(3 * d.w), CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "out_stride " + std::to_string(out_stride) + " is less than 3 x width = " + std::to_string(3 * d.w));
    size_t want = 0;
    const bool overflow = __builtin_mul_overflow(static_cast<size_t>(d.b) * static_cast<size_t>(d.h), out_stride, &want);
    require(!overflow && out_size >= want, CYCLEDIFF_ERR_BUFFER_TOO_SMALL,
            "out holds " + std::to_string(out_size) + " bytes; " + std::to_string(d.b) + " images of " +
                std::to_string(d.w) + "x" + std::to_string(d.h) + " at stride " + std::to_string(out_stride) +
                " need " + std::to_string(want));
}

void write_rgb8(const cyclediff::Tensor &image, uint8_t *out, size_t out_stride) {
    const int b = static_cast<int>(image.shape[0]), h = static_cast<int>(image.shape[2]), w = static_cast<int>(image.shape[3]);
    std::vector<float> unit(image.size());
    cyclediff::pixels_to_unit(image, unit.data());
    cyclediff::unit_to_rgb8(unit.data(), b, w, h, out, out_stride);
}

OutputDims decode_dims(const cyclediff_engine *engine, const cyclediff_code *code) {
    need(engine, "engine");
    need(code, "code");
    engine->impl->check_code(code->impl);
    const int vs = engine->impl->manifest().dims.vae_scale;
    return OutputDims{static_cast<int>(code->impl.batch()), static_cast<int>(code->impl.x_T.shape[3] * vs),
                      static_cast<int>(code->impl.x_T.shape[2] * vs)};
}

OutputDims edit_dims(int32_t width, int32_t height, const cyclediff_params *params) {
    const cyclediff_params p = params_or_default(params);
    cyclediff::params_check(p);
    require(width > 0 && height > 0, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "image size " + std::to_string(width) + "x" + std::to_string(height) + " is empty");
    return OutputDims{p.num_images_per_prompt, width, height};
}

cyclediff::Tensor run_decode(cyclediff_engine *engine, const cyclediff_code *code, const char *prompt,
                             const cyclediff_params *params) {
    need(engine, "engine");
    need(code, "code");
    need(prompt, "prompt");
    std::lock_guard<std::mutex> lock(engine->impl->mutex());
    return engine->impl->decode(code->impl, prompt, params_or_default(params));
}

cyclediff::Tensor run_edit(cyclediff_engine *engine, const uint8_t *rgb, int32_t width, int32_t height, size_t stride,
                           const char *source_prompt, const char *prompt, const cyclediff_params *params,
                           const cyclediff_draws *draws) {
    need(engine, "engine");
    need(source_prompt, "source_prompt");
    need(prompt, "prompt");
    const cyclediff_params p = params_or_default(params);
    cyclediff::params_check(p);
    const bool guided = p.guidance_scale > 1 && p.source_guidance_scale != 1;
    std::lock_guard<std::mutex> lock(engine->impl->mutex());
    cyclediff::LatentCode code = engine->impl->encode(image_view(rgb, width, height, stride), source_prompt, p, draws, guided);
    return engine->impl->decode(code, prompt, p);
}

}  // namespace

extern "C" {

const char *cyclediff_version(void) { return "0.1.0"; }

const char *cyclediff_last_error(void) { return g_last_error.c_str(); }

const char *cyclediff_status_name(cyclediff_status status) {
    static const char *const names[] = {
        "CYCLEDIFF_OK", "CYCLEDIFF_ERR_INVALID_ARGUMENT", "CYCLEDIFF_ERR_BUFFER_TOO_SMALL", "CYCLEDIFF_ERR_IMAGE_SIZE",
        "CYCLEDIFF_ERR_NOT_AN_EXPORT", "CYCLEDIFF_ERR_SCHEMA_VERSION", "CYCLEDIFF_ERR_MANIFEST",
        "CYCLEDIFF_ERR_FILE_MISSING", "CYCLEDIFF_ERR_HASH_MISMATCH", "CYCLEDIFF_ERR_TOKENIZER",
        "CYCLEDIFF_ERR_UNSUPPORTED", "CYCLEDIFF_ERR_EXECUTOR", "CYCLEDIFF_ERR_CODE_MISMATCH", "CYCLEDIFF_ERR_IO",
        "CYCLEDIFF_ERR_FORMAT", "CYCLEDIFF_ERR_OUT_OF_MEMORY", "CYCLEDIFF_ERR_INTERNAL"};
    const int i = static_cast<int>(status);
    return i >= 0 && i < static_cast<int>(sizeof names / sizeof names[0]) ? names[i] : "CYCLEDIFF_ERR_UNKNOWN";
}

cyclediff_params cyclediff_params_default(void) { return cyclediff::params_default(); }

cyclediff_engine_options cyclediff_engine_options_default(void) { return cyclediff::engine_options_default(); }

cyclediff_status cyclediff_engine_create(const char *export_dir, const cyclediff_engine_options *options,
                                         cyclediff_engine **out_engine) {
    return guarded([&] {
        need(out_engine, "out_engine");
        *out_engine = nullptr;
        need(export_dir, "export_dir");
        const cyclediff_engine_options o = options ? *options : cyclediff::engine_options_default();
        auto engine = std::make_unique<cyclediff_engine>();
        engine->impl = cyclediff::Engine::open(export_dir, o);
        engine->executor = engine->impl->executor_name();
        engine->dtype = engine->impl->executor_dtype();
        engine->digest = engine->impl->manifest().digest;
        *out_engine = engine.release();
    });
}

void cyclediff_engine_free(cyclediff_engine *engine) {
    guarded([&] { delete engine; });
}

cyclediff_status cyclediff_engine_get_info(const cyclediff_engine *engine, cyclediff_engine_info *out) {
    return guarded([&] {
        need(engine, "engine");
        need(out, "out");
        const cyclediff::Dims &d = engine->impl->manifest().dims;
        *out = cyclediff_engine_info{d.vae_scale, engine->impl->image_multiple(), d.latent_channels, d.text_states,
                                     engine->impl->manifest().sample_size, engine->executor.c_str(), engine->digest.c_str(),
                                     engine->dtype.c_str()};
    });
}

cyclediff_status cyclediff_draws_count(const cyclediff_engine *engine, int32_t width, int32_t height,
                                       const cyclediff_params *params, size_t *n_vae_count, size_t *n0_count,
                                       size_t *steps_count) {
    return guarded([&] {
        need(engine, "engine");
        need(n_vae_count, "n_vae_count");
        need(n0_count, "n0_count");
        need(steps_count, "steps_count");
        size_t counts[3];
        engine->impl->draws_count(width, height, params_or_default(params), counts);
        *n_vae_count = counts[0];
        *n0_count = counts[1];
        *steps_count = counts[2];
    });
}

cyclediff_status cyclediff_encode(cyclediff_engine *engine, const uint8_t *rgb, int32_t width, int32_t height,
                                  size_t stride, const char *source_prompt, const cyclediff_params *params,
                                  const cyclediff_draws *draws, cyclediff_code **out_code) {
    return guarded([&] {
        need(out_code, "out_code");
        *out_code = nullptr;
        need(engine, "engine");
        need(source_prompt, "source_prompt");
        const cyclediff_params p = params_or_default(params);
        std::lock_guard<std::mutex> lock(engine->impl->mutex());
        auto code = std::make_unique<cyclediff_code>();
        code->impl = engine->impl->encode(image_view(rgb, width, height, stride), source_prompt, p, draws,
                                          p.source_guidance_scale != 1);
        *out_code = code.release();
    });
}

cyclediff_status cyclediff_output_size(const cyclediff_engine *engine, const cyclediff_code *code, int32_t *batch,
                                       int32_t *width, int32_t *height) {
    return guarded([&] {
        need(batch, "batch");
        need(width, "width");
        need(height, "height");
        const OutputDims d = decode_dims(engine, code);
        *batch = d.b;
        *width = d.w;
        *height = d.h;
    });
}

cyclediff_status cyclediff_decode(cyclediff_engine *engine, const cyclediff_code *code, const char *prompt,
                                  const cyclediff_params *params, uint8_t *out, size_t out_size, size_t out_stride) {
    return guarded([&] {
        check_rgb8_out(decode_dims(engine, code), out, out_size, out_stride);
        write_rgb8(run_decode(engine, code, prompt, params), out, out_stride);
    });
}

cyclediff_status cyclediff_decode_f32(cyclediff_engine *engine, const cyclediff_code *code, const char *prompt,
                                      const cyclediff_params *params, float *out, size_t out_count) {
    return guarded([&] {
        check_unit_out(decode_dims(engine, code), out, out_count);
        cyclediff::pixels_to_unit(run_decode(engine, code, prompt, params), out);
    });
}

cyclediff_status cyclediff_edit(cyclediff_engine *engine, const uint8_t *rgb, int32_t width, int32_t height,
                                size_t stride, const char *source_prompt, const char *prompt,
                                const cyclediff_params *params, const cyclediff_draws *draws, uint8_t *out,
                                size_t out_size, size_t out_stride) {
    return guarded([&] {
        check_rgb8_out(edit_dims(width, height, params), out, out_size, out_stride);
        write_rgb8(run_edit(engine, rgb, width, height, stride, source_prompt, prompt, params, draws), out, out_stride);
    });
}

cyclediff_status cyclediff_edit_f32(cyclediff_engine *engine, const uint8_t *rgb, int32_t width, int32_t height,
                                    size_t stride, const char *source_prompt, const char *prompt,
                                    const cyclediff_params *params, const cyclediff_draws *draws, float *out,
                                    size_t out_count) {
    return guarded([&] {
        check_unit_out(edit_dims(width, height, params), out, out_count);
        cyclediff::pixels_to_unit(run_edit(engine, rgb, width, height, stride, source_prompt, prompt, params, draws), out);
    });
}

void cyclediff_code_free(cyclediff_code *code) {
    guarded([&] { delete code; });
}

cyclediff_status cyclediff_code_get_info(const cyclediff_code *code, cyclediff_code_info *out) {
    return guarded([&] {
        need(code, "code");
        need(out, "out");
        const cyclediff::LatentCode &c = code->impl;
        *out = cyclediff_code_info{static_cast<int32_t>(c.batch()), static_cast<int32_t>(c.x_T.shape[1]),
                                   static_cast<int32_t>(c.x_T.shape[2]), static_cast<int32_t>(c.x_T.shape[3]),
                                   static_cast<int32_t>(c.timesteps.size()), c.num_inference_steps, c.strength, c.eta,
                                   c.source_guidance_scale};
    });
}

static cyclediff_status copy_tensor(const cyclediff_code *code, bool noises, float *out, size_t count) {
    return guarded([&] {
        need(code, "code");
        need(out, "out");
        const cyclediff::Tensor &t = noises ? code->impl.noises : code->impl.x_T;
        require(count >= t.size(), CYCLEDIFF_ERR_BUFFER_TOO_SMALL,
                "out holds " + std::to_string(count) + " floats; the tensor has " + std::to_string(t.size()));
        std::memcpy(out, t.data(), t.size() * sizeof(float));
    });
}

cyclediff_status cyclediff_code_copy_x_T(const cyclediff_code *code, float *out, size_t count) {
    return copy_tensor(code, false, out, count);
}

cyclediff_status cyclediff_code_copy_noises(const cyclediff_code *code, float *out, size_t count) {
    return copy_tensor(code, true, out, count);
}

cyclediff_status cyclediff_code_save(const cyclediff_code *code, const char *path) {
    return guarded([&] {
        need(code, "code");
        need(path, "path");
        code->impl.save(path);
    });
}

cyclediff_status cyclediff_code_load(const char *path, cyclediff_code **out_code) {
    return guarded([&] {
        need(out_code, "out_code");
        *out_code = nullptr;
        need(path, "path");
        auto code = std::make_unique<cyclediff_code>();
        code->impl = cyclediff::LatentCode::load(path);
        *out_code = code.release();
    });
}

}  // extern "C"
