"""Throughput of one run over many videos, with `run.parallel_videos` 1 and 2 (and more if asked).

Makes COPIES distinct videos from the benchmark unit (`bench/make_inputs.py`'s 2.4-minute
talk-show-like clip, each copy with its own name, so its own video id and caches), then builds a
fresh dataset from all of them once per setting, in alternating order, and prints wall time, CPU
time, peak PSS, the rate in minutes of video per wall minute and per CPU minute, and segments kept.

usage: python bench/throughput.py [--copies 20] [--parallel 1 2] [--work DIR] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.make_inputs import build_unit, default_cache  # noqa: E402
from bench.run import MODALINK_ARGS, bench_env, measure, round_order  # noqa: E402
from modalink.ffmpeg_tools import ffprobe_json  # noqa: E402


def copies_of(unit: Path, count: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = folder / f"episode-{number:03d}{unit.suffix}"
        if not path.exists():
            os.link(unit, path) if unit.stat().st_dev == folder.stat().st_dev else path.write_bytes(unit.read_bytes())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="modalink-throughput-"))
    unit = build_unit(default_cache())
    videos = copies_of(unit, args.copies, work / "videos")
    minutes = args.copies * float(ffprobe_json(str(unit))["format"]["duration"]) / 60
    env = bench_env(work)
    rows = []
    for parallel in round_order(list(args.parallel), 0):
        out = work / f"parallel-{parallel}"
        row = measure([sys.executable, "-m", "modalink.cli", "build", *map(str, videos), "--out", str(out),
                       *MODALINK_ARGS, "--set", f"run.parallel_videos={parallel}"], env=env, cwd=str(ROOT))
        row.pop("stdout")
        summary = json.loads((out / "run_summary.json").read_text())
        row.update(parallel_videos=parallel, videos=args.copies, video_minutes=round(minutes, 1),
                   kept=summary["segments"]["kept"], failed=summary["videos"]["failed"],
                   video_min_per_wall_min=round(minutes / (row["wall_s"] / 60), 2),
                   video_min_per_cpu_min=round(minutes / (row["cpu_s"] / 60), 2))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    report = {"machine_cores": os.cpu_count(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
