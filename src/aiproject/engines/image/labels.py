"""ImageNet-1k class names, and the cat and dog classes the pet features ask about."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from aiproject.engines.image.base import Label
from aiproject.engines.image.imagenet_classes import IMAGENET_CLASSES

NUM_CLASSES = len(IMAGENET_CLASSES)

# Dog breeds: 151 "Chihuahua" .. 268 "Mexican hairless" (269 onwards are wolves, foxes, wild
# dogs). Domestic cats: 281 "tabby" .. 285 "Egyptian cat" (286 onwards are wild cats).
DOG_BREEDS = range(151, 269)
DOMESTIC_CATS = range(281, 286)


class PetKind(StrEnum):
    """The kinds of pet an ImageNet class can name."""

    DOG = "dog"
    CAT = "cat"


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class: index, WordNet id and names (the first is the usual one)."""

    index: int
    wnid: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        """Return the class's usual name (its first WordNet lemma)."""
        return self.names[0]


@dataclass(frozen=True)
class PetGuess:
    """What kind of pet a picture shows, how sure that is, and the likeliest breed."""

    kind: PetKind
    score: float  # summed probability of the kind's classes among the labels given
    breed: Label  # the most probable class of that kind


CLASSES: tuple[ImageNetClass, ...] = tuple(
    ImageNetClass(index, wnid, tuple(name.strip() for name in lemmas.split(",")))
    for index, (wnid, lemmas) in enumerate(IMAGENET_CLASSES)
)


def imagenet_class(index: int) -> ImageNetClass:
    """Return the class at ``index`` or raise IndexError."""
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"ImageNet class index {index} is not in 0..{NUM_CLASSES - 1}")
    return CLASSES[index]


def class_name(index: int) -> str:
    """Return the usual name of the class at ``index``."""
    return imagenet_class(index).name


def pet_kind(index: int) -> PetKind | None:
    """Return DOG for a dog breed, CAT for a domestic cat, None for anything else."""
    if index in DOG_BREEDS:
        return PetKind.DOG
    if index in DOMESTIC_CATS:
        return PetKind.CAT
    return None


def is_dog(index: int) -> bool:
    """Say whether the class is a dog breed."""
    return index in DOG_BREEDS


def is_cat(index: int) -> bool:
    """Say whether the class is a domestic cat."""
    return index in DOMESTIC_CATS


def guess_pet(labels: Iterable[Label]) -> PetGuess | None:
    """Return the pet kind with the most probability among ``labels``, or None if none is.

    Pass many labels (``classify(image, top_k=20)``): a cat's probability is often spread
    over tabby, tiger cat and Egyptian cat, and only their sum says "cat" with confidence.
    """
    totals: dict[PetKind, float] = {}
    best: dict[PetKind, Label] = {}
    for label in labels:
        kind = pet_kind(label.index)
        if kind is None:
            continue
        totals[kind] = totals.get(kind, 0.0) + label.score
        if kind not in best or label.score > best[kind].score:
            best[kind] = label
    if not totals:
        return None
    kind = max(totals, key=lambda k: totals[k])
    return PetGuess(kind, totals[kind], best[kind])
