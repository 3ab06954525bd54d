// unicode.cpp: NFC, categories and lowercase from utf8proc; White_Space from the Z categories + 6 controls.
#include "unicode.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "error.h"

namespace cyclediff {

std::u32string utf8_decode(const std::string &text) {
    std::u32string out;
    const auto *p = reinterpret_cast<const utf8proc_uint8_t *>(text.data());
    utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
    while (left > 0) {
        utf8proc_int32_t cp = 0;
        utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
        require(n > 0 && cp >= 0, CYCLEDIFF_ERR_INVALID_ARGUMENT, "text is not valid UTF-8");
        out.push_back(static_cast<char32_t>(cp));
        p += n;
        left -= n;
    }
    return out;
}

std::string utf8_encode(char32_t cp) {
    utf8proc_uint8_t buf[4];
    utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
    return std::string(reinterpret_cast<const char *>(buf), static_cast<size_t>(n));
}

std::string utf8_encode(const std::u32string &text) {
    std::string out;
    for (char32_t cp : text) out += utf8_encode(cp);
    return out;
}

static utf8proc_category_t category(char32_t cp) {
    return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}

bool unicode_is_letter(char32_t cp) {
    utf8proc_category_t c = category(cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

bool unicode_is_number(char32_t cp) {
    utf8proc_category_t c = category(cp);
    return c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO;
}

bool unicode_is_space(char32_t cp) {
    // White_Space = Zs, Zl, Zp plus the controls TAB..CR and NEL (the only Cc members of the property).
    if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) return true;
    utf8proc_category_t c = category(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

static std::u32string nfc(const std::u32string &text) {
    std::string utf8 = utf8_encode(text);
    utf8proc_uint8_t *raw = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t *>(utf8.c_str()));
    require(raw != nullptr, CYCLEDIFF_ERR_INVALID_ARGUMENT, "text cannot be NFC-normalized");
    std::unique_ptr<utf8proc_uint8_t, void (*)(void *)> owned(raw, std::free);
    return utf8_decode(reinterpret_cast<const char *>(raw));
}

static std::u32string collapse_spaces(const std::u32string &text) {
    std::u32string out;
    for (size_t i = 0; i < text.size(); ++i) {
        if (!unicode_is_space(text[i])) {
            out.push_back(text[i]);
            continue;
        }
        out.push_back(U' ');
        while (i + 1 < text.size() && unicode_is_space(text[i + 1])) ++i;
    }
    return out;
}

// Rust's char::to_lowercase (what tokenizers' Lowercase calls per char): the simple mapping, except
// U+0130 whose full lowercase is two code points (the only unconditional multi-char one).
static std::u32string lowercase(const std::u32string &text) {
    std::u32string out;
    for (char32_t cp : text) {
        if (cp == 0x130) {
            out += U"i\u0307";
            continue;
        }
        out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
    return out;
}

std::u32string clip_normalize(const std::u32string &text) { return lowercase(collapse_spaces(nfc(text))); }

}  // namespace cyclediff
