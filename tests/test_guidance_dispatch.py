"""Guidance through the dispatcher: a cancel check before every differentiable model call (backward recomputations
included), one public call (workspace, in flight, max_concurrency), memory admitted before any model call, and
the dispatcher's exclusive turn that serializes those calls with every other thread's.

No assertion depends on timing: threads meet on events, and "B waits" is observed as B entering the wait."""
from __future__ import annotations

import threading

import pytest
import torch
from fake_unet import toy_unet_spec
from guidance_support import load, prior_code, saved_bytes, tiny_net
from reference import sample_image

from cyclediff import Engine
from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import UNET
from cyclediff.runtime.core.cancel import Cancelled, cancel_scope
from cyclediff.runtime.core.dispatcher import BatchingConfig, ModelDispatcher
from cyclediff.runtime.core.memory_plan import CallShape, MemoryBudgetError
from cyclediff.runtime.core.model_gate import ModelGate
from cyclediff.runtime.methods.guidance.energies import ClassifierEnergy

STEPS, GUIDE_STEPS, N_STEPS = 3, 2, 2  # decode steps of the code, sampler steps inside the loop, Langevin steps


@pytest.fixture(scope="module")
def engine(exports):
    return load(exports("tiny"))


def _guide(engine: Engine, callback=None):
    return engine.guide("a cat", [ClassifierEnergy(tiny_net(), 0, 5.0)], start=prior_code(engine, steps=STEPS),
                        n_steps=N_STEPS, guide_steps=GUIDE_STEPS, generator=torch.Generator().manual_seed(0),
                        output_type="latent", callback=callback)


class Recorder:
    """Logs, in order, every cancel check ("check") and every call of the differentiable UNet / VAE decoder
    (("unet" | "vae", inside a backward pass)); the check raises Cancelled on its `stop_at`-th call."""

    def __init__(self, engine: Engine, stop_at: int | None = None):
        self.log: list = []
        self.checks, self.stop_at = 0, stop_at
        parts = engine.guidance.torch_parts()  # on the torch backend: the runners' own modules
        self._hooks = [m.register_forward_pre_hook(self._hook(name))
                       for name, m in (("unet", parts.unet), ("vae", parts.vae_decoder))]

    def _hook(self, name: str):
        def record(module, args):
            self.log.append((name, torch._C._current_graph_task_id() != -1))

        return record

    def check(self) -> None:
        self.log.append("check")
        self.checks += 1
        if self.checks == self.stop_at:
            raise Cancelled(f"stopped at check {self.checks}")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()


def _full_run(engine: Engine) -> tuple[list, torch.Tensor]:
    with Recorder(engine) as rec, cancel_scope(rec.check):
        out = _guide(engine)
    return rec.log, out.code.x_T


def _check_number_before(log: list, entry) -> int:
    """The 1-based number of the check right before the first `entry` in log."""
    at = log.index(entry)
    assert log[at - 1] == "check"
    return log[:at].count("check")


# ---- cancellation -----------------------------------------------------------------------------------------------

def test_every_differentiable_call_is_checked_first(engine):
    log, _ = _full_run(engine)
    assert ("unet", True) in log, "no UNet recomputation in backward: checkpointing did not run"
    assert ("vae", False) in log
    for k, entry in enumerate(log):
        if entry != "check":
            assert log[k - 1] == "check", f"model call {entry} at {k} ran without a cancel check before it"


@pytest.mark.parametrize("where", ["loop forward unet", "loop vae", "backward recomputation"])
def test_a_stop_lands_on_the_next_model_call(engine, where):
    """The check raises on its N-th call: the guide call stops right there (no model call after it), the error
    reaches the caller, and the Engine's next call runs as an undisturbed one."""
    full, x_T = _full_run(engine)
    n = _check_number_before(full, {"loop forward unet": ("unet", False), "loop vae": ("vae", False),
                                    "backward recomputation": ("unet", True)}[where])
    with Recorder(engine, stop_at=n) as rec, cancel_scope(rec.check), pytest.raises(Cancelled):
        _guide(engine)
    nth = [k for k, e in enumerate(full) if e == "check"][n - 1]
    assert rec.log == full[: nth + 1], "the guide call ran past the stop (or not the same calls before it)"
    assert engine.dispatcher._in_flight == 0 and not engine.dispatcher._busy
    assert len(engine.workspaces._free) == len(engine.workspaces._all)  # the workspace was returned
    assert torch.equal(_guide(engine).code.x_T, x_T)  # usable afterwards, and bit for bit as before


def test_a_backward_on_another_thread_runs_the_holders_check(engine):
    """Autograd runs a CUDA backward on its own device thread, which has no cancel scope: a model call made
    there for the holder runs the holder's check (a backward on a worker thread shows it on the CPU)."""
    gate = ModelGate(engine.dispatcher)
    module = gate.wrap(torch.nn.Identity())

    class Recompute(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return module(grad)  # as checkpoint's recomputation calls the UNet

    seen: list[int] = []

    def refuse():
        seen.append(threading.get_ident())
        raise Cancelled("holder's check")

    x = torch.ones(2, requires_grad=True)
    y = Recompute.apply(x).sum()
    errors: list[BaseException] = []

    def backward():
        try:
            torch.autograd.grad(y, x)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    with cancel_scope(refuse), gate.hold():
        worker = threading.Thread(target=backward)
        worker.start()
        worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled) and seen == [worker.ident]
    assert not engine.dispatcher._busy


