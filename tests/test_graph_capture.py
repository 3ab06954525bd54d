"""CUDA-graph state machine on the NULL device; CudaGraphDevice's stream handling on a stand-in torch.cuda; the
dispatcher's rule of capturing only while no other call is in flight."""
from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import UNET, Dims, specs
from cyclediff.runtime.core import graph_capture
from cyclediff.runtime.core.dispatcher import BatchingConfig, ModelDispatcher
from cyclediff.runtime.core.graph_capture import (
    CaptureConfig,
    CapturedStep,
    CaptureFailures,
    CudaGraphDevice,
    GraphSignatureError,
    NullGraphDevice,
    Phase,
)

CPU = torch.device("cpu")
DIMS = Dims(text_len=7, text_width=5, text_states=2, latent_channels=4, vae_scale=2)


def _doubler():
    calls = []

    def fn(x):
        calls.append(x.clone())
        return x * 2

    return fn, calls


def test_warmup_then_capture_once_then_replay():
    fn, calls = _doubler()
    dev = NullGraphDevice()
    step = CapturedStep(fn, dev, CaptureConfig(warmup_calls=2))
    outs = [step(x=torch.full((3,), float(i))) for i in range(5)]
    assert dev.events == ["warmup", "warmup", "capture", "replay", "replay", "replay"]
    assert step.phase is Phase.REPLAY and step.captures == 1
    assert [o.tolist() for o in outs] == [[2.0 * i] * 3 for i in range(5)]
    assert len(calls) == 5  # 2 warm-ups + 3 replays: the capture itself computed nothing


@pytest.mark.parametrize("warmups", [0, 1, 3])
def test_warmup_count_is_configurable(warmups):
    dev = NullGraphDevice()
    step = CapturedStep(lambda x: x + 1, dev, CaptureConfig(warmup_calls=warmups))
    for _ in range(warmups + 2):
        step(x=torch.zeros(2))
    assert dev.events == ["warmup"] * warmups + ["capture", "replay", "replay"]


def test_inputs_are_copied_into_static_buffers():
    seen = []
    step = CapturedStep(lambda x: seen.append(x.data_ptr()) or x.sum(), NullGraphDevice(), CaptureConfig(1))
    for i in range(4):
        assert step(x=torch.full((2, 2), float(i))).item() == 4.0 * i
    assert len(set(seen)) == 1 and seen[0] == step.static_inputs["x"].data_ptr()


@pytest.mark.parametrize("bad", [torch.zeros(4), torch.zeros(3, dtype=torch.float64),
                                 torch.zeros(3, dtype=torch.int64)])
def test_replay_refuses_a_changed_shape_or_dtype(bad):
    step = CapturedStep(lambda x: x * 2, NullGraphDevice(), CaptureConfig(warmup_calls=1))
    step(x=torch.zeros(3))
    step(x=torch.zeros(3))
    assert step.phase is Phase.REPLAY
    with pytest.raises(GraphSignatureError, match="one CapturedStep per input signature"):
        step(x=bad)
    assert step.phase is Phase.REPLAY and step.captures == 1  # the refused call left the capture as it was


def test_changed_input_names_are_refused():
    step = CapturedStep(lambda **kw: None, NullGraphDevice())
    step(x=torch.zeros(3))
    with pytest.raises(GraphSignatureError):
        step(y=torch.zeros(3))


class FailingCaptureDevice(NullGraphDevice):
    """A device whose capture raises, as a CUDA capture does on an op it cannot record."""

    def capture(self, fn):
        self.events.append("capture")
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_falls_back_to_eager_for_good_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(graph_capture, "FAILURES", CaptureFailures())
    devices = [FailingCaptureDevice(), FailingCaptureDevice()]
    steps = [CapturedStep(lambda x: x * 2, d, CaptureConfig(warmup_calls=1)) for d in devices]
    with caplog.at_level("WARNING", logger=graph_capture.__name__):
        for i in range(5):
            for step in steps:
                assert torch.equal(step(x=torch.full((3,), float(i))), torch.full((3,), 2.0 * i))
    for step, dev in zip(steps, devices):
        assert dev.events == ["warmup", "capture"]  # never retried
        assert step.phase is Phase.EAGER and step.captures == 0 and step.failed
    assert graph_capture.FAILURES.count == 2
    assert len(caplog.records) == 1 and "capture failed" in caplog.records[0].getMessage()
    with pytest.raises(GraphSignatureError):  # eager or not, a step serves the one signature it started with
        steps[0](x=torch.zeros(4))
    assert devices[0].events == ["warmup", "capture"] and steps[0].phase is Phase.EAGER


