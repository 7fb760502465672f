"""RapidOCR (PP-OCR detection, orientation and recognition on onnxruntime): the embedded default.

The ``rapidocr`` wheel ships its default models (PP-OCRv6 small det/rec, PP-OCR mobile cls),
so the default configuration never downloads anything; other languages or versions would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, OCRError
from aiproject.engines.images import RGBImage
from aiproject.engines.models import ModelStore
from aiproject.engines.ocr.base import OCR, OCRLine, OCRResult, Point

# rapidocr logs through this logger with its own coloured stderr handler and INFO level.
RAPIDOCR_LOGGER = "RapidOCR"


def _route_rapidocr_logs() -> None:
    """Send rapidocr's log records through ours instead of its own stderr handler."""
    logger = logging.getLogger(RAPIDOCR_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def _box(points: Any) -> tuple[Point, Point, Point, Point]:
    """Convert rapidocr's 4x2 array to four (x, y) tuples, clockwise from top-left."""
    p = [(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64).reshape(4, 2)]
    return (p[0], p[1], p[2], p[3])


def reading_order(lines: Sequence[OCRLine]) -> tuple[OCRLine, ...]:
    """Sort lines top to bottom, and left to right within a row.

    Two lines share a row when the vertical centre of one lies inside the other's vertical
    extent, so side-by-side columns read left then right even when their boxes are a few
    pixels apart in height.
    """

    def extent(line: OCRLine) -> tuple[float, float]:
        ys = [y for _, y in line.box]
        return min(ys), max(ys)

    def left(line: OCRLine) -> float:
        return min(x for x, _ in line.box)

    rows: list[list[OCRLine]] = []
    for line in sorted(lines, key=lambda item: (extent(item)[0], left(item))):
        top, bottom = extent(line)
        centre = (top + bottom) / 2
        if rows:
            row_top = min(extent(item)[0] for item in rows[-1])
            row_bottom = max(extent(item)[1] for item in rows[-1])
            row_centre = (row_top + row_bottom) / 2
            if row_top <= centre <= row_bottom or top <= row_centre <= bottom:
                rows[-1].append(line)
                continue
        rows.append([line])
    return tuple(line for row in rows for line in sorted(row, key=left))


class RapidOCREngine(OCR):
    """Reads Chinese and English text with RapidOCR's packaged PP-OCR models.

    Named ``RapidOCREngine`` rather than ``<Backend><Kind>`` = ``RapidOCR`` so that it does
    not shadow the library's own ``rapidocr.RapidOCR`` class.
    """

    name = "rapidocr"

    def __init__(self, *, min_score: float = 0.5, threads: int = 1) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as err:
            raise EngineUnavailable(
                "package-missing", "pip install rapidocr for text recognition"
            ) from err
        _route_rapidocr_logs()
        params = {
            "Global.log_level": "error",
            "Global.text_score": min_score,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        try:
            self._ocr: Any = RapidOCR(params=params)
            # rapidocr loads its three models on the first call; load them now, not then.
            self._run(_warm_up_image())
        except Exception as err:
            raise EngineUnavailable("model-corrupt", f"rapidocr cannot start: {err}") from err
        self.min_score = min_score
        self.threads = threads
        self._pool = BlockingPool("ocr", workers=1)

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> RapidOCREngine:
        """Build from settings (the models ship inside the rapidocr wheel)."""
        return cls(
            min_score=settings.engines.ocr.min_score,
            threads=settings.engines.threads_per_engine,
        )

    def describe(self) -> str:
        """Return the backend, its models and thread count."""
        return f"rapidocr PP-OCRv6 onnxruntime threads={self.threads}"

    def _run(self, image: RGBImage) -> Any:
        # rapidocr takes a bare ndarray as BGR.
        return self._ocr(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def recognize_sync(self, image: RGBImage) -> OCRResult:
        """Return the text lines of ``image`` in reading order; blocking."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInput("bad-image", "expected an H x W x 3 uint8 RGB image")
        if min(image.shape[:2]) < 1:
            raise BadInput("bad-image", "the image has no pixels")
        try:
            output = self._run(image)
            boxes, texts, scores = output.boxes, output.txts, output.scores
            if boxes is None or texts is None or scores is None:
                return OCRResult(lines=())
            lines = [
                OCRLine(text=str(text), score=float(score), box=_box(box))
                for box, text, score in zip(boxes, texts, scores, strict=True)
                if float(score) >= self.min_score and str(text).strip()
            ]
        except Exception as err:  # rapidocr and onnxruntime raise many untyped errors
            raise OCRError("ocr-failed", f"text recognition failed: {err}") from err
        return OCRResult(lines=reading_order(lines))

    async def recognize(self, image: RGBImage) -> OCRResult:
        """Return the text lines of ``image``, in reading order."""
        return await self._pool.run(lambda: self.recognize_sync(image))

    async def aclose(self) -> None:
        """Stop the inference pool."""
        self._pool.shutdown()


def _warm_up_image() -> RGBImage:
    """Return a small picture of a word, enough to run detection, orientation and recognition.

    Detection scales the shorter side up to 736 px, so a squat picture keeps this cheap.
    """
    image = np.full((48, 96, 3), 255, dtype=np.uint8)
    cv2.putText(image, "OK", (8, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
    return image
