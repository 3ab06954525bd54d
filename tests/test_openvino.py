"""backend='openvino': bf16 fidelity, its IR cache, bad input, thread safety, the CLI. Parity vs diffusers (fp32)
is in test_parity.py and cancel_scope in test_cancel.py, both parametrized over the backends."""
from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from reference import checkpoint_path, reference_edit, sample_image

import cyclediff
from cyclediff.engine import mapped_pages, openvino_backend
from cyclediff.engine.base import BackendError
from cyclediff.export import openvino_ir
from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.runtime.core import backends

pytest.importorskip("openvino")
BF16 = openvino_backend.cpu_has_bf16()
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no native bf16 (AVX512_BF16 or AMX)")
EDIT = {"prompt": "a photo of a cat", "source_prompt": "a photo of a dog", "num_inference_steps": 10, "output_type": "np"}


def _edit(engine, seed=3, **kw):
    args = {**EDIT, "image": sample_image(engine.manifest.sample_size), **kw}
    return engine.edit(**args, generator=torch.Generator().manual_seed(seed)).images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@functools.lru_cache(maxsize=2)
def _diffusers_bf16(path: str):
    from diffusers import CycleDiffusionPipeline

    pipe = CycleDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False,
                                                  torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@needs_bf16
def test_bf16_costs_no_more_fidelity_than_diffusers_bf16(exports):
    """PSNR(ours bf16, ours fp32) >= PSNR(diffusers bf16, diffusers fp32) - 1 dB: same checkpoint, image, seed."""
    folder = exports("tiny")
    ours32 = _edit(cyclediff.Engine.load(folder, backend="openvino", progress=False))
    ours16 = _edit(cyclediff.Engine.load(folder, backend="openvino", dtype="bf16", progress=False))
    image = sample_image(Manifest.load(folder, verify_files=False).sample_size)
    ref32 = reference_edit(folder, 3, **EDIT, image=image)
    ref16 = _diffusers_bf16(checkpoint_path(folder))(**EDIT, image=image,
                                                      generator=torch.Generator().manual_seed(3)).images
    ours, theirs = psnr(ours16, ours32), psnr(np.asarray(ref16, np.float32), ref32)
    print(f"bf16 vs fp32 PSNR: cyclediff openvino {ours:.1f} dB, diffusers {theirs:.1f} dB")
    assert np.isfinite(ours16).all() and ours >= theirs - 1.0
    assert ours < 80, "bf16 gave fp32's picture: the precision hint did not take"


def test_call_after_smallest_shape_is_exact(exports):
    """OpenVINO 2026.4's runtime cache gave a wrong 8x8 UNet call after a 2x2 one on a dynamic-shape model
    (compile_config turns the cache off): the UNet's graph on the dynamic runner, as the VAE and text encoder run."""
    folder = exports("tiny")
    manifest = Manifest.load(folder, verify_files=False)
    ir = openvino_ir.lookup(manifest, manifest.models["unet"].sha256)
    ov = openvino_backend.OvModel(folder / ir["file"], manifest.models["unet"].spec, "fp32", 1)
    ort = backends.load_runners(folder, manifest, "onnxruntime", torch.device("cpu"))["unet"]
    width = manifest.dims.text_width
    g = torch.Generator().manual_seed(0)

    def feeds(b, side):
        return {"sample": torch.randn(b, 4, side, side, generator=g), "timestep": torch.full((b,), 500.0),
                "encoder_hidden_states": torch.randn(b, 77, width, generator=g)}

    side = manifest.dims.unet_downscale
    small = feeds(1, side)
    ov(small, {"noise_pred": torch.empty(1, 4, side, side)})
    big, out, want = feeds(2, 8 * side), torch.empty(2, 4, 8 * side, 8 * side), torch.empty(2, 4, 8 * side, 8 * side)
    ov(big, {"noise_pred": out})
    ort(big, {"noise_pred": want})
    assert float((out - want).abs().max()) < 1e-4


def test_export_writes_ir_and_loads_read_it(exports):
    folder = exports("tiny")
    manifest = Manifest.load(folder, verify_files=False)
    for name, model in manifest.models.items():
        entry = openvino_ir.lookup(manifest, model.sha256)
        assert entry is not None and (folder / entry["file"]).is_file(), name
    engine = cyclediff.Engine.load(folder, backend="openvino", progress=False)
    assert engine.runners["unet"].path.suffix == ".xml"


