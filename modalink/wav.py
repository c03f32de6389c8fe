"""Reading spans of 16-bit PCM WAV files by seeking, never loading the whole file."""
from __future__ import annotations

import wave
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WavSpan:
    frames: bytes  # little-endian 16-bit PCM, interleaved
    params: wave._wave_params  # the file's rate, channels and sample width (nframes is the file's)

    @property
    def rate(self) -> int:
        return self.params.framerate

    def samples(self) -> np.ndarray:
        """The samples as float32 in [-1, 1)."""
        return np.frombuffer(self.frames, dtype="<i2").astype(np.float32) / 32768.0


def read_span(wav_path: str, start: float | None = None, end: float | None = None) -> WavSpan:
    """The frames from `start` to `end` seconds (the whole file when both are None)."""
    with wave.open(wav_path) as wav:
        rate, total = wav.getframerate(), wav.getnframes()
        first = 0 if start is None else int(round(start * rate))
        last = total if end is None else int(round(end * rate))
        wav.setpos(min(first, total))
        return WavSpan(wav.readframes(max(0, last - first)), wav.getparams())


def write_wav(span: WavSpan, path: str) -> None:
    with wave.open(path, "wb") as out:
        out.setparams(span.params)
        out.writeframes(span.frames)
