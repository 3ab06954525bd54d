"""The FastAPI app of one replica: /v1/edit, /v1/encode, /v1/decode, /v1/info, /health (no Ray needed here)."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cyclediff.serve import jobs, media, openapi, pix2pix_job
from cyclediff.serve.admission import Admission
from cyclediff.serve.body import read_fields
from cyclediff.serve.config import Limits
from cyclediff.serve.errors import Cancelled, RequestError, RequestTimeout
from cyclediff.serve.job_routes import add_job_routes
from cyclediff.serve.limit import BodyLimit
from cyclediff.serve.page import add_page
from cyclediff.serve.worker import EngineWorker

log = logging.getLogger("cyclediff.serve")
MAX_FORM_FIELDS = 64


def build_app(worker: EngineWorker, limits: Limits, retry_after_s: float = 1.0) -> FastAPI:
    """The HTTP API over one EngineWorker. Every user mistake is a 4xx JSON {"error", "field"}; past the
    worker's queue, 503 with Retry-After (retry_after_s, rounded up)."""
    engine, decoder = worker.engine, worker.decoder
    guided = pix2pix_job.guided(engine)
    dims = engine.manifest.dims
    side = dims.vae_scale * dims.unet_downscale  # pixels per latent cell that the UNet's downsampling needs
    app = FastAPI(title="cyclediff-serve", version="1", description=openapi.DESCRIPTION)
    _handlers(app)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info() -> dict:
        return _info(engine, limits, side) | {"decoder": _decoder_info(engine, decoder), "replica": worker.stats(),
                                              "methods": {"cycle": {}, "pix2pix-zero": {"guided": guided}}}

    @app.post("/v1/edit", openapi_extra=openapi.body("edit"), response_class=Response,
              responses=openapi.IMAGE_RESPONSES)
    async def edit(request: Request) -> Response:
        job = jobs.edit_job(*await read_fields(request, MAX_FORM_FIELDS), limits, decoder is not None, guided)
        images = await worker.run(lambda token: jobs.run_edit(engine, job, token, limits, side, decoder),
                                  job.timeout_s)
        return _images(images, job.output_format, job.seed)

    @app.post("/v1/encode", openapi_extra=openapi.body("encode"), response_class=Response,
              responses=openapi.CODE_RESPONSES)
    async def encode(request: Request) -> Response:
        job = jobs.encode_job(*await read_fields(request, MAX_FORM_FIELDS), limits)
        data = await worker.run(lambda token: jobs.run_encode(engine, job, token, limits, side), job.timeout_s)
        return Response(data, media_type="application/octet-stream", headers={
            "x-seed": str(job.seed), "content-disposition": 'attachment; filename="code.safetensors"'})

    @app.post("/v1/decode", openapi_extra=openapi.body("decode"), response_class=Response,
              responses=openapi.IMAGE_RESPONSES)
    async def decode(request: Request) -> Response:
        job = jobs.decode_job(*await read_fields(request, MAX_FORM_FIELDS), limits, decoder is not None)
        images = await worker.run(lambda token: jobs.run_decode(engine, job, token, decoder), job.timeout_s)
        return _images(images, job.output_format, None)

    add_job_routes(app, worker, limits, side, retry_after_s, MAX_FORM_FIELDS)
    add_page(app)
    app.add_middleware(Admission, worker=worker, retry_after_s=retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)  # added last, runs first: 413 before 503
    return app


def _images(images: list, fmt: str, seed: int | None) -> Response:
    """One image: its PNG (or .npy) bytes; several: JSON {"images": [base64, ...], "format", "seed"}."""
    data = [media.png_bytes(i) if fmt == "png" else media.npy_bytes(i) for i in images]
    headers = {"x-seed": str(seed)} if seed is not None else {}
    if len(data) == 1:
        return Response(data[0], media_type="image/png" if fmt == "png" else "application/x-npy", headers=headers)
    return JSONResponse({"images": [media.to_base64(d) for d in data], "format": fmt, "seed": seed},
                        headers=headers)


def _info(engine, limits: Limits, side: int) -> dict[str, Any]:
    import cyclediff

    m = engine.manifest
    return {
        "checkpoint": {k: m.checkpoint.get(k) for k in ("spec", "kind", "content_hash")},
        "engine_digest": m.digest, "schema_version": m.schema_version, "backend": engine.backend,
        "device": str(engine.device), "dtype": engine.config.dtype,
        "resolution": {"native": m.sample_size,
                       "side_multiple": side, "max_side": limits.max_side},
        "limits": {"max_body_bytes": limits.max_body_bytes, "max_prompts": limits.max_prompts,
                   "max_steps": limits.max_steps, "request_timeout_s": limits.request_timeout_s,
                   "job_results": limits.job_results, "job_ttl_s": limits.job_ttl_s},
        "settings": _settings(limits),
        "versions": {"cyclediff": cyclediff.__version__, **_versions()}, "export_tools": m.tools,
    }


def _settings(limits: Limits) -> dict[str, dict[str, Any]]:
    """Each edit setting's default and bounds (Engine.edit's; the page's sliders): min/max inclusive unless
    exclusive_min; guidance and eta have no upper bound (max: the page's slider end)."""
    from cyclediff import EditParams

    d = EditParams()
    return {"strength": {"default": d.strength, "min": 0, "max": 1, "exclusive_min": True},
            "num_inference_steps": {"default": d.num_inference_steps, "min": 1, "max": limits.max_steps},
            "guidance_scale": {"default": d.guidance_scale, "min": 0, "max": 20},
            "source_guidance_scale": {"default": d.source_guidance_scale, "min": 0, "max": 20},
            "eta": {"default": d.eta, "min": 0, "max": 1}}


def _decoder_info(engine, decoder) -> dict[str, Any] | None:
    """The second export requests may decode with (decoder=true), and what differs from the first's latent space."""
    if decoder is None:
        return None
    m = decoder.manifest
    return {"checkpoint": {k: m.checkpoint.get(k) for k in ("spec", "kind", "content_hash")},
            "engine_digest": m.digest, "differs": engine.space.differences(decoder.space)}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "onnxruntime", "ray", "fastapi"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def bad_request(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestTimeout)
    async def timed_out(_: Request, err: RequestTimeout) -> JSONResponse:
        return JSONResponse({"error": f"{err}; it was stopped. Raise timeout_s (up to the service's "
                                      "--request-timeout), ask for fewer steps, or retry later",
                             "field": "timeout_s"}, status_code=504)

    @app.exception_handler(Cancelled)
    async def cancelled(_: Request, err: Cancelled) -> JSONResponse:
        return JSONResponse({"error": "the request was cancelled", "field": None}, status_code=504)

    @app.exception_handler(ValueError)
    async def engine_refused(_: Request, err: ValueError) -> JSONResponse:
        # The Engine raises ValueError (ImageError, LatentCodeError, MemoryBudgetError) only for arguments it
        # cannot serve; its message names the argument and the fix.
        return JSONResponse({"error": str(err), "field": jobs.field_of(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_: Request, err: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse({"error": f"internal error ({type(err).__name__}); the request is safe to retry",
                             "field": None}, status_code=500)
