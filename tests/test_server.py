"""`aiproject serve` on real sockets: every surface in one process, one surface, port errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiproject.config import Settings, Surface
from tests.support.ports import free_port

PORT_ENV = {
    Surface.TOOLS: "AIPROJECT_SURFACES__TOOLS__PORT",
    Surface.ASSISTANT_WS: "AIPROJECT_SURFACES__ASSISTANT_WS__PORT",
    Surface.ASSISTANT_HTTP: "AIPROJECT_SURFACES__ASSISTANT_HTTP__PORT",
    Surface.HTTP: "AIPROJECT_SURFACES__HTTP__PORT",
    Surface.AVATAR: "AIPROJECT_SURFACES__AVATAR__PORT",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPROJECT_")}
    env["AIPROJECT_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def _wait_health(port: int, timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            value: dict[str, str] = reply.json()
            return value
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def serve_all(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[Surface, int]]]:
    ports = {surface: free_port() for surface in Surface}
    env = _env(tmp_path, **{PORT_ENV[s]: str(p) for s, p in ports.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiproject.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, ports
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_serve_runs_every_surface_in_one_process_and_stops_on_sigterm(
    serve_all: tuple[subprocess.Popen[str], dict[Surface, int]], tmp_path: Path
) -> None:
    proc, ports = serve_all
    for surface, port in ports.items():
        assert _wait_health(port) == {"status": "ok", "surface": surface.value, "version": "0.1.0"}
    # Migrations ran at start: the SQLite file exists in the data dir.
    assert (tmp_path / "data" / "aiproject.db").is_file()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "serving surface=http" in stderr
    assert "Traceback" not in stderr


def test_serve_only_one_surface(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiproject.cli", "serve", "--only", "avatar"],
        env=_env(tmp_path, AIPROJECT_SURFACES__AVATAR__PORT=str(port)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_health(port)["surface"] == "avatar"
        other = free_port()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{other}/health", timeout=1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "aiproject.cli", "serve", "--only", "http"],
            env=_env(
                tmp_path,
                AIPROJECT_SURFACES__HTTP__PORT=str(port),
                AIPROJECT_SURFACES__HTTP__HOST="127.0.0.1",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot bind 127.0.0.1:{port}: already in use" in result.stderr
    assert "Traceback" not in result.stderr


# Run without CAP_NET_BIND_SERVICE, as an unprivileged deployment would.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service"]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("setpriv") is None
    or int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 444,
    reason="needs root with setpriv to drop the capability, and 444 to be privileged",
)


@needs_root
def test_default_port_444_falls_back_with_one_warning_when_unprivileged(tmp_path: Path) -> None:
    fallback = free_port()
    proc = subprocess.Popen(
        [*UNPRIVILEGED, sys.executable, "-m", "aiproject.cli", "serve", "--only", "assistant_ws"],
        env=_env(tmp_path, AIPROJECT_SURFACES__ASSISTANT_WS_FALLBACK_PORT=str(fallback)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_health(fallback)["surface"] == "assistant_ws"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    warnings = [line for line in stderr.splitlines() if "level=warning" in line]
    assert len(warnings) == 1
    assert "setcap cap_net_bind_service" in warnings[0]
    assert f"on {fallback} instead" in warnings[0]


@needs_root
def test_explicit_privileged_port_is_an_error_when_unprivileged(tmp_path: Path) -> None:
    result = subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-m", "aiproject.cli", "serve", "--only", "assistant_ws"],
        env=_env(tmp_path, AIPROJECT_SURFACES__ASSISTANT_WS__PORT="444"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "need root or CAP_NET_BIND_SERVICE" in result.stderr


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiproject.cli", "serve", "--only", "http"],
        env=_env(
            tmp_path,
            AIPROJECT_SURFACES__HTTP__PORT=str(free_port()),
            AIPROJECT_DATABASE_URL=f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/x",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot open the database 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


async def test_preload_loads_every_configured_engine(settings: Settings) -> None:
    from aiproject.context import AppContext
    from aiproject.engines.registry import Kind
    from aiproject.server import preload

    ctx = await AppContext.open(settings)
    try:
        assert ctx.engines.loaded == {}
        await preload(ctx)
        assert set(ctx.engines.loaded) == set(Kind) - {Kind.VISION}
    finally:
        await ctx.aclose()
