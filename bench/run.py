"""Run MODALINK, the paper-faithful pipeline and the ffmpeg floor on the same files, in alternation.

For each input length and each round (A B C, then C B A, then A B C ...): wall time, CPU time and peak resident memory
of the whole process tree (sampled every 0.1 s), segments kept, and MODALINK's seconds per stage
from its run summary. After the rounds, MODALINK runs once more on the dataset of its first round:
the fully cached re-run (found up to date, no flow); then once more with the stored outcomes of
its finished videos removed, so that the re-run goes through the Prefect flow and every video flow
with every step cached (a missing manifest alone is rewritten without a flow). Writes results
JSON and the tables of BENCHMARKS.md.

usage: python bench/run.py [--minutes 10 60] [--runs 3] [--work DIR] [--json F] [--markdown F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.make_inputs import build_input, default_cache  # noqa: E402
from modalink.ffmpeg_tools import find_binary  # noqa: E402

BASELINE = ROOT / "bench" / "paper_baseline.py"  # a verbatim copy of ../shared/bench/paper_baseline.py
# The same models and method knobs as the baseline: tiny.en int8 with greedy decoding, MFCC with c0.
MODALINK_ARGS = ["--asr", "whisper", "--asr-model", "tiny.en", "--language", "en-US",
                 "--set", "asr.whisper.beam_size=1", "--set", "speakers.use_c0=true"]
STAGES = ["probe", "audio", "vad", "speaker_split", "frames", "faces", "clips", "transcription", "records"]


def tree_memory(root: psutil.Process) -> tuple[int, int, list[tuple[str, int]]]:
    """Summed RSS and PSS of a process and its descendants, and the PSS of each (name, bytes).
    PSS shares a page between the processes mapping it, so shared libraries are not counted twice."""
    rss = pss = 0
    each = []
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
            each.append((process.name(), info.pss))
        except psutil.Error:
            pass
    return rss, pss, each


def measure(command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> dict:
    """Run a command; wall seconds, CPU seconds, and the peak memory of its process tree (summed RSS
    and summed PSS, sampled every 0.1 s, with the biggest processes at the PSS peak). Memory is in MiB
    (2**20 bytes) under the keys ending in _mb."""
    peak, peak_pss, at_peak, done = [0], [0], [[]], threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss, pss, each = tree_memory(root)
                peak[0] = max(peak[0], rss)
                if pss > peak_pss[0]:
                    peak_pss[0], at_peak[0] = pss, sorted(each, key=lambda item: -item[1])[:5]
            except psutil.Error:
                pass
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {proc.returncode}: {err[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak[0] / 2**20),
            "peak_pss_mb": round(peak_pss[0] / 2**20),
            "at_peak_pss_mb": [(name, round(size / 2**20)) for name, size in at_peak[0]], "stdout": out}


def run_modalink(video: Path, out: Path, env: dict[str, str]) -> dict:
    result = measure([sys.executable, "-m", "modalink.cli", "build", str(video), "--out", str(out), *MODALINK_ARGS],
                     env=env, cwd=str(ROOT))
    summary = json.loads((out / "run_summary.json").read_text())
    result.update(kept=summary["segments"]["kept"], flow_wall_s=summary["wall_s"],
                  up_to_date=summary.get("up_to_date", False), reused=summary["videos"]["reused"],
                  stages={s: summary["seconds_per_stage"].get(s, 0.0) for s in STAGES})
    del result["stdout"]
    return result


def run_baseline(video: Path, out: Path, env: dict[str, str]) -> dict:
    result = measure([sys.executable, str(BASELINE), str(video), str(out)], env=env, cwd=str(out.parent))
    report = json.loads(result.pop("stdout").strip().splitlines()[-1])
    result.update(kept=report["kept"], pieces=report["pieces"], stages=report["times"])
    return result


def run_floor(video: Path) -> dict:
    result = measure([find_binary("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", str(video),
                      "-map", "0:a", "-ac", "1", "-ar", "16000", "-f", "null", "-",
                      "-map", "0:v", "-vf", "fps=1", "-f", "null", "-"])
    result.pop("stdout")
    return result


def bench_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    ffmpeg_dir = str(Path(find_binary("ffmpeg")).parent)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{ffmpeg_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def wait_while_paused(pause_file: Path | None) -> None:
    """Between two measurements, wait while `pause_file` exists (to use the machine for something else)."""
    if pause_file and pause_file.exists():
        print(f"    paused while {pause_file} exists", file=sys.stderr, flush=True)
        while pause_file.exists():
            time.sleep(2)


def round_order(names: list[str], round_: int) -> list[str]:
    """A B C in even rounds, C B A in odd ones: a machine whose speed drifts steadily during the
    benchmark (by 17 % over the 60-minute rounds of one measurement) then favours none of them."""
    return list(names) if round_ % 2 == 0 else list(reversed(names))


def bench_length(minutes: float, runs: int, work: Path, cache: Path, env: dict[str, str],
                 pause_file: Path | None = None) -> dict:
    video = build_input(minutes, cache)
    duration = minutes * 60
    rows: dict[str, list[dict]] = {"modalink": [], "baseline": [], "floor": []}
    first_dataset = None
    for round_ in range(runs):
        for name in round_order(list(rows), round_):
            out = work / f"{minutes:g}min-{name}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            wait_while_paused(pause_file)
            print(f"[{minutes:g} min] round {round_ + 1}/{runs}: {name} ...", file=sys.stderr, flush=True)
            if name == "modalink":
                row = run_modalink(video, out, env)
                first_dataset = first_dataset or out
            elif name == "baseline":
                row = run_baseline(video, out, env)
            else:
                row = run_floor(video)
            print(f"    {row['wall_s']} s, PSS {row['peak_pss_mb']} MiB (RSS {row['peak_rss_mb']} MiB), "
                  f"kept {row.get('kept', '-')}", file=sys.stderr, flush=True)
            rows[name].append(row)
            if name != "modalink":
                shutil.rmtree(out, ignore_errors=True)
    wait_while_paused(pause_file)
    print(f"[{minutes:g} min] cached re-run of modalink ...", file=sys.stderr, flush=True)
    cached = run_modalink(video, first_dataset, env)
    # The same re-run without the stored outcomes of finished videos: it goes through the Prefect
    # flow and every video flow, with every step cached, instead of being found up to date.
    print(f"[{minutes:g} min] cached re-run through the flow (finished-video outcomes removed) ...",
          file=sys.stderr, flush=True)
    for outcome in (first_dataset / ".modalink" / "cache").glob("finished-video-*"):
        outcome.unlink()
    cached_flow = run_modalink(video, first_dataset, env)
    result = {"minutes": minutes, "video": str(video), "runs": rows, "cached_rerun": cached,
              "cached_flow_rerun": cached_flow}
    for name, items in rows.items():
        wall = statistics.median(r["wall_s"] for r in items)
        result[name] = {"wall_s": wall, "rtf": round(wall / duration, 4), "cpu_s": statistics.median(r["cpu_s"] for r in items),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in items),
                        "peak_pss_mb": max(r["peak_pss_mb"] for r in items), "kept": items[0].get("kept")}
    m = result["modalink"]
    m["stages"] = {s: round(statistics.median(r["stages"][s] for r in rows["modalink"]), 1) for s in STAGES}
    m["speedup_vs_baseline"] = round(result["baseline"]["wall_s"] / m["wall_s"], 2)
    m["times_floor"] = round(m["wall_s"] / result["floor"]["wall_s"], 2)
    m["cached_rerun_s"] = cached["wall_s"]
    m["cached_fraction"] = round(cached["wall_s"] / m["wall_s"], 4)
    m["cached_flow_rerun_s"] = cached_flow["wall_s"]
    m["cached_flow_fraction"] = round(cached_flow["wall_s"] / m["wall_s"], 4)
    result["baseline"]["pieces"] = rows["baseline"][0]["pieces"]
    for round_ in range(runs):
        shutil.rmtree(work / f"{minutes:g}min-modalink-{round_}", ignore_errors=True)
    return result


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version()}


def markdown(report: dict) -> str:
    mach = report["machine"]
    lines = [f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gb']} GiB, {mach['os']}, Python {mach['python']}. "
             f"Median of {report['runs']} alternating runs.", "",
             "| input | MODALINK | paper baseline | ffmpeg floor | vs baseline | x floor | MODALINK RTF | peak PSS (RSS) MODALINK / baseline | kept MODALINK / baseline | cached re-run | cached re-run through the flow |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["lengths"]:
        m, b, f = r["modalink"], r["baseline"], r["floor"]
        lines.append(f"| {r['minutes']:g} min | {m['wall_s']:.1f} s | {b['wall_s']:.1f} s | {f['wall_s']:.1f} s | "
                     f"{m['speedup_vs_baseline']:.2f}x faster | {m['times_floor']:.2f}x | {m['rtf']:.3f} | "
                     f"{m['peak_pss_mb']} ({m['peak_rss_mb']}) / {b['peak_pss_mb']} ({b['peak_rss_mb']}) MiB | {m['kept']} / {b['kept']} | "
                     f"{m['cached_rerun_s']:.1f} s ({100 * m['cached_fraction']:.1f} %) | "
                     f"{m['cached_flow_rerun_s']:.1f} s ({100 * m['cached_flow_fraction']:.1f} %) |")
    lines += ["", "MODALINK busy seconds per stage (summed over concurrent workers, so they can add up to more than the wall time):", "",
              "| input | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for r in report["lengths"]:
        lines.append(f"| {r['minutes']:g} min | " + " | ".join(f"{r['modalink']['stages'][s]:.1f}" for s in STAGES) + " |")
    if len(report["lengths"]) >= 2:
        short, long_ = report["lengths"][0], report["lengths"][-1]
        lines += ["", f"Scaling {short['minutes']:g} -> {long_['minutes']:g} min: wall x{long_['modalink']['wall_s'] / short['modalink']['wall_s']:.2f}, "
                  f"peak memory (PSS) x{long_['modalink']['peak_pss_mb'] / short['modalink']['peak_pss_mb']:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=default_cache(), help="where generated inputs are kept")
    parser.add_argument("--work", type=Path, help="scratch folder for outputs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--markdown", type=Path, help="write the result tables here (e.g. bench/results.md)")
    parser.add_argument("--pause-file", type=Path, help="between measurements, wait while this file exists")
    args = parser.parse_args(argv)
    if not BASELINE.is_file():
        parser.error(f"the paper baseline is missing: {BASELINE}")
    args.cache.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="modalink-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    report = {"machine": machine(), "runs": args.runs, "modalink_args": MODALINK_ARGS,
              "lengths": [bench_length(m, args.runs, work, args.cache, env, args.pause_file) for m in args.minutes]}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
