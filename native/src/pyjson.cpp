// pyjson.cpp: Python-compatible JSON text (json.dumps defaults + sort_keys) and float repr.
#include "pyjson.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace cyclediff {

namespace {

// Shortest round-trip digits and decimal exponent: value = 0.DIGITS x 10^decpt.
void shortest_digits(double value, std::string &digits, int &decpt) {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
    std::string s(buf, res.ptr);  // "d.ddde+XX" or "de-XX"
    size_t e = s.find('e');
    int exp10 = std::atoi(s.c_str() + e + 1);
    digits.clear();
    for (size_t i = 0; i < e; ++i)
        if (s[i] != '.') digits += s[i];
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    decpt = exp10 + 1;
}

std::string exponent_form(const std::string &digits, int decpt) {
    std::string out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    int exp10 = decpt - 1;
    char buf[16];
    std::snprintf(buf, sizeof buf, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return out + buf;
}

std::string fixed_form(const std::string &digits, int decpt) {
    int n = static_cast<int>(digits.size());
    if (decpt <= 0) return "0." + std::string(-decpt, '0') + digits;
    if (decpt >= n) return digits + std::string(decpt - n, '0') + ".0";
    return digits.substr(0, decpt) + "." + digits.substr(decpt);
}

void append_escaped(std::string &out, const std::string &s);

void dump(std::string &out, const nlohmann::json &v);

void dump_object(std::string &out, const nlohmann::json &v) {
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {  // std::map: UTF-8 byte order = code point order
        if (!first) out += ", ";
        first = false;
        append_escaped(out, it.key());
        out += ": ";
        dump(out, it.value());
    }
    out += '}';
}

void dump_array(std::string &out, const nlohmann::json &v) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        dump(out, v[i]);
    }
    out += ']';
}

void dump(std::string &out, const nlohmann::json &v) {
    switch (v.type()) {
        case nlohmann::json::value_t::object: dump_object(out, v); break;
        case nlohmann::json::value_t::array: dump_array(out, v); break;
        case nlohmann::json::value_t::string: append_escaped(out, v.get_ref<const std::string &>()); break;
        case nlohmann::json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
        case nlohmann::json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
        case nlohmann::json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
        case nlohmann::json::value_t::number_float: out += py_float_repr(v.get<double>()); break;
        default: out += "null"; break;
    }
}

uint32_t next_code_point(const std::string &s, size_t &i) {
    unsigned char c = static_cast<unsigned char>(s[i++]);
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    for (int k = 0; k < extra && i < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i++]) & 0x3F);
    return cp;
}

void append_u16(std::string &out, uint32_t unit) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "\\u%04x", unit);
    out += buf;
}

void append_escaped(std::string &out, const std::string &s) {
    out += '"';
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = next_code_point(s, i);
        if (cp == '"') out += "\\\"";
        else if (cp == '\\') out += "\\\\";
        else if (cp == '\n') out += "\\n";
        else if (cp == '\r') out += "\\r";
        else if (cp == '\t') out += "\\t";
        else if (cp == '\b') out += "\\b";
        else if (cp == '\f') out += "\\f";
        else if (cp >= 0x20 && cp <= 0x7E) out += static_cast<char>(cp);
        else if (cp < 0x10000) append_u16(out, cp);
        else {
            cp -= 0x10000;
            append_u16(out, 0xD800 | (cp >> 10));
            append_u16(out, 0xDC00 | (cp & 0x3FF));
        }
    }
    out += '"';
}

}  // namespace

std::string py_float_repr(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
    std::string sign = std::signbit(value) ? "-" : "";
    if (value == 0.0) return sign + "0.0";
    std::string digits;
    int decpt = 0;
    shortest_digits(std::fabs(value), digits, decpt);
    bool use_exp = decpt <= -4 || decpt > 16;
    return sign + (use_exp ? exponent_form(digits, decpt) : fixed_form(digits, decpt));
}

std::string py_json_dumps(const nlohmann::json &value) {
    std::string out;
    dump(out, value);
    return out;
}

}  // namespace cyclediff