def test_ir_of_another_openvino_is_not_used(exports, monkeypatch):
    """The IR is keyed by OpenVINO's version: another version reads the ONNX graph (same numbers)."""
    folder = exports("tiny")
    want = _edit(cyclediff.Engine.load(folder, backend="openvino", progress=False))
    monkeypatch.setattr(openvino_ir, "version", lambda: "1999.0")
    assert openvino_ir.lookup(Manifest.load(folder, verify_files=False),
                              Manifest.load(folder, verify_files=False).models["unet"].sha256) is None
    engine = cyclediff.Engine.load(folder, backend="openvino", progress=False)
    assert engine.runners["unet"].path.suffix == ".onnx"
    assert float(np.abs(_edit(engine) - want).max()) < 1e-5


def test_ir_of_a_changed_graph_is_not_used(exports):
    manifest = Manifest.load(exports("tiny"), verify_files=False)
    assert openvino_ir.lookup(manifest, "0" * 64) is None


def test_damaged_ir_is_refused_with_the_fix(exports, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exports("tiny"), folder)
    ir = openvino_ir.lookup(Manifest.load(folder, verify_files=False),
                            Manifest.load(folder, verify_files=False).models["unet"].sha256)
    data = folder / ir["data_files"][0]
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ManifestError, match=r"OpenVINO IR of unet.*truncated.*cyclediff-export"):
        cyclediff.Engine.load(folder, backend="openvino", progress=False)


def test_reexport_keeps_an_intact_ir_and_rebuilds_a_missing_one(exports, tmp_path):
    from cyclediff.export.pipeline import export

    folder = tmp_path / "export"
    shutil.copytree(exports("tiny"), folder)
    before = Manifest.load(folder, verify_files=False).extra[openvino_ir.SECTION]
    (folder / "openvino" / "vae_decoder.bin").unlink()
    after = export("tiny", folder, quiet=True).extra[openvino_ir.SECTION]
    old, new = ({e["model"]: e for e in s["graphs"]} for s in (before, after))
    assert {n: e for n, e in new.items() if n != "vae_decoder"} == {n: e for n, e in old.items() if n != "vae_decoder"}
    # rebuilt under the same key; OpenVINO numbers auto-named nodes per process, so the .xml bytes may differ
    assert new["vae_decoder"]["key"] == old["vae_decoder"]["key"]
    assert (folder / "openvino" / "vae_decoder.bin").is_file()
    cyclediff.Engine.load(folder, backend="openvino", progress=False, verify="full")


def test_bad_input_is_refused_clearly(exports, monkeypatch):
    folder = exports("tiny")
    with pytest.raises(BackendError, match="runs dtype 'fp32' or 'bf16'"):
        cyclediff.Engine.load(folder, backend="openvino", dtype="fp16", progress=False)
    with pytest.raises(BackendError, match="backend 'openvino'"):
        cyclediff.Engine.load(folder, backend="onnxruntime", dtype="bf16", progress=False)
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: False)
    with pytest.raises(BackendError, match="needs a CPU with bf16 instructions"):
        cyclediff.Engine.load(folder, backend="openvino", dtype="bf16", progress=False)
    with pytest.raises(BackendError, match="runs on the CPU"):
        openvino_backend.require(torch.device("cuda"), "fp32")


def test_auto_picks_openvino_for_bf16_on_the_cpu(exports):
    manifest = Manifest.load(exports("tiny"), verify_files=False)
    assert backends.choose("auto", torch.device("cpu"), manifest, "bf16") == "openvino"
    assert backends.choose("auto", torch.device("cpu"), manifest, "fp32") == "onnxruntime"


def test_threads_get_what_they_get_alone(exports):
    """Concurrent edits (merged UNet calls) equal the same edits run one at a time."""
    engine = cyclediff.Engine.load(exports("tiny"), backend="openvino", progress=False)
    alone = {s: _edit(engine, seed=s) for s in range(4)}
    together: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda s=s: together.__setitem__(s, _edit(engine, seed=s))) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(together) == list(range(4))
    for s in range(4):
        assert float(np.abs(together[s] - alone[s]).max()) < 1e-4


def test_drop_file_pages_leaves_the_data_intact(tmp_path):
    import mmap

    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4096)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        first = bytes(m[:4096])
        dropped = mapped_pages.drop_file_pages([path])
        assert bytes(m[:4096]) == first and m[-1] == 255
    if sys.platform.startswith("linux"):
        assert dropped >= 4096 * 256


def test_memory_plan_counts_bf16_activations_at_two_bytes(exports):
    from cyclediff.runtime.core.memory_plan import COEFFICIENTS, MemoryPlanner

    manifest = Manifest.load(exports("tiny"), verify_files=False)
    fp32 = MemoryPlanner(manifest, "openvino", "fp32", 1 << 34)
    bf16 = dataclasses.replace(fp32, dtype="bf16")
    assert "openvino" in COEFFICIENTS
    assert bf16.unet_sample_bytes(64, 64) * 2 == pytest.approx(fp32.unet_sample_bytes(64, 64), rel=1e-6)


