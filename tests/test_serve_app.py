"""cyclediff-serve's HTTP API without Ray: the FastAPI app over one Engine (FastAPI's TestClient)."""
from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")
pytest.importorskip("httpx", reason="needs the serve extra: pip install '.[serve]'")
from fastapi.testclient import TestClient

from cyclediff.client import Client, ServiceError
from cyclediff.engine.base import ModelRunner
from cyclediff.serve.app import build_app
from cyclediff.serve.config import EngineSpec, Limits
from cyclediff.serve.worker import EngineWorker

FAST = {"num_inference_steps": 6}


@pytest.fixture(scope="module")
def engine(exports):
    import cyclediff

    spec = EngineSpec(str(exports("tiny")), threads=1)
    return cyclediff.Engine.load(spec.folder, **spec.load_kwargs())


@pytest.fixture(scope="module")
def worker(engine):
    worker = EngineWorker(engine, 4)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def http(worker):
    app = build_app(worker, Limits(max_body_bytes=256 * 1024, max_side=256, max_prompts=3, max_steps=1000,
                                   request_timeout_s=30))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _png(size=(32, 32), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _json_edit(**over) -> dict:
    return {"image": base64.b64encode(_png()).decode(), "source_prompt": "a house", "prompt": "a castle",
            **FAST, **over}


def test_edit_equals_engine_edit(http, engine):
    """JSON and multipart requests return what Engine.edit returns for the same arguments and seed."""
    image = PIL.Image.open(io.BytesIO(_png()))
    ref = engine.edit("a castle", "a house", image, generator=torch.Generator().manual_seed(7), output_type="np",
                      **FAST).images[0]
    r = http.post("/v1/edit", json=_json_edit(seed=7, output_format="npy"))
    assert r.status_code == 200 and r.headers["x-seed"] == "7"
    assert np.abs(np.load(io.BytesIO(r.content)) - ref).max() <= 1e-4
    client = Client(http=http)
    got = client.edit(_png(), "a house", "a castle", seed=7, output_format="npy", **FAST)
    assert np.abs(got - ref).max() <= 1e-4
    png = client.edit(image, "a house", "a castle", seed=7, **FAST)
    assert np.array_equal(np.asarray(png), np.asarray(engine.edit("a castle", "a house", image, generator=torch.
                                                                  Generator().manual_seed(7), **FAST).images[0]))


def test_several_prompts_share_one_encoding(http, engine):
    image = PIL.Image.open(io.BytesIO(_png()))
    code = engine.encode(image, "a house", generator=torch.Generator().manual_seed(3), **FAST)
    refs = [engine.decode(code, p, output_type="np").images[0] for p in ("a barn", "a mill")]
    got = Client(http=http).edit(image, "a house", ["a barn", "a mill"], seed=3, output_format="npy", **FAST)
    assert len(got) == 2
    for g, ref in zip(got, refs):
        assert np.abs(g - ref).max() <= 1e-4


def test_encode_then_decode_round_trip(http, engine, tmp_path):
    import cyclediff

    client = Client(http=http)
    data = client.encode(_png(), "a house", seed=5, **FAST)
    (tmp_path / "c.code").write_bytes(data)
    code = cyclediff.LatentCode.load(tmp_path / "c.code")  # LatentCode.save's format
    ref = engine.decode(code, "a barn", output_type="np").images[0]
    assert np.abs(client.decode(data, "a barn", output_format="npy") - ref).max() <= 1e-4


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    ({"strength": 1.5}, 422, "strength", "(0, 1]"),
    ({"strength": "high"}, 422, "strength", "must be a number"),
    ({"num_inference_steps": 2.5}, 422, "num_inference_steps", "integer"),
    ({"num_inference_steps": 0}, 422, "num_inference_steps", ">= 1"),
    ({"num_inference_steps": 5000}, 422, "num_inference_steps", "--max-steps"),
    ({"eta": -1}, 422, "eta", ">= 0"),
    ({"guidance_scale": True}, 422, "guidance_scale", "number"),
    ({"seed": -3}, 422, "seed", "[0, 2**63)"),
    ({"strenght": 0.5}, 422, "strenght", "unknown field"),
    ({"prompt": ["a", "b", "c", "d"]}, 422, "prompt", "limit 3"),
    ({"prompt": []}, 422, "prompt", "non-empty"),
    ({"prompt": 5}, 422, "prompt", "string"),
    ({"source_prompt": None}, 422, "source_prompt", "required"),
    ({"image": "not base64!"}, 400, "image", "base64"),
    ({"image": base64.b64encode(b"GIF89a junk").decode()}, 400, "image", "could not be decoded"),
    ({"image": base64.b64encode(b"a house on a hill\n").decode()}, 400, "image",
     "received 18 bytes of text: 'a house on a hill'; send a PNG, JPEG or WebP file"),
    ({"image": ""}, 400, "image", "received an empty file"),
    ({"image": base64.b64encode(_png((30, 32))).decode()}, 422, "image", "multiples of 4"),
    ({"image": base64.b64encode(_png((300, 32))).decode()}, 413, "image", "limit of 256"),
    ({"output_format": "gif"}, 422, "output_format", "png"),
    ({"timeout_s": 99}, 422, "timeout_s", "--request-timeout"),
])
def test_bad_edit_requests(http, body, status, field, words):
    r = http.post("/v1/edit", json=_json_edit(**body))
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and words in r.json()["error"], r.json()
    assert "BytesIO" not in r.json()["error"]


