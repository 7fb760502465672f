"""The EfficientNet-Lite0 classifier: conversion, graph, labels and real photos."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from aiproject.config import Settings
from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.image import BACKENDS, build
from aiproject.engines.image.base import Label
from aiproject.engines.image.efficientnet import (
    EfficientNetImageClassifier,
    preprocess,
    softmax,
)
from aiproject.engines.image.efficientnet_onnx import (
    BN_EPSILON,
    build_model,
    convert_efficientnet_lite0,
    default_checkpoint,
)
from aiproject.engines.image.labels import (
    CLASSES,
    DOG_BREEDS,
    DOMESTIC_CATS,
    PetKind,
    class_name,
    guess_pet,
    imagenet_class,
    is_cat,
    is_dog,
    pet_kind,
)
from aiproject.engines.image.torch_pickle import load_state_dict
from aiproject.engines.images import RGBImage, decode_image
from aiproject.engines.models import EFFICIENTNET_ONNX, ModelStore, Progress
from aiproject.engines.registry import Engines
from tests.conftest import FIXTURES

IMAGES = FIXTURES / "images"
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
MISSILE, PROJECTILE = 657, 744


def photo(name: str) -> RGBImage:
    """Decode a fixture photo."""
    return decode_image((IMAGES / name).read_bytes())


@pytest.fixture(scope="module")
def state() -> dict[str, npt.NDArray[Any]]:
    """The packaged EfficientNet-Lite0 state dict."""
    return load_state_dict(default_checkpoint())


@pytest.fixture(scope="module")
def model(state: dict[str, npt.NDArray[Any]]) -> onnx.ModelProto:
    """The converted graph, in memory."""
    built: onnx.ModelProto = build_model(state)
    return built


# Conversion


def test_model_store_converts_once_and_atomically(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Progress(enabled=False))
    path = store.efficientnet_onnx(convert_efficientnet_lite0)
    assert path == tmp_path / EFFICIENTNET_ONNX
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns

    def must_not_run(out: Path) -> None:
        raise AssertionError("the model was converted a second time")

    assert store.efficientnet_onnx(must_not_run) == path
    assert path.stat().st_mtime_ns == mtime
    # Nothing half-written is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        EFFICIENTNET_ONNX
    ]
    # Converting again elsewhere gives the same bytes: the conversion is deterministic.
    again = tmp_path / "again.onnx"
    convert_efficientnet_lite0(again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(first).digest()


def test_failed_conversion_leaves_no_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Progress(enabled=False))

    def broken(out: Path) -> None:
        out.write_bytes(b"half a model")
        raise RuntimeError("conversion crashed")

    with pytest.raises(RuntimeError):
        store.efficientnet_onnx(broken)
    left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_graph_is_lite0_with_batchnorm_folded(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    # Stem + block 0 (depthwise, project) + 15 x (expand, depthwise, project) + head.
    assert ops.count("Conv") == 1 + 2 + 15 * 3 + 1
    assert ops.count("Add") == 9  # the stride-1 blocks whose width does not change
    assert ops.count("Clip") == 1 + 1 + 15 * 2 + 1  # ReLU6 everywhere except projections
    assert "BatchNormalization" not in ops
    assert "Sigmoid" not in ops and "Mul" not in ops  # Lite: no swish, no squeeze-excite
    (image,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]


def _conv_reference(
    x: npt.NDArray[np.float64], w: npt.NDArray[np.float64], pads: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """Stride-2 convolution of CHW ``x`` by OIHW ``w``, padding (before, after) each side."""
    before, after = pads
    padded = np.pad(x, ((0, 0), (before, after), (before, after)))
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::2, ::2]
    return np.einsum("chwij,ocij->ohw", windows, w)


def test_stem_matches_an_unfolded_reference_with_tensorflow_padding(
    model: onnx.ModelProto, state: dict[str, npt.NDArray[Any]]
) -> None:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(
        helper.make_tensor_value_info("_conv_stem/relu6", TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    _, stem = session.run(None, {"image": x})

    w = state["_conv_stem.weight"].astype(np.float64)
    gamma, beta, mean, var = (
        state[f"_bn0.{n}"].astype(np.float64)
        for n in ("weight", "bias", "running_mean", "running_var")
    )

    def reference(pads: tuple[int, int]) -> npt.NDArray[np.float64]:
        conv = _conv_reference(x[0].astype(np.float64), w, pads)
        bn = (conv - mean[:, None, None]) / np.sqrt(var[:, None, None] + BN_EPSILON)
        return np.clip(bn * gamma[:, None, None] + beta[:, None, None], 0, 6)

    assert stem.shape == (1, 32, 112, 112)
    np.testing.assert_allclose(stem[0], reference((0, 1)), atol=2e-4)  # TensorFlow SAME
    assert np.abs(stem[0] - reference((1, 1))).max() > 0.1  # not symmetric k // 2


# Labels


def test_imagenet_classes_are_the_standard_thousand() -> None:
    assert len(CLASSES) == 1000
    assert len({c.wnid for c in CLASSES}) == 1000
    assert [c.index for c in CLASSES] == list(range(1000))
    assert (CLASSES[0].wnid, CLASSES[0].name) == ("n01440764", "tench")
    assert class_name(999) == "toilet tissue"
    assert class_name(ESPRESSO) == "espresso"
    assert imagenet_class(284).names == ("Siamese cat", "Siamese")
    with pytest.raises(IndexError):
        imagenet_class(1000)


def test_dog_and_cat_classes() -> None:
    assert (class_name(DOG_BREEDS[0]), class_name(DOG_BREEDS[-1])) == (
        "Chihuahua",
        "Mexican hairless",
    )
    assert len(DOG_BREEDS) == 118
    assert [class_name(i) for i in DOMESTIC_CATS] == [
        "tabby",
        "tiger cat",
        "Persian cat",
        "Siamese cat",
        "Egyptian cat",
    ]
    assert is_dog(207) and class_name(207) == "golden retriever"
    assert not is_dog(269) and class_name(269) == "timber wolf"
    assert not is_dog(150) and class_name(150) == "sea lion"
    assert is_cat(281) and not is_cat(286) and class_name(286) == "cougar"
    assert pet_kind(281) is PetKind.CAT and pet_kind(151) is PetKind.DOG
    assert pet_kind(ESPRESSO) is None


def test_guess_pet_sums_a_kind_over_its_classes() -> None:
    labels = [Label(207, "golden retriever", 0.3), Label(281, "tabby", 0.25)]
    labels += [Label(282, "tiger cat", 0.2), Label(ESPRESSO, "espresso", 0.1)]
    guess = guess_pet(labels)
    assert guess is not None
    assert guess.kind is PetKind.CAT
    assert guess.score == pytest.approx(0.45)
    assert guess.breed.index == 281
    assert guess_pet([Label(ESPRESSO, "espresso", 0.9)]) is None
    assert guess_pet([]) is None


# Preprocessing


def test_preprocess_center_crops_and_scales() -> None:
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[:, :50] = 255  # a white band at the left edge, outside the central crop
    image[150, 200] = (255, 0, 0)
    tensor = preprocess(image)
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    assert tensor.min() == pytest.approx(-127 / 128)
    assert float(tensor[0, :, :, :4].max()) == pytest.approx(-127 / 128)  # band cropped away
    assert float(tensor[0, 0].max()) > 0 > float(tensor[0, 1].max())  # red lands in channel 0


def test_softmax_is_a_distribution() -> None:
    probs = softmax(np.array([1000.0, 1000.0, 0.0], dtype=np.float32))
    np.testing.assert_allclose(probs, [0.5, 0.5, 0.0], atol=1e-12)


# The engine on real photos


@pytest.fixture(scope="module")
async def classifier(engines: Engines) -> EfficientNetImageClassifier:
    """The session's image engine."""
    engine = await engines.image()
    assert isinstance(engine, EfficientNetImageClassifier)
    return engine


