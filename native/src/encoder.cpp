// encoder.cpp: runtime/methods/cycle/encoder.py in C++: same draw order, same flat (step, item, group) UNet batching.
#include "encoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ddim.h"
#include "error.h"

namespace cyclediff {

namespace {

Shape with_first(int64_t first, const Shape &rest) {
    Shape s{first};
    s.insert(s.end(), rest.begin(), rest.end());
    return s;
}

void copy_floats(float *dst, const float *src, size_t n) { std::memcpy(dst, src, n * sizeof(float)); }

}  // namespace

DpmEncoder::DpmEncoder(Executor &executor, int max_batch) : executor_(executor), max_batch_(max_batch) {
    require(max_batch >= 1, CYCLEDIFF_ERR_INVALID_ARGUMENT, "max_batch must be >= 1");
}

Tensor DpmEncoder::noised(const Tensor &x0, const StepTable &table, NoiseSource &noise) const {
    Tensor n0(x0.shape);
    noise.randn(n0);
    float roots[2] = {table.a_t0, 1.0f - table.a_t0};
    if (SqrtFn f = executor_.float_sqrt()) f(roots, 2);
    else for (float &r : roots) r = std::sqrt(r);
    Tensor x_T(x0.shape);
    for (size_t i = 0; i < x0.size(); ++i) {
        float a = roots[0] * x0.values[i];
        float b = roots[1] * n0.values[i];
        x_T.values[i] = a + b;
    }
    return x_T;
}

Tensor DpmEncoder::trajectory(const Tensor &x0, const Tensor &x_T, const StepTable &table, NoiseSource &noise) const {
    const int k = table.num_steps();
    Tensor xs(with_first(k + 1, x0.shape));
    Tensor n(x0.shape);
    copy_floats(xs.row(0), x_T.data(), x0.size());
    for (int i = 0; i < k; ++i) {
        if (!table.draws[i]) {
            copy_floats(xs.row(i + 1), x0.data(), x0.size());
            continue;
        }
        noise.randn(n);
        ddim_posterior_step(xs.row(i + 1), xs.row(i), x0.data(), table.sqrt_a[i], table.sqrt_b[i],
                            table.sqrt_a_prev[i], table.dir_coef[i], table.sigma[i], n.data(), x0.size());
    }
    return xs;
}

Tensor DpmEncoder::unet_batched(const Tensor &xs, const StepTable &table, const Conditioning &text, int groups) const {
    const int64_t k = table.num_steps(), b = xs.shape[1];
    const Shape lat(xs.shape.begin() + 2, xs.shape.end());
    const int64_t n = k * b * groups, chunk = std::min<int64_t>(max_batch_, n);
    const size_t lat_size = shape_numel(lat), emb_size = text.cond.row_size();
    Tensor out(with_first(n, lat));
    for (int64_t start = 0; start < n; start += chunk) {
        const int64_t m = std::min(chunk, n - start);
        Tensor sample(with_first(m, lat)), t({m}), emb(with_first(m, Shape(text.cond.shape.begin() + 1, text.cond.shape.end())));
        for (int64_t j = 0; j < m; ++j) {  // sample j of the flat order (step, item, group)
            const int64_t step = (start + j) / (b * groups), rest = (start + j) % (b * groups);
            const int64_t item = rest / groups, group = rest % groups;
            copy_floats(sample.row(j), xs.data() + (step * b + item) * lat_size, lat_size);
            t.values[j] = static_cast<float>(table.timesteps[step]);
            const float *e = group == 0 && groups == 2 ? text.uncond.data() : text.cond.row(item);
            copy_floats(emb.row(j), e, emb_size);
        }
        Tensor res(sample.shape);
        executor_.unet(sample, t, emb, res);
        copy_floats(out.row(start), res.data(), res.size());
    }
    return out;
}

Tensor DpmEncoder::source_eps(const Tensor &xs, const StepTable &table, const Conditioning &text) const {
    const int groups = text.guided ? 2 : 1;
    Tensor flat = unet_batched(xs, table, text, groups);
    const Shape rest(xs.shape.begin() + 1, xs.shape.end());
    Tensor eps(with_first(table.num_steps(), rest));
    if (groups == 1) {
        eps.values = std::move(flat.values);
        return eps;
    }
    const size_t lat = flat.row_size(), pairs = eps.size() / lat;
    for (size_t p = 0; p < pairs; ++p)
        ddim_guide(eps.data() + p * lat, flat.row(2 * p), flat.row(2 * p + 1), text.guidance_scale, lat);
    return eps;
}

Tensor DpmEncoder::record(const Tensor &xs, const Tensor &eps, const StepTable &table) const {
    Tensor z(eps.shape);
    const size_t n = eps.row_size();
    for (int i = 0; i < table.num_steps(); ++i)
        ddim_recorded_noise(z.row(i), xs.row(i + 1), xs.row(i), eps.row(i), table.sqrt_a[i], table.sqrt_b[i],
                            table.sqrt_a_prev[i], table.dir_coef[i], table.sigma_den[i], n);
    return z;
}

}  // namespace cyclediff
