"""How many distinct vomiting episodes earlier photos show: one photo counts once.

A user who sends the same photo again (to try the other report style, after a network error,
from another app that re-encodes or shrinks it) has not seen the pet vomit again. Photos are
compared by the SHA-256 of their bytes and by a perceptual hash of what they show: the 64-bit
DCT hash of the picture in grey at 32 x 32 (pHash). A re-encoded or resized copy lands within a
few bits of the original; two different photos of vomit on the same floor, framed alike, lie
a dozen or more bits apart (see tests/domain/test_pets_episodes.py). A cropped copy, or a second
shot of the same mess, counts as a new photo: nothing here can tell it from a new episode, and
counting one too many errs towards seeing a vet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from aiproject.engines.images import RGBImage

HASH_BITS = 64
SAME_PHOTO_BITS = 4  # a perceptual-hash distance up to this is the same photo


@dataclass(frozen=True)
class PhotoId:
    """What identifies a photo: its bytes and what it shows (either may be unknown: "")."""

    sha256: str
    phash: str  # 16 hex digits, or "" for analyses stored before hashes were kept

    def same_photo(self, other: PhotoId) -> bool:
        """Say whether both are the same photo (same bytes, or nearly the same picture)."""
        if self.sha256 and self.sha256 == other.sha256:
            return True
        if not self.phash or not other.phash:
            return False
        return hash_distance(self.phash, other.phash) <= SAME_PHOTO_BITS


def perceptual_hash(image: RGBImage) -> str:
    """Return the 64-bit DCT perceptual hash of an RGB picture as 16 hex digits."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    # The median leaves out the DC term (overall brightness) so that it cannot skew the split.
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def hash_distance(first: str, second: str) -> int:
    """Return how many of the 64 bits two perceptual hashes differ in."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


def distinct_earlier(earlier: Iterable[PhotoId], current: PhotoId) -> int:
    """Count the distinct photos among ``earlier``, leaving out copies of ``current``.

    Photos are grouped greedily in the order given: one joins the first group holding a photo
    it matches. A group that holds a copy of the current photo is the current episode.
    """
    groups: list[list[PhotoId]] = []
    for photo in earlier:
        for group in groups:
            if any(photo.same_photo(member) for member in group):
                group.append(photo)
                break
        else:
            groups.append([photo])
    return sum(1 for group in groups if not any(current.same_photo(p) for p in group))
