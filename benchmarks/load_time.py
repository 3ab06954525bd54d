"""Load time and time to the first picture, each in a fresh process: cyclediff's Engine.load per backend against
diffusers' CycleDiffusionPipeline.from_pretrained of the same checkpoint.

    python benchmarks/load_time.py                                       # tiny (seconds)
    flock /tmp/cyclediff-heavy.lock python benchmarks/load_time.py --arch sd-v1-4   # SD v1.4 architecture (minutes)

Every case runs in its own subprocess (a cold-ish process: page cache warm, nothing imported), which imports
its library, loads, then makes one edit. Per case: import time, load time, peak RSS after the load, the edit, and
the time to the first picture (from the parent's spawn to the edit's result: interpreter start, imports, load
and edit). Medians over --repeat processes.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency  # the SD v1.4 builder, the export cache and the sample image live there

# label -> (implementation, backend, verify, edit?)
CASES = {
    "diffusers from_pretrained": ("diffusers", "", "", True),
    "cyclediff onnxruntime": ("cyclediff", "onnxruntime", "fast", True),
    "cyclediff torch": ("cyclediff", "torch", "fast", True),
    "cyclediff onnxruntime, verify=full": ("cyclediff", "onnxruntime", "full", False),
}
# What each side imports before its load: diffusers' pipeline import pulls in its model classes, so the torch
# backend's row imports the same ones (diffusers' package imports are lazy: the classes are the cost).
BACKEND_LIBRARIES = {
    "onnxruntime": ("torch", "onnxruntime"),
    "torch": ("torch", "transformers.models.clip.modeling_clip", "diffusers.models.unets.unet_2d_condition",
              "diffusers.models.autoencoders.autoencoder_kl"),
}
SIZES = {"tiny": 32, "sd-v1-4": 128}  # pixels: small enough that the load is a visible part of the first picture


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny", help="comma-separated: tiny, sd-v1-4 (default: tiny)")
    p.add_argument("--size", type=int, help="image side in pixels (default: 32 for tiny, 128 for sd-v1-4)")
    p.add_argument("--steps", type=int, default=4, help="num_inference_steps of the edit (default 4)")
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--repeat", type=int, default=1, help="fresh processes per case; the median is shown")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one case and print its JSON
    return p.parse_args(argv)


def export_for(arch: str) -> Path:
    """The cached export of edit_latency.py (re-runs reuse unchanged models; the ORT cache is made there too)."""
    args = argparse.Namespace(engine=None, arch="sd-v1-4" if arch == "sd-v1-4" else None, ckpt=arch)
    return edit_latency.engine_dir(args)


def run_case(label: str, folder: Path, args: argparse.Namespace, size: int) -> dict:
    spec = json.dumps({"label": label, "folder": str(folder), "size": size, "steps": args.steps,
                       "strength": args.strength, "spawn": time.time()})
    proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]}
    return json.loads(lines[-1])


def child(spec: dict) -> dict:
    """One case in this fresh process: import, load, (edit); timings in seconds, peak RSS in MiB."""
    impl, backend, verify, edit = CASES[spec["label"]]
    t0 = time.perf_counter()
    if impl == "diffusers":
        from diffusers import CycleDiffusionPipeline  # noqa: F401  (imports torch, transformers, diffusers)
    else:
        from cyclediff import Engine  # noqa: F401

        # The libraries the backend runs on, imported here as diffusers' import does for its own: "load" then
        # times the same work on both sides (reading weights, building modules or sessions).
        for name in BACKEND_LIBRARIES[backend]:
            importlib.import_module(name)
    t1 = time.perf_counter()
    run = _load_diffusers(spec) if impl == "diffusers" else _load_cyclediff(spec, backend, verify)
    t2 = time.perf_counter()
    # Both sides import their libraries before t1; "import + load" is the sum a fresh process pays.
    out = {"import": t1 - t0, "load": t2 - t1, "import_load": t2 - t0, "rss_load": _peak_mib()}
    if edit:
        run(edit_latency.sample_image(spec["size"]))
        out.update(edit=time.perf_counter() - t2, first_picture=time.time() - spec["spawn"], rss_edit=_peak_mib())
    return out


def _load_diffusers(spec: dict):
    pipe = edit_latency.load_diffusers(edit_latency.checkpoint_path(Path(spec["folder"])), _setup(spec))

    def edit(image):
        return pipe(prompt=edit_latency.TARGETS[0], source_prompt=edit_latency.SOURCE, image=image,
                    strength=spec["strength"], num_inference_steps=spec["steps"], guidance_scale=7.5, eta=0.1,
                    generator=edit_latency.generator()).images[0]

    return edit


def _load_cyclediff(spec: dict, backend: str, verify: str):
    from cyclediff import Engine

    engine = Engine.load(spec["folder"], backend=backend, verify=verify, progress=False)

    def edit(image):
        return engine.edit(edit_latency.TARGETS[0], edit_latency.SOURCE, image, strength=spec["strength"],
                           num_inference_steps=spec["steps"], guidance_scale=7.5, eta=0.1,
                           generator=edit_latency.generator()).images[0]

    return edit


def _setup(spec: dict) -> edit_latency.Setup:
    return edit_latency.Setup("cpu", "fp32", spec["steps"], spec["strength"], 7.5, 0.1, 1, 0, 1)


def _peak_mib() -> float:
    """VmHWM: this process's peak RSS. (ru_maxrss would carry the parent's peak across fork + exec.)"""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def median(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def table(arch: str, size: int, args: argparse.Namespace, rows: dict[str, list[dict]]) -> list[str]:
    ref = rows["diffusers from_pretrained"]
    ref_load, ref_first, ref_both = median(ref, "load"), median(ref, "first_picture"), median(ref, "import_load")
    title = (f"\n{arch}: {size}x{size} px, {args.steps} steps, strength {args.strength}, {args.repeat} "
             "process(es) per row (medians)")
    head = ("| case | import s | load s | load / diffusers | import + load / diffusers | peak RSS after load MiB "
            "| edit s | first picture s | first picture / diffusers | peak RSS MiB |")
    out = [title, head, "|---|---|---|---|---|---|---|---|---|---|"]
    for label, results in rows.items():
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            out.append(f"| {label} | failed: {errors[0]} ||||||||")
            continue
        load, first = median(results, "load"), median(results, "first_picture")
        out.append("| " + " | ".join([
            label, _f(median(results, "import")), _f(load), _ratio(load, ref_load),
            _ratio(median(results, "import_load"), ref_both), _f(median(results, "rss_load"), 0),
            _f(median(results, "edit")), _f(first), _ratio(first, ref_first), _f(median(results, "rss_edit"), 0),
        ]) + " |")
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(x: float | None, ref: float | None) -> str:
    return "-" if x is None or not ref else f"{x / ref:.2f}x"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    lines = []
    for arch in args.arch.split(","):
        folder, size = export_for(arch), args.size or SIZES[arch]
        rows: dict[str, list[dict]] = {label: [] for label in CASES}
        for _ in range(args.repeat):  # round-robin: every case sees the same machine load
            for label in CASES:
                rows[label].append(run_case(label, folder, args, size))
                print(f"{arch} {label}: {rows[label][-1]}", file=sys.stderr)
        lines += table(arch, size, args, rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
