"""Build audio-visual speaker test inputs (issue 16, "one speaker per segment, and the face that speaks").

From the real clips in media/ (see media/README.md: GRID corpus, CC BY 4.0, Cooke et al. 2006; LivePortrait
driving clips, MIT repository; whisper's jfk.flac, public domain) this writes, into --out:

  conversation.mp4 / conversation.turns.json
      GRID sentences of four different GRID talkers joined with pauses of 0.05-0.3 s: six turn changes and
      one talker with two utterances in a row. The picture is the GRID video itself, so the face on screen is
      always the one speaking. The .json is a list of reference turns {speaker, start, end, ...} in the
      output's timeline (seconds).
  side_by_side.mp4 / side_by_side.turns.json
      two GRID talkers side by side (left half, right half). One speaks at a time; the other shows a frozen
      frame taken from the silence before their sentence. Audio is the speaker's own. The .json gives the
      pixel box of each half and the turns {speaker_side, start, end}.
  voice_over.mp4 / voice_over.json
      en_jfk.flac under a LivePortrait face clip that does not speak (looped to the audio's length): the
      voice belongs to no face on screen.
  overlap.wav / overlap.json
      overlapped speech (audio only, 16 kHz mono 16-bit PCM): four GRID talkers in turns D, B, C, A, where
      B starts talking OVERLAP_PLAN's 1.0 s before D has finished and A 0.8 s before C has finished (both
      voices at their own full level, summed sample by sample), and B -> C is a plain turn change with a
      pause. The .json gives each talker's speech span in the output's timeline and the reference overlap
      spans (the later talker's speech start to the earlier one's speech end).

The four GRID clips are four different people (checked by eye: bbaf2n a dark-haired man in a denim shirt,
lwbsza a grey-haired woman, swiz3n a bald man in a red shirt, id2_swwp2s a man in a dark shirt).

Speech spans: av_grid_id2_swwp2s has a .align word-timing file (units of 1/25000 s), which is used. The
other GRID clips have none, so their speech span is MEASURED from the audio energy (10 ms frames, first and
last run of >= 3 frames above max(floor + 15 dB, peak - 35 dB)); each turn says which ("span_source").
On id2_swwp2s the energy measure is printed beside the .align span as a check.

All cuts fall on video frame boundaries (25 fps, 40 ms), audio is resampled to 48 kHz (1920 samples a
frame), so audio and picture stay in step. Output: H.264 (libx264, one thread) + AAC 48 kHz mono,
bit-exact flags, no metadata: the same inputs give the same bytes. Results are cached: when every output
is present and manifest.json holds the same VERSION, nothing is rebuilt (--force rebuilds).

usage: python bench/make_av_inputs.py [--media DIR] [--out DIR] [--force]   (prints one JSON line of paths)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VERSION = "av4"  # bump when the plans or the encoding below change

FPS = 25
FRAME = 1.0 / FPS
RATE = 48000
GRID_ALIGN_UNIT = 25000.0

# Speaker labels of the GRID clips (one clip = one person, see the module docstring).
GRID = {
    "A": "av_grid_bbaf2n.mpg",
    "B": "av_grid_lwbsza.mpg",
    "C": "av_grid_swiz3n.mpg",
    "D": "av_grid_id2_swwp2s.mpg",
}
DESCRIPTION = {
    "A": "dark-haired man, denim shirt",
    "B": "grey-haired woman",
    "C": "bald man with moustache, red shirt",
    "D": "man with short light-brown hair, dark shirt",
}
# conversation: (speaker, part, target pause after this utterance in s). part is "all" or a word range
# "w0:w1" of the .align words (only D has one); D is cut into two utterances "set white with" | "p two soon".
CONVERSATION = [
    ("A", "all", 0.12),
    ("B", "all", 0.25),
    ("C", "all", 0.08),
    ("D", "0:3", 0.20),   # same speaker twice in a row: the pause is D's own room tone under a frozen frame
    ("D", "3:6", 0.28),
    ("A", "all", 0.06),
    ("C", "all", 0.16),
    ("B", "all", None),
]
SIDE_LEFT, SIDE_RIGHT = "A", "B"
SIDE_TURNS = [("left", 0.15), ("right", 0.22), ("left", None)]  # (side, target pause after)
SIDE_STILL_AT = 0.20  # s: the frozen frame of the silent half is taken from its leading silence
VOICE_AUDIO = "en_jfk.flac"
VOICE_FACE = "face_nospeech_liveportrait_d18.mp4"
# overlap.wav: (speaker, seconds this talker's speech start comes BEFORE the previous talker's speech end;
# negative: a pause of that length between them)
OVERLAP_PLAN = [("D", None), ("B", 1.0), ("C", -0.25), ("A", 0.8)]
LEAD = 0.40  # s of natural silence kept before the first and after the last utterance
OUTPUTS = ["conversation.mp4", "conversation.turns.json", "side_by_side.mp4", "side_by_side.turns.json",
           "voice_over.mp4", "voice_over.json", "overlap.wav", "overlap.json"]


def default_out() -> Path:
    return Path(os.environ.get("MODALINK_AV_INPUTS", Path.home() / ".cache" / "modalink-av-inputs"))


def find_binary(name: str) -> str:
    override = os.environ.get(f"MODALINK_{name.upper()}")
    if override:
        return override
    for candidate in (ROOT / ".venv" / "bin" / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: set MODALINK_{name.upper()}")
    return found


def ffmpeg(*args: str) -> None:
    subprocess.run([find_binary("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                   check=True)


def duration(path: Path, stream: str = "a:0") -> float:
    out = subprocess.run([find_binary("ffprobe"), "-v", "error", "-select_streams", stream, "-show_entries",
                          "stream=duration", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         check=True).stdout.strip()
    return float(out)


def pcm(path: Path, rate: int = 16000) -> np.ndarray:
    raw = subprocess.run([find_binary("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
                          "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def energy_span(path: Path) -> tuple[float, float]:
    """First and last instant of speech by frame energy (10 ms frames, runs of >= 3 frames)."""
    x = pcm(path).astype(np.float64)
    hop = 160
    n = len(x) // hop
    db = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    threshold = max(np.percentile(db, 10) + 15.0, db.max() - 35.0)
    loud = db > threshold
    runs = np.convolve(loud.astype(int), np.ones(3, dtype=int), mode="valid") == 3  # run of 3 starting at i
    idx = np.flatnonzero(runs)
    return idx[0] * 0.01, (idx[-1] + 3) * 0.01


def align_words(path: Path) -> list[tuple[float, float, str]]:
    words = []
    for line in path.read_text().split("\n"):
        if line.strip():
            a, b, w = line.split()
            words.append((int(a) / GRID_ALIGN_UNIT, int(b) / GRID_ALIGN_UNIT, w))
    return words


def speech_parts(media: Path) -> dict:
    """Per speaker: the speech span (start, end, source) and the words, where the .align gives them."""
    parts = {}
    for spk, name in GRID.items():
        align = (media / name).with_suffix(".align")
        measured = energy_span(media / name)
        if align.is_file():
            words = [w for w in align_words(align) if w[2] != "sil"]
            parts[spk] = {"span": (words[0][0], words[-1][1]), "source": "align", "words": words,
                          "energy_check": measured}
        else:
            parts[spk] = {"span": measured, "source": "energy", "words": None}
        # GRID: video 3.00 s, mp2 audio 2.95 s; never cut past the shorter one
        parts[spk]["limit"] = floor_f(min(duration(media / name, "a:0"), duration(media / name, "v:0")))
    return parts


def floor_f(t: float) -> float:
    return math.floor(t / FRAME + 1e-9) * FRAME


def ceil_f(t: float) -> float:
    return math.ceil(t / FRAME - 1e-9) * FRAME


def r(t: float) -> float:
    return round(t, 4)


def encode(inputs: list[str], graph: str, target: Path, vlabel: str = "[v]", alabel: str = "[a]") -> None:
    tmp = target.with_suffix(".tmp.mp4")
    ffmpeg(*inputs, "-filter_complex", graph, "-map", vlabel, "-map", alabel,
           "-c:v", "libx264", "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p", "-g", "50",
           "-threads", "1", "-c:a", "aac", "-b:a", "128k", "-ar", str(RATE), "-ac", "1",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
           "-movflags", "+faststart", str(tmp))
    tmp.replace(target)


def piece_filters(k: int, inp: int, a: float, b: float, tag: str) -> str:
    """Video and audio of input `inp` from a to b (frame multiples), as [v<tag>k] and [a<tag>k]."""
    return (f"[{inp}:v]trim=start={a:.4f}:end={b:.4f},setpts=PTS-STARTPTS,fps={FPS}[v{tag}{k}];"
            f"[{inp}:a]aresample={RATE},atrim=start_sample={round(a * RATE)}:end_sample={round(b * RATE)},"
            f"asetpts=PTS-STARTPTS,aformat=channel_layouts=mono[a{tag}{k}];")


def gap_filters(k: int, inp: int, still_at: float, length: float, tag: str, audio: bool = True) -> str:
    """A frozen frame of input `inp` (at still_at) and its room tone from its leading silence, `length` s."""
    n = round(length / FRAME)
    f0 = round(still_at / FRAME)
    video = (f"[{inp}:v]trim=start_frame={f0}:end_frame={f0 + 1},setpts=PTS-STARTPTS,"
             f"tpad=stop_mode=clone:stop={n - 1},fps={FPS}[v{tag}{k}];")
    if not audio:
        return video
    return (video +
            f"[{inp}:a]aresample={RATE},atrim=start_sample={round(0.02 * RATE)}:"
            f"end_sample={round(0.02 * RATE) + n * round(FRAME * RATE)},asetpts=PTS-STARTPTS,"
            f"aformat=channel_layouts=mono[a{tag}{k}];")


def plan_cuts(spans: list[tuple[float, float]], pauses: list[float | None],
              limits: list[float]) -> list[tuple[float, float]]:
    """Frame-aligned cut (a, b) for each utterance so that the pause after utterance i is near pauses[i].

    limits[i] is where utterance i's clip ends (the shorter of its audio and video, floored to a frame)."""
    cuts = [[floor_f(s), ceil_f(e)] for s, e in spans]
    cuts[0][0] = max(0.0, floor_f(spans[0][0] - LEAD))
    cuts[-1][1] = min(ceil_f(spans[-1][1] + LEAD), limits[-1])
    for i, p in enumerate(pauses[:-1]):
        if p is None:
            continue
        base = (cuts[i][1] - spans[i][1]) + (spans[i + 1][0] - cuts[i + 1][0])
        extra = max(0, round((p - base) / FRAME))
        tail = extra // 2
        cuts[i][1] += tail * FRAME
        cuts[i + 1][0] -= (extra - tail) * FRAME
    assert all(0 <= a < b <= lim + 1e-9 for (a, b), lim in zip(cuts, limits)), cuts
    return [(r(a), r(b)) for a, b in cuts]


