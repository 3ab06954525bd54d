// schedule.cpp: the float32 arithmetic of runtime/core/schedule.py (torch CPU kernels) and numpy's timestep math.
#include "schedule.h"

#include <cmath>

#include "error.h"

namespace cyclediff {

namespace {

using json = nlohmann::json;

// torch.linspace(start, end, n, dtype=float32) on the CPU: float step, each value one fused multiply-add
// from the nearer end.
std::vector<float> torch_linspace(double start_d, double end_d, int n) {
    const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
    if (n == 1) return {start};
    const float step = (end - start) / static_cast<float>(n - 1);
    const int halfway = n / 2;
    std::vector<float> out(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
        out[i] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                             : std::fma(-step, static_cast<float>(n - i - 1), end);
    return out;
}

std::vector<float> cosine_betas(int n) {
    auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2.0); };
    std::vector<float> betas;
    for (int i = 0; i < n; ++i)
        betas.push_back(static_cast<float>(std::fmin(1 - alpha_bar((i + 1.0) / n) / alpha_bar(static_cast<double>(i) / n),
                                                     0.999)));
    return betas;
}

void refuse(const SchedulerConfig &c) {
    bool beta_ok = c.has_trained_betas || c.beta_schedule == "linear" || c.beta_schedule == "scaled_linear" ||
                   c.beta_schedule == "squaredcos_cap_v2";
    require(beta_ok, CYCLEDIFF_ERR_UNSUPPORTED, "unsupported scheduler config: beta_schedule=" + c.beta_schedule);
    bool spacing_ok = c.timestep_spacing == "leading" || c.timestep_spacing == "trailing" ||
                      c.timestep_spacing == "linspace";
    require(spacing_ok, CYCLEDIFF_ERR_UNSUPPORTED, "unsupported scheduler config: timestep_spacing=" + c.timestep_spacing);
    require(c.num_train_timesteps >= 1, CYCLEDIFF_ERR_UNSUPPORTED, "unsupported scheduler config: num_train_timesteps");
    require(!c.has_trained_betas || c.trained_betas.size() == static_cast<size_t>(c.num_train_timesteps),
            CYCLEDIFF_ERR_UNSUPPORTED, "unsupported scheduler config: trained_betas length != num_train_timesteps");
}

// np.round(np.arange(t, 0, -t / n)) - 1, with numpy's arange fill (start + i·delta, delta = (start+step)−start).
std::vector<int64_t> trailing_timesteps(int t, int n) {
    const double start = t, step = -static_cast<double>(t) / n;
    const int64_t len = static_cast<int64_t>(std::ceil((0.0 - start) / step));
    const double delta = (start + step) - start;
    std::vector<int64_t> out;
    for (int64_t i = 0; i < len; ++i) {
        double v = i == 0 ? start : i == 1 ? start + step : start + static_cast<double>(i) * delta;
        out.push_back(static_cast<int64_t>(std::nearbyint(v)) - 1);
    }
    return out;
}

// np.linspace(0, t - 1, n).round()[::-1]
std::vector<int64_t> linspace_timesteps(int t, int n) {
    std::vector<int64_t> out(static_cast<size_t>(n));
    const double stop = t - 1, step = n > 1 ? stop / (n - 1) : 0.0;
    for (int i = 0; i < n; ++i) {
        double v = (n > 1 && i == n - 1) ? stop : static_cast<double>(i) * step;
        out[static_cast<size_t>(n - 1 - i)] = static_cast<int64_t>(std::nearbyint(v));
    }
    return out;
}

float alpha_at(const std::vector<float> &ac, int64_t t) {
    require(t >= 0 && t < static_cast<int64_t>(ac.size()), CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "timestep " + std::to_string(t) + " is outside the " + std::to_string(ac.size()) +
                " training timesteps; use fewer num_inference_steps");
    return ac[static_cast<size_t>(t)];
}

void apply_sqrt(std::vector<float> &v, SqrtFn sqrt_fn) {
    if (sqrt_fn != nullptr) return sqrt_fn(v.data(), v.size());
    for (float &x : v) x = std::sqrt(x);
}

// The coefficients of runtime/core/schedule.py _append_coefs for every step at once (so sqrt_fn sees vectors).
void fill_coefs(StepTable &s, const std::vector<float> &ac, float final_alpha, int64_t ratio, SqrtFn sqrt_fn) {
    const float eta = static_cast<float>(s.eta);
    std::vector<float> a_t, a_prev, variance;
    for (int64_t t : s.timesteps) {
        a_t.push_back(alpha_at(ac, t));
        a_prev.push_back(t - ratio >= 0 ? alpha_at(ac, t - ratio) : final_alpha);
        variance.push_back(((1.0f - a_prev.back()) / (1.0f - a_t.back())) * (1.0f - a_t.back() / a_prev.back()));
        s.draws.push_back(t - ratio > 0);
    }
    s.sqrt_a = a_t;
    s.sqrt_a_prev = a_prev;
    for (float a : a_t) s.sqrt_b.push_back(1.0f - a);
    std::vector<float> std_dev = variance;
    for (auto *v : {&s.sqrt_a, &s.sqrt_b, &s.sqrt_a_prev, &std_dev}) apply_sqrt(*v, sqrt_fn);
    for (size_t i = 0; i < std_dev.size(); ++i) {
        s.sigma.push_back(eta * std_dev[i]);
        s.sigma_den.push_back(std_dev[i] * eta);
        s.dir_coef.push_back(1.0f - a_prev[i] - s.sigma[i] * s.sigma[i]);
    }
    apply_sqrt(s.dir_coef, sqrt_fn);
}

}  // namespace

