"""The committed speech fixtures, and reference tools that do not use the code under test."""

from __future__ import annotations

import io
import json
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
RATE = 16_000

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeechSample:
    """One recording with its reference transcript."""

    file: str
    language: str
    text: str

    @property
    def path(self) -> Path:
        """Return the fixture's path."""
        return SPEECH / self.file

    def pcm16(self) -> bytes:
        """Return the recording as 16 kHz mono 16-bit PCM, read with the standard library."""
        data = self.path.read_bytes()
        if self.path.suffix == ".raw":
            return data
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
            frames: bytes = wav.readframes(wav.getnframes())
            return frames

    def floats(self) -> Floats:
        """Return the recording as float32 in [-1, 1)."""
        return (np.frombuffer(self.pcm16(), dtype="<i2") / 32768.0).astype(np.float32)


def samples(language: str | None = None) -> list[SpeechSample]:
    """Return the fixtures listed in ``transcripts.json``, optionally of one language."""
    entries = json.loads((SPEECH / "transcripts.json").read_text(encoding="utf-8"))
    found = [SpeechSample(e["file"], e["language"], e["text"]) for e in entries]
    return [s for s in found if language is None or s.language == language]


def sample(file: str) -> SpeechSample:
    """Return the fixture called ``file``."""
    return next(s for s in samples() if s.file == file)


def cer(reference: str, hypothesis: str) -> float:
    """Return the character error rate, ignoring punctuation and spaces."""
    ref = re.sub(r"[\W_]+", "", reference)
    hyp = re.sub(r"[\W_]+", "", hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def words(text: str) -> str:
    """Return ``text`` lower-cased with punctuation removed, for comparing transcripts."""
    return " ".join(re.findall(r"\w+", text.lower()))


def resample(audio: Floats, rate_in: int, rate_out: int) -> Floats:
    """Resample by zero-padding or truncating the spectrum (exact for band-limited audio)."""
    n_out = round(audio.size * rate_out / rate_in)
    spectrum = np.fft.rfft(audio.astype(np.float64))
    out = np.fft.irfft(spectrum, n_out) * (n_out / audio.size)
    return out.astype(np.float32)


def wav_bytes(audio: Floats, rate: int, channels: int = 1) -> bytes:
    """Write float audio as a 16-bit WAV with the standard library (same signal per channel)."""
    pcm = np.rint(np.clip(audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(pcm, channels).tobytes())
    return buffer.getvalue()


def encode(audio: Floats, fmt: str, codec: str, rate: int = RATE) -> bytes:
    """Encode 16 kHz float audio into a container with PyAV (the way a client's app would)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = RATE
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> Floats:
    """Return a sine tone."""
    t = np.arange(round(seconds * rate)) / rate
    wave_: Floats = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return wave_


def peak_frequency(audio: Floats, rate: int = RATE) -> float:
    """Return the frequency of the strongest spectral line."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[int(np.argmax(spectrum))])


def similarity(audio: Floats, reference: Floats, max_lag: int = 2048) -> float:
    """Return the peak normalised cross-correlation within ``max_lag`` samples (1 = same)."""
    size = audio.size + reference.size
    cross = np.fft.irfft(np.fft.rfft(audio, size) * np.conj(np.fft.rfft(reference, size)), size)
    window = np.concatenate([cross[: max_lag + 1], cross[-max_lag:]])
    return float(window.max() / (np.linalg.norm(audio) * np.linalg.norm(reference)))
