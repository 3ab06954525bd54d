// synthetic_export.h: small export directories written by the tests themselves (stub executor, no Python).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace testing_export {

// DIR/manifest.json + tokenizer/ (copied from data_dir/tokenizer) + torchscript/*.pt placeholders, all hashed.
// dims: text_len 77, text_width 8, text_states 3, latent_channels 4, vae_scale 2, unet_downscale 2.
nlohmann::json write(const std::string &dir, const std::string &data_dir);
void write_manifest(const std::string &dir, const nlohmann::json &manifest);
void write_text(const std::string &path, const std::string &text);
void remove_tree(const std::string &dir);

}  // namespace testing_export
