"""Open-loop load on cyclediff-serve next to the in-process Engine at the same load, in one run.

    flock /tmp/cyclediff-heavy.lock python benchmarks/serve_load.py          # tiny, CPU; starts cyclediff-serve
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --engine exports/tiny   # a running service

Open loop: requests arrive at a fixed rate (Poisson arrivals, fixed seed) whatever the answers, each in its own
thread, for --duration seconds per rate; req/s counts successful answers over the time from the first send to
the last answer. The same schedule then drives the in-process Engine (threads calling Engine.edit). The
saturation rows are closed loop: --callers threads each send their next request when the last returns, the
"same number of concurrent callers" comparison. Every request is one edit with its own seed and prompt. The
service answers PNG over HTTP (encode + decode included in its latency); the in-process rows return PIL images.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as importing cyclediff sets it; torch reads it at import
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency as common

PROMPTS = ("a photo of a castle on a hill", "a painting of a house on a hill", "a photo of a barn on a hill")


@dataclasses.dataclass(frozen=True)
class Result:
    impl: str
    load: str  # "8.0 req/s offered" or "8 callers"
    wall_s: float
    latencies_ms: tuple[float, ...]  # successful requests only
    errors: dict[int | str, int]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def pct(self, q: int) -> float:
        lat = self.latencies_ms
        return statistics.quantiles(lat, n=100, method="inclusive")[q - 1] if len(lat) > 1 else (lat or [0])[0]


class Load:
    """Runs send(k) -> None | error key, timing each; thread-safe collection."""

    def __init__(self, send):
        self.send, self.lock = send, threading.Lock()
        self.latencies: list[float] = []
        self.errors: dict[int | str, int] = {}

    def one(self, k: int) -> None:
        t0 = time.perf_counter()
        try:
            error = self.send(k)
        except Exception as err:  # noqa: BLE001 - a benchmark counts failures, whatever they are
            error = type(err).__name__
        ms = (time.perf_counter() - t0) * 1000
        with self.lock:
            if error is None:
                self.latencies.append(ms)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1

    def result(self, impl: str, load: str, wall: float) -> Result:
        return Result(impl, load, wall, tuple(self.latencies), dict(self.errors))


def open_loop(impl: str, send, rate: float, duration: float, seed: int = 0) -> Result:
    gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * duration * 2) + 8)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < duration]
    load = Load(send)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(256) as pool:  # bounded: far more than any rate here keeps in flight
        for k, at in enumerate(arrivals):
            time.sleep(max(0.0, at - (time.perf_counter() - t0)))
            pool.submit(load.one, k)
    return load.result(impl, f"{rate:g} req/s offered", time.perf_counter() - t0)


def closed_loop(impl: str, send, callers: int, requests: int) -> Result:
    load = Load(send)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(load.one, range(requests)))
    return load.result(impl, f"{callers} callers (closed loop)", time.perf_counter() - t0)


def engine_sender(engine, image, steps: int):
    def send(k: int):
        engine.edit(PROMPTS[k % len(PROMPTS)], "a house on a hill", image, num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(k))
    return send


def service_sender(url: str, png: bytes, steps: int):
    import httpx

    local = threading.local()

    def send(k: int):
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=300)
        r = local.http.post("/v1/edit", files={"image": ("i.png", png)},
                            data={"source_prompt": "a house on a hill", "prompt": PROMPTS[k % len(PROMPTS)],
                                  "seed": str(k), "num_inference_steps": str(steps)})
        return None if r.status_code == 200 else r.status_code
    return send


def run_all(impl: str, send, args) -> list[Result]:
    send(0)  # warm-up: first-call costs (sessions, buffers) are not the load's
    rows = [open_loop(impl, send, float(rate), args.duration) for rate in args.rates.split(",")]
    return rows + [closed_loop(impl, send, args.callers, args.callers * args.rounds)]


def start_service(folder: Path, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(sys.executable).with_name("cyclediff-serve")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cyclediff.serve.cli"]
    cmd += ["--engine", str(folder), "--port", str(port), "--threads", str(args.threads), "--num-cpus-per-replica",
            str(args.threads), "--max-concurrency", str(args.max_concurrency), "--max-queued-requests", "256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, 240)
    return proc, url


def wait_ready(proc: subprocess.Popen, url: str, deadline_s: float) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"cyclediff-serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_service(proc)
    raise RuntimeError(f"cyclediff-serve not ready after {deadline_s} s")


def stop_service(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def print_table(rows: list[Result], base: dict[str, Result]) -> None:
    print("| impl | load | req/s | vs in-process | p50 ms | p95 ms | p99 ms | ok | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = base.get(r.load)
        ratio = f"{r.rps / ref.rps:.2f}x" if ref and ref is not r and ref.rps else ""
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items(), key=str)) or "0"
        print(f"| {r.impl} | {r.load} | {r.rps:.2f} | {ratio} | {r.pct(50):.0f} | {r.pct(95):.0f} | "
              f"{r.pct(99):.0f} | {len(r.latencies_ms)} | {errors} |")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_checkpoint_args(p)
    p.add_argument("--url", help="a running cyclediff-serve of the same --engine (default: start one here)")
    p.add_argument("--rates", default="4,8,12,16", help="offered request rates, req/s (default 4,8,12,16)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals per rate (default 10)")
    p.add_argument("--callers", type=int, default=8, help="closed-loop callers of the saturation rows (default 8)")
    p.add_argument("--rounds", type=int, default=8, help="closed loop: requests per caller (default 8)")
    p.add_argument("--steps", type=int, default=10, help="num_inference_steps of every edit (default 10)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads, both sides")
    p.add_argument("--max-concurrency", type=int, default=8, help="Engine max_concurrency, both sides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = common.engine_dir(argparse.Namespace(engine=args.engine, arch=args.arch, ckpt=args.ckpt))
    import cyclediff
    from cyclediff.export.manifest import Manifest

    image = common.sample_image(Manifest.load(folder, verify_files=False).sample_size)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    engine = cyclediff.Engine.load(folder, threads=args.threads, max_concurrency=args.max_concurrency,
                                   progress=False)
    rows = run_all("in-process Engine", engine_sender(engine, image, args.steps), args)
    del engine  # the service gets the cores to itself
    proc, url = (None, args.url) if args.url else start_service(folder, args)
    try:
        rows += run_all("cyclediff-serve (HTTP, 1 replica)", service_sender(url, buf.getvalue(), args.steps), args)
    finally:
        if proc is not None:
            stop_service(proc)
    print(f"\n{folder.name}, {image.width}x{image.height}, {args.steps} steps x strength 0.8, guidance 7.5, "
          f"eta 0.1; {args.threads} threads, max_concurrency {args.max_concurrency}; {args.duration:g} s per rate")
    print_table(rows, {r.load: r for r in rows if r.impl.startswith("in-process")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
