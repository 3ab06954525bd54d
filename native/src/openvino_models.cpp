// openvino_models.cpp: see openvino_models.h.
#include "openvino_models.h"

#include <algorithm>
#include <map>
#include <thread>

#ifdef __linux__
#include <sched.h>
#endif

#include "error.h"
#include "mapped_pages.h"

namespace cyclediff {

namespace {

std::string first_line(const char *what) {
    std::string s(what);
    return s.substr(0, s.find('\n'));
}

[[noreturn]] void cannot_compile(const std::string &name, const std::string &path, const std::exception &err) {
    fail(CYCLEDIFF_ERR_EXECUTOR,
         "cannot compile the OpenVINO model " + name + " from " + path + ": " + first_line(err.what()) + "; re-export");
}

// A batch-1 view of sample i of t: (B, ...) -> (1, ...), or (B,) -> (1,).
ov::Tensor sample_view(const Tensor &t, int64_t i) {
    ov::Shape shape(t.shape.begin(), t.shape.end());
    shape[0] = 1;
    return ov::Tensor(ov::element::f32, shape, const_cast<float *>(t.row(i)));
}

// One thread per CPU this process may run on (its affinity, which containers narrow), as the Python runtime's
// default (runtime/core/backends.py threads_for); OpenVINO's own default counts physical cores only.
int cpus_allowed() {
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

ov::AnyMap openvino_config(const std::string &dtype, int num_threads) {
    ov::AnyMap config{{"INFERENCE_PRECISION_HINT", dtype == "bf16" ? "bf16" : "f32"},
                      {"PERFORMANCE_HINT", "LATENCY"},
                      {"NUM_STREAMS", "1"},
                      {"CPU_RUNTIME_CACHE_CAPACITY", "0"}};
    config["INFERENCE_NUM_THREADS"] = num_threads > 0 ? num_threads : cpus_allowed();
    return config;
}

DynamicModel::DynamicModel(ov::Core &core, const ModelSource &source, const std::string &name,
                           const ov::AnyMap &config)
    : name_(name), weights_(source.weights) {
    try {
        PageDropper dropper(weights_);
        compiled_ = core.compile_model(core.read_model(source.path), "CPU", config);
        request_ = compiled_.create_infer_request();
    } catch (const std::exception &err) {
        cannot_compile(name, source.path, err);
    }
}

// An output whose shape disagrees with the graph's is an OpenVINO error here, not a silent copy.
void DynamicModel::run(const Named &inputs, const Named &outputs) {
    std::lock_guard<std::mutex> guard(lock_);
    try {
        for (const auto &[port, t] : inputs) request_.set_tensor(port, t);
        for (const auto &[port, t] : outputs) request_.set_tensor(port, t);
        if (packed_) return request_.infer();
        PageDropper dropper(weights_);  // the first call packs the weights
        request_.infer();
        packed_ = true;
    } catch (const std::exception &err) {
        fail(CYCLEDIFF_ERR_EXECUTOR, "OpenVINO " + name_ + " failed: " + first_line(err.what()));
    }
}

SampleModel::SampleModel(ov::Core &core, ModelSource source, std::string name, ov::AnyMap config,
                         ExclusiveBuffers *buffers)
    : core_(core), source_(std::move(source)), name_(std::move(name)), config_(std::move(config)),
      buffers_(buffers) {}

void SampleModel::run(const NamedIn &inputs, const NamedOut &outputs) {
    SampleShapes shapes;  // the per-sample shape of each input: what a static model is compiled for
    for (const auto &[port, t] : inputs) shapes.emplace_back(port, ov::Shape(t->shape.begin() + 1, t->shape.end()));
    const int64_t batch = inputs.front().second->shape[0];
    if (buffers_ != nullptr) buffers_->claim(this);  // before lock_: it may take the previous model's
    std::lock_guard<std::mutex> guard(lock_);
    try {
        if (shapes != held_) compile_for(shapes);
        for (int64_t i = 0; i < batch; ++i) {
            for (const auto &[port, t] : inputs) request_.set_tensor(port, sample_view(*t, i));
            for (const auto &[port, t] : outputs) request_.set_tensor(port, sample_view(*t, i));
            request_.infer();
        }
    } catch (const Error &) {
        throw;
    } catch (const std::exception &err) {
        fail(CYCLEDIFF_ERR_EXECUTOR, "OpenVINO " + name_ + " failed: " + first_line(err.what()));
    }
}

void SampleModel::release_buffers() {
    std::lock_guard<std::mutex> guard(lock_);
    try {
        if (!held_.empty()) compiled_.release_memory();
    } catch (const std::exception &err) {
        fail(CYCLEDIFF_ERR_EXECUTOR, "OpenVINO " + name_ + " could not release its buffers: " + first_line(err.what()));
    }
}

void ExclusiveBuffers::claim(SampleModel *model) {
    SampleModel *previous = nullptr;
    {
        std::lock_guard<std::mutex> guard(lock_);
        previous = holder_;
        holder_ = model;
    }
    if (previous != nullptr && previous != model) previous->release_buffers();
}

// Frees the held model (its packed weights) before the next one packs its own.
void SampleModel::compile_for(const SampleShapes &sample_shapes) {
    held_.clear();
    request_ = ov::InferRequest();
    compiled_ = ov::CompiledModel();
    try {
        PageDropper dropper(source_.weights);
        std::shared_ptr<ov::Model> model = core_.read_model(source_.path);
        std::map<std::string, ov::PartialShape> shapes;
        for (const auto &[port, shape] : sample_shapes) {
            ov::Shape one{1};
            one.insert(one.end(), shape.begin(), shape.end());
            shapes[port] = ov::PartialShape(one);
        }
        model->reshape(shapes);
        compiled_ = core_.compile_model(model, "CPU", config_);
        request_ = compiled_.create_infer_request();
    } catch (const std::exception &err) {
        cannot_compile(name_, source_.path, err);
    }
    held_ = sample_shapes;
}

}  // namespace cyclediff