def test_cli_runs_bf16_and_refuses_it_on_onnxruntime(exports, tmp_path):
    run = [sys.executable, "-m", "cyclediff.runtime.cli", "--engine", str(exports("tiny")), "--image", "sample",
           "--source-prompt", "a house", "--prompt", "a castle", "--steps", "4", "--seed", "0", "--quiet"]
    dtype = "bf16" if BF16 else "fp32"
    done = subprocess.run(run + ["--backend", "openvino", "--dtype", dtype, "--out", str(tmp_path / "a.png")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.png").is_file()
    bad = subprocess.run(run + ["--backend", "onnxruntime", "--dtype", "bf16", "--out", str(tmp_path / "b.png")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "backend 'openvino'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.png").exists()


def test_service_serves_an_openvino_engine(exports):
    """cyclediff-serve's app over an openvino Engine: /v1/info names it, /v1/edit equals Engine.edit."""
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")
    import base64
    import io

    import PIL.Image
    from fastapi.testclient import TestClient

    from cyclediff.serve.app import build_app
    from cyclediff.serve.config import EngineSpec, Limits
    from cyclediff.serve.worker import EngineWorker

    spec = EngineSpec(str(exports("tiny")), backend="openvino", dtype="bf16" if BF16 else "fp32", threads=1)
    engine = cyclediff.Engine.load(spec.folder, **spec.load_kwargs())
    buf = io.BytesIO()
    sample_image(32).save(buf, "PNG")
    worker = EngineWorker(engine, 2)
    try:
        with TestClient(build_app(worker, Limits(request_timeout_s=60))) as http:
            info = http.get("/v1/info").json()
            assert (info["backend"], info["dtype"]) == ("openvino", spec.dtype)
            r = http.post("/v1/edit", json={"image": base64.b64encode(buf.getvalue()).decode(), "seed": 5,
                                            "source_prompt": "a house", "prompt": "a castle",
                                            "num_inference_steps": 6, "output_format": "npy"})
            assert r.status_code == 200, r.text
        ref = engine.edit("a castle", "a house", PIL.Image.open(buf), num_inference_steps=6, output_type="np",
                          generator=torch.Generator().manual_seed(5)).images[0]
        assert np.abs(np.load(io.BytesIO(r.content)) - ref).max() <= 1e-4
    finally:
        worker.close()


def test_unet_compiles_once_per_latent_size_and_keeps_one(exports):
    """Every batch runs on the one batch-1 model of its latent size; another size replaces it (one model held)."""
    folder = exports("tiny")
    manifest = Manifest.load(folder, verify_files=False)
    unet = backends.load_runners(folder, manifest, "openvino", torch.device("cpu"))["unet"]
    ort = backends.load_runners(folder, manifest, "onnxruntime", torch.device("cpu"))["unet"]
    g = torch.Generator().manual_seed(1)
    for b, side in ((3, 8), (2, 8), (1, 8), (2, 16)):
        feeds = {"sample": torch.randn(b, 4, side, side, generator=g), "timestep": torch.rand(b, generator=g) * 900,
                 "encoder_hidden_states": torch.randn(b, 77, manifest.dims.text_width, generator=g)}
        got, want = torch.empty(b, 4, side, side), torch.empty(b, 4, side, side)
        unet(feeds, {"noise_pred": got})
        ort(feeds, {"noise_pred": want})
        assert float((got - want).abs().max()) < 1e-4, (b, side)
    assert unet.compiles == 2 and len(unet._models) == 1


def test_vae_runs_static_per_image_and_matches_onnxruntime(exports):
    """The VAE's models run every batch image by image on one static model per image size, as the UNet does."""
    folder = exports("tiny")
    manifest = Manifest.load(folder, verify_files=False)
    ov = backends.load_runners(folder, manifest, "openvino", torch.device("cpu"))
    ort = backends.load_runners(folder, manifest, "onnxruntime", torch.device("cpu"))
    f, c = manifest.dims.vae_scale, manifest.dims.latent_channels
    g = torch.Generator().manual_seed(2)
    for b, side in ((2, 8), (1, 8), (2, 16)):
        image = torch.rand(b, 3, side * f, side * f, generator=g) * 2 - 1
        got = {n: torch.empty(b, c, side, side) for n in ("mean", "std")}
        want = {n: torch.empty(b, c, side, side) for n in ("mean", "std")}
        ov["vae_encoder"]({"image": image}, got)
        ort["vae_encoder"]({"image": image}, want)
        assert all(float((got[n] - want[n]).abs().max()) < 1e-4 for n in got), (b, side)
        pixels, ref = torch.empty(b, 3, side * f, side * f), torch.empty(b, 3, side * f, side * f)
        ov["vae_decoder"]({"latent": got["mean"]}, {"image": pixels})
        ort["vae_decoder"]({"latent": got["mean"]}, {"image": ref})
        assert float((pixels - ref).abs().max()) < 1e-4, (b, side)
    assert ov["vae_encoder"].compiles == ov["vae_decoder"].compiles == 2


def test_the_vae_models_never_hold_buffers_at_once_and_results_do_not_change(exports):
    """Before one VAE model runs, the other releases its buffers; a model called again keeps its own."""
    folder = exports("tiny")
    manifest = Manifest.load(folder, verify_files=False)
    ov = backends.load_runners(folder, manifest, "openvino", torch.device("cpu"))
    enc, dec = ov["vae_encoder"], ov["vae_decoder"]
    f, c = manifest.dims.vae_scale, manifest.dims.latent_channels
    image = torch.rand(1, 3, 8 * f, 8 * f, generator=torch.Generator().manual_seed(4)) * 2 - 1

    def encode() -> torch.Tensor:
        out = {n: torch.empty(1, c, 8, 8) for n in ("mean", "std")}
        enc({"image": image}, out)
        return out["mean"]

    def decode(latent: torch.Tensor) -> torch.Tensor:
        out = torch.empty(1, 3, 8 * f, 8 * f)
        dec({"latent": latent}, {"image": out})
        return out

    first = encode()
    pixels = decode(first)
    assert (enc.releases, dec.releases) == (1, 0)
    assert torch.equal(decode(first), pixels) and dec.releases == 0  # called again: kept its buffers
    assert torch.equal(encode(), first) and (enc.releases, dec.releases) == (1, 1)
    assert torch.equal(decode(first), pixels) and enc.releases == 2


@needs_bf16
def test_bf16_vae_overflow_reruns_in_fp32(exports):
    """A non-finite bf16 VAE decode is computed again by the lazily compiled fp32 twin."""
    from cyclediff.runtime.core.precision import GuardedRunner

    engine = cyclediff.Engine.load(exports("tiny"), backend="openvino", dtype="bf16", progress=False)
    guarded = engine.runners["vae_decoder"]
    assert isinstance(guarded, GuardedRunner) and not isinstance(engine.runners["unet"], GuardedRunner)
    side = 4 * engine.manifest.dims.unet_downscale
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    scale = engine.manifest.dims.vae_scale
    want, got = (torch.empty(1, 3, side * scale, side * scale) for _ in range(2))
    guarded.fallback()({"latent": latent}, {"image": want})
    real = guarded.fp16
    guarded.fp16 = lambda feeds, outputs: outputs["image"].fill_(float("nan"))
    try:
        before = guarded.guard.fallbacks
        guarded({"latent": latent}, {"image": got})
    finally:
        guarded.fp16 = real
    assert guarded.guard.fallbacks == before + 1 and torch.equal(got, want)


def test_openvino_tables_round_square_roots_as_the_cpp_executor(exports):
    """openvino's step tables take correctly rounded square roots (what libcyclediff computes without libtorch),
    every other backend torch's (the reference's); a schedule where the two differ shows which one ran."""
    from cyclediff.runtime.core.schedule import COEFFICIENTS, StepTable, rounded_sqrt, torch_sqrt

    x = torch.rand(4000)
    assert all(rounded_sqrt(v).item() == np.sqrt(np.float32(v.item())) for v in x[:500])
    engines = {b: cyclediff.Engine.load(exports("tiny"), backend=b, progress=False) for b in ("openvino", "torch")}
    cfg = engines["torch"].core.scheduler
    args = next(a for a in ((n, 1.0, 0.7) for n in range(2, 200))
                if _columns(StepTable.build(cfg, *a, sqrt=rounded_sqrt), COEFFICIENTS)
                != _columns(StepTable.build(cfg, *a, sqrt=torch_sqrt), COEFFICIENTS))
    for backend, sqrt in (("openvino", rounded_sqrt), ("torch", torch_sqrt)):
        got = _columns(engines[backend].core.table(*args), COEFFICIENTS)
        assert got == _columns(StepTable.build(cfg, *args, sqrt=sqrt), COEFFICIENTS), backend


def _columns(table, names) -> list[list[float]]:
    return [getattr(table, n).tolist() for n in names]
