// prompts.h: prompt -> CLIP embeddings (1, 77, D): tokenize, run the text encoder, pick the hidden state.
#pragma once

#include <list>
#include <string>
#include <utility>

#include "executor.h"
#include "tokenizer.h"

namespace cyclediff {

class PromptEncoder {
public:
    PromptEncoder(Tokenizer tokenizer, Executor &executor, const Dims &dims);

    // (1, 77, D); clip_skip = k >= 0 takes hidden state -(k+1) (already final-normed), -1 the last.
    Tensor encode(const std::string &prompt, int clip_skip);
    // (n, 77, D): one embedding repeated n times.
    static Tensor repeat(const Tensor &one, int64_t n);
    void check_clip_skip(int clip_skip) const;

private:
    Tensor run(const std::string &prompt);  // (1, L+1, 77, D)

    Tokenizer tokenizer_;
    Executor &executor_;
    Dims dims_;
    std::list<std::pair<std::string, Tensor>> cache_;  // most recent first; bounded
};

}  // namespace cyclediff