async def test_engine_is_built_from_settings(classifier: EfficientNetImageClassifier) -> None:
    assert set(BACKENDS) == {"efficientnet"}
    assert classifier.describe() == "efficientnet-lite0 onnxruntime threads=1"
    assert classifier.model_path.name == EFFICIENTNET_ONNX


async def test_cat_photo_is_a_domestic_cat(classifier: EfficientNetImageClassifier) -> None:
    labels = await classifier.classify(photo("cat-chelsea.jpg"), top_k=20)
    # Measured: tiger cat 0.38, Egyptian cat 0.37, tabby 0.17, lynx 0.02.
    assert labels[0].index in DOMESTIC_CATS
    assert all(label.index in DOMESTIC_CATS for label in labels[:3])
    guess = guess_pet(labels)
    assert guess is not None and guess.kind is PetKind.CAT
    assert guess.score > 0.85
    mirrored = await classifier.classify(np.ascontiguousarray(photo("cat-chelsea.jpg")[:, ::-1]))
    assert mirrored[0].index in DOMESTIC_CATS


async def test_coffee_photo_is_espresso(classifier: EfficientNetImageClassifier) -> None:
    labels = await classifier.classify(photo("coffee.jpg"))
    # Measured: espresso 0.96, cup 0.01.
    assert (labels[0].index, labels[0].name) == (ESPRESSO, "espresso")
    assert labels[0].score > 0.85
    assert {CUP, COFFEE_MUG} & {label.index for label in labels}


