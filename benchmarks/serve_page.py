"""The service's page and jobs, measured: the page's load time in Chromium, and what a job costs against
/v1/edit for the same request (interleaved, medians), on the tiny export. Also writes the README's screenshot.

    python benchmarks/serve_page.py --engine exports/tiny --screenshot docs/serve_page.png

The app runs in this process under uvicorn (the replica's FastAPI app, as cyclediff-serve builds it, without
Ray: Ray's proxy adds the same hop to both paths). Chromium: Debian's package, driven by Playwright.
"""
from __future__ import annotations

import argparse
import io
import shutil
import statistics
import threading
import time

import httpx
import PIL.Image


def serve(engine_dir: str, port: int):
    import uvicorn

    import cyclediff
    from cyclediff.serve.app import build_app
    from cyclediff.serve.config import Limits
    from cyclediff.serve.worker import EngineWorker

    engine = cyclediff.Engine.load(engine_dir, progress=False, threads=1)
    server = uvicorn.Server(uvicorn.Config(build_app(EngineWorker(engine, 2, 4), Limits()), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def page_run(url: str, screenshot: str | None) -> float:
    """Seconds from navigation to a usable form (the sliders built from /v1/info); then one edit, photographed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        start = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_selector("#num_inference_steps")
        ready = time.perf_counter() - start
        page.click("img.example")
        page.fill("#prompts", "a painting of a castle on a hill\na photo of a barn on a hill")
        page.click("#submit")
        page.wait_for_function("document.querySelectorAll('.result img.after').length === 2 && "
                               "[...document.querySelectorAll('.result img.after')].every(i => i.naturalWidth > 0)",
                               timeout=120_000)
        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return ready


def overhead(url: str, image: bytes, rounds: int, steps: int) -> tuple[float, float]:
    """Median seconds of /v1/edit and of the same request as a job (submit, poll every 20 ms, fetch the image)."""
    fields = {"source_prompt": "a house", "prompt": "a castle", "seed": "0", "num_inference_steps": str(steps)}
    files = {"image": ("in.png", image)}
    edit, job = [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(rounds):
            start = time.perf_counter()
            http.post("/v1/edit", data=fields, files=files).raise_for_status()
            edit.append(time.perf_counter() - start)
            start = time.perf_counter()
            job_id = http.post("/v1/jobs", data=fields, files=files).json()["id"]
            while (view := http.get(f"/v1/jobs/{job_id}").json())["state"] not in ("done", "failed"):
                time.sleep(0.02)
            http.get(view["images"][0]).raise_for_status()
            job.append(time.perf_counter() - start)
    return statistics.median(edit), statistics.median(job)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True)
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--screenshot")
    args = p.parse_args()
    server = serve(args.engine, args.port)
    url = f"http://127.0.0.1:{args.port}"
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (120, 90, 200)).save(buf, "PNG")
    ready = page_run(url, args.screenshot)
    edit, job = overhead(url, buf.getvalue(), args.rounds, args.steps)
    print("| measure | value |\n|---|---|")
    print(f"| page ready (navigation to a usable form) | {ready * 1000:.0f} ms |")
    print(f"| /v1/edit, {args.steps} steps (median of {args.rounds}) | {edit * 1000:.1f} ms |")
    print(f"| same request as a job: submit, poll, image | {job * 1000:.1f} ms |")
    print(f"| job overhead | {(job - edit) * 1000:+.1f} ms ({job / edit:.2f}x) |")
    server.should_exit = True


if __name__ == "__main__":
    main()
