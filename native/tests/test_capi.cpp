// test_capi.cpp: the C ABI on bad input: NULLs, wrong sizes, out-of-range parameters -> status codes, never a
// crash; plus its contracts (thread-local errors, code save/load, edit == encode + decode) on the stub executor.
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"
#include "cyclediff.h"
#include "dtype.h"
#include "error.h"
#include "files.h"
#include "synthetic_export.h"

namespace te = testing_export;

namespace {

int g_checks = 0;
constexpr int kW = 8, kH = 12;  // multiples of vae_scale 2 x unet_downscale 2
std::vector<uint8_t> g_rgb(kW * kH * 3);

#define EXPECT_STATUS(call, want)                                                                        \
    do {                                                                                                 \
        cyclediff_status s_ = (call);                                                                    \
        ++g_checks;                                                                                      \
        CHECK_MSG(s_ == (want), std::string(#call) + " -> " + cyclediff_status_name(s_) + " (" +        \
                                    cyclediff_last_error() + "), want " + cyclediff_status_name(want));  \
        if (s_ != CYCLEDIFF_OK) CHECK_MSG(*cyclediff_last_error() != '\0', "a failure sets the message"); \
    } while (0)

cyclediff_params quick() {
    cyclediff_params p = cyclediff_params_default();
    p.num_inference_steps = 5;
    return p;
}

cyclediff_code *encode(cyclediff_engine *e, const cyclediff_params &p) {
    cyclediff_code *code = nullptr;
    EXPECT_STATUS(cyclediff_encode(e, g_rgb.data(), kW, kH, 3 * kW, "a dog", &p, nullptr, &code), CYCLEDIFF_OK);
    return code;
}

void check_defaults() {
    cyclediff_params p = cyclediff_params_default();
    CHECK(p.strength == 0.8 && p.num_inference_steps == 50 && p.guidance_scale == 7.5 && p.source_guidance_scale == 1.0 &&
          p.eta == 0.1 && p.seed == 0 && p.num_images_per_prompt == 1 && p.clip_skip == -1);
    cyclediff_engine_options o = cyclediff_engine_options_default();
    CHECK(std::strcmp(o.executor, "auto") == 0 && o.max_batch == 16 && o.num_threads == 0 && o.verify_hashes == 1 &&
          o.dtype == nullptr);
    CHECK(std::strcmp(cyclediff_status_name(CYCLEDIFF_ERR_HASH_MISMATCH), "CYCLEDIFF_ERR_HASH_MISMATCH") == 0);
    CHECK(std::strcmp(cyclediff_status_name(static_cast<cyclediff_status>(999)), "CYCLEDIFF_ERR_UNKNOWN") == 0);
    g_checks += 4;
}

void check_create(const std::string &dir) {
    cyclediff_engine *e = nullptr;
    cyclediff_engine_options o = cyclediff_engine_options_default();
    EXPECT_STATUS(cyclediff_engine_create(nullptr, nullptr, &e), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), nullptr, nullptr), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    o.max_batch = 0;
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), &o, &e), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    o = cyclediff_engine_options_default();
    o.executor = "no-such-executor";
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), &o, &e), CYCLEDIFF_ERR_EXECUTOR);
    CHECK(e == nullptr);
    o = cyclediff_engine_options_default();
    o.dtype = "fp64";
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), &o, &e), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    CHECK(std::strstr(cyclediff_last_error(), "dtype must be \"fp32\", \"bf16\", \"fp16\"") != nullptr);
    o.dtype = "bf16";  // the stub, like torch, runs fp32 only
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), &o, &e), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    CHECK(std::strstr(cyclediff_last_error(), "bf16 runs on executor \"openvino\"") != nullptr);
    g_checks += 2;
    EXPECT_STATUS(cyclediff_engine_get_info(nullptr, nullptr), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    cyclediff_engine_free(nullptr);
    cyclediff_code_free(nullptr);
}

// bf16 on a CPU whose capabilities lack BF16 (what OpenVINO reports there) is refused with the fix.
void check_bf16_refusal() {
    try {
        cyclediff::require_bf16_cpu({"FP32", "INT8", "BIN", "EXPORT_IMPORT"});
        CHECK_MSG(false, "bf16 without BF16 in the CPU's capabilities is refused");
    } catch (const cyclediff::Error &err) {
        CHECK_EQ(err.status(), CYCLEDIFF_ERR_UNSUPPORTED);
        CHECK(std::strstr(err.what(), "AVX512_BF16 or AMX") != nullptr && std::strstr(err.what(), "Use dtype \"fp32\""));
    }
    cyclediff::require_bf16_cpu({"FP32", "BF16"});
    g_checks += 3;
}

