"""What segmenting speech costs the transcripts: segment-level against whole-clip WER.

For each clip (the four GRID clips, en_jfk, the Egyptian Arabic sample, and bench/make_av_inputs.py's
conversation.mp4: four GRID talkers, eight turns) the soundtrack is extracted, segmented by the
pipeline's own steps with default options (VAD, then the speaker split), and each segment is
transcribed as the transcription stage does it (its WAV clip; a piece cut at speaker turns heard with
its siblings, `tasks.transcribe.transcribe` with the segment); the segments' transcripts, joined in
order, are scored against the reference, beside the transcript of the whole clip by the same model.
The cost is the difference of the two word error rates. The JSON lines also give `wer_per_clip`: each
segment's clip heard alone (what the stage did before pieces were heard together). The Arabic sample
has no reference transcript, so its row scores the joined segment transcripts against the whole-clip
transcript (how far segmenting moves the words; an upper bound of the cost).

usage: python bench/quality_wer.py [--media media] [--av DIR] [--models tiny.en base] [--json F]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.make_av_inputs import default_out as av_cache  # noqa: E402
from modalink.config import AsrConfig, AudioConfig, SpeakerConfig, VadConfig  # noqa: E402
from tasks.audio import extract_audio  # noqa: E402
from tasks.clips import cut_wav  # noqa: E402
from tasks.speakers import split_speakers  # noqa: E402
from tasks.transcribe import transcribe  # noqa: E402
from tasks.vad import detect_speech  # noqa: E402

DIGITS = "zero one two three four five six seven eight nine".split()
CLIPS = {  # file -> (language, reference or None)
    "av_grid_bbaf2n.mpg": ("en-US", "bin blue at f two now"),
    "av_grid_lwbsza.mpg": ("en-US", "lay white by s zero again"),
    "av_grid_swiz3n.mpg": ("en-US", "set white in z three now"),
    "av_grid_id2_swwp2s.mpg": ("en-US", "set white with p two soon"),
    "en_jfk.flac": ("en-US", "And so, my fellow Americans, ask not what your country can do for you, "
                             "ask what you can do for your country."),
    "ar_egy_klaam_demo.wav": ("ar-EG", None),
}
CONVERSATION = "conversation.mp4"  # from bench/make_av_inputs.py; its reference from conversation.turns.json


def conversation_reference(av_dir: Path) -> str:
    """The eight turns' words in order: each GRID clip's sentence, or the words of the part a turn holds."""
    turns = json.loads((av_dir / "conversation.turns.json").read_text())
    return " ".join(turn["words"] or CLIPS[turn["source_clip"]][1] for turn in turns)


def words(text: str) -> list[str]:
    text = re.sub(r"(\d)", lambda m: f" {DIGITS[int(m.group(1))]} ", (text or "").lower())
    return re.findall(r"\w+", text)


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def measure(path: Path, language: str, reference: str | None, model: str, work: Path) -> dict | None:
    name = path.name
    if model.endswith(".en") and not language.startswith("en"):
        return None
    asr = AsrConfig(backend="whisper", language=language, model=model)
    audio = extract_audio(str(path), str(work / f"{name}.wav"), AudioConfig())
    speech = detect_speech(audio.path, VadConfig())
    segments = split_speakers(name, audio.path, speech.spans, SpeakerConfig())
    texts, alone = [], []
    for k, segment in enumerate(segments):
        clip = work / f"{name}-{k}.wav"
        cut_wav(audio.path, segment.start, segment.end, clip)
        texts.append(transcribe(str(clip), asr, segment, audio.path).text)
        alone.append(transcribe(str(clip), asr).text)
    whole, joined = transcribe(audio.path, asr).text, " ".join(texts)
    row = {"clip": name, "model": model, "segments": [[round(s.start, 2), round(s.end, 2)] for s in segments],
           "whole": whole, "segmented": joined, "per_clip": " ".join(alone)}
    if reference:
        row.update(wer_whole=round(wer(reference, whole), 3), wer_segmented=round(wer(reference, joined), 3),
                   wer_per_clip=round(wer(reference, row["per_clip"]), 3))
        row["cost"] = round(row["wer_segmented"] - row["wer_whole"], 3)
    else:
        row["segmented_vs_whole"] = round(wer(whole, joined), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=ROOT / "media")
    parser.add_argument("--av", type=Path, default=av_cache(), help="bench/make_av_inputs.py's outputs")
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        inputs = [(args.media / name, *CLIPS[name]) for name in CLIPS]
        if (args.av / CONVERSATION).is_file():
            inputs.append((args.av / CONVERSATION, "en-US", conversation_reference(args.av)))
        for model in args.models:
            for path, language, reference in inputs:
                if (row := measure(path, language, reference, model, Path(work))) is not None:
                    rows.append(row)
                    print(json.dumps(row, ensure_ascii=False), file=sys.stderr, flush=True)
    print("| model | clip | segments | WER whole | WER segmented | cost |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        scored = [r for r in rows if r["model"] == model and "cost" in r]
        for r in rows:
            if r["model"] != model:
                continue
            if "cost" in r:
                print(f"| {model} | {r['clip']} | {len(r['segments'])} | {r['wer_whole']:.3f} | {r['wer_segmented']:.3f} | {r['cost']:+.3f} |")
            else:
                print(f"| {model} | {r['clip']} | {len(r['segments'])} | (no reference) | segmented vs whole {r['segmented_vs_whole']:.3f} | - |")
        if scored:
            mean = sum(r["cost"] for r in scored) / len(scored)
            print(f"| {model} | mean over the clips with a reference | | | | {mean:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
