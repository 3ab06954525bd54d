"""`cyclediff-export` as a function: checkpoint -> verified ONNX models, tokenizer and manifest.json in one folder.

Crash safety: manifest.json is deleted before anything in DIR changes and written last, so a folder whose run
did not finish never loads. Every file is staged in DIR/.staging and renamed into place once verified.
Reuse: DIR/.export-state.json records, per model, the key it was exported under (checkpoint hash, settings,
tool versions, wrapper code) and its files' sha256; a re-run skips models whose files still match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from cyclediff.export import attention_maps, checkpoint, integrity, lora, models, writable
from cyclediff.export.attention_maps import UNET_ATTN
from cyclediff.export.heap import release_freed_memory
from cyclediff.export.manifest import MANIFEST, TOKENIZER_DIR, TORCH_ONLY, Manifest, ModelEntry, sha256_files
from cyclediff.export.onnx_export import ExportError, ExportSettings, export_onnx
from cyclediff.export.progress import Progress, quiet_libraries
from cyclediff.export.reuse import STATE, ExportState, ModelRecord, model_key
from cyclediff.export.specs import MODEL_NAMES, UNET, VAE_DECODER, VAE_ENCODER, Dims, specs
from cyclediff.export.verify import Parity, Tolerance, check_graph, compare

STAGING = ".staging"
_TOOLS = ("cyclediff", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "openvino")
_STEPS = 3 + 2 * len(MODEL_NAMES) + 2  # resolve, hash, load, (export, verify) per model, tokenizer, manifest


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What a run did: the manifest it wrote, which models it exported or reused, and their parity."""

    manifest: Manifest
    exported: tuple[str, ...]
    reused: tuple[str, ...]
    exporters: dict[str, str]  # model -> "legacy" | "dynamo" (for reused models: the one recorded)
    parity: dict[str, dict[str, Any]]  # model -> Parity.to_json() (recorded when it was verified)


TORCH_ONLY_PARITY = {"skipped": "torch-only export: checked with onnx.checker, not run in ONNX Runtime"}


def export(ckpt: str, out: str | Path, *, config: str | None = None, opset: int = 18, trace_size: int | None = None,
           exporter: str = "auto", quiet: bool = False, force: bool = False, torchscript: bool = False,
           fp16: bool = False, attention_maps: bool = False, loras: tuple = (), torch_only: bool = False) -> Manifest:
    """Export checkpoint `ckpt` into folder `out`; return the manifest written there.

    torch_only: graphs for the torch backend alone (ExportSettings.torch_only): no ONNX Runtime or OpenVINO steps.

    loras: 'FILE[:SCALE]' strings (or export/lora.py LoraSpecs): LoRAs fused into the weights, in order.

    torchscript: also write TorchScript programs (DIR/torchscript/), which libcyclediff's CPU executor runs.
    fp16: also write fp16 ONNX graphs (DIR/fp16/, I/O kept fp32) for the onnxruntime backend's dtype="fp16".
    attention_maps: also write unet_attn.onnx, the UNet with its cross-attention probabilities as outputs
    (export/attention_maps.py: Pix2Pix-Zero's reference pass off torch); a second copy of the UNet weights.
    """
    exporters = exporter_order(exporter)
    settings = ExportSettings(opset=opset, exporters=exporters, trace_size=trace_size, torch_only=torch_only)
    return run(ckpt, out, config=config, settings=settings, quiet=quiet, force=force,
               torchscript=torchscript, fp16=fp16, attention_maps=attention_maps, loras=loras).manifest


def exporter_order(exporter: str) -> tuple[str, ...]:
    """'auto' tries the fast legacy tracer first and falls back to dynamo (the other way round costs ~20x time)."""
    choices = {"auto": ("legacy", "dynamo"), "legacy": ("legacy",), "dynamo": ("dynamo",)}
    if exporter not in choices:
        raise ValueError(f"exporter must be one of {', '.join(choices)}, got {exporter!r}")
    return choices[exporter]