# ---- one public call: the concurrency slot, in flight ----------------------------------------------------------

class SignalingCondition(threading.Condition):
    """A Condition that sets `entered` whenever a thread starts waiting on it."""

    def __init__(self, entered: threading.Event):
        super().__init__()
        self.entered = entered

    def wait(self, timeout=None):
        self.entered.set()
        return super().wait(timeout)


def test_a_guide_call_holds_its_concurrency_slot(exports):
    """max_concurrency=1: while a guide call is parked inside its Langevin loop, another thread's edit waits for
    the workspace (it enters the wait and makes no model call) and runs only after the guide call is done."""
    engine = Engine.load(exports("tiny"), backend="torch", progress=False, max_concurrency=1)
    log: list[str] = []
    parked, go, b_blocked_or_ran = threading.Event(), threading.Event(), threading.Event()
    engine.workspaces._cond = SignalingCondition(b_blocked_or_ran)  # only B can wait: A holds the one workspace
    seen_in_flight: list[int] = []

    def park(step, record, pixels):
        if step == 0:
            seen_in_flight.append(engine.dispatcher._in_flight)
            parked.set()
            assert go.wait(60), "the test never released the guide call"

    def check_b():
        log.append("B")
        b_blocked_or_ran.set()

    def guide():
        with cancel_scope(lambda: log.append("A")):
            _guide(engine, callback=park)

    def edit():
        with cancel_scope(check_b):
            engine.edit("a cat", "a dog", sample_image(32), num_inference_steps=3, output_type="np",
                        generator=torch.Generator().manual_seed(0))

    a, b = threading.Thread(target=guide), threading.Thread(target=edit)
    a.start()
    assert parked.wait(60), "the guide call never reached its loop"
    b.start()
    assert b_blocked_or_ran.wait(60)
    assert "B" not in log, "the edit ran model calls while the guide call was in its loop"
    assert seen_in_flight == [1]  # the guide call counts as in flight inside its loop
    go.set()
    a.join(120)
    b.join(120)
    assert not a.is_alive() and not b.is_alive()
    first_b = log.index("B")
    assert "A" not in log[first_b:], "the edit's model calls interleaved with the guide call's"
    assert engine.dispatcher._in_flight == 0 and not engine.dispatcher._busy


class CountedRunner(ModelRunner):
    """Wraps a dispatcher's runner; records the thread of every call."""

    def __init__(self, inner: ModelRunner, threads: list[int]):
        super().__init__(inner.spec)
        self.inner, self.threads = inner, threads

    def __call__(self, feeds, outputs):
        self.threads.append(threading.get_ident())
        self.inner(feeds, outputs)


@pytest.mark.parametrize("where", ["unet forward", "vae backward"])
def test_no_other_model_call_runs_beside_a_differentiable_one(exports, monkeypatch, where):
    """A guide call parked inside a differentiable UNet call (or inside the VAE decoder's backward) holds the
    dispatcher: another thread's edit queues its first job and waits; it runs once the guide call goes on."""
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    parts, d = engine.guidance.torch_parts(), engine.dispatcher
    guide_thread: list[int] = []
    parked, go = threading.Event(), threading.Event()

    def park(*_):
        if threading.get_ident() in guide_thread and not parked.is_set():
            parked.set()
            assert go.wait(60), "the test never released the guide call"

    hook = (parts.unet.register_forward_pre_hook(park) if where == "unet forward"
            else parts.vae_decoder.register_full_backward_pre_hook(park))
    ran: list[int] = []
    for name, runner in list(d.runners.items()):
        monkeypatch.setitem(d.runners, name, CountedRunner(runner, ran))

    def guide():
        guide_thread.append(threading.get_ident())
        _guide(engine)

    edited: list = []

    def edit():
        edited.append(engine.edit("a zebra", "a horse", sample_image(32), num_inference_steps=3, output_type="np",
                                  generator=torch.Generator().manual_seed(0)))

    try:
        a, b = threading.Thread(target=guide), threading.Thread(target=edit)
        a.start()
        assert parked.wait(60), f"the guide call never reached its {where}"
        before = len(ran)
        b.start()
        with d._cond:  # notified when a job is queued, and when one is done
            assert d._cond.wait_for(lambda: d._queue or len(ran) > before, timeout=60), "the edit never queued"
        assert len(ran) == before, "another thread's model call ran beside the guide call's"
        go.set()
        a.join(120)
        b.join(120)
        assert not a.is_alive() and not b.is_alive()
        assert len(ran) > before and len(edited) == 1  # the edit ran afterwards
    finally:
        go.set()
        hook.remove()
    assert d._in_flight == 0 and not d._busy


