"""Latent-space guidance: time per Langevin step and peak memory, cyclediff against a plain PyTorch autograd loop.

    python benchmarks/guidance.py                                    # CPU, built-in tiny (~1 minute)
    flock /tmp/cyclediff-heavy.lock python benchmarks/guidance.py --engine $CYCLEDIFF_CACHE/bench/export-sd-v1-4 \\
        --size 256 --guide-steps 2 --steps 3                         # SD v1.4 architecture (random weights)

Same settings in every row: batch 1, classifier-free guidance 7.5, eta 0 (z = x_T), --guide-steps DDIM steps
inside the loop, energy = 5 · classifier energy of a small conv net + ½‖z‖², Langevin step 0.05. Rows:
  diffusers    the natural alternative: diffusers' UNet2DConditionModel + DDIMScheduler.step + AutoencoderKL,
               autograd through the whole loop (every activation of every step kept for backward)
  cyclediff    Engine.guide on the torch backend: each sampler step checkpointed (recomputed in backward)
  cyclediff-nockpt  the same with checkpoint=False
Each row runs in its own process: after loading, --warmup steps, then --steps timed Langevin steps (median);
with --rounds N the rows run N times round-robin and each row's fastest round is reported.
Peak = the highest resident memory (CPU, sampled every ms) or torch's peak allocation (CUDA) during the timed
steps, above what the process held just before them. The base is taken after the warm-up (the weights are
memory-mapped safetensors, paged in by the first step) and after glibc's malloc_trim(0) has handed the memory
freed since back to the system (otherwise the allocator's cache would hide the steps' peak).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency

from cyclediff.export.heap import release_freed_memory

PROMPT = "a photo of a face"
ROWS = ("diffusers", "cyclediff", "cyclediff-nockpt")
STEP_SIZE, WEIGHT, SCALE = 0.05, 5.0, 7.5


class PeakMemory:
    """Peak bytes above the level at start: RSS sampled by a thread on the CPU, torch's allocator on CUDA."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            release_freed_memory()
            self.base = _rss()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.SiLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 2))
    return net.eval().requires_grad_(False)


def energy_of(net, pixels: torch.Tensor) -> torch.Tensor:
    """The same energy as cyclediff's ClassifierEnergy(net, 0): −log σ(logit 0), per sample."""
    return -torch.nn.functional.logsigmoid(net(pixels)[:, 0])


def run_cyclediff(args, checkpoint: bool) -> dict:
    import cyclediff
    from cyclediff.runtime.methods.guidance.energies import ClassifierEnergy

    engine = cyclediff.Engine.load(args.engine, backend="torch", device=args.device, progress=False)
    energy = ClassifierEnergy(classifier().to(args.device), 0, WEIGHT)
    g = torch.Generator().manual_seed(0)
    start = engine.guidance.start_code((PROMPT,), args.size, args.size, args.guide_steps, 0.0, g)
    kw = {"start": start, "guide_steps": args.guide_steps, "step_size": STEP_SIZE, "guidance_scale": SCALE,
          "checkpoint": checkpoint, "output_type": "latent", "generator": g}
    engine.guide(PROMPT, [energy], n_steps=args.warmup, **kw)
    stamps: list[float] = []
    with PeakMemory(args.device) as peak:
        engine.guide(PROMPT, [energy], n_steps=args.steps + 1, callback=lambda *a: stamps.append(_now(args)), **kw)
    return {"ms": 1000 * statistics.median(b - a for a, b in itertools.pairwise(stamps)), "peak": peak.peak}


def run_diffusers(args) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path, dev = edit_latency.checkpoint_path(Path(args.engine)), args.device
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet").to(dev).eval()
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae").to(dev).eval()
    text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").to(dev).eval()
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    sched = DDIMScheduler.from_pretrained(path, subfolder="scheduler")
    sched.set_timesteps(args.guide_steps)
    with torch.no_grad():
        emb = torch.cat([text(tok(p, padding="max_length", max_length=tok.model_max_length,
                                  return_tensors="pt").input_ids.to(dev))[0] for p in ("", PROMPT)])
    net, g = classifier().to(dev), torch.Generator().manual_seed(0)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn((1, unet.config.in_channels, args.size // f, args.size // f), generator=g).to(dev)

    def step(z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_()
        x = z
        for t in sched.timesteps:
            u, c = unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
            x = sched.step(u + SCALE * (c - u), t, x, eta=0.0).prev_sample
        pixels = vae.decode(x / vae.config.scaling_factor).sample
        e = WEIGHT * energy_of(net, pixels) + 0.5 * (z**2).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(e.sum(), z)
        noise = torch.randn(z.shape, generator=g).to(dev)
        return (z - STEP_SIZE / 2 * grad + STEP_SIZE**0.5 * noise).detach()

    for _ in range(args.warmup):
        z = step(z)
    stamps = [_now(args)]
    with PeakMemory(dev) as peak:
        for _ in range(args.steps):
            z = step(z)
            stamps.append(_now(args))
    return {"ms": 1000 * statistics.median(b - a for a, b in itertools.pairwise(stamps)), "peak": peak.peak}


def _now(args) -> float:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def worker(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_diffusers(args) if args.worker == "diffusers" else run_cyclediff(args, args.worker == "cyclediff")
    print(json.dumps(result))


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    args.engine = str(edit_latency.engine_dir(args))
    if args.size is None:
        from cyclediff.export.manifest import Manifest

        args.size = Manifest.load(Path(args.engine), verify_files=False).sample_size
    runs: dict[str, list[dict]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):  # round-robin: a burst of load from other jobs hits one round, not one row
        for row in ROWS:
            runs[row].append(run_row(row, args))
    # The fastest round is the one least disturbed by other work; memory does not depend on load.
    print_table(args, {row: min(results, key=lambda r: r["ms"]) for row, results in runs.items()})


def run_row(row: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", row, *_passed(args)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{row} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {row}: {result['ms']:.0f} ms/step, peak {result['peak'] / 2**20:.0f} MiB", file=sys.stderr)
    return result


def _passed(args) -> list[str]:
    flags = ["--engine", args.engine, "--device", args.device, "--size", str(args.size), "--steps", str(args.steps),
             "--guide-steps", str(args.guide_steps), "--warmup", str(args.warmup)]
    return flags + (["--threads", str(args.threads)] if args.threads else [])


def print_table(args, rows: dict) -> None:
    base = rows["diffusers"]
    print(f"\n{Path(args.engine).name}, {args.size}px, {args.guide_steps} DDIM steps inside, {args.device}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, fastest of {args.rounds} round(s)")
    print(f"| {'implementation':<17} | ms / Langevin step | ×diffusers | peak above weights | ×diffusers |")
    print(f"|{'-' * 19}|{'-' * 20}|{'-' * 12}|{'-' * 20}|{'-' * 12}|")
    for name, r in rows.items():
        print(f"| {name:<17} | {r['ms']:>18.0f} | {r['ms'] / base['ms']:>10.2f} | {r['peak'] / 2**20:>14.0f} MiB"
              f" | {r['peak'] / max(base['peak'], 1):>10.2f} |")


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    edit_latency.add_checkpoint_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, help="image side in pixels (default: the checkpoint's native size)")
    p.add_argument("--guide-steps", type=int, default=4, help="DDIM steps inside the loop (default 4)")
    p.add_argument("--steps", type=int, default=5, help="timed Langevin steps (default 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every row")
    p.add_argument("--rounds", type=int, default=1, help="run every row this many times, round-robin; report "
                                                          "each row's fastest round (default 1)")
    p.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
