"""cyclediff-serve's jobs (POST /v1/jobs, GET, events, DELETE) and its page at `/`, without Ray (TestClient)."""
from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")
from fastapi.testclient import TestClient

from cyclediff.client import Client
from cyclediff.serve.app import build_app
from cyclediff.serve.config import EngineSpec, Limits
from cyclediff.serve.worker import EngineWorker

FAST = {"num_inference_steps": "6"}  # strength 0.8: 4 decoder steps per prompt


@pytest.fixture(scope="module")
def engine(exports):
    import cyclediff

    spec = EngineSpec(str(exports("tiny")), threads=1)
    return cyclediff.Engine.load(spec.folder, **spec.load_kwargs())


def _service(engine, threads=2, waiting=2, **limits):
    worker = EngineWorker(engine, threads, waiting)
    return worker, TestClient(build_app(worker, Limits(request_timeout_s=60, **limits)),
                              raise_server_exceptions=False)


def _png(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "PNG")
    return buf.getvalue()


def _submit(http, prompts=("a castle",), **fields):
    data = {"source_prompt": "a house", "prompt": list(prompts), "seed": "3", **FAST, **fields}
    return http.post("/v1/jobs", data=data, files={"image": ("in.png", _png())})


def _wait(http, job_id: str, until=("done", "failed", "cancelled"), timeout_s=60.0) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        view = http.get(f"/v1/jobs/{job_id}").json()
        if view["state"] in until:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {view}")


def test_a_job_gives_what_edit_gives_with_its_progress(engine):
    worker, http = _service(engine)
    with http:
        r = _submit(http, prompts=("a castle", "a barn"))
        assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        first = r.json()
        assert first["state"] in ("queued", "running") and first["steps"] == 2 * 4 and first["seed"] == 3
        events = [json.loads(line[6:]) for line in http.get(f"/v1/jobs/{first['id']}/events").text.splitlines()
                  if line.startswith("data: ")]
        steps = [e["step"] for e in events]
        assert events[-1]["state"] == "done" and steps == sorted(steps) and steps[-1] == 8
        done = _wait(http, first["id"])
        assert len(done["images"]) == 2 and done["format"] == "png"
        edit = http.post("/v1/edit", data={"source_prompt": "a house", "prompt": ["a castle", "a barn"], "seed": "3",
                                           **FAST}, files={"image": ("in.png", _png())}).json()["images"]
        for k, url in enumerate(done["images"]):
            got = http.get(url)
            assert got.headers["content-type"] == "image/png"
            ref = PIL.Image.open(io.BytesIO(base64.b64decode(edit[k])))
            assert np.array_equal(np.asarray(PIL.Image.open(io.BytesIO(got.content))), np.asarray(ref))
    worker.close()


def test_cancel_stops_the_engine_call(engine):
    worker, http = _service(engine)
    with http:
        job = _submit(http, num_inference_steps="400", strength="1").json()
        running = _wait(http, job["id"], until=("running",))
        while http.get(f"/v1/jobs/{job['id']}").json()["step"] < 1:
            time.sleep(0.02)
        assert http.delete(f"/v1/jobs/{job['id']}").json()["cancelling"] is True
        view = _wait(http, job["id"])
        assert running["state"] == "running" and view["state"] == "cancelled" and view["step"] < view["steps"]
        assert worker.stats()["cancelled"] == 1 and worker.stats()["admitted"] == 0
    worker.close()


def test_jobs_share_the_queue_bound_and_get_503(engine):
    worker, http = _service(engine, threads=1, waiting=0)
    with http:
        long = _submit(http, num_inference_steps="400", strength="1").json()
        full = _submit(http)
        assert full.status_code == 503 and full.headers["retry-after"] == "1" and "full" in full.json()["error"]
        assert http.post("/v1/edit", data={"source_prompt": "a", "prompt": "b"},
                         files={"image": ("i.png", _png())}).status_code == 503
        http.delete(f"/v1/jobs/{long['id']}")
        _wait(http, long["id"])
        assert _submit(http).status_code == 202
    worker.close()


