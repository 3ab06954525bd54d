"""cancel_scope: a caller stops an Engine call between model calls — inside the encoder's chunked pass too — and
the Engine stays usable, for this thread only."""
from __future__ import annotations

import threading

import numpy as np
import PIL.Image
import pytest
import torch

import cyclediff
from cyclediff import cancel_scope


class Stop(Exception):
    pass


class Counted:
    """Wraps a runner; counts its calls."""

    def __init__(self, runner):
        self.runner, self.calls = runner, 0

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def __call__(self, feeds, outputs):
        self.calls += 1
        self.runner(feeds, outputs)


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def engine(exports, request):
    # max_batch 2: the encoder's 8 steps x [uncond, cond] at source guidance 2 are 8 chunked UNet calls
    return cyclediff.Engine.load(exports("tiny"), backend=request.param, max_batch=2, progress=False, threads=1)


def _image():
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _encode(engine, seed=0):
    return engine.encode(_image(), "a house", strength=0.8, num_inference_steps=10, source_guidance_scale=2.0,
                         generator=torch.Generator().manual_seed(seed))


def test_stop_inside_the_encoder_pass(engine):
    unet = engine.core.dispatcher.runners["unet"] = Counted(engine.core.dispatcher.runners["unet"])
    try:
        checks = 0

        def check():
            nonlocal checks
            checks += 1
            if unet.calls >= 3:
                raise Stop("caller gave up")

        with pytest.raises(Stop), cancel_scope(check):
            _encode(engine)
        assert unet.calls == 3, "the encoder ran past the stop"  # 8 chunks without it
        calls_before = unet.calls
        again = _encode(engine)  # usable afterwards, and the same as an undisturbed call
        assert unet.calls - calls_before == 8
        assert torch.equal(again.noises, _encode(engine).noises)
        assert checks >= 3
    finally:
        engine.core.dispatcher.runners["unet"] = unet.runner


def test_scope_is_per_thread_and_restored(engine):
    seen = []

    def other_thread():
        seen.append(_encode(engine, seed=1).noises)  # no scope here: must not see the main thread's check

    def refuse():
        raise Stop("main thread only")

    with cancel_scope(refuse):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(120)
        with pytest.raises(Stop):
            _encode(engine)
    assert len(seen) == 1
    _encode(engine)  # the scope ended: no check any more
