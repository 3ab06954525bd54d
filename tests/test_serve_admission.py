"""The replica's bounded queue (serve/admission.py) on a stub ASGI app: exact under a simultaneous burst."""
from __future__ import annotations

import asyncio
import json

from cyclediff.serve.admission import Admission
from cyclediff.serve.worker import EngineWorker


class Held:
    """An ASGI app whose requests run until release() is called; counts the calls it saw."""

    def __init__(self):
        self.gate, self.calls = asyncio.Event(), 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
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


def test_a_burst_gets_exactly_capacity_admitted_and_the_rest_503():
    async def scenario():
        worker = EngineWorker(None, threads=2, max_waiting=3)
        inner = Held()
        app = Admission(inner, worker, retry_after_s=1.5)
        burst = [asyncio.create_task(_call(app, "/v1/edit")) for _ in range(12)]
        for _ in range(20):  # let every task reach the gate or be refused
            await asyncio.sleep(0)
        refused = [t.result() for t in burst if t.done()]
        waiting = [t for t in burst if not t.done()]
        info = await asyncio.wait_for(_call(Admission(_ok, worker, 1), "/v1/info"), 1)
        inner.gate.set()
        admitted = await asyncio.gather(*waiting)
        return worker, inner, refused, admitted, info

    worker, inner, refused, admitted, info = asyncio.run(scenario())
    assert len(refused) == 7 and inner.calls == 5 == len(admitted)
    for status, headers, body in refused:
        assert status == 503 and headers[b"retry-after"] == b"2"  # rounded up, as Ray Serve does
        assert "--max-queued-requests" in json.loads(body)["error"]
    assert all(status == 200 for status, _, _ in admitted)
    assert info[0] == 200  # /v1/info is never refused, even when the queue is full
    assert worker.stats()["refused"] == 7 and worker.stats()["admitted"] == 0  # every place given back


def test_paths_under_a_route_prefix_are_counted():
    async def scenario():
        worker = EngineWorker(None, threads=1)
        inner = Held()
        app = Admission(inner, worker, retry_after_s=1)
        first = asyncio.create_task(_call(app, "/cyclediff/v1/encode"))
        for _ in range(5):
            await asyncio.sleep(0)
        second = await _call(app, "/cyclediff/v1/edit")
        inner.gate.set()
        return (await first)[0], second[0]

    assert asyncio.run(scenario()) == (200, 503)


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
