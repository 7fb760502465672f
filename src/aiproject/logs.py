"""Structured logging: one logfmt (or JSON) line per event, quiet by default."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiproject.telemetry import request_id

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_DROPPED = {"color_message"}  # uvicorn's terminal-coloured copy of the message

# Chatty third-party loggers kept at warning whatever our level is.
_NOISY = ("uvicorn.access", "httpx", "httpcore", "faster_whisper", "aiortc", "aioice", "alembic")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update(
        {k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _DROPPED}
    )
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class LogfmtFormatter(logging.Formatter):
    """Format records as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        """Return one logfmt line."""
        parts = []
        for key, value in _fields(record).items():
            text = str(value)
            if not text or any(c in text for c in ' ="\n'):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """Format records as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return one JSON line."""
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


def tag_records_with_request_id() -> None:
    """Make every log record created while a request is served carry ``request_id``.

    Installs a record factory once per process (later calls do nothing), so the id is taken
    when the line is logged, whichever handler formats it later.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        rid = request_id.get()
        if rid is not None:
            record.request_id = rid
        return record

    make.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    """Send our logs to stderr in the chosen format; lines of a request carry its id."""
    tag_records_with_request_id()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("aiproject").setLevel(level.upper())
    logging.getLogger("uvicorn.error").setLevel(
        max(logging.INFO, logging.getLevelName(level.upper()))
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
