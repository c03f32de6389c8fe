"""Smoke test of the benchmark scripts on a tiny input: they run end to end and report every figure.
No timing is asserted here; the measured numbers live in BENCHMARKS.md."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_scripts_run_on_a_tiny_input(tmp_path):
    report, table = tmp_path / "results.json", tmp_path / "results.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--minutes", "0.3", "--runs", "1",
                    "--cache", str(tmp_path / "inputs"), "--work", str(tmp_path / "work"),
                    "--json", str(report), "--markdown", str(table)], check=True, timeout=900)
    result, = json.loads(report.read_text())["lengths"]
    assert Path(result["video"]).stat().st_size > 0
    for name in ("modalink", "baseline", "floor"):
        assert result[name]["wall_s"] > 0 and result[name]["peak_rss_mb"] > 0
    assert result["modalink"]["kept"] >= 1 and result["baseline"]["kept"] >= 1  # the input opens with GRID faces
    assert set(result["modalink"]["stages"]) >= {"audio", "vad", "frames", "faces", "clips", "transcription"}
    assert result["modalink"]["cached_rerun_s"] > 0 and result["cached_rerun"]["up_to_date"]
    flow_rerun = result["cached_flow_rerun"]  # all cached, but through the flow and the video flow
    assert not flow_rerun["up_to_date"] and flow_rerun["reused"] == 0 and flow_rerun["kept"] == result["modalink"]["kept"]
    assert not any(flow_rerun["stages"][s] for s in ("audio", "vad", "frames", "faces", "clips", "transcription"))
    assert "| 0.3 min |" in table.read_text()


@pytest.mark.parametrize("round_, order", [
    (0, ["modalink", "baseline", "floor"]),
    (1, ["floor", "baseline", "modalink"]),
    (2, ["modalink", "baseline", "floor"]),
])
def test_rounds_alternate_their_order(round_, order):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    assert bench_run.round_order(["modalink", "baseline", "floor"], round_) == order
