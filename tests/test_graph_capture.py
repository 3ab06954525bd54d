"""CUDA-graph state machine on the NULL device, and the device step table against the host StepTable."""
from __future__ import annotations

import pytest
import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import Dims, specs
from cyclediff.runtime.core import ddim, graph_capture
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.graph_capture import (
    CaptureConfig,
    CapturedStep,
    CaptureFailures,
    GraphSignatureError,
    NullGraphDevice,
    Phase,
)
from cyclediff.runtime.core.schedule import SchedulerConfig, StepTable
from cyclediff.runtime.methods.cycle.decoder import DdimDecoder, TargetText
from cyclediff.runtime.methods.cycle.device_steps import COEFS, DeviceDecoderStep, DeviceStepTable
from cyclediff.runtime.methods.cycle.graph_decoder import GraphDdimDecoder

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


@pytest.fixture
def table():
    return StepTable.build(SchedulerConfig(), 20, 0.8, 0.3)


def test_device_table_reproduces_step_table(table):
    dev = DeviceStepTable(table, CPU)
    assert dev.num_steps == table.num_steps == 16
    for i in range(table.num_steps):
        c = dev.gather()
        assert c.timestep.item() == float(table.timesteps[i])
        for name in COEFS[1:]:
            assert torch.equal(getattr(c, name), getattr(table, name)[i]), (name, i)
        dev.advance()
    assert dev.counter.item() == table.num_steps
    dev.reset()
    assert dev.counter.item() == 0 and torch.equal(dev.gather().sqrt_a, table.sqrt_a[0])


def test_load_swaps_in_another_schedule_of_the_same_length(table):
    dev = DeviceStepTable(table, CPU)
    dev.advance()
    other = StepTable.build(SchedulerConfig(timestep_spacing="trailing", steps_offset=0), 40, 0.4, 0.0)
    values = dev.values.data_ptr()
    dev.load(other)
    assert dev.values.data_ptr() == values and dev.counter.item() == 0
    assert torch.equal(dev.gather().sqrt_b, other.sqrt_b[0]) and dev.coefs.timestep.item() == other.timesteps[0]
    with pytest.raises(ValueError, match="steps"):
        dev.load(StepTable.build(SchedulerConfig(), 10, 0.5, 0.0))


def test_gathered_views_keep_their_address(table):
    dev = DeviceStepTable(table, CPU)
    before = [getattr(dev.gather(), n).data_ptr() for n in COEFS]
    dev.advance()
    assert [getattr(dev.gather(), n).data_ptr() for n in COEFS] == before


def test_gather_rows_selects_the_current_step(table):
    dev = DeviceStepTable(table, CPU)
    src = torch.randn(table.num_steps, 2, 4, 3, 3)
    out = torch.empty(2, 4, 3, 3)
    for i in range(3):
        assert dev.gather_rows(src, out) is out and torch.equal(out, src[i])
        dev.advance()


def test_gathered_ddim_step_equals_host_indexed_step(table):
    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(2, 4, 6, 6, generator=g) for _ in range(3))
    dev = DeviceStepTable(table, CPU)
    for i in range(table.num_steps):
        want, got = x0.clone(), x0.clone()
        ddim.ddim_step(want, eps, z, table.sqrt_a[i], table.sqrt_b[i], table.sqrt_a_prev[i], table.dir_coef[i],
                       table.sigma[i], torch.empty_like(x0), torch.empty_like(x0))
        c = dev.gather()
        ddim.ddim_step(got, eps, z, c.sqrt_a, c.sqrt_b, c.sqrt_a_prev, c.dir_coef, c.sigma, torch.empty_like(x0),
                       torch.empty_like(x0))
        assert torch.equal(got, want), i
        dev.advance()


class SyntheticUNet(ModelRunner):
    """ε = tanh(0.7·x + mean(emb) + t/1000): depends on every input, so a wrong binding shows."""

    def __init__(self):
        super().__init__(specs(DIMS)["unet"])

    def __call__(self, feeds, outputs):
        x, t, emb = feeds["sample"], feeds["timestep"], feeds["encoder_hidden_states"]
        bias = emb.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) / 1000
        outputs["noise_pred"].copy_(torch.tanh(0.7 * x + bias))


@pytest.mark.parametrize("guidance", [None, 3.7])
@pytest.mark.parametrize("eta", [0.0, 0.3])
def test_captured_decoder_equals_host_decoder(guidance, eta):
    table = StepTable.build(SchedulerConfig(), 12, 0.75, eta)
    g = torch.Generator().manual_seed(1)
    b, lat = 2, (2, 4, 4, 6)
    x_T = torch.randn(lat, generator=g)
    noises = torch.randn(table.num_steps, *lat, generator=g) if eta > 0 else None
    cond, uncond = torch.randn(b, 7, 5, generator=g), torch.randn(1, 7, 5, generator=g)
    text = TargetText(cond, uncond if guidance else None, guidance or 1.0)
    unet = SyntheticUNet()
    want = DdimDecoder(unet, BufferPool(CPU)).run(x_T, noises, table, text).clone()

    decoder = DdimDecoder(unet, BufferPool(CPU))
    bufs = decoder._buffers(b, lat, 2 if guidance else 1, text)
    bufs["z"] = torch.empty(lat)
    bufs["x"].copy_(x_T)
    scale = None if guidance is None else torch.tensor(guidance, dtype=torch.float32)
    step = DeviceDecoderStep(unet, DeviceStepTable(table, CPU), bufs, noises, scale)
    captured = CapturedStep(step, NullGraphDevice(), CaptureConfig(warmup_calls=1))
    for _ in range(table.num_steps):
        out = captured()
    assert out is bufs["x"] and torch.equal(out, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graph_decoder_reuses_one_capture_per_shape(dtype):
    g = torch.Generator().manual_seed(2)
    lat = (1, 4, 4, 4)
    unet, devices = SyntheticUNet(), []
    graph = GraphDdimDecoder(unet, BufferPool(CPU, dtype), lambda: devices.append(NullGraphDevice()) or devices[-1])
    runs = [(10, 0.8, 0.2, 7.5), (20, 0.4, 0.3, 2.3), (10, 0.5, 0.0, None)]  # (steps, strength, eta, guidance)
    for steps, strength, eta, scale in runs:
        table = StepTable.build(SchedulerConfig(), steps, strength, eta)
        x_T = torch.randn(lat, generator=g, dtype=dtype)
        noises = torch.randn(table.num_steps, *lat, generator=g, dtype=dtype) if table.eta > 0 else None
        text = TargetText(torch.randn(1, 7, 5, generator=g, dtype=dtype),
                          torch.randn(1, 7, 5, generator=g, dtype=dtype) if scale else None, scale or 1.0)
        seen = []
        want = DdimDecoder(unet, BufferPool(CPU, dtype)).run(x_T, noises, table, text).clone()
        got = graph.run(x_T, noises, table, text, callback=lambda i, t, x: seen.append(int(t)))
        assert torch.equal(got, want) and seen == table.timesteps.tolist()
    assert len(devices) == 2  # runs 1 and 2 share (B, latent, guidance, K=8, noise); run 3 has its own graph
    assert devices[0].events.count("capture") == 1 and devices[0].events.count("replay") == 8 * 2 - 2
