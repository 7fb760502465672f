"""Benchmark the face backends side by side: mediapipe (default) against dlib, per 640x480 frame.

Stages, each the median of ``--repeat`` runs on one thread:

* detection alone: BlazeFace short range, full range, auto (short, then full when it finds
  nothing) against dlib's HOG detector;
* the 468-point mesh of one face (given its detection);
* the embedding of one aligned face: dlib's ResNet converted to ONNX against dlib's own;
* detect+embed (``FaceEngine.embed``), the frame check (``FaceEngine.inspect``) and the
  frame with two faces;
* recognition on the fixtures: the largest same-person and smallest other-person distance.

Usage: ``.venv/bin/python bench/face.py [--repeat 30]``. It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import dlib
import face_recognition_models
import numpy as np

from aiproject.config import FaceSettings
from aiproject.engines.face import DlibFace, MediapipeFace
from aiproject.engines.face.base import FaceEngine
from aiproject.engines.face.blazeface import BlazeFace, DetectorRange
from aiproject.engines.face.dlib_resnet import CHIP_SIZE
from aiproject.engines.face.mesh import FaceMesh
from aiproject.engines.images import RGBImage, decode_image

Row = tuple[str, "Timing | None", "Timing | None"]
FACES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces"
OBAMA = ("obama.jpg", "obama2.jpg", "obama_partial_face.jpg")
STRANGERS = ("biden.jpg", "astronaut.jpg")


def photo(name: str) -> RGBImage:
    """Decode a fixture photo."""
    return decode_image((FACES / name).read_bytes())


def frame_of(*names: str) -> RGBImage:
    """Return a 640x480 frame with the photos side by side, each scaled to fit its share."""
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    share = 640 // len(names)
    for i, name in enumerate(names):
        image = photo(name)
        scale = min(480 / image.shape[0], share / image.shape[1])
        size = (int(image.shape[1] * scale), int(image.shape[0] * scale))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        frame[: small.shape[0], i * share : i * share + small.shape[1]] = small
    return frame


Timing = tuple[float, float]  # median wall ms, median CPU ms of the whole process


def median_ms(wall: list[float], cpu: list[float]) -> Timing:
    """Return the medians of seconds in milliseconds."""
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def timed(fn: Callable[[], Any], repeat: int) -> Timing:
    """Return the median wall and CPU milliseconds of ``fn`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return median_ms(wall, cpu)


async def atimed(fn: Callable[[], Awaitable[Any]], repeat: int) -> Timing:
    """Return the median wall and CPU milliseconds of an async ``fn`` after a warm-up call."""
    await fn()
    wall, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        await fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return median_ms(wall, cpu)


def stage_rows(frame: RGBImage, repeat: int) -> list[Row]:
    """Time detection, mesh, alignment and embedding alone for both backends."""
    rows: list[Row] = []
    hog = dlib.get_frontal_face_detector()
    hog_ms = timed(lambda: hog.run(frame, 0, 0.0), repeat)
    for detector in DetectorRange:
        blaze = BlazeFace(detector)
        rows.append(
            (
                f"detect: BlazeFace {detector} vs HOG",
                timed(lambda b=blaze: b.detect(frame), repeat),
                hog_ms,
            )
        )
    mesh = FaceMesh(DetectorRange.AUTO)
    detection = mesh.detector.detect(frame)[0]
    landmarks = mesh.mesh(frame, detection)
    assert landmarks is not None
    rows.append(
        ("mesh: 468 points of one face", timed(lambda: mesh.mesh(frame, detection), repeat), None)
    )
    models = face_recognition_models
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    rect = hog(frame, 0)[0]
    engine = MediapipeFace(FaceSettings())

    def dlib_chip() -> Any:
        return dlib.get_face_chip(frame, predictor(frame, rect), size=CHIP_SIZE, padding=0.25)

    rows.append(
        (
            "align: 5 points -> chip (mesh vs shape predictor)",
            timed(lambda: engine._chip(frame, landmarks), repeat),
            timed(dlib_chip, repeat),
        )
    )
    chip = dlib_chip()
    batch = chip[None].astype(np.float32)
    rows.append(
        (
            "embed: ResNet on one chip (ONNX vs dlib)",
            timed(lambda: engine._net.run(None, {"chip": batch}), repeat),
            timed(lambda: net.compute_face_descriptor(chip), max(3, repeat // 3)),
        )
    )
    return rows


async def engine_rows(
    engines: tuple[FaceEngine, FaceEngine], frames: dict[str, RGBImage], repeat: int
) -> list[Row]:
    """Time the public engine calls of both backends on the same frames."""
    fast, slow = engines
    few = max(3, repeat // 3)
    rows: list[Row] = []
    for label, frame in frames.items():
        counts = [len(await engine.embed(frame, max_faces=2)) for engine in engines]
        rows.append(
            (
                f"detect+embed: {label} (found {counts[0]} / {counts[1]})",
                await atimed(lambda f=frame: fast.embed(f, max_faces=2), repeat),
                await atimed(lambda f=frame: slow.embed(f, max_faces=2), few),
            )
        )
    one = frames["one face"]
    rows.append(
        (
            "inspect (quality + embed): one face",
            await atimed(lambda: fast.inspect(one), repeat),
            await atimed(lambda: slow.inspect(one), few),
        )
    )
    return rows


async def recognition(engine: FaceEngine) -> tuple[float, float]:
    """Return the largest same-person and smallest other-person distance on the fixtures."""
    obama = [(await engine.best_face(photo(n))).embedding for n in OBAMA]
    others = [(await engine.best_face(photo(n))).embedding for n in STRANGERS]
    same = max(engine.distance(a, b) for i, a in enumerate(obama) for b in obama[i + 1 :])
    other = min(engine.distance(a, b) for a in obama for b in others)
    return same, other


def show(rows: list[Row]) -> None:
    """Print the rows as a table (wall and CPU milliseconds) with the CPU speed-up."""
    print(f"{'':52} {'---- mediapipe':>15} {'---- dlib':>15}")
    head = ("wall", "cpu", "wall", "cpu", "cpu ratio")
    print(f"{'stage (ms per 640x480 frame, median)':52} " + " ".join(f"{h:>7}" for h in head))

    def cells(timing: Timing | None) -> str:
        return f"{timing[0]:7.1f} {timing[1]:7.1f}" if timing else f"{'-':>7} {'-':>7}"

    for label, ours, theirs in rows:
        ratio = f"{theirs[1] / ours[1]:8.1f}x" if ours and theirs and ours[1] > 0 else ""
        print(f"{label:52} {cells(ours)} {cells(theirs)} {ratio:>9}".rstrip())


async def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    frames = {
        "one face": frame_of("obama.jpg"),
        "two faces": frame_of("obama.jpg", "obama2.jpg"),
        "no face": frame_of("no_face.jpg"),
    }
    started = time.perf_counter()
    fast = MediapipeFace(FaceSettings())
    fast_load = time.perf_counter() - started
    started = time.perf_counter()
    slow = DlibFace(FaceSettings(backend="dlib"))
    slow_load = time.perf_counter() - started
    print(f"machine: {sys.platform}, python {sys.version.split()[0]}; one thread per engine")
    print(f"mediapipe: {fast.describe()}  (load {fast_load:.2f} s)")
    print(f"dlib:      {slow.describe()}  (load {slow_load:.2f} s)")
    rows = stage_rows(frames["one face"], args.repeat)
    rows += await engine_rows((fast, slow), frames, args.repeat)
    show(rows)
    for engine in (fast, slow):
        same, other = await recognition(engine)
        print(
            f"recognition {engine.name:9}: same person <= {same:.3f}, strangers >= {other:.3f}, "
            f"margin {other - same:.3f} (threshold 0.6)"
        )
    await fast.aclose()
    await slow.aclose()


if __name__ == "__main__":
    asyncio.run(main())
