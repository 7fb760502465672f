"""The legacy torch checkpoint reader: real weights, hand-made files and refused globals."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from aiproject.engines.image.efficientnet_onnx import default_checkpoint
from aiproject.engines.image.torch_pickle import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    TorchPickleError,
    load_state_dict,
    loads,
)

# EfficientNet-Lite0: 4,652,008 weights (the paper's 4.7M), 49 BatchNorms.
LITE0_PARAMETERS = 4_652_008


@pytest.fixture(scope="module")
def state() -> dict[str, npt.NDArray[Any]]:
    """The packaged EfficientNet-Lite0 state dict."""
    return load_state_dict(default_checkpoint())


def test_packaged_checkpoint_has_the_lite0_layout(state: dict[str, npt.NDArray[Any]]) -> None:
    assert len(state) == 296
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]  # file order is kept
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].shape == (1000,)
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in weights.values())
    assert all(state[k].dtype == np.int64 for k in state if k.endswith("num_batches_tracked"))
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    learned = {k: v for k, v in weights.items() if not k.endswith(buffers)}
    assert sum(v.size for v in learned.values()) == LITE0_PARAMETERS


def test_values_are_plausible_trained_weights(state: dict[str, npt.NDArray[Any]]) -> None:
    variances = np.concatenate([v for k, v in state.items() if k.endswith("running_var")])
    assert variances.size == 21_008  # 49 BatchNorms
    # A variance is never negative; a few channels are dead (exactly 0), the rest positive.
    assert float(variances.min()) >= 0
    assert float((variances > 0).mean()) > 0.99
    assert all(np.all(np.isfinite(v)) for v in state.values())
    # Trained convolutions are neither zero nor huge.
    stem = state["_conv_stem.weight"]
    assert 0.01 < float(np.abs(stem).mean()) < 10


def test_tensor_bytes_are_the_files_own(state: dict[str, npt.NDArray[Any]]) -> None:
    """Find each tensor's storage in the raw file, in the layout its strides describe.

    The weights were ported from TensorFlow: convolution kernels are stored HWIO (strides
    like (1, 32, 288, 96) for a 32x3x3x3 kernel) and the classifier as (in, out), so the
    rebuilt OIHW tensors are transposed views of the bytes on disk.
    """
    raw = default_checkpoint().read_bytes()
    on_disk = {
        "_fc.bias": state["_fc.bias"],
        "_blocks.7._bn1.running_var": state["_blocks.7._bn1.running_var"],
        "_conv_stem.weight": state["_conv_stem.weight"].transpose(2, 3, 1, 0),
        "_blocks.3._depthwise_conv.weight": state["_blocks.3._depthwise_conv.weight"].transpose(
            2, 3, 1, 0
        ),
        "_fc.weight": state["_fc.weight"].T,
    }
    for key, layout in on_disk.items():
        at = raw.find(np.ascontiguousarray(layout, dtype="<f4").tobytes())
        assert at > 0, key
        # Each storage is preceded by its element count (here one tensor per storage).
        assert int.from_bytes(raw[at - 8 : at], "little") == layout.size, key


# Hand-made legacy files, written the way torch.save(_use_new_zipfile_serialization=False)
# does, with stand-in "torch" globals so no torch is needed to write them either.


class _Storage:
    def __init__(self, kind: type, key: str, data: npt.NDArray[Any]) -> None:
        self.kind, self.key, self.data = kind, key, data


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Importable stand-ins for the globals a legacy checkpoint names."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    kinds = {}
    for name in ("FloatStorage", "LongStorage"):
        kind = type(name, (), {"__module__": "torch"})
        setattr(torch, name, kind)
        kinds[name] = kind

    def _rebuild_tensor_v2(*args: Any) -> None:
        raise AssertionError("the reader must never call the pickled rebuild function")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(**kinds)


def _legacy_bytes(obj: Any, storages: list[_Storage]) -> bytes:
    buffer = io.BytesIO()
    for header in (
        MAGIC_NUMBER,
        PROTOCOL_VERSION,
        {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {}},
    ):
        pickle.dump(header, buffer, protocol=2)
    pickler = pickle.Pickler(buffer, protocol=2)

    def persistent_id(value: Any) -> Any:
        if isinstance(value, _Storage):
            return ("storage", value.kind, value.key, "cpu", value.data.size, None)
        return None

    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(obj)
    keys = sorted(s.key for s in storages)
    pickle.dump(keys, buffer, protocol=2)
    by_key = {s.key: s for s in storages}
    for key in keys:
        data = by_key[key].data
        buffer.write(data.size.to_bytes(8, "little"))
        buffer.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    return buffer.getvalue()


def test_rebuilds_offsets_strides_and_shared_storages(fake_torch: types.SimpleNamespace) -> None:
    values = np.arange(12, dtype=np.float32)
    shared = _Storage(fake_torch.FloatStorage, "100", values)
    counts = _Storage(fake_torch.LongStorage, "7", np.array([5], dtype=np.int64))
    obj = collections.OrderedDict(
        [
            ("matrix", _Tensor(shared, 0, (3, 4), (4, 1))),
            ("transposed", _Tensor(shared, 0, (4, 3), (1, 4))),  # a non-contiguous view
            ("tail", _Tensor(shared, 8, (2, 2), (2, 1))),  # an offset into the same storage
            ("empty", _Tensor(shared, 0, (0, 4), (4, 1))),
            ("count", _Tensor(counts, 0, (), ())),
        ]
    )
    result = loads(_legacy_bytes(obj, [shared, counts]))
    assert isinstance(result, collections.OrderedDict)
    np.testing.assert_array_equal(result["matrix"], values.reshape(3, 4))
    np.testing.assert_array_equal(result["transposed"], values.reshape(3, 4).T)
    assert result["transposed"].flags.c_contiguous
    np.testing.assert_array_equal(result["tail"], [[8, 9], [10, 11]])
    assert result["empty"].shape == (0, 4)
    assert result["count"].dtype == np.int64 and result["count"].shape == ()
    assert int(result["count"]) == 5


def test_refuses_a_tensor_reaching_outside_its_storage(fake_torch: types.SimpleNamespace) -> None:
    storage = _Storage(fake_torch.FloatStorage, "1", np.zeros(4, dtype=np.float32))
    data = _legacy_bytes({"w": _Tensor(storage, 2, (2, 2), (2, 1))}, [storage])
    with pytest.raises(TorchPickleError) as caught:
        loads(data)
    assert caught.value.code == "model-corrupt"


def test_refuses_truncated_storage_bytes(fake_torch: types.SimpleNamespace) -> None:
    storage = _Storage(fake_torch.FloatStorage, "1", np.ones(16, dtype=np.float32))
    data = _legacy_bytes({"w": _Tensor(storage, 0, (16,), (1,))}, [storage])
    with pytest.raises(TorchPickleError) as caught:
        loads(data[:-4])
    assert caught.value.code == "model-corrupt"


CALLED: list[str] = []


def _payload(message: str) -> str:
    """What a malicious checkpoint would like to run."""
    CALLED.append(message)
    return message


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_payload, ("pwned",))


def test_refuses_any_other_global_without_calling_it() -> None:
    CALLED.clear()
    data = _legacy_bytes({"w": _Exploit()}, [])
    with pytest.raises(TorchPickleError) as caught:
        loads(data)
    assert caught.value.code == "model-unsafe"
    assert "_payload" in caught.value.message
    assert CALLED == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"PK\x03\x04" + b"\0" * 64, "model-corrupt"),  # the newer zip format
        (pickle.dumps(12345, protocol=2), "model-corrupt"),  # wrong magic number
        (b"", "model-corrupt"),
        (pickle.dumps(MAGIC_NUMBER, protocol=2) + pickle.dumps(999, protocol=2), "model-corrupt"),
    ],
)
def test_refuses_other_formats(data: bytes, code: str) -> None:
    with pytest.raises(TorchPickleError) as caught:
        loads(data)
    assert caught.value.code == code


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TorchPickleError) as caught:
        load_state_dict(tmp_path / "absent.pth")
    assert caught.value.code == "model-missing"


def test_refuses_a_zero_stride_expansion(fake_torch: types.SimpleNamespace) -> None:
    # Four stored bytes must not become a 4 GB array.
    storage = _Storage(fake_torch.FloatStorage, "1", np.zeros(1, dtype=np.float32))
    data = _legacy_bytes({"w": _Tensor(storage, 0, (1 << 30,), (0,))}, [storage])
    with pytest.raises(TorchPickleError) as caught:
        loads(data)
    assert caught.value.code == "model-corrupt"


def test_refuses_non_integral_sizes(fake_torch: types.SimpleNamespace) -> None:
    storage = _Storage(fake_torch.FloatStorage, "1", np.zeros(4, dtype=np.float32))
    data = _legacy_bytes({"w": _Tensor(storage, 0, (2.0, 2), (2, 1))}, [storage])  # type: ignore[arg-type]
    with pytest.raises(TorchPickleError) as caught:
        loads(data)
    assert caught.value.code == "model-corrupt"
