// latent_code.cpp: safetensors = 8-byte little-endian header length, JSON header, raw little-endian data.
#include "latent_code.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "error.h"
#include "files.h"

namespace cyclediff {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

std::string meta_json(const LatentCode &c) {
    ojson meta;  // the key order of the Python writer
    meta["timesteps"] = c.timesteps;
    meta["num_inference_steps"] = c.num_inference_steps;
    meta["strength"] = c.strength;
    meta["eta"] = c.eta;
    meta["source_prompts"] = c.source_prompts;
    meta["source_guidance_scale"] = c.source_guidance_scale;
    meta["engine_digest"] = c.engine_digest;
    return meta.dump();
}

std::string header_json(const LatentCode &c) {
    const size_t nx = c.x_T.size() * 4, nn = c.noises.size() * 4;
    ojson h;
    h["__metadata__"] = {{"format", kLatentCodeFormat}, {"meta", meta_json(c)}};
    h["noises"] = {{"dtype", "F32"}, {"shape", c.noises.shape}, {"data_offsets", {0, nn}}};
    h["x_T"] = {{"dtype", "F32"}, {"shape", c.x_T.shape}, {"data_offsets", {nn, nn + nx}}};
    std::string text = h.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes, as safetensors writes
    return text;
}

Tensor read_tensor(const json &header, const char *name, const std::string &data, const std::string &path) {
    require(header.contains(name), CYCLEDIFF_ERR_FORMAT, path + " has no tensor " + name);
    const json &t = header.at(name);
    require(t.at("dtype") == "F32", CYCLEDIFF_ERR_FORMAT, path + ": " + name + " is not float32");
    Tensor out(t.at("shape").get<Shape>());
    const auto off = t.at("data_offsets").get<std::vector<size_t>>();
    require(off.size() == 2 && off[0] <= off[1] && off[1] <= data.size() && off[1] - off[0] == out.size() * 4,
            CYCLEDIFF_ERR_FORMAT, path + ": " + name + " data offsets do not match its shape");
    std::memcpy(out.data(), data.data() + off[0], out.size() * 4);
    return out;
}

void read_meta(LatentCode &c, const json &meta) {
    c.timesteps = meta.at("timesteps").get<std::vector<int64_t>>();
    c.num_inference_steps = meta.at("num_inference_steps").get<int>();
    c.strength = meta.at("strength").get<double>();
    c.eta = meta.at("eta").get<double>();
    c.source_prompts = meta.at("source_prompts").get<std::vector<std::string>>();
    c.source_guidance_scale = meta.at("source_guidance_scale").get<double>();
    c.engine_digest = meta.at("engine_digest").get<std::string>();
}

LatentCode parse(const std::string &bytes, const std::string &path) {
    require(bytes.size() >= 8, CYCLEDIFF_ERR_FORMAT, path + " is not a cyclediff latent code file (too short)");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
    require(n <= bytes.size() - 8, CYCLEDIFF_ERR_FORMAT, path + " is not a cyclediff latent code file (bad header)");
    json header = json::parse(bytes.substr(8, n));
    const json &md = header.at("__metadata__");
    require(md.value("format", "") == kLatentCodeFormat, CYCLEDIFF_ERR_FORMAT,
            path + ": format " + md.value("format", "none") + ", expected " + kLatentCodeFormat);
    std::string data = bytes.substr(8 + n);
    LatentCode c;
    c.x_T = read_tensor(header, "x_T", data, path);
    c.noises = read_tensor(header, "noises", data, path);
    read_meta(c, json::parse(md.at("meta").get<std::string>()));
    return c;
}

}  // namespace

void LatentCode::check_consistent() const {
    bool ok = x_T.shape.size() == 4 && noises.shape.size() == 5 &&
              Shape(noises.shape.begin() + 1, noises.shape.end()) == x_T.shape &&
              noises.shape[0] == static_cast<int64_t>(timesteps.size()) &&
              source_prompts.size() == static_cast<size_t>(batch()) && batch() > 0 && !timesteps.empty();
    require(ok, CYCLEDIFF_ERR_CODE_MISMATCH, "latent code tensors have inconsistent shapes " + shape_str(x_T.shape) +
                                                 " and " + shape_str(noises.shape));
}

void LatentCode::save(const std::string &path) const {
    check_consistent();
    const std::string header = header_json(*this);
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    bytes += header;
    bytes.append(reinterpret_cast<const char *>(noises.data()), noises.size() * 4);  // host is little-endian
    bytes.append(reinterpret_cast<const char *>(x_T.data()), x_T.size() * 4);
    file_write_atomic(path, bytes);
}

LatentCode LatentCode::load(const std::string &path) {
    require(file_exists(path), CYCLEDIFF_ERR_IO, "no latent code file " + path);
    LatentCode c;
    try {
        c = parse(file_read(path), path);
    } catch (const json::exception &err) {
        fail(CYCLEDIFF_ERR_FORMAT, path + " is not a cyclediff latent code file (" + err.what() + ")");
    }
    c.check_consistent();
    return c;
}

}  // namespace cyclediff