def build_conversation(media: Path, out: Path, parts: dict) -> None:
    # Every piece opens its clip as its own input: one input stream feeding several trims of a filtergraph
    # loses or shifts frames in ffmpeg 6 (seen as silence and shifted turns), so inputs are never shared.
    inputs: list[str] = []

    utterances = []  # (speaker, speech start, speech end, words text, span source)
    for spk, part, _ in CONVERSATION:
        info = parts[spk]
        if part == "all":
            s, e = info["span"]
            text = " ".join(w[2] for w in info["words"]) if info["words"] else None
        else:
            w0, w1 = (int(v) for v in part.split(":"))
            words = info["words"][w0:w1]
            s, e = words[0][0], words[-1][1]
            text = " ".join(w[2] for w in words)
        utterances.append((spk, s, e, text, info["source"]))

    spans = [(u[1], u[2]) for u in utterances]
    pauses = [p for _, _, p in CONVERSATION]
    # Utterances cut out of one continuous sentence (D "0:3" then "3:6") have no silence between them in the
    # source: they are cut at the word boundary (frame-rounded) and the pause is a gap piece (frozen frame +
    # the speaker's own room tone). Other pauses are the clips' own silence, trimmed.
    joined = [i for i in range(len(CONVERSATION) - 1)
              if CONVERSATION[i][0] == CONVERSATION[i + 1][0] and CONVERSATION[i][1] != "all"]
    natural_pauses = [None if i in joined else p for i, p in enumerate(pauses)]
    cuts = plan_cuts(spans, natural_pauses, [parts[u[0]]["limit"] for u in utterances])
    for i in joined:
        boundary = r(ceil_f(spans[i][1]))  # word boundary rounded up to a frame
        cuts[i] = (cuts[i][0], boundary)
        cuts[i + 1] = (boundary, cuts[i + 1][1])

    graph, labels, turns, t = "", "", [], 0.0
    k = 0
    for i, ((spk, s, e, text, source), (a, b)) in enumerate(zip(utterances, cuts)):
        inputs += ["-i", str(media / GRID[spk])]
        graph += piece_filters(k, k, a, b, "c")
        labels += f"[vc{k}][ac{k}]"
        k += 1
        start, end = t + max(s, a) - a, t + min(e, b) - a
        turns.append({"speaker": spk, "start": r(start), "end": r(end), "source_clip": GRID[spk],
                      "source_span": [r(max(s, a)), r(min(e, b))], "span_source": source, "words": text})
        t += b - a
        if i in joined:
            gap = round(pauses[i] / FRAME) * FRAME
            inputs += ["-i", str(media / GRID[spk])]
            graph += gap_filters(k, k, 0.2, gap, "c")
            labels += f"[vc{k}][ac{k}]"
            k += 1
            t += gap
    graph += f"{labels}concat=n={k}:v=1:a=1[v][a]"
    encode(inputs, graph, out / "conversation.mp4")
    for prev, nxt in zip(turns, turns[1:]):
        gap = nxt["start"] - prev["end"]
        assert 0.05 - 1e-6 <= gap <= 0.3 + 1e-6, (prev, nxt, gap)
    (out / "conversation.turns.json").write_text(json.dumps(turns, indent=1) + "\n")


