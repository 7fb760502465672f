"""Read a legacy (non-zip) ``torch.save`` file into numpy arrays, without torch.

The legacy format, written by ``torch.save(..., _use_new_zipfile_serialization=False)``
and by every torch before 1.6, is a run of pickles followed by raw storage bytes:

1. the magic number ``0x1950A86A20F9469CFC6C``;
2. the protocol version ``1001``;
3. system info (a dict saying ``little_endian`` and the C type sizes);
4. the object itself, whose persistent ids name storages as
   ``('storage', storage_type, key, location, numel[, view_metadata])``;
5. the list of storage keys, in the order their bytes follow;
6. for each key, an 8-byte little-endian element count and then the elements.

Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.
The unpickler here resolves only the few globals a state dict needs and refuses every
other one, so a crafted file cannot make it call anything: loading is data, not code.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiproject.engines.errors import EngineUnavailable

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> little-endian numpy dtype of one element.
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

Array = npt.NDArray[Any]


class TorchPickleError(EngineUnavailable):
    """The file is not a readable legacy torch checkpoint, or asks for a refused global."""


@dataclass(frozen=True)
class _StorageType:
    """Stands for ``torch.<Name>Storage`` inside the pickle."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id: a slice of one root storage whose bytes come after the pickles."""

    key: str
    dtype: np.dtype[Any]
    numel: int
    offset: int = 0  # in elements, for the old ``view_metadata`` form


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes have not been read yet."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _PendingTensor:
    """Stand in for ``torch._utils._rebuild_tensor_v2`` (extra arguments: grad, hooks)."""
    if not isinstance(storage, _StorageRef):
        raise TorchPickleError("model-corrupt", "a tensor refers to something not a storage")
    numbers = (offset, *size, *stride)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise TorchPickleError("model-corrupt", "a tensor's offset, size or stride is not integral")
    return _PendingTensor(storage, offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, the tensor rebuilder and storage types."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.roots: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global's stand-in; refuse every other one."""
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise TorchPickleError(
            "model-unsafe", f"the checkpoint asks for {module}.{name}, which is not allowed"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        """Turn a ``('storage', type, key, location, numel[, view])`` id into a reference."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchPickleError("model-corrupt", f"unknown persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise TorchPickleError("model-corrupt", f"bad storage id {pid!r:.80}")
        key = str(key)
        root = self.roots.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if root.dtype != storage_type.dtype or root.numel != numel:
            raise TorchPickleError("model-corrupt", f"storage {key} is declared twice differently")
        if view is None:
            return root
        _view_key, view_offset, view_size = view
        if view_offset < 0 or view_size < 0 or view_offset + view_size > numel:
            raise TorchPickleError("model-corrupt", f"a view of storage {key} is out of bounds")
        return _StorageRef(key, root.dtype, int(view_size), int(view_offset))


def _read_storages(
    stream: io.BytesIO, keys: list[str], roots: dict[str, _StorageRef]
) -> dict[str, Array]:
    """Read each storage's count and elements, in the order of ``keys``."""
    arrays: dict[str, Array] = {}
    for key in keys:
        root = roots.get(key)
        if root is None:
            raise TorchPickleError("model-corrupt", f"storage {key} has bytes but no tensor")
        count = int.from_bytes(stream.read(8), "little", signed=True)
        if count != root.numel:
            raise TorchPickleError(
                "model-corrupt", f"storage {key} holds {count} elements, {root.numel} declared"
            )
        data = stream.read(count * root.dtype.itemsize)
        if len(data) != count * root.dtype.itemsize:
            raise TorchPickleError("model-corrupt", f"storage {key} is truncated")
        arrays[key] = np.frombuffer(data, dtype=root.dtype)
    return arrays


def _materialize(pending: _PendingTensor, arrays: dict[str, Array]) -> Array:
    """Cut a tensor out of its storage as a C-contiguous, native-endian array."""
    ref = pending.storage
    flat = arrays.get(ref.key)
    if flat is None:
        raise TorchPickleError("model-corrupt", f"storage {ref.key} has no bytes")
    shape, stride = pending.size, pending.stride
    if len(shape) != len(stride) or any(n < 0 for n in shape) or any(s < 0 for s in stride):
        raise TorchPickleError("model-corrupt", "a tensor's size and stride are malformed")
    if 0 in shape:
        return np.zeros(shape, dtype=ref.dtype.newbyteorder("="))
    # Zero strides could make a few stored bytes expand into an enormous array; a state
    # dict never needs more elements than its storage holds.
    if int(np.prod(shape, dtype=np.int64)) > ref.numel:
        raise TorchPickleError("model-corrupt", "a tensor has more elements than its storage")
    # as_strided does not check bounds: the last element reached must lie inside the storage.
    start = ref.offset + pending.offset
    last = start + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if pending.offset < 0 or last >= ref.offset + ref.numel or last >= flat.size:
        raise TorchPickleError("model-corrupt", "a tensor reaches outside its storage")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[start:],
        shape=shape,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    # np.array, not np.ascontiguousarray, which would turn a 0-d tensor into shape (1,).
    out: Array = np.array(view, dtype=ref.dtype.newbyteorder("="), order="C", copy=True)
    return out


def _resolve(value: Any, arrays: dict[str, Array]) -> Any:
    """Replace every pending tensor inside dicts, lists and tuples with its array."""
    if isinstance(value, _PendingTensor):
        return _materialize(value, arrays)
    if isinstance(value, dict):
        # A state dict's ``_metadata`` attribute (per-module versions) is torch's own business.
        return type(value)((k, _resolve(v, arrays)) for k, v in value.items())
    if isinstance(value, list):
        return [_resolve(v, arrays) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, arrays) for v in value)
    return value


def loads(data: bytes) -> Any:
    """Decode a legacy torch checkpoint held in memory; tensors become numpy arrays."""
    stream = io.BytesIO(data)

    def load_header(what: str) -> Any:
        try:
            return _RestrictedUnpickler(stream).load()
        except TorchPickleError:
            raise
        except Exception as err:  # pickle raises many types for malformed input
            raise TorchPickleError("model-corrupt", f"cannot read the {what}: {err}") from err

    if data.startswith(b"PK\x03\x04"):
        raise TorchPickleError("model-corrupt", "a zip checkpoint, not the legacy format")
    if load_header("magic number") != MAGIC_NUMBER:
        raise TorchPickleError("model-corrupt", "not a legacy torch checkpoint (bad magic)")
    if load_header("protocol version") != PROTOCOL_VERSION:
        raise TorchPickleError("model-corrupt", "unsupported legacy protocol version")
    sys_info = load_header("system info")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise TorchPickleError("model-corrupt", "only little-endian checkpoints are supported")
    unpickler = _RestrictedUnpickler(stream)
    try:
        obj = unpickler.load()
    except TorchPickleError:
        raise
    except Exception as err:
        raise TorchPickleError("model-corrupt", f"cannot read the object: {err}") from err
    keys = load_header("storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchPickleError("model-corrupt", "the storage key list is malformed")
    arrays = _read_storages(stream, keys, unpickler.roots)
    return _resolve(obj, arrays)


def load_state_dict(path: Path) -> dict[str, Array]:
    """Read a legacy checkpoint holding a flat ``{name: tensor}`` state dict."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TorchPickleError("model-missing", f"cannot read {path}: {err}") from err
    obj = loads(data)
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise TorchPickleError("model-corrupt", f"{path.name} does not hold a flat state dict")
    return dict(obj)
