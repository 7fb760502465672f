"""Decode untrusted audio bytes into 16 kHz mono float32, with size and length limits.

Clients mostly send headerless 16-bit little-endian mono PCM at 16 kHz; some send a file
(WAV, Ogg/Opus, MP3, WebM, FLAC, M4A, ...). There is no header to tell raw PCM apart, so
the bytes are sniffed: when they start with the magic number of a container we know, they
are demuxed with exactly that container's demuxer (never by FFmpeg's open-ended probing) and
resampled; otherwise they are PCM.

Bytes that are neither a known container nor meant as PCM (text, a JPEG, random data) are
therefore read as PCM too: any even number of bytes is valid PCM, so they become noise that
the recogniser turns into empty or meaningless text. That is the deliberate price of
accepting headerless PCM. A file whose magic number we recognise but that does not decode
(a truncated or forged WAV or Ogg header) is refused with ``bad-audio``.

Error codes (all :class:`MediaError`): ``empty-audio``, ``audio-too-large``,
``audio-too-long``, ``odd-length-pcm``, ``bad-audio``.

Decoding is CPU work (about 0.2 s per minute of Opus or MP3 on one core, 0.05 s for a WAV
that needs resampling): call it off the event loop (``asyncio.to_thread``) for uploads
longer than a few seconds.
"""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import numpy.typing as npt

from aiproject.engines.blocking import Admission, BlockingPool
from aiproject.engines.errors import MediaError

# The same definitions as in ``engines.asr.base``, repeated rather than imported: importing
# anything under ``engines.asr`` runs that package's ``__init__``, which imports the ASR
# backends, which import this module.
SAMPLE_RATE = 16_000
FloatAudio = npt.NDArray[np.float32]  # mono, 16 kHz, range [-1, 1]