async def test_rocket_photo_is_a_missile(classifier: EfficientNetImageClassifier) -> None:
    labels = await classifier.classify(photo("rocket.jpg"), top_k=3)
    # Measured: missile 0.34, projectile 0.20, drilling platform 0.07.
    assert labels[0].index == MISSILE
    assert labels[0].score > 0.25
    assert PROJECTILE in {label.index for label in labels}


@pytest.mark.parametrize("name", ["astronaut.jpg", "ocr-zh-en.png", "page-photo.png"])
async def test_no_pet_where_there_is_none(
    classifier: EfficientNetImageClassifier, name: str
) -> None:
    labels = await classifier.classify(photo(name), top_k=20)
    guess = guess_pet(labels)
    assert guess is None or guess.score < 0.05


async def test_labels_are_sorted_probabilities(classifier: EfficientNetImageClassifier) -> None:
    everything = await classifier.classify(photo("coffee.jpg"), top_k=1000)
    assert len(everything) == 1000
    assert sorted({label.index for label in everything}) == list(range(1000))
    scores = [label.score for label in everything]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-6)
    assert all(label.name == class_name(label.index) for label in everything)


async def test_odd_shapes_are_classified(classifier: EfficientNetImageClassifier) -> None:
    tiny = np.full((8, 8, 3), 128, dtype=np.uint8)
    panorama = np.ascontiguousarray(np.tile(photo("coffee.jpg"), (1, 5, 1))[:100])
    for image in (tiny, panorama):
        labels = await classifier.classify(image, top_k=5)
        assert len(labels) == 5
        assert all(0 <= label.score <= 1 for label in labels)


async def test_concurrent_calls_agree(classifier: EfficientNetImageClassifier) -> None:
    images = [photo("cat-chelsea.jpg"), photo("coffee.jpg")] * 2
    results = await asyncio.gather(*(classifier.classify(image) for image in images))
    assert results[0] == results[2] and results[1] == results[3]
    assert results[0] != results[1]


@pytest.mark.parametrize("top_k", [0, -1, 1001])
async def test_bad_top_k_is_refused(classifier: EfficientNetImageClassifier, top_k: int) -> None:
    with pytest.raises(BadInput) as caught:
        await classifier.classify(photo("coffee.jpg"), top_k=top_k)
    assert caught.value.code == "bad-top-k"


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), dtype=np.uint8),
        np.zeros((32, 32, 4), dtype=np.uint8),
        np.zeros((32, 32, 3), dtype=np.float32),
        np.zeros((0, 32, 3), dtype=np.uint8),
    ],
)
async def test_bad_arrays_are_refused(
    classifier: EfficientNetImageClassifier, image: npt.NDArray[Any]
) -> None:
    with pytest.raises(BadInput) as caught:
        await classifier.classify(image)
    assert caught.value.code == "bad-image"


# Configuration


def test_configured_model_path_is_used(tmp_path: Path, models_dir: Path) -> None:
    converted = ModelStore(models_dir, Progress(enabled=False)).efficientnet_onnx(
        convert_efficientnet_lite0
    )
    settings = Settings(data_dir=tmp_path, engines={"image": {"model_path": converted}})
    empty = ModelStore(tmp_path / "models", Progress(enabled=False))
    engine = build(settings, empty)
    assert isinstance(engine, EfficientNetImageClassifier)
    assert engine.model_path == converted
    assert not (tmp_path / "models" / EFFICIENTNET_ONNX).exists()  # nothing was converted


def test_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        EfficientNetImageClassifier(tmp_path / "absent.onnx")
    assert caught.value.code == "model-missing"


def test_other_onnx_models_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "identity.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(EngineUnavailable) as caught:
        EfficientNetImageClassifier(path)
    assert caught.value.code == "model-mismatch"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(EngineUnavailable) as caught:
        EfficientNetImageClassifier(garbage)
    assert caught.value.code == "model-corrupt"
