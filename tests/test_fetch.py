"""Safe URL fetching: every refusal class, limits, timeouts, redirects and data: URLs."""

from __future__ import annotations

import asyncio
import base64
import gzip
import ipaddress
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest

from aiproject.config import FetchSettings
from aiproject.fetch import (
    AddressClass,
    FetchCode,
    Fetched,
    FetchError,
    FetchPolicy,
    check_address,
    classify_address,
    fetch,
)
from tests.support.http_server import FakeHTTPServer, Handler, Reply, Request
from tests.support.ports import free_port

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
LOOPBACK_OK = FetchPolicy(allow_loopback=True, connect_timeout_s=2, read_timeout_s=2)


async def get(url: str, policy: FetchPolicy = LOOPBACK_OK) -> Fetched:
    """Fetch with a test-wide deadline."""
    async with asyncio.timeout(15):
        return await fetch(url, policy)


async def refused(url: str, policy: FetchPolicy = LOOPBACK_OK) -> FetchError:
    """Fetch and return the error it must raise."""
    with pytest.raises(FetchError) as caught:
        await get(url, policy)
    return caught.value


def image(_request: Request) -> Reply:
    return Reply(body=PNG, content_type="image/png")


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    routes: dict[tuple[str, str], Handler] = {("GET", "/cat.png"): image}
    with FakeHTTPServer(routes) as fake:
        yield fake


# -- what is fetched -------------------------------------------------------------------------


async def test_fetches_an_image_over_http(server: FakeHTTPServer) -> None:
    got = await get(server.base_url + "/cat.png")
    assert got.body == PNG
    assert got.content_type == "image/png"
    assert got.redirects == 0


async def test_connects_to_the_checked_address_and_keeps_the_host_name(
    server: FakeHTTPServer,
) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    got = await get(f"http://localhost:{port}/cat.png")
    assert got.body == PNG
    assert got.url == f"http://localhost:{port}/cat.png"
    assert server.requests[-1].headers["host"] == f"localhost:{port}"


async def test_follows_redirects_and_checks_each_hop(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/r1")] = lambda _r: Reply(status=302, headers={"Location": "/cat.png"})
    got = await get(server.base_url + "/r1")
    assert got.body == PNG
    assert got.redirects == 1
    assert got.url.endswith("/cat.png")


# -- refusals before any connection ------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "javascript:alert(1)"]
)
async def test_only_http_and_https(url: str) -> None:
    assert (await refused(url)).code == FetchCode.SCHEME