# ---- memory admission -----------------------------------------------------------------------------------------

def _peaks(engine: Engine) -> tuple[int, int]:
    """(the final decode's planned peak alone, the guide call's: with its Langevin loop as the method's extra)."""
    h, w = prior_code(engine, steps=STEPS).latent_hw
    extra = engine.planner.guidance_bytes(h, w, 1, GUIDE_STEPS, True)
    decode = engine.planner.plan(CallShape(h, w, 1, STEPS, True))["peak"]
    return decode, engine.planner.plan(CallShape(h, w, 1, STEPS, True, extra=extra))["peak"]


def test_a_small_budget_refuses_a_guide_call_before_any_model_call(engine, exports):
    decode_peak, guide_peak = _peaks(engine)
    assert guide_peak > decode_peak  # the loop's backward is what does not fit
    small = Engine.load(exports("tiny"), backend="torch", progress=False, max_memory=decode_peak)
    code = prior_code(small, steps=STEPS)
    with Recorder(small) as rec, cancel_scope(rec.check):
        with pytest.raises(MemoryBudgetError, match="the guidance loop keeps about .* for its backward pass"):
            _guide(small)
        assert rec.log == [], "a model ran before the refusal"
        small.decode(code, "a cat", output_type="latent")  # the decode alone fits: the refusal is the loop's
    assert small.dispatcher._in_flight == 0
    fits = Engine.load(exports("tiny"), backend="torch", progress=False, max_memory=guide_peak)
    assert _guide(fits).code.x_T.shape == code.x_T.shape


def _saved_bytes(engine: Engine, steps: int, checkpoint: bool) -> int:
    """Bytes autograd keeps after G's forward for the backward (each saved tensor once, weights excluded)."""
    return saved_bytes(engine, steps, checkpoint, weights_and_views_once=True)


def test_the_guidance_term_covers_what_autograd_keeps(engine):
    """The planned bytes bound what the tiny modules' backward really keeps: every step's activations without
    checkpointing, one step's (recomputed) plus each step's input with it."""
    h, w = prior_code(engine).latent_hw
    plan = engine.planner.guidance_bytes
    for steps in (1, 3):
        assert plan(h, w, 1, steps, True, checkpoint=False) >= _saved_bytes(engine, steps, checkpoint=False)
    lat = prior_code(engine).x_T.numel() * 4
    # one step's UNet activations: what keeping them costs over recomputing them
    unet_step = _saved_bytes(engine, 1, checkpoint=False) - _saved_bytes(engine, 1, checkpoint=True)
    kept = _saved_bytes(engine, 3, checkpoint=True)  # each step's input and the VAE decoder's activations
    assert plan(h, w, 1, 3, True, checkpoint=True) >= max(unet_step + 3 * lat, kept)
    assert plan(h, w, 1, 6, True) - plan(h, w, 1, 2, True) == 4 * 4 * lat  # per step: its input x and z, ∇z, z'
    assert plan(h, w, 1, 6, True, checkpoint=False) - plan(h, w, 1, 2, True, checkpoint=False) > 100 * lat


# ---- the dispatcher's exclusive turn, with a fake UNet ---------------------------------------------------------

class FakeUnet(ModelRunner):
    """noise_pred = sample + 1; counts its calls."""

    def __init__(self):
        super().__init__(toy_unet_spec())
        self.calls = 0

    def __call__(self, feeds, outputs):
        self.calls += 1
        outputs["noise_pred"].copy_(feeds["sample"] + 1)


def _job():
    feeds = {"sample": torch.zeros(1, 4, 2, 2), "timestep": torch.zeros(1),
             "encoder_hidden_states": torch.zeros(1, 3, 5)}
    return feeds, {"noise_pred": torch.empty(1, 4, 2, 2)}


def test_exclusive_holds_every_job_until_the_block_ends():
    unet = FakeUnet()
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=4, wait_ms=0))
    other = threading.Thread(target=lambda: d.call(UNET, *_job()))
    with d.in_flight():
        with d.exclusive():
            assert d._in_flight == 0  # holding: no leader waits for a job from this call
            other.start()
            with d._cond:  # notified when the job is queued
                assert d._cond.wait_for(lambda: len(d._queue) == 1, timeout=60), "the job never queued"
            assert unet.calls == 0, "a job ran inside another thread's exclusive block"
        other.join(60)
        assert not other.is_alive() and unet.calls == 1
        assert d._in_flight == 1
    assert d._in_flight == 0 and not d._busy


def test_exclusive_refuses_what_would_wait_for_itself():
    unet = FakeUnet()
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=4, wait_ms=0))
    with d.exclusive():
        with pytest.raises(RuntimeError, match="would wait for itself"):
            d.call(UNET, *_job())
        with pytest.raises(RuntimeError, match="not reentrant"):
            with d.exclusive():
                pass
    assert not d._busy and not d._queue
    d.call(UNET, *_job())  # still usable
    assert unet.calls == 1
