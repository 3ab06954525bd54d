"""/v1/jobs: an edit that answers at once with an id, then its progress (GET, or a server-sent-events stream),
its pictures, and DELETE to cancel it. The same fields, rules and limits as /v1/edit (serve/jobs.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cyclediff.serve import jobs, media, openapi, pix2pix_job
from cyclediff.serve.body import read_fields
from cyclediff.serve.config import Limits
from cyclediff.serve.errors import Cancelled, RequestError, RequestTimeout
from cyclediff.serve.job_table import FINISHED, JobTable
from cyclediff.serve.worker import EngineWorker

log = logging.getLogger("cyclediff.serve")
EVENT_POLL_S = 0.1  # how often the events stream looks for news


def add_job_routes(app: FastAPI, worker: EngineWorker, limits: Limits, side: int, retry_after_s: float,
                   max_fields: int) -> JobTable:
    table = JobTable(limits.job_results, limits.job_ttl_s)
    running: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks

    @app.post("/v1/jobs", openapi_extra=openapi.body("edit"), status_code=202)
    async def submit(request: Request) -> JSONResponse:
        if not worker.admit():  # a job holds its place in the replica's queue until it ends
            return _full(worker, retry_after_s)
        try:
            job = jobs.edit_job(*await read_fields(request, max_fields), limits, worker.decoder is not None,
                                pix2pix_job.guided(worker.engine))
            record = table.add(jobs.decoder_steps(worker.engine, job), job.seed, job.output_format)
        except BaseException:
            worker.release()
            raise
        task = asyncio.create_task(_run(worker, table, record.id, record.token, job, limits, side))
        running.add(task)
        task.add_done_callback(running.discard)
        return JSONResponse(table.view(record.id), status_code=202, headers={"location": f"/v1/jobs/{record.id}"})

    @app.get("/v1/jobs/{job_id}")
    async def status(job_id: str) -> JSONResponse:
        return JSONResponse(_known(table.view(job_id), job_id, limits))

    @app.delete("/v1/jobs/{job_id}")
    async def cancel(job_id: str) -> JSONResponse:
        return JSONResponse(_known(table.cancel(job_id), job_id, limits))

    @app.get("/v1/jobs/{job_id}/images/{index}", response_class=Response)
    async def image(job_id: str, index: int) -> Response:
        found = table.image(job_id, index)
        if found is None:
            _known(table.view(job_id), job_id, limits)
            raise RequestError(404, "index", f"job {job_id} has no image {index} (yet)")
        data, fmt = found
        return Response(data, media_type="image/png" if fmt == "png" else "application/x-npy")

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        _known(table.view(job_id), job_id, limits)
        return StreamingResponse(_events(table, job_id, request), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    return table


async def _run(worker: EngineWorker, table: JobTable, job_id: str, token, job, limits: Limits, side: int) -> None:
    """The job on a worker thread, its outcome recorded; its queue place is given back at the end."""
    def body(token):
        table.started(job_id)
        return jobs.run_edit(worker.engine, job, token, limits, side, worker.decoder,
                             progress=lambda: table.advanced(job_id))

    try:
        images = await worker.run(body, job.timeout_s, token=token)
        encode = media.png_bytes if job.output_format == "png" else media.npy_bytes
        table.finish(job_id, images=[encode(i) for i in images])
    except Cancelled:
        table.finish(job_id, cancelled=True)
    except Exception as err:  # noqa: BLE001 - every failure is the job's outcome, reported by GET
        table.finish(job_id, error=_error(err))
    finally:
        worker.release()


def _error(err: Exception) -> dict:
    """The error as /v1/edit would have answered it: {"error", "field", "status"}."""
    if isinstance(err, RequestError):
        return {**err.body(), "status": err.status}
    if isinstance(err, RequestTimeout):
        return {"error": f"{err}; it was stopped", "field": "timeout_s", "status": 504}
    if isinstance(err, ValueError):
        return {"error": str(err), "field": jobs.field_of(err), "status": 422}
    log.exception("job failed", exc_info=err)
    return {"error": f"internal error ({type(err).__name__}); the job is safe to submit again", "field": None,
            "status": 500}


async def _events(table: JobTable, job_id: str, request: Request):
    """`data: {job view}` whenever it changes, until it has finished (or the client has gone)."""
    last = None
    while not await request.is_disconnected():
        view = table.view(job_id)
        if view is None:
            return
        if view != last:
            yield f"data: {json.dumps(view)}\n\n"
            last = view
        if view["state"] in FINISHED:
            return
        await asyncio.sleep(EVENT_POLL_S)


def _known(view: dict | None, job_id: str, limits: Limits) -> dict:
    if view is None:
        raise RequestError(404, "id", f"no job {job_id!r} on this replica: jobs live in the replica that took "
                                      f"them, are lost when it restarts, and are kept {limits.job_ttl_s:g} s (at "
                                      f"most {limits.job_results}) after they finish")
    return view


def _full(worker: EngineWorker, retry_after_s: float) -> JSONResponse:
    retry = str(max(0, math.ceil(retry_after_s)))
    return JSONResponse({"error": f"the replica is full ({worker.capacity} requests running or queued, "
                                  f"--max-concurrency plus --max-queued-requests); retry after {retry} s",
                         "field": None}, status_code=503, headers={"retry-after": retry})