async def test_url_without_host() -> None:
    assert (await refused("http:///cat.png")).code == FetchCode.BAD_URL


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.8.9.10", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),  # IPv4-mapped
        ("64:ff9b::7f00:1", AddressClass.LOOPBACK),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::1", AddressClass.LOOPBACK),  # 6to4 of 127.0.0.1
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fd12:3456::1", AddressClass.PRIVATE),
        ("192.0.2.1", AddressClass.PRIVATE),  # documentation range: not routable
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("100.64.0.1", AddressClass.CGNAT),
        ("169.254.169.254", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("100.100.100.200", AddressClass.METADATA),
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("240.0.0.1", AddressClass.RESERVED),
        ("93.184.215.14", None),
        ("2606:4700::6810:84e5", None),
    ],
)
def test_address_classes(address: str, kind: AddressClass | None) -> None:
    assert classify_address(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "localhost",
        "2130706433",  # 127.0.0.1 as one decimal number
        "10.0.0.1",
        "192.168.0.10",
        "[fd00::1]",
        "169.254.10.10",
        "[fe80::1]",
        "100.64.1.1",
        "169.254.169.254",
        "[fd00:ec2::254]",
        "[::ffff:10.0.0.1]",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
async def test_non_public_addresses_are_refused_by_default(host: str) -> None:
    err = await refused(f"http://{host}:9/x.png", FetchPolicy())
    assert err.code == FetchCode.BLOCKED


def test_policy_opens_only_what_it_names() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    private = ipaddress.ip_address("10.0.0.1")
    metadata = ipaddress.ip_address("169.254.169.254")
    check_address(loopback, FetchPolicy(allow_loopback=True))
    with pytest.raises(FetchError):
        check_address(private, FetchPolicy(allow_loopback=True))
    check_address(private, FetchPolicy(allow_private=True))
    check_address(loopback, FetchPolicy(allow_private=True))
    for policy in (FetchPolicy(allow_private=True, allow_loopback=True), FetchPolicy()):
        with pytest.raises(FetchError) as caught:
            check_address(metadata, policy)
        assert caught.value.code == FetchCode.BLOCKED


def test_policy_from_settings() -> None:
    policy = FetchPolicy.from_settings(
        FetchSettings(allow_loopback=True, connect_timeout_s=1, read_timeout_s=2, max_redirects=1),
        max_bytes=1234,
    )
    assert policy.allow_loopback and not policy.allow_private
    assert (policy.connect_timeout_s, policy.read_timeout_s) == (1, 2)
    assert policy.total_timeout_s == 6
    assert (policy.max_redirects, policy.max_bytes) == (1, 1234)


# -- refusals along the way --------------------------------------------------------------------


async def test_redirect_to_a_private_address_is_refused(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/away")] = lambda _r: Reply(
        status=302, headers={"Location": "http://10.0.0.5/cat.png"}
    )
    assert (await refused(server.base_url + "/away")).code == FetchCode.BLOCKED
    assert [r.path for r in server.requests] == ["/away"]


async def test_redirect_to_a_metadata_address_is_refused(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/meta")] = lambda _r: Reply(
        status=307, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    assert (await refused(server.base_url + "/meta")).code == FetchCode.BLOCKED


async def test_too_many_redirects(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/loop")] = lambda _r: Reply(status=301, headers={"Location": "/loop"})
    policy = FetchPolicy(allow_loopback=True, max_redirects=2)
    assert (await refused(server.base_url + "/loop", policy)).code == FetchCode.REDIRECTS
    assert len(server.requests) == 3


async def test_redirect_without_location(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/bare")] = lambda _r: Reply(status=302)
    assert (await refused(server.base_url + "/bare")).code == FetchCode.PROTOCOL


async def test_http_error_status(server: FakeHTTPServer) -> None:
    err = await refused(server.base_url + "/missing.png")
    assert err.code == FetchCode.HTTP_STATUS
    assert "404" in err.message


async def test_declared_oversize_body_is_refused_unread(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/big")] = lambda _r: Reply(body=b"x" * 5000, content_type="image/png")
    policy = FetchPolicy(allow_loopback=True, max_bytes=4096)
    assert (await refused(server.base_url + "/big", policy)).code == FetchCode.TOO_LARGE


async def test_streamed_oversize_body_stops_early(server: FakeHTTPServer) -> None:
    abandoned = threading.Event()

    def endless(_request: Request) -> Reply:
        def chunks() -> Iterator[bytes]:
            try:
                while True:  # never ends: only the client hanging up stops it
                    yield b"y" * 1024
            finally:
                abandoned.set()

        return Reply(content_type="image/png", chunks=chunks())

    server.routes[("GET", "/endless")] = endless
    policy = FetchPolicy(allow_loopback=True, max_bytes=20 * 1024)
    assert (await refused(server.base_url + "/endless", policy)).code == FetchCode.TOO_LARGE
    # The endless body can only stop because the fetch hung up on it.
    assert await asyncio.to_thread(abandoned.wait, 30)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _gzip_bomb(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)


async def test_compressed_body_is_bounded_while_it_inflates(server: FakeHTTPServer) -> None:
    bomb = _gzip_bomb(200 * 1024 * 1024)  # ~200 KB on the wire, 200 MB inflated
    server.routes[("GET", "/bomb")] = lambda _r: Reply(
        body=bomb, content_type="image/png", headers={"Content-Encoding": "gzip"}
    )
    policy = FetchPolicy(allow_loopback=True, max_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        err = await refused(server.base_url + "/bomb", policy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.code == FetchCode.TOO_LARGE
    # Inflating a whole 64 KB network chunk at once would allocate ~64 MB.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),
    ],
)
async def test_compressed_bodies_are_inflated(
    server: FakeHTTPServer, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    body = PNG * 300
    server.routes[("GET", "/z")] = lambda _r: Reply(
        body=compress(body), content_type="image/png", headers={"Content-Encoding": encoding}
    )
    got = await get(server.base_url + "/z")
    assert got.body == body
    assert server.requests[-1].headers["accept-encoding"] == "gzip, deflate"


async def test_inflated_body_just_under_the_limit_passes(server: FakeHTTPServer) -> None:
    server.routes[("GET", "/edge")] = lambda _r: Reply(
        body=gzip.compress(b"a" * 4096), headers={"Content-Encoding": "gzip"}
    )
    got = await get(server.base_url + "/edge", FetchPolicy(allow_loopback=True, max_bytes=4096))
    assert got.body == b"a" * 4096
    err = await refused(server.base_url + "/edge", FetchPolicy(allow_loopback=True, max_bytes=4095))
    assert err.code == FetchCode.TOO_LARGE


@pytest.mark.parametrize(
    ("encoding", "body"), [("br", b"\x1b\x00"), ("gzip", b"not gzip at all"), ("gzip, gzip", b"")]
)
async def test_unasked_or_corrupt_encodings_are_refused(
    server: FakeHTTPServer, encoding: str, body: bytes
) -> None:
    server.routes[("GET", "/enc")] = lambda _r: Reply(
        body=body, headers={"Content-Encoding": encoding}
    )
    assert (await refused(server.base_url + "/enc")).code == FetchCode.PROTOCOL


async def test_slow_server_times_out(server: FakeHTTPServer) -> None:
    released = threading.Event()

    def slow(_request: Request) -> Reply:
        released.wait(30)  # stalls until the test is over
        return image(_request)

    server.routes[("GET", "/slow")] = slow
    policy = FetchPolicy(allow_loopback=True, read_timeout_s=0.3)
    try:
        err = await refused(server.base_url + "/slow", policy)
    finally:
        released.set()
    assert err.code == FetchCode.TIMEOUT
    assert err.message == "127.0.0.1: ReadTimeout"


async def test_slow_drip_hits_the_total_deadline(server: FakeHTTPServer) -> None:
    def drip(_request: Request) -> Reply:
        def chunks() -> Iterator[bytes]:
            # A byte every 0.1 s for 30 s: never quiet long enough for the read timeout.
            for _ in range(300):
                time.sleep(0.1)
                yield b"z"

        return Reply(content_type="image/png", chunks=chunks())

    server.routes[("GET", "/drip")] = drip
    policy = FetchPolicy(allow_loopback=True, read_timeout_s=5, total_timeout_s=0.5)
    started = time.perf_counter()
    err = await refused(server.base_url + "/drip", policy)
    assert err.code == FetchCode.TIMEOUT
    assert err.message == "the fetch took longer than 0.5 s"
    # A loose bound: it shows the deadline ended the fetch long before the body would have.
    assert time.perf_counter() - started < 10


async def test_nothing_listening_is_unreachable() -> None:
    err = await refused(f"http://127.0.0.1:{free_port()}/cat.png")
    assert err.code == FetchCode.UNREACHABLE


async def test_unknown_host_is_a_dns_failure() -> None:
    assert (await refused("http://no-such-host.invalid/cat.png")).code == FetchCode.DNS


# -- data: URLs --------------------------------------------------------------------------------


async def test_data_url_base64() -> None:
    got = await get("data:image/png;base64," + base64.b64encode(PNG).decode())
    assert got.body == PNG
    assert got.content_type == "image/png"
    assert got.url == "data:image/png"


async def test_data_url_percent_encoded() -> None:
    got = await get("data:,hello%20world")
    assert (got.body, got.content_type) == (b"hello world", "text/plain")


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64", "data:image/png;base64,!!!not-base64!!!", "data:image/png;base64,"],
)
async def test_bad_data_urls(url: str) -> None:
    assert (await refused(url)).code == FetchCode.BAD_DATA_URL


async def test_oversize_data_url() -> None:
    url = "data:image/png;base64," + base64.b64encode(b"\0" * 5000).decode()
    err = await refused(url, FetchPolicy(max_bytes=4096))
    assert err.code == FetchCode.TOO_LARGE


async def test_data_urls_can_be_turned_off() -> None:
    err = await refused("data:,x", FetchPolicy(allow_data_urls=False))
    assert err.code == FetchCode.SCHEME
