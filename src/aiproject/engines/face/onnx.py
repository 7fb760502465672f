"""Production face backend: an InsightFace-style SCRFD detector and ArcFace recogniser (ONNX).

``engines.face.model_dir`` holds the ONNX files (InsightFace's buffalo_l has det_10g.onnx and
w600k_r50.onnx; buffalo_s has det_500m.onnx and w600k_mbf.onnx). They are recognised by
their inputs and outputs, not their names, so renamed files and extra models (landmarks,
gender/age) in the same directory are fine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.config import FaceSettings
from aiproject.engines.backends import require
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import EngineUnavailable, FaceError
from aiproject.engines.face.base import Face, FaceBox, Metric, PooledFaceEngine
from aiproject.engines.images import RGBImage

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Dims = list[int | str | None]

# Where ArcFace expects the eyes, nose tip and mouth corners in its 112 x 112 crop.
ARCFACE_TEMPLATE: Floats = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
CROP_SIZE = 112
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4
_DET_MEAN, _DET_STD = 127.5, 128.0
_REC_MEAN, _REC_STD = 127.5, 127.5
# SCRFD exports: 3 or 5 strides, each with scores (1), box distances (4), keypoints (10).
_STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}


@dataclass(frozen=True)
class Detection:
    """A decoded SCRFD detection in some image's pixel coordinates."""

    box: Floats  # x1, y1, x2, y2
    score: float
    keypoints: Floats  # 5 x 2: left eye, right eye, nose tip, left and right mouth corner


@dataclass(frozen=True)
class _Signature:
    """What an ONNX file looks like from outside."""

    path: Path
    inputs: list[Dims]
    outputs: list[Dims]
    first_nodes: list[str]

    def is_detector(self) -> bool:
        """Say whether this is an SCRFD detector with keypoints."""
        if len(self.inputs) != 1 or len(self.inputs[0]) != 4 or self.inputs[0][1] != 3:
            return False
        groups = len(self.outputs) // 3
        if len(self.outputs) != groups * 3 or groups not in _STRIDES:
            return False
        expected = [1] * groups + [4] * groups + [10] * groups
        return [dims[-1] if dims else None for dims in self.outputs] == expected

    def is_recogniser(self) -> bool:
        """Say whether this is an ArcFace-style recogniser (112 x 112 crop in, vector out)."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        shape, out = self.inputs[0], self.outputs[0]
        return (
            len(shape) == 4
            and shape[1:] == [3, CROP_SIZE, CROP_SIZE]
            and len(out) == 2
            and isinstance(out[1], int)
            and out[1] >= 64
        )


def _inspect(path: Path) -> _Signature | None:
    """Read an ONNX file's signature, or None when it is not a readable model."""
    onnx = require("onnx", "pip install onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises its own types; an unreadable file is skipped
        log.warning("face model skipped path=%s error=%s", path, err)
        return None

    def dims(value: Any) -> Dims:
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim
        ]

    weights = {tensor.name for tensor in model.graph.initializer}
    return _Signature(
        path=path,
        inputs=[dims(v) for v in model.graph.input if v.name not in weights],
        outputs=[dims(v) for v in model.graph.output],
        first_nodes=[node.name for node in model.graph.node[:8]],
    )


def find_models(model_dir: Path | None) -> tuple[_Signature, _Signature]:
    """Return the detector and recogniser in ``model_dir`` or raise :class:`EngineUnavailable`."""
    example = "e.g. InsightFace buffalo_l: det_10g.onnx + w600k_r50.onnx"
    if model_dir is None:
        raise EngineUnavailable(
            "face-model-missing",
            "engines.face.model_dir is not set; the onnx face backend needs a directory with "
            f"an SCRFD detector and an ArcFace recogniser ({example})",
        )
    if not model_dir.is_dir():
        raise EngineUnavailable(
            "face-model-missing", f"engines.face.model_dir={model_dir} is not a directory"
        )
    signatures = [s for p in sorted(model_dir.glob("*.onnx")) if (s := _inspect(p)) is not None]
    detectors = [s for s in signatures if s.is_detector()]
    recognisers = [s for s in signatures if s.is_recogniser()]
    seen = ", ".join(s.path.name for s in signatures) or "no .onnx files"
    if not detectors:
        raise EngineUnavailable(
            "face-model-missing",
            f"no SCRFD detector with keypoints in {model_dir} ({seen}); {example}",
        )
    if not recognisers:
        raise EngineUnavailable(
            "face-model-missing",
            f"no ArcFace recogniser (3x112x112 in, one vector out) in {model_dir} ({seen}); "
            f"{example}",
        )
    return detectors[0], recognisers[0]


