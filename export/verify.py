"""Check an exported ONNX file: the ONNX checker, then ONNX Runtime against the torch wrapper at an untraced size."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import torch

from cyclediff.export.models import sample_inputs
from cyclediff.export.onnx_export import ExportError
from cyclediff.export.specs import Dims, ModelSpec, output_shapes


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """fp32 parity: pass when max|onnx - torch| <= atol + rtol * max|torch| for every output."""

    rtol: float = 1e-3
    atol: float = 1e-4


@dataclasses.dataclass(frozen=True)
class OutputError:
    name: str
    shape: tuple[int, ...]
    max_abs: float  # max |onnx - torch|
    max_rel: float  # max_abs / max |torch|: the error relative to the output's scale
    scale: float  # max |torch|

    def within(self, tol: Tolerance) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= tol.atol + tol.rtol * self.scale


@dataclasses.dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs torch on one random input set (batch and latent size other than the trace's)."""

    model: str
    batch: int
    latent_hw: tuple[int, int]
    outputs: tuple[OutputError, ...]

    def __str__(self) -> str:
        errs = ", ".join(f"{o.name}{list(o.shape)} max_abs={o.max_abs:.2e} max_rel={o.max_rel:.2e}"
                         for o in self.outputs)
        return f"verify {self.model} (batch {self.batch}, latent {self.latent_hw[0]}x{self.latent_hw[1]}): {errs}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def check_graph(path: Path) -> None:
    """onnx.checker by path, so that models with external data (> 2 GB) are checked too."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"{path.name} fails the ONNX checker: {err}") from err


def compare(
    path: Path, module: torch.nn.Module, spec: ModelSpec, dims: Dims, batch: int, latent_hw: tuple[int, int],
    tol: Tolerance = Tolerance(),
) -> Parity:
    """Run both on the same random inputs; raise ExportError when a shape differs or an error exceeds `tol`."""
    import onnxruntime as ort

    feeds = sample_inputs(spec, dims, batch, latent_hw, seed=1)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in feeds.items()})
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        raise ExportError(f"ONNX Runtime cannot run {path.name} at batch {batch}, latent {latent_hw}: {err}") from err
    with torch.no_grad():
        ref = module(*(feeds[t.name] for t in spec.inputs))
    refs = ref if isinstance(ref, tuple) else (ref,)
    expected = output_shapes(spec, {k: tuple(v.shape) for k, v in feeds.items()}, dims)
    parity = Parity(spec.name, batch, latent_hw, tuple(
        _error(t.name, g, r.numpy(), expected[t.name]) for t, g, r in zip(spec.outputs, got, refs)
    ))
    bad = [o for o in parity.outputs if not o.within(tol)]
    if bad:
        raise ExportError(f"{parity}\n  beyond tolerance (atol {tol.atol}, rtol {tol.rtol} of max|torch|): "
                          f"{', '.join(o.name for o in bad)}")
    return parity


def _error(name: str, got: np.ndarray, ref: np.ndarray, expected: tuple[int, ...]) -> OutputError:
    if got.shape != ref.shape or ref.shape != expected:
        raise ExportError(f"output {name}: ONNX shape {got.shape}, torch {ref.shape}, declared {expected}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    scale = float(np.abs(ref).max())
    return OutputError(name, tuple(ref.shape), max_abs, max_abs / scale if scale > 0 else max_abs, scale)
