"""Transcripts to distrust: a pure check of a transcript against its clip, for the transcription stage.

A transcript is suspect when it repeats itself (a run of the same word n-gram, or text that
compresses as well as Whisper's own hallucination check says it should not), when it holds far more
characters than its speech allows, or when Whisper itself scores it as unlikely (average
log-probability, no-speech probability). The text is kept; the reasons are recorded.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from modalink.config import SuspectRules


@dataclass(frozen=True)
class Heard:
    """What a backend heard: the text, and the decoder's own scores where it has them."""

    text: str
    avg_logprob: float | None = None  # the worst over the decoded segments
    compression_ratio: float | None = None  # the worst over the decoded segments
    no_speech_prob: float | None = None  # of the first segment


def longest_repeat(words: list[str], longest_ngram: int = 4) -> int:
    """The most times one word n-gram (n <= `longest_ngram`) occurs back to back."""
    best = 1 if words else 0
    for n in range(1, longest_ngram + 1):
        for start in range(len(words) - n + 1):
            count, at = 1, start + n
            while words[at:at + n] == words[start:start + n] and len(words[at:at + n]) == n:
                count, at = count + 1, at + n
            best = max(best, count)
    return best


def text_compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes, as Whisper computes it for its hallucination check."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def suspect_reasons(heard: Heard, speech_s: float, rules: SuspectRules) -> tuple[str, ...]:
    """Why the transcript of `speech_s` seconds of speech is suspect (empty: nothing found)."""
    words = re.findall(r"\w+", heard.text.lower())
    if not words:
        return ()
    reasons = []
    compression = max(text_compression_ratio(heard.text), heard.compression_ratio or 0.0)
    if longest_repeat(words) >= rules.max_repeats or compression > rules.max_compression_ratio:
        reasons.append("repeats")
    characters = len(re.sub(r"\s", "", heard.text))
    if speech_s > 0 and characters / speech_s > rules.max_chars_per_s:
        reasons.append("too_long")
    if heard.avg_logprob is not None and heard.avg_logprob < rules.min_avg_logprob:
        reasons.append("unlikely")
    if heard.no_speech_prob is not None and heard.no_speech_prob > rules.max_no_speech_prob:
        reasons.append("no_speech")
    return tuple(reasons)
