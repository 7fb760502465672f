"""Okapi BM25 over character unigrams and bigrams: a cheap lexical signal for Chinese.

No word segmenter: "身份证丢了" gives 身 份 证 丢 了 身份 份证 证丢 丢了, which matches
"身份证挂失补领" on 身份/份证 whatever the segmentation of either text would be.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_KEEP = re.compile(r"[\u4e00-\u9fffA-Za-z0-9]+")
# Characters too common in requests to say anything about the service.
STOP_CHARS = frozenset("我要想的了吗呢啊吧怎么办理去哪里什么需要能可以是在有个这那给一下")


def tokens(text: str) -> list[str]:
    """Return the character unigrams (less stop characters) and bigrams of ``text``."""
    out: list[str] = []
    for run in _KEEP.findall(text.lower()):
        out.extend(ch for ch in run if ch not in STOP_CHARS)
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


class BM25Index:
    """Scores a query against a fixed set of documents (one per catalogue item)."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._docs = [Counter(tokens(doc)) for doc in documents]
        lengths = np.array([sum(doc.values()) for doc in self._docs], dtype=np.float64)
        self._norm = k1 * (1 - b + b * lengths / max(float(lengths.mean()), 1.0))
        frequency: Counter[str] = Counter()
        for doc in self._docs:
            frequency.update(doc.keys())
        n = len(self._docs)
        self._idf = {
            term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()
        }

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """Return one BM25 score per document."""
        out = np.zeros(len(self._docs), dtype=np.float64)
        for term in set(tokens(query)):
            idf = self._idf.get(term)
            if idf is None:
                continue
            tf = np.array([doc.get(term, 0) for doc in self._docs], dtype=np.float64)
            out += idf * tf * (self.k1 + 1) / (tf + self._norm)
        return out
