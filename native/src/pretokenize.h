// pretokenize.h: CLIPTokenizer's pre-tokenizers, as hand-written scanners equal to their regexes.
#pragma once

#include <string>
#include <vector>

namespace cyclediff {

// Split (invert, removed) by CLIP's pattern
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// then ByteLevel's GPT-2 pattern on each piece. Input: normalized text. Output: words (code points).
std::vector<std::u32string> clip_pretokenize(const std::u32string &normalized);

// GPT-2/CLIP's reversible byte -> printable code point table (bytes_to_unicode).
const std::u32string &byte_level_table();
// A word's UTF-8 bytes mapped through byte_level_table, one code point per byte.
std::u32string byte_level(const std::u32string &word);

}  // namespace cyclediff