def run(ckpt: str, out: str | Path, *, config: str | None = None, settings: ExportSettings | None = None,
        tolerance: Tolerance | None = None, quiet: bool = False, force: bool = False,
        torchscript: bool = False, fp16: bool = False, attention_maps: bool = False,
        loras: tuple = ()) -> ExportReport:
    """The export with its report; `export` is this minus the report. None: default settings/tolerance.
    loras: 'FILE[:SCALE]' strings or export/lora.py LoraSpecs, fused in order (checked before anything else)."""
    out, settings, tolerance = Path(out), settings or ExportSettings(), tolerance or Tolerance()
    if settings.torch_only:
        if fp16 or torchscript or attention_maps:
            raise ValueError("a torch-only export writes no graphs for other runtimes: drop --fp16, --torchscript "
                             "and --attention-maps, or drop --torch-only")
        settings = dataclasses.replace(settings, ort_attention=False)
    specs = tuple(lora.checked(s if isinstance(s, lora.LoraSpec) else lora.parse(s)) for s in loras)
    _check_out(out)
    progress = Progress(_STEPS, quiet)
    ok = False
    try:
        with quiet_libraries(quiet):
            with progress.step("resolve checkpoint"):
                ref = checkpoint.resolve(ckpt, config)
                if config and ref.kind != "file":
                    raise ValueError(f"--config is for single-file checkpoints; {ckpt} is a {ref.kind} checkpoint "
                                     "that carries its own configs (drop --config)")
            with progress.step("hash checkpoint"):
                ckpt_hash = checkpoint.content_hash(ref)
            with progress.step("load checkpoint"):
                comps = checkpoint.load(ref, specs)
            run_ = _Run(out, ref, ckpt_hash, comps, settings, tolerance, progress, force, attention_maps, specs)
            report = run_.go(torchscript, fp16)
        ok = True
        return report
    finally:
        progress.close(ok)


