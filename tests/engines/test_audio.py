"""Audio decoding: raw PCM, containers, resampling, limits and every refusal's code."""

from __future__ import annotations

import asyncio
import io
import threading
import wave

import numpy as np
import pytest

from aiproject.engines.audio import (
    AudioDecoder,
    check_float_audio,
    decode_audio,
    encode_wav,
    float_to_pcm16,
    pcm16_to_float,
    sniff_audio_format,
)
from aiproject.engines.blocking import Admission
from aiproject.engines.errors import EngineBusy, MediaError
from tests.engines.speech_fixtures import (
    RATE,
    Floats,
    encode,
    peak_frequency,
    resample,
    sample,
    similarity,
    tone,
    wav_bytes,
)

MB = 1024 * 1024
GOFORWARD = sample("en_goforward.raw")


def decode(data: bytes, **limits: float) -> Floats:
    """Decode with generous limits unless a test narrows one."""
    return decode_audio(
        data,
        max_bytes=int(limits.get("max_bytes", 16 * MB)),
        max_seconds=limits.get("max_seconds", 120.0),
    )


def refused(data: bytes, **limits: float) -> str:
    """Return the error code decoding ``data`` raises."""
    with pytest.raises(MediaError) as caught:
        decode(data, **limits)
    return caught.value.code


# --- raw PCM --------------------------------------------------------------------------------


def test_raw_pcm_is_read_as_16_bit_little_endian_mono() -> None:
    pcm = GOFORWARD.pcm16()
    audio = decode(pcm)
    assert audio.dtype == np.float32
    assert audio.shape == (len(pcm) // 2,)
    assert np.array_equal(audio, GOFORWARD.floats())
    assert sniff_audio_format(pcm) is None


def test_raw_pcm_at_another_rate_is_resampled() -> None:
    pcm = float_to_pcm16(tone(440, 1.0, 8000))
    audio = decode_audio(pcm, max_bytes=MB, max_seconds=10, pcm_sample_rate=8000)
    assert abs(audio.size - RATE) <= 32
    assert peak_frequency(audio) == pytest.approx(440, abs=2)


def test_pcm_helpers_round_trip() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0], dtype=np.float32)
    pcm = float_to_pcm16(audio)
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    assert pcm16_to_float(pcm).tolist() == pytest.approx(np.clip(audio, -1, 1), abs=1e-4)


def test_encode_wav_writes_a_standard_header() -> None:
    pcm = GOFORWARD.pcm16()
    data = encode_wav(pcm, 16000)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.readframes(wav.getnframes()) == pcm
    assert np.array_equal(decode(data), GOFORWARD.floats())


# --- containers -----------------------------------------------------------------------------

CONTAINERS = [
    # (demuxer we expect, PyAV muxer, codec, encoder rate)
    ("wav", "wav", "pcm_s16le", 16000),
    ("ogg", "ogg", "libopus", 48000),
    ("matroska", "webm", "libopus", 48000),
    ("mp3", "mp3", "libmp3lame", 16000),
    ("flac", "flac", "flac", 16000),
    ("mov", "ipod", "aac", 16000),
    ("aac", "adts", "aac", 16000),
    ("aiff", "aiff", "pcm_s16be", 22050),
]


@pytest.mark.parametrize(("expected", "muxer", "codec", "rate"), CONTAINERS)
def test_container_is_sniffed_decoded_and_resampled(
    expected: str, muxer: str, codec: str, rate: int
) -> None:
    reference = GOFORWARD.floats()
    data = encode(reference, muxer, codec, rate)
    assert sniff_audio_format(data) == expected
    audio = decode(data)
    assert audio.dtype == np.float32
    # Codecs add at most a frame of priming or padding.
    assert abs(audio.size - reference.size) <= 2048
    # The decoded signal is the original, give or take codec delay and lossy coding.
    assert similarity(audio, reference) > 0.9


def test_mp3_without_id3_tag_is_recognised_by_two_frame_headers() -> None:
    data = encode(GOFORWARD.floats(), "mp3", "libmp3lame", 16000)
    assert data.startswith(b"ID3")
    size = ((data[6] & 0x7F) << 21) | ((data[7] & 0x7F) << 14) | ((data[8] & 0x7F) << 7)
    bare = data[10 + size + (data[9] & 0x7F) :]
    assert bare[0] == 0xFF
    assert sniff_audio_format(bare) == "mp3"
    assert abs(decode(bare).size - GOFORWARD.floats().size) <= 2048


