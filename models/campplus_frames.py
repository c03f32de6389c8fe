"""Give campplus.onnx a frame-level output and write its pooling head beside it, and check both.

CAM++ ends in statistics pooling (mean and standard deviation over time of its last frame-level layer)
followed by a dense layer and a BatchNorm. This script
  1. adds to the ONNX graph the output "frames", float32 (batch, 512, frames'), the tensor the pooling
     reads (frames' is about half the input frames: the first TDNN layer has stride 2), so one pass over a
     long segment gives the frame features of every window inside it;
  2. writes <model>.head.npz: the dense layer and the BatchNorm folded into one affine map,
     embedding_linear = weight @ [mean; std] + bias, std with Bessel's correction as the graph computes it;
  3. checks on real audio (the GRID clips and en_jfk.flac in --media, 16 kHz through ffmpeg) that pooling
     "frames" and applying the head reproduces the model's own "embedding_linear", and records the
     largest difference and the new sha256 in <model>.json.

The outputs "embedding" and "embedding_linear" are unchanged. models/export_campplus_onnx.py runs this
at the end of an export; alone it needs onnx, onnxruntime and numpy (the export's environment has them):

usage: /tmp/campplus-export/bin/python models/campplus_frames.py [--model models/campplus.onnx] [--media media/]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg", "av_grid_id2_swwp2s.mpg",
         "en_jfk.flac"]


def pooled_tensor(graph) -> str:
    """The tensor the statistics pooling reads: the input of the first ReduceMean under /stats/."""
    for node in graph.node:
        if node.op_type == "ReduceMean" and node.name.startswith("/stats/"):
            return node.input[0]
    raise SystemExit("no /stats/ReduceMean node: not the CAM++ graph of export_campplus_onnx.py")


def folded_head(graph) -> tuple:
    """(weight (192, 1024), bias (192,)) of the dense 1x1 convolution and the BatchNorm after it."""
    import numpy as np
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    producer = {n.output[0]: n for n in graph.node}
    norm = producer["embedding_linear"]
    squeeze = producer[norm.input[0]]
    conv = producer[squeeze.input[0]]
    assert norm.op_type == "BatchNormalization" and conv.op_type == "Conv" and len(conv.input) == 2, "unexpected head"
    eps = next(a.f for a in norm.attribute if a.name == "epsilon")
    scale, shift, mean, var = (values[name].astype(np.float64) for name in norm.input[1:])
    gain = scale / np.sqrt(var + eps)
    weight = values[conv.input[1]][:, :, 0].astype(np.float64) * gain[:, None]
    return weight.astype(np.float32), (shift - mean * gain).astype(np.float32)


def add_frames_output(model_path: Path) -> Path:
    """Add the "frames" output to the model file in place; write and return the head's .npz."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    if not any(o.name == "frames" for o in graph.output):
        graph.node.append(helper.make_node("Identity", [pooled_tensor(graph)], ["frames"], name="frames_output"))
        graph.output.append(helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 512, "frames_out"]))
        onnx.checker.check_model(model)
        tmp = model_path.with_suffix(".tmp.onnx")
        onnx.save(model, str(tmp))
        tmp.replace(model_path)
    weight, bias = folded_head(graph)
    head = model_path.with_name(model_path.stem + ".head.npz")
    np.savez(head, weight=weight, bias=bias)
    return head


def load_16k(path: Path):
    import numpy as np

    ffmpeg = os.environ.get("MODALINK_FFMPEG") or str(ROOT / ".venv" / "bin" / "ffmpeg")
    ffmpeg = ffmpeg if Path(ffmpeg).is_file() else "ffmpeg"
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0


def check(model_path: Path, head_path: Path, media: Path) -> float:
    """The largest |pooled frames + head - embedding_linear| over 1.5 s, 3 s and whole real clips."""
    import importlib.util

    import numpy as np
    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("modalink_fbank", ROOT / "modalink" / "fbank.py")
    fbank = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fbank)
    head = np.load(head_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for name in CLIPS:
        feats = fbank.fbank(load_16k(media / name))
        for n in (150, 300, len(feats)):
            linear, frames = session.run(["embedding_linear", "frames"], {"feats": feats[None, :n]})
            stats = np.concatenate([frames.mean(axis=2), frames.std(axis=2, ddof=1)], axis=1)
            worst = max(worst, float(np.abs(stats @ head["weight"].T + head["bias"] - linear).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "campplus.onnx")
    ap.add_argument("--media", type=Path, default=ROOT / "media")
    args = ap.parse_args(argv)
    head = add_frames_output(args.model)
    worst = check(args.model, head, args.media)
    info_path = Path(str(args.model) + ".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update(sha256=hashlib.sha256(args.model.read_bytes()).hexdigest(), bytes=args.model.stat().st_size)
    info.setdefault("outputs", {})["frames"] = (
        "(batch, 512, frames') the frame-level features the statistics pooling reads (models/campplus_frames.py)")
    info["head"] = {"file": head.name, "sha256": hashlib.sha256(head.read_bytes()).hexdigest(),
                    "what": "embedding_linear = weight @ [mean; std (ddof 1)] of frames + bias",
                    "max_abs_vs_embedding_linear": worst}
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({"model": str(args.model), "sha256": info["sha256"], "head": str(head),
                      "max_abs_vs_embedding_linear": worst}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
