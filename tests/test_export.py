"""The export stage in-process: manifest contents, ONNX-vs-torch parity, reuse, replacement, failures, single file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ldm_layout import to_ldm

from cyclediff.export import checkpoint, models
from cyclediff.export.manifest import MANIFEST, Manifest, ManifestError, sha256_files
from cyclediff.export.onnx_export import ExportError, ExportSettings
from cyclediff.export.pipeline import STAGING, run
from cyclediff.export.reuse import STATE
from cyclediff.export.specs import MODEL_NAMES, Dims, specs
from cyclediff.export.verify import Tolerance

ALL = MODEL_NAMES


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One export of 'tiny' made here (its report is what the tests look at); copy before changing it."""
    out = tmp_path_factory.mktemp("tiny")
    return out, run("tiny", out, quiet=True)


@pytest.fixture(scope="module")
def tiny():
    return checkpoint.load(checkpoint.resolve("tiny"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_manifest_records_checkpoint_models_scheduler_and_tools(first, tiny):
    out, report = first
    m = Manifest.load(out)
    assert m == report.manifest
    ref = checkpoint.resolve("tiny")
    assert m.checkpoint == {**ref.to_json(), "content_hash": checkpoint.content_hash(ref), "loras": []}
    dims = Dims.of(tiny.text_encoder, tiny.vae, tiny.unet)
    assert m.dims == dims and (dims.text_states, dims.text_width, dims.vae_scale) == (3, 32, 2)
    assert m.scheduler["timestep_spacing"] == "leading" and m.scheduler["beta_schedule"] == "scaled_linear"
    assert m.vae_scaling_factor == pytest.approx(0.18215) and m.sample_size == 32 and m.opset == 18
    assert set(m.tools) == {"cyclediff", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "openvino",
                            "python"}  # openvino: it converts the graphs to IR (export/openvino_ir.py)
    for name in ALL:
        entry = m.models[name]
        assert entry.file == f"{name}.onnx" and entry.data_files == ()
        assert entry.sha256 == sha256_files([out / entry.file])
        assert entry.spec == specs(dims)[name]
    assert set(m.tokenizer_files) >= {"tokenizer_config.json"}
    ort = {f for e in m.extra["ort_optimized"]["graphs"] for f in (e["file"], *e["data_files"])}  # ort_cache.py
    ir = {f for e in m.extra["openvino_ir"]["graphs"] for f in (e["file"], *e["data_files"])}  # openvino_ir.py
    assert ir == {f"openvino/{n}.{ext}" for n in ALL for ext in ("xml", "bin")}
    assert _files(out) == {MANIFEST, STATE, *(f"{n}.onnx" for n in ALL), *(f"tokenizer/{f}" for f in m.tokenizer_files),
                           *ort, *ir}


def test_graphs_carry_opset_and_declared_io_shapes(first):
    out, report = first
    for entry in report.manifest.models.values():
        graph = onnx.load(str(out / entry.file), load_external_data=False)
        assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == 18
        declared = {t.name: list(t.shape) for t in entry.spec.inputs + entry.spec.outputs}
        got = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
               for v in list(graph.graph.input) + list(graph.graph.output)}
        assert got == declared


def test_exported_tokenizer_encodes_like_the_checkpoints(first, tiny):
    from transformers import CLIPTokenizer

    exported = CLIPTokenizer.from_pretrained(first[0] / "tokenizer")
    for text in ("a photo of an astronaut riding a horse", "", "WATERCOLOR sketch, of a cat!"):
        assert exported(text).input_ids == tiny.tokenizer(text).input_ids


def test_verification_ran_at_an_untraced_batch_and_size(first):
    for name, parity in first[1].parity.items():
        assert parity["batch"] == 3 and tuple(parity["latent_hw"]) == (6, 8)  # traced at batch 2, 4x4
        for out in parity["outputs"]:
            print(f"{name}.{out['name']}: max_abs={out['max_abs']:.2e} max_rel={out['max_rel']:.2e}")
            assert out["max_abs"] <= 1e-4 + 1e-3 * out["scale"]


@pytest.mark.parametrize("name", ALL)
def test_onnx_matches_torch_at_batch_1_and_a_third_size(first, tiny, name):
    import onnxruntime as ort

    spec, dims = first[1].manifest.models[name].spec, first[1].manifest.dims
    feeds = models.sample_inputs(spec, dims, batch=1, latent_hw=(8, 2), seed=5)
    session = ort.InferenceSession(str(first[0] / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    with torch.no_grad():
        want = models.graphs(tiny)[name](*(feeds[t.name] for t in spec.inputs))
    for t, g, w in zip(spec.outputs, got, want if isinstance(want, tuple) else (want,)):
        err = float(np.abs(g - w.numpy()).max())
        print(f"{name}.{t.name} {list(g.shape)}: max_abs={err:.2e} max_rel={err / float(w.abs().max()):.2e}")
        assert g.shape == tuple(w.shape) and err <= 1e-4


def test_rerun_reuses_every_model_without_rewriting(first, tmp_path):
    out = _copy(first[0], tmp_path / "out")
    stamps = {n: (out / f"{n}.onnx").stat().st_mtime_ns for n in ALL}
    report = run("tiny", out, quiet=True)
    assert report.reused == ALL and report.exported == ()
    assert {n: (out / f"{n}.onnx").stat().st_mtime_ns for n in ALL} == stamps
    assert Manifest.load(out).digest == first[1].manifest.digest  # same checkpoint, same files: same identity


def test_truncated_model_is_refused_then_reexported_alone(first, tmp_path):
    out = _copy(first[0], tmp_path / "out")
    data = (out / "unet.onnx").read_bytes()
    (out / "unet.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError, match="model unet"):
        Manifest.load(out)
    report = run("tiny", out, quiet=True)
    assert report.exported == ("unet",) and set(report.reused) == set(ALL) - {"unet"}
    Manifest.load(out)


def test_unknown_schema_version_is_refused(first, tmp_path):
    out = _copy(first[0], tmp_path / "out")
    d = json.loads((out / MANIFEST).read_text())
    d["schema_version"] = 99
    (out / MANIFEST).write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="schema_version 99"):
        Manifest.load(out)


def test_external_data_files_are_hashed_and_removed_when_unused(first, tmp_path):
    out = _copy(first[0], tmp_path / "out")
    report = run("tiny", out, quiet=True, settings=ExportSettings(external_data_bytes=0))
    assert report.exported == ALL  # another setting is another reuse key
    for name, entry in Manifest.load(out).models.items():  # hashes cover .onnx + .onnx.data
        assert entry.data_files == (f"{name}.onnx.data",)
        assert entry.sha256 == sha256_files([out / entry.file, out / entry.data_files[0]])
    assert report.parity["unet"]["outputs"][0]["max_abs"] <= 1e-4  # ORT found the data next to the graph
    assert run("tiny", out, quiet=True).exported == ALL
    assert not any(f.endswith(".onnx.data") for f in _files(out))


def test_another_checkpoint_replaces_the_folder_cleanly(first, tmp_path):
    out = _copy(first[0], tmp_path / "out")
    (out / "unet.onnx.data").write_bytes(b"stale weights of a bigger export")
    report = run("tiny-trailing", out, quiet=True)
    assert report.exported == ALL
    m = Manifest.load(out)
    assert m.checkpoint["spec"] == "tiny-trailing" and m.scheduler["timestep_spacing"] == "trailing"
    assert m.checkpoint["content_hash"] != first[1].manifest.checkpoint["content_hash"]
    assert all(m.models[n].sha256 != first[1].manifest.models[n].sha256 for n in ALL)
    assert _files(out) == _files(first[0])  # nothing stale left, no staging


def test_dynamo_fallback_when_the_legacy_tracer_fails(monkeypatch, tmp_path):
    real = torch.onnx.export

    def legacy_breaks_on_text(module, *args, **kw):
        if not kw.get("dynamo") and isinstance(module, models.TextEncoderGraph):
            raise RuntimeError("simulated tracer failure")
        return real(module, *args, **kw)

    monkeypatch.setattr(torch.onnx, "export", legacy_breaks_on_text)
    report = run("tiny", tmp_path / "out", quiet=True)
    assert report.exporters == {**{n: "legacy" for n in ALL}, "text_encoder": "dynamo"}
    Manifest.load(tmp_path / "out")


def test_failed_export_raises_and_leaves_no_manifest(first, monkeypatch, tmp_path):
    out = _copy(first[0], tmp_path / "out")

    real = torch.onnx.export

    def unet_breaks(module, *args, **kw):
        if isinstance(module, models.UNetGraph):
            raise RuntimeError(f"simulated {'dynamo' if kw.get('dynamo') else 'legacy'} failure")  # noqa: TRY004
        return real(module, *args, **kw)

    monkeypatch.setattr(torch.onnx, "export", unet_breaks)
    with pytest.raises(ExportError, match="(?s)could not export unet.*legacy failure.*dynamo failure"):
        run("tiny", out, quiet=True, force=True)  # force: the copied unet.onnx would otherwise be reused
    assert not (out / MANIFEST).exists()


def test_parity_beyond_tolerance_fails_the_export(tmp_path):
    settings = ExportSettings(exporters=("legacy",))
    with pytest.raises(ExportError, match="beyond tolerance"):
        run("tiny", tmp_path / "out", settings=settings, tolerance=Tolerance(rtol=0.0, atol=1e-12), quiet=True)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_trace_size_must_suit_the_unet(tmp_path):
    with pytest.raises(ValueError, match="multiple of 2"):
        run("tiny", tmp_path / "out", settings=ExportSettings(trace_size=5), quiet=True)


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """tiny as one LDM-layout .safetensors + a --config folder with configs and tokenizer but no weights."""
    root = tmp_path_factory.mktemp("single")
    folder = checkpoint.resolve("tiny").path
    config = root / "configs"
    shutil.copytree(folder, config, ignore=shutil.ignore_patterns("*.safetensors"))
    return to_ldm(folder, root / "tiny-ldm.safetensors"), config


def test_single_file_loads_the_folders_weights(single_file, tiny):
    path, config = single_file
    loaded = checkpoint.load(checkpoint.resolve(str(path), config=str(config)))
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(tiny, part).state_dict(), getattr(loaded, part).state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), part


def test_single_file_exports_the_same_graphs(single_file, first, tmp_path):
    import onnxruntime as ort

    path, config = single_file
    report = run(str(path), tmp_path / "out", config=str(config), quiet=True)
    m = Manifest.load(tmp_path / "out")
    assert m.checkpoint["kind"] == "file" and m.checkpoint["config"] == str(config)
    assert m.scheduler == first[1].manifest.scheduler and m.dims == first[1].manifest.dims
    for name in ALL:
        spec = m.models[name].spec
        feeds = {k: v.numpy() for k, v in models.sample_inputs(spec, m.dims, 2, (4, 6)).items()}
        a, b = (ort.InferenceSession(str(d / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
                for d in (tmp_path / "out", first[0]))
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), name
    assert report.exported == ALL and not (tmp_path / "out" / STAGING).exists()
