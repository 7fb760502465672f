"""Fetch untrusted URLs on a client's behalf without letting them reach inside the network.

The rules, for every hop of a redirect chain:

- only ``http``/``https`` (and ``data:`` URLs, decoded locally);
- the host name is resolved once; every address it resolves to is checked (loopback, private,
  link-local, CGNAT, multicast, reserved and cloud-metadata addresses are refused unless the
  policy allows the class) and the connection goes to the checked address: the request URL
  carries the IP, ``Host`` and TLS SNI carry the name (certificates are still verified against
  the name), so a second DNS answer cannot swap in another address (DNS rebinding);
- connect, read and whole-fetch timeouts; at most ``max_redirects`` redirects;
- the body is streamed and abandoned as soon as it passes ``max_bytes``; a compressed body
  (gzip or deflate, the only encodings asked for) is inflated here in steps that never
  produce more than the bytes still allowed, so a small "zip bomb" costs no more memory
  than an honest body of the limit.

Proxy variables from the environment are ignored on purpose: a proxy would resolve the name
itself and undo the pinning.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import ssl
import urllib.parse
import zlib
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

import httpx

from aiproject.config import FetchSettings
from aiproject.errors import AiProjectError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services hand out cloud credentials: refused whatever the policy says.
# AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba Cloud, Oracle Cloud, AWS ECS task metadata.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "169.254.170.2",
    )
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
# Content encodings inflated here, with zlib's window bits: 32 + 15 accepts a zlib or gzip
# header (servers send both for "deflate"); raw deflate is tried when there is neither.
_ENCODINGS = {
    "gzip": 32 + zlib.MAX_WBITS,
    "x-gzip": 32 + zlib.MAX_WBITS,
    "deflate": 32 + zlib.MAX_WBITS,
}


class FetchError(AiProjectError):
    """A URL could not be fetched; ``code`` says why (see :class:`FetchCode`)."""


class FetchCode(StrEnum):
    """Why a fetch failed."""

    BAD_URL = "fetch-bad-url"
    SCHEME = "fetch-scheme-not-allowed"
    BLOCKED = "fetch-address-blocked"
    DNS = "fetch-dns-failed"
    UNREACHABLE = "fetch-unreachable"
    TIMEOUT = "fetch-timeout"
    REDIRECTS = "fetch-too-many-redirects"
    HTTP_STATUS = "fetch-http-status"
    TOO_LARGE = "fetch-too-large"
    BAD_DATA_URL = "fetch-bad-data-url"
    PROTOCOL = "fetch-protocol-error"


class AddressClass(StrEnum):
    """The kind of a non-public address."""

    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    CGNAT = "shared (CGNAT)"
    METADATA = "cloud metadata"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"


# Classes a policy may open up; the rest are never a sensible destination.
_ALLOWED_BY_PRIVATE = frozenset(
    {AddressClass.LOOPBACK, AddressClass.PRIVATE, AddressClass.LINK_LOCAL, AddressClass.CGNAT}
)


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may reach and how long and how much it may take."""

    allow_private: bool = False  # private, link-local, CGNAT and loopback addresses
    allow_loopback: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_redirects: int = 3
    max_bytes: int = 10 * 1024 * 1024
    allow_data_urls: bool = True

    @classmethod
    def from_settings(cls, settings: FetchSettings, *, max_bytes: int) -> FetchPolicy:
        """Return the policy of the ``fetch`` settings with a body limit."""
        return cls(
            allow_private=settings.allow_private,
            allow_loopback=settings.allow_loopback,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            # One slow hop may use its whole connect and read budget; the sum bounds a chain.
            total_timeout_s=(settings.connect_timeout_s + settings.read_timeout_s)
            * (settings.max_redirects + 1),
            max_redirects=settings.max_redirects,
            max_bytes=max_bytes,
        )


@dataclass(frozen=True)
class Fetched:
    """A fetched body."""

    url: str  # the final URL after redirects (``data:<media type>`` for data URLs)
    content_type: str
    body: bytes
    redirects: int = 0


