// openvino_executor.cpp: the OpenVINO CPU executor: the export's OpenVINO IR (DIR/openvino/<model>.xml + .bin,
// manifest extra.openvino_ir, written by export/openvino_ir.py) or else its ONNX graphs, compiled on "CPU" in
// fp32 with dynamic shapes, as engine/openvino_backend.py does for dtype fp32.
//
// Locking rule: each model owns one compiled model (immutable, shared) and one infer request, and the request
// is used only under that model's mutex. A call takes one model's mutex and no other, so there is no lock
// order to keep; calls to different models from different threads run at once.
#include <openvino/openvino.hpp>

#include <mutex>

#include "error.h"
#include "executor.h"
#include "files.h"
#include "pyjson.h"

namespace cyclediff {

namespace {

const char *const kModels[] = {"text_encoder", "unet", "vae_encoder", "vae_decoder"};
constexpr int kIrSchema = 1;  // export/openvino_ir.py SECTION_SCHEMA

std::string first_line(const char *what) {
    std::string s(what);
    return s.substr(0, s.find('\n'));
}

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

ov::Tensor view_of(const Tensor &t) {  // OpenVINO only reads an input tensor's memory
    return ov::Tensor(ov::element::f32, ov::Shape(t.shape.begin(), t.shape.end()), const_cast<float *>(t.data()));
}

ov::Tensor view_of_out(Tensor &t) {  // the caller's output storage, already sized (executor.h)
    return ov::Tensor(ov::element::f32, ov::Shape(t.shape.begin(), t.shape.end()), t.data());
}

// One compiled model and its infer request (used under `lock` only).
struct OvModel {
    ov::CompiledModel compiled;
    ov::InferRequest request;
    std::mutex lock;
};

class OpenVinoExecutor : public Executor {
public:
    OpenVinoExecutor(const Manifest &manifest, const std::map<std::string, FileEntry> &files, int num_threads) {
        ov::AnyMap config{{"INFERENCE_PRECISION_HINT", "f32"},  // fp32 stays exact (no bf16 on AMX/AVX512 CPUs)
                          {"PERFORMANCE_HINT", "LATENCY"},
                          {"NUM_STREAMS", "1"},
                          // OpenVINO 2026.4's shape-specialized primitive cache gave wrong results for a UNet
                          // call at one size after another size (engine/openvino_backend.py compile_config).
                          {"CPU_RUNTIME_CACHE_CAPACITY", "0"}};
        if (num_threads > 0) config["INFERENCE_NUM_THREADS"] = num_threads;
        for (const char *name : kModels) load(path_join(manifest.folder, files.at(name).file), name, config);
    }

    std::string name() const override { return "openvino"; }

    void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) override {
        const size_t b = static_cast<size_t>(hidden.shape[0]);
        ov::Tensor in(ov::element::i64, ov::Shape{b, ids.size() / b}, const_cast<int64_t *>(ids.data()));
        run("text_encoder", {{"input_ids", in}}, {{"hidden_states", view_of_out(hidden)}});
    }

    void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) override {
        run("unet", {{"sample", view_of(sample)}, {"timestep", view_of(timestep)}, {"encoder_hidden_states", view_of(emb)}},
            {{"noise_pred", view_of_out(noise_pred)}});
    }

    void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) override {
        run("vae_encoder", {{"image", view_of(image)}}, {{"mean", view_of_out(mean)}, {"std", view_of_out(std_dev)}});
    }

    void vae_decoder(const Tensor &latent, Tensor &image) override {
        run("vae_decoder", {{"latent", view_of(latent)}}, {{"image", view_of_out(image)}});
    }

    // seeded_noise: the portable generator (executor.h default); parity with Python goes through injected draws.

private:
    using Named = std::vector<std::pair<const char *, ov::Tensor>>;

    void load(const std::string &path, const char *name, const ov::AnyMap &config) {
        auto model = std::make_unique<OvModel>();
        try {
            model->compiled = core_.compile_model(core_.read_model(path), "CPU", config);
            model->request = model->compiled.create_infer_request();
        } catch (const std::exception &err) {
            fail(CYCLEDIFF_ERR_EXECUTOR, std::string("cannot compile the OpenVINO model ") + name + " from " + path +
                                             ": " + first_line(err.what()) + "; re-export");
        }
        models_[name] = std::move(model);
    }

    // Inputs and outputs are views of the caller's memory: OpenVINO writes the outputs in place. An output whose
    // shape disagrees with the graph's is an OpenVINO error here, not a silent copy.
    void run(const char *name, const Named &inputs, const Named &outputs) {
        OvModel &m = *models_.at(name);
        std::lock_guard<std::mutex> guard(m.lock);
        try {
            for (const auto &[port, t] : inputs) m.request.set_tensor(port, t);
            for (const auto &[port, t] : outputs) m.request.set_tensor(port, t);
            m.request.infer();
        } catch (const std::exception &err) {
            fail(CYCLEDIFF_ERR_EXECUTOR, std::string("OpenVINO ") + name + " failed: " + first_line(err.what()));
        }
    }

    ov::Core core_;  // first member: destroyed after the compiled models that came from it
    std::map<std::string, std::unique_ptr<OvModel>> models_;
};

}  // namespace

std::unique_ptr<Executor> openvino_executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    std::map<std::string, FileEntry> files = model_files(manifest);
    manifest.verify(files, options.verify_hashes);
    return std::make_unique<OpenVinoExecutor>(manifest, files, options.num_threads);
}

}  // namespace cyclediff
