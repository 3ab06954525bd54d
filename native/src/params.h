// params.h: defaults and range checks of cyclediff_params / cyclediff_engine_options (runtime/core/config.py).
#pragma once

#include "cyclediff.h"

namespace cyclediff {

cyclediff_params params_default();
cyclediff_engine_options engine_options_default();
// INVALID_ARGUMENT naming the first bad field.
void params_check(const cyclediff_params &p);

}  // namespace cyclediff
