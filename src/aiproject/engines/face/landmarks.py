"""The 468-point MediaPipe face mesh: named point indices and geometry measured on them.

Indices follow MediaPipe's canonical face mesh (``face_mesh_connections.py`` in the
mediapipe 0.10.21 wheel, Apache-2.0), written here as ordered contours rather than edge
sets. "Right" and "left" are the subject's: on a frontal, unmirrored photo the subject's
right eye is on the image's left. Upper and lower halves of the lips and lids run from the
same corner to the same other corner, so ``upper[i]`` and ``lower[i]`` face each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aiproject.engines.face.base import FaceBox

MESH_POINTS = 468
Points3 = npt.NDArray[np.float32]  # N x 3: x, y in image pixels, z (depth, same scale as x)

# Lips, from the subject's right mouth corner (61 outer, 78 inner) to the left (291, 308).
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Closed loops (the first point is not repeated at the end).
LIPS_OUTER = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[-2:0:-1]
LIPS_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1]
MOUTH_CORNERS = (61, 291)
UPPER_LIP_INNER_MID = 13
LOWER_LIP_INNER_MID = 14

# Eyelids, from the outer corner (33 right, 263 left) to the inner one (133, 362).
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE = RIGHT_EYE_UPPER + RIGHT_EYE_LOWER[-2:0:-1]
LEFT_EYE = LEFT_EYE_UPPER + LEFT_EYE_LOWER[-2:0:-1]
RIGHT_EYEBROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)

# The face outline, clockwise on the image from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
NOSE_TIP = 1
NOSE_BOTTOM = 2
FOREHEAD = 10
CHIN = 152
RIGHT_CHEEK = 234
LEFT_CHEEK = 454

# Six points per eye for the eye aspect ratio (Soukupová and Čech, 2016):
# corner, two upper lid points, other corner, two lower lid points facing them.
RIGHT_EAR_POINTS = (33, 160, 158, 133, 153, 144)
LEFT_EAR_POINTS = (362, 385, 387, 263, 373, 380)

# dlib's 5-point order (shape_predictor_5_face_landmarks): the subject's left eye outer and
# inner corner, right eye outer and inner corner, the bottom of the nose. Matched to mesh
# points by comparing dlib's predictor with the mesh on the face fixtures, 1-3 px apart on
# faces 90-160 px wide (tests/engines/test_face_mesh.py).
DLIB_FIVE = (263, 362, 33, 133, 2)


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees, from the mesh's 3-D points.

    ``yaw`` is positive when the face turns towards the image's right, ``pitch`` positive
    when it tilts up (chin forward), ``roll`` positive when it leans clockwise on the image.
    """

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class FaceLandmarks:
    """The 468 mesh points of one face (float32 pixels of the image) and where it was found.

    ``points[:, :2]`` are x, y in image pixels (they may run past the edges for a face cut
    by them); ``points[:, 2]`` is depth relative to the face centre on the same scale as x,
    smaller towards the camera. ``presence`` is the mesh model's face score (0-1).
    """

    points: Points3
    box: FaceBox
    presence: float

    @property
    def xy(self) -> npt.NDArray[np.float32]:
        """Return the (468, 2) pixel coordinates."""
        return self.points[:, :2]

    def take(self, indices: tuple[int, ...]) -> npt.NDArray[np.float32]:
        """Return the (len(indices), 2) pixel coordinates of the named points."""
        return self.points[list(indices), :2]

    @property
    def face_width(self) -> float:
        """Return the distance between the cheek points in pixels."""
        return float(np.linalg.norm(self.xy[LEFT_CHEEK] - self.xy[RIGHT_CHEEK]))

    def eye_openness(self) -> float:
        """Return the mean eye aspect ratio of both eyes (open ~0.25-0.35, closed < 0.15)."""
        right = eye_aspect_ratio(self.points, RIGHT_EAR_POINTS)
        left = eye_aspect_ratio(self.points, LEFT_EAR_POINTS)
        return (right + left) / 2

    def head_pose(self) -> HeadPose:
        """Return the head's yaw, pitch and roll in degrees."""
        return head_pose(self.points)


def eye_aspect_ratio(points: Points3, six: tuple[int, ...]) -> float:
    """Return the eye aspect ratio of one eye from its six points (2-D)."""
    p = points[list(six), :2].astype(np.float64)
    width = np.linalg.norm(p[0] - p[3])
    if width <= 0:
        return 0.0
    height = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(height / (2 * width))


def head_pose(points: Points3) -> HeadPose:
    """Estimate yaw, pitch and roll in degrees from the mesh's cheeks, forehead and chin."""
    p = points.astype(np.float64)
    across = p[LEFT_CHEEK] - p[RIGHT_CHEEK]  # image left to right on a frontal face
    down = p[CHIN] - p[FOREHEAD]
    across /= np.linalg.norm(across) or 1.0
    down -= across * float(np.dot(down, across))
    down /= np.linalg.norm(down) or 1.0
    # Turning towards the image's right brings the subject's right cheek (image left)
    # towards the camera: the across axis points away from the camera (z grows).
    yaw = math.degrees(math.atan2(across[2], math.hypot(across[0], across[1])))
    # Tilting up brings the chin forward: the down axis points towards the camera.
    pitch = math.degrees(math.atan2(-down[2], math.hypot(down[0], down[1])))
    roll = math.degrees(math.atan2(across[1], across[0]))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)
