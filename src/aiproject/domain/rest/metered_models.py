"""The model calls of the REST API (spec 02): chat, streamed chat, speech and pictures.

Text and pictures are metered against the caller's quotas: a request that the quota cannot
cover is refused before anything is generated, and afterwards exactly what the engine
reported is deducted (never below zero) in one transaction with its ledger row.

A streamed answer closed early (the client went away) stops generation and is billed from
the engine's :class:`UsageMeter`: the counts of what it evaluated and sampled up to the stop,
exact where the engine's final usage would have been. An engine that leaves the meter empty
is billed an estimate from its tokenizer: the dialog text plus the answer text produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from enum import StrEnum

import anyio

from aiproject.config import Settings
from aiproject.domain.personas import ChatPrompts, ChatSurface
from aiproject.domain.rest.accounts import Account, Accounts
from aiproject.engines.images import ImageLimits, encode_jpeg, sniff_image_format
from aiproject.engines.llm.base import LLM, ChatMessage, GenerationOptions, Role, UsageMeter
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

_PICTURE_FORMATS = ("jpeg", "png")
# Pictures are decoded no larger than this longer side: rapidocr shrinks anything larger to
# it before detection (its Global.max_side_len), and a vision server gets no more either.
PICTURE_SIDE = 2000


class ModelCallError(AiProjectError):
    """A request the model endpoints refuse (bad dialog, missing backend)."""


class PictureMode(StrEnum):
    """What PictureToTextModel returns."""

    OCR = "ocr"  # the recognised text, lines joined by newlines
    DESCRIBE = "describe"  # a description from the vision-language backend


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class Answer:
    """The end of an answer: its last text and what it cost.

    ``question_tokens`` counts the last user message alone; ``prompt_tokens`` and
    ``completion_tokens`` are the engine's counts; ``charged`` is what left the quota.
    """

    text: str
    question_tokens: int
    prompt_tokens: int
    completion_tokens: int
    charged: int

    @property
    def total_tokens(self) -> int:
        """Return prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class ChatTurn:
    """One metered generation, created only once the caller and the quota are checked."""

    def __init__(
        self,
        llm: LLM,
        accounts: Accounts,
        account: Account,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        *,
        question_tokens: int,
        dialog_tokens: int,
    ) -> None:
        self._llm = llm
        self._accounts = accounts
        self._account = account
        self._messages = tuple(messages)
        self._options = options
        self._question_tokens = question_tokens
        self._dialog_tokens = dialog_tokens

    async def events(self) -> AsyncGenerator[Delta | Answer, None]:
        """Yield the answer's pieces, then the :class:`Answer` once it has been billed.

        Closing the iterator early stops generation and bills what was produced.
        """
        produced: list[str] = []
        billed = False
        meter = UsageMeter()
        chunks = self._llm.stream(self._messages, replace(self._options, meter=meter))
        try:
            async for chunk in chunks:
                if chunk.usage is None:
                    if chunk.text:
                        produced.append(chunk.text)
                        yield Delta(chunk.text)
                    continue
                with anyio.CancelScope(shield=True):
                    charge = await self._accounts.charge_tokens(
                        self._account, chunk.usage.total_tokens, "chat"
                    )
                billed = True
                yield Answer(
                    text=chunk.text,
                    question_tokens=self._question_tokens,
                    prompt_tokens=chunk.usage.prompt_tokens,
                    completion_tokens=chunk.usage.completion_tokens,
                    charged=charge.charged,
                )
        finally:
            # Shielded: closing stops the engine and makes its meter final, and a cancelled
            # request must still pay for what it generated.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                if not billed:
                    await self._bill_interrupted(meter, produced)

    async def _bill_interrupted(self, meter: UsageMeter, produced: list[str]) -> None:
        """Charge a turn that ended before the engine reported its usage (if it made any)."""
        if meter.completion_tokens:
            # The engine's counts (if it left the prompt out, the dialog text stands for it).
            tokens = (meter.prompt_tokens or self._dialog_tokens) + meter.completion_tokens
        elif produced:
            # The engine does not fill the meter: estimate with its tokenizer.
            tokens = self._dialog_tokens + await self._llm.count_tokens("".join(produced))
        else:
            return  # nothing was generated
        await self._accounts.charge_tokens(self._account, tokens, "chat-interrupted")

    async def complete(self) -> tuple[str, Answer]:
        """Generate the whole answer; return its text and the billed :class:`Answer`."""
        parts: list[str] = []
        async with aclosing(self.events()) as events:
            async for event in events:
                parts.append(event.text)
                if isinstance(event, Answer):
                    return "".join(parts), event
        raise ModelCallError("no-answer", "the text model ended without an answer")


