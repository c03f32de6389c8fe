"""The speaker split's screen (`speakers.screen_similarity`) against checking every boundary; results in QUALITY.md.

With the screen, one CAM++ pass over each speech segment gives pooled window embeddings, and only the
boundaries whose pooled similarity is at most `screen_similarity` get their two windows embedded on their
own. The cuts are the same as checking every boundary as long as no boundary screened out has a windowed
similarity below `change_threshold`. This script measures that on real inputs: per input, the boundaries,
the share checked, the misses (boundaries screened out whose windowed similarity is below
`change_threshold`), the highest pooled similarity among the boundaries below `change_threshold` (the
margin to `screen_similarity`), whether the segments are identical, and the step's seconds each way.

Inputs: the benchmark's 10-minute talk show (bench/make_inputs.py), conversation.mp4 and side_by_side.mp4
(bench/make_av_inputs.py), the GRID clips and en_jfk.flac from media/. Each input's speech is found by the
VAD step with default options, then `tasks.speakers.split_speakers` runs on it (model already loaded).

usage: python bench/speaker_screen.py [--set speakers.screen_similarity=0.45] [--minutes 10] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SINGLE = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg", "en_jfk.flac"]


def boundary_pairs(wav: str, spans, config) -> np.ndarray:
    """(pooled similarity, windowed similarity) at every boundary of every span long enough to be split."""
    from modalink.fbank import fbank
    from tasks import speakers

    rows = []
    for span in spans:
        samples, rate = speakers.read_samples(wav, span)
        samples = speakers.to_model_rate(samples, rate)
        if len(samples) / speakers.EMBEDDING_RATE < 2 * config.embedding_window_s:
            continue
        feats = fbank(samples, mean_normalise=False)
        first, width = speakers.window_starts(len(feats), config)
        k = max(1, int(round(config.embedding_window_s / config.embedding_hop_s)))
        if len(first) <= k:
            continue
        pooled = speakers.pooled_vectors(feats, first, width, config)
        windowed = speakers.window_vectors(feats, first, width, config)
        rows += zip((pooled[:-k] * pooled[k:]).sum(axis=1), (windowed[:-k] * windowed[k:]).sum(axis=1))
    return np.array(rows).reshape(-1, 2)


def timed_split(name: str, wav: str, spans, config) -> tuple[list, float]:
    from tasks.speakers import split_speakers

    t0 = time.perf_counter()
    pieces = split_speakers(name, wav, spans, config)
    return [(p.start, p.end) for p in pieces], time.perf_counter() - t0


def run(inputs: dict[str, Path], config) -> dict:
    from modalink.config import AudioConfig, VadConfig
    from tasks.audio import extract_audio
    from tasks.speakers import load_speaker_model
    from tasks.vad import detect_speech

    everything = dataclasses.replace(config, screen_similarity=1.0)
    load_speaker_model(config)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in inputs.items():
            wav = extract_audio(str(path), str(Path(tmp) / f"{name}.wav"), AudioConfig()).path
            spans = detect_speech(wav, VadConfig()).spans
            pairs = boundary_pairs(wav, spans, config)
            below = pairs[:, 1] < config.change_threshold
            checked = pairs[:, 0] <= config.screen_similarity
            screened, screened_s = timed_split(name, wav, spans, config)
            full, full_s = timed_split(name, wav, spans, everything)
            results[name] = {
                "boundaries": len(pairs), "checked_share": round(float(checked.mean()), 3) if len(pairs) else None,
                "below_change_threshold": int(below.sum()), "misses": int((below & ~checked).sum()),
                "highest_pooled_below": round(float(pairs[below, 0].max()), 3) if below.any() else None,
                "pieces": len(screened), "identical": screened == full,
                "seconds_screened": round(screened_s, 2), "seconds_every_boundary": round(full_s, 2),
            }
    return results


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import make_av_inputs
    from make_inputs import build_input, default_cache

    from modalink.config import Config, deep_update, parse_override

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="the benchmark input's length (0: leave it out)")
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="speakers.OPTION=VALUE")
    args = ap.parse_args(argv)
    overrides: dict = {}
    for item in args.set:
        deep_update(overrides, parse_override(item))
    config = Config.load(overrides=overrides).speakers
    av = make_av_inputs.default_out()
    make_av_inputs.main(["--media", str(args.media), "--out", str(av)])
    inputs = {}
    if args.minutes:
        inputs["talkshow"] = build_input(args.minutes, default_cache())
    inputs.update({"conversation.mp4": av / "conversation.mp4", "side_by_side.mp4": av / "side_by_side.mp4"})
    inputs.update({name: args.media / name for name in SINGLE})
    results = run(inputs, config)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"screen_similarity {config.screen_similarity}, change_threshold {config.change_threshold}")
    print(f"{'input':24} {'boundaries':>10} {'checked':>8} {'below':>6} {'misses':>6} {'max pooled':>10} "
          f"{'identical':>9} {'s screened':>10} {'s all':>7}")
    for name, r in results.items():
        print(f"{name:24} {r['boundaries']:>10} {r['checked_share'] if r['checked_share'] is not None else '-':>8} "
              f"{r['below_change_threshold']:>6} {r['misses']:>6} {r['highest_pooled_below'] or '-':>10} "
              f"{str(r['identical']):>9} {r['seconds_screened']:>10} {r['seconds_every_boundary']:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