def test_negative_warmup_is_refused():
    with pytest.raises(ValueError):
        CaptureConfig(warmup_calls=-1)


# ---- warm-up in the capturing thread; a capture that has to wait --------------------------------------------------

class ThreadedDevice(NullGraphDevice):
    """NullGraphDevice that also records which thread made each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def warmup(self, fn):
        self.threads.append(threading.get_ident())
        return super().warmup(fn)

    def capture(self, fn):
        self.threads.append(threading.get_ident())
        return super().capture(fn)


def test_a_capture_in_another_thread_warms_up_there_first():
    dev = ThreadedDevice()
    step = CapturedStep(lambda x: x * 2, dev, CaptureConfig(warmup_calls=1))
    step(x=torch.ones(2))  # warm-up in this thread
    got = []
    worker = threading.Thread(target=lambda: got.append(step(x=torch.full((2,), 3.0))))
    worker.start()
    worker.join()
    assert dev.events == ["warmup", "warmup", "capture", "replay"]
    assert dev.threads[1] == dev.threads[2] == worker.ident != dev.threads[0]
    assert torch.equal(got[0], torch.full((2,), 6.0)) and step.phase is Phase.REPLAY


def test_a_capture_in_the_warming_thread_needs_no_extra_warmup():
    dev = NullGraphDevice()
    step = CapturedStep(lambda x: x * 2, dev, CaptureConfig(warmup_calls=1))
    step(x=torch.ones(2))
    step(x=torch.ones(2))
    assert dev.events == ["warmup", "capture", "replay"]


def test_a_capture_that_may_not_happen_runs_eagerly_and_happens_later():
    dev = NullGraphDevice()
    step = CapturedStep(lambda x: x + 1, dev, CaptureConfig(warmup_calls=1))
    step.call({"x": torch.zeros(2)})
    assert step.capture_due
    for _ in range(2):
        assert torch.equal(step.call({"x": torch.zeros(2)}, may_capture=False), torch.ones(2))
    assert step.phase is Phase.WARMUP and dev.events == ["warmup"] * 3
    step.call({"x": torch.zeros(2)})
    assert dev.events[3:] == ["capture", "replay"] and step.phase is Phase.REPLAY and not step.capture_due


# ---- CudaGraphDevice's streams, on a stand-in for torch.cuda ------------------------------------------------------

class FakeStream:
    def __init__(self, name: str) -> None:
        self.name, self.waited_on = name, []

    def wait_stream(self, other) -> None:
        self.waited_on.append(other.name)


class FakeCuda:
    """The names CudaGraphDevice uses from torch.cuda. `graph` mimics torch.cuda.graph's order: __enter__ makes the
    capture stream current, __exit__ calls capture_end (which raises when the capture was invalidated) BEFORE it
    restores the previous stream, so a failed capture leaves the capture stream current."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.current, self.graph_kwargs = fail, FakeStream("caller"), {}
        self.ran_on: list[str] = []

    def Stream(self, device=None):
        return FakeStream("side")

    def current_stream(self):
        return self.current

    def set_stream(self, stream) -> None:
        self.current = stream

    def CUDAGraph(self):
        return object()

    @contextlib.contextmanager
    def stream(self, s):
        prev, self.current = self.current, s
        try:
            yield
        finally:
            self.current = prev

    def graph(self, graph, pool=None, stream=None, capture_error_mode="global"):
        fake, self.graph_kwargs = self, {"stream": stream.name, "capture_error_mode": capture_error_mode}

        class Ctx:
            def __enter__(self):
                self.prev, fake.current = fake.current, stream

            def __exit__(self, *exc):
                if fake.fail:
                    raise RuntimeError("operation failed due to a previous error during capture")
                fake.current = self.prev

        return Ctx()


