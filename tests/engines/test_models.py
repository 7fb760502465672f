"""Model preparation: atomic, idempotent, concurrent-safe."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.models import LLM_GGUFS, ModelStore, Progress


def test_whisper_parts_are_joined_once(model_store: ModelStore) -> None:
    path = model_store.whisper_base()
    model = path / "model.bin"
    assert {p.name for p in path.iterdir()} >= {"model.bin", "config.json", "tokenizer.json"}
    mtime = model.stat().st_mtime_ns
    assert model_store.whisper_base() == path
    assert model.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen2.5-1.5b"])
def test_packaged_llm_is_joined_once_and_verified(model_store: ModelStore, name: str) -> None:
    path = model_store.llm_gguf(name)
    model = LLM_GGUFS[name]
    assert path.name == model.filename
    assert path.stat().st_size == model.size  # and its sha256 was checked when it was joined
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    mtime = path.stat().st_mtime_ns
    assert model_store.llm_gguf(name) == path
    assert path.stat().st_mtime_ns == mtime


def test_unknown_packaged_llm_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        ModelStore(tmp_path, Progress(enabled=False)).llm_gguf("gemma3-270m")
    assert caught.value.code == "unknown-model"
    assert "qwen2.5-1.5b" in caught.value.message


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Progress(enabled=False))

    def broken(out: Path) -> None:
        out.write_bytes(b"half")
        raise RuntimeError("conversion crashed")

    with pytest.raises(RuntimeError):
        store.efficientnet_onnx(broken)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_preparation_builds_once(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Progress(enabled=False))
    calls = 0

    def convert(out: Path) -> None:
        nonlocal calls
        calls += 1
        out.write_bytes(b"onnx")

    threads = [threading.Thread(target=store.efficientnet_onnx, args=(convert,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == 1
    target = tmp_path / "efficientnet-lite0-v1.onnx"
    assert target.read_bytes() == b"onnx"
    assert target.stat().st_mode & 0o777 == 0o644


def test_sha_mismatch_is_reported() -> None:
    with pytest.raises(EngineUnavailable) as err:
        ModelStore._check_sha(hashlib.sha256(b"a").hexdigest(), "0" * 64)
    assert err.value.code == "model-corrupt"