class _Run:
    """One export into `out` of an already loaded checkpoint."""

    def __init__(self, out, ref, ckpt_hash, comps, settings, tolerance, progress, force,
                 with_maps: bool = False, loras: tuple = ()) -> None:
        self.out, self.ref, self.ckpt_hash, self.comps = out, ref, ckpt_hash, comps
        self.loras = loras
        # Reuse keys: the checkpoint, plus the fused LoRAs for the models they change (diffusers' SD LoRA loader
        # reaches the UNet and the text encoder, never the VAE).
        self.lora_hash = lora.reuse_hash(ckpt_hash, loras)
        self.settings, self.tolerance, self.progress, self.force = settings, tolerance, progress, force
        self.dims = Dims.of(comps.text_encoder, comps.vae, comps.unet)
        self.specs = specs(self.dims)
        self.graphs = models.graphs(comps)
        self.names = MODEL_NAMES
        if with_maps:  # the optional second UNet graph (--attention-maps), exported and verified like the others
            self.graphs[UNET_ATTN] = attention_maps.graph(comps.unet)
            self.specs[UNET_ATTN] = attention_maps.spec(self.dims, self.graphs[UNET_ATTN].layers)
            self.names += (UNET_ATTN,)
            progress.add(2)
        self.trace_hw, self.verify_hw = _sizes(settings, self.dims.unet_downscale)
        self.code = {**_code_identity(), "config": _config_identity(ref)}

    def go(self, torchscript: bool = False, fp16: bool = False) -> ExportReport:
        previous = _prepare(self.out)
        self.state = _state_for(self.out, self.ckpt_hash)
        records, reused = {}, []
        for name in self.names:
            records[name], was_reused = self._model(name)
            if was_reused:
                reused.append(name)
        with self.progress.step("copy tokenizer"):
            tokenizer_files = _install_tokenizer(self.comps.tokenizer, self.out)
        extra = {**(self._torchscript() if torchscript else {}), **(self._fp16(records) if fp16 else {}),
                 **self._memory_extra(records)}
        self._release_weights()
        with self.progress.step("write manifest"):
            manifest = self._manifest(records, tokenizer_files, previous)
            manifest = dataclasses.replace(manifest, extra={**manifest.extra, **extra})
            extra = {k: v for k, v in manifest.extra.items() if k != TORCH_ONLY}  # not one carried from a run before
            if self.settings.torch_only:
                extra[TORCH_ONLY] = True
            manifest = dataclasses.replace(manifest, extra=extra)
            # ORT-optimized graphs and OpenVINO IR (not for torch-only), file stamps
            manifest = integrity.for_fast_load(self.out, manifest, self.ref, derived=not self.settings.torch_only)
            manifest.verify_files(self.out)
            manifest.save(self.out)  # last: from here on the folder loads
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        return ExportReport(manifest, tuple(n for n in self.names if n not in reused), tuple(reused),
                            {k: r.exporter for k, r in records.items()}, {k: r.parity for k, r in records.items()})

    def _release_weights(self) -> None:
        """Every torch graph is exported and verified: free the checkpoint's weights (the modules stay, on the meta
        device, with their configs) before the ORT-cache step, the export's largest (an SD UNet session)."""
        for module in (self.comps.unet, self.comps.vae, self.comps.text_encoder):
            module.to("meta")
        release_freed_memory()

    def _torchscript(self) -> dict[str, Any]:
        """TorchScript programs for libcyclediff's libtorch executor, recorded as extra["torchscript"]."""
        from cyclediff.export.torchscript import export_torchscript, manifest_entry

        self.progress.add(1)
        with self.progress.step("export torchscript"):
            return {"torchscript": manifest_entry(export_torchscript(self.graphs, self.out, self.dims))}

    def _fp16(self, records: dict[str, ModelRecord]) -> dict[str, Any]:
        """fp16 conversions of the verified fp32 graphs, recorded as extra["fp16_onnx"] (file + sha256)."""
        from cyclediff.export.fp16 import convert_file

        entries = {}
        self.progress.add(len(MODEL_NAMES))
        for name in MODEL_NAMES:
            with self.progress.step(f"fp16 {name}"):
                files = convert_file(self.out / records[name].files[0], self.out / "fp16" / f"{name}.onnx")
                rel = [str(f.relative_to(self.out)) for f in files]
                entries[name] = {"file": rel[0], "data_files": rel[1:], "sha256": sha256_files(files)}
        return {"fp16_onnx": entries}

    def _model(self, name: str) -> tuple[ModelRecord, bool]:
        source = self.lora_hash if name in lora.MODELS else self.ckpt_hash
        key = model_key(source, name, self.settings.to_json(), self.code)
        record = None if self.force else self.state.reusable(self.out, name, key)
        if record is not None:
            self.progress.skip(2, f"reuse {name}")
            self.progress.write(f"reuse {name}: {', '.join(record.files)} unchanged (sha256 {record.sha256[:12]})")
            return record, True
        record = self._build(name, key)
        _install_model(self.out, name, record)
        self.state = self.state.with_model(name, record)
        self.state.save(self.out)
        return record, False

    def _build(self, name: str, key: str) -> ModelRecord:
        """Export with each exporter in turn until one verifies; files are left in DIR/.staging/<name>."""
        failures = []
        for i, exporter in enumerate(self.settings.exporters):
            staging = self.out / STAGING / name
            shutil.rmtree(staging, ignore_errors=True)
            try:
                with self.progress.step(f"export {name}"):
                    files = export_onnx(exporter, self.graphs[name], self.specs[name], self.dims, staging,
                                        self.settings, self.trace_hw)
                    files = self._ort_attention(name, files)
                with self.progress.step(f"verify {name}"):
                    parity = self._verify(name, files[0])
            except Exception as err:  # noqa: BLE001 -- torch's exporters raise anything; try the next one
                failures.append(f"{exporter} exporter: {err}")
                if i + 1 < len(self.settings.exporters):
                    self.progress.add(2)
                    self.progress.write(f"{name}: the {exporter} exporter failed ({_first_line(err)}); "
                                        f"trying {self.settings.exporters[i + 1]}")
                continue
            if parity is not None:  # None: torch-only, checked but not run
                self.progress.write(str(parity))
            rel = tuple(str(f.relative_to(staging)) for f in files)
            return ModelRecord(key, rel, sha256_files(files), exporter,
                               TORCH_ONLY_PARITY if parity is None else parity.to_json())
        raise ExportError(f"could not export {name}:\n  " + "\n  ".join(failures))

    def _ort_attention(self, name: str, files: list[Path]) -> list[Path]:
        """The UNet (export/ort_optimize.py) and the VAE graphs (export/sdpa_fusion.py) with fused,
        non-materializing attention, verified like any graph after this; the unfused graph, with a message,
        if the fusion fails."""
        if name not in (UNET, UNET_ATTN, VAE_ENCODER, VAE_DECODER) or \
                not self.settings.ort_attention:
            return files
        from cyclediff.export import ort_optimize, sdpa_fusion

        try:
            # unet_attn: its attn2 probabilities are graph outputs, which the fusion keeps (it fuses no node whose
            # output leaves the graph), so only its self-attention (attn1) is fused; verify checks every output.
            if name in (UNET, UNET_ATTN):
                return ort_optimize.optimize_file(files[0], self.settings.external_data_bytes)
            # ORT's optimizer does not match the VAE's attention; our own pass does (export/sdpa_fusion.py).
            return sdpa_fusion.fuse_file(files[0], self.settings.external_data_bytes) or files
        except Exception as err:  # noqa: BLE001 -- the optimizer's pattern matchers raise anything
            self.progress.write(f"{name}: ONNX Runtime's attention fusion failed ({_first_line(err)}); keeping "
                                "the unfused graph, whose attention holds all (T, T) scores")
            return files

    def _memory_extra(self, records: dict[str, ModelRecord]) -> dict[str, Any]:
        """What runtime/core/memory_plan.py reads: the architecture sizes and whether the UNet's attention is fused."""
        from cyclediff.export import ort_optimize, sdpa_fusion
        from cyclediff.runtime.core.memory_plan import ArchProfile

        fused: dict[str, Any] = {UNET: ort_optimize.summary(self.out / records[UNET].files[0])}
        for vae in (VAE_ENCODER, VAE_DECODER):
            count = sdpa_fusion.fused_count(self.out / records[vae].files[0])
            fused[vae] = {"attention": "MultiHeadAttention", "fused": count} if count else None
        return {"ort_attention": fused,
                "memory_profile": ArchProfile.of(self.comps.unet.config, self.comps.vae.config).to_json()}

    def _verify(self, name: str, path: Path) -> Parity | None:
        check_graph(path)
        if self.settings.torch_only:
            return None
        batch = self.settings.trace_batch + 1
        return compare(path, self.graphs[name], self.specs[name], self.dims, batch, self.verify_hw, self.tolerance)

    def _manifest(self, records: dict[str, ModelRecord], tokenizer_files: dict[str, str],
                  previous: dict[str, Any] | None) -> Manifest:
        from cyclediff.runtime.core.schedule import SchedulerConfig

        entries = {n: ModelEntry(r.files[0], r.sha256, self.specs[n], r.files[1:]) for n, r in records.items()}
        manifest = Manifest(
            checkpoint={**self.ref.to_json(), "content_hash": self.ckpt_hash,
                        "loras": [s.to_json() for s in self.loras]},
            scheduler=SchedulerConfig.from_diffusers(self.comps.scheduler_config).to_json(),
            dims=self.dims,
            vae_scaling_factor=float(self.comps.vae.config.scaling_factor),
            sample_size=_sample_size(self.comps.unet) * self.dims.vae_scale,
            models=entries,
            tokenizer_files=tokenizer_files,
            tools=_tools(),
            opset=self.settings.opset,
        )
        return dataclasses.replace(manifest, extra=_carried_extra(previous, manifest))


