"""Chat prompts as tokens, from the GGUF's own chat template (or a named format).

The template is rendered with a placeholder in place of each message's text, then the parts
are tokenized separately: the template's own text with special tokens on (``<|im_start|>``
becomes one control token) and the message text with them off, so a user who types
``<|im_end|>`` gets plain text, never a new turn. The split also makes tokenization stable at
message boundaries, so every prompt that starts with the same messages starts with the same
tokens: what the prefix cache relies on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llama_cpp import llama_chat_format

from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.llm.base import ChatMessage, Role

# Formats llama-cpp-python ships, for a GGUF without a usable template.
NAMED_FORMATS: dict[str, Callable[..., llama_chat_format.ChatFormatterResponse]] = {
    "chatml": llama_chat_format.format_chatml,
    "llama-3": llama_chat_format.format_llama3,
    "mistral-instruct": llama_chat_format.format_mistral_instruct,
    "qwen": llama_chat_format.format_qwen,
    "zephyr": llama_chat_format.format_zephyr,
}

# Private-use characters: no template contains them, so a placeholder is unambiguous.
_HOLE = re.compile("\ue000(\\d+)\ue001")
_PROBE = "\ue002"

Tokenize = Callable[[str, bool], list[int]]


def _hole(index: int) -> str:
    return f"\ue000{index}\ue001"


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt's tokens and the stop strings its format adds."""

    tokens: list[int]
    stops: tuple[str, ...]


class ChatTemplate:
    """Turns chat messages into prompt tokens the way the model was trained to read them."""

    def __init__(
        self,
        formatter: Callable[..., llama_chat_format.ChatFormatterResponse],
        tokenize: Tokenize,
        *,
        bos_token: int | None,
        name: str,
    ) -> None:
        self._formatter = formatter
        self._tokenize = tokenize
        self._bos_token = bos_token
        self.name = name

    @classmethod
    def from_model(
        cls,
        metadata: dict[str, str],
        tokenize: Tokenize,
        piece: Callable[[int], str],
        *,
        bos_token: int | None,
        eos_token: int,
        chat_format: str,
    ) -> ChatTemplate:
        """Use ``chat_format`` if named, else the model's ``tokenizer.chat_template``."""
        if chat_format:
            if chat_format not in NAMED_FORMATS:
                raise EngineUnavailable(
                    "bad-chat-format",
                    f"engines.llm.chat_format={chat_format!r}; leave it empty for the model's "
                    f"own template or choose one of: {', '.join(NAMED_FORMATS)}",
                )
            return cls(NAMED_FORMATS[chat_format], tokenize, bos_token=bos_token, name=chat_format)
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineUnavailable(
                "bad-chat-format",
                "llm: the GGUF has no chat template; set engines.llm.chat_format "
                f"(one of: {', '.join(NAMED_FORMATS)})",
            )
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=piece(eos_token),
            bos_token=piece(bos_token) if bos_token is not None else "",
        )
        # The template writes BOS itself where the model wants one.
        return cls(formatter, tokenize, bos_token=None, name="gguf")

    def prompt(self, messages: Sequence[ChatMessage]) -> ChatPrompt:
        """Return the tokens of ``messages`` followed by the assistant's turn opening."""
        parts, stops = self._render(messages)
        return ChatPrompt(self._tokens(parts, [m.content for m in messages]), stops)

    def prefix(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Return the tokens every prompt that starts with ``messages`` and a user turn starts with.

        Rendered with a probe user turn and cut where its text would begin, so the tokens are
        exactly those :meth:`prompt` produces for such a conversation.
        """
        probe = ChatMessage(Role.USER, _PROBE)
        parts, _ = self._render([*messages, probe])
        holes = [m.content for m in messages]
        tokens: list[int] = []
        for index, part in enumerate(parts):
            if index % 2 and int(part) == len(holes):
                break
            tokens += self._piece_tokens(index, part, holes)
        return self._with_bos(tokens)

    def _render(self, messages: Sequence[ChatMessage]) -> tuple[list[str], tuple[str, ...]]:
        """Render with placeholders; return the text split around them, and stop strings."""
        if not messages:
            raise BadInput("empty-messages", "a chat request needs at least one message")
        shaped = [{"role": m.role.value, "content": _hole(i)} for i, m in enumerate(messages)]
        try:
            result = self._formatter(messages=shaped)
        except Exception as err:  # jinja2 errors, or the template's raise_exception()
            raise BadInput("bad-messages", f"the chat template refused them: {err}") from err
        stop = result.stop
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if self.name == "gguf":
            stops = ()  # the end-of-turn token ends generation; its text never appears
        return _HOLE.split(result.prompt), stops

    def _tokens(self, parts: list[str], holes: list[str]) -> list[int]:
        tokens: list[int] = []
        for index, part in enumerate(parts):
            tokens += self._piece_tokens(index, part, holes)
        return self._with_bos(tokens)

    def _piece_tokens(self, index: int, part: str, holes: list[str]) -> list[int]:
        # re.split puts the captured placeholder numbers at odd indexes.
        if index % 2:
            return self._tokenize(holes[int(part)], False)
        return self._tokenize(part, True) if part else []

    def _with_bos(self, tokens: list[int]) -> list[int]:
        if self._bos_token is None or tokens[:1] == [self._bos_token]:
            return tokens
        return [self._bos_token, *tokens]
