"""Read a request body (JSON, or multipart form with file uploads) into one dict of field -> value."""
from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from cyclediff.serve.errors import RequestError

FILE_FIELDS = ("image", "code")


async def read_fields(request: Request, max_fields: int) -> tuple[dict[str, Any], bool]:
    """-> (fields, from_form). File fields hold bytes; JSON files arrive as base64 text (decoded later)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return await _json(request), False
    if kind == "multipart/form-data":
        return await _form(request, max_fields), True
    raise RequestError(415, None, f"content type {kind or '(none)'!r} is not accepted; send application/json "
                                  "(image as base64) or multipart/form-data (image as a file)")


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, None, f"the body is not valid JSON ({err}); send one JSON object") from None
    if not isinstance(value, dict):
        raise RequestError(400, None, f"the body must be a JSON object of fields, got {type(value).__name__}")
    return value


async def _form(request: Request, max_fields: int) -> dict[str, Any]:
    try:
        form = await request.form(max_files=len(FILE_FIELDS), max_fields=max_fields)
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001 - starlette's MultiPartException, or a broken stream
        raise RequestError(400, None, f"the multipart body could not be read ({err})") from None
    fields: dict[str, Any] = {}
    for name in form:
        values = form.getlist(name)
        if name == "prompt":
            fields[name] = values if len(values) > 1 else values[0]  # a file here fails as "not a string"
        elif len(values) > 1:
            raise RequestError(422, name, f"{name} was sent {len(values)} times; send it once")
        else:
            fields[name] = await _value(values[0])
    await form.close()
    return fields


async def _value(value: Any) -> Any:
    if isinstance(value, UploadFile):
        return await value.read()
    return value
