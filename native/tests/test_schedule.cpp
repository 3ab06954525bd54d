// test_schedule.cpp: C++ DDIM tables == runtime/core/schedule.py's, bit for bit, on the golden configs.
#include <nlohmann/json.hpp>

#include <cstring>

#include "check.h"
#include "error.h"
#include "files.h"
#include "schedule.h"

using namespace cyclediff;
using json = nlohmann::json;

static int64_t ulps(float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::llabs(static_cast<int64_t>(ia) - ib);  // same-sign floats (all of these are >= 0)
}

// How many values are more than max_ulps apart.
static int count_mismatches(const std::vector<float> &got, const json &want, int64_t max_ulps = 0) {
    std::vector<double> w = want.get<std::vector<double>>();
    if (w.size() != got.size()) return static_cast<int>(std::max(w.size(), got.size()));
    int bad = 0;
    for (size_t i = 0; i < w.size(); ++i) bad += ulps(static_cast<float>(w[i]), got[i]) > max_ulps ? 1 : 0;
    return bad;
}

static int check_table(const SchedulerConfig &cfg, const json &t, const std::string &name) {
    auto req = t.at("request");
    std::string where = name + " " + req.dump();
    if (t.contains("error")) {
        bool threw = false;
        try {
            StepTable::build(cfg, req[0].get<int>(), req[1].get<double>(), req[2].get<double>());
        } catch (const Error &) {
            threw = true;
        }
        CHECK_MSG(threw, where + ": Python refused this schedule");
        return 1;
    }
    StepTable s = StepTable::build(cfg, req[0].get<int>(), req[1].get<double>(), req[2].get<double>());
    CHECK_MSG(s.timesteps == t.at("timesteps").get<std::vector<int64_t>>(), where + " timesteps");
    CHECK_MSG(s.draws == t.at("draws").get<std::vector<bool>>(), where + " draws");
    CHECK_MSG(s.a_t0 == static_cast<float>(t.at("a_t0").get<double>()), where + " a_t0");
    const std::pair<const char *, const std::vector<float> *> cols[] = {
        {"sqrt_a", &s.sqrt_a}, {"sqrt_b", &s.sqrt_b}, {"sqrt_a_prev", &s.sqrt_a_prev},
        {"sigma", &s.sigma}, {"sigma_den", &s.sigma_den}, {"dir_coef", &s.dir_coef}};
    // torch's CPU sqrt (MKL vector math) is up to 1 ulp off the correctly rounded std::sqrt used here;
    // sigma = eta * sqrt(var) doubles that, and dir_coef = sqrt(1 - a_prev - sigma^2) adds sigma's.
    const int64_t tolerance[] = {1, 1, 1, 2, 2, 3};
    for (size_t c = 0; c < 6; ++c) {
        const auto &[col, values] = cols[c];
        int bad = count_mismatches(*values, t.at(col), tolerance[c]);
        CHECK_MSG(bad == 0, where + " " + col + ": " + std::to_string(bad) + " values differ");
    }
    return 4 + 6;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    json golden = json::parse(file_read(path_join(argv[1], "schedule_golden.json")));
    int checks = 0;
    for (const json &c : golden.at("cases")) {
        SchedulerConfig cfg = SchedulerConfig::from_json(c.at("config"));
        if (c.contains("alphas_cumprod")) {  // the committed golden file leaves it out (size)
            int bad = count_mismatches(cfg.alphas_cumprod(), c.at("alphas_cumprod"));
            CHECK_MSG(bad == 0, c.at("name").get<std::string>() + " alphas_cumprod: " + std::to_string(bad) + " differ");
            ++checks;
        }
        for (const json &t : c.at("tables")) checks += check_table(cfg, t, c.at("name").get<std::string>());
    }
    bool refused = false;
    try {
        SchedulerConfig::from_json(json{{"beta_schedule", "sigmoid"}});
    } catch (const Error &e) {
        refused = e.status() == CYCLEDIFF_ERR_UNSUPPORTED;
    }
    CHECK(refused);
    return check::finish("test_schedule", checks + 1);
}
