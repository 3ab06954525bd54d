"""BodyLimit: an ASGI middleware that answers 413 past --max-body-mb, before or while the body streams in."""
from __future__ import annotations

import json

from cyclediff.serve.errors import RequestError


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply_413(send, self._error(int(declared)))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body without Content-Length: stop reading it here
                raise self._error(seen, streamed=True)
            return message

        return await self.app(scope, counted, send)

    def _error(self, size: int, streamed: bool = False) -> RequestError:
        mib = self.max_bytes / 2**20
        return RequestError(413, None, f"the body is {'over ' if streamed else ''}{size} bytes, more than the "
                                       f"service's limit of {mib:g} MiB (--max-body-mb); send a smaller image")


async def _reply_413(send, error: RequestError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
