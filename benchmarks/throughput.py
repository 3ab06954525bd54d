"""Throughput under concurrency: N client threads share one Engine (cross-request batching) vs sequential calls.

    python benchmarks/throughput.py                                 # CPU, built-in tiny, clients 1,2,4,8,16
    python benchmarks/throughput.py --arch sd-v1-4 --size 128 --steps 4 --clients 1,2,4 --requests 8

Every request is one full edit (its own seed and target prompt; same resolution and schedule, so they can
merge). Rows: diffusers' CycleDiffusionPipeline called sequentially, cyclediff called sequentially, and
cyclediff with N closed-loop clients (each sends its next request when the last returns). Requests/s is
requests / wall time; latency percentiles are per request. Ratios are against sequential cyclediff in the
same run. Peak memory: the process's max RSS so far (CPU) or torch's allocator peak (CUDA).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as importing cyclediff sets it; torch reads it at import
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency as common

PROMPTS = ("a photo of a castle on a hill", "a painting of a house on a hill", "a photo of a barn on a hill",
           "a photo of a house on a hill in winter")


@dataclasses.dataclass(frozen=True)
class Result:
    impl: str
    clients: int
    requests: int
    wall_s: float
    latencies_ms: tuple[float, ...]
    merged: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1] if len(
            self.latencies_ms) > 1 else self.latencies_ms[0]


def timed_requests(edit, n: int, clients: int) -> tuple[float, list[float]]:
    """Run edit(k) for k < n from `clients` threads; returns (wall seconds, per-request latencies in ms)."""
    def one(k: int) -> float:
        t0 = time.perf_counter()
        edit(k)
        return (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    if clients == 1:
        lat = [one(k) for k in range(n)]
    else:
        with ThreadPoolExecutor(clients) as pool:
            lat = list(pool.map(one, range(n)))
    return time.perf_counter() - t0, lat


def engine_edit(engine, image, args):
    def edit(k: int):
        return engine.edit(PROMPTS[k % len(PROMPTS)], common.SOURCE, image, strength=args.strength,
                           num_inference_steps=args.steps, guidance_scale=args.guidance_scale, eta=args.eta,
                           generator=torch.Generator().manual_seed(k), output_type="np")
    return edit


def diffusers_edit(pipe, image, args):
    def edit(k: int):
        return pipe(prompt=PROMPTS[k % len(PROMPTS)], source_prompt=common.SOURCE, image=image,
                    strength=args.strength, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                    eta=args.eta, generator=torch.Generator().manual_seed(k), output_type="np")
    return edit


def measure(label: str, edit, args, clients: int, stats=None) -> Result:
    edit(0)  # warm-up (first-call costs, prompt cache)
    before = dict(stats) if stats is not None else None
    wall, lat = timed_requests(edit, args.requests, clients)
    merged = ""
    if stats is not None:
        calls, jobs = stats["unet_calls"] - before["unet_calls"], stats["unet_jobs"] - before["unet_jobs"]
        merged = f"{jobs / max(calls, 1):.1f} jobs/UNet call"
    return Result(label, clients, args.requests, wall, tuple(lat), merged)


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (torch)"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB RSS"


def print_table(results: list[Result], baseline: dict[str, Result], device: str) -> None:
    ref = next((r for r in results if r.impl.startswith("diffusers")), None)
    print("\n| impl | clients | req/s | vs its sequential | vs diffusers | p50 ms | p95 ms | UNet batching |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        base = baseline.get(r.impl)
        own = f"{r.rps / base.rps:.2f}x" if base else ""
        vs = f"{r.rps / ref.rps:.2f}x" if ref else ""
        print(f"| {r.impl} | {r.clients} | {r.rps:.2f} | {own} | {vs} | {r.pct(50):.0f} | {r.pct(95):.0f} "
              f"| {r.merged} |")
    print(f"\npeak memory of this process: {peak_memory(device)}")


def run_backend(backend: str, folder: Path, image, args, results: list[Result], baseline: dict) -> None:
    from cyclediff import Engine

    engine = Engine.load(folder, backend=backend, device=args.device, progress=False, batch_wait_ms=args.wait_ms,
                         max_concurrency=max(args.clients), dtype=args.dtype)
    edit, label = engine_edit(engine, image, args), f"cyclediff-{backend}"
    for clients in args.clients:
        r = measure(label, edit, args, clients, engine.dispatcher.stats)
        results.append(r)
        if clients == 1:
            baseline[label] = r
        print(f"{label} clients={clients}: {r.rps:.2f} req/s", file=sys.stderr)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "sd-v1-4"], default="tiny")
    p.add_argument("--engine", help="an existing export directory (default: export --arch into the cache)")
    p.add_argument("--backends", default="onnxruntime,torch")
    p.add_argument("--clients", default="1,2,4,8,16", help="comma-separated client counts (1 = sequential)")
    p.add_argument("--requests", type=int, default=32, help="requests per row")
    p.add_argument("--size", type=int, help="image side in pixels (default: the checkpoint's native size)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--wait-ms", type=float, default=5.0, help="Engine batch_wait_ms")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: diffusers in fp16 and Engine.load(dtype='fp16') (onnxruntime needs an --fp16 export)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers row")
    args = p.parse_args(argv)
    args.clients = sorted({int(c) for c in args.clients.split(",")} | {1})
    args.ckpt = "tiny"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = common.engine_dir(_for_export(args))
    from cyclediff.export.manifest import Manifest

    size = args.size or Manifest.load(folder, verify_files=False).sample_size
    image = common.sample_image(size)
    results: list[Result] = []
    baseline: dict[str, Result] = {}
    if not args.no_diffusers:
        setup = argparse.Namespace(device=args.device, dtype=args.dtype)
        pipe = common.load_diffusers(common.checkpoint_path(folder), setup)
        results.append(measure("diffusers (sequential)", diffusers_edit(pipe, image, args), args, 1))
        del pipe
    for backend in args.backends.split(","):
        run_backend(backend, folder, image, args, results, baseline)
    print(f"\n{args.arch}, {size}x{size}, {args.steps} steps x strength {args.strength}, guidance "
          f"{args.guidance_scale}, eta {args.eta}, {args.requests} requests per row, device {args.device}")
    print_table(results, baseline, args.device)
    return 0


def _for_export(args: argparse.Namespace) -> argparse.Namespace:
    """edit_latency.engine_dir's view: --arch sd-v1-4 builds it; otherwise the built-in tiny."""
    return argparse.Namespace(engine=args.engine, arch="sd-v1-4" if args.arch == "sd-v1-4" else None,
                              ckpt=args.ckpt)


if __name__ == "__main__":
    sys.exit(main())