def classify_address(ip: IPAddress) -> AddressClass | None:
    """Return the class of a non-public address, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address are judged by it.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return classify_address(embedded)
    if ip in METADATA_ADDRESSES:
        return AddressClass.METADATA
    if ip.is_unspecified:
        return AddressClass.UNSPECIFIED
    if ip.is_loopback:
        return AddressClass.LOOPBACK
    if ip.is_link_local:
        return AddressClass.LINK_LOCAL
    if ip.is_multicast:
        return AddressClass.MULTICAST
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return AddressClass.CGNAT
    if ip.is_reserved:
        return AddressClass.RESERVED
    if ip.is_private or not ip.is_global:
        # Private ranges, unique-local IPv6, documentation and benchmarking networks.
        return AddressClass.PRIVATE
    return None


def check_address(ip: IPAddress, policy: FetchPolicy) -> None:
    """Raise ``fetch-address-blocked`` unless the policy lets a fetch reach ``ip``."""
    kind = classify_address(ip)
    if kind is None:
        return
    if kind is AddressClass.LOOPBACK and policy.allow_loopback:
        return
    if kind in _ALLOWED_BY_PRIVATE and policy.allow_private:
        return
    raise FetchError(FetchCode.BLOCKED, f"the URL leads to a {kind} address ({ip}); refused")


@cache
def _tls_context() -> ssl.SSLContext:
    """Return the TLS context every fetch shares (building one costs tens of milliseconds)."""
    return httpx.create_ssl_context()


def decode_data_url(url: str, max_bytes: int) -> Fetched:
    """Decode a ``data:[<media type>][;base64],<data>`` URL, refusing more than ``max_bytes``."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise FetchError(FetchCode.BAD_DATA_URL, "a data: URL needs a comma before its data")
    params = [p.strip() for p in header.split(";")]
    is_base64 = params[-1].lower() == "base64"
    media_type = (params[0] if params[0] and "=" not in params[0] else "text/plain").lower()
    if is_base64:
        compact = "".join(urllib.parse.unquote(payload).split())
        if len(compact) // 4 * 3 > max_bytes + 3:
            raise FetchError(
                FetchCode.TOO_LARGE, f"the data: URL holds more than {max_bytes} bytes"
            )
        try:
            body = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as err:
            raise FetchError(FetchCode.BAD_DATA_URL, "the data: URL is not valid base64") from err
    else:
        body = urllib.parse.unquote_to_bytes(payload)
    if len(body) > max_bytes:
        raise FetchError(FetchCode.TOO_LARGE, f"the data: URL holds more than {max_bytes} bytes")
    if not body:
        raise FetchError(FetchCode.BAD_DATA_URL, "the data: URL is empty")
    return Fetched(url=f"data:{media_type}", content_type=media_type, body=body)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise FetchError(FetchCode.BAD_URL, f"not a URL: {url[:100]!r}") from err
    if parsed.scheme not in ("http", "https"):
        raise FetchError(
            FetchCode.SCHEME, f"only http and https URLs can be fetched, not {parsed.scheme!r}"
        )
    if not parsed.host:
        raise FetchError(FetchCode.BAD_URL, "the URL has no host")
    return parsed


async def resolve(url: httpx.URL, policy: FetchPolicy) -> IPAddress:
    """Resolve the URL's host once, check every address, and return the one to connect to."""
    port = url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(policy.connect_timeout_s):
            infos = await loop.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except TimeoutError as err:
        raise FetchError(FetchCode.TIMEOUT, f"resolving {url.host} timed out") from err
    except (socket.gaierror, UnicodeError) as err:
        raise FetchError(FetchCode.DNS, f"cannot resolve {url.host}") from err
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchError(FetchCode.DNS, f"{url.host} has no address")
    # Every answer must pass: a name that also points inside is refused outright.
    for ip in addresses:
        check_address(ip, policy)
    return addresses[0]


async def fetch(url: str, policy: FetchPolicy) -> Fetched:
    """Fetch ``url`` under ``policy`` or raise :class:`FetchError`."""
    if url[:5].lower() == "data:":
        if not policy.allow_data_urls:
            raise FetchError(FetchCode.SCHEME, "data: URLs are not accepted here")
        return decode_data_url(url, policy.max_bytes)
    timeout = httpx.Timeout(
        connect=policy.connect_timeout_s,
        read=policy.read_timeout_s,
        write=policy.read_timeout_s,
        pool=policy.connect_timeout_s,
    )
    try:
        async with (
            asyncio.timeout(policy.total_timeout_s),
            httpx.AsyncClient(
                timeout=timeout, trust_env=False, follow_redirects=False, verify=_tls_context()
            ) as client,
        ):
            return await _follow(client, _parse(url), policy)
    except TimeoutError as err:
        raise FetchError(
            FetchCode.TIMEOUT, f"the fetch took longer than {policy.total_timeout_s:g} s"
        ) from err


