// tensorrt_executor.cpp: the production GPU executor: the static-shape TensorRT plans of `cyclediff-export --trt`
// (manifest extra.tensorrt, schema 1, export/plan_cache.py) run with enqueueV3 on one CUDA stream. Compiled only
// when CMake finds TensorRT >= 10.1 and CUDA (native/cmake/executors.cmake). As engine/tensorrt_backend.py:
// fp16 plans with fp32 I/O, a smaller batch runs zero-padded in the next larger plan, and a VAE whose fp16
// output is not finite re-runs in its fp32 plan when the export has one.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "error.h"
#include "executor.h"
#include "files.h"

namespace cyclediff {

namespace {

const char *const kModels[] = {"text_encoder", "unet", "vae_encoder", "vae_decoder"};
const char *const kRebuild = "; rebuild the plans here: cyclediff-export ... --trt";

void cuda_check(cudaError_t err, const std::string &what) {
    require(err == cudaSuccess, CYCLEDIFF_ERR_EXECUTOR, what + ": " + cudaGetErrorString(err));
}

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char *msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
    }
};

struct Binding {  // one graph input or output in host memory, batch-major
    const char *name;
    void *host;
    size_t elem;  // bytes per element
    Shape shape;
    size_t bytes() const { return shape_numel(shape) * elem; }
};

struct DeviceBuffer {
    void *ptr = nullptr;
    size_t bytes = 0;
};

// One deserialized plan: its static batch, context and device I/O buffers (allocated at the static shapes).
struct Plan {
    int64_t batch = 0;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    std::map<std::string, DeviceBuffer> io;
    ~Plan() {
        for (auto &[name, b] : io) cudaFree(b.ptr);
    }
};

using PlanList = std::vector<std::unique_ptr<Plan>>;  // sorted by batch

const Plan &pick(const PlanList &plans, int64_t batch, const std::string &model) {
    for (const auto &p : plans)
        if (p->batch >= batch) return *p;
    fail(CYCLEDIFF_ERR_EXECUTOR, model + ": batch " + std::to_string(batch) + " is larger than every TensorRT plan" +
                                     kRebuild + " with a larger --batch / --max-batch");
}

bool all_finite(const Binding &b) {
    const float *v = static_cast<const float *>(b.host);
    return std::all_of(v, v + shape_numel(b.shape), [](float x) { return std::isfinite(x); });
}

class TensorRtExecutor : public Executor {
public:
    explicit TensorRtExecutor(const Manifest &manifest) : runtime_(nvinfer1::createInferRuntime(logger_)) {
        require(runtime_ != nullptr, CYCLEDIFF_ERR_EXECUTOR, "TensorRT runtime could not be created");
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
        load_all(manifest);
    }
    ~TensorRtExecutor() override {
        plans_.clear();  // contexts and engines before the runtime
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "tensorrt"; }
    std::string dtype() const override { return "fp16"; }  // its plans' (a VAE re-run in fp32 aside)

    void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) override {
        const int64_t b = hidden.shape[0];
        const Binding in{"input_ids", const_cast<int64_t *>(ids.data()), 8, {b, static_cast<int64_t>(ids.size()) / b}};
        run("text_encoder", {in}, {out("hidden_states", hidden)});
    }
    void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) override {
        run("unet", {in("sample", sample), in("timestep", timestep), in("encoder_hidden_states", emb)},
            {out("noise_pred", noise_pred)});
    }
    void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) override {
        run("vae_encoder", {in("image", image)}, {out("mean", mean), out("std", std_dev)});
    }
    void vae_decoder(const Tensor &latent, Tensor &image) override {
        run("vae_decoder", {in("latent", latent)}, {out("image", image)});
    }

