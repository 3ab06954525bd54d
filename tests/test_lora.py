"""LoRA at export (`cyclediff-export --lora FILE[:SCALE]`): parity with diffusers' pipeline with the same LoRA
loaded and fused, reuse keyed on the LoRAs, the torch backend's reload, and bad input (nothing written)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from reference import checkpoint_path, sample_image

from cyclediff import Engine
from cyclediff.export.manifest import Manifest

TOLERANCE = {"torch": 1e-4, "onnxruntime": 2e-3, "openvino": 2e-3}
SCALE = 0.8


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    from cyclediff.export.tiny_lora import make

    folder = tmp_path_factory.mktemp("loras")
    return {"unet": make(folder / "unet.safetensors", seed=1),
            "both": make(folder / "both.safetensors", seed=2, text_encoder=True),
            "deep": make(folder / "deep.safetensors", ckpt="tiny-deep", seed=3)}


@pytest.fixture(scope="module")
def lora_export(loras, tmp_path_factory):
    from cyclediff.export.pipeline import export

    out = tmp_path_factory.mktemp("export-lora")
    export("tiny", out, quiet=True, loras=(f"{loras['both']}:{SCALE}",))
    return out


def reference(export_dir, lora_file, scale: float, seed: int, **kw) -> np.ndarray:
    """diffusers' CycleDiffusionPipeline with the LoRA loaded and fused (its own documented way)."""
    from diffusers import CycleDiffusionPipeline

    pipe = CycleDiffusionPipeline.from_pretrained(checkpoint_path(export_dir), safety_checker=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file))
    pipe.fuse_lora(lora_scale=scale)
    te = pipe.text_encoder
    if not hasattr(te, "text_model"):  # as tests/reference.py: the reference's clip_skip path needs it
        object.__setattr__(te, "text_model", te)
    return pipe(**kw, generator=torch.Generator().manual_seed(seed)).images


def _args() -> dict:
    return dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=10,
                image=sample_image(32), output_type="np")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_lora_export_matches_diffusers_with_the_lora_fused(lora_export, loras, exports, backend):
    engine = Engine.load(lora_export, backend=backend, progress=False)
    ours = engine.edit(**_args(), generator=torch.Generator().manual_seed(4)).images
    ref = reference(lora_export, loras["both"], SCALE, 4, **_args())
    base = Engine.load(exports("tiny"), backend=backend, progress=False).edit(
        **_args(), generator=torch.Generator().manual_seed(4)).images
    err = float(np.abs(ours - ref).max())
    print(f"lora {backend}: max abs diff {err:.2e} (tiny without it: {np.abs(base - ref).max():.2e})")
    assert err <= TOLERANCE[backend]
    assert np.abs(base - ref).max() > 100 * TOLERANCE[backend]  # the LoRA really changed the model


def test_manifest_records_the_loras_and_reuse_keys_on_them(lora_export, loras, tmp_path):
    import shutil

    from cyclediff.export.pipeline import run

    m = Manifest.load(lora_export)
    assert [(e["sha256"][:8], e["scale"]) for e in m.checkpoint["loras"]] and m.checkpoint["loras"][0]["scale"] == SCALE
    out = tmp_path / "out"
    shutil.copytree(lora_export, out)
    same = run("tiny", out, quiet=True, loras=(f"{loras['both']}:{SCALE}",))
    assert same.exported == () and same.manifest.digest == m.digest
    other = run("tiny", out, quiet=True, loras=(f"{loras['both']}:0.5",))
    assert set(other.exported) == {"text_encoder", "unet"} and other.manifest.digest != m.digest
    plain = run("tiny", out, quiet=True)
    assert plain.manifest.checkpoint["loras"] == [] and plain.manifest.digest == Manifest.load(
        _fresh_tiny(tmp_path)).digest


def _fresh_tiny(tmp_path):
    from cyclediff.export.pipeline import export

    export("tiny", tmp_path / "tiny", quiet=True)
    return tmp_path / "tiny"


def test_torch_backend_refuses_a_changed_lora(lora_export, loras, tmp_path):
    import shutil

    out = tmp_path / "export"
    shutil.copytree(lora_export, out)
    lora = tmp_path / "moved.safetensors"
    shutil.copy(loras["both"], lora)
    m = Manifest.load(out)
    m.checkpoint["loras"][0]["file"] = str(lora)
    m.save(out)
    Engine.load(out, backend="torch", progress=False)  # the file as recorded: loads
    lora.write_bytes(lora.read_bytes()[:-7] + b"changed")
    with pytest.raises(ValueError, match="changed since the export"):
        Engine.load(out, backend="torch", progress=False)


@pytest.mark.parametrize(("spec", "words"), [
    ("{missing}", "no such file"),
    ("{corrupt}", "cannot be read as LoRA weights"),
    ("{deep}", "does not fit this checkpoint"),
    ("{unet}:x", "is not a number"),
    ("{unet}:nan", "must be a finite number"),
])
def test_bad_loras_are_refused_before_anything_is_written(loras, tmp_path, spec, words):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    arg = spec.format(missing=tmp_path / "none.safetensors", corrupt=corrupt, **loras)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "cyclediff.export.cli", "--ckpt", "tiny", "--lora", arg,
                           "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and (not out.exists() or not any(out.iterdir()))