def _check_out(out: Path) -> None:
    """Refuse a file, a non-empty folder holding nothing an export writes (we would delete into it), or a folder
    that cannot be written (or created)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        names = [p.name for p in out.iterdir()]
        if names and not any(_ours(n) for n in names):
            raise ValueError(f"--out {out} is a non-empty folder that is not a cyclediff export; "
                             "choose a new or empty folder")
    writable.check_writable(out, "--out")  # before the checkpoint loads: a read-only --out fails at once


def _ours(name: str) -> bool:
    return name in (MANIFEST, STATE, STAGING, TOKENIZER_DIR) or name.endswith((".onnx", ".onnx.data", ".tmp"))


def _prepare(out: Path) -> dict[str, Any] | None:
    """Invalidate the folder before changing it: drop manifest.json, staging leftovers and stale temp files.

    Returns the old manifest's JSON (to carry its `extra` over when nothing it describes changed).
    """
    out.mkdir(parents=True, exist_ok=True)
    try:
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    (out / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    for tmp in out.glob(".*.tmp"):  # atomic_write leftovers of a killed run
        tmp.unlink(missing_ok=True)
    return previous


def _state_for(out: Path, ckpt_hash: str) -> ExportState:
    """The reuse state; for another checkpoint, forget it first and then delete that checkpoint's files."""
    state = ExportState.load(out)
    if state.checkpoint_hash == ckpt_hash:
        return state
    fresh = ExportState(ckpt_hash)
    fresh.save(out)
    stale = {f for r in state.models.values() for f in r.files}
    stale |= {f"{n}.onnx{s}" for n in (*MODEL_NAMES, UNET_ATTN) for s in ("", ".data")}
    for name in stale:
        path = out / name
        if path.parent == out:  # only plain names inside DIR, whatever a tampered state says
            path.unlink(missing_ok=True)
    shutil.rmtree(out / TOKENIZER_DIR, ignore_errors=True)
    return fresh


