"""Admission: an ASGI middleware that is the replica's bounded queue; past it, 503 + Retry-After at once.

Ray Serve's own `max_queued_requests` cannot be the bound: its router checks the queue length, then awaits the
request's arguments, then counts the request (ray 2.60 `router.py`), so a burst of simultaneous requests passes
the check together and overfills the queue; and it counts a request as queued while it picks a replica, so a burst
also gets refusals (Serve's, in plain text) the replica had room for. Serve's limit is therefore off (config.py):
every refusal is this one's. The count here is taken before any await, so it is exact."""
from __future__ import annotations

import json
import math

from cyclediff.serve.worker import EngineWorker

WORK_PATHS = ("/v1/edit", "/v1/encode", "/v1/decode")  # /v1/info and /health are never refused


class Admission:
    def __init__(self, app, worker: EngineWorker, retry_after_s: float):
        self.app, self.worker = app, worker
        self.retry_after = str(max(0, math.ceil(retry_after_s))).encode()

    async def __call__(self, scope, receive, send):
        # endswith: under a route prefix (serve.yaml's route_prefix) the path may carry it in front
        if scope["type"] != "http" or not str(scope.get("path", "")).endswith(WORK_PATHS):
            return await self.app(scope, receive, send)
        if not self.worker.admit():  # refused before the body is read: a refusal costs no memory
            return await self._reply_503(send)
        try:
            return await self.app(scope, receive, send)
        finally:
            self.worker.release()

    async def _reply_503(self, send) -> None:
        cap = self.worker.capacity
        body = json.dumps({"error": f"the replica is full ({cap} requests running or queued, --max-concurrency "
                                    f"plus --max-queued-requests); retry after {self.retry_after.decode()} s",
                           "field": None}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", self.retry_after),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
