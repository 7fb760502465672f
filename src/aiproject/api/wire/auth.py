"""Bearer tokens as clients present them: an ``Authorization`` header or a query parameter."""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection


def bearer_token(headers: Headers) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None.

    The scheme is case-insensitive (RFC 9110); blanks around the token are dropped.
    """
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def query_token(params: QueryParams, name: str = "token") -> str | None:
    """Return a non-empty token passed as the query parameter ``name``, or None."""
    return params.get(name) or None


def presented_token(connection: HTTPConnection, query: str | None = None) -> str | None:
    """Return the token a request or WebSocket presents, or None.

    Args:
        connection: the request or WebSocket.
        query: the query parameter a spec carries the token in; it is preferred to the
            ``Authorization`` header, which is always accepted too. None: header only.
    """
    if query is not None:
        token = query_token(connection.query_params, query)
        if token is not None:
            return token
    return bearer_token(connection.headers)
