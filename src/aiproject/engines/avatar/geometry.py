"""Where the parts of a face are that the portrait renderer moves: lips, jaw and eyelids.

The geometry comes from a face mesh (the 468 MediaPipe landmarks of a photo) or is known by
construction (the generated default face). Points are (x, y) pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from aiproject.engines.face import landmarks as mesh

Points = npt.NDArray[np.float64]  # shape (n, 2): x, y


@dataclass(frozen=True)
class FaceGeometry:
    """The moving parts of one face in one picture."""

    upper_inner_lip: Points  # inner edge of the upper lip, corner to corner
    lower_inner_lip: Points  # inner edge of the lower lip, corner to corner
    mouth_corners: Points  # outer corners, left then right
    lip_top: Points  # (1, 2) outer edge of the upper lip at the middle
    lip_bottom: Points  # (1, 2) outer edge of the lower lip at the middle
    under_nose: Points  # (1, 2)
    chin: Points  # (1, 2) lowest point of the chin
    forehead: Points  # (1, 2) top of the face
    left_eye_upper: Points  # upper lid edge of the eye on the image's left, corner to corner
    left_eye_lower: Points
    right_eye_upper: Points
    right_eye_lower: Points

    @classmethod
    def from_mesh(cls, points: Points) -> FaceGeometry:
        """Pick the moving parts out of 468 face-mesh landmarks in pixel coordinates."""
        if points.ndim != 2 or points.shape[0] != mesh.MESH_POINTS or points.shape[1] < 2:
            raise ValueError(f"a face mesh has {mesh.MESH_POINTS} points, not {points.shape}")
        xy = np.asarray(points[:, :2], dtype=np.float64)

        def take(indices: tuple[int, ...] | int, left_to_right: bool = False) -> Points:
            picked = xy[np.atleast_1d(np.asarray(indices))].copy()
            if left_to_right and picked[0, 0] > picked[-1, 0]:
                picked = picked[::-1].copy()
            return np.asarray(picked, np.float64)

        eyes = [
            (mesh.RIGHT_EYE_UPPER, mesh.RIGHT_EYE_LOWER),
            (mesh.LEFT_EYE_UPPER, mesh.LEFT_EYE_LOWER),
        ]
        eyes.sort(key=lambda eye: float(xy[list(eye[0]), 0].mean()))
        return cls(
            upper_inner_lip=take(mesh.LIPS_INNER_UPPER, True),
            lower_inner_lip=take(mesh.LIPS_INNER_LOWER, True),
            mouth_corners=take(mesh.MOUTH_CORNERS, True),
            lip_top=take(mesh.LIPS_OUTER_UPPER[5]),
            lip_bottom=take(mesh.LIPS_OUTER_LOWER[5]),
            under_nose=take(mesh.NOSE_BOTTOM),
            chin=take(mesh.CHIN),
            forehead=take(mesh.FOREHEAD),
            left_eye_upper=take(eyes[0][0], True),
            left_eye_lower=take(eyes[0][1], True),
            right_eye_upper=take(eyes[1][0], True),
            right_eye_lower=take(eyes[1][1], True),
        )

    def transformed(self, matrix: npt.NDArray[np.float64]) -> FaceGeometry:
        """Return the geometry moved by a 2x3 affine ``matrix`` (as given to cv2.warpAffine)."""

        def move(points: Points) -> Points:
            return np.asarray(points @ matrix[:, :2].T + matrix[:, 2], np.float64)

        return FaceGeometry(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @property
    def mouth_width(self) -> float:
        """Return the distance between the mouth corners."""
        return float(np.linalg.norm(self.mouth_corners[1] - self.mouth_corners[0]))

    @property
    def mouth_center(self) -> tuple[float, float]:
        """Return the middle of the closed lip line."""
        both = np.vstack([self.upper_inner_lip, self.lower_inner_lip])
        return float(both[:, 0].mean()), float(both[:, 1].mean())

    @property
    def face_height(self) -> float:
        """Return the distance from the top of the face to the chin."""
        return float(np.linalg.norm(self.chin[0] - self.forehead[0]))

    @property
    def eyes(self) -> tuple[tuple[Points, Points], tuple[Points, Points]]:
        """Return (upper lid, lower lid) of the left and the right eye."""
        return (
            (self.left_eye_upper, self.left_eye_lower),
            (self.right_eye_upper, self.right_eye_lower),
        )

    @property
    def roll_degrees(self) -> float:
        """Return how far the line between the eyes tilts (positive: clockwise on screen)."""
        left = np.vstack(self.eyes[0]).mean(axis=0)
        right = np.vstack(self.eyes[1]).mean(axis=0)
        return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


def curve_at(points: Points, xs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return the y of a left-to-right polyline at ``xs`` (held flat beyond its ends)."""
    order = np.argsort(points[:, 0], kind="stable")
    return np.interp(xs, points[order, 0], points[order, 1])
