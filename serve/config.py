"""Frozen configurations of the service: what a replica loads, what a request may ask, how replicas scale."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

SERVE_UNBOUNDED = -1  # Ray Serve's max_queued_requests: no limit of its own


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """What each replica passes to `Engine.load` (one Engine per replica, shared by its concurrent requests)."""

    folder: str
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None  # None: the Engine's default (Ray sets OMP_NUM_THREADS to the replica's CPUs)
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    # Requests a replica runs at once: the Engine's max_concurrency AND Serve's max_ongoing_requests, so that a
    # request Serve hands to the replica never waits inside it for an Engine slot.
    max_concurrency: int = 8
    # A second export each replica loads (a fine-tune of `folder`'s checkpoint): requests with decoder=true are
    # decoded by it (translation between two models); None: no second export.
    decoder_engine: str | None = None

    def load_kwargs(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype, "threads": self.threads,
                "max_batch": self.max_batch, "batch_wait_ms": self.batch_wait_ms,
                "max_concurrency": self.max_concurrency, "progress": False}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for; past a limit the request gets a 4xx naming the limit."""

    max_body_bytes: int = 16 * 2**20
    max_side: int = 2048  # pixels, either side of an uploaded image
    max_prompts: int = 8
    max_prompt_chars: int = 2000
    max_steps: int = 1000
    request_timeout_s: float = 300.0
    job_results: int = 64  # finished jobs (POST /v1/jobs) kept per replica; the oldest are dropped first
    job_ttl_s: float = 600.0  # and for at most this long after they finish

    def __post_init__(self):
        for name in ("max_body_bytes", "max_side", "max_prompts", "max_prompt_chars", "max_steps", "job_results"):
            _positive(name, getattr(self, name), integer=True)
        _positive("request_timeout_s", self.request_timeout_s)
        _positive("job_ttl_s", self.job_ttl_s)


@dataclasses.dataclass(frozen=True)
class Scaling:
    """Replicas and their resources; autoscaling when min_replicas/max_replicas are given."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 4.0
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica; fractions let several replicas share one GPU
    max_queued_requests: int = 32  # per replica, beyond the running ones; past it: 503 + Retry-After
    retry_after_s: float = 1.0

    def __post_init__(self):
        _positive("replicas", self.replicas, integer=True)
        auto = (self.min_replicas, self.max_replicas)
        if (auto[0] is None) != (auto[1] is None):
            raise ValueError("give both --min-replicas and --max-replicas for autoscaling, or neither")
        if auto[0] is not None and not 0 <= auto[0] <= auto[1]:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {auto[0]} and {auto[1]}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("num_cpus and num_gpus per replica must be >= 0")
        _positive("max_queued_requests", self.max_queued_requests, integer=True)
        _positive("target_ongoing_requests", self.target_ongoing_requests)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    def most_replicas(self) -> int:
        return self.max_replicas if self.autoscaling else self.replicas  # type: ignore[return-value]

    def deployment_options(self, max_concurrency: int) -> dict[str, Any]:
        """Keyword arguments of Ray Serve's `Deployment.options`. The replica holds the exact queue (admission.py);
        Serve may hand it twice that, so that a burst's overflow reaches the replica and is refused there at once,
        as JSON with Retry-After. Serve's own queue limit stays off (-1): its router counts a request as queued
        while it picks a replica, so under a burst it refused requests the replica had room for, in plain text.
        Past 2 * capacity a request waits in the proxy only until the replica's next refusal frees a place."""
        actor = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        capacity = max_concurrency + self.max_queued_requests
        options: dict[str, Any] = {"max_ongoing_requests": 2 * capacity, "max_queued_requests": SERVE_UNBOUNDED,
                                   "ray_actor_options": actor}
        if self.autoscaling:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": self.target_ongoing_requests}
        else:
            options["num_replicas"] = self.replicas
        return options


def _positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} > 0, got {value!r}")
