// openvino_models.h: the two ways the OpenVINO executor runs a model on the CPU plugin, as the Python backend
// does (engine/openvino_backend.py OvModel, engine/openvino_static.py OvSampleModel and ExclusiveBuffers).
//
// Locking rule: each model owns its compiled model(s) and infer request, used only under its own mutex; a call
// takes one model's mutex and no other, so calls to different models from different threads run at once.
// ExclusiveBuffers' mutex guards which model holds buffers and is released before any model's mutex is taken.
#pragma once

#include <openvino/openvino.hpp>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tensor.h"

namespace cyclediff {

// The compile properties of every model (engine/openvino_backend.py compile_config): the dtype's precision
// hint, one latency stream, and no shape-specialized primitive cache (OpenVINO 2026.4 returned wrong results
// for a UNet call at one size after another size with it; the SD UNet step took the same time without).
ov::AnyMap openvino_config(const std::string &dtype, int num_threads);

struct ModelSource {
    std::string path;                  // the IR's .xml or the ONNX graph
    std::vector<std::string> weights;  // the files its weights are memory-mapped from (mapped_pages.h)
};

using Named = std::vector<std::pair<const char *, ov::Tensor>>;         // port -> a view of caller memory
using NamedIn = std::vector<std::pair<const char *, const Tensor *>>;   // port -> a batch to split by sample
using NamedOut = std::vector<std::pair<const char *, Tensor *>>;
using SampleShapes = std::vector<std::pair<std::string, ov::Shape>>;  // input port -> its shape without batch

// One compiled model with the export's dynamic batch and spatial axes (text encoder, VAE): the plugin packs
// its weights once, on the first call, and every shape reuses them. Runs on the caller's memory (no copies).
class DynamicModel {
public:
    DynamicModel(ov::Core &core, const ModelSource &source, const std::string &name, const ov::AnyMap &config);
    void run(const Named &inputs, const Named &outputs);

private:
    std::string name_;
    std::vector<std::string> weights_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    bool packed_ = false;  // under lock_
    std::mutex lock_;
};

class ExclusiveBuffers;

// The UNet and the VAE: one static model of batch 1 per per-sample shape, run sample by sample into the caller's
// buffers. Static because with dynamic shapes the plugin decomposes the UNet's attention and holds its
// (8, 4096, 4096) scores, 1.5 GB per sample at a 64x64 latent, where a static shape fuses it (59 MiB) and runs
// faster (the static VAE holds 0.3-0.4 GB less at 512x512); batch 1 because it is as fast per sample and one
// model serves every batch. One is held at a time: the UNet's packed weights are 1.7 GB (bf16) to 3.4 GB (fp32)
// for SD, so a call at another size drops it before compiling its own. `buffers` (may be null): the group of
// models of which only the one that ran last keeps its intermediate buffers.
class SampleModel {
public:
    SampleModel(ov::Core &core, ModelSource source, std::string name, ov::AnyMap config,
                ExclusiveBuffers *buffers = nullptr);
    void run(const NamedIn &inputs, const NamedOut &outputs);
    void release_buffers();  // frees the held model's intermediate buffers; its next call allocates them again

private:
    void compile_for(const SampleShapes &sample_shapes);  // under lock_

    ov::Core &core_;
    ModelSource source_;
    std::string name_;
    ov::AnyMap config_;
    ExclusiveBuffers *buffers_;
    SampleShapes held_;  // what request_ was compiled for; under lock_
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    std::mutex lock_;
};

// Models of which at most one holds its intermediate buffers (the VAE encoder and decoder, up to 1.2 GB each at
// 512x512 fp32, each run once per edit): the model about to run claims them, and the one that ran before it
// releases its own first. A model called again keeps its buffers.
class ExclusiveBuffers {
public:
    void claim(SampleModel *model);

private:
    SampleModel *holder_ = nullptr;  // under lock_
    std::mutex lock_;
};

}  // namespace cyclediff
