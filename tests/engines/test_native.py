"""Native libraries' stderr chatter during model loading goes to our log at debug level."""

from __future__ import annotations

import logging
import os

import pytest

from aiproject.engines.native import native_stderr_to_log


def test_native_lines_become_debug_records_and_ours_pass_through(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("aiproject.test.native")
    with caplog.at_level(logging.DEBUG, logger="aiproject.test.native"):
        with native_stderr_to_log(log):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"ts=2026-11-21T00:00:00.000Z level=warning msg=kept\n")
        os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert "msg=kept" in err
    assert "after" in err
    assert [r.getMessage() for r in caplog.records] == [
        "native: INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    ]