def test_a_text_file_as_the_image_says_what_was_received(http):
    r = http.post("/v1/edit", data={"source_prompt": "a", "prompt": "b"},
                  files={"image": ("notes.txt", b"\x00\x01 not text, not a picture")})
    assert r.status_code == 400 and r.json()["field"] == "image", r.text
    assert "of an unknown format (starting 00 01 20 6e" in r.json()["error"] and "BytesIO" not in r.text
    r = http.post("/v1/edit", data={"source_prompt": "a", "prompt": "b"},
                  files={"image": ("house.png", _png()[:40])})
    assert r.status_code == 400 and "40 bytes of PNG data" in r.json()["error"], r.text


def test_bad_bodies(http):
    r = http.post("/v1/edit", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = http.post("/v1/edit", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = http.post("/v1/edit", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = http.post("/v1/edit", content=b"x" * (300 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]
    r = http.post("/v1/edit", data={"source_prompt": "a", "prompt": "b", "strength": "lots"},
                  files={"image": ("i.png", _png())})
    assert r.status_code == 422 and r.json()["field"] == "strength"


def test_bad_codes(http, engine):
    r = http.post("/v1/decode", files={"code": ("c", b"garbage")}, data={"prompt": "a barn"})
    assert r.status_code == 422 and r.json()["field"] == "code" and "/v1/encode" in r.json()["error"]
    r = http.post("/v1/decode", json={"prompt": "a barn"})
    assert r.status_code == 422 and r.json()["field"] == "code"


def test_client_raises_service_error(http):
    with pytest.raises(ServiceError) as err:
        Client(http=http).edit(_png(), "a house", "a castle", strength=2.0)
    assert err.value.status == 422 and err.value.field == "strength"


class UnetHeldUntilCancelled(ModelRunner):
    """Wraps the Engine's UNet runner: the first call waits until the request's token is cancelled (its timeout
    fired), so the request times out mid-way through its Engine call however fast the machine is."""

    def __init__(self, inner: ModelRunner):
        super().__init__(inner.spec)
        self.inner, self.calls, self.token = inner, 0, None
        self.started = threading.Event()  # the request's job is running: self.token is set

    def __call__(self, feeds, outputs):
        self.calls += 1
        if self.calls == 1:  # the token's own event: set even if the timeout fired before we looked
            assert self.started.wait(60) and self.token._event.wait(60), "the request never timed out"
        self.inner(feeds, outputs)


def test_timeout_is_504_and_stops_the_work(http, engine, worker, monkeypatch):
    """A request past its timeout_s gets 504, and its Engine call stops at its next model call (counted as
    cancelled) instead of running its 800 decoder steps to the end."""
    from cyclediff.export.specs import UNET
    from cyclediff.serve import jobs

    unet = UnetHeldUntilCancelled(engine.dispatcher.runners[UNET])
    monkeypatch.setitem(engine.dispatcher.runners, UNET, unet)
    run_edit, guarded, finished = jobs.run_edit, worker._guarded, threading.Event()

    def noting_run_edit(engine, job, token, *args):
        unet.token = token
        unet.started.set()
        return run_edit(engine, job, token, *args)

    def noting_guarded(job, token):  # the worker's own bookkeeping included (the cancelled count)
        try:
            return guarded(job, token)
        finally:
            finished.set()

    monkeypatch.setattr(jobs, "run_edit", noting_run_edit)
    monkeypatch.setattr(worker, "_guarded", noting_guarded)
    before = http.get("/v1/info").json()["replica"]["cancelled"]
    r = http.post("/v1/edit", json=_json_edit(num_inference_steps=1000, timeout_s=0.2))
    assert r.status_code == 504 and r.json()["field"] == "timeout_s"
    assert finished.wait(60), "the timed-out edit was not stopped"
    replica = http.get("/v1/info").json()["replica"]
    assert replica["cancelled"] == before + 1 and replica["in_flight"] == 0
    # Held at its first UNet call until cancelled, the edit stopped at its next model call: 1 UNet call. (0 if the
    # timeout fired before the first one: the text encoder or VAE call saw the cancel first.) Never 800 steps.
    assert unet.calls <= 1
    monkeypatch.undo()
    assert http.post("/v1/edit", json=_json_edit(seed=1)).status_code == 200  # still serving


def test_info_and_openapi(http):
    info = http.get("/v1/info").json()
    assert info["resolution"] == {"native": 32, "side_multiple": 4, "max_side": 256}
    assert info["checkpoint"]["spec"] == "tiny" and info["backend"] in ("onnxruntime", "torch")
    assert http.get("/health").json() == {"status": "ok"}
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/edit", "/v1/encode", "/v1/decode", "/v1/info", "/health"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/edit"]["post"]["requestBody"]["content"]


def test_core_package_does_not_import_ray_or_httpx():
    import subprocess
    import sys

    code = "import sys, cyclediff; cyclediff.Engine; print('ray' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_serve_yaml_builds_the_application(exports):
    """serve/serve.yaml's import path and args make a deployable application (nothing is started)."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("ray.serve")
    from cyclediff.serve.deployment import build

    config = yaml.safe_load((Path(__file__).parents[1] / "serve" / "serve.yaml").read_text())
    args = {**config["applications"][0]["args"], "engine": str(exports("tiny"))}
    assert config["applications"][0]["import_path"] == "cyclediff.serve.deployment:build"
    app = build(args)
    options = app._bound_deployment  # the deployment as bound: replicas and resources from args
    assert options.ray_actor_options["num_gpus"] == 0.5
    # 8 running + 64 queued, counted by the replica; Serve may hand it twice that so it refuses the overflow, and
    # Serve's own queue limit is off, so that every refusal is the replica's JSON 503 (serve/admission.py)
    assert options.max_ongoing_requests == 2 * (8 + 64) and options.max_queued_requests == -1
    with pytest.raises(ValueError, match="unknown args"):
        build({**args, "replica": 2})
    more = build({**args, "decoder_engine": "/exports/style", "job_results": 8, "job_ttl_s": 60.0})
    spec, limits, _ = more._bound_deployment.init_args
    assert (spec.decoder_engine, limits.job_results, limits.job_ttl_s) == ("/exports/style", 8, 60.0)


def test_decoder_field_decodes_with_the_second_export(engine, finetune):
    """A replica with a second export (cyclediff-serve --decoder-engine): decoder=true edits and decodes with it."""
    import cyclediff

    spec = EngineSpec(str(finetune), threads=1)
    decoder = cyclediff.Engine.load(spec.folder, **spec.load_kwargs())
    worker = EngineWorker(engine, 2, decoder=decoder)
    image = PIL.Image.open(io.BytesIO(_png()))
    ref = engine.edit("a castle", "a house", image, generator=torch.Generator().manual_seed(7), output_type="np",
                      decoder=decoder, **FAST)
    try:
        with TestClient(build_app(worker, Limits()), raise_server_exceptions=False) as http:
            client = Client(http=http)
            got = client.edit(_png(), "a house", "a castle", seed=7, output_format="npy", decoder=True, **FAST)
            assert np.abs(got - ref.images[0]).max() <= 1e-4
            code = client.encode(_png(), "a house", seed=7, **FAST)
            assert np.abs(client.decode(code, "a castle", output_format="npy", decoder=True)
                          - ref.images[0]).max() <= 1e-4
            info = http.get("/v1/info").json()["decoder"]
            assert info["engine_digest"] == decoder.manifest.digest and info["differs"] == []
            bad = http.post("/v1/edit", json=_json_edit(decoder="maybe"))
            assert bad.status_code == 422 and bad.json()["field"] == "decoder"
    finally:
        worker.close()


def test_decoder_field_without_a_second_export_is_refused(http):
    r = http.post("/v1/edit", json=_json_edit(decoder=True))
    assert r.status_code == 422 and r.json()["field"] == "decoder" and "--decoder-engine" in r.json()["error"]
    assert http.get("/v1/info").json()["decoder"] is None
