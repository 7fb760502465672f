"""Is a photo good enough to analyse: big enough, bright enough, sharp enough."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from aiproject.engines.images import RGBImage, downscale

# Sharpness is measured at a fixed scale so that a large photo is not judged sharper (or a
# small one blurrier) than the same scene at another resolution.
SHARPNESS_SIDE = 512


class QualityProblem(StrEnum):
    """Why a photo is sent back."""

    TOO_SMALL = "too-small"
    TOO_DARK = "too-dark"
    TOO_BLURRED = "too-blurred"


@dataclass(frozen=True)
class QualityThresholds:
    """The least a photo must measure."""

    min_side: int = 160
    min_brightness: float = 45.0
    min_sharpness: float = 15.0


@dataclass(frozen=True)
class ImageQuality:
    """What was measured."""

    width: int
    height: int
    brightness: float  # mean of HSV value, 0-255
    sharpness: float  # variance of the Laplacian of the grey picture at SHARPNESS_SIDE

    def problem(self, thresholds: QualityThresholds) -> QualityProblem | None:
        """Return the first problem found (size, then light, then focus), or None."""
        if min(self.width, self.height) < thresholds.min_side:
            return QualityProblem.TOO_SMALL
        if self.brightness < thresholds.min_brightness:
            return QualityProblem.TOO_DARK
        if self.sharpness < thresholds.min_sharpness:
            return QualityProblem.TOO_BLURRED
        return None


def measure_quality(image: RGBImage) -> ImageQuality:
    """Measure size, brightness and sharpness of an RGB image."""
    height, width = image.shape[:2]
    brightness = float(np.max(image, axis=2).mean())  # HSV value is the channel maximum
    small, _ = downscale(image, SHARPNESS_SIDE)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return ImageQuality(width, height, round(brightness, 1), round(sharpness, 1))
