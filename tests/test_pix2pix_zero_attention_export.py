"""The optional unet_attn graph (`cyclediff-export --attention-maps`): exported maps equal the torch wrapper's,
exports without it still load, and Pix2Pix-Zero's reference pass on ONNX Runtime gives the all-torch edit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine
from cyclediff.engine.base import BackendError
from cyclediff.export.attention_maps import UNET_ATTN
from cyclediff.export.models import sample_inputs
from cyclediff.export.specs import output_shapes
from cyclediff.runtime.methods.pix2pix_zero.reference_maps import GraphMaps, ProbeMaps

CAPTION, STEPS = "a photo of a cat", 4
SOURCE, TARGET = ["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]


@pytest.fixture(scope="module")
def maps_export(tmp_path_factory):
    """One extra tiny export, through the CLI flag (the session `exports` fixture's pattern)."""
    from cyclediff.export import cli

    folder = tmp_path_factory.mktemp("export-tiny-maps")
    assert cli.main(["--ckpt", "tiny", "--out", str(folder), "--attention-maps", "--quiet"]) == 0
    return folder


@pytest.fixture(scope="module")
def engines(exports, maps_export) -> dict[str, Engine]:
    """torch and onnxruntime engines on the export with unet_attn; 'plain': torch on the session's export."""
    def load(folder, backend):
        return Engine.load(folder, backend=backend, progress=False)

    return {"torch": load(maps_export, "torch"), "onnxruntime": load(maps_export, "onnxruntime"),
            "openvino": load(maps_export, "openvino"), "plain": load(exports("tiny"), "torch")}


def _run(runner, feeds, dims) -> dict[str, torch.Tensor]:
    shapes = output_shapes(runner.spec, {k: tuple(v.shape) for k, v in feeds.items()}, dims)
    out = {k: torch.full(s, float("nan")) for k, s in shapes.items()}
    runner(feeds, out)
    return out


def test_manifest_records_unet_attn_with_one_output_per_cross_attention_layer(engines):
    spec = engines["torch"].manifest.models[UNET_ATTN].spec
    names = [t.name for t in spec.outputs]
    assert names[0] == "noise_pred" and names[1:] == [f"attn_{i}" for i in range(len(names) - 1)]
    assert len(names) - 1 == len(engines["torch"].runners[UNET_ATTN].module.layers) == 4


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_maps_equal_the_torch_wrapper(engines, backend):
    """Batch 3 at a latent size other than the trace's: every output within 1e-5 (fp32, CPU)."""
    torch_runner, ort_runner = engines["torch"].runners[UNET_ATTN], engines[backend].runners[UNET_ATTN]
    dims = engines["torch"].manifest.dims
    feeds = sample_inputs(ort_runner.spec, dims, 3, (6, 10), seed=4)
    theirs, ours = _run(torch_runner, feeds, dims), _run(ort_runner, feeds, dims)
    assert ours.keys() == theirs.keys() and len(ours) == 5
    for name in ours:
        err = float((ours[name] - theirs[name]).abs().max())
        print(f"unet_attn {name} {tuple(ours[name].shape)}: max abs diff {err:.2e}")
        assert ours[name].shape == theirs[name].shape and err <= 1e-5
    assert torch.allclose(ours["attn_0"].sum(-1), torch.ones(()), atol=1e-5)  # probabilities over the 77 tokens


def test_export_without_attention_maps_still_loads(engines):
    plain = engines["plain"]
    assert UNET_ATTN not in plain.manifest.models and UNET_ATTN not in plain.runners


def _edit(engine: Engine, code, **kw):
    direction = engine.edit_direction(SOURCE, TARGET)
    return engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                               target_embeds=direction.target_embeds, num_inference_steps=STEPS, output_type="np",
                               generator=torch.Generator().manual_seed(2), **kw).images


@pytest.mark.parametrize("kw", [{}, pytest.param({"eta": 0.5, "cross_attention_guidance_amount": 0.3},
                                                 marks=pytest.mark.slow)], ids=["defaults", "eta,amount"])
def test_reference_pass_on_onnxruntime_equals_the_all_torch_edit(engines, kw):
    plain = engines["plain"]
    code = plain.invert(prompt=CAPTION, image=sample_image(plain.manifest.sample_size), num_inference_steps=STEPS,
                        generator=torch.Generator().manual_seed(0), output_type=None)
    expected = _edit(plain, code, **kw)  # probes on the torch UNet
    assert isinstance(plain.pix2pix.last_editor.reference, ProbeMaps)
    for backend, tol in (("torch", 1e-6), ("onnxruntime", 1e-3), ("openvino", 1e-3)):
        got = _edit(engines[backend], code.latents, **kw)
        assert isinstance(engines[backend].pix2pix.last_editor.reference, GraphMaps)
        err = float(np.abs(got - expected).max())
        print(f"edit with unet_attn on {backend} vs all-torch (probes) {kw}: max abs diff {err:.2e}")
        assert got.shape == expected.shape and err <= tol


def test_guided_edit_on_onnxruntime_without_the_graph_names_the_flag(exports):
    ort = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    latents = torch.zeros(1, ort.manifest.dims.latent_channels, 4, 4)
    with pytest.raises(BackendError, match="--attention-maps"):
        _edit(ort, latents)


def test_cli_runs_the_reference_pass_on_onnxruntime_only_with_the_graph(exports, maps_export, tmp_path, capsys):
    from cyclediff.runtime.cli import main

    args = ["--method", "pix2pix-zero", "--backend", "onnxruntime", "--image", "sample", "--caption", "a cat",
            "--source-word", "cat", "--target-word", "dog", "--steps", "2", "--quiet"]
    assert main(["--engine", str(exports("tiny")), "--out", str(tmp_path / "plain.png"), *args]) == 2
    assert "--attention-maps" in capsys.readouterr().err and not (tmp_path / "plain.png").exists()
    assert main(["--engine", str(maps_export), "--out", str(tmp_path / "maps.png"), *args]) == 0
    assert (tmp_path / "maps.png").is_file()
