// manifest.h: manifest.json of an export directory, read and checked as export/manifest.py does.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cyclediff {

constexpr int kSchemaVersion = 1;

// The checkpoint's fixed sizes (export/models.py Dims).
struct Dims {
    int text_len = 77;
    int text_width = 768;
    int text_states = 13;     // text encoder layers + 1
    int latent_channels = 4;
    int vae_scale = 8;        // image side / latent side
    int unet_downscale = 1;   // latent sides must be multiples of this
};

struct FileEntry {
    std::string file;    // relative to the export directory
    std::string sha256;  // hex: of file then data_files, read one after the other (export sha256_files)
    std::vector<std::string> data_files = {};  // e.g. an IR's .bin, an ONNX graph's external weights
};

struct Manifest {
    std::string folder;
    Dims dims;
    nlohmann::json scheduler;  // SchedulerConfig.to_json()
    double vae_scaling_factor = 0.18215;
    int sample_size = 512;
    std::map<std::string, std::string> tokenizer_files;  // name in DIR/tokenizer -> sha256
    std::map<std::string, FileEntry> models;             // the ONNX graphs: name -> file, data_files, sha256
    nlohmann::json extra;                                // later stages: "torchscript", "tensorrt", "openvino_ir"
    std::string digest;         // Manifest.digest: sha256 of manifest_identity(), as Python computes it
    std::string legacy_digest;  // Manifest.legacy_digest: what codes saved before 0.2 record

    // Reads and parses; NOT_AN_EXPORT, MANIFEST or SCHEMA_VERSION errors. Checks no file.
    static Manifest load(const std::string &folder);
    // extra[key]: {model name: {"file", "sha256"}}; UNSUPPORTED when the export has none.
    std::map<std::string, FileEntry> executor_files(const std::string &key) const;
    // FILE_MISSING / HASH_MISMATCH (hashes only when verify_hashes).
    void verify_tokenizer(bool verify_hashes) const;
    void verify(const std::map<std::string, FileEntry> &files, bool verify_hashes) const;
};

// The Python Manifest.to_json() of a parsed manifest.json (defaults filled, unknown keys dropped).
nlohmann::json manifest_canonical(const nlohmann::json &raw);
// The Python Manifest.identity() of a canonical manifest: what a code's digest covers.
nlohmann::json manifest_identity(const nlohmann::json &canon);

}  // namespace cyclediff
