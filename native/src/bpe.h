// bpe.h: byte-pair encoding of one pre-tokenized word, as tokenizers' BPE model with end_of_word_suffix.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cyclediff {

class Bpe {
public:
    using Merge = std::pair<std::string, std::string>;

    // vocab: token -> id; merges in rank order; unk: token for unknown symbols; suffix: "</w>" for CLIP.
    Bpe(std::unordered_map<std::string, int64_t> vocab, const std::vector<Merge> &merges, const std::string &unk,
        std::string suffix);

    // word: byte-level code points of one word. Appends its ids to out.
    void encode_word(const std::u32string &word, std::vector<int64_t> &out) const;
    // id of a token, or -1.
    int64_t id(const std::string &token) const;

private:
    struct Rank {
        int64_t rank;
        int64_t merged_id;
    };
    std::unordered_map<std::string, int64_t> vocab_;
    std::unordered_map<uint64_t, Rank> ranks_;  // (left id << 32 | right id) -> rank, merged token id
    int64_t unk_ = -1;
    std::string suffix_;
};

}  // namespace cyclediff
