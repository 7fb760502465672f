"""Logs are one structured line per event."""

from __future__ import annotations

import json
import logging

from aiproject.logs import JsonFormatter, LogfmtFormatter


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "aiproject.x", "levelname": "INFO", "msg": msg})
    record.__dict__.update(extra)
    return record


def test_logfmt_quotes_values_with_spaces_and_keeps_extras() -> None:
    line = LogfmtFormatter().format(_record("engine loaded", kind="asr", load_s=1.5))
    assert 'msg="engine loaded"' in line
    assert "kind=asr" in line
    assert "load_s=1.5" in line
    assert "\n" not in line


def test_json_lines_parse() -> None:
    value = json.loads(JsonFormatter().format(_record("你好", surface="http")))
    assert value["msg"] == "你好"
    assert value["surface"] == "http"
    assert value["level"] == "info"


def test_uvicorn_colour_copy_is_dropped() -> None:
    line = LogfmtFormatter().format(_record("Started", color_message="\x1b[36mStarted\x1b[0m"))
    assert "color_message" not in line