def build_side_by_side(media: Path, out: Path, parts: dict) -> None:
    sides = {"left": SIDE_LEFT, "right": SIDE_RIGHT}
    inputs: list[str] = []  # each piece opens its clips as inputs of its own (see build_conversation)
    spans = [parts[sides[side]]["span"] for side, _ in SIDE_TURNS]
    cuts = plan_cuts(spans, [p for _, p in SIDE_TURNS], [parts[sides[side]]["limit"] for side, _ in SIDE_TURNS])
    width, height = 360, 288  # GRID frames
    graph, labels, turns, t = "", "", [], 0.0
    for k, ((side, _), (s, e), (a, b)) in enumerate(zip(SIDE_TURNS, spans, cuts)):
        other = "right" if side == "left" else "left"
        inputs += ["-i", str(media / GRID[sides[side]]), "-i", str(media / GRID[sides[other]])]
        graph += piece_filters(k, 2 * k, a, b, "s")
        graph += gap_filters(k, 2 * k + 1, SIDE_STILL_AT, b - a, "q", audio=False)
        left, right = (f"[vs{k}]", f"[vq{k}]") if side == "left" else (f"[vq{k}]", f"[vs{k}]")
        graph += f"{left}{right}hstack=inputs=2[vh{k}];"
        labels += f"[vh{k}][as{k}]"
        spk = sides[side]
        turns.append({"speaker_side": side, "start": r(t + s - a), "end": r(t + e - a), "speaker": spk,
                      "source_clip": GRID[spk], "span_source": parts[spk]["source"]})
        t += b - a
    graph += f"{labels}concat=n={len(SIDE_TURNS)}:v=1:a=1[v][a]"
    encode(inputs, graph, out / "side_by_side.mp4")
    doc = {
        "frame_size": [2 * width, height],
        "boxes": {"left": {"x0": 0, "y0": 0, "x1": width, "y1": height, "speaker": SIDE_LEFT,
                           "source_clip": GRID[SIDE_LEFT]},
                  "right": {"x0": width, "y0": 0, "x1": 2 * width, "y1": height, "speaker": SIDE_RIGHT,
                            "source_clip": GRID[SIDE_RIGHT]}},
        "box_convention": "pixels, x0/y0 inclusive, x1/y1 exclusive, origin top-left",
        "still_half": f"frozen frame at {SIDE_STILL_AT} s of its own clip (before its sentence)",
        "turns": turns,
    }
    (out / "side_by_side.turns.json").write_text(json.dumps(doc, indent=1) + "\n")


