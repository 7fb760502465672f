"""Production speech recognition: any server with OpenAI's ``/audio/transcriptions``.

The audio goes up as a 16 kHz mono WAV file; the reply's ``text`` is the transcript
(Mandarin written in Simplified characters, like the embedded backend).
"""

from __future__ import annotations

from aiproject.config import Settings
from aiproject.engines.asr.base import ASR, SAMPLE_RATE, FloatAudio, Transcript
from aiproject.engines.asr.text import finish_text, normalize_language
from aiproject.engines.audio import check_float_audio, encode_wav, float_to_pcm16
from aiproject.engines.errors import RemoteError
from aiproject.engines.http import OpenAICompatClient
from aiproject.engines.models import ModelStore


class OpenAICompatASR(ASR):
    """POSTs the audio to ``{base_url}/audio/transcriptions``."""

    name = "openai"

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        asr = settings.engines.asr
        self._client = OpenAICompatClient(asr.openai, kind="asr")
        self.language = normalize_language(asr.language)
        self.max_seconds = asr.max_seconds

    def describe(self) -> str:
        """Return the backend, server and model."""
        return f"openai base_url={self._client.settings.base_url} model={self._client.model}"

    async def transcribe(self, audio: FloatAudio, *, language: str | None = None) -> Transcript:
        """Transcribe ``audio`` on the server; ``language`` overrides the configured hint."""
        samples = check_float_audio(audio, max_seconds=self.max_seconds)
        wanted = normalize_language(language) if language is not None else self.language
        form = {"model": self._client.model, "response_format": "json"}
        if wanted:
            form["language"] = wanted
        wav = encode_wav(float_to_pcm16(samples), SAMPLE_RATE)
        reply = await self._client.post_multipart(
            "audio/transcriptions", data=form, files={"file": ("audio.wav", wav, "audio/wav")}
        )
        text = reply.get("text")
        if not isinstance(text, str):
            raise RemoteError("remote-bad-response", "asr: the reply has no text field")
        # verbose replies name the language ("chinese"); only a code is worth keeping
        reported = reply.get("language")
        code = normalize_language(reported) if isinstance(reported, str) else None
        used = code if code and len(code) <= 3 else wanted
        return Transcript(
            text=finish_text(text, used),
            language=used,
            duration_s=samples.size / SAMPLE_RATE,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
