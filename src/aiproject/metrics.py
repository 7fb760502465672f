"""Text-comparison metrics used by the benchmarks, the tests and `doctor`."""

from __future__ import annotations

import unicodedata


def edit_distance(a: str, b: str) -> int:
    """Return the Levenshtein distance between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalise_for_cer(text: str) -> str:
    """Lower-case and drop punctuation and spaces, as usual before a character error rate."""
    return "".join(
        ch
        for ch in unicodedata.normalize("NFKC", text).lower()
        if not unicodedata.category(ch).startswith(("P", "Z", "S")) and not ch.isspace()
    )


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Return edits per reference character after normalisation (1.0 for empty references)."""
    ref = normalise_for_cer(reference)
    hyp = normalise_for_cer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
