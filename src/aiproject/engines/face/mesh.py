"""The 468-point face mesh for still images: BlazeFace finds the face, the mesh model refines it.

Follows MediaPipe's ``face_landmark_front_cpu`` graph in static-image mode: the region of
interest is the detection box centred, scaled by 1.5 to a square on its longer side and
rotated so the eyes are level; it is warped to the model's 192 x 192 input in [0, 1]; the
model returns 468 (x, y, z) points in that crop and a face-presence logit; the points are
mapped back to image pixels. Measured here: about 1 ms for the mesh model plus the
detector's 2-6 ms per frame.

Usage::

    from aiproject.engines.face.mesh import FaceMesh
    from aiproject.engines.face import landmarks

    mesh = FaceMesh()                      # loads the models from the mediapipe wheel
    (face,) = mesh.landmarks(rgb_image)    # raises FaceError("no-face") if none is found
    lips = face.take(landmarks.LIPS_OUTER) # (20, 2) float32 pixels
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.errors import FaceError, foreign_errors
from aiproject.engines.face.base import check_request
from aiproject.engines.face.blazeface import BlazeFace, Detection, DetectorRange
from aiproject.engines.face.landmarks import MESH_POINTS, FaceLandmarks
from aiproject.engines.face.tflite import FACE_LANDMARKS, TFLiteModel
from aiproject.engines.images import RGBImage

_ROI_SCALE = 1.5
_MIN_PRESENCE = 0.5
Affine = npt.NDArray[np.float64]  # 2 x 3


def region_of_interest(detection: Detection) -> tuple[float, float, float, float]:
    """Return the mesh crop (centre x, centre y, side, rotation in radians) for a detection."""
    x0, y0, x1, y1 = detection.bounds
    (rx, ry), (lx, ly) = detection.right_eye, detection.left_eye
    rotation = math.atan2(ly - ry, lx - rx)
    side = _ROI_SCALE * max(x1 - x0, y1 - y0)
    return (x0 + x1) / 2, (y0 + y1) / 2, side, rotation


def crop_transform(roi: tuple[float, float, float, float], size: int) -> Affine:
    """Return the affine map from image pixels to the ``size`` x ``size`` mesh crop."""
    cx, cy, side, rotation = roi
    ux = np.array([math.cos(rotation), math.sin(rotation)]) * side / 2
    uy = np.array([-math.sin(rotation), math.cos(rotation)]) * side / 2
    centre = np.array([cx, cy])
    src = np.array([centre - ux - uy, centre + ux - uy, centre - ux + uy], dtype=np.float32)
    dst = np.array([[0, 0], [size, 0], [0, size]], dtype=np.float32)
    return np.asarray(cv2.getAffineTransform(src, dst), dtype=np.float64)


class FaceMesh:
    """Find faces and their 468 mesh points in still RGB images (thread-safe, serialised).

    Args:
        detector: the BlazeFace model: ``short`` (faces within ~2 m), ``full`` (~5 m) or
            ``auto`` (short, then full when short finds nothing); see :class:`DetectorRange`.
        threads: TensorFlow Lite threads per model.
        blazeface: an already loaded detector to share instead of loading another.
    """

    def __init__(
        self,
        detector: DetectorRange | str = DetectorRange.AUTO,
        *,
        threads: int = 1,
        blazeface: BlazeFace | None = None,
    ) -> None:
        self.detector = blazeface or BlazeFace(detector, threads=threads)
        self._model = TFLiteModel(FACE_LANDMARKS, threads=threads)
        self._size = self._model.input_size[0]

    def landmarks(self, image: RGBImage, *, max_faces: int = 1) -> list[FaceLandmarks]:
        """Return the mesh of up to ``max_faces`` faces, largest first.

        Raises:
            BadInput: ``image`` is not an H x W x 3 uint8 array or ``max_faces`` < 1.
            FaceError: ``no-face`` when no face is found, ``face-failed`` when a model fails.
        """
        image = check_request(image, max_faces)
        with foreign_errors(FaceError, "face-failed", "face mesh failed"):
            _, faces = self.detect_and_mesh(image, max_faces)
        if not faces:
            raise FaceError("no-face", "no face was found in the image")
        return faces

    def detect_and_mesh(
        self, image: RGBImage, max_faces: int
    ) -> tuple[list[Detection], list[FaceLandmarks]]:
        """Detect, then mesh the largest ``max_faces`` faces the mesh model confirms (blocking).

        Returns the detections less those the mesh model rejected (largest first, so the
        meshed ones lead) and the meshes. ``image`` must already be checked.
        """
        kept = self.detector.detect(image)
        meshed: list[FaceLandmarks] = []
        i = 0
        while i < len(kept) and len(meshed) < max_faces:
            landmarks = self.mesh(image, kept[i])
            if landmarks is None:
                del kept[i]  # a detection the mesh model sees no face in
                continue
            meshed.append(landmarks)
            i += 1
        return kept, meshed

    def mesh(self, image: RGBImage, detection: Detection) -> FaceLandmarks | None:
        """Return the mesh for one detection, or None if the model sees no face there."""
        roi = region_of_interest(detection)
        forward = crop_transform(roi, self._size)
        crop = cv2.warpAffine(
            image,
            forward,
            (self._size, self._size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        tensor = crop.astype(np.float32)[None] / 255.0
        raw_points, raw_presence = self._model.run(tensor)
        logit = float(np.clip(raw_presence.ravel()[0], -80.0, 80.0))
        presence = 1.0 / (1.0 + math.exp(-logit))
        if presence < _MIN_PRESENCE:
            return None
        crop_points = raw_points.reshape(MESH_POINTS, 3).astype(np.float64)
        backward = cv2.invertAffineTransform(forward)
        xy = crop_points[:, :2] @ backward[:, :2].T + backward[:, 2]
        z = crop_points[:, 2:] * (roi[2] / self._size)
        points = np.concatenate([xy, z], axis=1).astype(np.float32)
        return FaceLandmarks(points=points, box=detection.box, presence=presence)