void check_encode_args(cyclediff_engine *e) {
    cyclediff_code *c = nullptr;
    const uint8_t *px = g_rgb.data();
    const cyclediff_params ok = quick();
    EXPECT_STATUS(cyclediff_encode(nullptr, px, kW, kH, 3 * kW, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, nullptr, kW, kH, 3 * kW, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, kW, kH, 3 * kW, nullptr, &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, kW, kH, 3 * kW, "x", &ok, nullptr, nullptr), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, 0, kH, 3 * kW, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, -4, kH, 3 * kW, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, kW, kH, 3 * kW - 1, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_encode(e, px, kW - 2, kH, 3 * kW, "x", &ok, nullptr, &c), CYCLEDIFF_ERR_IMAGE_SIZE);
    EXPECT_STATUS(cyclediff_encode(e, px, kW, kH, 3 * kW, "bad \xff\xfe utf-8", &ok, nullptr, &c),
                  CYCLEDIFF_ERR_INVALID_ARGUMENT);
    cyclediff_params eta0 = ok;
    eta0.eta = 0;  // the source prompt is never tokenized at eta = 0, but still stored in the code
    EXPECT_STATUS(cyclediff_encode(e, px, kW, kH, 3 * kW, "\xc3(", &eta0, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    CHECK(c == nullptr);
}

void expect_bad_param(cyclediff_engine *e, void (*mutate)(cyclediff_params &)) {
    cyclediff_params p = quick();
    mutate(p);
    cyclediff_code *c = nullptr;
    EXPECT_STATUS(cyclediff_encode(e, g_rgb.data(), kW, kH, 3 * kW, "x", &p, nullptr, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    std::vector<uint8_t> out(kW * kH * 3);
    EXPECT_STATUS(cyclediff_edit(e, g_rgb.data(), kW, kH, 3 * kW, "x", "y", &p, nullptr, out.data(), out.size(), 3 * kW),
                  CYCLEDIFF_ERR_INVALID_ARGUMENT);
}

void check_params(cyclediff_engine *e) {
    expect_bad_param(e, [](cyclediff_params &p) { p.strength = 0; });
    expect_bad_param(e, [](cyclediff_params &p) { p.strength = 1.5; });
    expect_bad_param(e, [](cyclediff_params &p) { p.strength = NAN; });
    expect_bad_param(e, [](cyclediff_params &p) { p.strength = 0.1; });  // int(5 * 0.1) = 0 steps
    expect_bad_param(e, [](cyclediff_params &p) { p.num_inference_steps = 0; });
    expect_bad_param(e, [](cyclediff_params &p) { p.num_inference_steps = 1001; });  // > training timesteps
    expect_bad_param(e, [](cyclediff_params &p) { p.eta = -0.1; });
    expect_bad_param(e, [](cyclediff_params &p) { p.eta = INFINITY; });
    expect_bad_param(e, [](cyclediff_params &p) { p.guidance_scale = NAN; });
    expect_bad_param(e, [](cyclediff_params &p) { p.source_guidance_scale = -INFINITY; });
    expect_bad_param(e, [](cyclediff_params &p) { p.num_images_per_prompt = 0; });
    expect_bad_param(e, [](cyclediff_params &p) { p.clip_skip = -2; });
    expect_bad_param(e, [](cyclediff_params &p) { p.clip_skip = 2; });  // text_states 3: 0 or 1 only
}

void check_draws(cyclediff_engine *e) {
    const cyclediff_params p = quick();
    size_t n[3] = {0, 0, 0};
    EXPECT_STATUS(cyclediff_draws_count(e, kW, kH, &p, &n[0], &n[1], &n[2]), CYCLEDIFF_OK);
    CHECK(n[0] == 4 * 6 * 4 && n[1] == n[0] && n[2] == 3 * n[0]);  // 4 steps, the last draws nothing
    EXPECT_STATUS(cyclediff_draws_count(e, kW - 2, kH, &p, &n[0], &n[1], &n[2]), CYCLEDIFF_ERR_IMAGE_SIZE);
    EXPECT_STATUS(cyclediff_draws_count(e, kW, kH, &p, nullptr, &n[1], &n[2]), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    std::vector<float> a(n[0], 0.5f), b(n[1], -0.5f), s(n[2], 0.25f);
    cyclediff_code *c = nullptr;
    cyclediff_draws d{a.data(), a.size(), b.data(), b.size(), s.data(), s.size() - 1};
    EXPECT_STATUS(cyclediff_encode(e, g_rgb.data(), kW, kH, 3 * kW, "x", &p, &d, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    d = cyclediff_draws{nullptr, a.size(), b.data(), b.size(), s.data(), s.size()};
    EXPECT_STATUS(cyclediff_encode(e, g_rgb.data(), kW, kH, 3 * kW, "x", &p, &d, &c), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    d = cyclediff_draws{a.data(), a.size(), b.data(), b.size(), s.data(), s.size()};
    EXPECT_STATUS(cyclediff_encode(e, g_rgb.data(), kW, kH, 3 * kW, "x", &p, &d, &c), CYCLEDIFF_OK);
    cyclediff_code_free(c);
}

void check_decode_buffers(cyclediff_engine *e, cyclediff_code *code) {
    const cyclediff_params p = quick();
    int32_t b = 0, w = 0, h = 0;
    EXPECT_STATUS(cyclediff_output_size(e, code, &b, &w, &h), CYCLEDIFF_OK);
    CHECK(b == 1 && w == kW && h == kH);
    std::vector<uint8_t> out(static_cast<size_t>(kW) * kH * 3);
    std::vector<float> f(out.size());
    EXPECT_STATUS(cyclediff_decode(e, code, "a cat", &p, out.data(), out.size() - 1, 3 * kW), CYCLEDIFF_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(cyclediff_decode(e, code, "a cat", &p, out.data(), out.size(), 3 * kW - 1), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_decode(e, code, "a cat", &p, nullptr, out.size(), 3 * kW), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_decode(e, code, nullptr, &p, out.data(), out.size(), 3 * kW), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_decode(e, nullptr, "a cat", &p, out.data(), out.size(), 3 * kW), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    EXPECT_STATUS(cyclediff_decode_f32(e, code, "a cat", &p, f.data(), f.size() - 1), CYCLEDIFF_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(cyclediff_decode(e, code, "a cat", &p, out.data(), out.size(), 3 * kW), CYCLEDIFF_OK);
    CHECK(*cyclediff_last_error() == '\0');
    EXPECT_STATUS(cyclediff_decode_f32(e, code, "a cat", &p, f.data(), f.size()), CYCLEDIFF_OK);
    int off = 0;
    for (size_t i = 0; i < f.size(); ++i) off += out[i] != static_cast<uint8_t>(std::nearbyint(f[i] * 255.0f));
    CHECK_EQ(off, 0);
    cyclediff_code_info info{};
    EXPECT_STATUS(cyclediff_code_get_info(code, &info), CYCLEDIFF_OK);
    std::vector<float> x(1);
    EXPECT_STATUS(cyclediff_code_copy_x_T(code, x.data(), x.size()), CYCLEDIFF_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(cyclediff_code_copy_noises(code, nullptr, 0), CYCLEDIFF_ERR_INVALID_ARGUMENT);
}

std::vector<float> decode_f32(cyclediff_engine *e, const cyclediff_code *code, const cyclediff_params &p) {
    std::vector<float> f(static_cast<size_t>(p.num_images_per_prompt) * kW * kH * 3);
    EXPECT_STATUS(cyclediff_decode_f32(e, code, "a cat", &p, f.data(), f.size()), CYCLEDIFF_OK);
    return f;
}

void check_save_load(cyclediff_engine *e, cyclediff_engine *other, cyclediff_code *code, const std::string &work) {
    const cyclediff_params p = quick();
    const std::string path = work + "/code.safetensors";
    EXPECT_STATUS(cyclediff_code_save(code, path.c_str()), CYCLEDIFF_OK);
    EXPECT_STATUS(cyclediff_code_save(code, (work + "/no/such/dir/code.safetensors").c_str()), CYCLEDIFF_ERR_IO);
    EXPECT_STATUS(cyclediff_code_save(nullptr, path.c_str()), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    cyclediff_code *back = nullptr;
    EXPECT_STATUS(cyclediff_code_load(path.c_str(), &back), CYCLEDIFF_OK);
    CHECK_MSG(decode_f32(e, back, p) == decode_f32(e, code, p), "a saved and loaded code decodes the same");
    EXPECT_STATUS(cyclediff_output_size(other, back, nullptr, nullptr, nullptr), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    int32_t b, w, h;
    EXPECT_STATUS(cyclediff_output_size(other, back, &b, &w, &h), CYCLEDIFF_ERR_CODE_MISMATCH);
    std::vector<float> f(kW * kH * 3);
    EXPECT_STATUS(cyclediff_decode_f32(other, back, "a cat", &p, f.data(), f.size()), CYCLEDIFF_ERR_CODE_MISMATCH);
    cyclediff_code_free(back);
    back = nullptr;
    EXPECT_STATUS(cyclediff_code_load((work + "/missing.safetensors").c_str(), &back), CYCLEDIFF_ERR_IO);
    const std::string junks[] = {"", "short", std::string("\x10\0\0\0\0\0\0\0{\"a\": 1}        ", 24),
                                 std::string("\xff\xff\xff\xff\0\0\0\0{}", 10)};
    for (const std::string &junk : junks) {
        te::write_text(work + "/junk.safetensors", junk);
        EXPECT_STATUS(cyclediff_code_load((work + "/junk.safetensors").c_str(), &back), CYCLEDIFF_ERR_FORMAT);
        CHECK(back == nullptr);
    }
}

void check_edit_is_encode_decode(cyclediff_engine *e) {
    cyclediff_params p = quick();
    p.num_images_per_prompt = 2;
    p.source_guidance_scale = 2.0;
    p.seed = 42;
    std::vector<float> edited(2 * kW * kH * 3);
    EXPECT_STATUS(cyclediff_edit_f32(e, g_rgb.data(), kW, kH, 3 * kW, "a dog", "a cat", &p, nullptr, edited.data(),
                                     edited.size()), CYCLEDIFF_OK);
    cyclediff_code *code = encode(e, p);  // encode alone: guided since source_guidance_scale != 1, as edit here
    CHECK_MSG(code != nullptr && decode_f32(e, code, p) == edited, "edit == encode + decode");
    cyclediff_code_free(code);
}

void check_thread_local_errors(cyclediff_engine *e) {
    EXPECT_STATUS(cyclediff_engine_get_info(e, nullptr), CYCLEDIFF_ERR_INVALID_ARGUMENT);
    std::string other_thread = "unset";
    std::thread([&] { other_thread = cyclediff_last_error(); }).join();
    CHECK_MSG(other_thread.empty(), "another thread does not see this thread's error");
    CHECK(*cyclediff_last_error() != '\0');
    std::vector<std::thread> threads;  // concurrent calls on one engine are serialized
    std::vector<cyclediff_status> results(4, CYCLEDIFF_ERR_INTERNAL);
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&, i] {
            cyclediff_params p = quick();
            p.seed = static_cast<uint64_t>(i);
            std::vector<uint8_t> out(kW * kH * 3);
            results[i] = cyclediff_edit(e, g_rgb.data(), kW, kH, 3 * kW, "a", "b", &p, nullptr, out.data(), out.size(), 3 * kW);
        });
    for (auto &t : threads) t.join();
    for (cyclediff_status s : results) CHECK_EQ(s, CYCLEDIFF_OK);
    g_checks += 6;
}

cyclediff_engine *open(const std::string &dir) {
    cyclediff_engine *e = nullptr;
    cyclediff_engine_options o = cyclediff_engine_options_default();
    o.executor = "stub";
    o.max_batch = 3;  // forces chunking of the encoder's UNet calls
    EXPECT_STATUS(cyclediff_engine_create(dir.c_str(), &o, &e), CYCLEDIFF_OK);
    return e;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const std::string data = argv[1], work = argv[2];
    for (size_t i = 0; i < g_rgb.size(); ++i) g_rgb[i] = static_cast<uint8_t>(i * 37 % 251);
    auto manifest = te::write(work + "/export_a", data);
    manifest["sample_size"] = 32;  // another export: another digest
    te::write(work + "/export_b", data);
    te::write_manifest(work + "/export_b", manifest);
    check_defaults();
    check_create(work + "/export_a");
    check_bf16_refusal();
    cyclediff_engine *e = open(work + "/export_a"), *other = open(work + "/export_b");
    if (!e || !other) return check::finish("test_capi", g_checks);
    check_encode_args(e);
    check_params(e);
    check_draws(e);
    cyclediff_code *code = encode(e, quick());
    if (code) {
        check_decode_buffers(e, code);
        check_save_load(e, other, code, work);
    }
    cyclediff_code_free(code);
    check_edit_is_encode_decode(e);
    check_thread_local_errors(e);
    cyclediff_engine_free(e);
    cyclediff_engine_free(other);
    te::remove_tree(work);
    return check::finish("test_capi", g_checks);
}
