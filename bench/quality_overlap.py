"""Quality of the overlapped-speech detection (issue 16, item 2): found / missed / false seconds.

Inputs: bench/make_av_inputs.py's overlap.wav (GRID talkers D, B, C, A; B starts 1.0 s before D ends,
A 0.8 s before C ends, B -> C a plain turn change; reference overlap spans in overlap.json), and the
single-speaker clips (the four GRID clips and en_jfk.flac), where every overlap second found is false.
Each soundtrack is extracted and its speech found by the VAD step (default options); then
tasks.speakers.span_overlaps (segmentation-3.0 on onnxruntime) runs on each VAD segment, at the given
thresholds (speakers.overlap_threshold), other options at their defaults. Time is the overlap search
alone, per minute of soundtrack, after one warm-up run (model loaded).

usage: python bench/quality_overlap.py [--thresholds 0.3,0.4,0.5] [--av DIR] [--json]
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

SINGLE = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg", "en_jfk.flac"]
TOLERANCE_S = 0.3


def total(spans) -> float:
    return sum(b - a for a, b in spans)


def intersection(xs, ys) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in xs for c, d in ys)


def scores(found: list[tuple[float, float]], reference: list[tuple[float, float]],
           tolerance: float = TOLERANCE_S) -> dict:
    """Seconds found (in both), missed (reference only), false (found only); per reference span, the found
    span that overlaps it most and its start / end errors; a reference span counts as hit when both
    edges are within `tolerance`."""
    hit = intersection(found, reference)
    per_span = []
    for a, b in reference:
        best = max(found, key=lambda s: intersection([s], [(a, b)]), default=None)
        if best is None or intersection([best], [(a, b)]) == 0:
            per_span.append({"reference": [a, b], "found": None, "hit": False})
            continue
        err = (round(best[0] - a, 3), round(best[1] - b, 3))
        per_span.append({"reference": [a, b], "found": list(best), "start_error_s": err[0], "end_error_s": err[1],
                         "hit": abs(err[0]) <= tolerance and abs(err[1]) <= tolerance})
    return {"found_s": round(hit, 3), "missed_s": round(total(reference) - hit, 3),
            "false_s": round(total(found) - hit, 3), "spans": per_span}


def prepare(path: Path, work: Path):
    """(soundtrack path, its duration in s, the VAD spans) of one input."""
    from tasks.audio import extract_audio
    from tasks.vad import detect_speech

    audio = extract_audio(str(path), str(work / f"{path.name}.wav"), AudioConfig())
    return audio.path, audio.duration, detect_speech(audio.path, VadConfig()).spans


def overlaps_of(prepared, config: SpeakerConfig) -> list[tuple[float, float]]:
    from tasks.speakers import span_overlaps

    wav, _, spans = prepared
    return [o for span in spans for o in span_overlaps(wav, span, config)]


def run(thresholds: list[float], av: Path, media: Path) -> dict:
    from tasks.overlap import overlap_model

    reference = [(o["start"], o["end"]) for o in json.loads((av / "overlap.json").read_text())["overlaps"]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = {"overlap.wav": prepare(av / "overlap.wav", work),
                  **{name: prepare(media / name, work) for name in SINGLE}}
        overlap_model(1)
        for th in thresholds:
            config = dataclasses.replace(SpeakerConfig(), overlap_threshold=th)
            overlaps_of(inputs["overlap.wav"], config)  # warm
            t0 = time.perf_counter()
            found = {name: overlaps_of(p, config) for name, p in inputs.items()}
            elapsed = time.perf_counter() - t0
            minutes = sum(p[1] for p in inputs.values()) / 60
            single_false = sum(total(found[n]) for n in SINGLE)
            results[str(th)] = {
                "overlap_input": scores(found["overlap.wav"], reference),
                "overlap_input_found_spans": found["overlap.wav"],
                "single_speaker_false_s": round(single_false, 3),
                "single_speaker_false_s_by_clip": {n: round(total(found[n]), 3) for n in SINGLE},
                "single_speaker_speech_min": round(sum(s.duration for n in SINGLE for s in inputs[n][2]) / 60, 3),
                "audio_min": round(minutes, 3),
                "seconds_per_audio_minute": round(elapsed / minutes, 3),
            }
    return {"reference": reference, "thresholds": results}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import make_av_inputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--thresholds", default="0.3,0.4,0.5")
    ap.add_argument("--av", type=Path, default=None, help="make_av_inputs output (default: its cache, built if needed)")
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    av = args.av or make_av_inputs.default_out()
    if args.av is None:
        make_av_inputs.main(["--media", str(args.media), "--out", str(av)])
    results = run([float(t) for t in args.thresholds.split(",")], av, args.media)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"reference overlap spans: {results['reference']}")
    print(f"{'threshold':>9} {'found s':>8} {'missed s':>9} {'false s':>8} {'edge errors (start/end)':>40} "
          f"{'1-spk false s':>14} {'s per audio min':>16}")
    for th, r in results["thresholds"].items():
        o = r["overlap_input"]
        edges = " ".join("miss" if s["found"] is None else f"{s['start_error_s']:+.2f}/{s['end_error_s']:+.2f}"
                         for s in o["spans"])
        print(f"{th:>9} {o['found_s']:>8.2f} {o['missed_s']:>9.2f} {o['false_s']:>8.2f} {edges:>40} "
              f"{r['single_speaker_false_s']:>14.2f} {r['seconds_per_audio_minute']:>16.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
