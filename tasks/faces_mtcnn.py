"""Step 6, faces: the detector. MTCNN (mtcnn 1.x on TensorFlow), loaded once per process and made
faster without changing what it finds: four parts of it are replaced (`area_pyramid`,
`float32_batch`, `compile_stage_networks`, `PaddedBatches`), each measured (BENCHMARKS.md), and
`tests/test_faces.py` checks that each finds the same boxes and confidences as mtcnn's own code.
"""
from __future__ import annotations

import threading

import numpy as np

from modalink.config import FaceConfig
from modalink.timing import timed

# TensorFlow threads per MTCNN call. Batches already run one per core (`tasks.faces._chunk_slots`),
# and MTCNN is many small ops: one thread each beats TensorFlow's default of one per core
# (BENCHMARKS.md).
TF_THREADS_PER_CALL = 1

_detector = None
_detector_lock = threading.Lock()


def get_detector():
    """One MTCNN per worker process, loaded on first use (its weights ship inside the mtcnn package)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            import tensorflow as tf
            from mtcnn import MTCNN

            try:
                tf.config.threading.set_intra_op_parallelism_threads(TF_THREADS_PER_CALL)
                tf.config.threading.set_inter_op_parallelism_threads(TF_THREADS_PER_CALL)
            except RuntimeError:  # TensorFlow already ran something in this process: keep its threads
                pass
            replace_in_mtcnn("mtcnn.stages.stage_pnet", "apply_scales", area_pyramid)
            replace_in_mtcnn("mtcnn.mtcnn", "standarize_batch", float32_batch)
            _detector = MTCNN(device="CPU:0")
            compile_stage_networks(_detector)
            pad_refinement_batches(_detector)
    return _detector


def compile_stage_networks(detector) -> None:
    """Run P-Net, R-Net and O-Net as TensorFlow graphs instead of eagerly, layer by Keras layer.

    The networks are small, so calling them eagerly is mostly Python and op dispatch; as graphs
    (traced once per input shape, shapes relaxed after a few) they are faster (BENCHMARKS.md), with
    identical boxes and confidences (`tests/test_faces.py` checks it)."""
    import tensorflow as tf

    for stage in getattr(detector, "stages", []):
        model = getattr(stage, "_model", None)
        if model is not None and not isinstance(model, (PaddedBatches, tf.types.experimental.PolymorphicFunction)):
            stage._model = tf.function(model, reduce_retracing=True)


class PaddedBatches:
    """An MTCNN stage network called on batches padded with zeros to a power of two (at least 16).

    R-Net and O-Net see one patch per candidate box, a different count on nearly every call, and
    TensorFlow's oneDNN kernels keep a compiled primitive per input shape, so memory grows with every
    new count. With padding only a handful of shapes exist and memory stays flat (BENCHMARKS.md), in
    the same time, with identical boxes and confidences (each patch is computed on its own;
    `tests/test_faces.py` checks it)."""

    def __init__(self, model, least: int = 16):
        self.model, self.least = model, least

    def __call__(self, patches):
        import tensorflow as tf

        count = int(patches.shape[0])
        size = max(self.least, 1 << max(0, count - 1).bit_length())
        if size != count:
            patches = tf.concat([patches, tf.zeros((size - count, *patches.shape[1:]), patches.dtype)], 0)
        return [output[:count] for output in self.model(patches)]


def pad_refinement_batches(detector) -> None:
    """Wrap every stage after P-Net (whose input shapes are fixed by the frame size) in `PaddedBatches`."""
    for stage in list(getattr(detector, "stages", []))[1:]:
        if hasattr(stage, "_model") and not isinstance(stage._model, PaddedBatches):
            stage._model = PaddedBatches(stage._model)


def area_pyramid(images_normalized, scales_groups):
    """mtcnn's `apply_scales` with OpenCV's area resampling instead of TensorFlow's: the same pyramid
    (same sizes, values within 1e-4) in a third of the time; the profile showed it was half of MTCNN."""
    import cv2

    largest = scales_groups[int(np.argmax([group.shape[0] for group in scales_groups]))]
    images = np.asarray(images_normalized, dtype=np.float32)
    height, width = images.shape[1:3]
    levels = []
    for scale in largest:
        size = (int(width * scale), int(height * scale))
        levels.append(np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images]))
    return levels, largest


def float32_batch(images_raw, normalize=True, justification="center"):
    """mtcnn's `standarize_batch` in float32 instead of float64: (x - 127.5) / 128 is exact in float32
    for 8-bit pixels, and R-Net and O-Net crop in float32 anyway, so the boxes are identical; the
    float64 batch cost a third of MTCNN's time in conversions to tensors."""
    from mtcnn.utils.images import pad_stack_np

    images, shapes, padding = pad_stack_np(images_raw, justification=justification)
    if normalize:
        images = (np.asarray(images, dtype=np.float32) - np.float32(127.5)) / np.float32(128)
    return images, shapes, padding


def replace_in_mtcnn(module: str, name: str, replacement) -> bool:
    """Set `name` in mtcnn 1.x's `module` to `replacement`; another mtcnn version is left untouched."""
    import importlib

    try:
        target = importlib.import_module(module)
    except ImportError:
        return False
    if not hasattr(target, name):
        return False
    setattr(target, name, replacement)
    return True


def detect_in_frames(frames: list[np.ndarray], config: FaceConfig) -> list[list[dict]]:
    """MTCNN on a batch of equally sized frames; one list of detections per frame."""
    detector = get_detector()
    with timed("faces"):  # safe from several threads at once, and two batches keep two cores busier than one
        found = detector.detect_faces(frames if len(frames) > 1 else frames[0], min_face_size=config.min_face_size)
    return found if len(frames) > 1 else [found]
