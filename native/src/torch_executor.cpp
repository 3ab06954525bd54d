// torch_executor.cpp: the CPU executor: libtorch (from the PyTorch wheel) running the exported TorchScript
// programs (DIR/torchscript/*.pt, manifest extra.torchscript), plus torch's generator and sqrt.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cstring>

#include "error.h"
#include "executor.h"
#include "files.h"

namespace cyclediff {

namespace {

const char *const kModels[] = {"text_encoder", "unet", "vae_encoder", "vae_decoder"};

std::string first_line(const char *what) {
    std::string s(what);
    return s.substr(0, s.find('\n'));
}

void torch_sqrt(float *values, size_t count) {  // MKL's vector sqrt, as torch's `x ** 0.5` in Python
    c10::InferenceMode guard;
    torch::from_blob(values, {static_cast<int64_t>(count)}, torch::kFloat32).sqrt_();
}

at::Tensor view_of(const Tensor &t) {
    return torch::from_blob(const_cast<float *>(t.data()), t.shape, torch::kFloat32);
}

class TorchNoise : public NoiseSource {
public:
    explicit TorchNoise(uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

    void randn(Tensor &out) override {  // torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        c10::InferenceMode guard;
        at::Tensor t = at::randn(out.shape, gen_, at::TensorOptions().dtype(at::kFloat));
        std::memcpy(out.data(), t.data_ptr<float>(), out.size() * sizeof(float));
    }

private:
    at::Generator gen_;
};

class TorchExecutor : public Executor {
public:
    TorchExecutor(const Manifest &manifest, const std::map<std::string, FileEntry> &files) {
        for (const char *name : kModels) modules_[name] = load(path_join(manifest.folder, files.at(name).file), name);
    }

    std::string name() const override { return "torch"; }

    void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) override {
        const int64_t b = hidden.shape[0];
        at::Tensor in = torch::from_blob(const_cast<int64_t *>(ids.data()), {b, static_cast<int64_t>(ids.size()) / b},
                                         torch::kInt64);
        run("text_encoder", {in}, {&hidden});
    }

    void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) override {
        run("unet", {view_of(sample), view_of(timestep), view_of(emb)}, {&noise_pred});
    }

    void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) override {
        run("vae_encoder", {view_of(image)}, {&mean, &std_dev});
    }

    void vae_decoder(const Tensor &latent, Tensor &image) override { run("vae_decoder", {view_of(latent)}, {&image}); }

    std::unique_ptr<NoiseSource> seeded_noise(uint64_t seed) override { return std::make_unique<TorchNoise>(seed); }

    SqrtFn float_sqrt() const override { return &torch_sqrt; }

private:
    static torch::jit::Module load(const std::string &path, const char *name) {
        try {
            torch::jit::Module m = torch::jit::load(path, torch::kCPU);
            m.eval();
            return m;
        } catch (const std::exception &err) {
            fail(CYCLEDIFF_ERR_EXECUTOR, std::string("cannot load TorchScript program ") + name + " from " + path + ": " +
                                             first_line(err.what()) + "; re-export");
        }
    }

    void run(const char *name, std::vector<torch::jit::IValue> inputs, const std::vector<Tensor *> &outs) {
        std::vector<at::Tensor> results;
        try {
            c10::InferenceMode guard;
            torch::jit::IValue r = modules_.at(name).forward(std::move(inputs));
            if (r.isTuple()) {
                for (const auto &e : r.toTupleRef().elements()) results.push_back(e.toTensor().contiguous());
            } else {
                results.push_back(r.toTensor().contiguous());
            }
        } catch (const std::exception &err) {
            fail(CYCLEDIFF_ERR_EXECUTOR, std::string("TorchScript ") + name + " failed: " + first_line(err.what()));
        }
        require(results.size() == outs.size(), CYCLEDIFF_ERR_EXECUTOR, std::string(name) + " returned the wrong outputs");
        for (size_t i = 0; i < outs.size(); ++i) copy_out(name, results[i], *outs[i]);
    }

    static void copy_out(const char *name, const at::Tensor &r, Tensor &out) {
        require(r.scalar_type() == at::kFloat && Shape(r.sizes().begin(), r.sizes().end()) == out.shape,
                CYCLEDIFF_ERR_EXECUTOR, std::string(name) + " returned shape " +
                                            shape_str(Shape(r.sizes().begin(), r.sizes().end())) + ", expected " +
                                            shape_str(out.shape));
        std::memcpy(out.data(), r.data_ptr<float>(), out.size() * sizeof(float));
    }

    std::map<std::string, torch::jit::Module> modules_;
};

}  // namespace

std::unique_ptr<Executor> torch_executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    std::map<std::string, FileEntry> files = manifest.executor_files("torchscript");
    for (const char *name : kModels)
        require(files.count(name) == 1, CYCLEDIFF_ERR_UNSUPPORTED,
                std::string("manifest extra.torchscript has no ") + name + " program; re-export");
    manifest.verify(files, options.verify_hashes);
    if (options.num_threads > 0) at::set_num_threads(options.num_threads);  // process-wide in libtorch
    return std::make_unique<TorchExecutor>(manifest, files);
}

}  // namespace cyclediff