def build_voice_over(media: Path, out: Path) -> None:
    audio, face = media / VOICE_AUDIO, media / VOICE_FACE
    length = duration(audio)
    n = math.floor(length * RATE)
    graph = (f"[0:v]fps=30,format=yuv420p[v];"
             f"[1:a]aresample={RATE},aformat=channel_layouts=mono,atrim=end_sample={n}[a]")
    tmp_inputs = ["-stream_loop", "-1", "-i", str(face), "-i", str(audio)]
    tmp = out / "voice_over.tmp.mp4"
    ffmpeg(*tmp_inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-t", f"{n / RATE:.6f}",
           "-c:v", "libx264", "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p", "-g", "60",
           "-threads", "1", "-c:a", "aac", "-b:a", "128k", "-ar", str(RATE), "-ac", "1",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
           "-movflags", "+faststart", str(tmp))
    tmp.replace(out / "voice_over.mp4")
    s, e = energy_span(audio)
    doc = {
        "audio_source": VOICE_AUDIO, "video_source": VOICE_FACE,
        "video": f"{VOICE_FACE} looped to the audio's length ({n / RATE:.3f} s)",
        "faces_on_screen": 1,
        "voice_belongs_to_face": False,
        "speaking_face": None,
        "note": "the voice (J. F. Kennedy) belongs to no face on screen; the face (LivePortrait driving clip) "
                "makes expressions but does not speak",
        "speech": {"start": r(s), "end": r(e), "span_source": "energy"},
    }
    (out / "voice_over.json").write_text(json.dumps(doc, indent=1) + "\n")


