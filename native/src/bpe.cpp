// bpe.cpp: merges by id pairs, lowest rank first and leftmost among equals (tokenizers' merge order).
#include "bpe.h"

#include <limits>

#include "error.h"
#include "unicode.h"

namespace cyclediff {

namespace {

uint64_t pair_key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

}  // namespace

Bpe::Bpe(std::unordered_map<std::string, int64_t> vocab, const std::vector<Merge> &merges, const std::string &unk,
         std::string suffix)
    : vocab_(std::move(vocab)), suffix_(std::move(suffix)) {
    unk_ = id(unk);
    for (size_t r = 0; r < merges.size(); ++r) {
        int64_t a = id(merges[r].first), b = id(merges[r].second);
        int64_t merged = id(merges[r].first + merges[r].second);
        require(a >= 0 && b >= 0 && merged >= 0, CYCLEDIFF_ERR_TOKENIZER,
                "tokenizer merge \"" + merges[r].first + " " + merges[r].second + "\" uses a token not in the vocab");
        ranks_[pair_key(a, b)] = Rank{static_cast<int64_t>(r), merged};  // a repeated pair: the last wins, as tokenizers
    }
}

int64_t Bpe::id(const std::string &token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
}

void Bpe::encode_word(const std::u32string &word, std::vector<int64_t> &out) const {
    std::vector<int64_t> symbols;
    for (size_t i = 0; i < word.size(); ++i) {
        std::string s = utf8_encode(word[i]) + (i + 1 == word.size() ? suffix_ : "");
        int64_t sid = id(s);
        if (sid < 0 && unk_ < 0) fail(CYCLEDIFF_ERR_TOKENIZER, "symbol \"" + s + "\" is not in the vocab and the "
                                                               "tokenizer has no unknown token");
        symbols.push_back(sid < 0 ? unk_ : sid);
    }
    while (symbols.size() > 1) {
        int64_t best = std::numeric_limits<int64_t>::max();
        size_t at = 0;
        for (size_t i = 0; i + 1 < symbols.size(); ++i) {
            auto it = ranks_.find(pair_key(symbols[i], symbols[i + 1]));
            if (it != ranks_.end() && it->second.rank < best) {
                best = it->second.rank;
                at = i;
            }
        }
        if (best == std::numeric_limits<int64_t>::max()) break;
        symbols[at] = ranks_.at(pair_key(symbols[at], symbols[at + 1])).merged_id;
        symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
}

}  // namespace cyclediff
