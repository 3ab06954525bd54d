// openvino_executor.cpp: the OpenVINO CPU executor: the export's OpenVINO IR (DIR/openvino/<model>.xml + .bin,
// manifest extra.openvino_ir, written by export/openvino_ir.py) or else its ONNX graphs, on the "CPU" plugin in
// fp32 (exact) or bf16 (the fast mode, on CPUs with AVX512_BF16 or AMX), run as engine/openvino_backend.py runs
// them: the text encoder with dynamic shapes, the UNet and the VAE as static batch-1 models per per-sample shape,
// the VAE's models sharing one ExclusiveBuffers (openvino_models.h). In bf16 a VAE output that is not finite is
// computed again by an fp32 twin of that VAE part, compiled on first need (runtime/core/precision.py); latents,
// noises and the DDIM math stay fp32.
//
// Locking rule: every model guards itself (openvino_models.h); twins_ (the fp32 VAE twins) is guarded by
// twins_lock_, taken before no other lock and released before the twin runs.
#include <openvino/openvino.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "dtype.h"
#include "error.h"
#include "executor.h"
#include "files.h"
#include "openvino_models.h"
#include "pyjson.h"

namespace cyclediff {

namespace {

const char *const kModels[] = {"text_encoder", "unet", "vae_encoder", "vae_decoder"};
constexpr int kIrSchema = 1;  // export/openvino_ir.py SECTION_SCHEMA

// export/openvino_ir.py key(): what the recorded IR was converted from, and by which OpenVINO.
std::string ir_key(const std::string &source_sha256) {
    nlohmann::json payload = {{"source", source_sha256},
                              {"openvino", ov::get_openvino_version().buildNumber},
                              {"schema", kIrSchema}};
    return sha256_hex(py_json_dumps(payload));
}

// For each model: its IR entry when one matches this OpenVINO and the model's graph, else the ONNX graph.
std::map<std::string, FileEntry> model_files(const Manifest &manifest) {
    const nlohmann::json *graphs = nullptr;
    const auto section = manifest.extra.find("openvino_ir");
    if (section != manifest.extra.end() && section->is_object() && section->value("schema", 0) == kIrSchema &&
        section->contains("graphs") && section->at("graphs").is_array())
        graphs = &section->at("graphs");
    std::map<std::string, FileEntry> out;
    for (const char *name : kModels) {
        const auto model = manifest.models.find(name);
        require(model != manifest.models.end(), CYCLEDIFF_ERR_UNSUPPORTED,
                std::string("the export has no ") + name + " graph (manifest models); re-run `cyclediff-export`");
        out[name] = model->second;
        if (graphs == nullptr) continue;
        const std::string want = ir_key(model->second.sha256);
        for (const nlohmann::json &e : *graphs) {
            if (!e.is_object() || e.value("key", std::string()) != want) continue;
            try {
                out[name] = FileEntry{e.at("file").get<std::string>(), e.at("sha256").get<std::string>(),
                                      e.at("data_files").get<std::vector<std::string>>()};
            } catch (const nlohmann::json::exception &err) {
                fail(CYCLEDIFF_ERR_MANIFEST, std::string("manifest extra.openvino_ir is malformed (") + err.what() +
                                                 "); re-run `cyclediff-export`");
            }
            break;
        }
    }
    return out;
}

ov::Tensor view_of_out(Tensor &t) {  // the caller's output storage, already sized (executor.h)
    return ov::Tensor(ov::element::f32, ov::Shape(t.shape.begin(), t.shape.end()), t.data());
}

bool all_finite(const Tensor &t) {
    for (float v : t.values)
        if (!std::isfinite(v)) return false;
    return true;
}

ModelSource source_of(const Manifest &manifest, const FileEntry &entry) {
    ModelSource source{path_join(manifest.folder, entry.file), {}};
    for (const std::string &f : entry.data_files) source.weights.push_back(path_join(manifest.folder, f));
    if (entry.data_files.empty() || entry.file.size() < 4 || entry.file.substr(entry.file.size() - 4) != ".xml")
        source.weights.push_back(source.path);  // an ONNX graph may hold its weights inside
    return source;
}

class OpenVinoExecutor : public Executor {
public:
    OpenVinoExecutor(const Manifest &manifest, const std::map<std::string, FileEntry> &files, int num_threads,
                     std::string dtype)
        : dtype_(std::move(dtype)), num_threads_(num_threads) {
        for (const auto &[name, entry] : files) sources_[name] = source_of(manifest, entry);
        const ov::AnyMap config = openvino_config(dtype_, num_threads);
        text_encoder_ = std::make_unique<DynamicModel>(core_, sources_.at("text_encoder"), "text_encoder", config);
        unet_ = std::make_unique<SampleModel>(core_, sources_.at("unet"), "unet", config);
        for (const char *name : {"vae_encoder", "vae_decoder"})
            vae_[name] = std::make_unique<SampleModel>(core_, sources_.at(name), name, config, &vae_buffers_);
    }

