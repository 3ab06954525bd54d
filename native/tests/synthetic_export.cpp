// synthetic_export.cpp: writes a manifest in the Python exporter's layout, with real sha256 hashes.
#include "synthetic_export.h"

#include <filesystem>

#include "files.h"

namespace testing_export {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_text(const std::string &path, const std::string &text) {
    fs::create_directories(fs::path(path).parent_path());
    cyclediff::file_write_atomic(path, text);
}

void write_manifest(const std::string &dir, const json &manifest) {
    write_text(cyclediff::path_join(dir, "manifest.json"), manifest.dump(2));
}

void remove_tree(const std::string &dir) { fs::remove_all(dir); }

static json model_entry(const std::string &name) {
    return {{"file", name + ".onnx"}, {"sha256", "none"}, {"data_files", json::array()},
            {"inputs", json::array()}, {"outputs", json::array()}};
}

json write(const std::string &dir, const std::string &data_dir) {
    remove_tree(dir);
    json tok = json::object();
    for (const char *f : {"vocab.json", "merges.txt", "tokenizer_config.json"}) {
        std::string bytes = cyclediff::file_read(cyclediff::path_join(data_dir, std::string("tokenizer/") + f));
        write_text(cyclediff::path_join(dir, std::string("tokenizer/") + f), bytes);
        tok[f] = cyclediff::sha256_hex(bytes);
    }
    json ts = json::object(), models = json::object();
    for (const char *m : {"text_encoder", "unet", "vae_encoder", "vae_decoder"}) {
        std::string file = std::string("torchscript/") + m + ".pt", bytes = std::string("stub program ") + m;
        write_text(cyclediff::path_join(dir, file), bytes);
        ts[m] = {{"file", file}, {"sha256", cyclediff::sha256_hex(bytes)}};
        models[m] = model_entry(m);
    }
    json manifest = {
        {"schema_version", 1},
        {"checkpoint", {{"spec", "synthetic"}, {"kind", "builtin"}, {"path", "/nonexistent"}, {"config", nullptr}}},
        {"scheduler", {{"num_train_timesteps", 1000}, {"beta_start", 0.00085}, {"beta_end", 0.012},
                       {"beta_schedule", "scaled_linear"}, {"trained_betas", nullptr}, {"set_alpha_to_one", false},
                       {"steps_offset", 1}, {"timestep_spacing", "leading"}}},
        {"dims", {{"text_len", 77}, {"text_width", 8}, {"text_states", 3}, {"latent_channels", 4}, {"vae_scale", 2},
                  {"unet_downscale", 2}}},
        {"vae_scaling_factor", 0.18215}, {"sample_size", 16}, {"opset", 18}, {"models", models},
        {"tokenizer_files", tok}, {"tools", json::object()}, {"extra", {{"torchscript", ts}}}};
    write_manifest(dir, manifest);
    return manifest;
}

}  // namespace testing_export
