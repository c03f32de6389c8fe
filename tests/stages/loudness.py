"""An added stage in one file: the loudness of each kept segment's WAV clip.

Registered from outside the package with MODALINK_STAGES=tests/stages/loudness.py (README,
"Adding a stage"); its options are the config section [loudness]; its result lands in the manifest
under custom.loudness, checked against `schema`.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalink.config import Section, register_section
from modalink.stages import SegmentStage, register
from modalink.wav import read_span


@dataclass(frozen=True)
class LoudnessConfig(Section):
    floor_db: float = -90.0  # quieter than this reads as the floor (a silent clip is not -inf)

    def problems(self) -> list[str]:
        return [] if self.floor_db < 0 else ["loudness.floor_db must be below 0"]


@dataclass(frozen=True)
class Loudness:
    rms_db: float
    peak_db: float


register_section("loudness", LoudnessConfig)


@register
class LoudnessStage(SegmentStage):
    name = "loudness"
    section = "loudness"
    needs = ("media",)
    schema = {"type": "object", "required": ["rms_db", "peak_db"], "additionalProperties": False,
              "properties": {"rms_db": {"type": "number", "maximum": 0}, "peak_db": {"type": "number", "maximum": 0}}}

    def run(self, item, options: LoudnessConfig) -> Loudness:
        samples = read_span(str(Path(item.staging_dir) / item.results["media"].audio_clip)).samples()
        floor = 10 ** (options.floor_db / 20)
        rms = max(float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0, floor)
        peak = max(float(np.abs(samples).max()) if len(samples) else 0.0, floor)
        return Loudness(rms_db=round(20 * np.log10(rms), 2), peak_db=round(20 * np.log10(peak), 2))
