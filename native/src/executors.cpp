// executors.cpp: pick and open one of the executors compiled into this libcyclediff.
#include <string>

#include "error.h"
#include "executor.h"

namespace cyclediff {

#ifdef CYCLEDIFF_HAVE_TORCH
std::unique_ptr<Executor> torch_executor_open(const Manifest &manifest, const ExecutorOptions &options);
#endif
#ifdef CYCLEDIFF_HAVE_OPENVINO
std::unique_ptr<Executor> openvino_executor_open(const Manifest &manifest, const ExecutorOptions &options);
#endif
#ifdef CYCLEDIFF_HAVE_TENSORRT
std::unique_ptr<Executor> tensorrt_executor_open(const Manifest &manifest, const ExecutorOptions &options);
bool tensorrt_usable(const Manifest &manifest);  // a CUDA device and extra.tensorrt plans
#endif

namespace {

std::string compiled_in() {
    std::string names;
#ifdef CYCLEDIFF_HAVE_TENSORRT
    names += " tensorrt";
#endif
#ifdef CYCLEDIFF_HAVE_OPENVINO
    names += " openvino";
#endif
#ifdef CYCLEDIFF_HAVE_TORCH
    names += " torch";
#endif
    return names.empty() ? " (none)" : names;
}

std::string resolve(const Manifest &manifest, const std::string &name) {
    if (name != "auto") return name;
#ifdef CYCLEDIFF_HAVE_TENSORRT
    if (tensorrt_usable(manifest)) return "tensorrt";
#endif
    (void)manifest;
#if defined(CYCLEDIFF_HAVE_OPENVINO)
    return "openvino";  // the CPU default: every export has its graphs (IR, or ONNX as the fallback)
#elif defined(CYCLEDIFF_HAVE_TORCH)
    return "torch";
#else
    fail(CYCLEDIFF_ERR_EXECUTOR, "this libcyclediff has no executor compiled in; rebuild with CYCLEDIFF_WITH_OPENVINO=ON "
                                 "(pip install openvino), CYCLEDIFF_WITH_TORCH=ON (libtorch) or with TensorRT and CUDA "
                                 "available");
#endif
}

}  // namespace

std::unique_ptr<Executor> executor_open(const Manifest &manifest, const ExecutorOptions &options) {
    require(options.name == "auto" || options.name == "openvino" || options.name == "torch" ||
                options.name == "tensorrt",
            CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "executor must be \"auto\", \"openvino\", \"torch\" or \"tensorrt\", got \"" + options.name + "\"");
    const std::string name = resolve(manifest, options.name);
#ifdef CYCLEDIFF_HAVE_TORCH
    if (name == "torch") return torch_executor_open(manifest, options);
#endif
#ifdef CYCLEDIFF_HAVE_OPENVINO
    if (name == "openvino") return openvino_executor_open(manifest, options);
#endif
#ifdef CYCLEDIFF_HAVE_TENSORRT
    if (name == "tensorrt") return tensorrt_executor_open(manifest, options);
#endif
    fail(CYCLEDIFF_ERR_EXECUTOR, "executor \"" + name + "\" is not compiled into this libcyclediff; it has:" + compiled_in());
}

}  // namespace cyclediff