def build_overlap(media: Path, out: Path, parts: dict) -> None:
    """overlap.wav: OVERLAP_PLAN's talkers, each clip's whole audio placed so that its speech starts the
    planned time before (or after) the previous talker's speech end, and summed."""
    rate = 16000
    placed = []  # (speaker, offset of the clip in the output, speech start, speech end), in seconds
    offset = 0.0
    for k, (spk, lead) in enumerate(OVERLAP_PLAN):
        s, e = parts[spk]["span"]
        if k:
            prev_end = placed[-1][3]
            offset = prev_end - lead - s
        placed.append((spk, offset, offset + s, offset + e))
    shift = -min(p[1] for p in placed)
    clips = {spk: pcm(media / GRID[spk], rate) for spk, _ in OVERLAP_PLAN}
    total = max(p[1] + shift + len(clips[p[0]]) / rate for p in placed)
    mix = np.zeros(int(math.ceil(total * rate)), dtype=np.float64)
    for spk, off, _, _ in placed:
        i = round((off + shift) * rate)
        mix[i:i + len(clips[spk])] += clips[spk]
    peak = float(np.abs(mix).max())
    if peak > 0.99:  # never clip: scale the whole mix down
        mix *= 0.99 / peak
    import wave

    tmp = out / "overlap.tmp.wav"
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(mix * 32767).astype("<i2").tobytes())
    tmp.replace(out / "overlap.wav")
    turns = [{"speaker": spk, "start": r(a + shift), "end": r(b + shift), "source_clip": GRID[spk],
              "span_source": parts[spk]["source"]} for spk, _, a, b in placed]
    overlaps = [{"start": r(nxt["start"]), "end": r(prev["end"]), "speakers": [prev["speaker"], nxt["speaker"]]}
                for prev, nxt in zip(turns, turns[1:]) if nxt["start"] < prev["end"]]
    doc = {"rate": rate, "turns": turns, "overlaps": overlaps,
           "note": "audio only; clips summed at their own level" + (f", then scaled by {0.99 / peak:.3f}"
                                                                    if peak > 0.99 else "")}
    (out / "overlap.json").write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    ap.add_argument("--out", type=Path, default=default_out())
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    out: Path = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    paths = {name: str(out / name) for name in OUTPUTS}
    cached = (not args.force and manifest.is_file() and all((out / n).is_file() for n in OUTPUTS)
              and json.loads(manifest.read_text()).get("version") == VERSION)
    if not cached:
        manifest.unlink(missing_ok=True)
        parts = speech_parts(args.media)
        for spk, info in parts.items():
            if "energy_check" in info:
                print(f"speech span of {GRID[spk]}: align {info['span'][0]:.3f}-{info['span'][1]:.3f} s, "
                      f"energy measure {info['energy_check'][0]:.3f}-{info['energy_check'][1]:.3f} s",
                      file=sys.stderr)
        build_conversation(args.media, out, parts)
        build_side_by_side(args.media, out, parts)
        build_voice_over(args.media, out)
        build_overlap(args.media, out, parts)
        manifest.write_text(json.dumps({"version": VERSION, "outputs": OUTPUTS,
                                        "spans": {GRID[s]: [r(v) for v in p["span"]] + [p["source"]]
                                                  for s, p in parts.items()}}, indent=1) + "\n")
    print(json.dumps({"cached": cached, **paths}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
