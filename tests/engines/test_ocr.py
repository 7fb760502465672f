"""The RapidOCR engine: rendered Chinese and English, a photographed page, blank images."""

from __future__ import annotations

import logging
import socket
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from aiproject.engines.errors import BadInput
from aiproject.engines.images import RGBImage, decode_image
from aiproject.engines.ocr import BACKENDS
from aiproject.engines.ocr.base import OCRLine
from aiproject.engines.ocr.rapid import RAPIDOCR_LOGGER, RapidOCREngine, reading_order
from aiproject.engines.registry import Engines
from aiproject.metrics import edit_distance
from tests.conftest import FIXTURES

IMAGES = FIXTURES / "images"

# What tests/fixtures/images/render_ocr_text.py drew, in reading order.
RENDERED = [
    "智能助手欢迎您",
    "Hello, World! 2024",
    "今天天气很好，适合散步。",
    "左边的字",
    "Right side",
    "价格：42.50元",
]


def photo(name: str) -> RGBImage:
    """Decode a fixture image."""
    return decode_image((IMAGES / name).read_bytes())


@pytest.fixture(scope="module")
async def ocr(engines: Engines) -> RapidOCREngine:
    """The session's OCR engine."""
    engine = await engines.ocr()
    assert isinstance(engine, RapidOCREngine)
    return engine


async def test_engine_is_built_from_settings(ocr: RapidOCREngine) -> None:
    assert set(BACKENDS) == {"rapidocr"}
    assert ocr.min_score == 0.5
    assert ocr.describe() == "rapidocr PP-OCRv6 onnxruntime threads=1"


async def test_reads_rendered_chinese_and_english_in_order(ocr: RapidOCREngine) -> None:
    result = await ocr.recognize(photo("ocr-zh-en.png"))
    texts = [line.text for line in result.lines]
    # Measured: every line exact, scores 0.996..1.0.
    assert len(texts) == len(RENDERED)
    errors = sum(edit_distance(got, want) for got, want in zip(texts, RENDERED, strict=True))
    assert errors / sum(len(want) for want in RENDERED) <= 0.02
    assert texts[3:5] == ["左边的字", "Right side"]  # one row, read left then right
    assert result.text == "\n".join(texts)
    assert all(0.9 <= line.score <= 1 for line in result.lines)
    for line in result.lines:
        xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
        assert 0 <= min(xs) and max(xs) <= 800 and 0 <= min(ys) and max(ys) <= 380


async def test_reads_a_photographed_page(ocr: RapidOCREngine) -> None:
    result = await ocr.recognize(photo("page-photo.png"))
    texts = [line.text for line in result.lines]
    # Measured: 7 lines; the heading and three body lines exact, one blurred line garbled.
    assert texts[0] == "Region-based segmentation"
    body = " ".join(texts)
    for phrase in ("markers of the coins", "pixels that we can label", "histogram of grey values"):
        assert phrase in body
    tops = [min(y for _, y in line.box) for line in result.lines]
    assert tops == sorted(tops)


async def test_blank_images_have_no_lines(
    ocr: RapidOCREngine, capfd: pytest.CaptureFixture[str]
) -> None:
    for fill in (255, 0):
        result = await ocr.recognize(np.full((480, 640, 3), fill, dtype=np.uint8))
        assert result.lines == ()
        assert result.text == ""
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert (await ocr.recognize(noise)).lines == ()
    # rapidocr warns "detection result is empty" on its own handler; that must stay quiet.
    out, err = capfd.readouterr()
    assert out == "" and err == ""


async def test_rapidocr_logs_go_through_ours(ocr: RapidOCREngine) -> None:
    logger = logging.getLogger(RAPIDOCR_LOGGER)
    assert logger.handlers == []
    assert logger.propagate
    assert logger.level == logging.ERROR


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), dtype=np.uint8),
        np.zeros((32, 32, 4), dtype=np.uint8),
        np.zeros((32, 32, 3), dtype=np.float32),
        np.zeros((32, 0, 3), dtype=np.uint8),
    ],
)
async def test_bad_arrays_are_refused(ocr: RapidOCREngine, image: npt.NDArray[Any]) -> None:
    with pytest.raises(BadInput) as caught:
        await ocr.recognize(image)
    assert caught.value.code == "bad-image"


def test_starts_offline_and_filters_by_min_score(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"rapidocr tried to reach the network: {args[1:]}")

    # The packaged models are used as they are: no download, not even a connection attempt.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    strict = RapidOCREngine(min_score=0.9)
    lines = strict.recognize_sync(photo("page-photo.png")).lines
    # The default 0.5 keeps a garbled line scored 0.58; 0.9 drops it and keeps the clean ones.
    assert lines[0].text == "Region-based segmentation"
    assert all(line.score >= 0.9 for line in lines)
    assert len(lines) == 6


def _line(text: str, left: float, top: float, width: float = 100, height: float = 30) -> OCRLine:
    box = ((left, top), (left + width, top), (left + width, top + height), (left, top + height))
    return OCRLine(text=text, score=1.0, box=box)


def test_reading_order_is_rows_then_columns() -> None:
    lines = [
        _line("bottom", 10, 200),
        _line("right", 300, 104),  # a few pixels lower than its row neighbour
        _line("title", 10, 10),
        _line("left", 10, 100),
        _line("middle", 150, 98),
    ]
    assert [line.text for line in reading_order(lines)] == [
        "title",
        "left",
        "middle",
        "right",
        "bottom",
    ]
    assert reading_order([]) == ()
