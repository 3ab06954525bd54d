// stub_executor.cpp: a cheap deterministic executor for the test build (no libtorch): exercises every
// shape and code path of the engine and the C ABI, also under AddressSanitizer.
#include <cmath>

#include "error.h"
#include "dtype.h"
#include "executor.h"

namespace cyclediff {

namespace {

class StubExecutor : public Executor {
public:
    explicit StubExecutor(const Dims &dims) : dims_(dims) {}

    std::string name() const override { return "stub"; }

    void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) override {
        const int64_t b = hidden.shape[0], l = hidden.shape[1], t = hidden.shape[2], d = hidden.shape[3];
        for (int64_t i = 0; i < b * l * t * d; ++i) {
            const int64_t tok = ids[static_cast<size_t>((i / (l * t * d)) * t + (i / d) % t)];
            hidden.values[i] = 0.5f * std::sin(0.01f * tok + (i / (t * d)) % l + 0.1f * (i % d));
        }
    }

    void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) override {
        const size_t per = sample.row_size(), emb_per = emb.row_size();
        for (int64_t j = 0; j < sample.shape[0]; ++j) {
            const float e = emb.row(j)[j % emb_per], t = timestep.values[j] / 1000.0f;
            for (size_t i = 0; i < per; ++i) noise_pred.row(j)[i] = 0.1f * sample.row(j)[i] + 0.05f * t + 0.02f * e;
        }
    }

    void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) override {
        const int64_t c = mean.shape[1], h = mean.shape[2], w = mean.shape[3], s = dims_.vae_scale;
        const int64_t iw = image.shape[3], plane = image.shape[2] * iw;
        for (int64_t i = 0; i < mean.shape[0] * c * h * w; ++i) {
            const int64_t x = i % w, y = (i / w) % h, ch = (i / (w * h)) % c, b = i / (c * h * w);
            mean.values[i] = image.values[(b * 3 + ch % 3) * plane + y * s * iw + x * s];
            std_dev.values[i] = 0.1f;
        }
    }

    void vae_decoder(const Tensor &latent, Tensor &image) override {
        const int64_t c = latent.shape[1], h = latent.shape[2], w = latent.shape[3], s = dims_.vae_scale;
        const int64_t ih = h * s, iw = w * s;
        for (int64_t i = 0; i < image.shape[0] * 3 * ih * iw; ++i) {
            const int64_t x = i % iw, y = (i / iw) % ih, ch = (i / (iw * ih)) % 3, b = i / (3 * ih * iw);
            image.values[i] = std::tanh(latent.values[((b * c + ch % c) * h + y / s) * w + x / s]);
        }
    }

private:
    Dims dims_;
};

}  // namespace

// The test build's executor_open: "stub" (or "auto"), checking the torchscript files like the real one.
std::unique_ptr<Executor> executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    require(options.name == "auto" || options.name == "stub", CYCLEDIFF_ERR_EXECUTOR,
            "the test build has only the \"stub\" executor, not \"" + options.name + "\"");
    resolve_dtype("stub", options.dtype);  // the dtype rules of the real executors (fp32 only here)
    manifest.verify(manifest.executor_files("torchscript"), options.verify_hashes);
    return std::make_unique<StubExecutor>(manifest.dims);
}

}  // namespace cyclediff
