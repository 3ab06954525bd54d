"""GPU-only: fp16 fidelity against the fp32 result, and the CUDA-graph decoder against the eager one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cyclediff import Engine
from reference import sample_image

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")]
ARGS = dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=20, output_type="np")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_fp16_cuda_is_close_to_fp32_cpu(exports):
    ref_engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(ref_engine.manifest.sample_size)
    ref = ref_engine.edit(image=image, **ARGS, generator=torch.Generator().manual_seed(0)).images
    fast = Engine.load(exports("tiny"), backend="torch", device="cuda", dtype="fp16", progress=False)
    out = fast.edit(image=image, **ARGS, generator=torch.Generator().manual_seed(0)).images
    assert np.isfinite(out).all() and _psnr(out, ref) >= 35.0


def test_cuda_graph_decoder_equals_eager(exports):
    graph = Engine.load(exports("tiny"), backend="torch", device="cuda", progress=False)
    eager = Engine.load(exports("tiny"), backend="torch", device="cuda", cuda_graphs=False, progress=False)
    code = eager.encode(sample_image(eager.manifest.sample_size), "a dog", num_inference_steps=12,
                        generator=torch.Generator().manual_seed(1))
    for prompt in ("a cat", "a bird"):  # the second call replays the captured graph
        a = graph.decode(code, prompt, output_type="np").images
        b = eager.decode(code, prompt, output_type="np").images
        assert np.abs(a - b).max() <= 1e-5
