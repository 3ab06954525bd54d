"""The replica's bounded queue (serve/admission.py) on a stub ASGI app: exact under a simultaneous burst.

No event-loop ticks are counted: every request reports when it settles (reached the held app, or got its
answer), and the scenarios await exactly those reports.
"""
from __future__ import annotations

import asyncio
import json

from cyclediff.serve.admission import Admission
from cyclediff.serve.worker import EngineWorker


class Held:
    """An ASGI app whose requests run until `gate` is set; counts the calls it saw and notes each arrival."""

    def __init__(self, notes: asyncio.Queue):
        self.gate, self.calls, self.notes = asyncio.Event(), 0, notes

    async def __call__(self, scope, receive, send):
        self.calls += 1
        self.notes.put_nowait(("held", None))
        await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app, path: str) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def _noted(app, path: str, notes: asyncio.Queue) -> tuple[int, dict, bytes]:
    """_call, noting ("answered", reply) once it has its answer."""
    reply = await _call(app, path)
    notes.put_nowait(("answered", reply))
    return reply


async def _settled(notes: asyncio.Queue, n: int) -> list[tuple[str, object]]:
    """The first n notes: one per request while the gate is shut (held at the gate, or answered at once)."""
    return [await notes.get() for _ in range(n)]


def _now(coro):
    """Run a coroutine that must finish without suspending (nothing it awaits may wait); its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the call waited: it should be answered at once")


def test_a_burst_gets_exactly_capacity_admitted_and_the_rest_503():
    async def scenario():
        worker, notes = EngineWorker(None, threads=2, max_waiting=3), asyncio.Queue()
        inner = Held(notes)
        app = Admission(inner, worker, retry_after_s=1.5)
        burst = [asyncio.create_task(_noted(app, "/v1/edit", notes)) for _ in range(12)]
        settled = await _settled(notes, len(burst))
        refused = [reply for kind, reply in settled if kind == "answered"]
        info = _now(_call(Admission(_ok, worker, 1), "/v1/info"))  # while the queue is full
        inner.gate.set()
        replies = await asyncio.gather(*burst)
        return worker, inner, settled, refused, replies, info

    worker, inner, settled, refused, replies, info = asyncio.run(scenario())
    assert len(refused) == 7 and inner.calls == 5 == sum(kind == "held" for kind, _ in settled)
    for status, headers, body in refused:
        assert status == 503 and headers[b"retry-after"] == b"2"  # rounded up, as Ray Serve does
        assert "--max-queued-requests" in json.loads(body)["error"]
    assert sorted(status for status, _, _ in replies) == [200] * 5 + [503] * 7  # the 5 held ones: 200
    assert info[0] == 200  # /v1/info is never refused, even when the queue is full
    assert worker.stats()["refused"] == 7 and worker.stats()["admitted"] == 0  # every place given back


def test_paths_under_a_route_prefix_are_counted():
    async def scenario():
        worker, notes = EngineWorker(None, threads=1), asyncio.Queue()
        inner = Held(notes)
        app = Admission(inner, worker, retry_after_s=1)
        first = asyncio.create_task(_noted(app, "/cyclediff/v1/encode", notes))
        [(kind, _)] = await _settled(notes, 1)
        second = _now(_call(app, "/cyclediff/v1/edit"))  # the one place is taken: refused at once
        inner.gate.set()
        return kind, (await first)[0], second[0]

    assert asyncio.run(scenario()) == ("held", 200, 503)


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_failing_request_gives_its_place_back():
    async def boom(scope, receive, send):
        raise RuntimeError("engine failed")

    async def scenario():
        worker = EngineWorker(None, threads=1)
        app = Admission(boom, worker, retry_after_s=1)
        for _ in range(3):
            try:
                await _call(app, "/v1/decode")
            except RuntimeError:
                pass
        return worker

    worker = asyncio.run(scenario())
    assert worker.stats()["admitted"] == 0 and worker.stats()["refused"] == 0


def test_worker_runs_each_job_in_its_tokens_cancel_scope():
    """The worker's jobs run under cancel_scope(token.check): a timed-out request stops at the Engine's next model
    call (the encoder's chunks included), not only at a decoder step."""
    from cyclediff.runtime.core.cancel import check_cancelled
    from cyclediff.serve.errors import Cancelled

    worker = EngineWorker(None, threads=1)

    def job(token):
        check_cancelled()  # what the Engine's dispatcher does before each model call
        token.cancel()  # the request times out while the job runs
        check_cancelled()
        return "ran to the end"

    async def scenario():
        return await worker.run(job, timeout_s=30)

    try:
        asyncio.run(scenario())
        raise AssertionError("the job was not stopped")
    except Cancelled:
        pass
    assert worker.stats()["cancelled"] == 1
    worker.close()
