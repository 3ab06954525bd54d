// dtype.cpp: executor precisions (dtype.h). The same rules as runtime/core/backends.py and
// engine/openvino_backend.py require(), with the C option's spelling.
#include "dtype.h"

#include <algorithm>

#include "error.h"

namespace cyclediff {

namespace {

std::vector<std::string> dtypes_of(const std::string &executor) {
    if (executor == "openvino") return {"fp32", "bf16"};
    if (executor == "tensorrt") return {"fp16"};
    return {"fp32"};  // torch, stub
}

}  // namespace

std::string resolve_dtype(const std::string &executor, const std::string &requested) {
    require(requested.empty() || requested == "fp32" || requested == "bf16" || requested == "fp16",
            CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "dtype must be \"fp32\", \"bf16\", \"fp16\" or empty (the executor's default), got \"" + requested + "\"");
    const std::vector<std::string> ok = dtypes_of(executor);  // the first is the executor's default
    if (requested.empty()) return ok.front();
    if (std::find(ok.begin(), ok.end(), requested) != ok.end()) return requested;
    const std::string runs = requested == "bf16" ? "executor \"openvino\" (a CPU with bf16)"
                             : requested == "fp16" ? "executor \"tensorrt\" (a CUDA GPU and the export's plans)"
                                                   : "executor \"openvino\" or \"torch\"";
    fail(CYCLEDIFF_ERR_INVALID_ARGUMENT, "executor \"" + executor + "\" does not run dtype \"" + requested +
                                             "\" (it runs " + ok.front() + "); " + requested + " runs on " + runs);
}

void require_bf16_cpu(const std::vector<std::string> &cpu_capabilities) {
    if (std::find(cpu_capabilities.begin(), cpu_capabilities.end(), "BF16") != cpu_capabilities.end()) return;
    fail(CYCLEDIFF_ERR_UNSUPPORTED,
         "dtype \"bf16\" needs a CPU with bf16 instructions (AVX512_BF16 or AMX: Zen 4, Sapphire Rapids and "
         "later); OpenVINO would emulate it slowly on this one. Use dtype \"fp32\"");
}

}  // namespace cyclediff
