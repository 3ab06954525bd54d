"""The Ray Serve deployment: each replica loads one Engine and serves the FastAPI app over it (imports Ray)."""
from __future__ import annotations

import dataclasses
from typing import Any

from ray import serve

from cyclediff.serve.app import build_app
from cyclediff.serve.config import EngineSpec, Limits, Scaling
from cyclediff.serve.load_error import ReplicaLoadError
from cyclediff.serve.worker import EngineWorker

APP_NAME = "cyclediff"


@serve.deployment(name="EditServer", health_check_period_s=5, graceful_shutdown_timeout_s=10,
                  max_constructor_retry_count=3)
@serve.ingress()
class EditServer:
    """One Engine per replica, called concurrently by up to spec.max_concurrency requests, with up to
    scaling.max_queued_requests more waiting in the replica; past that the replica answers 503 (serve/admission.py).
    """

    def __init__(self, spec: EngineSpec, limits: Limits, scaling: Scaling):
        import cyclediff  # sets OMP_WAIT_POLICY before torch is imported

        try:
            engine = cyclediff.Engine.load(spec.folder, **spec.load_kwargs())
        except Exception as err:  # noqa: BLE001 - any load error becomes the one line the command shows
            raise ReplicaLoadError.of(spec.folder, err) from err
        decoder = None
        if spec.decoder_engine is not None:
            try:
                decoder = cyclediff.Engine.load(spec.decoder_engine, **spec.load_kwargs())
            except Exception as err:  # noqa: BLE001 - as above
                raise ReplicaLoadError.of(spec.decoder_engine, err) from err
        self.worker = EngineWorker(engine, spec.max_concurrency, scaling.max_queued_requests, decoder)
        self.limits, self.retry_after_s = limits, scaling.retry_after_s

    def __serve_build_asgi_app__(self):
        return build_app(self.worker, self.limits, self.retry_after_s)

    def check_health(self) -> None:
        """Serve calls this every 5 s; a replica whose worker threads are gone is replaced."""
        if self.worker.closed:
            raise RuntimeError("the replica's worker threads are shut down")

    def __del__(self):
        worker = getattr(self, "worker", None)  # None when the Engine failed to load
        if worker is not None:
            worker.close()


def application(spec: EngineSpec, limits: Limits, scaling: Scaling):
    """The bound application that `serve.run` deploys."""
    return EditServer.options(**scaling.deployment_options(spec.max_concurrency)).bind(spec, limits, scaling)


def build(args: dict[str, Any]):
    """Application builder for `serve run` / `serve deploy` (serve.yaml): `args` holds the fields of EngineSpec
    (`engine` names the export folder), Limits and Scaling, with the same names as cyclediff-serve's flags."""
    args = dict(args)
    if "engine" not in args:
        raise ValueError("args.engine is required: the export directory made by cyclediff-export")
    args["folder"] = args.pop("engine")
    parts = [_pick(cls, args) for cls in (EngineSpec, Limits, Scaling)]
    if args:
        raise ValueError(f"unknown args {sorted(args)}; known: engine and the fields of EngineSpec, Limits, Scaling")
    return application(*parts)


def _pick(cls, args: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: args.pop(k) for k in list(args) if k in names})
