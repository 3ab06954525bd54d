"""The UNet's attention fusion with its large weights left on disk (export/ort_optimize.py, which keeps the SD
export's peak down) gives the graph the all-in-memory fusion gives, byte for byte."""
from __future__ import annotations

import onnx

from cyclediff.export import ort_optimize
from cyclediff.export.onnx_export import ExportSettings
from cyclediff.export.pipeline import run


def _graph(folder):
    model = onnx.load(str(folder / "unet.onnx"))  # with its external data
    return ([(n.op_type, tuple(n.input), tuple(n.output)) for n in model.graph.node],
            sorted((i.name, i.raw_data) for i in model.graph.initializer))


def test_lean_fusion_equals_the_in_memory_one(tmp_path, monkeypatch):
    settings = ExportSettings(external_data_bytes=0)  # every graph with external data, as an SD UNet's
    run("tiny", tmp_path / "full", quiet=True, settings=settings, force=True)

    left_on_disk, fallbacks = [], []
    lean, full_load = ort_optimize._lean, ort_optimize.onnx.load

    def spy_lean(path):
        model = lean(path)
        left_on_disk.append(sum(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer))
        return model

    def spy_load(path, *args, **kwargs):
        if kwargs.get("load_external_data", True) and str(path).endswith("unet.onnx") and left_on_disk:
            fallbacks.append(path)  # optimize_file's full-memory retry
        return full_load(path, *args, **kwargs)

    # tiny: attention projections are 8-16 KB (read by the fusion); convolutions and feed-forwards 36-147 KB
    monkeypatch.setattr(ort_optimize, "LEAN_MIN_BYTES", 20_000)
    monkeypatch.setattr(ort_optimize, "_lean", spy_lean)
    monkeypatch.setattr(ort_optimize.onnx, "load", spy_load)
    run("tiny", tmp_path / "lean", quiet=True, settings=settings, force=True)
    monkeypatch.undo()

    assert left_on_disk and left_on_disk[0] > 10, "the lean path left no weight on disk"
    assert not fallbacks, "a fusion needed a weight left on disk"
    assert _graph(tmp_path / "lean") == _graph(tmp_path / "full")
    assert ort_optimize.summary(tmp_path / "lean" / "unet.onnx")["fused_ops"]["MultiHeadAttention"] > 0
