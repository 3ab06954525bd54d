// decoder.cpp: runtime/methods/cycle/decoder.py: batch [uncond × B, cond × B] with guidance, [cond × B] without.
#include "decoder.h"

#include <cstring>

#include "ddim.h"

namespace cyclediff {

namespace {

Tensor target_embeddings(const Conditioning &text, int64_t b, int g) {
    Shape shape = text.cond.shape;
    shape[0] = g * b;
    Tensor emb(shape);
    const size_t row = text.cond.row_size();
    for (int64_t i = 0; i < b; ++i) {
        if (g == 2) std::memcpy(emb.row(i), text.uncond.data(), row * sizeof(float));
        std::memcpy(emb.row((g - 1) * b + i), text.cond.row(i), row * sizeof(float));
    }
    return emb;
}

}  // namespace

Tensor ddim_decode(Executor &executor, const Tensor &x_T, const Tensor *noises, const StepTable &table,
                   const Conditioning &text) {
    const int64_t b = x_T.shape[0];
    const int g = text.guided ? 2 : 1;
    const Tensor emb = target_embeddings(text, b, g);
    Tensor x = x_T;
    Shape batch_shape = x_T.shape;
    batch_shape[0] = g * b;
    Tensor sample(batch_shape), t({g * b}), pred(batch_shape), eps(x_T.shape);
    for (int i = 0; i < table.num_steps(); ++i) {
        for (int j = 0; j < g; ++j) std::memcpy(sample.row(j * b), x.data(), x.size() * sizeof(float));
        for (float &v : t.values) v = static_cast<float>(table.timesteps[i]);
        executor.unet(sample, t, emb, pred);
        if (g == 2) ddim_guide(eps.data(), pred.row(0), pred.row(b), text.guidance_scale, eps.size());
        else std::memcpy(eps.data(), pred.data(), eps.size() * sizeof(float));
        const float *z = noises ? noises->row(i) : nullptr;
        ddim_step(x.data(), eps.data(), z, table.sqrt_a[i], table.sqrt_b[i], table.sqrt_a_prev[i], table.dir_coef[i],
                  table.sigma[i], x.size());
    }
    return x;
}

}  // namespace cyclediff
