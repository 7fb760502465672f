"""Free TCP ports for tests that serve on real sockets."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a TCP port that is free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
