"""Time two checkouts of MODALINK on the same benchmark input, in alternation (A B, B A, ...).

Each checkout runs with its own code (PYTHONPATH and working folder set to it) and its own
bench/run.py MODALINK_ARGS, in this environment's Python, into a fresh dataset each round. Prints
wall time, CPU time and peak PSS per run and the medians, and whether the two manifests,
videos.jsonl files and media are byte-identical. Used to check that a change costs no speed.

usage: python bench/alternate.py OLD_TREE NEW_TREE [--minutes 10] [--runs 3] [--work DIR] [--json F]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.make_inputs import build_input, default_cache  # noqa: E402
from bench.run import bench_env, measure, round_order  # noqa: E402


def modalink_args(tree: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location(f"bench_run_{abs(hash(tree))}", tree / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODALINK_ARGS


def digest(dataset: Path) -> dict[str, str]:
    """sha256 of manifest.jsonl, videos.jsonl and of every media file, by relative path."""
    files = [dataset / "manifest.jsonl", dataset / "videos.jsonl",
             *sorted(p for d in ("video_clips", "audio_clips", "video_frames") for p in (dataset / d).rglob("*") if p.is_file())]
    return {str(p.relative_to(dataset)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="modalink-alternate-"))
    video = build_input(args.minutes, default_cache())
    env = bench_env(work)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    rows: dict[str, list[dict]] = {name: [] for name in trees}
    digests = {}
    for round_ in range(args.runs):
        for name in round_order(list(trees), round_):
            out = work / f"{name}-{round_}"
            tree_env = {**env, "PYTHONPATH": str(trees[name])}
            row = measure([sys.executable, "-m", "modalink.cli", "build", str(video), "--out", str(out),
                           *modalink_args(trees[name])], env=tree_env, cwd=str(trees[name]))
            row.pop("stdout")
            summary = json.loads((out / "run_summary.json").read_text())
            row.update(kept=summary["segments"]["kept"], round=round_)
            digests.setdefault(name, digest(out))
            rows[name].append(row)
            print(f"round {round_} {name}: {row['wall_s']} s, CPU {row['cpu_s']} s, PSS {row['peak_pss_mb']} MiB, "
                  f"kept {row['kept']}", file=sys.stderr, flush=True)
    medians = {name: {key: statistics.median(r[key] for r in items) for key in ("wall_s", "cpu_s", "peak_pss_mb")}
               for name, items in rows.items()}
    report = {"video": str(video), "trees": {k: str(v) for k, v in trees.items()}, "runs": rows, "medians": medians,
              "identical_output": digests["old"] == digests["new"],
              "differing_files": sorted(k for k in digests["old"].keys() | digests["new"].keys()
                                        if digests["old"].get(k) != digests["new"].get(k))}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"medians": medians, "identical_output": report["identical_output"],
                      "differing_files": report["differing_files"][:20]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
