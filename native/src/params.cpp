// params.cpp: the CycleDiffusionPipeline defaults and the runtime's argument checks.
#include "params.h"

#include <cmath>
#include <string>

#include "error.h"
#include "schedule.h"

namespace cyclediff {

cyclediff_params params_default() {
    cyclediff_params p{};
    p.strength = 0.8;
    p.num_inference_steps = 50;
    p.guidance_scale = 7.5;
    p.source_guidance_scale = 1.0;
    p.eta = 0.1;
    p.seed = 0;
    p.num_images_per_prompt = 1;
    p.clip_skip = -1;
    return p;
}

cyclediff_engine_options engine_options_default() {
    cyclediff_engine_options o{};
    o.executor = "auto";
    o.max_batch = 16;
    o.num_threads = 0;
    o.verify_hashes = 1;
    return o;
}

void params_check(const cyclediff_params &p) {
    check_schedule_args(p.num_inference_steps, p.strength, p.eta);
    require(std::isfinite(p.guidance_scale), CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "guidance_scale must be a finite number, got " + std::to_string(p.guidance_scale));
    require(std::isfinite(p.source_guidance_scale), CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "source_guidance_scale must be a finite number, got " + std::to_string(p.source_guidance_scale));
    require(p.num_images_per_prompt >= 1, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "num_images_per_prompt must be >= 1, got " + std::to_string(p.num_images_per_prompt));
    require(p.clip_skip >= -1, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "clip_skip must be -1 (none) or >= 0, got " + std::to_string(p.clip_skip));
}

}  // namespace cyclediff
