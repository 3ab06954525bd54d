// test_parity.cpp: libcyclediff == the Python runtime, through the C ABI, on the golden cases: same injected
// draws -> same latent code and images; same seed -> same draws (where the executor's seeds are torch's).
// cases.json names the executor and the tolerances (fixture.py BACKENDS): torch vs the Python torch backend
// (max abs diff <= 1e-4, RGB8 equal), openvino vs the Python openvino backend (2e-3, RGB8 within 1/255).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <vector>

#include "check.h"
#include "cyclediff.h"
#include <fstream>
#include <sstream>

using json = nlohmann::json;

namespace {

std::string read_text(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string join(const std::string &root, const std::string &name) { return root + "/" + name; }

double g_tolerance = 1e-4;  // cases.json "tolerance" (older files: the torch executor's)
double g_worst = 0.0;

struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;
};

std::vector<float> floats(const json &j) {
    std::vector<double> d = j.get<std::vector<double>>();
    return std::vector<float>(d.begin(), d.end());
}

double max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

void expect_close(const std::string &what, const std::vector<float> &got, const json &want) {
    const double d = max_abs_diff(got, floats(want));
    g_worst = std::max(g_worst, d);
    std::printf("  %-44s max abs diff %.3g\n", what.c_str(), d);
    CHECK_MSG(d <= g_tolerance, what);
}

cyclediff_params params_of(const json &c) {
    cyclediff_params p = cyclediff_params_default();
    const json &j = c.at("params");
    p.strength = j.value("strength", p.strength);
    p.num_inference_steps = j.value("num_inference_steps", p.num_inference_steps);
    p.guidance_scale = j.value("guidance_scale", p.guidance_scale);
    p.source_guidance_scale = j.value("source_guidance_scale", p.source_guidance_scale);
    p.eta = j.value("eta", p.eta);
    p.num_images_per_prompt = j.value("num_images_per_prompt", p.num_images_per_prompt);
    if (j.contains("clip_skip") && !j["clip_skip"].is_null()) p.clip_skip = j["clip_skip"].get<int>();
    p.seed = c.at("seed").get<uint64_t>();
    return p;
}

struct Draws {
    std::vector<float> n_vae, n0, steps;
    cyclediff_draws view() const {
        return cyclediff_draws{n_vae.data(), n_vae.size(), n0.data(), n0.size(), steps.data(), steps.size()};
    }
};

std::vector<float> code_tensor(const cyclediff_code *code, bool noises) {
    cyclediff_code_info info{};
    cyclediff_code_get_info(code, &info);
    size_t n = static_cast<size_t>(info.batch) * info.latent_channels * info.latent_height * info.latent_width;
    std::vector<float> out(noises ? n * info.num_steps : n);
    cyclediff_status s = noises ? cyclediff_code_copy_noises(code, out.data(), out.size())
                                : cyclediff_code_copy_x_T(code, out.data(), out.size());
    CHECK_EQ(s, CYCLEDIFF_OK);
    return out;
}

std::vector<float> run_case(cyclediff_engine *e, const Image &img, const json &c, const cyclediff_draws *draws,
                            const std::string &root) {
    const cyclediff_params p = params_of(c);
    std::vector<float> out(c.at("images").size());
    const std::string src = c.at("source_prompt"), dst = c.at("prompt");
    if (c.at("op") == "edit") {
        CHECK_EQ(cyclediff_edit_f32(e, img.rgb.data(), img.width, img.height, 3 * img.width, src.c_str(), dst.c_str(), &p,
                                    draws, out.data(), out.size()), CYCLEDIFF_OK);
        return out;
    }
    cyclediff_code *code = nullptr;
    CHECK_EQ(cyclediff_encode(e, img.rgb.data(), img.width, img.height, 3 * img.width, src.c_str(), &p, draws, &code),
             CYCLEDIFF_OK);
    if (code == nullptr) return out;
    const std::string tag = draws ? "injected" : "seeded";
    expect_close(c.at("name").get<std::string>() + " x_T (" + tag + ")", code_tensor(code, false), c.at("x_T"));
    expect_close(c.at("name").get<std::string>() + " noises (" + tag + ")", code_tensor(code, true), c.at("noises"));
    CHECK_EQ(cyclediff_decode_f32(e, code, dst.c_str(), &p, out.data(), out.size()), CYCLEDIFF_OK);
    std::string path = join(root, "cpp_code_" + c.at("name").get<std::string>() + ".safetensors");
    CHECK_EQ(cyclediff_code_save(code, path.c_str()), CYCLEDIFF_OK);
    cyclediff_code_free(code);
    return out;
}

// The code Python saved decodes in C++ to Python's images.
void check_python_code(cyclediff_engine *e, const json &c, const std::string &root) {
    cyclediff_code *code = nullptr;
    std::string path = join(root, c.at("py_code").get<std::string>());
    CHECK_EQ(cyclediff_code_load(path.c_str(), &code), CYCLEDIFF_OK);
    if (code == nullptr) return;
    const cyclediff_params p = params_of(c);
    std::vector<float> out(c.at("images").size());
    CHECK_EQ(cyclediff_decode_f32(e, code, c.at("prompt").get<std::string>().c_str(), &p, out.data(), out.size()),
             CYCLEDIFF_OK);
    expect_close(c.at("name").get<std::string>() + " decode of Python's saved code", out, c.at("images"));
    cyclediff_code_free(code);
}

void check_rgb8(cyclediff_engine *e, const Image &img, const json &c, const Draws &d, int max_byte_diff) {
    const cyclediff_params p = params_of(c);
    const size_t n = c.at("images").size();
    std::vector<uint8_t> rgb(n);
    const cyclediff_draws view = d.view();
    CHECK_EQ(cyclediff_edit(e, img.rgb.data(), img.width, img.height, 3 * img.width,
                            c.at("source_prompt").get<std::string>().c_str(), c.at("prompt").get<std::string>().c_str(),
                            &p, &view, rgb.data(), rgb.size(), 3 * img.width), CYCLEDIFF_OK);
    std::vector<float> want = floats(c.at("images"));
    int off = 0, worst = 0;
    for (size_t i = 0; i < n; ++i) {
        const int diff = std::abs(int(rgb[i]) - int(std::nearbyint(want[i] * 255.0f)));
        off += diff != 0 ? 1 : 0;
        worst = std::max(worst, diff);
    }
    std::printf("  %-44s %d of %zu bytes differ, by at most %d\n",
                (c.at("name").get<std::string>() + " RGB8 output").c_str(), off, n, worst);
    CHECK(worst <= max_byte_diff);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const std::string root = argv[1];
    json golden = json::parse(read_text(join(root, "cases.json")));
    cyclediff_engine *e = nullptr;
    cyclediff_engine_options o = cyclediff_engine_options_default();
    const std::string executor = golden.value("executor", std::string("torch"));
    g_tolerance = golden.value("tolerance", g_tolerance);
    const int rgb8_tolerance = golden.value("rgb8_tolerance", 0);
    const bool seeded = golden.value("seeded", true);
    const std::string dtype = golden.value("dtype", std::string("fp32"));
    o.executor = executor.c_str();
    o.dtype = dtype.c_str();
    o.num_threads = golden.value("threads", 0);  // Python's: the same kernels' partitioning
    if (cyclediff_engine_create(golden.at("export").get<std::string>().c_str(), &o, &e) != CYCLEDIFF_OK) {
        std::fprintf(stderr, "engine: %s\n", cyclediff_last_error());
        return 1;
    }
    cyclediff_engine_info info{};
    cyclediff_engine_get_info(e, &info);
    CHECK_MSG(executor == info.executor, "the engine runs the executor cases.json names");
    CHECK_MSG(dtype == info.dtype, "the engine runs the dtype cases.json names");
    CHECK_MSG(golden.at("digest").get<std::string>() == info.digest, "manifest digest equals Python's Manifest.digest");
    Image img{golden.at("width"), golden.at("height"), golden.at("rgb").get<std::vector<uint8_t>>()};
    int checks = 3;  // the executor, the dtype and the digest
    for (const json &c : golden.at("cases")) {
        std::printf("%s (%s)\n", c.at("name").get<std::string>().c_str(), c.at("op").get<std::string>().c_str());
        Draws d{floats(c.at("draws").at("n_vae")), floats(c.at("draws").at("n0")), floats(c.at("draws").at("steps"))};
        const cyclediff_draws view = d.view();
        expect_close(c.at("name").get<std::string>() + " images (injected draws)", run_case(e, img, c, &view, root), c.at("images"));
        if (seeded)
            expect_close(c.at("name").get<std::string>() + " images (seed " + std::to_string(c.at("seed").get<int>()) + ")",
                         run_case(e, img, c, nullptr, root), c.at("images"));
        if (c.contains("py_code")) check_python_code(e, c, root);
        if (c.at("op") == "edit") check_rgb8(e, img, c, d, rgb8_tolerance);
        checks += seeded ? 4 : 3;
    }
    cyclediff_engine_free(e);
    std::printf("Python vs C++ (%s %s): worst max abs diff %.3g (tolerance %.0e)\n", executor.c_str(), dtype.c_str(),
                g_worst, g_tolerance);
    return check::finish("test_parity", checks);
}
