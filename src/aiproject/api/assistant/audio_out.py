"""The /tts socket's audio formats: WAV (default), raw PCM16, MP3 and Ogg/Opus."""

from __future__ import annotations

import io
from typing import Literal, cast

import av
import numpy as np
from av.audio.stream import AudioStream

from aiproject.engines.audio import encode_wav
from aiproject.engines.errors import BadInput, TTSError
from aiproject.engines.tts.auto import resample_pcm16

AudioFormat = Literal["wav", "pcm", "mp3", "ogg"]
FORMATS: tuple[AudioFormat, ...] = ("wav", "pcm", "mp3", "ogg")
# Opus runs at 48 kHz whatever the input; MP3 takes the usual rates.
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def parse_format(value: str | None, default: AudioFormat) -> AudioFormat:
    """Return the format named by ``?format=`` or raise ``bad-format``."""
    if value is None or value == "":
        return default
    for name in FORMATS:
        if value.lower() == name:
            return name
    raise BadInput("bad-format", f"format must be one of {', '.join(FORMATS)}")


def parse_rate(value: str | None, default: int) -> int:
    """Return the sample rate named by ``?rate=`` (8000-48000 Hz) or raise ``bad-rate``."""
    if value is None or value == "":
        return default
    if not value.isdigit() or not 8000 <= int(value) <= 48000:
        raise BadInput("bad-rate", "rate must be a whole number of Hz from 8000 to 48000")
    return int(value)


def _encode_av(pcm: bytes, rate: int, fmt: AudioFormat) -> bytes:
    codec, container = ("libmp3lame", "mp3") if fmt == "mp3" else ("libopus", "ogg")
    if fmt == "mp3" and rate not in _MP3_RATES:
        raise BadInput("bad-rate", f"MP3 takes {', '.join(map(str, _MP3_RATES))} Hz")
    if fmt == "ogg":
        pcm, rate = resample_pcm16(pcm, rate, 48000), 48000
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = cast(AudioStream, muxer.add_stream(codec, rate=rate))
        stream.layout = "mono"
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


def encode_speech(pcm: bytes, source_rate: int, fmt: AudioFormat, rate: int) -> bytes:
    """Return mono PCM16 speech resampled to ``rate`` in format ``fmt``."""
    pcm = resample_pcm16(pcm, source_rate, rate)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return encode_wav(pcm, rate)
    try:
        return _encode_av(pcm, rate, fmt)
    except (av.FFmpegError, ValueError) as err:
        raise TTSError("encode-failed", f"cannot encode {fmt}: {err}") from err
