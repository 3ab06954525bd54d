"""The same bad value gets the same words at every front door: the Python API, `cyclediff-run`, its `--jobs` file,
the HTTP service and `cyclediff-eval`. Each spells the argument its own way (num_inference_steps, --steps,
settings.num_inference_steps); the rest of the message, the request rules' (runtime/core/checks.py), is identical."""
from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from cyclediff import Engine
from cyclediff.runtime.core.checks import InvalidArgument

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from cyclediff.serve.app import build_app  # noqa: E402
from cyclediff.serve.config import Limits  # noqa: E402
from cyclediff.serve.worker import EngineWorker  # noqa: E402

# (case id, {request field: bad value}, the field the refusal names). None: a door that cannot express it
# (argparse itself refuses a non-integer --steps; the API takes a generator, not a seed).
CASES = [
    ("strength above 1", {"strength": 1.5}, "strength"),
    ("strength 0", {"strength": 0.0}, "strength"),
    ("zero steps", {"num_inference_steps": 0}, "num_inference_steps"),
    ("fractional steps", {"num_inference_steps": 2.5}, "num_inference_steps"),
    ("negative eta", {"eta": -0.5}, "eta"),
    ("nan guidance", {"guidance_scale": math.nan}, "guidance_scale"),
    ("no step runs", {"strength": 0.1, "num_inference_steps": 4}, "strength"),
    ("huge seed", {"seed": 2**70}, "seed"),
]
CLI_FLAGS = {"strength": "--strength", "num_inference_steps": "--steps", "eta": "--eta",
             "guidance_scale": "--guidance-scale", "seed": "--seed"}
EVAL_NAMES = {"strength": "--strength values", "num_inference_steps": "--steps", "eta": "--eta values",
              "guidance_scale": "--guidance-scale values", "seed": "--seed"}


def _png() -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(exports):
    return Engine.load(exports("tiny"), backend="torch", progress=False)


@pytest.fixture(scope="module")
def http(engine):
    worker = EngineWorker(engine, 2)
    app = build_app(worker, Limits(max_body_bytes=256 * 1024, max_side=256, max_prompts=3, max_steps=1000,
                                   request_timeout_s=30))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    worker.close()


def _api(engine, bad: dict) -> str | None:
    if "seed" in bad:
        return None
    image = PIL.Image.open(io.BytesIO(_png())).convert("RGB")
    with pytest.raises(InvalidArgument) as err:
        engine.edit("a barn", "a house", image, output_type="np", **{"num_inference_steps": 4, **bad})
    return str(err.value)


def _cli(folder, tmp_path, bad: dict) -> str | None:
    if isinstance(bad.get("num_inference_steps"), float):
        return None
    flags = [x for k, v in {"num_inference_steps": 4, **bad}.items() for x in (CLI_FLAGS[k], str(v))]
    done = subprocess.run([sys.executable, "-m", "cyclediff.runtime.cli", "--engine", str(folder), "--image",
                           "sample", "--source-prompt", "a house", "--prompt", "a barn", "--out",
                           str(tmp_path / "o.png"), "--quiet", *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("cyclediff-run: error: ")


def _jobs(folder, tmp_path, bad: dict) -> str:
    line = {"image": "sample", "source_prompt": "a house", "prompt": "a barn", "out": "o.png",
            "settings": {"num_inference_steps": 4, **bad}}
    (tmp_path / "j.jsonl").write_text(json.dumps(line) + "\n")
    done = subprocess.run([sys.executable, "-m", "cyclediff.runtime.cli", "--engine", str(folder), "--jobs",
                           str(tmp_path / "j.jsonl"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    first = done.stderr.splitlines()[0]
    return first.split(" line 1: ", 1)[1]


def _http(http, bad: dict) -> tuple[str, str]:
    body = {"image": base64.b64encode(_png()).decode(), "source_prompt": "a house", "prompt": "a barn",
            "num_inference_steps": 4, **bad}
    r = http.post("/v1/edit", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    return r.json()["field"], r.json()["error"]


def _eval(folder, tmp_path, bad: dict) -> str | None:
    if isinstance(bad.get("num_inference_steps"), float):
        return None
    (tmp_path / "t.csv").write_text("image,source_prompt,target_prompt\nsample,a house,a barn\n")
    names = {"strength": "--strength", "num_inference_steps": "--steps", "eta": "--eta",
             "guidance_scale": "--guidance-scale", "seed": "--seed"}
    flags = [x for k, v in {"num_inference_steps": 4, **bad}.items() for x in (names[k], str(v))]
    done = subprocess.run([sys.executable, "-m", "cyclediff.eval.cli", "--engine", str(folder), "--triplets",
                           str(tmp_path / "t.csv"), "--out", str(tmp_path / "ev"), "--clip", "tiny", *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("cyclediff-eval: error: ")


@pytest.mark.parametrize("bad, field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_bad_value_gets_one_message_at_every_door(engine, http, exports, tmp_path, bad, field):
    got_field, served = _http(http, bad)
    assert got_field == field
    assert served.startswith(f"{field} "), served
    detail = served.removeprefix(f"{field} ")
    expected = {
        "api": f"{field} {detail}",
        "cli": f"{CLI_FLAGS[field]} {detail}",
        "jobs": f"settings.{field} {detail}",
        "eval": f"{EVAL_NAMES[field]} {detail}",
    }
    folder = exports("tiny")
    got = {"api": _api(engine, bad), "cli": _cli(folder, tmp_path, bad), "jobs": _jobs(folder, tmp_path, bad),
           "eval": _eval(folder, tmp_path, bad)}
    for door, message in got.items():
        if message is not None:
            assert message == expected[door], (door, message, expected[door])
    assert sum(m is not None for m in got.values()) >= 2  # every case reaches at least two doors besides HTTP


def test_several_prompts_one_encoding_is_the_engines_rule(engine):
    """Engine.edit_prompts: one encoding of the image, decoded once per prompt (what every front door does with a
    prompt list); equal to encode + decode per prompt with the same seed, and to edit for one prompt."""
    import torch

    image = PIL.Image.open(io.BytesIO(_png())).convert("RGB")
    prompts = ["a barn", "a mill"]
    kw = dict(num_inference_steps=4, guidance_scale=3.0, source_guidance_scale=2.0)
    out = engine.edit_prompts(prompts, "a house", image, generator=torch.Generator().manual_seed(5),
                              output_type="np", **kw)
    code = engine.encode(image, "a house", num_inference_steps=4, source_guidance_scale=2.0,
                         generator=torch.Generator().manual_seed(5))
    for i, prompt in enumerate(prompts):
        ref = engine.decode(code, prompt, guidance_scale=3.0, output_type="np").images[0]
        assert np.array_equal(out.images[i], ref), prompt
    assert torch.equal(out.code.noises, code.noises)
    one = engine.edit_prompts(prompts[:1], "a house", image, generator=torch.Generator().manual_seed(5),
                              output_type="np", **kw).images
    alone = engine.edit(prompts[0], "a house", image, generator=torch.Generator().manual_seed(5), output_type="np",
                        **kw).images
    assert np.array_equal(one, alone)
