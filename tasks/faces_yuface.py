"""Step 6, faces: the yuface detector (libfacedetection's CNN, BSD licence, numpy only), an option beside
MTCNN (`faces.detector = "yuface"`). Same output as `tasks.faces_mtcnn.detect_in_frames`: one list of
detections per frame, each {"box": [x, y, w, h], "confidence": c, "keypoints": {...}} in pixels of the
frame it was found in, with MTCNN's five keypoint names.

libfacedetection reports confidences 0..100 and keeps candidates above its own floor; detections at or
above `THRESHOLD` (yuface's default, 0.5) are returned, and `faces.min_confidence` applies after, as
for MTCNN. `faces.min_face_size` drops boxes whose shorter side is smaller (MTCNN uses it to stop its
image pyramid, with much the same effect).

libfacedetection runs its layers on OpenMP threads (its own libgomp, in `yuface.libs`). Each calling
thread is given one (`one_openmp_thread`), as MTCNN's TensorFlow calls are: face chunks already run one
per core, and OpenMP threads that wait for a core held by another stage spin at every layer's barrier
(BENCHMARKS.md has the figures).
"""
from __future__ import annotations

import threading

import numpy as np

from modalink.config import FaceConfig
from modalink.timing import timed

THRESHOLD = 0.5
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # in the image, as MTCNN names them


_threads = threading.local()


def get_detector():
    import yuface

    return yuface


def one_openmp_thread() -> None:
    """What runs on OpenMP on this thread from now on, yuface included, runs on one OpenMP thread
    (OpenMP's thread count is a setting of the calling thread; once per thread)."""
    if not getattr(_threads, "limited", False):
        from threadpoolctl import threadpool_limits

        get_detector()  # its libgomp is limited only once it is loaded
        threadpool_limits(limits=1, user_api="openmp")
        _threads.limited = True


def detect_in_frame(rgb: np.ndarray, config: FaceConfig) -> list[dict]:
    raw = get_detector().c_detect(np.ascontiguousarray(rgb[:, :, ::-1]))  # it takes BGR
    found = []
    for row in np.asarray(raw, dtype=np.int64):
        confidence = float(row[0]) / 100.0
        x, y, w, h = (int(v) for v in row[1:5])
        if confidence < THRESHOLD or min(w, h) < config.min_face_size:
            continue
        points = row[5:15].reshape(5, 2)
        found.append({"box": [x, y, w, h], "confidence": confidence,
                      "keypoints": {name: (int(px), int(py)) for name, (px, py) in zip(KEYPOINTS, points)}})
    return found


def detect_in_frames(frames: list[np.ndarray], config: FaceConfig) -> list[list[dict]]:
    """yuface on each frame of a batch; one list of detections per frame."""
    one_openmp_thread()
    with timed("faces"):
        return [detect_in_frame(frame, config) for frame in frames]
