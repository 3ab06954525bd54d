"""cyclediff.client: a small HTTP client of cyclediff-serve (needs httpx: `pip install 'cyclediff[serve]'`)."""
from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import PIL.Image

RETRY_STATUSES = (500, 502, 503)  # a full queue, or a replica that died mid-request (edits are deterministic)


class ServiceError(Exception):
    """A non-2xx answer: status, the field it names (or None) and the service's message."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"{status}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.message, self.field = status, message, field


class Client:
    """Client("http://127.0.0.1:8000").edit(image, "a house", "a castle", seed=0) -> PIL image.

    image: a PIL image, a path, or the bytes of an image file. Settings carry diffusers' names; those left None
    take the service's (= Engine.edit's) defaults. 500/502/503 answers are retried `retries` times, after the
    service's Retry-After (edits with a seed are deterministic, so a retry returns the same picture)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 300.0, retries: int = 3,
                 http: httpx.Client | None = None):
        # http: an httpx.Client to send through instead (e.g. FastAPI's TestClient); url and timeout then unused
        self._http = http if http is not None else httpx.Client(base_url=url, timeout=timeout)
        self.retries = retries

    def __enter__(self):
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict:
        return self._json(self._send("GET", "/health"))

    def info(self) -> dict:
        return self._json(self._send("GET", "/v1/info"))

    def edit(self, image, source_prompt: str, prompt: str | list[str], *, strength: float | None = None,
             num_inference_steps: int | None = None, guidance_scale: float | None = None,
             source_guidance_scale: float | None = None, eta: float | None = None, seed: int | None = None,
             output_format: str = "png", timeout_s: float | None = None, decoder: bool | None = None):
        """One prompt: a PIL image (output_format 'npy': a float32 (H, W, 3) array). A list: a list of them.
        decoder=True: decoded by the service's second export (cyclediff-serve --decoder-engine)."""
        fields = _fields(source_prompt=source_prompt, prompt=prompt, strength=strength,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         source_guidance_scale=source_guidance_scale, eta=eta, seed=seed,
                         output_format=output_format, timeout_s=timeout_s, decoder=decoder)
        response = self._send("POST", "/v1/edit", data=fields, files={"image": ("image", _image_bytes(image))})
        return _images(response, output_format, isinstance(prompt, list))

    def encode(self, image, source_prompt: str, *, strength: float | None = None,
               num_inference_steps: int | None = None, source_guidance_scale: float | None = None,
               eta: float | None = None, seed: int | None = None, timeout_s: float | None = None) -> bytes:
        """The latent code file's bytes (LatentCode.save's format: write them to a file, or pass to decode)."""
        fields = _fields(source_prompt=source_prompt, strength=strength, num_inference_steps=num_inference_steps,
                         source_guidance_scale=source_guidance_scale, eta=eta, seed=seed, timeout_s=timeout_s)
        return self._send("POST", "/v1/encode", data=fields,
                          files={"image": ("image", _image_bytes(image))}).content

    def decode(self, code: bytes | str | Path, prompt: str | list[str], *, guidance_scale: float | None = None,
               output_format: str = "png", timeout_s: float | None = None, decoder: bool | None = None):
        data = code if isinstance(code, bytes) else Path(code).read_bytes()
        fields = _fields(prompt=prompt, guidance_scale=guidance_scale, output_format=output_format,
                         timeout_s=timeout_s, decoder=decoder)
        response = self._send("POST", "/v1/decode", data=fields, files={"code": ("code", data)})
        return _images(response, output_format, isinstance(prompt, list))

    def submit(self, image, source_prompt: str, prompt: str | list[str], **settings: Any) -> str:
        """POST /v1/jobs: the edit's job id, at once (settings: edit's keyword arguments). Jobs live in the
        replica that took them; with several replicas, status/wait may reach another one (404)."""
        fields = _fields(source_prompt=source_prompt, prompt=prompt, **settings)
        response = self._send("POST", "/v1/jobs", data=fields, files={"image": ("image", _image_bytes(image))})
        return response.json()["id"]

    def status(self, job_id: str) -> dict:
        """GET /v1/jobs/{id}: {"state", "step", "steps", "seed", ...}."""
        return self._json(self._send("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict:
        """DELETE /v1/jobs/{id}: the job stops at its next model call; returns its status."""
        return self._json(self._send("DELETE", f"/v1/jobs/{job_id}"))

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.2):
        """The finished job's images (one image: it alone; several: a list), as edit returns them. A failed or
        cancelled job raises ServiceError with its error; past timeout_s, TimeoutError (the job keeps running)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view = self.status(job_id)
            if view["state"] == "done":
                images = [_one(self._send("GET", url).content, view["format"]) for url in view["images"]]
                return images[0] if len(images) == 1 else images
            if view["state"] in ("failed", "cancelled"):
                error = view.get("error") or {"error": "the job was cancelled", "field": None, "status": 409}
                raise ServiceError(error["status"], error["error"], error["field"])
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {job_id} is still {view['state']} after {timeout_s} s")
            time.sleep(poll_s)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                break
            time.sleep(_retry_after(response, attempt))
        if response.is_success:
            return response
        raise _error(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict:
        return response.json()


def _fields(**values: Any) -> dict[str, Any]:
    """Multipart form fields: None means 'the service's default' (not sent); lists repeat the field."""
    return {k: (v if isinstance(v, list) else str(v)) for k, v in values.items() if v is not None}


def _image_bytes(image) -> bytes:
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, PIL.Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"image must be a PIL image, a path or bytes, got {type(image).__name__}")


def _images(response: httpx.Response, fmt: str, many: bool):
    if response.headers.get("content-type", "").startswith("application/json"):
        items = [_one(base64.b64decode(b), fmt) for b in response.json()["images"]]
    else:
        items = [_one(response.content, fmt)]
    return items if many else items[0]


def _one(data: bytes, fmt: str):
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
    return image


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return min(8.0, 0.5 * 2**attempt)


def _error(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
        return ServiceError(response.status_code, str(body.get("error", body)), body.get("field"))
    except ValueError:
        return ServiceError(response.status_code, response.text.strip() or response.reason_phrase)
