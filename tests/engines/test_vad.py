"""Voice activity detection: real silero on the speech fixtures, silence and noise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from aiproject.engines.errors import MediaError
from aiproject.engines.registry import Engines, Kind
from aiproject.engines.vad.base import VAD
from aiproject.engines.vad.silero import SileroVAD
from tests.engines.speech_fixtures import RATE, Floats, SpeechSample, sample, samples, tone

GOFORWARD = sample("en_goforward.raw")


def silence(seconds: float) -> Floats:
    """Return digital silence."""
    return np.zeros(int(seconds * RATE), dtype=np.float32)


@pytest.fixture(scope="module")
async def vad(engines: Engines) -> VAD:
    """The embedded VAD, loaded once per session by the registry."""
    return await engines.vad()


async def test_registry_builds_silero(engines: Engines, vad: VAD) -> None:
    assert isinstance(vad, SileroVAD)
    assert engines.loaded[Kind.VAD].description.startswith("silero threshold=0.5")


@pytest.mark.parametrize("fixture", samples(), ids=lambda s: s.file)
async def test_every_speech_fixture_has_speech(vad: VAD, fixture: SpeechSample) -> None:
    audio = fixture.floats()
    spans = await vad.speech(audio)
    assert spans
    assert sum(s.end - s.start for s in spans) > 1.0
    assert all(0 <= s.start < s.end <= audio.size / RATE for s in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


async def test_speech_is_located_in_time(vad: VAD) -> None:
    audio = np.concatenate([silence(2), GOFORWARD.floats(), silence(2)])
    [span] = await vad.speech(audio)
    # goforward.raw's voice runs from about 0.5 s to 2.4 s of its 2.79 s; 200 ms padding.
    assert 2.0 < span.start < 2.6
    assert 4.0 < span.end < 4.8


async def test_pauses_longer_than_min_silence_split_utterances(vad: VAD) -> None:
    audio = np.concatenate([GOFORWARD.floats(), silence(1.5), GOFORWARD.floats()])
    spans = await vad.speech(audio)
    assert len(spans) == 2
    assert spans[0].end < 2.79 + 0.75 < spans[1].start


@pytest.mark.parametrize(
    "audio",
    [
        pytest.param(silence(3), id="digital-silence"),
        pytest.param(
            (np.random.default_rng(0).standard_normal(5 * RATE) * 0.02).astype(np.float32),
            id="white-noise",
        ),
        pytest.param(
            (np.random.default_rng(1).uniform(-1, 1, 3 * RATE)).astype(np.float32),
            id="full-scale-noise",
        ),
        pytest.param(tone(440, 3, RATE, 0.3), id="tone"),
        pytest.param(
            tone(50, 5, RATE, 0.2)
            + (np.random.default_rng(2).standard_normal(5 * RATE) * 0.01).astype(np.float32),
            id="mains-hum",
        ),
    ],
)
async def test_no_speech_in_silence_or_noise(vad: VAD, audio: Floats) -> None:
    assert await vad.speech(audio) == []


async def test_empty_audio_has_no_speech(vad: VAD) -> None:
    assert await vad.speech(np.zeros(0, dtype=np.float32)) == []


async def test_short_audio_is_handled(vad: VAD) -> None:
    assert await vad.speech(silence(0.01)) == []


async def test_stereo_array_is_refused(vad: VAD) -> None:
    with pytest.raises(MediaError) as caught:
        await vad.speech(np.zeros((2, RATE), dtype=np.float32))
    assert caught.value.code == "bad-audio"
