"""Word error rate after normalizing case, punctuation and digits ("F2" -> "f two")."""
from __future__ import annotations

import re

DIGITS = "zero one two three four five six seven eight nine".split()


def normalize(text: str) -> list[str]:
    text = re.sub(r"(\d)", lambda m: f" {DIGITS[int(m.group(1))]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[len(hyp)] / max(1, len(ref))
