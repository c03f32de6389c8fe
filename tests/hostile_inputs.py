"""Hostile inputs for a build, made with ffmpeg from the real clips in media/ (issue 19's fault matrix).

`build(media, folder)` writes into `folder` (a source folder, as a user would hand it to `modalink
build`): copies of one GRID clip under hostile file names (shell metacharacters, a leading dash,
dots and backslashes, 240 characters, bytes that are not UTF-8), damaged and odd files made from GRID
clips (zero bytes, truncated, bit-flipped, 2x2 pixels, 4K, rotated by its display matrix, variable
frame rate, audio only, video only, two audio streams), and what a folder can hold besides videos (a
folder named like a video, symlink loops, a dangling link). It returns a `Case` per input: the file
and what a build must make of it. Each file is a few seconds long at most; the whole set builds in
a few seconds.

    python tests/hostile_inputs.py --out /tmp/hostile     # the same set, for a look by hand
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modalink.ffmpeg_tools import ffmpeg  # noqa: E402

GRID = "av_grid_bbaf2n.mpg"  # one frontal face, "bin blue at f two now" (media/README.md)
GRID_SENTENCE = "bin blue at f two now"
GRID_4K = "av_grid_id2_swwp2s.mpg"  # speech about 0.49-2.21 s (its .align)
OTHER_VOICE = "en_jfk.flac"  # "And so, my fellow Americans, ..."
LONG_STEM = "long name " + "x" * 226  # with ".mp4": 240 characters
ENCODE = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
          "-threads", "1")


@dataclass(frozen=True)
class Case:
    """One hostile input: `path` in the source folder, and what a build must give for it.

    `expect` is "face" (status ok, one segment with the speaker's face), "ok" (status ok, whatever
    it keeps), "failed" (status failed with a one-line error), "either" (ok, or failed with a
    one-line error: damaged files that a decoder may or may not get through) or "skipped" (no record:
    not a video file)."""

    name: str
    path: Path
    expect: str
    error: str | None = None  # a word the error must hold, for "failed"


NAMED = {  # case -> file name (bytes where it is no UTF-8): copies of the GRID clip, bit for bit
    "shell": "; $(rm -rf x) | & > *.mpg",
    "dash": "-i.mpg",
    "dashdash": "--out.mpg",
    "dots": "..mpg",
    "backslash_dots": "..\\..\\etc\\x.mpg",
    "long": LONG_STEM + ".mp4",
    "not_utf8": os.fsdecode(b"caf\xe9 \xff\xfe.mpg"),
}


def build(media: Path, folder: Path) -> dict[str, Case]:
    """Every hostile input written into `folder`, by case name."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = media / GRID
    cases: dict[str, Case] = {}

    def case(name: str, file: str, expect: str, error: str | None = None) -> Path:
        cases[name] = Case(name, folder / file, expect, error)
        return folder / file

    for name, file in NAMED.items():
        shutil.copyfile(grid, case(name, file, "face"))

    case("zero_bytes", "zero_bytes.mp4", "failed", "decode").write_bytes(b"")
    mp4 = folder.parent / f".{folder.name}-grid.mp4"  # the GRID clip as H.264/AAC MP4, index first
    ffmpeg("-i", str(grid), *ENCODE, "-movflags", "+faststart", str(mp4))
    data = mp4.read_bytes()
    case("truncated", "truncated.mp4", "either").write_bytes(data[: len(data) * 6 // 10])
    case("bit_flipped", "bit_flipped.mp4", "either").write_bytes(flipped(data, seed=19))
    mp4.unlink()

    ffmpeg("-i", str(grid), "-vf", "scale=2:2", *ENCODE, str(case("tiny_2x2", "tiny_2x2.mp4", "ok")))
    ffmpeg("-i", str(media / GRID_4K), "-t", "2", "-vf", "scale=-2:2160,pad=3840:2160:(ow-iw)/2:0", *ENCODE,
           str(case("uhd_4k", "uhd_4k.mp4", "face")))
    upright_sideways = folder.parent / f".{folder.name}-sideways.mp4"  # pixels turned 90 degrees clockwise
    ffmpeg("-i", str(grid), "-vf", "transpose=clock", *ENCODE, str(upright_sideways))
    ffmpeg("-display_rotation", "90", "-i", str(upright_sideways), "-c", "copy",  # shown turned back: upright
           str(case("rotated", "rotated.mp4", "face")))
    upright_sideways.unlink()
    ffmpeg("-i", str(grid), "-vf", "select='lt(mod(n\\,5)\\,3)'", "-fps_mode", "vfr", *ENCODE,
           str(case("vfr", "vfr.mp4", "face")))
    ffmpeg("-i", str(grid), "-vn", "-c:a", "aac", str(case("audio_only", "audio_only.mp4", "failed", "video")))
    ffmpeg("-i", str(grid), "-an", *ENCODE[:-6], str(case("video_only", "video_only.mp4", "failed", "audio")))
    ffmpeg("-i", str(grid), "-i", str(media / OTHER_VOICE), "-map", "0:v", "-map", "0:a", "-map", "1:a", "-t", "3",
           *ENCODE, "-disposition:a:0", "default", "-disposition:a:1", "0",
           str(case("two_audio", "two_audio.mp4", "face")))

    clip_folder = case("folder_named_like_a_video", "clip.mp4", "skipped")
    clip_folder.mkdir()
    (clip_folder / "notes.txt").write_text("a folder, not a video\n")
    loop = case("symlink_loop", "loop.mp4", "skipped")
    loop.symlink_to(loop.name)  # points at itself
    case("folder_loop", "again", "skipped").symlink_to(".")  # the folder inside itself
    case("dangling_link", "dangling.mp4", "skipped").symlink_to("no-such-file.mp4")
    return cases


def flipped(data: bytes, seed: int, every: int = 97) -> bytes:
    """`data` with one bit flipped in about every `every` bytes of its second half (the header stays)."""
    flips = random.Random(seed)
    out = bytearray(data)
    for offset in range(len(out) // 2, len(out), every):
        out[offset] ^= 1 << flips.randrange(8)
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=ROOT / "media")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the inputs into (a new one)")
    args = parser.parse_args(argv)
    for case in build(args.media, args.out).values():
        print(f"{case.name:28} {case.expect:8} {os.fsencode(case.path.name)!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
