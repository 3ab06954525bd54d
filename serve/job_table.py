"""JobTable: a replica's jobs (POST /v1/jobs), their progress and their results, in memory.

Jobs live in the replica that took them, and are lost when it restarts: a job id another replica made, or one
from before a restart, is unknown here (404). Finished jobs are kept for `ttl_s` seconds and at most `keep` of
them (the oldest go first); running and queued ones are bounded by the replica's queue (EngineWorker.capacity).
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from typing import Any

from cyclediff.serve.worker import CancelToken

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")


@dataclasses.dataclass
class JobRecord:
    """One job. Mutable: only JobTable touches it, under its lock."""

    id: str
    steps: int  # decoder steps in all: prompts x the schedule's steps
    seed: int
    output_format: str
    token: CancelToken
    state: str = "queued"
    step: int = 0
    created: float = dataclasses.field(default_factory=time.monotonic)
    finished: float | None = None
    error: dict[str, Any] | None = None  # {"error": message, "field": name or None, "status": HTTP status}
    images: list[bytes] | None = None  # PNG or .npy bytes, one per prompt


class JobTable:
    """Locking rule: every JobRecord is read and written under self._lock only (worker threads report progress,
    the event loop reads and cancels)."""

    def __init__(self, keep: int = 64, ttl_s: float = 600.0):
        self.keep, self.ttl_s = keep, ttl_s
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}

    def add(self, steps: int, seed: int, output_format: str) -> JobRecord:
        with self._lock:
            self._expire()
            job = JobRecord(secrets.token_urlsafe(12), steps, seed, output_format, CancelToken())
            self._jobs[job.id] = job
            return job

    def view(self, job_id: str) -> dict[str, Any] | None:
        """What GET /v1/jobs/{id} answers, or None for an unknown (or expired) id."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
            return None if job is None else _view(job)

    def image(self, job_id: str, index: int) -> tuple[bytes, str] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.images is None or not 0 <= index < len(job.images):
                return None
            return job.images[index], job.output_format

    def started(self, job_id: str) -> None:
        self._set(job_id, lambda j: setattr(j, "state", "running") if j.state == "queued" else None)

    def advanced(self, job_id: str) -> None:
        """One decoder step done (the Engine's callback, on the worker thread)."""
        self._set(job_id, lambda j: setattr(j, "step", min(j.steps, j.step + 1)))

    def finish(self, job_id: str, images: list[bytes] | None = None, error: dict | None = None,
               cancelled: bool = False) -> None:
        def end(j: JobRecord) -> None:
            j.state = "cancelled" if cancelled else "failed" if error is not None else "done"
            j.images, j.error, j.finished = images, error, time.monotonic()
            if images is not None:
                j.step = j.steps

        self._set(job_id, end)

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Stop the job at its next model call (a queued one never starts); None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state in ACTIVE:
                job.token.cancel()
            return _view(job)

    def _set(self, job_id: str, change) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                change(job)

    def _expire(self) -> None:
        """Drop finished jobs past ttl_s, then the oldest finished ones beyond `keep` (the lock is held)."""
        now = time.monotonic()
        done = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: j.finished)
        for i, job in enumerate(done):
            if now - job.finished > self.ttl_s or i < len(done) - self.keep:
                del self._jobs[job.id]


def _view(job: JobRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"id": job.id, "state": job.state, "step": job.step, "steps": job.steps,
                           "seed": job.seed, "cancelling": job.state in ACTIVE and job.token.cancelled}
    if job.error is not None:
        out["error"] = dict(job.error)  # {"error", "field", "status": what /v1/edit would have answered}
    if job.images is not None:
        out["images"] = [f"/v1/jobs/{job.id}/images/{k}" for k in range(len(job.images))]
        out["format"] = job.output_format
    return out
