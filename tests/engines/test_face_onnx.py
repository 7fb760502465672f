"""The onnx face backend (SCRFD + ArcFace) on small synthetic ONNX models.

InsightFace's real weights cannot be shipped or downloaded here, so these tests check the
plumbing, not the accuracy: the models below are built with onnx.helper and have the exact
input and output signatures of det_10g.onnx / w600k_r50.onnx. The dynamic detector "sees" a
white square (its score is the square's brightness per grid cell) and predicts a fixed box
and keypoints around it; the fixed-size detector returns constant outputs; the recogniser is
a fixed random linear projection of the pooled pixels. Together they check model discovery
by signature, anchor decoding, score threshold, NMS, mapping boxes back through the
letterbox, alignment onto the ArcFace template, normalisation and L2-normalised output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aiproject.config import EnginesSettings, FaceSettings, Settings
from aiproject.engines.errors import BadInput, EngineUnavailable, FaceError
from aiproject.engines.face import OnnxFace, build
from aiproject.engines.face.base import Metric
from aiproject.engines.face.onnx import (
    ARCFACE_TEMPLATE,
    Detection,
    Floats,
    align_face,
    nms,
    similarity_transform,
)
from aiproject.engines.images import RGBImage
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines

STRIDES = (8, 16, 32)
BOX_UNITS = 2.0  # the dynamic detector's box: 2 strides left, up, right and down of its anchor
# Keypoints in stride units from the anchor (the white cell's top-left corner).
KPS_UNITS = np.array([[0.1, 0.2], [0.9, 0.2], [0.5, 0.5], [0.2, 0.85], [0.8, 0.85]])
EMBEDDING_DIM = 512
PROJECTION = (np.random.default_rng(7).standard_normal((3 * 28 * 28, EMBEDDING_DIM)) / 48).astype(
    np.float32
)


def save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    weights: list[TensorProto],
) -> Path:
    """Write a checked opset-17 model."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tensor(name: str, value: object, dtype: type = np.float32) -> TensorProto:
    """Return an initializer."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def scrfd_dynamic(path: Path, *, keypoints: bool = True) -> Path:
    """An SCRFD-shaped detector, input 1x3xHxW, whose score per cell is the cell's brightness."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["gray"], axes=[1], keepdims=1)]
    scores, boxes, kps = [], [], []
    for s in STRIDES:
        nodes += [
            helper.make_node(
                "AveragePool", ["gray"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]
            ),
            helper.make_node("Transpose", [f"pool{s}"], [f"cells{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Concat", [f"cells{s}", f"cells{s}"], [f"anchors{s}"], axis=3),
            helper.make_node("Reshape", [f"anchors{s}", "column"], [f"score{s}"]),
            helper.make_node("Mul", [f"score{s}", "zero"], [f"zeros{s}"]),
            helper.make_node("Add", [f"zeros{s}", "one"], [f"ones{s}"]),
            helper.make_node("Mul", [f"ones{s}", "distances"], [f"bbox{s}"]),
            helper.make_node("Mul", [f"ones{s}", "offsets"], [f"kps{s}"]),
        ]
        scores.append(helper.make_tensor_value_info(f"score{s}", TensorProto.FLOAT, [f"n{s}", 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox{s}", TensorProto.FLOAT, [f"n{s}", 4]))
        kps.append(helper.make_tensor_value_info(f"kps{s}", TensorProto.FLOAT, [f"n{s}", 10]))
    weights = [
        tensor("column", [-1, 1], np.int64),
        tensor("zero", 0.0),
        tensor("one", 1.0),
        tensor("distances", [[BOX_UNITS] * 4]),
        tensor("offsets", KPS_UNITS.reshape(1, 10)),
    ]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    return save(path, nodes, [image], scores + boxes + (kps if keypoints else []), weights)


def scrfd_fixed(path: Path, outputs: list[Floats]) -> Path:
    """An SCRFD-shaped detector with a fixed 640 x 640 input and constant outputs."""
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    weights = [tensor("zero", 0.0)]
    infos = []
    for i, value in enumerate(outputs):
        weights.append(tensor(f"const{i}", value))
        nodes.append(helper.make_node("Add", [f"const{i}", "nothing"], [f"out{i}"]))
        infos.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, list(value.shape)))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])
    return save(path, nodes, [image], infos, weights)


