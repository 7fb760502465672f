"""dlib's face ResNet read from its .dat file and rebuilt as ONNX: the same numbers as dlib's.

dlib itself computes the reference descriptor of each aligned chip; onnxruntime runs the
converted graph on the same chip. Measured: at most 3e-7 apart per component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlib
import face_recognition_models
import numpy as np
import onnxruntime as ort
import pytest

from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.face.dlib_resnet import (
    CHIP_SIZE,
    dlib_resnet_onnx,
    read_weights,
)
from tests.engines.face_fixtures import OBAMA, STRANGERS, mirrored, photo

MODEL = Path(face_recognition_models.face_recognition_model_location())


@pytest.fixture(scope="module")
def converted() -> ort.InferenceSession:
    """The converted network on onnxruntime."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        dlib_resnet_onnx(MODEL), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any, Any]:
    """dlib's own detector, 5-point predictor and ResNet."""
    predictor = face_recognition_models.pose_predictor_five_point_model_location()
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(predictor),
        dlib.face_recognition_model_v1(str(MODEL)),
    )


def test_the_file_holds_the_expected_network() -> None:
    weights = read_weights(MODEL)

    assert len(weights.convs) == len(weights.affines) == 29
    assert weights.convs[0].weights.shape == (32, 3, 7, 7)
    assert weights.convs[0].stride == 2
    assert weights.convs[-1].weights.shape == (256, 256, 3, 3)
    assert weights.fc.shape == (256, 128)
    # dlib subtracts the mean colour of its training faces (about 123, 117, 104).
    assert all(100 < channel < 130 for channel in weights.mean_rgb)


@pytest.mark.parametrize("name", [*OBAMA, *STRANGERS])
def test_converted_network_gives_dlibs_descriptors(
    name: str, converted: ort.InferenceSession, reference: tuple[Any, Any, Any]
) -> None:
    detector, predictor, net = reference
    image = photo(name)
    rects = detector(image, 1)
    shape = predictor(image, rects[0])
    chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)
    flipped = mirrored(chip)

    expected = np.array([net.compute_face_descriptor(c) for c in (chip, flipped)])
    (ours,) = converted.run(None, {"chip": np.stack([chip, flipped]).astype(np.float32)})

    assert ours.shape == (2, 128)
    assert np.abs(ours - expected).max() < 1e-4
    # And what dlib computes from the whole image and the shape is that of the chip.
    whole = np.array(net.compute_face_descriptor(image, shape))
    assert np.abs(ours[0] - whole).max() < 1e-4


@pytest.mark.parametrize(
    "content",
    [b"", b"not a dlib model at all", MODEL.read_bytes()[:5_000_000]],
    ids=["empty", "garbage", "truncated"],
)
def test_a_broken_model_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(content)

    with pytest.raises(EngineUnavailable) as caught:
        dlib_resnet_onnx(path)
    assert caught.value.code == "model-convert-failed"


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        dlib_resnet_onnx(tmp_path / "missing.dat")
    assert caught.value.code == "model-convert-failed"
