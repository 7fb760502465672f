"""One streamed HTTP response for every surface: disconnect-aware, producer always closed.

Starlette notices a client that went away only on its next write (ASGI 2.4), and an answer
can be silent for seconds (a model thinking, a download). :class:`EventStream` watches for
``http.disconnect`` all the time, stops its producer at once when it comes, and closes the
producer in every case, shielded from cancellation, so that generation stops, work is billed
and resources are freed however the response ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aiproject.api.wire.sse import SSE_HEADERS

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
# How many encoded chunks the producer may run ahead of a slow client.
_BUFFERED_CHUNKS = 32


async def aclose_if_present(resource: object) -> None:
    """Call ``await resource.aclose()`` if it has one (async generators, streams, clients)."""
    close = getattr(resource, "aclose", None)
    if close is not None:
        await close()


class EventStream(Response):
    """Stream the chunks an async iterable yields, until it ends or the client goes away.

    The iterable yields encoded chunks and makes its own error events: once the status line
    is sent, an exception can only end the stream (it is logged). The iterable runs in a task
    of its own, is cancelled once when the client goes away (so its cleanup may await), and
    its ``aclose`` (if any) is always awaited under a shielded cancel scope.

    Args:
        content: the producer of encoded chunks.
        media_type: ``text/event-stream`` (the default), ``application/x-ndjson``, ...
        headers: extra headers; the default asks proxies not to buffer or cache.
        status_code: the HTTP status sent first.
        keepalive: a chunk sent whenever the producer has been quiet for ``keepalive_s``
            seconds (``b": ping\\n\\n"`` for SSE), or None for none.
        keepalive_s: the quiet time before a keepalive.
        label: names the stream in logs (``"lingxi session=..."``).
    """

    media_type = EVENT_STREAM  # what OpenAPI documents for a route answering with this class

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        media_type: str = EVENT_STREAM,
        headers: Mapping[str, str] | None = SSE_HEADERS,
        status_code: int = 200,
        keepalive: bytes | None = None,
        keepalive_s: float | None = None,
        label: str = "stream",
    ) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self.content = content
        self.keepalive = keepalive
        self.keepalive_s = keepalive_s if keepalive is not None else None
        self.label = label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream while watching for the client's disconnect."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_BUFFERED_CHUNKS)
        producer = asyncio.create_task(self._produce(chunks))
        gone = asyncio.create_task(_disconnected(receive))
        next_chunk: asyncio.Task[bytes | None] | None = None
        try:
            while True:
                next_chunk = next_chunk or asyncio.create_task(chunks.get())
                done, _ = await asyncio.wait(
                    {next_chunk, gone}, timeout=self.keepalive_s, return_when="FIRST_COMPLETED"
                )
                if gone in done:
                    log.info("%s: client went away", self.label)
                    return
                if next_chunk not in done:
                    await self._send_body(send, self.keepalive or b"")
                    continue
                chunk, next_chunk = next_chunk.result(), None
                if chunk is None:
                    break
                await self._send_body(send, chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the server could not write: the client is gone
            log.info("%s: client connection lost", self.label)
        finally:
            pending = [t for t in (producer, gone, next_chunk) if t is not None]
            for task in pending:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    async def _send_body(send: Send, chunk: bytes) -> None:
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _produce(self, chunks: asyncio.Queue[bytes | None]) -> None:
        try:
            try:
                async for chunk in self.content:
                    await chunks.put(chunk)
            except Exception:  # the producer should have sent an error event; end the stream
                log.exception("%s: the producer failed", self.label)
        finally:
            with anyio.CancelScope(shield=True):
                await aclose_if_present(self.content)
        await chunks.put(None)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
