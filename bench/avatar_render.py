"""Avatar renderer benchmark: per-frame cost of render and mouth_level, and of encoding.

Run: ``.venv/bin/python bench/avatar_render.py [--frames 500] [--photo PATH]``. Prints one
table to stdout; nothing passes or fails on time. Record it in docs/benchmarks.md with the
machine it ran on and its load (printed: other processes share the cores).

Render and mouth_level run the generated face (and a photo) on a real speech fixture, one
frame after another as a session does. Encoding compares, on the same 512 x 512 frames, the
encoders a WebRTC session may use, configured as aiortc 1.16 configures them: VP8 (libvpx,
realtime, cpu-used -6, 500 kbit/s) and H.264 (libx264 Baseline, tune zerolatency, 1 Mbit/s)
at x264's default preset "medium" (what aiortc uses) and at "ultrafast". PSNR of the
decoded luma shows what each costs in picture quality at its bitrate.
"""

from __future__ import annotations

import argparse
import fractions
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from aiproject.config import AvatarRenderSettings
from aiproject.engines.avatar import SAMPLES_PER_FRAME, PortraitAvatar

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "fixtures" / "speech" / "zh_checkup.wav"
PHOTO = REPO / "tests" / "fixtures" / "faces" / "obama.jpg"
Frame = npt.NDArray[np.uint8]


def speech() -> npt.NDArray[np.float32]:
    """Return the fixture as 16 kHz float32, looped past ten seconds."""
    with av.open(str(SPEECH)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    voice = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
    return np.tile(voice, 3)


def percentiles(samples_ms: list[float]) -> str:
    """Return 'median / p95' of a list of milliseconds."""
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(ordered):7.3f} / {p95:7.3f}"


def timed(count: int, step: Callable[[int], object]) -> tuple[list[float], float]:
    """Run ``step(n)`` ``count`` times; return wall ms per call and CPU ms per call (mean).

    CPU time is the process's (every thread's, encoders run their own): on a machine shared
    with other work it is the steadier measure of cost; wall time shows the waits too.
    """
    wall = []
    cpu_started = time.process_time()
    for n in range(count):
        started = time.perf_counter()
        step(n)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, (time.process_time() - cpu_started) * 1000 / count


def row(what: str, step: str, wall: list[float], cpu: float, extra: str = "") -> str:
    """Format one line of the table."""
    return f"{what:30} {step:16} {percentiles(wall)}   {cpu:7.3f}   {extra}".rstrip()


def bench_renderer(
    label: str, avatar: PortraitAvatar, frames: int
) -> tuple[list[Frame], list[str]]:
    """Time mouth_level and render over ``frames`` frames of speech; return the frames too."""
    audio = speech()
    state = avatar.new_state(1)
    pieces = [audio[(n * SAMPLES_PER_FRAME) % (len(audio) - SAMPLES_PER_FRAME):][:SAMPLES_PER_FRAME]
              for n in range(frames)]  # fmt: skip
    levels: list[float] = []
    rendered: list[Frame] = []
    mouth_wall, mouth_cpu = timed(
        frames, lambda n: levels.append(avatar.mouth_level(state, pieces[n]))
    )
    render_wall, render_cpu = timed(
        frames, lambda n: rendered.append(avatar.render(state, n, levels[n]))
    )
    rows = [
        row(label, "mouth_level", mouth_wall, mouth_cpu),
        row(label, "render", render_wall, render_cpu),
    ]
    return rendered, rows


def encoder(kind: str, width: int, height: int) -> av.VideoCodecContext:
    """Return an encoder configured the way aiortc 1.16 configures it (``kind`` as labelled)."""
    if kind == "vp8":
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = 500_000
        codec.gop_size, codec.qmin, codec.qmax = 3000, 2, 56
        codec.options = {
            "bufsize": "500000", "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
            "minrate": "500000", "maxrate": "500000", "noise-sensitivity": "4",
            "overshoot-pct": "15", "partitions": "0", "static-thresh": "1",
            "undershoot-pct": "100",
        }  # fmt: skip
        codec.thread_count = 1 if width * height <= 640 * 480 else 2
        return codec
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = 1_000_000
    codec.framerate = fractions.Fraction(30, 1)
    codec.time_base = fractions.Fraction(1, 30)
    options = {"level": "31", "tune": "zerolatency"}
    if kind == "h264-ultrafast":
        options["preset"] = "ultrafast"
    codec.options = options
    codec.profile = "Baseline"
    return codec


def bench_encoder(kind: str, frames: list[Frame], width: int, height: int) -> str:
    """Time encoding every frame; report ms per frame, bitrate and luma PSNR after decoding."""
    codec = encoder(kind, width, height)
    decoder = av.CodecContext.create("libvpx" if kind == "vp8" else "h264", "r")
    packets: list[Any] = []
    images = []
    for n, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = n, fractions.Fraction(1, 25)
        images.append(frame)
    packets.extend(codec.encode(images[0]))  # the first (key) frame opens the encoder
    wall, cpu = timed(len(images) - 1, lambda n: packets.extend(codec.encode(images[n + 1])))
    packets.extend(codec.encode(None))
    decoded = [f.to_ndarray()[:height] for p in packets for f in decoder.decode(p)]
    pairs = list(zip(frames, decoded, strict=False))
    mse = np.mean([np.mean((a[:height].astype(float) - b) ** 2) for a, b in pairs])
    psnr = 10 * np.log10(255**2 / max(float(mse), 1e-9))
    kbps = sum(p.size for p in packets) * 8 / (len(frames) / 25) / 1000
    return row(
        f"encode {width}x{height}", kind, wall, cpu, f"{kbps:5.0f} kbit/s  PSNR {psnr:4.1f} dB"
    )


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    started = time.perf_counter()
    generated = PortraitAvatar(AvatarRenderSettings())
    rows.append(f"{'load generated face':47} {time.perf_counter() - started:7.2f} s")
    started = time.perf_counter()
    photo = PortraitAvatar(AvatarRenderSettings(photo=args.photo))
    rows.append(f"{'load photo (mesh + patches)':47} {time.perf_counter() - started:7.2f} s")
    print("rendering ...", file=sys.stderr)
    frames, lines = bench_renderer("generated face 512x512", generated, args.frames)
    rows += lines
    rows += bench_renderer(f"photo {args.photo.name} 512x512", photo, args.frames)[1]
    for kind in ("vp8", "h264-medium", "h264-ultrafast"):
        print(f"encoding {kind} ...", file=sys.stderr)
        rows.append(bench_encoder(kind, frames[:250], 512, 512))
    load_after = os.getloadavg()
    print(f"# avatar renderer, {args.frames} frames, {os.cpu_count()} cores; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (other processes share the "
          "cores: figures are upper bounds)")  # fmt: skip
    print(f"{'what':30} {'step':16} {'wall ms median / p95':>20}   {'CPU ms':>7}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
