"""Wire plumbing every api module shares; each spec's module keeps only its own shapes.

- :mod:`~aiproject.api.wire.bodies`: read a body within a size and a time limit, decode JSON
  that every later step can store and send back (no lone surrogates, huge integers, deep
  nesting or NaN), and check strings a framework decoded.
- :mod:`~aiproject.api.wire.auth`: the bearer token of a request (``Authorization: Bearer``,
  or a query parameter where a spec puts it there).
- :mod:`~aiproject.api.wire.streams`: one streamed response that watches for the client's
  disconnect, always closes its producer, and can send keepalives while the producer is quiet.
- :mod:`~aiproject.api.wire.errors`: the table-driven mapping of any exception to a status,
  a code and a message, and the formatting of validation errors; each spec configures one
  :class:`~aiproject.api.wire.errors.ErrorMapper` and renders its result in its own shape.
- :mod:`~aiproject.api.wire.sse`: server-sent event framing.

A new spec module (assistant, avatar) builds on these rather than copying them.
"""
