"""Keep native libraries' console chatter (TFLite, ONNX, dlib) out of the service's stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_to_log(log: logging.Logger) -> Iterator[None]:
    """Send what C/C++ code writes to file descriptor 2 meanwhile to ``log`` at debug level.

    Meant for model loading, which some libraries announce with unconditional ``INFO:`` lines.
    Descriptor 2 is process-wide: lines other threads write meanwhile are captured too, and
    those in our own log formats are passed back to stderr unchanged.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.startswith(("ts=", '{"ts"')):
                    print(line, file=sys.stderr)
                elif line.strip():
                    log.debug("native: %s", line.strip())