def arcface(path: Path, *, baked: bool = False, batch: int | str = "N") -> Path:
    """An ArcFace-shaped recogniser: 3x112x112 in, a fixed projection of 4x4-pooled pixels out."""
    nodes, first = [], "input.1"
    weights = [tensor("projection", PROJECTION), tensor("mean", 127.5), tensor("scale", 1 / 127.5)]
    if baked:  # the MXNet-converted models normalise inside the graph
        nodes += [
            helper.make_node("Sub", ["input.1", "mean"], ["centred"], name="Sub_0"),
            helper.make_node("Mul", ["centred", "scale"], ["normalised"], name="Mul_1"),
        ]
        first = "normalised"
    nodes += [
        helper.make_node(
            "AveragePool", [first], ["pooled"], kernel_shape=[4, 4], strides=[4, 4], name="pool"
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "projection"], ["fc1"], name="project"),
    ]
    crop = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, EMBEDDING_DIM])
    return save(path, nodes, [crop], [out], weights)


def genderage(path: Path) -> Path:
    """A decoy with InsightFace's gender/age signature (96 x 96 in, 3 numbers out)."""
    nodes = [helper.make_node("ReduceMean", ["data"], ["fc1"], axes=[2, 3], keepdims=0)]
    crop = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])
    return save(path, nodes, [crop], [out], [])


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model directories: odd file names on purpose, since files are found by signature."""
    dirs = {
        name: tmp_path_factory.mktemp(name)
        for name in ("dynamic", "fixed", "baked", "partial", "nokps")
    }
    scrfd_dynamic(dirs["dynamic"] / "a.onnx")
    arcface(dirs["dynamic"] / "b.onnx")
    genderage(dirs["dynamic"] / "c.onnx")
    (dirs["dynamic"] / "broken.onnx").write_bytes(b"not a model")
    (dirs["dynamic"] / "README.txt").write_text("ignored")
    scrfd_fixed(dirs["fixed"] / "det.onnx", fixed_outputs())
    arcface(dirs["fixed"] / "rec.onnx", batch=1)
    scrfd_dynamic(dirs["baked"] / "det.onnx")
    arcface(dirs["baked"] / "rec.onnx", baked=True)
    scrfd_dynamic(dirs["partial"] / "det_10g.onnx")
    genderage(dirs["partial"] / "genderage.onnx")
    scrfd_dynamic(dirs["nokps"] / "det.onnx", keypoints=False)
    arcface(dirs["nokps"] / "rec.onnx")
    return dirs


@pytest.fixture(scope="module")
async def dynamic(model_dirs: dict[str, Path]) -> AsyncIterator[OnnxFace]:
    """The engine on the dynamic-input detector."""
    engine = OnnxFace(FaceSettings(backend="onnx", model_dir=model_dirs["dynamic"]))
    yield engine
    await engine.aclose()


def fixed_outputs() -> list[Floats]:
    """Constant outputs for a 640 x 640 input: two faces, a duplicate and a weak decoy.

    Anchor (column, row, anchor) at stride s sits at (column * s, row * s) in the input.
    """
    scores = [np.zeros((80 * 80 * 2, 1)), np.zeros((40 * 40 * 2, 1)), np.zeros((20 * 20 * 2, 1))]
    boxes = [np.zeros((len(s), 4)) for s in scores]
    kps = [np.zeros((len(s), 10)) for s in scores]

    def put(level: int, column: int, row: int, anchor: int, score: float, units: float) -> None:
        index = ((row * (80 >> level)) + column) * 2 + anchor
        scores[level][index] = score
        boxes[level][index] = units
        kps[level][index] = (KPS_UNITS * units).reshape(-1)

    put(1, 10, 12, 0, 0.90, 3.0)  # large: (160, 192) +- 48 -> 112, 144, 208, 240
    put(0, 21, 24, 1, 0.80, 6.0)  # its duplicate: (168, 192) +- 48, overlaps by 85 %
    put(0, 60, 20, 0, 0.95, 2.0)  # small, best score: (480, 160) +- 16 -> 464, 144, 496, 176
    put(2, 5, 15, 0, 0.30, 4.0)  # under the 0.5 threshold
    return [a.astype(np.float32) for a in scores + boxes + kps]


def scene(width: int, height: int, cell: tuple[int, int], *, seed: int = 1) -> RGBImage:
    """A black frame with a dark textured patch around one white detector cell.

    The detector sees the image scaled by 640 / width, so one of its stride-8 cells is
    ``8 * width / 640`` pixels here; ``cell`` is (column, row) in those units.
    """
    size = 8 * width // 640
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x, y = cell[0] * size, cell[1] * size
    texture = np.random.default_rng(seed).integers(0, 90, (11 * size, 11 * size, 3))
    image[y - 5 * size : y + 6 * size, x - 5 * size : x + 6 * size] = texture
    image[y : y + size, x : x + size] = 255
    return image


def test_missing_model_dir_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as unset:
        OnnxFace(FaceSettings(backend="onnx"))
    with pytest.raises(EngineUnavailable) as absent:
        OnnxFace(FaceSettings(backend="onnx", model_dir=tmp_path / "nowhere"))
    with pytest.raises(EngineUnavailable) as empty:
        OnnxFace(FaceSettings(backend="onnx", model_dir=tmp_path))

    assert unset.value.code == absent.value.code == empty.value.code == "face-model-missing"
    assert "engines.face.model_dir is not set" in unset.value.message
    assert "nowhere is not a directory" in absent.value.message
    assert "no SCRFD detector" in empty.value.message and "no .onnx files" in empty.value.message


def test_missing_recogniser_or_keypoints_is_unavailable(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(EngineUnavailable) as partial:
        OnnxFace(FaceSettings(backend="onnx", model_dir=model_dirs["partial"]))
    with pytest.raises(EngineUnavailable) as nokps:
        OnnxFace(FaceSettings(backend="onnx", model_dir=model_dirs["nokps"]))

    assert "no ArcFace recogniser" in partial.value.message
    assert "det_10g.onnx, genderage.onnx" in partial.value.message
    assert "no SCRFD detector with keypoints" in nokps.value.message


async def test_registry_builds_onnx_from_files_found_by_signature(
    model_dirs: dict[str, Path], model_store: ModelStore, tmp_path: Path
) -> None:
    face = FaceSettings(backend="onnx", model_dir=model_dirs["dynamic"])
    settings = Settings(data_dir=tmp_path, engines=EnginesSettings(face=face))
    engines = Engines(settings, model_store)
    try:
        engine = await engines.face()
    finally:
        await engines.aclose()

    assert isinstance(engine, OnnxFace)
    assert engine.metric is Metric.COSINE
    assert engine.dim == EMBEDDING_DIM
    assert "SCRFD a.onnx (<= 640 px)" in engine.describe()
    assert "ArcFace b.onnx (512-d, cosine)" in engine.describe()
    assert isinstance(build(settings, model_store), OnnxFace)


@pytest.mark.parametrize("width", [640, 1280, 2560])
async def test_dynamic_detector_boxes_map_back(dynamic: OnnxFace, width: int) -> None:
    image = scene(width, width * 3 // 4, (30, 20))
    k = width / 640  # image pixels per detector pixel

    boxes = await dynamic.detect(image)

    anchor = (30 * 8, 20 * 8)  # the white cell's top-left corner in the detector's input
    reach = BOX_UNITS * 8
    expected = [
        round(v * k)
        for v in (anchor[0] - reach, anchor[1] - reach, anchor[0] + reach, anchor[1] + reach)
    ]
    assert len(boxes) == 1
    assert [boxes[0].left, boxes[0].top, boxes[0].right, boxes[0].bottom] == expected
    assert boxes[0].score == pytest.approx((255 - 127.5) / 128)


async def test_fixed_detector_thresholds_suppresses_and_orders(model_dirs: dict[str, Path]) -> None:
    engine = OnnxFace(FaceSettings(backend="onnx", model_dir=model_dirs["fixed"]))
    image = np.zeros((720, 1280, 3), dtype=np.uint8)  # fits 640 x 640 at scale 0.5

    try:
        boxes = await engine.detect(image)
        faces = await engine.embed(image, max_faces=5)
    finally:
        await engine.aclose()

    assert "SCRFD det.onnx (640x640 px)" in engine.describe()
    assert [(b.left, b.top, b.right, b.bottom) for b in boxes] == [
        (224, 288, 416, 480),  # canvas (112, 144, 208, 240) at scale 0.5: largest first
        (928, 288, 992, 352),  # canvas (464, 144, 496, 176): the best score comes second
    ]
    assert [b.score for b in boxes] == pytest.approx([0.9, 0.95])
    assert [f.box for f in faces] == boxes  # the recogniser takes one crop at a time here
    assert all(f.embedding.shape == (EMBEDDING_DIM,) for f in faces)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    def det(x: float, score: float) -> Detection:
        return Detection(
            np.array([x, 0, x + 10, 10], np.float32), score, np.zeros((5, 2), np.float32)
        )

    kept = nms([det(0, 0.6), det(1, 0.9), det(6, 0.8), det(5, 0.75), det(30, 0.7)])

    # IoU with the box at 1: the one at 0 0.82, at 5 0.43 (dropped), at 6 0.33 (kept).
    assert [d.score for d in kept] == [0.9, 0.8, 0.7]


def test_alignment_puts_the_keypoints_on_the_template() -> None:
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE @ rotation.T * 2.5 + [150, 90]).astype(np.float32)
    image = np.zeros((500, 500, 3), dtype=np.uint8)
    for x, y in points:
        image[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 255

    matrix = similarity_transform(points, ARCFACE_TEMPLATE)
    crop = align_face(image, points)

    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(y), round(x)].min() > 200  # each dot landed on its template point
    assert crop[20, 56].max() == 0 and crop[60, 20].max() == 0  # and nothing else is lit


async def test_embedding_is_the_recogniser_on_the_aligned_crop(dynamic: OnnxFace) -> None:
    image = scene(1280, 960, (30, 20))
    keypoints = ((30 * 8, 20 * 8) + KPS_UNITS * 8) * 2  # decoded, then mapped back by 1280 / 640
    crop = (align_face(image, keypoints.astype(np.float32)) - 127.5) / 127.5
    pooled = crop.transpose(2, 0, 1).reshape(3, 28, 4, 28, 4).mean(axis=(2, 4))
    expected = pooled.reshape(-1) @ PROJECTION

    (face,) = await dynamic.embed(image)

    assert face.embedding.dtype == np.float32
    assert face.embedding.shape == (EMBEDDING_DIM,)
    assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(face.embedding, expected / np.linalg.norm(expected), atol=1e-5)


async def test_same_crop_gives_distance_zero_wherever_the_face_is(dynamic: OnnxFace) -> None:
    here = scene(1280, 960, (30, 20))
    moved = scene(1280, 960, (45, 35))  # the same face 240 px right and down
    other = scene(1280, 960, (30, 20), seed=2)  # another texture around the same square

    (a,), (again,), (b,), (c,) = [await dynamic.embed(i) for i in (here, here, moved, other)]

    assert dynamic.distance(a.embedding, again.embedding) == pytest.approx(0.0, abs=1e-6)
    assert (b.box.left - a.box.left, b.box.top - a.box.top) == (240, 240)
    assert dynamic.distance(a.embedding, b.embedding) == pytest.approx(0.0, abs=1e-5)
    assert dynamic.distance(a.embedding, c.embedding) > 0.01  # measured 0.016


async def test_normalisation_inside_the_graph_is_detected(
    dynamic: OnnxFace, model_dirs: dict[str, Path]
) -> None:
    baked = OnnxFace(FaceSettings(backend="onnx", model_dir=model_dirs["baked"]))
    image = scene(1280, 960, (30, 20))

    try:
        (plain,), (inside,) = await dynamic.embed(image), await baked.embed(image)
    finally:
        await baked.aclose()

    np.testing.assert_allclose(plain.embedding, inside.embedding, atol=1e-5)


async def test_no_face_and_bad_input(dynamic: OnnxFace) -> None:
    black = np.zeros((480, 640, 3), dtype=np.uint8)

    assert await dynamic.detect(black) == []
    assert await dynamic.embed(black, max_faces=3) == []
    with pytest.raises(FaceError) as caught:
        await dynamic.best_face(black)
    assert caught.value.code == "no-face"
    with pytest.raises(BadInput):
        await dynamic.detect(np.zeros((480, 640), dtype=np.uint8))
