"""The comparing side of check.sh: frames of a real clip through the converted ONNX model (ONNX
Runtime) and through TensorFlow.js (run_tfjs.js), states carried frame to frame in both; prints
the largest difference of `pha` and of each state, and fails above the tolerance.

usage: check.py MODEL.onnx TFJS_MODEL_DIR VIDEO WIDTH HEIGHT FRAMES WORK_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-4  # float32 kernels of two runtimes; the conversion itself is exact
model, tfjs_dir, video, w, h, n, work = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7]), sys.argv[7]
STATES = ("r1", "r2", "r3", "r4")
os.makedirs(work, exist_ok=True)
raw = subprocess.run(["ffmpeg", "-v", "error", "-i", video, "-vf", f"scale={w}:{h}", "-frames:v", str(n),
                      "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).astype(np.float32) / 255
np.array([1.0], np.float32).tofile(os.path.join(work, "one.f32"))
np.array([0.0], np.float32).tofile(os.path.join(work, "zero.f32"))
spec = {"frames": []}
for i, f in enumerate(frames):
    f[None].tofile(os.path.join(work, f"src{i}.f32"))
    inputs = [{"name": "src", "shape": [1, h, w, 3], "file": f"src{i}.f32"},
              {"name": "downsample_ratio", "shape": [], "file": "one.f32"}]
    for s in STATES:
        inputs.append({"name": s + "i", "shape": [1, 1, 1, 1], "file": "zero.f32"} if i == 0
                      else {"name": s + "i", "prev": s + "o"})
    spec["frames"].append({"id": i, "inputs": inputs})
with open(os.path.join(work, "inputs.json"), "w") as fh:
    json.dump(spec, fh)
subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_tfjs.js"), tfjs_dir, work],
               check=True)
with open(os.path.join(work, "outputs.json")) as fh:
    reference = json.load(fh)

session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
states = {s + "i": np.zeros((1, 1, 1, 1), np.float32) for s in STATES}
worst = 0.0
for i, f in enumerate(frames):
    names = ["pha"] + [s + "o" for s in STATES]
    outs = dict(zip(names, session.run(names, {"src": f.transpose(2, 0, 1)[None].copy(), **states})))
    diffs = []
    for name, ours in outs.items():
        info = reference[str(i)][name]
        theirs = np.fromfile(os.path.join(work, info["file"]), np.float32).reshape(info["shape"]).transpose(0, 3, 1, 2)
        if theirs.shape != ours.shape:
            sys.exit(f"frame {i} {name}: shape {ours.shape}, tfjs {theirs.shape}")
        d = float(np.abs(theirs - ours).max())
        worst = max(worst, d)
        diffs.append(f"{name} {d:.1e}")
    print(f"{w}x{h} frame {i}: max |onnx - tfjs| {', '.join(diffs)}")
    states = {s + "i": outs[s + "o"] for s in STATES}
print(f"{w}x{h}: worst {worst:.1e} (tolerance {TOLERANCE:.0e})")
sys.exit(0 if worst <= TOLERANCE else 1)