# Bitrates in kbit/s by MPEG version group and layer (index 0 is free format, refused).
_MPEG1_L2 = (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384)
_MPEG1_L3 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_L23 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def sniff_audio_format(data: bytes) -> str | None:
    """Return the FFmpeg demuxer for the container the bytes start with, or None for PCM."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64", b"BW64"):
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[4:8] == b"ftyp":
        return "mov"  # MP4, M4A, 3GP
    if head[:3] == b"ID3":
        return "mp3"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"caff":
        return "caf"
    # Bare MPEG and ADTS frames have only an 11- or 12-bit sync word, which PCM can start
    # with by chance, so they count only when a second frame header follows the first.
    if _mpeg_frame_length(data, 0) and _mpeg_chain(data):
        return "mp3"
    if _adts_frame_length(data, 0) and _adts_chain(data):
        return "aac"
    return None


def decode_audio(
    data: bytes, *, max_bytes: int, max_seconds: float, pcm_sample_rate: int = SAMPLE_RATE
) -> FloatAudio:
    """Decode PCM16 or a container into 16 kHz mono float32 in [-1, 1].

    Args:
        data: The uploaded bytes.
        max_bytes: Refuse more bytes than this (``audio-too-large``).
        max_seconds: Refuse audio longer than this (``audio-too-long``), checked while
            decoding so a small, highly compressed file cannot expand without bound.
        pcm_sample_rate: The sample rate of headerless PCM (containers carry their own).
    """
    check_audio_bytes(data, max_bytes=max_bytes)
    fmt = sniff_audio_format(data)
    if fmt is None:
        audio = _decode_pcm(data, max_seconds=max_seconds, sample_rate=pcm_sample_rate)
    else:
        audio = _decode_container(data, fmt, max_seconds=max_seconds)
    if audio.size == 0:
        raise MediaError("empty-audio", "the audio has no samples")
    return audio


def check_audio_bytes(data: bytes, *, max_bytes: int) -> None:
    """Refuse empty or oversized uploads (what can be told without decoding)."""
    if not data:
        raise MediaError("empty-audio", "the audio is empty")
    if len(data) > max_bytes:
        raise MediaError("audio-too-large", f"the audio is {len(data)} bytes; at most {max_bytes}")


def check_float_audio(audio: FloatAudio, *, max_seconds: float) -> FloatAudio:
    """Return ``audio`` as contiguous 1-D float32, refusing empty or over-long input."""
    array = np.ascontiguousarray(audio, dtype=np.float32)
    if array.ndim != 1:
        raise MediaError("bad-audio", f"expected mono audio, got shape {array.shape}")
    if array.size == 0:
        raise MediaError("empty-audio", "the audio has no samples")
    seconds = array.size / SAMPLE_RATE
    if seconds > max_seconds:
        raise MediaError(
            "audio-too-long", f"the audio lasts {seconds:.1f} s; at most {max_seconds:g}"
        )
    return array


def pcm16_to_float(pcm16: bytes) -> FloatAudio:
    """Convert 16-bit little-endian PCM to float32 in [-1, 1)."""
    if len(pcm16) % 2:
        raise MediaError("odd-length-pcm", f"16-bit PCM needs an even byte count, got {len(pcm16)}")
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
    samples /= 32768.0
    return samples


def float_to_pcm16(audio: FloatAudio) -> bytes:
    """Convert float audio to 16-bit little-endian PCM, clipping to [-1, 1]."""
    scaled = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0
    pcm: bytes = np.rint(scaled).astype("<i2").tobytes()
    return pcm


def encode_wav(pcm16: bytes, sample_rate: int) -> bytes:
    """Wrap 16-bit little-endian mono PCM in a WAV header."""
    if len(pcm16) % 2:
        raise MediaError("odd-length-pcm", f"16-bit PCM needs an even byte count, got {len(pcm16)}")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm16)
    return buffer.getvalue()


def _decode_pcm(data: bytes, *, max_seconds: float, sample_rate: int) -> FloatAudio:
    if len(data) % 2:
        raise MediaError(
            "odd-length-pcm",
            f"raw audio must be 16-bit PCM with an even byte count, got {len(data)} bytes",
        )
    seconds = len(data) / 2 / sample_rate
    if seconds > max_seconds:
        raise MediaError(
            "audio-too-long", f"the audio lasts {seconds:.1f} s; at most {max_seconds:g}"
        )
    audio = pcm16_to_float(data)
    if sample_rate == SAMPLE_RATE:
        return audio
    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    resampler = _Resampler(max_seconds)
    resampler.push(frame)
    return resampler.finish()


def _decode_container(data: bytes, fmt: str, *, max_seconds: float) -> FloatAudio:
    resampler = _Resampler(max_seconds)
    try:
        with av.open(io.BytesIO(data), "r", format=fmt, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaError("bad-audio", f"the {fmt} file has no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                resampler.push(frame)
            return resampler.finish()
    except av.FFmpegError as err:
        raise MediaError("bad-audio", f"cannot decode the {fmt} audio: {err.strerror}") from err
    except ValueError as err:  # PyAV's own checks, e.g. a stream that changes layout midway
        raise MediaError("bad-audio", f"cannot decode the {fmt} audio: {err}") from err


class _Resampler:
    """Resample frames to 16 kHz float32 mono and stop as soon as the limit is passed."""

    def __init__(self, max_seconds: float) -> None:
        self._limit = int(max_seconds * SAMPLE_RATE)
        # Channels are kept and averaged here: FFmpeg's own stereo-to-mono matrix adds the
        # channels at -3 dB each, which lifts a centred voice by 3 dB and can clip it.
        self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        self._chunks: list[FloatAudio] = []
        self._samples = 0

    def push(self, frame: av.AudioFrame | None) -> None:
        for out in self._resampler.resample(frame):
            self._samples += out.samples
            if self._samples > self._limit:
                raise MediaError(
                    "audio-too-long",
                    f"the audio lasts more than {self._limit / SAMPLE_RATE:g} s",
                )
            planes = out.to_ndarray()  # channels x samples
            self._chunks.append(planes.mean(axis=0, dtype=np.float32))

    def finish(self) -> FloatAudio:
        self.push(None)
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks)


def _mpeg_frame_length(data: bytes, at: int) -> int:
    """Return the length of the MPEG layer II/III frame whose header is at ``at``, or 0."""
    if len(data) < at + 4 or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return 0
    version = (data[at + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (data[at + 1] >> 1) & 3  # 1: III, 2: II; layer I (3) is refused, 0 is reserved
    bitrate_index = data[at + 2] >> 4
    rate_index = (data[at + 2] >> 2) & 3
    if version == 1 or layer not in (1, 2) or bitrate_index in (0, 15) or rate_index == 3:
        return 0
    if version == 3:
        table = _MPEG1_L3 if layer == 1 else _MPEG1_L2
    else:
        table = _MPEG2_L23
    bitrate = table[bitrate_index] * 1000
    rate = _MPEG_RATES[version][rate_index]
    padding = (data[at + 2] >> 1) & 1
    per_frame = 72 if layer == 1 and version != 3 else 144
    return per_frame * bitrate // rate + padding


def _mpeg_chain(data: bytes) -> bool:
    second = _mpeg_frame_length(data, 0)
    return _mpeg_frame_length(data, second) > 0 and (data[1] & 0xFE) == (data[second + 1] & 0xFE)


def _adts_frame_length(data: bytes, at: int) -> int:
    """Return the length of the ADTS (AAC) frame whose header is at ``at``, or 0."""
    if len(data) < at + 7 or data[at] != 0xFF or data[at + 1] & 0xF6 != 0xF0:
        return 0
    if (data[at + 2] >> 2) & 0xF >= 13:  # reserved sampling-frequency index
        return 0
    length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
    return length if length >= 7 else 0


def _adts_chain(data: bytes) -> bool:
    return _adts_frame_length(data, _adts_frame_length(data, 0)) > 0


class AudioDecoder:
    """Decodes uploaded audio in a bounded pool, so that decoding is admission-controlled.

    At most ``workers`` uploads are decoded (and held as samples) at once; more wait in the
    pool's line and past it are refused with ``EngineBusy``, like every engine.
    """

    def __init__(self, workers: int = 2, admission: Admission | None = None) -> None:
        self.pool = BlockingPool("audio-decode", workers, admission)

    async def decode(
        self, data: bytes, *, max_bytes: int, max_seconds: float, pcm_sample_rate: int = SAMPLE_RATE
    ) -> FloatAudio:
        """Decode ``data`` in the pool (see :func:`decode_audio`).

        What can be refused without decoding is refused before taking a place in line, so
        that an empty or oversized upload gets its own error, never ``EngineBusy``.
        """
        check_audio_bytes(data, max_bytes=max_bytes)
        return await self.pool.run(
            lambda: decode_audio(
                data, max_bytes=max_bytes, max_seconds=max_seconds, pcm_sample_rate=pcm_sample_rate
            )
        )

    def shutdown(self) -> None:
        """Stop the pool."""
        self.pool.shutdown()