@pytest.mark.parametrize("fail", [False, True])
def test_cuda_graph_device_warms_and_captures_on_one_stream_and_restores_the_callers(fail):
    cuda = FakeCuda(fail)
    caller = cuda.current
    dev = CudaGraphDevice(cuda=cuda)
    dev.warmup(lambda: cuda.ran_on.append(cuda.current.name))
    assert cuda.ran_on == ["side"] and cuda.current is caller and caller.waited_on == ["side"]
    if fail:
        with pytest.raises(RuntimeError):
            dev.capture(lambda: cuda.ran_on.append(cuda.current.name))
    else:
        dev.capture(lambda: cuda.ran_on.append(cuda.current.name))
    assert cuda.current is caller, "the thread was left on the capture stream"
    assert cuda.ran_on == ["side", "side"] and dev.stream.waited_on == ["caller", "caller"]
    assert cuda.graph_kwargs == {"stream": "side", "capture_error_mode": "thread_local"}


def test_a_failed_capture_runs_the_eager_fallback_on_the_callers_stream(monkeypatch):
    monkeypatch.setattr(graph_capture, "FAILURES", CaptureFailures())
    cuda = FakeCuda(fail=True)
    step = CapturedStep(lambda: cuda.ran_on.append(cuda.current.name), CudaGraphDevice(cuda=cuda),
                        CaptureConfig(warmup_calls=0))
    step()
    assert step.phase is Phase.EAGER and cuda.ran_on == ["side", "caller"]  # the recorded run, then the eager one


# ---- the dispatcher captures only while no other call is in flight ------------------------------------------------

class Doubler(ModelRunner):
    def __init__(self) -> None:
        super().__init__(specs(DIMS)[UNET])

    def __call__(self, feeds, outputs) -> None:
        outputs["noise_pred"].copy_(feeds["sample"] * 2)


def _unet_call(disp: ModelDispatcher) -> torch.Tensor:
    out = torch.empty(1, 4, 2, 2)
    with disp.in_flight():
        disp.call(UNET, {"sample": torch.ones(1, 4, 2, 2), "timestep": torch.ones(1),
                         "encoder_hidden_states": torch.zeros(1, DIMS.text_len, DIMS.text_width)},
                  {"noise_pred": out})
    return out


def test_the_dispatcher_defers_a_capture_while_another_call_is_in_flight_and_blocks_new_ones_during_it():
    devices: list[NullGraphDevice] = []
    disp = ModelDispatcher({UNET: Doubler()}, CPU, BatchingConfig(max_batch=4, wait_ms=0),
                           graphs=lambda: devices.append(NullGraphDevice()) or devices[-1])
    busy, release = threading.Event(), threading.Event()

    def other_call():  # in flight, doing "device work" outside the dispatcher, queuing nothing
        with disp.in_flight():
            busy.set()
            release.wait(10)

    other = threading.Thread(target=other_call)
    other.start()
    busy.wait(10)
    for _ in range(4):  # 2 warm-ups, then the capture is due but must wait
        assert torch.equal(_unet_call(disp), torch.full((1, 4, 2, 2), 2.0))
    assert devices[0].events == ["warmup"] * 4 and disp.graph_report()["signatures"][0]["phase"] == "warmup"
    release.set()
    other.join()

    dev, entered, waiters = devices[0], [], []
    real_capture = dev.capture

    def newcomer():
        with disp.in_flight():
            entered.append(list(dev.events))

    def capture(fn):  # a public call that starts during the capture must wait until it has ended
        waiters.append(threading.Thread(target=newcomer))
        waiters[0].start()
        waiters[0].join(0.2)
        assert waiters[0].is_alive(), "a new call entered during the capture"
        return real_capture(fn)

    dev.capture = capture
    assert torch.equal(_unet_call(disp), torch.full((1, 4, 2, 2), 2.0))
    waiters[0].join(10)
    assert dev.events[4:] == ["capture", "replay"] and entered == [["warmup"] * 4 + ["capture", "replay"]]
    report = disp.graph_report()
    assert report["enabled"] and report["signatures"][0]["phase"] == "replay"
    assert report["signatures"][0]["inputs"]["sample"] == [1, 4, 2, 2]
