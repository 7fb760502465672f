"""What a CPU can measure in a photo of vomit: where it is, its colours, its texture.

Nothing here recognises vomit. The picture is split into a floor (the colour that dominates
its border) and a subject (what differs from it); the subject's pixels are sorted into colour
classes by HSV ranges chosen for the things a vet asks about (fresh blood, dark digested
blood, bile, foam, food, dyes that no food has), and its texture is summarised as small
distinct pieces and long thin strands. :mod:`aiproject.domain.pets.vomit_advice` turns these
numbers into words and urgency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.images import RGBImage, downscale

WORK_SIDE = 384  # measurements run on the picture scaled to this longer side
Mask = npt.NDArray[np.bool_]


class Colour(StrEnum):
    """The colour classes, in the order a pixel is tested against them."""

    DYE = "dye"  # saturated blue, teal or purple: no food or body fluid has it
    BLOOD = "blood"  # saturated red
    DARK = "dark"  # very dark brown-red to black: digested blood looks like this, so does food
    BILE_YELLOW = "bile_yellow"
    GREEN = "green"  # bile turning green, or grass
    FOAM = "foam"  # white to light grey
    FOOD = "food"  # browns, tans, oranges
    OTHER = "other"


# Colours that vomit commonly shows; the gate asks for a majority of these.
VOMIT_COLOURS = (
    Colour.BLOOD,
    Colour.DARK,
    Colour.BILE_YELLOW,
    Colour.GREEN,
    Colour.FOAM,
    Colour.FOOD,
)


@dataclass(frozen=True)
class VomitMeasurements:
    """Numbers measured on one photo; shares are fractions of the subject's pixels."""

    subject_share: float  # of the whole picture
    whole_picture: bool  # no floor could be told apart: the picture is treated as a close-up
    colours: dict[str, float]
    pieces: int  # small distinct lumps (kibble-sized at typical framing)
    strands: int  # long thin shapes that are neither red nor green (hair, string, plastic)
    grass: int  # long thin green shapes
    edge_density: float  # Canny edges per subject pixel: 0 for a smooth puddle

    def share(self, colour: Colour) -> float:
        """Return the share of the subject in ``colour``."""
        return self.colours.get(colour.value, 0.0)

    @property
    def vomit_colour_share(self) -> float:
        """Return the share of the subject in colours vomit commonly shows."""
        return sum(self.share(c) for c in VOMIT_COLOURS)

    def as_dict(self) -> dict[str, object]:
        """Return the measurements as plain data (for storage and prompts)."""
        return asdict(self)


def colour_classes(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return, per pixel, the index of its :class:`Colour` (OpenCV HSV: H 0-179)."""
    h = hsv[..., 0].astype(np.int16)
    s = hsv[..., 1].astype(np.int16)
    v = hsv[..., 2].astype(np.int16)
    reddish = (h <= 7) | (h >= 165)
    warm = (h <= 30) | (h >= 165)
    tests: list[tuple[Colour, Mask]] = [
        (Colour.DYE, (h >= 78) & (h <= 160) & (s >= 100) & (v >= 60)),
        (Colour.BLOOD, reddish & (s >= 130) & (v >= 70)),
        (Colour.DARK, warm & (s >= 50) & (v < 65)),
        (Colour.BILE_YELLOW, (h >= 18) & (h <= 34) & (s >= 100) & (v >= 130)),
        (Colour.GREEN, (h >= 35) & (h <= 77) & (s >= 60) & (v >= 50)),
        (Colour.FOAM, (s <= 45) & (v >= 180)),
        (Colour.FOOD, warm & (s >= 50) & (v >= 50)),
    ]
    order = list(Colour)
    classes = np.full(h.shape, order.index(Colour.OTHER), dtype=np.uint8)
    assigned = np.zeros(h.shape, dtype=bool)
    for colour, mask in tests:
        fresh = mask & ~assigned
        classes[fresh] = order.index(colour)
        assigned |= fresh
    return classes


def subject_mask(image: RGBImage) -> Mask:
    """Return the pixels that differ from the floor (the colour around the border)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    height, width = lab.shape[:2]
    band = max(2, round(min(height, width) * 0.06))
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[:, :band].reshape(-1, 3),
            lab[:, -band:].reshape(-1, 3),
        ]
    )
    floor = np.median(border, axis=0)
    distance = np.linalg.norm(lab - floor, axis=2)
    border_distance = np.linalg.norm(border - floor, axis=1)
    # Floors have texture (grout, grain, noise): whatever the border itself spans is floor.
    threshold = max(20.0, float(np.percentile(border_distance, 95)) * 1.2)
    mask = (distance > threshold).astype(np.uint8)
    # A line along the very edge (a grout line, a skirting board) is floor, not subject.
    mask[:3, :] = mask[-3:, :] = 0
    mask[:, :3] = mask[:, -3:] = 0
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 0.002 * height * width
    result: Mask = keep[labels]
    return result


