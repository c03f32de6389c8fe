"""Issue 16 measurements: the speaking face (speaker_face stage) against the largest-face rule, the
voice-over outcome, MTCNN against yuface, and the speaker_face stage's time per segment.

Inputs: bench/make_av_inputs.py's side_by_side.mp4 and voice_over.mp4 (built or reused from its cache),
the GRID and LivePortrait clips and the three no-face clips in media/. Segments are cut two ways: at the
reference turns, and as the pipeline cuts them (VAD + speaker split with the default config).

usage: nice -n 10 python bench/quality_faces.py [--json OUT]   (prints Markdown tables)
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from modalink.config import AudioConfig, FaceConfig, SpeakerConfig, VadConfig  # noqa: E402
from modalink.records import Segment  # noqa: E402
from modalink.stages import SegmentInput  # noqa: E402
from tasks.acquire import local_video  # noqa: E402
from tasks.audio import extract_audio  # noqa: E402
from tasks.faces import detect_faces_in_segments, frame_times  # noqa: E402
from tasks.faces_decoding import decode_frames_at, scaled_size  # noqa: E402
from tasks.probe import probe  # noqa: E402
from tasks.speaker_face import SpeakerFace, SpeakerFaceConfig, speakers_in_chunk  # noqa: E402
from tasks.speakers import split_speakers  # noqa: E402
from tasks.vad import detect_speech  # noqa: E402

MEDIA = ROOT / "media"
GRID = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg"]
LIVEPORTRAIT = ["face_nospeech_liveportrait_d18.mp4", "face_nospeech_liveportrait_d19.mp4",
                "face_noaudiostream_liveportrait_d0.mp4"]
NO_FACE = ["noface_music_bigbuckbunny_0_30.webm", "noface_nospeech_autoeditor_silhouette.mp4",
           "noface_speech_autoeditor_example.mp4"]
WORK = Path(tempfile.mkdtemp(prefix="quality-faces-"))


def av_inputs() -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "make_av_inputs.py")], capture_output=True, text=True,
                         check=True).stdout
    return Path(json.loads(out.strip().splitlines()[-1])["side_by_side.mp4"]).parent


def soundtrack(video) -> str:
    path = WORK / f"{video.video_id}.wav"
    if not path.exists():
        extract_audio(video.path, str(path), AudioConfig())
    return str(path)


def pipeline_segments(video) -> list[Segment]:
    wav = soundtrack(video)
    return split_speakers(video.video_id, wav, detect_speech(wav, VadConfig()).spans, SpeakerConfig())


def run_stage(path: Path, spans, detector: str, options=SpeakerFaceConfig()):
    video = local_video(path)
    info = probe(video.path)
    segments = [s if isinstance(s, Segment) else Segment(video.video_id, k, 0, *s) for k, s in enumerate(spans)]
    faces = detect_faces_in_segments(video, info, segments, FaceConfig(detector=detector))
    items = [SegmentInput(video, s, info, soundtrack(video), str(WORK), {"faces": f})
             for s, f in zip(segments, faces) if f.active is not None]
    started = time.perf_counter()
    results = speakers_in_chunk(items, options) if items else []
    seconds = time.perf_counter() - started
    return segments, [f for f in faces if f.active is not None], results, seconds / max(1, len(items))


def side_of(box, width: int) -> str:
    return "left" if box.x + box.w / 2 < width / 2 else "right"


def speaking_face(folder: Path, detector: str) -> dict:
    doc = json.loads((folder / "side_by_side.turns.json").read_text())
    width, turns = doc["frame_size"][0], doc["turns"]
    out = {}
    video = local_video(folder / "side_by_side.mp4")
    for cut, spans in [("reference turns", [(t["start"], t["end"]) for t in turns]),
                       ("pipeline segments (VAD + speaker split)", pipeline_segments(video))]:
        segments, faces, results, per_segment = run_stage(folder / "side_by_side.mp4", spans, detector)
        rows = []
        for segment, face, result in zip(segments, faces, results):
            overlap = {t["speaker_side"]: 0.0 for t in turns}
            for t in turns:
                overlap[t["speaker_side"]] += max(0.0, min(segment.end, t["end"]) - max(segment.start, t["start"]))
            truth = max(overlap, key=overlap.get)
            cue = side_of(result.active, width) if isinstance(result, SpeakerFace) else "dropped"
            rows.append({"start": segment.start, "end": segment.end, "truth": truth,
                         "turns_inside": sum(v > 0.2 for v in overlap.values()), "cue": cue,
                         "largest": side_of(face.active, width),
                         "decision": getattr(result, "decision", "dropped"),
                         "score": getattr(result, "score", None), "margin": getattr(result, "margin", None)})
        out[cut] = {"rows": rows, "cue_right": sum(r["cue"] == r["truth"] for r in rows),
                    "largest_right": sum(r["largest"] == r["truth"] for r in rows), "segments": len(rows),
                    "stage_s_per_segment": round(per_segment, 4)}
    return out


def voice_over(folder: Path, detector: str) -> dict:
    speech = json.loads((folder / "voice_over.json").read_text())["speech"]
    video = local_video(folder / "voice_over.mp4")
    out = {}
    for cut, spans in [("whole speech", [(speech["start"], speech["end"])]),
                       ("two halves", [(speech["start"], 5.0), (5.0, speech["end"])]),
                       ("pipeline segments", pipeline_segments(video))]:
        _, _, dropped, per_segment = run_stage(folder / "voice_over.mp4", spans, detector)
        _, _, kept, _ = run_stage(folder / "voice_over.mp4", spans, detector, SpeakerFaceConfig(off_screen="keep"))
        out[cut] = {"segments": len(dropped), "dropped": sum(not isinstance(r, SpeakerFace) for r in dropped),
                    "best_scores": [max(s.score for s in r.scores) for r in kept],
                    "stage_s_per_segment": round(per_segment, 4)}
    return out


def grid_kept(detector: str) -> dict:
    out = {}
    for name in GRID:
        video = local_video(MEDIA / name)
        segments, faces, results, _ = run_stage(MEDIA / name, pipeline_segments(video), detector)
        out[name] = {"segments": len(segments), "with_face": len(faces),
                     "kept": sum(isinstance(r, SpeakerFace) for r in results),
                     "scores": [getattr(r, "score", None) for r in results]}
    return out


def detectors(folder: Path) -> dict:
    """Both detectors on the same frames: 1 fps over each file (at most 30), x0.5, as the faces stage sees them."""
    from tasks import faces_mtcnn, faces_yuface

    expected = {**{n: 1 for n in GRID + LIVEPORTRAIT}, **{n: 0 for n in NO_FACE}, "side_by_side.mp4": 2}
    paths = {n: MEDIA / n for n in GRID + LIVEPORTRAIT + NO_FACE}
    paths["side_by_side.mp4"] = folder / "side_by_side.mp4"
    config = FaceConfig()
    faces_mtcnn.get_detector()
    faces_mtcnn.detect_in_frames([np.zeros((144, 180, 3), np.uint8)], config)  # warm-up outside the timing
    out = {}
    for name, path in paths.items():
        width, height, seconds = picture(path)
        size = scaled_size(width, height, config.scale)
        times = frame_times(0.0, seconds, 1.0, 30)
        frames = [rgb for _, rgb in decode_frames_at(str(path), times, size)]
        row = {"frames": len(frames), "size": list(size), "faces_expected_per_frame": expected[name]}
        for label, module in [("mtcnn", faces_mtcnn), ("yuface", faces_yuface)]:
            module.detect_in_frames(frames[:1], config)  # warm-up of this frame size
            started = time.perf_counter()
            found = [f for k in range(0, len(frames), config.batch_size)
                     for f in module.detect_in_frames(frames[k:k + config.batch_size], config)]
            ms = (time.perf_counter() - started) * 1000 / max(1, len(frames))
            counts = [len(f) for f in found]
            row[label] = {"faces": sum(counts), "missed_frames": sum(max(0, expected[name] - c) for c in counts),
                          "extra": sum(max(0, c - expected[name]) for c in counts), "ms_per_frame": round(ms, 1)}
        out[name] = row
    return out


def picture(path: Path) -> tuple[int, int, float]:
    """Width, height and duration of the video stream (probe refuses a file without audio)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        return stream.codec_context.width, stream.codec_context.height, seconds


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    from modalink.timing import usable_cores

    return f"{cpu}, {usable_cores()} usable cores, Python {platform.python_version()}"