class MeteredModels:
    """Chat, speech and picture calls on the process's engines, billed to accounts."""

    def __init__(self, engines: Engines, accounts: Accounts, settings: Settings) -> None:
        self.engines = engines
        self.accounts = accounts
        self.settings = settings
        self.prompts = ChatPrompts.for_surface(ChatSurface.REST, settings, engines)

    async def start_chat(
        self, public_id: str | None, username: str | None, dialog: Sequence[ChatMessage]
    ) -> ChatTurn:
        """Check the caller, the dialog and the token quota; return the turn to generate."""
        rest = self.settings.rest
        account = await self.accounts.identify(public_id, username)
        if len(dialog) > rest.max_dialog_messages:
            raise ModelCallError(
                "dialog-invalid",
                f"the dialog has {len(dialog)} messages; at most {rest.max_dialog_messages}",
            )
        questions = [m for m in dialog if m.role is Role.USER]
        if not questions or not questions[-1].content.strip():
            raise ModelCallError("dialog-invalid", "the dialog needs a non-empty user message")
        llm = await self.engines.llm()
        question_tokens = await llm.count_tokens(questions[-1].content)
        dialog_tokens = sum([await llm.count_tokens(m.content) for m in dialog])
        # The dialog text alone is a lower bound of the prompt; the answer must fit too.
        balance = await self.accounts.require_tokens(account, dialog_tokens + 1)
        options = GenerationOptions(
            max_tokens=min(rest.max_tokens, balance - dialog_tokens),
            temperature=rest.temperature,
            seed=rest.seed,
        )
        return ChatTurn(
            llm,
            self.accounts,
            account,
            await self._prompt(dialog),
            options,
            question_tokens=question_tokens,
            dialog_tokens=dialog_tokens,
        )

    async def _prompt(self, dialog: Sequence[ChatMessage]) -> list[ChatMessage]:
        """Return the prompt: persona, dialog, and the last question with its context.

        The REST persona comes first unless the dialog brings a system message of its own;
        the context (a service guide, the clock) rides in the last user message.
        """
        last = max(i for i, message in enumerate(dialog) if message.role is Role.USER)
        question = dialog[last].content
        context = await self.prompts.context(question)
        own = any(message.role is Role.SYSTEM for message in dialog)
        asked = self.prompts.messages(dialog[:last], question, context, with_prefix=not own)
        return [*asked, *dialog[last + 1 :]]

    async def transcribe(self, data: bytes) -> str:
        """Return the text spoken in PCM16 16 kHz mono or an audio file (WAV, ...)."""
        asr_settings = self.settings.engines.asr
        audio = await self.engines.audio.decode(
            data,
            max_bytes=self.settings.limits.max_audio_bytes,
            max_seconds=asr_settings.max_seconds,
        )
        asr = await self.engines.asr()
        transcript = await asr.transcribe(audio, language=asr_settings.language)
        return transcript.text.strip()

    async def read_picture(
        self, public_id: str | None, username: str | None, data: bytes, mode: PictureMode
    ) -> str:
        """Return the text in a picture (or its description); one picture of quota."""
        account = await self.accounts.identify(public_id, username)
        await self.accounts.require_picture(account)
        limits = ImageLimits(
            max_bytes=self.settings.limits.max_upload_bytes,
            max_pixels=self.settings.limits.max_image_pixels,
        )
        if sniff_image_format(data) not in _PICTURE_FORMATS:
            raise ModelCallError("file-format-illegal", "the picture must be a JPEG or PNG image")
        image = await self.engines.images.decode(data, limits, max_side=PICTURE_SIDE)
        if mode is PictureMode.DESCRIBE:
            vision = await self.engines.vision()
            if vision is None:
                raise ModelCallError(
                    "vision-unavailable", "no vision-language backend is configured"
                )
            jpeg = await asyncio.to_thread(encode_jpeg, image)
            parts = [
                chunk.text
                async for chunk in vision.stream(jpeg, self.settings.rest.describe_prompt)
            ]
            text = "".join(parts).strip()
        else:
            text = (await (await self.engines.ocr()).recognize(image)).text
        await self.accounts.charge_picture(account, mode.value)
        return text