def _components(mask: Mask) -> tuple[int, npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    return int(count), np.asarray(labels, np.int32), np.asarray(stats, np.int32)


def _elongated(mask: Mask, min_length: float) -> list[Mask]:
    """Return the long thin connected parts of ``mask``."""
    count, labels, stats = _components(mask)
    found = []
    for index in range(1, count):
        if stats[index, cv2.CC_STAT_AREA] < 12:
            continue
        member = labels == index
        points = np.column_stack(np.nonzero(member)).astype(np.float32)
        (_, _), (w, h), _ = cv2.minAreaRect(points)
        if max(w, h) >= min_length and max(w, h) / max(1.0, min(w, h)) >= 5:
            found.append(member)
    return found


def _shapes(image: RGBImage, subject: Mask, classes: npt.NDArray[np.uint8]) -> tuple[int, int, int]:
    """Count compact lumps, non-green strands and green strands inside the subject.

    Lumps and strands are what stands out from its surroundings (brighter or darker than a
    15 px neighbourhood). An opening with a 5 px disc keeps the lumps and drops anything
    thinner; what it drops, where long and thin, is a strand (even when it crosses a lump).
    Grass is told by colour instead: green on brown barely differs in brightness.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    order = list(Colour)
    height, width = grey.shape
    min_length = 0.06 * max(height, width)
    pieces = strands = 0
    for op in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
        spots = (cv2.morphologyEx(grey, op, kernel) > 18) & subject
        lumps = cv2.morphologyEx(spots.astype(np.uint8), cv2.MORPH_OPEN, disc).astype(bool)
        thin = spots & ~cv2.dilate(lumps.astype(np.uint8), disc).astype(bool)
        _, _, stats = _components(lumps)
        areas = stats[1:, cv2.CC_STAT_AREA]
        pieces += int(((areas >= 12) & (areas <= 0.01 * height * width)).sum())
        for member in _elongated(thin, min_length):
            votes = np.bincount(classes[member], minlength=len(order))
            if order[int(np.argmax(votes))] not in (Colour.GREEN, Colour.BLOOD, Colour.DARK):
                strands += 1
    green = subject & (classes == order.index(Colour.GREEN))
    grass = len(_elongated(green, min_length))
    return pieces, strands, grass


def measure_vomit(image: RGBImage) -> VomitMeasurements:
    """Measure the subject of an RGB photo: its share, colours and texture."""
    small, _ = downscale(image, WORK_SIDE)
    small = np.ascontiguousarray(small)
    subject = subject_mask(small)
    whole = bool(subject.mean() < 0.01)
    if whole:
        subject = np.ones(small.shape[:2], dtype=bool)
    hsv = np.asarray(cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_RGB2HSV), np.uint8)
    classes = colour_classes(hsv)
    counts = np.bincount(classes[subject], minlength=len(Colour))
    total = max(1, int(subject.sum()))
    colours = {c.value: round(float(counts[i]) / total, 4) for i, c in enumerate(Colour)}
    pieces, strands, grass = _shapes(small, subject, classes)
    edges = cv2.Canny(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), 60, 160) > 0
    return VomitMeasurements(
        subject_share=round(float(subject.mean()), 4),
        whole_picture=whole,
        colours=colours,
        pieces=pieces,
        strands=strands,
        grass=grass,
        edge_density=round(float((edges & subject).sum()) / total, 4),
    )


# ImageNet classes a photo of vomit may be mistaken for (dishes, mushy food, fungi, rags, mats,
# paper towels). A confident top class outside this set (an espresso, a missile, a web page)
# says the photo shows something else.
MESS_LIKE_CLASSES = frozenset(
    [*range(923, 966), *range(991, 998), 434, 533, 539, 599, 700, 741, 885, 911, 999]
)


class GateResult(StrEnum):
    """Why a photo is not taken for vomit."""

    PET = "pet"  # the classifier is sure it shows a cat or a dog (the pet, not its vomit)
    SOMETHING_ELSE = "something-else"  # the classifier is sure it shows another thing
    NO_SUBJECT = "no-subject"  # nothing stands out from the floor
    NOT_VOMIT_COLOURS = "not-vomit-colours"


def vomit_gate(
    top: tuple[int, float],
    pet_score: float,
    m: VomitMeasurements,
    *,
    veto_score: float,
    colours: bool,
) -> GateResult | None:
    """Return why the photo does not look like vomit, or None when it may.

    Args:
        top: the most probable ImageNet class and its probability.
        pet_score: the summed probability of the cat and dog classes.
        m: the measurements of the photo.
        veto_score: how sure the classifier must be to veto.
        colours: also require vomit-like colours (off when a vision model judges the photo).
    """
    if pet_score >= veto_score:
        return GateResult.PET
    if top[1] >= veto_score and top[0] not in MESS_LIKE_CLASSES:
        return GateResult.SOMETHING_ELSE
    if not colours:
        return None
    # Nothing stands out, or the frame is a featureless surface (a wall, a sheet of paper).
    if m.subject_share < 0.02 or (m.whole_picture and m.edge_density < 0.02):
        return GateResult.NO_SUBJECT
    # Without a floor to tell the subject apart the whole frame must look like vomit.
    needed = 0.8 if m.whole_picture else 0.6
    if m.vomit_colour_share < needed or m.share(Colour.DYE) >= 0.3:
        return GateResult.NOT_VOMIT_COLOURS
    return None