def test_finished_jobs_expire_by_count_and_age_then_404(engine):
    worker, http = _service(engine, job_results=1, job_ttl_s=30)
    with http:
        a = _submit(http).json()["id"]
        _wait(http, a)
        b = _submit(http).json()["id"]
        _wait(http, b)
        gone = http.get(f"/v1/jobs/{a}")
        assert gone.status_code == 404 and gone.json()["field"] == "id"
        assert "lost when it restarts" in gone.json()["error"] and http.get(f"/v1/jobs/{b}").status_code == 200
        assert http.get("/v1/jobs/nope").status_code == 404 and http.delete("/v1/jobs/nope").status_code == 404
        assert http.get(f"/v1/jobs/{b}/images/5").status_code == 404
    worker.close()
    worker, http = _service(engine, job_ttl_s=0.2)
    with http:
        c = _submit(http).json()["id"]
        _wait(http, c)
        time.sleep(0.3)
        assert http.get(f"/v1/jobs/{c}").status_code == 404
    worker.close()


def test_bad_jobs_are_refused_at_once_or_fail_with_the_field(engine):
    worker, http = _service(engine)
    with http:
        bad = _submit(http, strength="3")
        assert bad.status_code == 422 and bad.json()["field"] == "strength"
        steps = _submit(http, num_inference_steps="1000", strength="1")  # past tiny's last training timestep
        assert steps.status_code == 422 and steps.json()["field"] == "num_inference_steps"
        odd = http.post("/v1/jobs", data={"source_prompt": "a", "prompt": "b", **FAST},
                        files={"image": ("i.png", _png((30, 32)))}).json()
        failed = _wait(http, odd["id"])
        assert failed["state"] == "failed" and failed["error"]["field"] == "image"
        assert failed["error"]["status"] == 422 and "multiple" in failed["error"]["error"]
        assert worker.stats()["admitted"] == 0
    worker.close()


def test_client_submit_wait_cancel(engine):
    worker, http = _service(engine)
    with http:
        client = Client(http=http)
        job = client.submit(_png(), "a house", "a castle", seed=3, num_inference_steps=6)
        image = client.wait(job, timeout_s=60)
        assert isinstance(image, PIL.Image.Image) and image.size == (32, 32)
        long = client.submit(_png(), "a house", "a castle", num_inference_steps=400, strength=1.0)
        assert client.cancel(long)["state"] in ("queued", "running", "cancelled")
        assert client.status(long)["id"] == long
    worker.close()


def test_page_and_examples_are_served(engine):
    worker, http = _service(engine)
    with http:
        page = http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "v1/jobs" in page.text and "<script>" in page.text and "http" not in page.text.split("<script>")[1]
        url = http.get("/v1/examples").json()["examples"][0]
        assert PIL.Image.open(io.BytesIO(http.get(url).content)).size == (512, 512)
        settings = http.get("/v1/info").json()["settings"]
        assert settings["strength"] == {"default": 0.8, "min": 0, "max": 1, "exclusive_min": True}
    worker.close()


def test_pix2pix_zero_jobs_equal_the_engines_own_calls(engine):
    import torch

    worker, http = _service(engine)
    with http:
        info = http.get("/v1/info").json()["methods"]
        assert info["pix2pix-zero"] == {"guided": engine.backend == "torch"}
        r = _submit(http, prompts=("a castle",), method="pix2pix-zero", cross_attention_guidance_amount="0")
        done = _wait(http, r.json()["id"])
        assert done["state"] == "done" and done["steps"] == 2 * 6 and done["step"] == 12
        got = np.asarray(PIL.Image.open(io.BytesIO(http.get(done["images"][0]).content)))
        image = PIL.Image.open(io.BytesIO(_png()))
        code = engine.invert("a house", image, num_inference_steps=6, output_type=None,
                             generator=torch.Generator().manual_seed(3))
        d = engine.edit_direction(["a house"], ["a castle"])
        ref = engine.pix2pix_zero(code.prompt, d.source_embeds, d.target_embeds, num_inference_steps=6, latents=code,
                                  cross_attention_guidance_amount=0, generator=torch.Generator().manual_seed(3))
        assert np.array_equal(got, np.asarray(ref.images[0]))
        if engine.backend != "torch":
            bad = _submit(http, method="pix2pix-zero")  # amount 0.1 by default: the guided step
            assert bad.status_code == 422 and bad.json()["field"] == "cross_attention_guidance_amount"
        assert _submit(http, method="pix").json()["field"] == "method"
    worker.close()
