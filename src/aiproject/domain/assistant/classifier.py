"""Which service items a request names: e5 ranks, USE gates, BM25 adds the literal words.

Signals, all offline and precomputed for the catalogue once:

* e5 (multilingual-e5-small): the request as ``query: ``, every name, alias and phrasing of
  every item as ``passage: ``; an item scores its best example (best-alias scoring).
* USE (multilingual Universal Sentence Encoder): the highest similarity of the request to any
  example. Small talk stays far below service requests, so it gates "not a service request".
* BM25 over character uni- and bigrams: how many of the request's characters the item's
  texts share, scaled to the best item, as a tie-breaker for literal names and typos.

A request that names several items ("护照和港澳通行证") is split at its connectives and each
part that is confidently a service becomes one match, in the order said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aiproject.domain.assistant import embedding_cache
from aiproject.domain.assistant.bm25 import BM25Index
from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.engines.embedding.base import TextEmbedder, Vectors


@dataclass(frozen=True)
class Thresholds:
    """Where the scores are cut; defaults measured on the development set (bench)."""

    gate: float = 0.55  # USE similarity at least this: a service request ...
    gate_floor: float = 0.45  # ... and from here up when e5 or BM25 also says so:
    rank_floor: float = 0.895  # e5's best example at least this close, or
    lexical_floor: float = 15.0  # a raw BM25 score at least this high
    bm25_weight: float = 0.04  # of the best-scaled BM25 score, added to e5's
    close: float = 0.012  # a runner-up this near the winner makes the call a close one
    part_gate: float = 0.55  # a part of a split request must pass the gate on its own
    part_near: float = 0.05  # and its item be this near the best item of the whole request


@dataclass(frozen=True)
class Candidate:
    """An item and its combined score for a request."""

    item: ServiceItem
    score: float


@dataclass(frozen=True)
class Match:
    """One service the request names.

    ``label`` is what the handshake's ``classify`` says for it: the item's name, or its
    group's name ("身份证") when the request does not say which of the group it means.
    ``alternatives`` are the runners-up close to ``item`` (empty when the call is clear).
    """

    item: ServiceItem
    label: str
    confidence: float
    alternatives: tuple[ServiceItem, ...] = ()

    @property
    def is_group(self) -> bool:
        """Say whether only the group is known, not which of its items."""
        return self.label != self.item.name


@dataclass(frozen=True)
class Classification:
    """The items a request names, or none when it is no service request."""

    text: str
    matches: tuple[Match, ...]
    top: tuple[Candidate, ...]  # the three best items for the whole request
    gate_score: float  # USE similarity to the closest catalogue example

    @property
    def is_service(self) -> bool:
        """Say whether the request names at least one service."""
        return bool(self.matches)

    @property
    def items(self) -> tuple[ServiceItem, ...]:
        """Return the matched items (the best of each match)."""
        return tuple(match.item for match in self.matches)

    @property
    def label(self) -> str:
        """Return the handshake's ``classify``: labels joined by "/", "" when none."""
        return "/".join(match.label for match in self.matches)

    @property
    def confidence(self) -> float:
        """Return the lowest confidence among the matches (0 when none)."""
        return min((match.confidence for match in self.matches), default=0.0)


@dataclass(frozen=True)
class _Scores:
    """Every signal for one text."""

    combined: npt.NDArray[np.float64]  # per item
    rank: npt.NDArray[np.float64]  # e5 best example per item
    gate: float
    lexical: float  # raw BM25 score of the best item


# A request is read up to here, and split into at most this many parts (the embedding cost
# grows with the parts; nobody asks for more services at once).
MAX_REQUEST_CHARS = 300
MAX_PARTS = 6

# Connectives between two requests ("护照和港澳通行证", "…，还要上户口"); plain commas are not,
# since one request often has several clauses ("人在深圳，身份证到期能换吗").
_SPLIT = re.compile(r"还有|还要|另外|顺便|同时|以及|并且|再把|再办|[、；;]|和|跟|与")


