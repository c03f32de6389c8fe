"""Build the benchmark inputs from the real clips in media/: a talk-show-like unit, looped to N minutes.

Each clip is normalised to 1280x720 (letterboxed), 30 fps, H.264 + AAC 48 kHz stereo; a clip with
no sound gets a silent track. The unit (about 2.5 minutes: faces with speech, speech without faces,
music, silent faces, a silent scene) is then looped with stream copy to the asked lengths, so a
60-minute file costs one short encode. Files are cached outside the repository and reused when present.

usage: python bench/make_inputs.py [--minutes 10 60] [--cache DIR]   (prints one JSON line of paths)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from modalink.ffmpeg_tools import find_binary  # noqa: E402

MEDIA = ROOT / "media"
# The order of one unit, like a cut-up episode: GRID faces with speech, speech over a screen with no
# face, music, silent faces, a silent scene.
UNIT = [
    "av_grid_bbaf2n.mpg", "av_grid_id2_swwp2s.mpg", "noface_speech_autoeditor_example.mp4",
    "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "noface_music_bigbuckbunny_0_30.webm",
    "face_nospeech_liveportrait_d18.mp4", "av_grid_bbaf2n.mpg", "av_grid_swiz3n.mpg",
    "noface_nospeech_autoeditor_silhouette.mp4", "av_grid_id2_swwp2s.mpg", "av_grid_lwbsza.mpg",
    "face_nospeech_liveportrait_d19.mp4",
]
VERSION = "v2"  # bump when UNIT or the encoding below changes


def default_cache() -> Path:
    return Path(os.environ.get("MODALINK_BENCH_CACHE", Path.home() / ".cache" / "modalink-bench"))


def run(*args: str) -> None:
    subprocess.run([find_binary("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def has_audio(path: Path) -> bool:
    out = subprocess.run([find_binary("ffprobe"), "-v", "error", "-select_streams", "a", "-show_entries",
                          "stream=index", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return bool(out.stdout.strip())


def normalise(source: Path, target: Path) -> None:
    video = ("scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
             "setsar=1,fps=30,format=yuv420p")
    inputs = ["-i", str(source)]
    if not has_audio(source):
        inputs += ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]
    run(*inputs, "-map", "0:v:0", "-map", "0:a:0" if has_audio(source) else "1:a:0", "-shortest",
        "-vf", video, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "150",
        "-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k", str(target))


def build_unit(cache: Path) -> Path:
    unit = cache / f"unit-{VERSION}.mp4"
    if unit.exists():
        return unit
    parts = cache / f"parts-{VERSION}"
    parts.mkdir(parents=True, exist_ok=True)
    listing = []
    for name in dict.fromkeys(UNIT):
        target = parts / (Path(name).stem + ".mp4")
        if not target.exists():
            normalise(MEDIA / name, target)
    for name in UNIT:
        listing.append(f"file '{parts / (Path(name).stem + '.mp4')}'")
    (parts / "unit.txt").write_text("\n".join(listing) + "\n")
    partial = unit.with_suffix(".partial.mp4")
    run("-f", "concat", "-safe", "0", "-i", str(parts / "unit.txt"), "-c", "copy", str(partial))
    partial.replace(unit)
    return unit


def build_input(minutes: float, cache: Path) -> Path:
    target = cache / f"talkshow-{VERSION}-{minutes:g}min.mp4"
    if target.exists():
        return target
    unit = build_unit(cache)
    partial = target.with_suffix(".partial.mp4")
    run("-stream_loop", "-1", "-i", str(unit), "-t", str(minutes * 60), "-c", "copy", "-movflags", "+faststart",
        str(partial))
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(json.dumps({f"{m:g}": str(build_input(m, args.cache)) for m in args.minutes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