def test_pcm_that_starts_like_an_mpeg_frame_stays_pcm() -> None:
    # 0xFB_FF as the first sample is a valid MPEG-1 layer III header; no second one follows.
    pcm = bytes([0xFF, 0xFB, 0x90, 0x64]) + GOFORWARD.pcm16()
    assert sniff_audio_format(pcm) is None
    assert decode(pcm).size == len(pcm) // 2
    # A first sample of -1 (0xFF 0xFF) looks like an MPEG layer I sync word, also refused.
    assert sniff_audio_format(b"\xff\xff" + GOFORWARD.pcm16()) is None


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_wav_at_another_rate_is_resampled_to_16k(rate: int) -> None:
    audio = decode(wav_bytes(tone(1000, 2.0, rate), rate))
    assert abs(audio.size - 2 * RATE) <= 32
    assert peak_frequency(audio) == pytest.approx(1000, abs=1)
    middle = audio[RATE // 2 : -RATE // 2]
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_speech_wav_at_44k_matches_the_16k_original() -> None:
    reference = GOFORWARD.floats()
    audio = decode(wav_bytes(resample(reference, RATE, 44100), 44100))
    assert abs(audio.size - reference.size) <= 4
    assert similarity(audio, reference, max_lag=4) > 0.99


def test_stereo_is_averaged_to_mono_without_gain() -> None:
    reference = tone(300, 1.0, RATE)
    audio = decode(wav_bytes(reference, RATE, channels=2))
    assert np.abs(audio - reference).max() < 1e-3


# --- refusals -------------------------------------------------------------------------------


def test_empty_bytes_are_refused() -> None:
    assert refused(b"") == "empty-audio"


def test_container_without_samples_is_empty() -> None:
    assert refused(encode_wav(b"", 16000)) == "empty-audio"


def test_odd_length_pcm_is_refused() -> None:
    assert refused(GOFORWARD.pcm16()[:-1]) == "odd-length-pcm"
    with pytest.raises(MediaError) as caught:
        pcm16_to_float(b"\x00\x01\x02")
    assert caught.value.code == "odd-length-pcm"
    with pytest.raises(MediaError) as caught:
        encode_wav(b"\x00", 16000)
    assert caught.value.code == "odd-length-pcm"


def test_too_many_bytes_are_refused_before_decoding() -> None:
    assert refused(GOFORWARD.pcm16(), max_bytes=1024) == "audio-too-large"


def test_too_long_pcm_is_refused() -> None:
    assert refused(GOFORWARD.pcm16(), max_seconds=2.0) == "audio-too-long"  # it lasts 2.79 s


def test_too_long_compressed_audio_is_refused_while_decoding() -> None:
    minute = np.tile(GOFORWARD.floats(), 22)  # 61 s
    data = encode(minute, "ogg", "libopus", 48000)
    assert len(data) < minute.nbytes / 4  # small upload, large once decoded
    assert refused(data, max_seconds=30.0) == "audio-too-long"


GARBAGE = bytes(range(256)) * 8


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"RIFF" + GARBAGE, id="riff"),
        pytest.param(b"RIFF\x00\x10\x00\x00WAVE" + GARBAGE, id="riff-wave"),
        pytest.param(encode_wav(b"\x00\x00" * 100, 16000)[:30], id="truncated-wav-header"),
        pytest.param(b"OggS" + GARBAGE, id="ogg"),
        pytest.param(b"ID3" + GARBAGE, id="id3"),
        pytest.param(b"\x1a\x45\xdf\xa3" + GARBAGE, id="webm"),
        pytest.param(b"\x00\x00\x00\x18ftypisom" + GARBAGE, id="mp4"),
        pytest.param(b"fLaC" + GARBAGE, id="flac"),
        pytest.param(b"FORM\x00\x00\x10\x00AIFF" + GARBAGE, id="aiff"),
        pytest.param(b"#!AMR\n" + GARBAGE, id="amr"),
    ],
)
def test_garbage_behind_a_container_header_is_bad_audio(data: bytes) -> None:
    assert sniff_audio_format(data) is not None
    assert refused(data) == "bad-audio"


def test_truncated_ogg_without_audio_pages_is_bad_audio() -> None:
    data = encode(GOFORWARD.floats(), "ogg", "libopus", 48000)
    assert refused(data[:200]) == "bad-audio"


def test_garbage_without_a_header_is_accepted_as_pcm_noise() -> None:
    # Headerless PCM cannot be validated: any even-length bytes are some signal. The
    # recogniser, not the decoder, deals with them (see test_asr).
    noise = np.random.default_rng(7).bytes(3200)
    assert sniff_audio_format(noise) is None
    assert decode(noise).size == 1600
    text = "这不是音频".encode() + b"!"
    assert decode(text).size == len(text) // 2


# --- arrays handed to engines ---------------------------------------------------------------


def test_check_float_audio_accepts_mono_and_converts_to_float32() -> None:
    audio = check_float_audio(np.zeros(160, dtype=np.float64), max_seconds=1)
    assert audio.dtype == np.float32
    assert audio.flags.c_contiguous


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (np.zeros(0, dtype=np.float32), "empty-audio"),
        (np.zeros((2, 160), dtype=np.float32), "bad-audio"),
        (np.zeros(RATE * 2 + 1, dtype=np.float32), "audio-too-long"),
    ],
)
def test_check_float_audio_refuses(audio: Floats, code: str) -> None:
    with pytest.raises(MediaError) as caught:
        check_float_audio(audio, max_seconds=2)
    assert caught.value.code == code


async def test_the_decoder_refuses_empty_and_oversized_uploads_before_its_full_line() -> None:
    decoder = AudioDecoder(workers=1, admission=Admission(max_waiting=0))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(60)

    held = asyncio.ensure_future(decoder.pool.run(hold))
    try:
        assert await asyncio.to_thread(holding.wait, 60)
        with pytest.raises(EngineBusy):  # the line is full
            await decoder.decode(b"\x00\x01" * 800, max_bytes=1 << 20, max_seconds=10)
        for data, code in [(b"", "empty-audio"), (b"\x00" * 101, "audio-too-large")]:
            with pytest.raises(MediaError) as refused:
                await decoder.decode(data, max_bytes=100, max_seconds=10)
            assert refused.value.code == code
    finally:
        release.set()
        await held
    audio = await decoder.decode(b"\x00\x01" * 800, max_bytes=1 << 20, max_seconds=10)
    assert audio.size == 800
    decoder.shutdown()
