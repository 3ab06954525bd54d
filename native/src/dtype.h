// dtype.h: which precision each executor runs, and the one refusal of bf16 on a CPU without it.
#pragma once

#include <string>
#include <vector>

namespace cyclediff {

// `requested` ("" = the executor's default: the first it runs) checked against what `executor` runs: openvino fp32 | bf16, torch fp32,
// tensorrt fp16 (its plans), stub fp32. Returns the resolved dtype; an unknown or unsupported one is
// CYCLEDIFF_ERR_INVALID_ARGUMENT naming the executor that does run it.
std::string resolve_dtype(const std::string &executor, const std::string &requested);

// bf16 needs native bf16 dot products (AVX512_BF16 or AMX); OpenVINO lists "BF16" in the CPU's
// OPTIMIZATION_CAPABILITIES exactly then, and would emulate it slowly elsewhere. CYCLEDIFF_ERR_UNSUPPORTED
// with the fix when `cpu_capabilities` lacks it.
void require_bf16_cpu(const std::vector<std::string> &cpu_capabilities);

}  // namespace cyclediff
