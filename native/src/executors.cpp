// executors.cpp: pick and open one of the executors compiled into this libcyclediff.
#include <string>

#include "dtype.h"
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

// "auto": tensorrt where it is usable (or fp16 is asked), else openvino, else torch; a dtype that only some
// executors run narrows the choice to them (dtype.h).
std::string resolve(const Manifest &manifest, const std::string &name, const std::string &dtype) {
    if (name != "auto") return name;
#ifdef CYCLEDIFF_HAVE_TENSORRT
    if ((dtype.empty() || dtype == "fp16") && tensorrt_usable(manifest)) return "tensorrt";
#endif
    (void)manifest;
    if (dtype == "fp16")
        fail(CYCLEDIFF_ERR_INVALID_ARGUMENT, "dtype \"fp16\" runs on executor \"tensorrt\" (a CUDA GPU and the "
                                             "export's plans: cyclediff-export --trt); use \"fp32\" or \"bf16\" "
                                             "on the CPU");
#if defined(CYCLEDIFF_HAVE_OPENVINO)
    return "openvino";  // the CPU default: every export has its graphs (IR, or ONNX as the fallback)
#elif defined(CYCLEDIFF_HAVE_TORCH)
    return "torch";     // bf16 is then refused by resolve_dtype, naming openvino
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
    const std::string name = resolve(manifest, options.name, options.dtype);
    ExecutorOptions resolved = options;
    resolved.name = name;
    resolved.dtype = resolve_dtype(name, options.dtype);
#ifdef CYCLEDIFF_HAVE_TORCH
    if (name == "torch") return torch_executor_open(manifest, resolved);
#endif
#ifdef CYCLEDIFF_HAVE_OPENVINO
    if (name == "openvino") return openvino_executor_open(manifest, resolved);
#endif
#ifdef CYCLEDIFF_HAVE_TENSORRT
    if (name == "tensorrt") return tensorrt_executor_open(manifest, resolved);
#endif
    fail(CYCLEDIFF_ERR_EXECUTOR, "executor \"" + name + "\" is not compiled into this libcyclediff; it has:" + compiled_in());
}

}  // namespace cyclediff
