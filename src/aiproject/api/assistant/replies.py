"""The JSON messages of spec 01's sockets and HTTP flow, and what each ``reason`` means.

Every reply carries the spec's four keys ``user_id``, ``type``, ``hash`` and (sockets)
``message`` or (HTTP) the type's own fields. Refusals add ``reason`` (a stable code, listed
in docs/protocols/assistant.md) and ``detail`` (a sentence for people).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, busy
from aiproject.engines.errors import BadInput, EngineError
from aiproject.errors import AiProjectError
from aiproject.store.errors import StoreError

log = logging.getLogger(__name__)

# What a person reads for each reason; codes without an entry fall back to a generic text.
DETAILS: dict[str, str] = {
    "expected-image": "请发送一张图片的二进制数据",
    "expected-audio": "请发送音频的二进制数据",
    "expected-text": "请发送文本消息",
    "expected-handshake": "请先发送握手 JSON",
    "bad-json": "消息不是合法的 JSON",
    "bad-request": "请求的字段有误",
    "unknown-type": "不支持的 type",
    "empty-text": "文本为空",
    "text-too-long": "文本太长",
    "empty-image": "图片为空",
    "not-an-image": "不是 JPEG、PNG、WebP、GIF 或 BMP 图片",
    "bad-image": "图片已损坏",
    "image-too-large": "图片太大",
    "image-too-small": "图片太小",
    "empty-audio": "音频为空",
    "audio-too-large": "音频太大",
    "audio-too-long": "音频太长",
    "bad-audio": "音频无法解码",
    "odd-length-pcm": "PCM 音频字节数必须为偶数",
    "bad-base64": "media 不是合法的 base64",
    "no-handshake": "会话不存在或已过期, 请先握手",
    "no-item": "握手时没有识别出要办理的事项, 请重新握手",
    "interview-unfinished": "信息尚未采集完整, 请先完成对话",
    "not-stored": "信息尚未录入, 请先录入",
    "face-taken": "这张人脸已经录入到其他用户名下",
    "superseded": "本次对话已在新的连接上继续",
    "processing": "会话正在处理中, 请稍后再试",
    "busy": "服务器繁忙, 请稍后再试",
    "body-too-large": "请求体太大",
    "body-timeout": "请求体上传超时",
    "answer-timeout": "等待回答超时",
    "message-too-large": "消息太大",
    "over-budget": "请求次数过多",
    "storage-failed": "数据库暂时不可用, 请稍后重试",
    "engine-failed": "识别服务暂时不可用, 请稍后重试",
    "internal-error": "内部错误, 请稍后重试",
}


def detail(reason: str, message: str = "") -> str:
    """Return the sentence for ``reason``, with the error's own message after it."""
    words = DETAILS.get(reason, "请求失败")
    return f"{words} ({message})" if message else words


def socket_reply(
    kind: str,
    hash_: str,
    message: str,
    *,
    user_id: str = "",
    reason: str = "",
    text: str = "",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Return a socket message: the spec's keys in its order, then ``reason``, ``detail``."""
    body: dict[str, Any] = {"user_id": user_id, "type": kind, "hash": hash_, "message": message}
    if reason:
        body["reason"] = reason
        if message in ("error", "busy"):
            body["detail"] = detail(reason, text)
    body.update(extra or {})
    return json.dumps(body, ensure_ascii=False)


def _behind_us(reason: str) -> Callable[[Any], Failure]:
    """Answer a failure of an engine or the database: logged, its details not sent."""

    def answer(err: Any) -> Failure:
        log.warning("assistant: %s code=%s: %s", reason, err.code, err.message)
        return Failure(_STATUS[reason], reason, "")

    return answer


# HTTP status of each kind of refusal (sent only with assistant.http_status = "semantic").
_STATUS = {"storage-failed": 503, "engine-failed": 502, "internal-error": 500}

# The one place failures become reasons: the caller's mistakes keep their code and message,
# failures behind us are logged and answered without details, anything else is a bug.
ERRORS = ErrorMapper(
    surface="assistant",
    unexpected=Failure(500, "internal-error", ""),
    codes={
        "malformed-json": Outcome(400, "bad-json"),
        "body-too-large": Outcome(413),
        "body-timeout": Outcome(408),
        "client-gone": Outcome(400),
    },
    # An engine's line is full: HTTP answers the spec's {"type": "busy"}, sockets "busy".
    rules=[busy(503, "busy", ""), (BadInput, Outcome(400))],
    fallbacks=[
        (StoreError, _behind_us("storage-failed")),
        (EngineError, _behind_us("engine-failed")),
        (AiProjectError, Outcome(400)),
    ],
)


def socket_refusal(kind: str, hash_: str, err: BaseException, *, user_id: str = "") -> str:
    """Return the socket reply to a failure: ``message: "busy"`` (``reason: "busy"``,
    ``retry_after_s``) when an engine is busy, else ``message: "error"`` and its reason."""
    failure = ERRORS.failure(err)
    if failure.code == "busy":
        retry = {"retry_after_s": int((failure.headers or {}).get("Retry-After", "2"))}
        return socket_reply(kind, hash_, "busy", user_id=user_id, reason="busy", extra=retry)
    return socket_reply(
        kind, hash_, "error", user_id=user_id, reason=failure.code, text=failure.message
    )


def reason_of(err: BaseException) -> tuple[str, str]:
    """Return (reason, message) for any failure."""
    failure = ERRORS.failure(err)
    return failure.code, failure.message
