"""Face-mesh landmarks of a portrait photo, found once when the avatar loads.

Runs the face engine's 468-point mesh (MediaPipe's models through TensorFlow Lite, see
``engines.face.mesh``): the short-range detector first (a portrait), the full-range one
when that finds nothing (a face further from the camera).
"""

from __future__ import annotations

import numpy as np

from aiproject.engines.avatar.errors import AvatarError
from aiproject.engines.avatar.geometry import Points
from aiproject.engines.errors import EngineUnavailable, FaceError
from aiproject.engines.images import RGBImage


def face_mesh(image: RGBImage) -> Points:
    """Return the 468 (x, y) landmarks of the largest face in pixels.

    Raises:
        AvatarError: ``no-face`` when neither detector finds a face,
            ``landmarks-unavailable`` when the mesh models are not installed.
    """
    from aiproject.engines.face.blazeface import DetectorRange
    from aiproject.engines.face.mesh import FaceMesh

    for detector in (DetectorRange.SHORT, DetectorRange.FULL):
        try:
            faces = FaceMesh(detector).landmarks(image)
        except EngineUnavailable as err:
            raise AvatarError("landmarks-unavailable", err.message) from err
        except FaceError as err:
            if err.code != "no-face":
                raise AvatarError("no-face", f"the face mesh failed: {err.message}") from err
            continue
        return np.asarray(faces[0].xy, np.float64)
    raise AvatarError("no-face", "no face was found in the avatar photo")
