"""A tiny real HTTP server for tests that stand in for services outside this process.

Handlers are plain functions ``(request) -> Reply``; a reply either has a body or yields
chunks (for SSE and chunked streams). Every request is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    """What the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What to send back."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunks: Iterable[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        """Return a JSON reply."""
        return cls(status=status, body=json.dumps(value).encode())

    @classmethod
    def sse(cls, events: Iterable[Any], *, done: bool = True) -> Reply:
        """Return an OpenAI-style SSE stream of JSON events."""

        def gen() -> Iterator[bytes]:
            for event in events:
                yield f"data: {json.dumps(event)}\n\n".encode()
            if done:
                yield b"data: [DONE]\n\n"

        return cls(content_type="text/event-stream", chunks=gen())


Handler = Callable[[Request], Reply]


class FakeHTTPServer:
    """Serves ``routes`` on 127.0.0.1 at a free port in a background thread."""

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self.requests: list[Request] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                outer.requests.append(request)
                handler = outer.routes.get((self.command, self.path.split("?")[0]))
                reply = handler(request) if handler else Reply.json({"error": "no route"}, 404)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.chunks is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in reply.chunks:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

            do_GET = _handle
            do_POST = _handle

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                return  # a client hanging up mid-reply is normal in streaming tests

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
