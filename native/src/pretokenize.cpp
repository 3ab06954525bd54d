// pretokenize.cpp: regex-equivalent scanners over code points (leftmost-first alternation, greedy runs).
#include "pretokenize.h"

#include "unicode.h"

namespace cyclediff {

namespace {

const char32_t *const kContractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
const char32_t *const kSpecials[] = {U"<|startoftext|>", U"<|endoftext|>"};

bool starts_with(const std::u32string &s, size_t at, const std::u32string &prefix) {
    return s.compare(at, prefix.size(), prefix) == 0;
}

bool is_other(char32_t c) { return !unicode_is_space(c) && !unicode_is_letter(c) && !unicode_is_number(c); }

template <typename Pred>
size_t run_end(const std::u32string &s, size_t at, Pred pred) {
    while (at < s.size() && pred(s[at])) ++at;
    return at;
}

size_t contraction_end(const std::u32string &s, size_t at) {
    for (const char32_t *c : kContractions) {
        std::u32string p(c);
        if (starts_with(s, at, p)) return at + p.size();
    }
    return at;
}

// End of the CLIP-pattern match at `at` (at itself when none: a whitespace character).
size_t clip_match_end(const std::u32string &s, size_t at) {
    for (const char32_t *sp : kSpecials) {
        std::u32string p(sp);
        if (starts_with(s, at, p)) return at + p.size();
    }
    size_t end = contraction_end(s, at);
    if (end != at) return end;
    char32_t c = s[at];
    if (unicode_is_letter(c)) return run_end(s, at, unicode_is_letter);
    if (unicode_is_number(c)) return at + 1;
    if (is_other(c)) return run_end(s, at, is_other);
    return at;
}

// GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ on a piece that holds
// no whitespace (CLIP's split removed it), where the optional-space and whitespace branches never apply.
void gpt2_split(const std::u32string &piece, std::vector<std::u32string> &out) {
    size_t at = 0;
    while (at < piece.size()) {
        size_t end = contraction_end(piece, at);
        if (end == at) {
            char32_t c = piece[at];
            if (unicode_is_letter(c)) end = run_end(piece, at, unicode_is_letter);
            else if (unicode_is_number(c)) end = run_end(piece, at, unicode_is_number);
            else end = run_end(piece, at, is_other);
            if (end == at) end = at + 1;  // unreachable for whitespace-free pieces; keeps progress
        }
        out.push_back(piece.substr(at, end - at));
        at = end;
    }
}

}  // namespace

std::vector<std::u32string> clip_pretokenize(const std::u32string &s) {
    std::vector<std::u32string> words;
    size_t at = 0;
    while (at < s.size()) {
        size_t end = clip_match_end(s, at);
        if (end == at) {  // not matched: removed
            ++at;
            continue;
        }
        gpt2_split(s.substr(at, end - at), words);
        at = end;
    }
    return words;
}

const std::u32string &byte_level_table() {
    static const std::u32string table = [] {
        std::u32string t(256, 0);
        char32_t extra = 0;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            t[b] = printable ? static_cast<char32_t>(b) : 256 + extra++;
        }
        return t;
    }();
    return table;
}

std::u32string byte_level(const std::u32string &word) {
    std::u32string out;
    for (unsigned char b : utf8_encode(word)) out.push_back(byte_level_table()[b]);
    return out;
}

}  // namespace cyclediff