def similarity_transform(src: Floats, dst: Floats) -> Floats:
    """Return the 2 x 3 least-squares similarity that maps points ``src`` onto ``dst`` (Umeyama)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.array([1.0, -1.0 if np.linalg.det(cov) < 0 else 1.0])
    rotation = u @ np.diag(sign) @ vt
    variance = float((src_c**2).sum()) / len(src)
    scale = float((sigma * sign).sum()) / variance if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]]).astype(np.float32)


def align_face(image: RGBImage, keypoints: Floats) -> RGBImage:
    """Warp ``image`` so the 5 keypoints land on the ArcFace template; return a 112 x 112 crop."""
    matrix = similarity_transform(keypoints.astype(np.float32), ARCFACE_TEMPLATE)
    size = (CROP_SIZE, CROP_SIZE)
    crop = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.asarray(crop, dtype=np.uint8)


def decode_scrfd(
    outputs: list[Floats], width: int, height: int, threshold: float = SCORE_THRESHOLD
) -> list[Detection]:
    """Turn SCRFD outputs for a ``width`` x ``height`` input into detections above ``threshold``.

    Anchors sit on each stride's grid corners, ``anchors`` per cell in row-major order; box
    distances (left, top, right, bottom) and keypoint offsets are in stride units.
    """
    groups = len(outputs) // 3
    found: list[Detection] = []
    for i, stride in enumerate(_STRIDES[groups]):
        scores = np.asarray(outputs[i], dtype=np.float32).reshape(-1)
        cols, cells = width // stride, (width // stride) * (height // stride)
        if cells == 0 or scores.size % cells:
            raise FaceError(
                "bad-detector-output",
                f"stride {stride} has {scores.size} scores for a {width}x{height} input",
            )
        anchors = scores.size // cells
        keep = np.flatnonzero(scores >= threshold)
        if keep.size == 0:
            continue
        rows, columns = np.divmod(keep // anchors, cols)
        centers = np.stack([columns, rows], axis=1).astype(np.float32) * stride
        dist = np.asarray(outputs[i + groups], dtype=np.float32).reshape(-1, 4)[keep] * stride
        offsets = np.asarray(outputs[i + 2 * groups], dtype=np.float32).reshape(-1, 10)[keep]
        points = centers[:, None, :] + offsets.reshape(-1, 5, 2) * stride
        boxes = np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1)
        found.extend(
            Detection(box, float(score), kps)
            for box, score, kps in zip(boxes, scores[keep], points, strict=True)
        )
    return found


def nms(detections: list[Detection], iou: float = NMS_IOU) -> list[Detection]:
    """Keep the best-scoring detections, dropping any that overlap a kept one by more than iou."""
    if not detections:
        return []
    boxes = np.stack([d.box for d in detections])
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    order = np.argsort([-d.score for d in detections], kind="stable")
    kept: list[Detection] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(detections[best])
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return kept


class OnnxFace(PooledFaceEngine):
    """Face detection with SCRFD and 512-d ArcFace embeddings, compared by cosine distance."""

    name = "onnx"
    metric = Metric.COSINE
    dim = 512

    def __init__(self, settings: FaceSettings, *, threads: int = 1) -> None:
        """Find and load the detector and recogniser in ``settings.model_dir``.

        Args:
            settings: face settings; ``detect_max_side`` sizes the input of a detector whose
                input size is dynamic.
            threads: concurrent inferences; each runs single-threaded on the CPU.
        """
        detector, recogniser = find_models(settings.model_dir)
        ort = require("onnxruntime", "pip install onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        self._providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            self._det = ort.InferenceSession(str(detector.path), options, providers=self._providers)
            self._rec = ort.InferenceSession(
                str(recogniser.path), options, providers=self._providers
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise EngineUnavailable(
                "model-load-failed", f"onnxruntime could not load the face models: {err}"
            ) from err
        self._names = (detector.path.name, recogniser.path.name)
        self._det_input = self._det.get_inputs()[0].name
        height, width = detector.inputs[0][2:]
        self._det_size: tuple[int, int] | None = None  # None: the input size is dynamic
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            self._det_size = (width, height)
        self._max_side = math.ceil(settings.detect_max_side / 32) * 32
        self._rec_input = self._rec.get_inputs()[0].name
        self._rec_batch_one = recogniser.inputs[0][0] == 1
        dim = recogniser.outputs[0][1]
        self.dim = dim if isinstance(dim, int) else self.dim
        # Some exports (older MXNet conversions) normalise inside the graph.
        baked = any(n.startswith(("Sub", "_minus")) for n in recogniser.first_nodes) and any(
            n.startswith(("Mul", "_mul")) for n in recogniser.first_nodes
        )
        self._rec_norm = (0.0, 1.0) if baked else (_REC_MEAN, _REC_STD)
        self._threads = threads
        self._pool = BlockingPool("face-onnx", threads)

    def _detect_blocking(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first (runs in the pool)."""
        return [box for box, _ in self._find(image)]

    def describe(self) -> str:
        """Return a one-line description."""
        det, rec = self._names
        size = "x".join(map(str, self._det_size)) if self._det_size else f"<= {self._max_side}"
        return (
            f"onnx SCRFD {det} ({size} px) + ArcFace {rec} ({self.dim}-d, {self.metric}), "
            f"{self._threads} thread(s) on {self._providers[0]}"
        )

    async def aclose(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown()

    def _letterbox(self, image: RGBImage) -> tuple[Floats, int, int]:
        """Scale ``image`` into the detector's input, top-left aligned; return it and its size."""
        height, width = image.shape[:2]
        if self._det_size is not None:
            canvas_w, canvas_h = self._det_size
            scale = min(canvas_w / width, canvas_h / height)
        else:
            scale = self._max_side / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        if self._det_size is None:
            canvas_w, canvas_h = math.ceil(new_w / 32) * 32, math.ceil(new_h / 32) * 32
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas = np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        blob = ((canvas.astype(np.float32) - _DET_MEAN) / _DET_STD).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(blob), new_w, new_h

    def _find(self, image: RGBImage) -> list[tuple[FaceBox, Detection]]:
        """Detect faces and map them back to ``image`` coordinates, largest first."""
        height, width = image.shape[:2]
        blob, new_w, new_h = self._letterbox(image)
        outputs = self._det.run(None, {self._det_input: blob})
        found = nms(decode_scrfd(outputs, blob.shape[3], blob.shape[2]))
        ratio = np.array([new_w / width, new_h / height], dtype=np.float32)
        faces: list[tuple[FaceBox, Detection]] = []
        for det in found:
            box = det.box / np.tile(ratio, 2)
            mapped = Detection(box, det.score, det.keypoints / ratio)
            face = FaceBox(
                left=int(np.clip(round(box[0]), 0, width)),
                top=int(np.clip(round(box[1]), 0, height)),
                right=int(np.clip(round(box[2]), 0, width)),
                bottom=int(np.clip(round(box[3]), 0, height)),
                score=det.score,
            )
            faces.append((face, mapped))
        faces.sort(key=lambda item: (item[0].area, item[0].score), reverse=True)
        return faces

    def _embed_blocking(self, image: RGBImage, max_faces: int) -> list[Face]:
        """Detect, align to the ArcFace template and embed the largest faces."""
        found = self._find(image)[:max_faces]
        if not found:
            return []
        crops = np.stack([align_face(image, det.keypoints) for _, det in found])
        mean, std = self._rec_norm
        blob = np.ascontiguousarray(((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))
        if self._rec_batch_one:
            rows = [
                self._rec.run(None, {self._rec_input: blob[i : i + 1]})[0] for i in range(len(blob))
            ]
            vectors = np.concatenate(rows).astype(np.float32)
        else:
            vectors = np.asarray(self._rec.run(None, {self._rec_input: blob})[0], np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        return [
            Face(box=box, embedding=vector.astype(np.float32))
            for (box, _), vector in zip(found, vectors, strict=True)
        ]