SchedulerConfig SchedulerConfig::from_json(const json &j) {
    SchedulerConfig c;
    try {
        c.num_train_timesteps = j.value("num_train_timesteps", 1000);
        c.beta_start = j.value("beta_start", 0.00085);
        c.beta_end = j.value("beta_end", 0.012);
        c.beta_schedule = j.value("beta_schedule", std::string("scaled_linear"));
        c.has_trained_betas = j.contains("trained_betas") && !j["trained_betas"].is_null();
        if (c.has_trained_betas) c.trained_betas = j["trained_betas"].get<std::vector<double>>();
        c.set_alpha_to_one = j.value("set_alpha_to_one", false);
        c.steps_offset = j.value("steps_offset", 1);
        c.timestep_spacing = j.value("timestep_spacing", std::string("leading"));
    } catch (const json::exception &err) {
        fail(CYCLEDIFF_ERR_MANIFEST, std::string("manifest scheduler is malformed (") + err.what() + "); re-export");
    }
    refuse(c);
    return c;
}

std::vector<float> SchedulerConfig::alphas_cumprod() const {
    const int n = num_train_timesteps;
    std::vector<float> betas;
    if (has_trained_betas) {
        for (double b : trained_betas) betas.push_back(static_cast<float>(b));
    } else if (beta_schedule == "linear") {
        betas = torch_linspace(beta_start, beta_end, n);
    } else if (beta_schedule == "scaled_linear") {
        betas = torch_linspace(std::pow(beta_start, 0.5), std::pow(beta_end, 0.5), n);
        for (float &b : betas) b = b * b;
    } else {
        betas = cosine_betas(n);
    }
    std::vector<float> out;
    double acc = 1.0;  // torch's CPU cumprod accumulates float32 in double
    for (float b : betas) {
        acc *= static_cast<double>(1.0f - b);
        out.push_back(static_cast<float>(acc));
    }
    return out;
}

std::vector<int64_t> SchedulerConfig::timesteps(int n) const {
    const int t = num_train_timesteps;
    require(n <= t, CYCLEDIFF_ERR_INVALID_ARGUMENT, "num_inference_steps=" + std::to_string(n) + " exceeds the " +
                                                        std::to_string(t) + " training timesteps");
    if (timestep_spacing == "linspace") return linspace_timesteps(t, n);
    if (timestep_spacing == "trailing") return trailing_timesteps(t, n);
    std::vector<int64_t> out;
    for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<int64_t>(i) * (t / n) + steps_offset);
    return out;
}

int num_edit_steps(int num_inference_steps, double strength) {
    double x = num_inference_steps * strength;
    return std::min(static_cast<int>(x), num_inference_steps);
}

void check_schedule_args(int n, double strength, double eta) {
    require(n >= 1, CYCLEDIFF_ERR_INVALID_ARGUMENT, "num_inference_steps must be an integer >= 1, got " + std::to_string(n));
    require(std::isfinite(strength) && strength > 0 && strength <= 1, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "strength must be in (0, 1], got " + std::to_string(strength));
    require(std::isfinite(eta) && eta >= 0, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "eta must be a finite number >= 0, got " + std::to_string(eta));
}

int StepTable::num_draws() const {
    int n = 0;
    for (bool d : draws) n += d ? 1 : 0;
    return n;
}

StepTable StepTable::build(const SchedulerConfig &cfg, int n, double strength, double eta, SqrtFn sqrt_fn) {
    check_schedule_args(n, strength, eta);
    const int init = num_edit_steps(n, strength);
    require(init > 0, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "strength=" + std::to_string(strength) + " with num_inference_steps=" + std::to_string(n) +
                " runs zero steps; raise strength or num_inference_steps");
    std::vector<int64_t> all = cfg.timesteps(n);
    StepTable s;
    s.eta = eta;
    s.num_inference_steps = n;
    s.strength = strength;
    size_t first = std::min(all.size(), static_cast<size_t>(n - init));  // Python's clamped slice [n - init:]
    s.timesteps.assign(all.begin() + static_cast<std::ptrdiff_t>(first), all.end());
    require(!s.timesteps.empty(), CYCLEDIFF_ERR_INVALID_ARGUMENT, "the schedule has no steps to run");
    const std::vector<float> ac = cfg.alphas_cumprod();
    const float final_alpha = cfg.set_alpha_to_one ? 1.0f : ac[0];
    const int64_t ratio = cfg.num_train_timesteps / n;
    fill_coefs(s, ac, final_alpha, ratio, sqrt_fn);
    s.a_t0 = alpha_at(ac, s.timesteps[0]);
    return s;
}

}  // namespace cyclediff
