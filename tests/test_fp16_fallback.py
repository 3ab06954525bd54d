"""fp16 on the torch backend: the VAE's fp32 overflow fallback holds the checkpoint's fp32 weights, bit for bit."""
from __future__ import annotations

import pytest
import torch

from cyclediff.export import checkpoint, models
from cyclediff.export.specs import MODEL_NAMES, UNET, VAE_DECODER, VAE_ENCODER, Dims, specs
from cyclediff.runtime.core.backends import fp16_runners

CPU = torch.device("cpu")


def _graphs() -> tuple[dict[str, torch.nn.Module], dict]:
    comps = checkpoint.load(checkpoint.resolve("tiny"))
    dims = Dims.of(comps.text_encoder, comps.vae, comps.unet)
    return models.graphs(comps), specs(dims)


@pytest.fixture(scope="module")
def runners():
    graphs, specs = _graphs()
    return fp16_runners(graphs, specs, CPU)


@pytest.mark.parametrize("name", [VAE_ENCODER, VAE_DECODER])
def test_vae_fallbacks_hold_the_fp32_checkpoint_bit_for_bit(runners, name):
    want = _graphs()[0][name].state_dict()
    assert not isinstance(runners[name]._fp32, torch.nn.Module)  # a factory: built only when first needed
    got = runners[name].fallback().module.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_fp16_modules_are_fp16_and_share_nothing_with_the_fallbacks(runners):
    fp16 = runners[VAE_DECODER].fp16.module
    fallback = runners[VAE_DECODER].fallback().module
    assert {p.dtype for p in fp16.parameters()} == {torch.float16}
    assert not {p.data_ptr() for p in fp16.parameters()} & {p.data_ptr() for p in fallback.parameters()}
    # the two VAE wrappers keep sharing one module: one fp32 copy of the VAE, not two
    assert runners[VAE_ENCODER].fallback().module.vae is fallback.vae


def test_only_the_vae_parts_are_guarded(runners):
    assert set(runners) == set(MODEL_NAMES)
    assert not hasattr(runners[UNET], "fallback")
