"""A run's videos as flow runs of a deployment of `process_video` (`run.fan_out`), taken by whichever
workers of its pool are free; the run waits for them and publishes.

Each video's source is put in the dataset's storage first (`modalink.shared_media`); its flow run
writes its media and its outcome there (under a key the run chose), and renews a lease
(`modalink.lease`). A flow run that fails, crashes, or whose lease stops moving (its worker was
lost) is marked crashed and submitted again, up to `run.retries` times; the steps it had finished
come from the cache in the dataset's storage.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from modalink.config import Config
from modalink.lease import LeaseWatch
from modalink.records import Video
from modalink.shared_media import SharedMedia, share_source
from modalink.storage import DatasetStorage

POLL_S = 1.0


class VideoRunFailed(RuntimeError):
    """A fanned-out video's flow runs all ended without an outcome."""


@dataclass
class Submitted:
    video: Video
    inputs: SharedMedia
    key: str
    flow_run_id: Any
    attempt: int


def submit(video: Video, inputs: SharedMedia, out: str, cfg: Config, attempt: int) -> Submitted:
    from prefect.deployments import run_deployment

    key = f"{video.video_id}-{uuid.uuid4().hex[:12]}"
    parameters = {"video": video, "out": out, "config": cfg.to_dict(), "inputs": inputs, "outcome_key": key}
    flow_run = run_deployment(cfg.run.fan_out, parameters=parameters, timeout=0, as_subflow=True,
                              flow_run_name=f"video {video.video_id}")
    return Submitted(video, inputs, key, flow_run.id, attempt)


def fan_out(videos: list[Video], out: str, storage: DatasetStorage, cfg: Config, read_outcome,
            logger) -> Iterator[tuple[Video, Any, BaseException | None]]:
    """(video, outcome, None) or (video, None, error) for each video, as its flow runs end."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    watch = LeaseWatch(storage, cfg.run.lease_timeout_s)
    pending = []
    for video in videos:
        inputs = share_source(storage, out, video.path, video.fingerprint)
        pending.append(submit(video, inputs, out, cfg, attempt=1))
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(POLL_S)
            for run in list(pending):
                state = client.read_flow_run(run.flow_run_id).state
                if state is not None and state.is_completed():
                    pending.remove(run)
                    watch.forget(run.key)
                    try:
                        yield run.video, read_outcome(run.key), None
                    except Exception as exc:  # noqa: BLE001 - said once, per video
                        yield run.video, None, VideoRunFailed(f"its flow run left no outcome ({exc})")
                    continue
                lost = False
                if state is not None and state.is_running():
                    watch.start(run.key)
                    lost = watch.lost(run.key)
                    if lost:
                        client.set_flow_run_state(run.flow_run_id, Crashed(
                            message=f"no sign of life from its worker for {cfg.run.lease_timeout_s:g} s"), force=True)
                if not (lost or (state is not None and state.is_final())):
                    continue
                pending.remove(run)
                watch.forget(run.key)
                why = "its worker was lost" if lost else f"its flow run ended {state.name}"
                if run.attempt <= cfg.run.retries:
                    logger.warning("%s: %s; submitted again (attempt %d)", run.video.video_id, why, run.attempt + 1)
                    pending.append(submit(run.video, run.inputs, out, cfg, run.attempt + 1))
                else:
                    yield run.video, None, VideoRunFailed(f"{why}, after {run.attempt} attempts")
