// tokenizer.cpp: load the tokenizer files and run CLIPTokenizer's pipeline (added tokens, normalizer,
// pre-tokenizers, BPE, BOS/EOS, truncation, padding).
#include "tokenizer.h"

#include <nlohmann/json.hpp>

#include "error.h"
#include "files.h"
#include "pretokenize.h"
#include "unicode.h"

namespace cyclediff {

namespace {

using json = nlohmann::json;

struct Names {
    std::string bos = "<|startoftext|>", eos = "<|endoftext|>", pad = "<|endoftext|>", unk = "<|endoftext|>";
};

json read_json(const std::string &path) {
    json j = json::parse(file_read(path), nullptr, false);
    require(!j.is_discarded(), CYCLEDIFF_ERR_TOKENIZER, path + " is not valid JSON; re-export");
    return j;
}

// A special token in tokenizer_config.json: "text" or {"content": "text", ...}.
void read_name(const json &cfg, const char *key, std::string &out) {
    if (!cfg.contains(key)) return;
    const json &v = cfg.at(key);
    if (v.is_string()) out = v.get<std::string>();
    else if (v.is_object() && v.contains("content")) out = v.at("content").get<std::string>();
}

Names read_names(const std::string &folder, int max_length) {
    Names names;
    for (const char *file : {"special_tokens_map.json", "tokenizer_config.json"}) {  // the config wins
        std::string path = path_join(folder, file);
        if (!file_exists(path)) continue;
        json cfg = read_json(path);
        read_name(cfg, "bos_token", names.bos);
        read_name(cfg, "eos_token", names.eos);
        read_name(cfg, "pad_token", names.pad);
        read_name(cfg, "unk_token", names.unk);
        if (cfg.contains("model_max_length") && cfg["model_max_length"].is_number_integer() &&
            cfg["model_max_length"].get<int64_t>() != max_length)
            fail(CYCLEDIFF_ERR_TOKENIZER, path + ": model_max_length " + cfg["model_max_length"].dump() +
                                              " differs from the text encoder's " + std::to_string(max_length));
    }
    return names;
}

Bpe::Merge split_merge(const std::string &line, const std::string &where) {
    size_t sp = line.find(' ');
    require(sp != std::string::npos && sp > 0 && sp + 1 < line.size(), CYCLEDIFF_ERR_TOKENIZER,
            where + ": bad merge line \"" + line + "\"");
    return {line.substr(0, sp), line.substr(sp + 1)};
}

std::vector<Bpe::Merge> merges_from_json(const json &list) {
    std::vector<Bpe::Merge> merges;
    for (const json &m : list) {
        if (m.is_array() && m.size() == 2) merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        else merges.push_back(split_merge(m.get<std::string>(), "tokenizer.json"));
    }
    return merges;
}

std::vector<Bpe::Merge> merges_from_txt(const std::string &path) {
    std::vector<Bpe::Merge> merges;
    std::string text = file_read(path);
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(at, end - at);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(split_merge(line, path));
        at = end + 1;
    }
    return merges;
}

struct Loaded {
    std::shared_ptr<const Bpe> bpe;
    std::vector<std::pair<std::string, int64_t>> added;
};

Loaded load_tokenizer_json(const std::string &path, const Names &names) {
    json tj = read_json(path);
    const json &model = tj.at("model");
    require(model.value("type", "") == "BPE" && model.value("end_of_word_suffix", "") == "</w>",
            CYCLEDIFF_ERR_TOKENIZER, path + " is not a CLIP BPE tokenizer (model.type BPE, end_of_word_suffix </w>)");
    std::string unk = model.contains("unk_token") && model["unk_token"].is_string() ? model["unk_token"].get<std::string>()
                                                                                     : names.unk;
    auto vocab = model.at("vocab").get<std::unordered_map<std::string, int64_t>>();
    Loaded out{std::make_shared<const Bpe>(std::move(vocab), merges_from_json(model.at("merges")), unk, "</w>"), {}};
    for (const json &t : tj.value("added_tokens", json::array()))
        out.added.emplace_back(t.at("content").get<std::string>(), t.at("id").get<int64_t>());
    return out;
}

Loaded load_vocab_merges(const std::string &folder, const Names &names) {
    std::string vocab_path = path_join(folder, "vocab.json"), merges_path = path_join(folder, "merges.txt");
    require(file_exists(vocab_path) && file_exists(merges_path), CYCLEDIFF_ERR_TOKENIZER,
            folder + " has neither tokenizer.json nor vocab.json + merges.txt; re-export");
    auto vocab = read_json(vocab_path).get<std::unordered_map<std::string, int64_t>>();
    Loaded out{std::make_shared<const Bpe>(std::move(vocab), merges_from_txt(merges_path), names.unk, "</w>"), {}};
    for (const std::string *n : {&names.bos, &names.eos, &names.unk, &names.pad})
        if (out.bpe->id(*n) >= 0) out.added.emplace_back(*n, out.bpe->id(*n));
    return out;
}

int64_t special_id(const Loaded &t, const std::string &name, const char *role) {
    for (const auto &[content, id] : t.added)
        if (content == name) return id;
    int64_t id = t.bpe->id(name);
    require(id >= 0, CYCLEDIFF_ERR_TOKENIZER, std::string(role) + " token \"" + name + "\" is not in the vocab");
    return id;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const Bpe> bpe, std::vector<std::pair<std::u32string, int64_t>> added,
                     int max_length)
    : bpe_(std::move(bpe)), added_(std::move(added)), max_length_(max_length) {}

Tokenizer Tokenizer::load(const std::string &folder, int max_length) {
    require(max_length >= 2, CYCLEDIFF_ERR_TOKENIZER, "max_length must be >= 2");
    try {
        Names names = read_names(folder, max_length);
        std::string tj = path_join(folder, "tokenizer.json");
        Loaded t = file_exists(tj) ? load_tokenizer_json(tj, names) : load_vocab_merges(folder, names);
        std::vector<std::pair<std::u32string, int64_t>> added;
        for (const auto &[content, id] : t.added) added.emplace_back(utf8_decode(content), id);
        Tokenizer tok(t.bpe, std::move(added), max_length);
        tok.bos_ = special_id(t, names.bos, "bos");
        tok.eos_ = special_id(t, names.eos, "eos");
        tok.pad_ = special_id(t, names.pad, "pad");
        return tok;
    } catch (const json::exception &err) {
        fail(CYCLEDIFF_ERR_TOKENIZER, "tokenizer files in " + folder + " are malformed (" + err.what() + ")");
    } catch (const Error &err) {
        if (err.status() == CYCLEDIFF_ERR_INVALID_ARGUMENT) fail(CYCLEDIFF_ERR_TOKENIZER, err.what());
        throw;
    }
}

void Tokenizer::encode_segment(const std::u32string &segment, std::vector<int64_t> &out) const {
    if (segment.empty()) return;
    for (const std::u32string &word : clip_pretokenize(clip_normalize(segment)))
        bpe_->encode_word(byte_level(word), out);
}

std::vector<int64_t> Tokenizer::encode_body(const std::string &text) const {
    std::u32string s = utf8_decode(text);
    std::vector<int64_t> ids;
    size_t start = 0, at = 0;
    while (at < s.size()) {
        const std::pair<std::u32string, int64_t> *best = nullptr;  // leftmost-longest added token
        for (const auto &a : added_)
            if (!a.first.empty() && s.compare(at, a.first.size(), a.first) == 0 &&
                (!best || a.first.size() > best->first.size()))
                best = &a;
        if (!best) {
            ++at;
            continue;
        }
        encode_segment(s.substr(start, at - start), ids);
        ids.push_back(best->second);
        at += best->first.size();
        start = at;
    }
    encode_segment(s.substr(start), ids);
    return ids;
}

std::vector<int64_t> Tokenizer::encode(const std::string &text) const {
    std::vector<int64_t> body = encode_body(text);
    if (body.size() > static_cast<size_t>(max_length_ - 2)) body.resize(static_cast<size_t>(max_length_ - 2));
    std::vector<int64_t> ids{bos_};
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(eos_);
    ids.resize(static_cast<size_t>(max_length_), pad_);
    return ids;
}

}  // namespace cyclediff