class ServiceCatalog:
    """The catalogue with its precomputed embeddings; ``classify`` names requested items."""

    def __init__(
        self,
        items: Sequence[ServiceItem],
        ranker: TextEmbedder,
        gate: TextEmbedder | None,
        *,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.items = tuple(items)
        self.by_id = {item.id: item for item in self.items}
        self.ranker = ranker
        self.gate = gate
        self.thresholds = thresholds or Thresholds()
        self.bm25 = BM25Index([" ".join(item.examples) for item in self.items])
        examples = [
            (i, text)
            for i, item in enumerate(self.items)
            for text in (*item.examples, *self._group_examples(item))
        ]
        self._owner = np.array([i for i, _ in examples], dtype=np.int64)
        self._texts = [text for _, text in examples]
        self._rank_vectors: Vectors | None = None
        self._gate_vectors: Vectors | None = None

    def _group_examples(self, item: ServiceItem) -> tuple[str, ...]:
        """Return the generic names of a shared group, given equally to every member.

        "我要办身份证" then scores every 身份证 item alike, the call is close within the
        group, and the match is labelled with the group rather than a guessed member.
        """
        members = sum(1 for other in self.items if other.group == item.group)
        if members < 2 or item.group == item.name:
            return ()
        return (item.group, f"办{item.group}", f"我要办{item.group}", f"办理{item.group}")

    @classmethod
    async def build(
        cls,
        items: Sequence[ServiceItem],
        ranker: TextEmbedder,
        gate: TextEmbedder | None,
        *,
        thresholds: Thresholds | None = None,
        cache_dir: Path | None = None,
    ) -> ServiceCatalog:
        """Return a catalogue whose example embeddings are computed (once, here).

        With ``cache_dir`` the embeddings are kept there between starts, one file per model
        and set of examples (a changed catalogue or model computes new ones).
        """
        catalog = cls(items, ranker, gate, thresholds=thresholds)
        catalog._rank_vectors = await embedding_cache.passages(ranker, catalog._texts, cache_dir)
        if gate is not None:
            catalog._gate_vectors = await embedding_cache.passages(gate, catalog._texts, cache_dir)
        return catalog

    async def classify(self, text: str) -> Classification:
        """Return the items ``text`` asks for (several when it names several), or none."""
        text = text.strip()[:MAX_REQUEST_CHARS]
        parts = [p.strip() for p in _SPLIT.split(text) if len(p.strip()) >= 2]
        texts = [text, *parts[:MAX_PARTS]] if len(parts) > 1 else [text]
        scored = await self._score(texts)
        whole = scored[0]
        top = self._top(whole.combined, 3)
        if not text or not self._is_service(whole, self.thresholds.gate):
            return Classification(text, (), top, whole.gate)
        matches: list[Match] = []
        best_whole = float(whole.combined.max())
        for part in scored[1:]:
            if part.gate < self.thresholds.part_gate:
                continue
            match = self._match(part.combined)
            index = self.items.index(match.item)
            near = best_whole - whole.combined[index] <= self.thresholds.part_near
            if near and all(m.item.id != match.item.id for m in matches):
                matches.append(match)
        if len(matches) < 2:
            matches = [self._match(whole.combined)]
        return Classification(text, tuple(matches), top, whole.gate)

    def _is_service(self, scores: _Scores, gate: float) -> bool:
        """Say whether the text is a service request (the gate, helped by e5 and BM25)."""
        limits = self.thresholds
        if scores.gate >= gate:
            return True
        if scores.gate < limits.gate_floor:
            return False
        return (
            float(scores.rank.max()) >= limits.rank_floor or scores.lexical >= limits.lexical_floor
        )

    def _match(self, combined: npt.NDArray[np.float64]) -> Match:
        """Return the best item, as a group when its close runners-up share its group."""
        order = np.argsort(-combined, kind="stable")
        best = self.items[int(order[0])]
        margin = self.thresholds.close
        close = [
            self.items[int(i)] for i in order[1:3] if combined[order[0]] - combined[i] < margin
        ]
        confidence = _confidence(combined, order)
        if close and all(item.group == best.group for item in close) and best.group != best.name:
            return Match(best, best.group, confidence, tuple(close))
        return Match(best, best.name, confidence, tuple(close))

    def _top(self, combined: npt.NDArray[np.float64], k: int) -> tuple[Candidate, ...]:
        order = np.argsort(-combined, kind="stable")[:k]
        return tuple(Candidate(self.items[int(i)], float(combined[i])) for i in order)

    async def _score(self, texts: list[str]) -> list[_Scores]:
        """Return every signal for each text (one embedding call per model)."""
        if self._rank_vectors is None:
            raise RuntimeError("ServiceCatalog.build() computes the embeddings first")
        queries = await self.ranker.embed_queries(texts)
        gate_queries = await self.gate.embed_queries(texts) if self.gate is not None else None
        out: list[_Scores] = []
        for row, text in enumerate(texts):
            rank = self._best_per_item(self._rank_vectors @ queries[row])
            if gate_queries is not None and self._gate_vectors is not None:
                gate = float((self._gate_vectors @ gate_queries[row]).max())
            else:
                gate = 1.0
            lexical = self.bm25.scores(text)
            scaled = lexical / lexical.max() if lexical.max() > 0 else lexical
            combined = rank + self.thresholds.bm25_weight * scaled
            out.append(_Scores(combined, rank, gate, float(lexical.max())))
        return out

    def _best_per_item(self, similarities: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Reduce per-example similarities to each item's best."""
        best = np.full(len(self.items), -1.0, dtype=np.float64)
        np.maximum.at(best, self._owner, similarities.astype(np.float64))
        return best


def _confidence(combined: npt.NDArray[np.float64], order: npt.NDArray[np.int64]) -> float:
    """Return the winner's share of a sharp softmax over the items (0..1)."""
    shifted = (combined - combined[order[0]]) / 0.01
    weights = np.exp(shifted)
    return float(weights[order[0]] / weights.sum())
