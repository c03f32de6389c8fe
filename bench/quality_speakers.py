"""Speaker-change quality of each `speakers.method` on real inputs (issue 16); results in QUALITY.md.

Inputs: conversation.mp4 from bench/make_av_inputs.py (four GRID talkers, 15 s, six turn changes and one
talker with two sentences in a row, pauses of 0.06-0.28 s, reference turns in conversation.turns.json), the
four single-speaker GRID clips and en_jfk.flac from media/. Each input's soundtrack is extracted and its
speech found by the VAD step (default options), then the speakers step function (`split_speakers`) runs on
it: the flow itself is not run.

Figures, per method:
  recall       reference turn changes (the middle of the pause between two turns of different speakers)
               with a segment boundary within 0.5 s, one boundary per change
  false cuts   boundaries on conversation.mp4 matched to no reference change
  purity       per segment, the share of its reference speech that belongs to its main speaker (min, mean)
  single-speaker false cuts per minute of speech: speaker cuts on the GRID clips and en_jfk
  boundary error on av_grid_id2_swwp2s: segment start and end minus the .align speech span
  time per minute of audio: the speakers step (model already loaded), over all six inputs

usage: python bench/quality_speakers.py [--methods embedding,mfcc] [--av DIR] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modalink.config import AudioConfig, SpeakerConfig, VadConfig  # noqa: E402
from modalink.records import Segment  # noqa: E402

SINGLE = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg", "en_jfk.flac"]
TOLERANCE_S = 0.5


def reference_changes(turns: list[dict]) -> list[float]:
    return [(a["end"] + b["start"]) / 2 for a, b in zip(turns, turns[1:]) if a["speaker"] != b["speaker"]]


def boundaries(segments: list[Segment]) -> list[float]:
    return [(a.end + b.start) / 2 for a, b in zip(segments, segments[1:])]


def change_scores(segments: list[Segment], turns: list[dict], tolerance: float = TOLERANCE_S) -> dict:
    """Recall of the reference changes within `tolerance` (each boundary used once) and the unmatched boundaries."""
    free = boundaries(segments)
    found = 0
    for change in reference_changes(turns):
        near = [b for b in free if abs(b - change) <= tolerance]
        if near:
            free.remove(min(near, key=lambda b: abs(b - change)))
            found += 1
    return {"changes": len(reference_changes(turns)), "found": found,
            "recall": found / max(1, len(reference_changes(turns))), "false_cuts": len(free)}


def purities(segments: list[Segment], turns: list[dict]) -> list[float]:
    """Per segment with reference speech in it: the main speaker's share of that speech."""
    out = []
    for s in segments:
        by_speaker: dict[str, float] = {}
        for t in turns:
            overlap = min(s.end, t["end"]) - max(s.start, t["start"])
            if overlap > 0:
                by_speaker[t["speaker"]] = by_speaker.get(t["speaker"], 0.0) + overlap
        if by_speaker:
            out.append(max(by_speaker.values()) / sum(by_speaker.values()))
    return out


def prepare(path: Path, work: Path, vad: VadConfig):
    """(soundtrack path, its duration in s, the VAD spans) of one input."""
    from tasks.audio import extract_audio
    from tasks.vad import detect_speech

    audio = extract_audio(str(path), str(work / f"{path.name}.wav"), AudioConfig())
    return audio.path, audio.duration, detect_speech(audio.path, vad).spans


def run(methods: list[str], av: Path, media: Path) -> dict:
    from tasks.speakers import load_speaker_model, split_speakers

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import grid_speech_span

    vad = VadConfig()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = {"conversation.mp4": prepare(av / "conversation.mp4", work, vad),
                  **{name: prepare(media / name, work, vad) for name in SINGLE}}
        turns = json.loads((av / "conversation.turns.json").read_text())
        truth = grid_speech_span(media)
        for method in methods:
            config = dataclasses.replace(SPEAKERS, method=method)
            load_speaker_model(config)
            split = {}
            seconds = 0.0
            for name, (wav, _, spans) in inputs.items():
                split_speakers(name, wav, spans, config)  # warm
                t0 = time.perf_counter()
                split[name] = split_speakers(name, wav, spans, config)
                seconds += time.perf_counter() - t0
            audio_min = sum(d for _, d, _ in inputs.values()) / 60
            conv = split["conversation.mp4"]
            pure = purities(conv, turns)
            single_cuts = sum(len(split[n]) - len(inputs[n][2]) for n in SINGLE)
            single_min = sum(s.duration for n in SINGLE for s in inputs[n][2]) / 60
            grid, = split["av_grid_id2_swwp2s.mpg"] if len(split["av_grid_id2_swwp2s.mpg"]) == 1 else [None]
            results[method] = {
                **change_scores(conv, turns),
                "segments": [(s.start, s.end) for s in conv],
                "purity_min": min(pure), "purity_mean": sum(pure) / len(pure),
                "single_speaker_cuts": single_cuts, "single_speaker_minutes": single_min,
                "single_speaker_false_cuts_per_min": single_cuts / single_min,
                "grid_start_error_s": None if grid is None else round(grid.start - truth[0], 3),
                "grid_end_error_s": None if grid is None else round(grid.end - truth[1], 3),
                "seconds_per_audio_minute": seconds / audio_min,
            }
    return results


SPEAKERS = SpeakerConfig()  # the defaults, or what --set gives


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import make_av_inputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="embedding,mfcc")
    ap.add_argument("--av", type=Path, default=None, help="make_av_inputs output (default: its cache, built if needed)")
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="speakers.OPTION=VALUE",
                    help="another value of a speakers option, e.g. speakers.embedding_hop_s=0.5")
    args = ap.parse_args(argv)
    global SPEAKERS
    from modalink.config import Config, deep_update, parse_override

    overrides: dict = {}
    for item in args.set:
        deep_update(overrides, parse_override(item))
    SPEAKERS = Config.load(overrides=overrides).speakers
    av = args.av or make_av_inputs.default_out()
    if args.av is None:
        make_av_inputs.main(["--media", str(args.media), "--out", str(av)])
    results = run(args.methods.split(","), av, args.media)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'method':10} {'recall':>8} {'false':>6} {'purity min/mean':>16} {'1-spk cuts/min':>15} "
          f"{'GRID start/end err':>19} {'s per audio min':>16}")
    for method, r in results.items():
        err = "n/a" if r["grid_start_error_s"] is None else f"{r['grid_start_error_s']:+.2f}/{r['grid_end_error_s']:+.2f} s"
        print(f"{method:10} {r['found']}/{r['changes']:<6} {r['false_cuts']:>6} "
              f"{r['purity_min']:>7.3f}/{r['purity_mean']:.3f} {r['single_speaker_false_cuts_per_min']:>15.2f} "
              f"{err:>19} {r['seconds_per_audio_minute']:>16.2f}")
        print(f"           conversation segments: {' '.join(f'{a:.2f}-{b:.2f}' for a, b in r['segments'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
