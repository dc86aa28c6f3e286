"""Reference segmentation with Python onnxruntime, written straight from models.md §3.

usage: segment.py MODEL.onnx {selfie,modnet,isnet,rvm} FRAME.rgb WIDTH HEIGHT OUT.f32
Writes the model's `output` (RVM: `pha` of a video's first frame, from zero states) at model
resolution as raw float32 and prints its height and width.
"""
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

model, net, frame, width, height, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rgb = np.fromfile(frame, np.uint8).reshape(height, width, 3)


def modnet_size(w, h, ref=512):
    """MODNet's reference-size rule: short side 512 unless one side is below and one above."""
    if max(w, h) < ref or min(w, h) > ref:
        if w >= h:
            h, w = ref, int(w / h * ref)
        else:
            w, h = ref, int(h / w * ref)
    return w - w % 32, h - h % 32


def rvm_size(w, h, longest=512):
    """RVM: the frame's own size up to 512 px a side, else scaled so the long side is 512."""
    if max(w, h) <= longest:
        return w, h
    r = longest / max(w, h)
    return max(1, round(w * r)), max(1, round(h * r))


size, mean, std = {
    "selfie": ((256, 256), 0.0, 255.0),
    "modnet": (modnet_size(width, height), 127.5, 127.5),
    "isnet": ((1024, 1024), 128.0, 256.0),
    "rvm": (rvm_size(width, height), 0.0, 255.0),
}[net]
# Resize each channel as floats (mode "F"): no rounding to 8 bits between resize and normalise.
resized = np.stack([np.asarray(Image.fromarray(rgb[..., c].astype(np.float32), "F").resize(size, Image.BILINEAR)) for c in range(3)], -1)
x = ((resized - mean) / std).transpose(2, 0, 1)[None]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
if net == "rvm":
    zeros = np.zeros((1, 1, 1, 1), np.float32)
    (mask,) = session.run(["pha"], {"src": x.astype(np.float32), **{f"r{k}i": zeros for k in range(1, 5)}})
else:
    (mask,) = session.run(["output"], {"input": x})
mask = np.clip(mask[0, 0], 0.0, 1.0).astype(np.float32)
mask.tofile(out)
print(mask.shape[0], mask.shape[1])
