"""A small client for OpenAI-compatible HTTP APIs, shared by every production backend."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from aiproject.config import OpenAICompat
from aiproject.engines.errors import EngineUnavailable, RemoteError


class OpenAICompatClient:
    """Calls ``{base_url}/...`` with a bearer key; maps transport and HTTP errors to ours."""

    def __init__(self, settings: OpenAICompat, *, kind: str) -> None:
        if not settings.base_url:
            raise EngineUnavailable(
                "not-configured",
                f"{kind}: the openai backend needs engines.{kind}.openai.base_url",
            )
        self.settings = settings
        self.kind = kind
        headers = {"User-Agent": "aiproject"}
        key = settings.api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
        )

    @property
    def model(self) -> str:
        """Return the configured model name."""
        return self.settings.model

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON and return the decoded JSON object."""
        try:
            response = await self._client.post(path.lstrip("/"), json=body)
        except httpx.HTTPError as err:
            raise RemoteError("remote-unreachable", f"{self.kind}: {err!r}") from err
        self._raise_for_status(response)
        return self._json(response)

    async def post_multipart(
        self,
        path: str,
        *,
        data: Mapping[str, str],
        files: Mapping[str, tuple[str, bytes, str]],
    ) -> dict[str, Any]:
        """POST multipart/form-data and return the decoded JSON object."""
        try:
            response = await self._client.post(path.lstrip("/"), data=dict(data), files=files)
        except httpx.HTTPError as err:
            raise RemoteError("remote-unreachable", f"{self.kind}: {err!r}") from err
        self._raise_for_status(response)
        return self._json(response)

    async def stream_bytes(self, path: str, body: Mapping[str, Any]) -> AsyncGenerator[bytes, None]:
        """POST JSON and yield the raw response body as it arrives."""
        try:
            async with self._client.stream("POST", path.lstrip("/"), json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_status(response)
                async for chunk in response.aiter_bytes():
                    if chunk:
                        yield chunk
        except httpx.HTTPError as err:
            raise RemoteError("remote-unreachable", f"{self.kind}: {err!r}") from err

    async def stream_events(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[Any]:
        """POST JSON with ``stream: true`` and yield each decoded SSE ``data:`` object."""
        try:
            async with self._client.stream("POST", path.lstrip("/"), json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_status(response)
                async for line in response.aiter_lines():
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except json.JSONDecodeError as err:
                        raise RemoteError(
                            "remote-bad-response", f"{self.kind}: undecodable event {data[:200]!r}"
                        ) from err
        except httpx.HTTPError as err:
            raise RemoteError("remote-unreachable", f"{self.kind}: {err!r}") from err

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail = response.text[:300]
        raise RemoteError(
            "remote-error", f"{self.kind}: HTTP {response.status_code} from server: {detail}"
        )

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            value = response.json()
        except ValueError as err:
            raise RemoteError(
                "remote-bad-response", f"{self.kind}: response is not JSON: {response.text[:200]!r}"
            ) from err
        if not isinstance(value, dict):
            raise RemoteError("remote-bad-response", f"{self.kind}: response is not an object")
        return value
