"""What a CPU can measure in a photo of vomit: where it is, its colours, its texture.

Nothing here recognises vomit. The picture is split into a floor (the colour that dominates
its border) and a subject (what differs from it); the subject's pixels are sorted into colour
classes by HSV ranges chosen for the things a vet asks about (fresh blood, dark digested
blood, bile, foam, food, dyes that no food has), and its texture is summarised as small
distinct pieces and long thin strands. :mod:`aiproject.domain.pets.vomit_advice` turns these
numbers into words and urgency.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # How much of the best ellipse around the subject runs along edges (0-1): a plate's rim,
    # a bowl, a disc. Vomit has ragged outlines.
    dish_support: float = 0.0

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
    dish = 0.0 if whole else dish_support(small, subject)
    return VomitMeasurements(
        subject_share=round(float(subject.mean()), 4),
        whole_picture=whole,
        colours=colours,
        pieces=pieces,
        strands=strands,
        grass=grass,
        edge_density=round(float((edges & subject).sum()) / total, 4),
        dish_support=round(dish, 4),
    )


def _ellipse_support(near_edge: Mask, ellipse: cv2.typing.RotatedRect) -> float:
    """Return the share of the ellipse's outline that lies on an edge (0 if it leaves the frame)."""
    (cx, cy), (w, h), angle = ellipse
    t = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    a = np.deg2rad(angle)
    x = cx + w / 2 * np.cos(t) * np.cos(a) - h / 2 * np.sin(t) * np.sin(a)
    y = cy + w / 2 * np.cos(t) * np.sin(a) + h / 2 * np.sin(t) * np.cos(a)
    height, width = near_edge.shape
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    if inside.mean() < 0.9:
        return 0.0
    xi = np.clip(np.round(x).astype(int), 0, width - 1)
    yi = np.clip(np.round(y).astype(int), 0, height - 1)
    return float((near_edge[yi, xi] & inside).mean())


def dish_support(image: RGBImage, subject: Mask) -> float:
    """Return how well a large ellipse that holds the subject follows the picture's edges.

    Candidates are ellipses fitted to the subject's outlines and to the curved edges (straight
    ones, such as grout lines and board joints, are erased first). One counts when it is large
    (minor axis >= 30 % of the shorter side, not flatter than 2.5:1) and holds >= 90 % of the
    subject; its support is the share of its outline within 2 px of an edge. A plate's rim
    scores about 1; the ragged outline of a puddle or pile scores 0.6 or less.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 40, 120)
    near_edge: Mask = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 3) <= 2
    shortest = min(grey.shape)
    curved = edges.copy()
    lines = cv2.HoughLinesP(
        edges, 1, np.pi / 180, 40, minLineLength=int(0.12 * shortest), maxLineGap=3
    )
    for x1, y1, x2, y2 in [] if lines is None else lines[:, 0]:
        cv2.line(curved, (int(x1), int(y1)), (int(x2), int(y2)), (0,), 5)
    outlines = [
        *cv2.findContours(
            cv2.dilate(curved, np.ones((3, 3), np.uint8)), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )[0],
        *cv2.findContours(subject.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0],
    ]
    subject_pixels = max(1, int(subject.sum()))
    best = 0.0
    for outline in outlines:
        if len(outline) < 0.3 * shortest:
            continue
        ellipse = cv2.fitEllipse(outline)
        minor, major = sorted(ellipse[1])
        if minor < 0.3 * shortest or minor < 0.4 * major:
            continue
        inside = np.zeros(grey.shape, np.uint8)
        cv2.ellipse(inside, ellipse, (1,), -1)
        if (subject & (inside > 0)).sum() < 0.9 * subject_pixels:
            continue
        best = max(best, _ellipse_support(near_edge, ellipse))
    return best


# ImageNet classes a photo of vomit may be mistaken for: mushy or amorphous food, fungi, rags,
# mats, towels. A confident top class outside this set (an espresso, a missile, a banana, a web
# page) says the photo shows something else. Whole fruit, vegetables and bread are left out:
# vomit does not look like a banana.
MESS_LIKE_CLASSES = frozenset(
    [
        *(924, 925, 926, 927, 928, 935, 940, 956, 958, 959, 960, 961, 962, 963, 964, 965),
        *range(991, 998),  # fungi
        *(434, 533, 539, 599, 700, 741, 885, 911, 999),  # towels, rags, mats, rugs, wool
    ]
)

# Tableware and table settings: plate, soup and mixing bowls, tray, dining table, restaurant,
# frying pan, wok, plate rack, cup, coffee mug, crock pot, Dutch oven, caldron, espresso.
DISH_CLASSES = frozenset(
    [923, 809, 659, 868, 532, 762, 567, 909, 729, 968, 504, 521, 544, 469, 967]
)
DISH_SCORE = 0.3  # summed probability of DISH_CLASSES that says "a meal is served"
DISH_OUTLINE = 0.8  # dish_support from which the subject lies on a plate or in a bowl
MIN_EDGE_DENSITY = 0.02  # below this the subject is featureless (a shadow, a sky, a wall)


class GateResult(StrEnum):
    """Why a photo is not taken for vomit."""

    PET = "pet"  # the classifier is sure it shows a cat or a dog (the pet, not its vomit)
    SOMETHING_ELSE = "something-else"  # the classifier is sure it shows another thing
    DISH = "dish"  # a plate, a bowl or a table setting: a meal, not vomit
    NO_SUBJECT = "no-subject"  # nothing stands out from the floor, or it has no texture
    NO_FLOOR = "no-floor"  # the frame is one surface: a carpet, soil, a dish of food, a wall
    NOT_VOMIT_COLOURS = "not-vomit-colours"


def vomit_gate(
    labels: Sequence[tuple[int, float]],
    pet_score: float,
    m: VomitMeasurements,
    *,
    veto_score: float,
    colours: bool,
) -> GateResult | None:
    """Return why the photo does not look like vomit, or None when it may.

    Args:
        labels: ImageNet classes and their probabilities, most probable first (top 20).
        pet_score: the summed probability of the cat and dog classes.
        m: the measurements of the photo.
        veto_score: how sure the classifier must be to veto.
        colours: also judge the measurements (off when a vision model judges the photo).
    """
    if pet_score >= veto_score:
        return GateResult.PET
    top, top_score = labels[0] if labels else (-1, 0.0)
    if top_score >= veto_score and top not in MESS_LIKE_CLASSES:
        return GateResult.SOMETHING_ELSE
    if not colours:
        return None
    if sum(score for index, score in labels if index in DISH_CLASSES) >= DISH_SCORE:
        return GateResult.DISH
    if m.subject_share < 0.02:
        return GateResult.NO_SUBJECT
    # Without a floor around it nothing tells vomit from the surface it would lie on: a rug,
    # soil, a dish of food and a close-up of vomit all fill the frame with brown texture.
    if m.whole_picture:
        return GateResult.NO_FLOOR
    if m.edge_density < MIN_EDGE_DENSITY:
        return GateResult.NO_SUBJECT
    if m.dish_support >= DISH_OUTLINE:
        return GateResult.DISH
    if m.vomit_colour_share < 0.6 or m.share(Colour.DYE) >= 0.3:
        return GateResult.NOT_VOMIT_COLOURS
    return None
