"""What every step's Prefect task shares: the cache policy, the retry rule, and the error of a bad source."""
from __future__ import annotations

import threading
from typing import Callable

from prefect.cache_policies import INPUTS, TASK_SOURCE

# Cached across runs: the same inputs (which carry each file's fingerprint and the step's own config
# section) and the same task code give the stored result back instead of doing the work again.
CACHE_POLICY = INPUTS + TASK_SOURCE
# For steps that write files: where the local staging folder is does not change the result, so a
# result cached by another machine (S3 result storage) is found again.
STAGED_CACHE_POLICY = (INPUTS - "dataset_dir" - "wav_path") + TASK_SOURCE


class MediaError(Exception):
    """A source that cannot be used (no audio stream, does not decode, ...). Permanent: never retried."""


def retry_unless_permanent(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Prefect retry condition: transient failures are retried, a bad source or bad config is not."""
    from modalink.config import ConfigError

    try:
        state.result()
    except (MediaError, ConfigError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


def one_blas_thread() -> None:
    """numpy's BLAS on one thread in this process, as in Dask's workers (which run with OMP_NUM_THREADS=1).

    A BLAS splits a product differently for different thread counts, and the last bits of the result
    with it. Whisper's mel features are such a product: on an AMD EPYC one GRID clip was transcribed
    "Bimbleu F2 now." with numpy's two BLAS threads and "Bimbloo F2 now." with one. With one thread
    everywhere a clip gets the same transcript (and the same MFCCs for the speaker split) with either
    runner and on any number of cores. The products are small; TensorFlow and CTranslate2 keep their
    own threads."""
    import numpy  # noqa: F401 - its BLAS is limited only once it is loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def load_in_background(*loaders: Callable[[], object]) -> threading.Thread:
    """Call `loaders` one after the other on a thread of its own: libraries and models that the first
    segments would otherwise wait for load while the soundtrack is extracted. A loader that fails is
    left alone; the step that needs it raises the error again where it is used."""
    def load() -> None:
        for loader in loaders:
            try:
                loader()
            except Exception:  # noqa: BLE001 - raised again by the step that needs it
                pass

    thread = threading.Thread(target=load, name="modalink-preload", daemon=True)
    thread.start()
    return thread
