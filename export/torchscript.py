"""TorchScript programs of the four graphs, for the C++ host library's libtorch executor (DIR/torchscript/*.pt).

Manifest entry (written by the export pipeline, read by native/src/manifest.cpp):

    manifest.extra["torchscript"] = {
        "<model name>": {"file": "torchscript/<model name>.pt", "sha256": "<hex sha256 of that file>"},
        ...  # one per name in models.MODEL_NAMES
    }

`file` is relative to the export directory. The programs take and return exactly the tensors that
models.specs() declares for the ONNX graphs (same names, order, dtypes and symbolic shapes).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cyclediff.export.atomic_files import atomic_write_bytes
from cyclediff.export.models import graphs, sample_inputs
from cyclediff.export.specs import MODEL_NAMES, Dims, specs

EXTRA_KEY = "torchscript"
FOLDER = "torchscript"


class TorchScriptError(RuntimeError):
    """A graph that does not trace, or whose traced program disagrees with the module at another shape."""


def export_torchscript(components_or_graphs: Any, out_dir: str | Path, dims: Dims,
                       trace_batch: int = 2, trace_size: int | None = None) -> dict[str, tuple[str, str]]:
    """Trace each wrapper and save out_dir/torchscript/<name>.pt atomically.

    components_or_graphs: checkpoint.Components, or the dict that models.graphs() returns.
    Returns {name: (file relative to out_dir, sha256)}; `manifest_entry()` turns it into the extra entry.
    """
    modules = components_or_graphs if isinstance(components_or_graphs, Mapping) else graphs(components_or_graphs)
    side = trace_size or 2 * dims.unet_downscale
    out: dict[str, tuple[str, str]] = {}
    for name in MODEL_NAMES:
        data = _trace_bytes(name, modules[name], dims, trace_batch, (side, side))
        rel = f"{FOLDER}/{name}.pt"
        atomic_write_bytes(Path(out_dir) / rel, data)
        out[name] = (rel, hashlib.sha256(data).hexdigest())
    return out


def manifest_entry(files: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """{name: (file, sha256)} -> the manifest.extra["torchscript"] value."""
    return {name: {"file": file, "sha256": sha} for name, (file, sha) in files.items()}


def _trace_bytes(name: str, module: torch.nn.Module, dims: Dims, batch: int, latent_hw: tuple[int, int]) -> bytes:
    spec = specs(dims)[name]
    feeds = sample_inputs(spec, dims, batch, latent_hw)
    args = tuple(feeds[t.name] for t in spec.inputs)
    # A second, untraced shape: a traced program that baked a size in fails this check.
    other = sample_inputs(spec, dims, batch + 1, (latent_hw[0] + dims.unet_downscale, latent_hw[1]), seed=1)
    check = [tuple(other[t.name] for t in spec.inputs)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints: the check below is the judge
        try:
            program = torch.jit.trace(module.eval(), args, check_inputs=check, check_trace=True, strict=False,
                                      check_tolerance=1e-4)
        except Exception as err:  # torch raises TracingCheckError and assorted RuntimeErrors
            raise TorchScriptError(f"{name}: torch.jit.trace failed or disagrees with eager: {err}") from err
    buf = io.BytesIO()
    torch.jit.save(program, buf)
    return buf.getvalue()
