// prompts.cpp: text encoder at batch 1 per distinct prompt (as the runtime), with a small LRU cache.
#include "prompts.h"

#include <cstring>

#include "error.h"

namespace cyclediff {

namespace {
constexpr size_t kCacheSize = 8;
}

PromptEncoder::PromptEncoder(Tokenizer tokenizer, Executor &executor, const Dims &dims)
    : tokenizer_(std::move(tokenizer)), executor_(executor), dims_(dims) {}

void PromptEncoder::check_clip_skip(int clip_skip) const {
    require(clip_skip >= -1 && clip_skip < dims_.text_states - 1, CYCLEDIFF_ERR_INVALID_ARGUMENT,
            "clip_skip must be -1 (none) or in [0, " + std::to_string(dims_.text_states - 2) +
                "] for this text encoder, got " + std::to_string(clip_skip));
}

Tensor PromptEncoder::run(const std::string &prompt) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
        if (it->first == prompt) {
            cache_.splice(cache_.begin(), cache_, it);
            return it->second;
        }
    Tensor hidden({1, dims_.text_states, dims_.text_len, dims_.text_width});
    executor_.text_encoder(tokenizer_.encode(prompt), hidden);
    cache_.emplace_front(prompt, hidden);
    if (cache_.size() > kCacheSize) cache_.pop_back();
    return hidden;
}

Tensor PromptEncoder::encode(const std::string &prompt, int clip_skip) {
    check_clip_skip(clip_skip);
    Tensor hidden = run(prompt);
    const int layer = dims_.text_states - 1 - (clip_skip < 0 ? 0 : clip_skip);
    Tensor out({1, dims_.text_len, dims_.text_width});
    std::memcpy(out.data(), hidden.data() + static_cast<size_t>(layer) * out.size(), out.size() * sizeof(float));
    return out;
}

Tensor PromptEncoder::repeat(const Tensor &one, int64_t n) {
    Shape shape = one.shape;
    shape[0] = n;
    Tensor out(shape);
    for (int64_t i = 0; i < n; ++i) std::memcpy(out.row(i), one.data(), one.size() * sizeof(float));
    return out;
}

}  // namespace cyclediff
