// manifest.cpp: parse, normalize (for the digest) and verify manifest.json.
#include "manifest.h"

#include "error.h"
#include "files.h"
#include "pyjson.h"

namespace cyclediff {

namespace {

using json = nlohmann::json;

const char *kReexport = "; re-run `cyclediff-export`";

const json &field(const json &obj, const char *key) {
    if (!obj.is_object() || !obj.contains(key))
        fail(CYCLEDIFF_ERR_MANIFEST, std::string("manifest is malformed (no \"") + key + "\")" + kReexport);
    return obj.at(key);
}

json model_canonical(const json &m) {
    json out = json::object();
    out["file"] = field(m, "file").get<std::string>();
    out["sha256"] = field(m, "sha256").get<std::string>();
    out["data_files"] = m.contains("data_files") ? m.at("data_files") : json::array();
    for (const char *key : {"inputs", "outputs"}) {
        json list = json::array();
        for (const json &t : field(m, key))
            list.push_back({{"name", field(t, "name")}, {"dtype", field(t, "dtype")}, {"shape", field(t, "shape")}});
        out[key] = list;
    }
    return out;
}

json dims_canonical(const json &d) {
    json out = json::object();
    for (const char *key : {"text_len", "text_width", "text_states", "latent_channels", "vae_scale"})
        out[key] = field(d, key).get<int64_t>();
    out["unet_downscale"] = d.contains("unet_downscale") ? d.at("unet_downscale").get<int64_t>() : 1;
    return out;
}

Dims dims_from(const json &d) {
    Dims out;
    out.text_len = d.at("text_len").get<int>();
    out.text_width = d.at("text_width").get<int>();
    out.text_states = d.at("text_states").get<int>();
    out.latent_channels = d.at("latent_channels").get<int>();
    out.vae_scale = d.at("vae_scale").get<int>();
    out.unet_downscale = d.at("unet_downscale").get<int>();
    bool ok = out.text_len > 0 && out.text_width > 0 && out.text_states > 1 && out.latent_channels > 0 &&
              out.vae_scale > 0 && out.unet_downscale > 0;
    require(ok, CYCLEDIFF_ERR_MANIFEST, std::string("manifest dims are out of range") + kReexport);
    return out;
}

json parse_file(const std::string &folder) {
    std::string path = path_join(folder, "manifest.json");
    if (!file_exists(path))
        fail(CYCLEDIFF_ERR_NOT_AN_EXPORT, folder + " is not a cyclediff export (no manifest.json); run "
                                          "`cyclediff-export --out " + folder + "`");
    json raw = json::parse(file_read(path), nullptr, false);
    require(!raw.is_discarded() && raw.is_object(), CYCLEDIFF_ERR_MANIFEST,
            path + " is not valid JSON" + kReexport);
    return raw;
}

void check_version(const json &raw) {
    bool ok = raw.contains("schema_version") && raw["schema_version"].is_number_integer() &&
              raw["schema_version"].get<int64_t>() == kSchemaVersion;
    if (!ok)
        fail(CYCLEDIFF_ERR_SCHEMA_VERSION,
             "manifest schema_version " + (raw.contains("schema_version") ? raw["schema_version"].dump() : "None") +
                 " is not the " + std::to_string(kSchemaVersion) + " this cyclediff reads; re-run `cyclediff-export`"
                 " with this version (or use the libcyclediff that matches the exporter)");
}

void check_file(const std::string &folder, const FileEntry &entry, const std::string &what, bool hashes) {
    std::vector<std::string> paths{path_join(folder, entry.file)};
    for (const std::string &f : entry.data_files) paths.push_back(path_join(folder, f));
    for (const std::string &path : paths)
        if (!file_exists(path))
            fail(CYCLEDIFF_ERR_FILE_MISSING, what + ": missing " + path + "; re-run `cyclediff-export` into " + folder);
    if (hashes && sha256_files(paths) != entry.sha256)
        fail(CYCLEDIFF_ERR_HASH_MISMATCH, what + ": " + paths[0] + (paths.size() > 1 ? " (with its data files)" : "") +
                                              " does not match its recorded hash (changed or truncated); re-export");
}

}  // namespace

json manifest_canonical(const json &raw) {
    json out = json::object();
    out["schema_version"] = raw.at("schema_version");
    for (const char *key : {"checkpoint", "scheduler", "tokenizer_files", "tools"}) out[key] = field(raw, key);
    out["dims"] = dims_canonical(field(raw, "dims"));
    out["vae_scaling_factor"] = field(raw, "vae_scaling_factor").get<double>();  // float(...): 1 -> 1.0
    out["sample_size"] = field(raw, "sample_size").get<int64_t>();
    out["opset"] = field(raw, "opset").get<int64_t>();
    json models = json::object();
    for (auto it = field(raw, "models").begin(); it != field(raw, "models").end(); ++it)
        models[it.key()] = model_canonical(it.value());
    out["models"] = models;
    out["extra"] = raw.contains("extra") ? raw.at("extra") : json::object();
    return out;
}

json manifest_identity(const json &canon) {
    // Python's Manifest.identity(): the models' content and the schedule, nothing incidental.
    const json &ckpt = canon.at("checkpoint");
    json loras = json::array();
    if (ckpt.is_object() && ckpt.contains("loras"))
        for (const json &lora : ckpt.at("loras"))
            loras.push_back({{"sha256", field(lora, "sha256")}, {"scale", field(lora, "scale").get<double>()}});
    json content = ckpt.is_object() && ckpt.contains("content_hash") ? ckpt.at("content_hash") : json(nullptr);
    json models = json::object();
    for (auto it = canon.at("models").begin(); it != canon.at("models").end(); ++it)
        models[it.key()] = it.value().at("sha256");
    return {{"schema_version", canon.at("schema_version")},
            {"checkpoint", {{"content_hash", content}, {"loras", loras}}},
            {"scheduler", canon.at("scheduler")},
            {"dims", canon.at("dims")},
            {"vae_scaling_factor", canon.at("vae_scaling_factor")},
            {"sample_size", canon.at("sample_size")},
            {"models", models},
            {"tokenizer_files", canon.at("tokenizer_files")}};
}

Manifest Manifest::load(const std::string &folder) {
    json raw = parse_file(folder);
    check_version(raw);
    Manifest m;
    try {
        json canon = manifest_canonical(raw);
        m.folder = folder;
        m.dims = dims_from(canon["dims"]);
        m.scheduler = canon["scheduler"];
        m.vae_scaling_factor = canon["vae_scaling_factor"].get<double>();
        m.sample_size = canon["sample_size"].get<int>();
        m.tokenizer_files = canon["tokenizer_files"].get<std::map<std::string, std::string>>();
        for (auto it = canon["models"].begin(); it != canon["models"].end(); ++it)
            m.models[it.key()] = FileEntry{it.value().at("file").get<std::string>(),
                                           it.value().at("sha256").get<std::string>(),
                                           it.value().at("data_files").get<std::vector<std::string>>()};
        m.extra = canon["extra"];
        require(m.extra.is_object(), CYCLEDIFF_ERR_MANIFEST, std::string("manifest extra is not an object") + kReexport);
        m.digest = sha256_hex(py_json_dumps(manifest_identity(canon)));
        m.legacy_digest = sha256_hex(py_json_dumps(canon));
    } catch (const json::exception &err) {
        fail(CYCLEDIFF_ERR_MANIFEST, std::string("manifest is malformed (") + err.what() + ")" + kReexport);
    }
    return m;
}

std::map<std::string, FileEntry> Manifest::executor_files(const std::string &key) const {
    if (!extra.contains(key))
        fail(CYCLEDIFF_ERR_UNSUPPORTED, "export " + folder + " has no \"" + key + "\" programs (manifest extra." + key +
                                            "); re-run `cyclediff-export ... --" + key + "`");
    std::map<std::string, FileEntry> out;
    try {
        for (auto it = extra.at(key).begin(); it != extra.at(key).end(); ++it)
            out[it.key()] = FileEntry{it.value().at("file").get<std::string>(), it.value().at("sha256").get<std::string>()};
    } catch (const json::exception &err) {
        fail(CYCLEDIFF_ERR_MANIFEST, "manifest extra." + key + " is malformed (" + err.what() + ")" + kReexport);
    }
    return out;
}

void Manifest::verify_tokenizer(bool verify_hashes) const {
    for (const auto &[name, sha] : tokenizer_files)
        check_file(folder, FileEntry{"tokenizer/" + name, sha}, "tokenizer file", verify_hashes);
}

void Manifest::verify(const std::map<std::string, FileEntry> &files, bool verify_hashes) const {
    for (const auto &[name, entry] : files) check_file(folder, entry, "model " + name, verify_hashes);
}

}  // namespace cyclediff
