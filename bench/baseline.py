#!/usr/bin/env python3
"""The naive baseline clearbg is compared with: what a typical user would write in Python.

One frame at a time, no threads of our own: an ffmpeg decode pipe (rgb24) -> Pillow resize and
numpy normalisation exactly as shared/reference/models.md section 3 -> onnxruntime (the same
1.32.0 and model files clearbg loads, default session options, so all cores) -> mask resized to
the frame with Pillow bilinear -> RGBA -> an ffmpeg encode pipe with clearbg's WebM encoder
flags (VP9 + alpha, realtime, original audio as opus).

The decode and encode ffmpeg processes still run beside Python, as they would in any such
script; what the baseline lacks is clearbg's overlap of decode, inference, matting and encode.

Unlike clearbg it does no temporal stabilisation and no guided (edge-aware) upsampling: the
mask is simply resized, which makes the baseline cheaper per frame, not dearer.

`video` (the opt-in Robust Video Matting) feeds each frame's recurrent states back into the next,
from zeros on the first frame, at the frame's size scaled to a long side of at most 512 px; it
resets nothing on scene cuts (the bench clip has none).

`pro` runs ISNet 1024 and MODNet and fuses them as clearbg's `matte::fuse_detail` does: MODNet's
alpha (resized to ISNet's 1024x1024 grid) is max-combined with ISNet's only within ~2% of the
frame (1024/50 = 20 px) of a pixel ISNet calls subject (>= 0.5); elsewhere ISNet alone.

Usage: baseline.py {light,human,original,pro,video} INPUT OUTPUT.webm
Prints one JSON line {"frames":N,"seconds":S,"fps":F}; seconds run from after the models are
loaded to the encoder's exit (like clearbg's own summary, which excludes model loading).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HOME = Path(os.environ.get("CLEARBG_HOME") or Path.home() / ".cache" / "clearbg")
MODELS = HOME / "models"

# tier -> model files, as in crates/engine/src/model/catalogue.rs
TIERS = {
    "light": ["mp_selfie_256.onnx"],
    "human": ["modnet_photographic.onnx"],
    "original": ["isnet_fp32_dyn.onnx"],
    "pro": ["isnet_fp32_dyn.onnx", "modnet_photographic.onnx"],
    "video": ["rvm_mnv3.onnx"],
}

# clearbg's WebM encoder flags (crates/engine/src/video.rs, OutputFormat::Webm).
VP9 = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-b:v", "0", "-crf", "32",
       "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-lag-in-frames", "0"]


def input_size(model, w, h):
    """The network input (width, height) for a w x h frame (models.md section 3)."""
    if model.startswith("mp_selfie"):
        return 256, 256
    if model.startswith("isnet"):
        return 1024, 1024
    if model.startswith("rvm"):
        r = min(1.0, 512 / max(w, h))
        return (w, h) if r == 1.0 else (max(1, round(w * r)), max(1, round(h * r)))
    # MODNet: short side 512 when the frame is smaller than 512 or larger on both sides,
    # then both sides floored to a multiple of 32.
    ref = 512
    rw, rh = w, h
    if max(w, h) < ref or min(w, h) > ref:
        if w >= h:
            rh, rw = ref, int(w / h * ref)
        else:
            rw, rh = ref, int(h / w * ref)
    return max(rw - rw % 32, 32), max(rh - rh % 32, 32)


def normalisation(model):
    """(mean, std) of x = (v - mean) / std, per models.md section 3."""
    if model.startswith("mp_selfie") or model.startswith("rvm"):
        return 0.0, 255.0
    if model.startswith("isnet"):
        return 128.0, 256.0
    return 127.5, 127.5


STATES = {}  # RVM's recurrent states, carried from frame to frame


def infer(session, model, image):
    """Foreground probability of a PIL RGB image, at the model's resolution, float32 [0,1]."""
    w, h = input_size(model, *image.size)
    mean, std = normalisation(model)
    x = (np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32) - mean) / std
    x = x.transpose(2, 0, 1)[None]
    if model.startswith("rvm"):
        zeros = np.zeros((1, 1, 1, 1), np.float32)
        states = {f"r{k}i": STATES.get(f"r{k}o", zeros) for k in range(1, 5)}
        out, *rec = session.run(["pha", "r1o", "r2o", "r3o", "r4o"], {"src": x, **states})
        STATES.update({f"r{k}o": v for k, v in zip(range(1, 5), rec)})
    else:
        out = session.run(["output"], {"input": x})[0]
    return np.clip(out[0, 0], 0.0, 1.0)


def near(subject, r):
    """True where a subject pixel lies within r pixels (square window): a box sum over an
    integral image, the same neighbourhood as clearbg's box_mean(...) > 0."""
    h, w = subject.shape
    s = np.zeros((h + 1, w + 1), np.int32)
    s[1:, 1:] = subject.astype(np.int32).cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    total = s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]
    return total > 0


def fuse(isnet, modnet):
    """pro: MODNet's detail max-combined with ISNet near ISNet's subject (see module doc)."""
    h, w = isnet.shape
    detail = np.asarray(Image.fromarray(modnet).resize((w, h), Image.BILINEAR))
    close = near(isnet >= 0.5, max(max(w, h) // 50, 1))
    return np.where(close, np.maximum(isnet, detail), isnet)


def probe(path):
    """Width, height and average frame rate (ffmpeg's num/den string, passed back to -r)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,avg_frame_rate",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    streams = json.loads(out)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    return int(video["width"]), int(video["height"]), video["avg_frame_rate"]


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in TIERS:
        sys.exit("usage: baseline.py {light,human,original,pro,video} INPUT OUTPUT.webm")
    tier, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
    files = TIERS[tier]
    sessions = [ort.InferenceSession(str(MODELS / f), providers=["CPUExecutionProvider"]) for f in files]
    width, height, fps = probe(src)
    frame_bytes = width * height * 3

    started = time.perf_counter()
    # Same decode as clearbg (constant frame rate at the average rate) so the frame count matches.
    decoder = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", src, "-map", "0:v:0", "-an", "-sn", "-dn",
         "-fps_mode", "cfr", "-r", fps, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        stdout=subprocess.PIPE)
    encoder = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{width}x{height}", "-framerate", fps, "-i", "pipe:0",
         "-i", src, "-map", "0:v", "-map", "1:a?", *VP9, "-c:a", "libopus", "-b:a", "96k",
         "-shortest", "-f", "webm", dst],
        stdin=subprocess.PIPE)

    frames = 0
    while True:
        raw = decoder.stdout.read(frame_bytes)
        if len(raw) < frame_bytes:
            break
        rgb = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        image = Image.fromarray(rgb)
        masks = [infer(s, f, image) for s, f in zip(sessions, files)]
        mask = fuse(*masks) if tier == "pro" else masks[0]
        alpha = Image.fromarray((mask * 255.0 + 0.5).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        encoder.stdin.write(np.dstack([rgb, np.asarray(alpha)]).tobytes())
        frames += 1

    encoder.stdin.close()
    if encoder.wait() != 0 or decoder.wait() != 0:
        sys.exit("baseline: ffmpeg failed")
    seconds = time.perf_counter() - started
    print(json.dumps({"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 3)}))


if __name__ == "__main__":
    main()
