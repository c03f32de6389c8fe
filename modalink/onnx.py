"""ONNX models on onnxruntime's CPU provider, each loaded once per process and thread count.

The sessions run without onnxruntime's memory arena: with it, each session keeps the largest working
memory it ever needed for the rest of the process, beside the models that run after it."""
from __future__ import annotations

import threading
from pathlib import Path

from modalink.config import ConfigError

_sessions: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


def onnx_session(path: Path, threads: int = 1, what: str = "model"):
    """The session of the ONNX file at `path` (thread-safe; `run` may be called from several threads).
    A missing or damaged file is a ConfigError naming `what`."""
    key = (str(path), threads)
    with _lock:
        if key not in _sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.enable_cpu_mem_arena = False
            try:
                _sessions[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - a missing or damaged model file
                raise ConfigError(f"cannot load the {what} {path}: {exc}") from None
        return _sessions[key]