private:
    static Binding in(const char *name, const Tensor &t) { return {name, const_cast<float *>(t.data()), 4, t.shape}; }
    static Binding out(const char *name, Tensor &t) { return {name, t.data(), 4, t.shape}; }

    void load_all(const Manifest &manifest) {
        require(manifest.extra.contains("tensorrt") && manifest.extra["tensorrt"].value("schema", 0) == 1,
                CYCLEDIFF_ERR_UNSUPPORTED, "export has no TensorRT plans (manifest extra.tensorrt schema 1)" +
                                               std::string(kRebuild));
        const nlohmann::json &plans = manifest.extra["tensorrt"].at("plans");
        for (auto it = plans.begin(); it != plans.end(); ++it)
            for (const nlohmann::json &entry : it.value()) load(manifest.folder, it.key(), entry);
        for (auto &[key, list] : plans_)
            std::sort(list.begin(), list.end(), [](const auto &a, const auto &b) { return a->batch < b->batch; });
        for (const char *m : kModels)
            require(plans_.count(std::string(m) + "/fp16") == 1, CYCLEDIFF_ERR_UNSUPPORTED,
                    std::string("no fp16 TensorRT plan for ") + m + kRebuild);
    }

    void load(const std::string &folder, const std::string &model, const nlohmann::json &entry) {
        const std::string path = path_join(folder, entry.at("file").get<std::string>());
        require(file_exists(path), CYCLEDIFF_ERR_FILE_MISSING, "TensorRT plan " + path + " is missing" + kRebuild);
        const std::string bytes = file_read(path);  // hash checked before the deserializer sees a partial file
        require(sha256_hex(bytes) == entry.at("sha256").get<std::string>(), CYCLEDIFF_ERR_HASH_MISMATCH,
                "TensorRT plan " + path + " does not match its recorded sha256" + kRebuild);
        auto plan = std::make_unique<Plan>();
        plan->engine.reset(runtime_->deserializeCudaEngine(bytes.data(), bytes.size()));
        require(plan->engine != nullptr, CYCLEDIFF_ERR_EXECUTOR, "TensorRT cannot load " + path + " (built for another "
                                                                 "TensorRT version or GPU?)" + kRebuild);
        plan->context.reset(plan->engine->createExecutionContext());
        require(plan->context != nullptr, CYCLEDIFF_ERR_EXECUTOR, "TensorRT context for " + path);
        plan->batch = entry.at("shapes").begin()->at(0).get<int64_t>();
        plans_[model + "/" + entry.value("precision", std::string("fp16"))].push_back(std::move(plan));
    }

    void *device(Plan &p, const Binding &b, int64_t batch) {
        DeviceBuffer &d = p.io[b.name];
        const size_t bytes = b.bytes() / static_cast<size_t>(b.shape[0]) * static_cast<size_t>(batch);
        if (d.bytes < bytes) {
            cudaFree(d.ptr);
            d = DeviceBuffer{};
            cuda_check(cudaMalloc(&d.ptr, bytes), "cudaMalloc");
            cuda_check(cudaMemsetAsync(d.ptr, 0, bytes, stream_), "cudaMemset");  // padding rows stay finite
            d.bytes = bytes;
        }
        return d.ptr;
    }

    void enqueue(Plan &p, const std::string &model, const std::vector<Binding> &ins, const std::vector<Binding> &outs) {
        for (const Binding &b : ins) {
            void *d = device(p, b, p.batch);
            cuda_check(cudaMemcpyAsync(d, b.host, b.bytes(), cudaMemcpyHostToDevice, stream_), "copy to GPU");
            Shape padded = b.shape;
            padded[0] = p.batch;
            nvinfer1::Dims dims{};
            dims.nbDims = static_cast<int32_t>(padded.size());
            for (size_t i = 0; i < padded.size(); ++i) dims.d[i] = padded[i];
            require(p.context->setInputShape(b.name, dims) && p.context->setTensorAddress(b.name, d),
                    CYCLEDIFF_ERR_EXECUTOR, model + ": input " + b.name + " " + shape_str(b.shape) +
                                                " does not fit the static plan" + kRebuild + " for this image size");
        }
        for (const Binding &b : outs) p.context->setTensorAddress(b.name, device(p, b, p.batch));
        require(p.context->enqueueV3(stream_), CYCLEDIFF_ERR_EXECUTOR, "TensorRT " + model + " failed");
        for (const Binding &b : outs)  // the first shape[0] rows: the caller's batch
            cuda_check(cudaMemcpyAsync(b.host, p.io[b.name].ptr, b.bytes(), cudaMemcpyDeviceToHost, stream_),
                       "copy from GPU");
        cuda_check(cudaStreamSynchronize(stream_), model);
    }

    void run(const std::string &model, const std::vector<Binding> &ins, const std::vector<Binding> &outs) {
        const int64_t batch = ins.front().shape[0];
        enqueue(const_cast<Plan &>(pick(plans_.at(model + "/fp16"), batch, model)), model, ins, outs);
        const bool vae = model.rfind("vae_", 0) == 0;
        if (vae && plans_.count(model + "/fp32") && !std::all_of(outs.begin(), outs.end(), all_finite))
            enqueue(const_cast<Plan &>(pick(plans_.at(model + "/fp32"), batch, model)), model, ins, outs);
    }

    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::map<std::string, PlanList> plans_;  // "<model>/<precision>" -> plans by batch
    cudaStream_t stream_ = nullptr;
};

}  // namespace

bool tensorrt_usable(const Manifest &manifest) {
    int devices = 0;
    return manifest.extra.contains("tensorrt") && cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
}

std::unique_ptr<Executor> tensorrt_executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    (void)options;  // plan hashes are always checked: a partial plan may crash the deserializer
    try {
        return std::make_unique<TensorRtExecutor>(manifest);
    } catch (const nlohmann::json::exception &err) {
        fail(CYCLEDIFF_ERR_MANIFEST, std::string("manifest extra.tensorrt is malformed (") + err.what() + ")" + kRebuild);
    }
}

}  // namespace cyclediff