def _install_model(out: Path, name: str, record: ModelRecord) -> None:
    """Rename the staged files into DIR (data file before the .onnx that points at it)."""
    staging = out / STAGING / name
    for rel in reversed(record.files):
        os.replace(staging / rel, out / rel)
    for stale in {f"{name}.onnx.data"} - set(record.files):
        (out / stale).unlink(missing_ok=True)


def _install_tokenizer(tokenizer: Any, out: Path) -> dict[str, str]:
    """save_pretrained into staging, then swap the folder in; returns file name -> sha256."""
    staged, old = out / STAGING / TOKENIZER_DIR, out / STAGING / f"{TOKENIZER_DIR}.old"
    tokenizer.save_pretrained(str(staged))
    hashes = {p.name: sha256_files([p]) for p in sorted(staged.iterdir()) if p.is_file()}
    if (out / TOKENIZER_DIR).exists():
        os.replace(out / TOKENIZER_DIR, old)
    os.replace(staged, out / TOKENIZER_DIR)
    return hashes


def _sizes(settings: ExportSettings, factor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Latent (h, w) to trace at, and a different, non-square one to verify at; both multiples of the UNet's
    downsampling factor (8 for SD v1: 3 downsamplers), with the trace's deepest feature map at least 2x2."""
    size = settings.trace_size or 2 * factor
    if size % factor:
        raise ValueError(f"--trace-size {size} must be a multiple of {factor} (the UNet halves the latent "
                         f"{factor.bit_length() - 1} times)")
    return (size, size), (size + factor, size + 2 * factor)


def _sample_size(unet: Any) -> int:
    size = unet.config.sample_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _code_identity() -> dict[str, str]:
    """Versions and source hashes that change exported bytes: a change re-exports instead of reusing."""
    from cyclediff.export import onnx_export

    h = hashlib.sha256()
    from cyclediff.export import ort_optimize, sdpa_fusion

    for module in (models, onnx_export, ort_optimize, sdpa_fusion, attention_maps):
        h.update(Path(module.__file__).read_bytes())
    tools = _tools()
    return {"cyclediff": tools["cyclediff"], "torch": tools["torch"], "onnx": tools["onnx"],
            "onnxruntime": tools["onnxruntime"], "code": h.hexdigest()}


def _config_identity(ref: checkpoint.CheckpointRef) -> str:
    """A single file's --config supplies the architecture, which content_hash (the file's bytes) does not cover."""
    if ref.kind != "file" or not ref.config:
        return ""
    folder = Path(ref.config).expanduser()
    if folder.is_dir():
        return checkpoint.content_hash(checkpoint.CheckpointRef(ref.config, "folder", folder.resolve()))
    return ref.config  # a hub id: its snapshot is fixed by the id for our purposes


def _tools() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    versions["python"] = platform.python_version()
    return versions


def _carried_extra(previous: dict[str, Any] | None, manifest: Manifest) -> dict[str, Any]:
    """Later stages' records (e.g. TensorRT plans) stay valid only if every exported file is unchanged."""
    if previous is None:
        return {}
    try:
        old = previous["schema_version"], previous["checkpoint"]["content_hash"], {
            k: v["sha256"] for k, v in previous["models"].items()}, previous["opset"]
    except (TypeError, KeyError, AttributeError):  # no previous manifest, or not one we can read
        return {}
    new = (manifest.schema_version, manifest.checkpoint["content_hash"],
           {k: v.sha256 for k, v in manifest.models.items()}, manifest.opset)
    return dict(previous.get("extra") or {}) if old == new else {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
