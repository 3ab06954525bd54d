// tokenizer.h: the CLIP tokenizer of an export (DIR/tokenizer), giving transformers' CLIPTokenizer ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bpe.h"

namespace cyclediff {

class Tokenizer {
public:
    // Reads tokenizer.json (transformers 5 save_pretrained), else vocab.json + merges.txt, plus
    // tokenizer_config.json / special_tokens_map.json for the special tokens. TOKENIZER on failure.
    static Tokenizer load(const std::string &folder, int max_length);

    // tok(text, padding="max_length", max_length, truncation=True).input_ids: exactly max_length ids.
    std::vector<int64_t> encode(const std::string &text) const;
    // The ids between BOS and EOS, untruncated (for tests and truncation warnings).
    std::vector<int64_t> encode_body(const std::string &text) const;

    int64_t bos() const { return bos_; }
    int64_t eos() const { return eos_; }
    int64_t pad() const { return pad_; }

private:
    Tokenizer(std::shared_ptr<const Bpe> bpe, std::vector<std::pair<std::u32string, int64_t>> added, int max_length);
    void encode_segment(const std::u32string &segment, std::vector<int64_t> &out) const;

    std::shared_ptr<const Bpe> bpe_;
    std::vector<std::pair<std::u32string, int64_t>> added_;  // special tokens, matched in the raw text
    int64_t bos_ = -1, eos_ = -1, pad_ = -1;
    int max_length_ = 77;
};

}  // namespace cyclediff
