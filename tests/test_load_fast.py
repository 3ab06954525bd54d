"""Fast loads: ONNX Runtime-optimized graphs cached at export, integrity stamps (fast) against sha256 (full), threads."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine
from cyclediff.export import checkpoint, integrity, ort_cache
from cyclediff.export.cli import main as export_main
from cyclediff.export.integrity import Sampling
from cyclediff.export.manifest import MANIFEST, Manifest, ManifestError, sha256_files
from cyclediff.export.pipeline import run
from cyclediff.runtime.core import backends

CPU = torch.device("cpu")
SMALL = Sampling(block=4096, max_blocks=4)  # leaves most of every file unsampled, so "fast" can miss a change


def _copy(exports, tmp_path: Path, name: str = "tiny") -> Path:
    return Path(shutil.copytree(exports(name), tmp_path / name))


def _restamp(folder: Path, ckpt: Path | None = None) -> Manifest:
    """Re-record the stamps with SMALL sampling (and the checkpoint at `ckpt`), as an export would."""
    m = Manifest.load(folder, verify_files=False)
    if ckpt is not None:
        m = _with_checkpoint(folder, m, ckpt)
    ref = checkpoint.CheckpointRef(m.checkpoint["spec"], m.checkpoint["kind"], Path(m.checkpoint["path"]))
    m = integrity.attach(folder, m, integrity.checkpoint_stamps(ref, SMALL), SMALL)
    m.save(folder)
    return m


def _with_checkpoint(folder: Path, m: Manifest, ckpt: Path) -> Manifest:
    d = m.to_json()
    d["checkpoint"].update(kind="folder", path=str(ckpt))
    (folder / MANIFEST).write_text(json.dumps(d))
    return Manifest.load(folder, verify_files=False)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def _unsampled(path: Path, sampling: Sampling, after: float = 0.5) -> int:
    """An offset past `after` of the file that no sampled block covers."""
    size = path.stat().st_size
    taken = sampling.ranges(size)
    offset = int(size * after)
    while any(s <= offset < s + n for s, n in taken):
        offset += 1
    assert offset < size
    return offset


def _saved(m: Manifest, name: str) -> dict:
    return ort_cache.lookup(m, m.models[name].sha256, ort_cache.OrtTarget.here())


def _edit(folder: Path) -> np.ndarray:
    engine = Engine.load(folder, backend="onnxruntime", progress=False)
    return engine.edit("a cat", "a dog", sample_image(engine.manifest.sample_size), num_inference_steps=4,
                       generator=torch.Generator().manual_seed(0), output_type="np").images


# ---- stamps -----------------------------------------------------------------------------------------------------
def test_sampling_hashes_small_files_whole_and_samples_large_ones():
    s = Sampling(block=10, max_blocks=4)
    assert s.ranges(40) == [(0, 40)]
    ranges = s.ranges(1000)
    assert ranges[0][0] == 0 and ranges[-1] == (990, 10) and len(ranges) <= 5
    assert all(n == 10 for _, n in ranges)


def test_export_stamps_every_recorded_file_and_the_checkpoint(exports):
    m = Manifest.load(exports("tiny"))
    stamps = m.extra["integrity"]["files"]
    assert set(stamps) == {f for g in integrity.groups(m) for f in g.files}
    for rel, rec in stamps.items():
        path = exports("tiny") / rel
        assert rec == {"size": path.stat().st_size, "stamp": integrity.stamp(path)}
    assert "unet/config.json" in m.extra["integrity"]["checkpoint"]


# ---- ONNX Runtime-optimized graphs ------------------------------------------------------------------------------
def test_export_saves_one_optimized_graph_per_model(exports):
    folder = exports("tiny")
    m = Manifest.load(folder)
    for name in m.models:
        saved = _saved(m, name)
        assert saved is not None and saved["model"] == name and saved["file"].startswith("ort/")
        assert sha256_files([folder / f for f in (saved["file"], *saved["data_files"])]) == saved["sha256"]


def test_load_opens_the_optimized_graphs_and_matches_optimizing_in_memory(exports, tmp_path):
    folder = _copy(exports, tmp_path)
    m = Manifest.load(folder)
    runners = backends.load_runners(folder, m, "onnxruntime", CPU)
    assert all(r.optimized and r.path == folder / _saved(m, n)["file"] for n, r in runners.items())
    fast = _edit(folder)
    d = json.loads((folder / MANIFEST).read_text())
    del d["extra"][ort_cache.SECTION]  # as an export made before the cache: every load optimizes in memory
    (folder / MANIFEST).write_text(json.dumps(d))
    np.testing.assert_allclose(fast, _edit(folder), rtol=0, atol=1e-6)


def test_another_cpu_or_onnxruntime_optimizes_in_memory(exports, monkeypatch):
    folder = exports("tiny")
    monkeypatch.setattr(ort_cache, "hardware", lambda: "elsewhere:avx")
    m = Manifest.load(folder)
    runners = backends.load_runners(folder, m, "onnxruntime", CPU)
    assert all(not r.optimized and r.path == folder / m.models[n].file for n, r in runners.items())


def test_reexport_reuses_the_optimized_graphs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run("tiny", out, quiet=True).manifest

    def fail(*args, **kw):
        raise AssertionError("re-optimized an unchanged graph")

    monkeypatch.setattr(ort_cache, "optimize", fail)
    again = run("tiny", out, quiet=True).manifest
    assert again.extra[ort_cache.SECTION] == first.extra[ort_cache.SECTION]


# ---- verify="fast" / "full" on the ONNX Runtime backend -----------------------------------------------------------
def test_truncated_file_is_refused_by_a_fast_load(exports, tmp_path):
    folder = _copy(exports, tmp_path)
    weights = folder / _saved(Manifest.load(folder), "unet")["data_files"][0]
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 100)
    with pytest.raises(ManifestError, match="truncated or partially written"):
        Engine.load(folder, backend="onnxruntime", progress=False)


def test_flipped_byte_in_a_sampled_block_is_caught_by_a_fast_load(exports, tmp_path):
    folder = _copy(exports, tmp_path)
    _restamp(folder)
    weights = folder / _saved(Manifest.load(folder), "unet")["data_files"][0]
    _flip(weights, SMALL.ranges(weights.stat().st_size)[1][0] + 7)
    with pytest.raises(ManifestError, match="recorded stamp"):
        Engine.load(folder, backend="onnxruntime", progress=False)


def test_flipped_byte_outside_the_sampled_blocks_is_caught_only_by_the_full_check(exports, tmp_path, capsys):
    folder = _copy(exports, tmp_path)
    _restamp(folder)
    weights = folder / _saved(Manifest.load(folder), "unet")["data_files"][0]
    _flip(weights, _unsampled(weights, SMALL))
    Engine.load(folder, backend="onnxruntime", progress=False)  # fast: sizes and sampled blocks still match
    with pytest.raises(ManifestError, match="does not match its recorded hash"):
        Engine.load(folder, backend="onnxruntime", progress=False, verify="full")
    assert export_main(["--verify", str(folder)]) == 1
    assert weights.name in capsys.readouterr().err


def test_swapped_files_are_refused(exports, tmp_path):
    folder = _copy(exports, tmp_path)
    other = _copy(exports, tmp_path, "tiny-trailing")
    m = Manifest.load(folder)
    enc, dec = (folder / m.models[n].file for n in ("vae_encoder", "vae_decoder"))
    _swap(enc, dec)
    with pytest.raises(ManifestError, match="vae_"):
        Engine.load(folder, backend="onnxruntime", progress=False)
    _swap(enc, dec)  # put them back; now another export's UNet weights
    saved = _saved(m, "unet")["data_files"][0]
    shutil.copyfile(other / _saved(Manifest.load(other), "unet")["data_files"][0], folder / saved)
    with pytest.raises(ManifestError, match="unet"):
        Engine.load(folder, backend="onnxruntime", progress=False)


def test_cli_verify_passes_an_intact_export(exports, capsys):
    assert export_main(["--verify", str(exports("tiny"))]) == 0
    assert "match their recorded sha256" in capsys.readouterr().out


def test_export_without_stamps_gets_the_full_check(exports, tmp_path):
    folder = _copy(exports, tmp_path)
    d = json.loads((folder / MANIFEST).read_text())
    for key in (integrity.SECTION, ort_cache.SECTION):
        del d["extra"][key]
    (folder / MANIFEST).write_text(json.dumps(d))
    Engine.load(folder, backend="onnxruntime", progress=False)
    unet = folder / d["models"]["unet"]["file"]
    _flip(unet, _unsampled(unet, SMALL))
    with pytest.raises(ManifestError, match="recorded hash"):
        Engine.load(folder, backend="onnxruntime", progress=False)


def test_unknown_verify_mode_is_refused(exports):
    with pytest.raises(ValueError, match="verify must be one of"):
        Engine.load(exports("tiny"), verify="quick")


# ---- the torch backend's checkpoint ------------------------------------------------------------------------------
def test_torch_fast_load_checks_checkpoint_stamps_not_its_whole_hash(exports, tmp_path, monkeypatch):
    folder = _copy(exports, tmp_path)
    ckpt = Path(shutil.copytree(Manifest.load(folder).checkpoint["path"], tmp_path / "ckpt"))
    _restamp(folder, ckpt)
    weights = next((ckpt / "unet").glob("*.safetensors"))
    _flip(weights, _unsampled(weights, SMALL))
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "content_hash", lambda ref: pytest.fail("a fast load hashed the checkpoint"))
        Engine.load(folder, backend="torch", progress=False)
    with pytest.raises(ManifestError, match="changed since this export"):
        Engine.load(folder, backend="torch", progress=False, verify="full")
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 1)
    with pytest.raises(ManifestError, match="changed since this export.*truncated"):
        Engine.load(folder, backend="torch", progress=False)


# ---- threads ---------------------------------------------------------------------------------------------------
def test_threads_default_to_the_cpu_affinity():
    assert backends.threads_for(None) == len(os.sched_getaffinity(0))
    assert backends.threads_for(3) == 3
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="threads"):
            backends.threads_for(bad)


def test_threads_reach_onnxruntime_and_torch(exports):
    folder = exports("tiny")
    m = Manifest.load(folder)
    runners = backends.load_runners(folder, m, "onnxruntime", CPU, threads=1)
    for r in runners.values():
        options = r.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    before = torch.get_num_threads()
    try:
        backends.load_runners(folder, m, "torch", CPU, threads=1)
        assert torch.get_num_threads() == 1  # process-wide: documented
    finally:
        torch.set_num_threads(before)