async def _follow(client: httpx.AsyncClient, url: httpx.URL, policy: FetchPolicy) -> Fetched:
    for hop in range(policy.max_redirects + 1):
        ip = await resolve(url, policy)
        location = await _get(client, url, ip, policy)
        if isinstance(location, Fetched):
            return Fetched(location.url, location.content_type, location.body, redirects=hop)
        url = _parse(str(url.join(location)))
    raise FetchError(FetchCode.REDIRECTS, f"more than {policy.max_redirects} redirects; gave up")


async def _get(
    client: httpx.AsyncClient, url: httpx.URL, ip: IPAddress, policy: FetchPolicy
) -> Fetched | str:
    """GET ``url`` from ``ip``; return the body, or the ``Location`` of a redirect."""
    pinned = url.copy_with(host=str(ip))
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Accept": "image/*,*/*;q=0.5",
        "Accept-Encoding": "gzip, deflate",
    }
    extensions: dict[str, str] = {}
    if url.scheme == "https" and url.host != str(ip):
        extensions["sni_hostname"] = url.host
    try:
        async with client.stream("GET", pinned, headers=headers, extensions=extensions) as reply:
            if reply.status_code in _REDIRECTS:
                location: str = reply.headers.get("location", "")
                if not location:
                    raise FetchError(FetchCode.PROTOCOL, "a redirect without a Location header")
                return location
            if not 200 <= reply.status_code < 300:
                raise FetchError(
                    FetchCode.HTTP_STATUS, f"the server answered HTTP {reply.status_code}"
                )
            body = await _read_limited(reply, policy.max_bytes)
            content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
            return Fetched(url=str(url), content_type=content_type, body=body)
    except httpx.TimeoutException as err:
        raise FetchError(FetchCode.TIMEOUT, f"{url.host}: {type(err).__name__}") from err
    except httpx.ConnectError as err:
        raise FetchError(FetchCode.UNREACHABLE, f"cannot connect to {url.host}") from err
    except httpx.HTTPError as err:
        raise FetchError(FetchCode.PROTOCOL, f"{url.host}: {type(err).__name__}") from err


class _Inflater:
    """Decodes a body's content encoding without ever holding more than the limit."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._raw_tried = False
        self._wbits: int | None = None
        if encoding not in ("", "identity"):
            if encoding not in _ENCODINGS:
                raise FetchError(
                    FetchCode.PROTOCOL, f"the server sent an unasked-for encoding {encoding!r}"
                )
            self._wbits = _ENCODINGS[encoding]
        self._zlib = zlib.decompressobj(self._wbits) if self._wbits is not None else None

    def _count(self, piece: bytes) -> bytes:
        self._size += len(piece)
        if self._size > self._max:
            raise FetchError(
                FetchCode.TOO_LARGE, f"the body is over the limit of {self._max} bytes"
            )
        return piece

    def feed(self, data: bytes) -> bytes:
        """Return the decoded bytes of ``data``, refusing to pass the limit."""
        if self._zlib is None:
            return self._count(data)
        out: list[bytes] = []
        pending = data
        while pending:
            # At most one byte past what is still allowed: enough to know the limit is passed.
            try:
                piece = self._zlib.decompress(pending, self._max - self._size + 1)
            except zlib.error as err:
                if self._raw_tried or self._size or self._wbits is None:
                    raise FetchError(FetchCode.PROTOCOL, "the compressed body is corrupt") from err
                self._raw_tried = True  # "deflate" without a zlib header: raw deflate
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            out.append(self._count(piece))
            pending = self._zlib.unconsumed_tail
        return b"".join(out)

    def finish(self) -> bytes:
        """Return what the decoder still holds."""
        if self._zlib is None:
            return b""
        return self._count(self._zlib.flush(self._max - self._size + 1))


async def _read_limited(reply: httpx.Response, max_bytes: int) -> bytes:
    declared = reply.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(
            FetchCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {max_bytes}"
        )
    encoding = reply.headers.get("content-encoding", "").strip().lower()
    inflater = _Inflater(encoding, max_bytes)
    parts: list[bytes] = []
    # Raw bytes: httpx would inflate a whole network chunk at once before any check.
    async for chunk in reply.aiter_raw(_CHUNK):
        parts.append(inflater.feed(chunk))
    parts.append(inflater.finish())
    return b"".join(parts)
