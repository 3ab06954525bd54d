"""The one owner of an Engine's model runners: every model call of every thread goes through it, and
concurrent compatible UNet calls are merged into one batched call (cross-request batching).

Callers submit a job and block until it is done. Whoever finds no batch running becomes the *leader*: it takes
the oldest job plus every queued UNet job with the same latent and text shape (up to the memory limit), runs
them as one call, hands each slice back, and wakes the others. No background thread exists, so a call alone
pays no hand-off; the leader waits for more jobs only while some other in-flight call has not queued yet,
at most `wait_s`.

Locking rule: `_cond` guards the queue, the in-flight count and the `_busy` flag; only the thread that set
`_busy` calls the runners or touches the merge buffers and the captured graphs. A thread inside `exclusive()`
has set `_busy` the same way, so its model calls outside `call` (autograd through torch modules that the runners
may share: guidance and Pix2Pix-Zero through runtime/core/model_gate.py) run alone and are never merged.

CUDA graphs: a leader captures a UNet shape only while every in-flight call waits on a queued job or is in its
batch (no other thread is doing CUDA work that could invalidate the capture or be recorded into it), and sets
`_capturing` under `_cond` for the capture's length, during which no new public call enters; otherwise that call
runs eagerly and a later quiet one captures.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import UNET
from cyclediff.runtime.core import graph_capture
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.cancel import check_cancelled
from cyclediff.runtime.core.checks import check_number, check_range
from cyclediff.runtime.core.graph_capture import CapturedStep, GraphDevice

Tensors = Mapping[str, torch.Tensor]
# What a UNet job may be merged on: (sample shape[1:], text shape[1:], dtypes, device)
MergeKey = tuple


@dataclasses.dataclass(eq=False)
class _Job:
    model: str
    feeds: Tensors
    outputs: Tensors
    key: MergeKey | None  # None: never merged (text encoder, VAE)
    size: int  # samples: the leading dimension of a UNet job
    done: bool = False
    error: BaseException | None = None


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """max_batch: most samples in one merged UNet call (memory bound; a larger single job runs alone).
    wait_ms: how long a leader may wait for other in-flight calls to queue their UNet job."""

    max_batch: int = 16
    wait_ms: float = 5.0

    def __post_init__(self):
        check_number("max_batch", self.max_batch, integer=True, low=1)
        check_range("batch_wait_ms", self.wait_ms, 0, 1000, open_low=False)


class ModelDispatcher:
    """limit(sample_shape) -> the most samples one UNet call of that latent shape may hold (memory plan);
    graphs: a GraphDevice factory to capture each merged UNet shape once and replay it (CUDA), or None."""

    def __init__(self, runners: Mapping[str, ModelRunner], device: torch.device, config: BatchingConfig,
                 limit: Callable[[tuple[int, ...]], int] | None = None,
                 graphs: Callable[[], GraphDevice] | None = None):
        self.runners, self.config, self.graphs = dict(runners), config, graphs
        self._limit = limit or (lambda shape: config.max_batch)
        self.pool = BufferPool(device)  # merge buffers: leader only
        self._captured: dict[tuple, CapturedStep] = {}  # leader only
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self._in_flight = 0
        self._local = threading.local()
        self._exclusive_owner: int | None = None  # the thread inside exclusive(), under _cond
        self._capturing = False  # a leader is capturing a CUDA graph: new public calls wait, under _cond
        # leader only; read by tests and benchmarks
        self.stats = {"unet_calls": 0, "unet_jobs": 0, "merged_calls": 0, "waits": 0}

    def runner(self, model: str) -> DispatchedRunner:
        return DispatchedRunner(self, self.runners[model])

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Marks one public call as in flight (nested calls of one thread count once): the leader waits for
        jobs only while some in-flight call has none queued."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._capturing:  # a capture records the device's work: start none until it ends
                    self._cond.wait()
                self._in_flight += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The runners for the calling thread alone during the block: waits until no batch runs (as a leader
        would), then no job runs until the block ends. For model calls made outside `call` (autograd through
        torch modules); never merged. While waiting and holding, the caller's public call does not count as in
        flight, so no leader waits for a job it will not queue. Not reentrant: calling `call` or `exclusive`
        inside the block from the same thread would wait for itself forever, so it is refused."""
        me = threading.get_ident()
        counted = getattr(self._local, "depth", 0) > 0
        with self._cond:
            if self._exclusive_owner == me:
                raise RuntimeError("ModelDispatcher.exclusive() entered again by the thread that holds it; hold "
                                   "it once around the model calls (it is not reentrant)")
            self._in_flight -= counted
            self._cond.notify_all()  # a leader waiting for this call's job stops waiting
            try:
                while self._busy:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: count as in flight again
                self._in_flight += counted
                raise
            self._busy, self._exclusive_owner = True, me
        try:
            yield
        finally:
            with self._cond:
                self._busy, self._exclusive_owner = False, None
                self._in_flight += counted
                self._cond.notify_all()

    def call(self, model: str, feeds: Tensors, outputs: Tensors) -> None:
        """Run `model` on feeds into outputs; blocks until done; raises what the run raised for this job."""
        job = _Job(model, feeds, outputs, *self._merge_key(model, feeds))
        with self._cond:
            if self._exclusive_owner == threading.get_ident():
                raise RuntimeError(f"a {model} job submitted inside ModelDispatcher.exclusive() by the thread "
                                   "that holds it would wait for itself; make the call outside the block")
            self._queue.append(job)
            self._cond.notify_all()
            while not job.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._take_batch()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error

    def _merge_key(self, model: str, feeds: Tensors) -> tuple[MergeKey | None, int]:
        if model != UNET:
            return None, 0
        s, e = feeds["sample"], feeds["encoder_hidden_states"]
        return (tuple(s.shape[1:]), tuple(e.shape[1:]), s.dtype, e.dtype, s.device), int(s.shape[0])

    # ---- leader only ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Job]:
        """Called with _cond held. The oldest job, plus compatible queued UNet jobs that fit the limit."""
        deadline = time.monotonic() + self.config.wait_ms / 1000
        while True:
            head = self._queue[0]
            cap = self._limit(head.key[0]) if head.key is not None else 0  # once per look: it reads the workspaces
            batch = self._compatible(head, cap)
            full = sum(j.size for j in batch) >= cap
            everyone_queued = len(self._queue) >= self._in_flight
            remaining = deadline - time.monotonic()
            if batch[0].key is None or full or everyone_queued or remaining <= 0:
                for job in batch:
                    self._queue.remove(job)
                return batch
            self.stats["waits"] += 1
            self._cond.wait(remaining)

    def _compatible(self, head: _Job, cap: int) -> list[_Job]:
        if head.key is None:
            return [head]
        batch, total = [head], head.size
        for job in self._queue[1:]:
            if job.key == head.key and total + job.size <= cap:
                batch.append(job)
                total += job.size
        return batch

    def _run(self, batch: list[_Job]) -> None:
        try:
            if batch[0].key is None:
                self.runners[batch[0].model](batch[0].feeds, batch[0].outputs)
            else:
                self._run_unet(batch)
        except BaseException as err:  # noqa: BLE001 - handed to the callers, never lost
            if len(batch) == 1:
                batch[0].error = err
            else:
                self._isolate(batch)  # one bad job must not fail the others
        for job in batch:
            job.done = True

    def _isolate(self, batch: list[_Job]) -> None:
        for job in batch:
            try:
                self._run_unet([job])
            except BaseException as err:  # noqa: BLE001
                job.error = err

    def _run_unet(self, batch: list[_Job]) -> None:
        self.stats["unet_calls"] += 1
        self.stats["unet_jobs"] += len(batch)
        if len(batch) == 1 and self.graphs is None:  # alone: run on the caller's own tensors, bitwise as before
            self.runners[UNET](batch[0].feeds, batch[0].outputs)
            return
        self.stats["merged_calls"] += len(batch) > 1
        feeds, out = self._gather(batch)
        result = self._unet(feeds, out, len(batch))
        start = 0
        for job in batch:
            job.outputs["noise_pred"].copy_(result[start: start + job.size])
            start += job.size

    def _gather(self, batch: list[_Job]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Concatenate the jobs' feeds into merge buffers of the total size n: sample (n, C, h, w), timestep
        (n,), encoder_hidden_states (n, 77, D); out (n, C, h, w)."""
        n = sum(j.size for j in batch)
        # One buffer per merge key, sliced: the memory limit never exceeds max_batch, so the size stays put.
        rows = max(n, self.config.max_batch)
        feeds = {}
        for name, t in batch[0].feeds.items():
            buf = self.pool.get(f"merge.{name}", (rows, *t.shape[1:]), t.dtype)[:n]
            torch.cat([j.feeds[name] for j in batch], out=buf)
            feeds[name] = buf
        out = batch[0].outputs["noise_pred"]
        return feeds, self.pool.get("merge.noise_pred", (rows, *out.shape[1:]), out.dtype)[:n]

    def _unet(self, feeds: dict[str, torch.Tensor], out: torch.Tensor, jobs: int) -> torch.Tensor:
        """One UNet call on merge buffers holding `jobs` callers' jobs (captured per signature on CUDA)."""
        if self.graphs is None:
            self.runners[UNET](feeds, {"noise_pred": out})
            return out
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(feeds.items()))
        step = self._captured.get(key)
        if step is None:
            def run(**static: torch.Tensor) -> torch.Tensor:
                self.runners[UNET](static, {"noise_pred": out})
                return out

            step = self._captured[key] = CapturedStep(run, self.graphs())
        if not step.capture_due:
            return step.call(feeds)
        with self._quiet(jobs) as quiet:
            return step.call(feeds, may_capture=quiet)

    @contextlib.contextmanager
    def _quiet(self, jobs: int) -> Iterator[bool]:
        """Leader only: yields whether no other thread can be doing CUDA work (every in-flight call is waiting
        on a queued job or is one of the `jobs` in this batch); while it is True, no new public call starts."""
        with self._cond:
            quiet = self._in_flight <= jobs + len(self._queue)
            self._capturing = quiet
        try:
            yield quiet
        finally:
            if quiet:
                with self._cond:
                    self._capturing = False
                    self._cond.notify_all()

    def graph_report(self) -> dict:
        """What the CUDA graphs did: each UNet signature's phase, and the process's failed captures so far. Any
        thread: a snapshot of the leader's table (a signature being added meanwhile may be missing)."""
        shapes = [{"inputs": {name: list(shape) for name, shape, _ in key}, "phase": step.phase.value,
                   "captures": step.captures} for key, step in list(self._captured.items())]
        return {"enabled": self.graphs is not None, "signatures": shapes, "failures": graph_capture.FAILURES.count}


class DispatchedRunner(ModelRunner):
    """A ModelRunner whose calls go through the dispatcher (so they are serialized and may be merged)."""

    def __init__(self, dispatcher: ModelDispatcher, runner: ModelRunner):
        super().__init__(runner.spec)
        self.dispatcher = dispatcher

    def __call__(self, feeds: Tensors, outputs: Tensors) -> None:
        check_cancelled()  # the caller's thread, before its job is queued: a stop here leaves nothing behind
        self.dispatcher.call(self.spec.name, feeds, outputs)