def fps_sweep(folder: Path, rates: list[float]) -> list[str]:
    """The chosen track and its score on every pipeline segment of the voice-over, side-by-side and GRID
    inputs, for each `speaker_face.fps` (MTCNN, other options at their defaults, nothing dropped)."""
    inputs = [folder / "voice_over.mp4", folder / "side_by_side.mp4", *(MEDIA / name for name in GRID)]
    lines = ["| fps | input | segment | decision | track | score |", "|---|---|---|---|---|---|"]
    for fps in rates:
        options = SpeakerFaceConfig(fps=fps, max_frames=int(15 * fps), off_screen="keep")
        for path in inputs:
            segments = pipeline_segments(local_video(path))
            _, _, results, _ = run_stage(path, [(s.start, s.end) for s in segments], "mtcnn", options)
            for segment, result in zip(segments, results):
                if isinstance(result, SpeakerFace):
                    lines.append(f"| {fps:g} | {path.name} | {segment.start:.2f}-{segment.end:.2f} | {result.decision} | "
                                 f"{result.track} | {result.score} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fps", type=float, nargs="+", help="only the sweep of speaker_face.fps (a Markdown table)")
    args = ap.parse_args(argv)
    folder = av_inputs()
    if args.fps:
        print("\n".join(fps_sweep(folder, args.fps)))
        return 0
    results = {"machine": machine(), "detectors": detectors(folder)}
    for detector in ("mtcnn", "yuface"):
        results[f"speaking_face[{detector}]"] = speaking_face(folder, detector)
        results[f"voice_over[{detector}]"] = voice_over(folder, detector)
        results[f"grid[{detector}]"] = grid_kept(detector)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
