// unicode.h: UTF-8 code points, general categories and CLIP's text normalizer, all through utf8proc.
#pragma once

#include <cstdint>
#include <string>

namespace cyclediff {

// Code points of UTF-8 text; INVALID_ARGUMENT on malformed UTF-8.
std::u32string utf8_decode(const std::string &text);
std::string utf8_encode(const std::u32string &text);
std::string utf8_encode(char32_t cp);

bool unicode_is_letter(char32_t cp);  // \p{L}
bool unicode_is_number(char32_t cp);  // \p{N}
bool unicode_is_space(char32_t cp);   // \s of the tokenizers' regex engine: White_Space

// The CLIP normalizer of transformers' CLIPTokenizer: NFC, every \s+ run -> " ", lowercase.
std::u32string clip_normalize(const std::u32string &text);

}  // namespace cyclediff
