// executor.h: the interface every model runner implements (OpenVINO, libtorch, TensorRT, test stubs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "manifest.h"
#include "noise.h"
#include "schedule.h"
#include "tensor.h"

namespace cyclediff {

struct ExecutorOptions {
    std::string name = "auto";  // auto | openvino | torch | tensorrt (| stub in the test build)
    int num_threads = 0;        // 0: the executor's default
    std::string dtype;          // "" (the executor's default) | fp32 | bf16 | fp16; dtype.h says who runs what
    bool verify_hashes = true;
};

// Runs the four exported graphs. Outputs arrive with their shapes set and storage sized; the executor
// fills them. Shapes follow export/models.py specs().
class Executor {
public:
    virtual ~Executor() = default;
    virtual std::string name() const = 0;
    // The precision its models run in (dtype.h): fp32, bf16 (openvino) or fp16 (tensorrt).
    virtual std::string dtype() const { return "fp32"; }
    // ids (B, 77) int64 -> hidden (B, L+1, 77, D): every hidden state through the final layer norm
    virtual void text_encoder(const std::vector<int64_t> &ids, Tensor &hidden) = 0;
    // sample (B, C, h, w), timestep (B,), emb (B, 77, D) -> noise_pred (B, C, h, w)
    virtual void unet(const Tensor &sample, const Tensor &timestep, const Tensor &emb, Tensor &noise_pred) = 0;
    // image (B, 3, H, W) in [-1, 1] -> posterior mean, std (B, C, h, w)
    virtual void vae_encoder(const Tensor &image, Tensor &mean, Tensor &std_dev) = 0;
    // latent (B, C, h, w), already divided by the scaling factor -> image (B, 3, H, W)
    virtual void vae_decoder(const Tensor &latent, Tensor &image) = 0;
    // The generator that `seed` means for this executor (torch: torch.Generator().manual_seed(seed)).
    virtual std::unique_ptr<NoiseSource> seeded_noise(uint64_t seed) { return noise_portable(seed); }
    // The float32 sqrt whose rounding the schedule tables should share (nullptr: std::sqrt).
    virtual SqrtFn float_sqrt() const { return nullptr; }
};

// The executors compiled into this library (executors.cpp; the test build links a stub instead).
// Checks the files the executor reads (FILE_MISSING / HASH_MISMATCH) before loading them.
std::unique_ptr<Executor> executor_open(const Manifest &manifest, const ExecutorOptions &options);

}  // namespace cyclediff
