// test_manifest.cpp: export-directory checks give distinct status codes; Python-compatible JSON and digest.
#include <nlohmann/json.hpp>

#include "check.h"
#include "cyclediff.h"
#include "files.h"
#include "pyjson.h"
#include "synthetic_export.h"

using json = nlohmann::json;
namespace te = testing_export;

namespace {

std::string g_data, g_work;
int g_checks = 0;

// Create an engine on a variant of the synthetic export; return the status (the engine is freed).
cyclediff_status open_variant(const std::string &name, void (*mutate)(const std::string &dir, json &m),
                              int verify_hashes = 1) {
    const std::string dir = cyclediff::path_join(g_work, name);
    json m = te::write(dir, g_data);
    mutate(dir, m);
    cyclediff_engine_options o = cyclediff_engine_options_default();
    o.executor = "stub";
    o.verify_hashes = verify_hashes;
    cyclediff_engine *e = nullptr;
    cyclediff_status s = cyclediff_engine_create(dir.c_str(), &o, &e);
    if (s != CYCLEDIFF_OK) std::printf("  %-22s -> %s: %s\n", name.c_str(), cyclediff_status_name(s), cyclediff_last_error());
    CHECK_MSG((s == CYCLEDIFF_OK) == (e != nullptr), name + ": engine set iff OK");
    cyclediff_engine_free(e);
    ++g_checks;
    return s;
}

void expect(const std::string &name, void (*mutate)(const std::string &, json &), cyclediff_status want,
            int verify_hashes = 1) {
    cyclediff_status got = open_variant(name, mutate, verify_hashes);
    CHECK_MSG(got == want, name + ": got " + cyclediff_status_name(got) + ", want " + cyclediff_status_name(want));
}

void check_status_codes() {
    expect("valid", [](const std::string &, json &) {}, CYCLEDIFF_OK);
    expect("no_manifest", [](const std::string &d, json &) { te::remove_tree(d + "/manifest.json"); },
           CYCLEDIFF_ERR_NOT_AN_EXPORT);
    expect("schema_2", [](const std::string &d, json &m) { m["schema_version"] = 2; te::write_manifest(d, m); },
           CYCLEDIFF_ERR_SCHEMA_VERSION);
    expect("schema_missing", [](const std::string &d, json &m) { m.erase("schema_version"); te::write_manifest(d, m); },
           CYCLEDIFF_ERR_SCHEMA_VERSION);
    expect("bad_json", [](const std::string &d, json &) { te::write_text(d + "/manifest.json", "{\"schema_version\": 1,"); },
           CYCLEDIFF_ERR_MANIFEST);
    expect("no_dims", [](const std::string &d, json &m) { m.erase("dims"); te::write_manifest(d, m); },
           CYCLEDIFF_ERR_MANIFEST);
    expect("dims_wrong_type", [](const std::string &d, json &m) { m["dims"]["vae_scale"] = "8"; te::write_manifest(d, m); },
           CYCLEDIFF_ERR_MANIFEST);
    expect("tokenizer_missing", [](const std::string &d, json &) { te::remove_tree(d + "/tokenizer/merges.txt"); },
           CYCLEDIFF_ERR_FILE_MISSING);
    expect("tokenizer_changed", [](const std::string &d, json &) { te::write_text(d + "/tokenizer/merges.txt", "#version: 0.2\n"); },
           CYCLEDIFF_ERR_HASH_MISMATCH);
    expect("program_missing", [](const std::string &d, json &) { te::remove_tree(d + "/torchscript/unet.pt"); },
           CYCLEDIFF_ERR_FILE_MISSING);
    expect("program_changed", [](const std::string &d, json &) { te::write_text(d + "/torchscript/unet.pt", "changed"); },
           CYCLEDIFF_ERR_HASH_MISMATCH);
    expect("program_changed_no_verify", [](const std::string &d, json &) { te::write_text(d + "/torchscript/unet.pt", "x"); },
           CYCLEDIFF_OK, 0);
    expect("no_torchscript", [](const std::string &d, json &m) { m["extra"] = json::object(); te::write_manifest(d, m); },
           CYCLEDIFF_ERR_UNSUPPORTED);
    expect("bad_scheduler", [](const std::string &d, json &m) {
        m["scheduler"]["timestep_spacing"] = "karras";
        te::write_manifest(d, m);
    }, CYCLEDIFF_ERR_UNSUPPORTED);
    expect("bad_tokenizer", [](const std::string &d, json &m) {
        te::write_text(d + "/tokenizer/vocab.json", "[1, 2]");
        m["tokenizer_files"]["vocab.json"] = cyclediff::sha256_hex("[1, 2]");
        te::write_manifest(d, m);
    }, CYCLEDIFF_ERR_TOKENIZER);
}

void check_message_hint() {
    const std::string dir = cyclediff::path_join(g_work, "hint");
    json m = te::write(dir, g_data);
    m["schema_version"] = 99;
    te::write_manifest(dir, m);
    cyclediff_engine *e = nullptr;
    cyclediff_engine_create(dir.c_str(), nullptr, &e);
    CHECK_MSG(std::string(cyclediff_last_error()).find("re-run `cyclediff-export`") != std::string::npos,
              std::string("schema message hints at re-exporting: ") + cyclediff_last_error());
    ++g_checks;
}

void check_python_json() {
    const std::pair<double, const char *> floats[] = {
        {0.00085, "0.00085"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {1e16, "1e+16"}, {0.1, "0.1"}, {1.0, "1.0"},
        {-0.0, "-0.0"}, {5e-324, "5e-324"}, {1e22, "1e+22"}, {1234567890123456.0, "1234567890123456.0"},
        {12345678901234567.0, "1.2345678901234568e+16"}, {0.18215, "0.18215"}, {123.456, "123.456"}, {2.5e-5, "2.5e-05"}};
    for (const auto &[v, want] : floats) {
        CHECK_MSG(cyclediff::py_float_repr(v) == want, cyclediff::py_float_repr(v) + " != " + want);
        ++g_checks;
    }
    json j = json::parse(R"({"b": [1, 2.5, "\u00e9\ud83d\ude00\n\u007f"], "a": null, "c": true, "\u00e9": {}})");
    const std::string want = R"({"a": null, "b": [1, 2.5, "\u00e9\ud83d\ude00\n\u007f"], "c": true, "\u00e9": {}})";
    CHECK_MSG(cyclediff::py_json_dumps(j) == want, cyclediff::py_json_dumps(j));
    ++g_checks;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    g_data = argv[1];
    g_work = argv[2];
    check_status_codes();
    check_message_hint();
    check_python_json();
    te::remove_tree(g_work);
    return check::finish("test_manifest", g_checks);
}