    std::string name() const override { return "openvino"; }
    std::string dtype() const override { return dtype_; }

    void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) override {
        const size_t b = static_cast<size_t>(hidden.shape[0]);
        ov::Tensor in(ov::element::i64, ov::Shape{b, ids.size() / b}, const_cast<int64_t *>(ids.data()));
        text_encoder_->run({{"input_ids", in}}, {{"hidden_states", view_of_out(hidden)}});
    }

    void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) override {
        unet_->run({{"sample", &sample}, {"timestep", &timestep}, {"encoder_hidden_states", &emb}},
                   {{"noise_pred", &noise_pred}});
    }

    void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) override {
        const NamedIn in{{"image", &image}};
        const NamedOut out{{"mean", &mean}, {"std", &std_dev}};
        vae_.at("vae_encoder")->run(in, out);
        if (dtype_ != "fp32" && !(all_finite(mean) && all_finite(std_dev))) twin("vae_encoder").run(in, out);
    }

    void vae_decoder(const Tensor &latent, Tensor &image) override {
        const NamedIn in{{"latent", &latent}};
        const NamedOut out{{"image", &image}};
        vae_.at("vae_decoder")->run(in, out);
        if (dtype_ != "fp32" && !all_finite(image)) twin("vae_decoder").run(in, out);
    }

    // seeded_noise: the portable generator (executor.h default); parity with Python goes through injected draws.

private:
    // The fp32 twin of a VAE part, compiled the first time a bf16 output overflows.
    SampleModel &twin(const char *name) {
        std::lock_guard<std::mutex> guard(twins_lock_);
        std::unique_ptr<SampleModel> &m = twins_[name];
        if (!m) m = std::make_unique<SampleModel>(core_, sources_.at(name), std::string(name) + " (fp32 re-run)",
                                                  openvino_config("fp32", num_threads_), &vae_buffers_);
        return *m;
    }

    ov::Core core_;  // first member: destroyed after the compiled models that came from it
    std::string dtype_;
    int num_threads_;
    std::map<std::string, ModelSource> sources_;
    ExclusiveBuffers vae_buffers_;  // before the models that point to it: destroyed after them
    std::unique_ptr<DynamicModel> text_encoder_;
    std::unique_ptr<SampleModel> unet_;
    std::map<std::string, std::unique_ptr<SampleModel>> vae_;
    std::mutex twins_lock_;
    std::map<std::string, std::unique_ptr<SampleModel>> twins_;
};

}  // namespace

std::unique_ptr<Executor> openvino_executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    std::map<std::string, FileEntry> files = model_files(manifest);
    if (options.dtype == "bf16") require_bf16_cpu(ov::Core().get_property("CPU", ov::device::capabilities));
    manifest.verify(files, options.verify_hashes);
    return std::make_unique<OpenVinoExecutor>(manifest, files, options.num_threads, options.dtype);
}

}  // namespace cyclediff
