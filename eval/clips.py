"""Test clips with exact ground-truth alpha, made at run time from real photos and real footage.

A subject (a real photo with its alpha) moves over a background (real footage, or a still
photo) and is composited by the matting equation I = a*F + (1 - a)*B. The composite is encoded
to H.264 the way a user's upload is (libx264, CRF 23, yuv420p); the alpha is kept losslessly
beside it, so a prediction can be scored against the exact truth.

The subjects' alpha comes from cutting each photo out once with the best model we have (ISNet
at 1024x1024, i.e. 2x supersampled for these 512x512 photos) and then treating that cutout as
the truth: whatever the cutout got wrong, the composite is made *from* it, so the alpha of the
composite is exact by construction. (It does favour the `original` tier, which runs the same
network; see eval/RESULTS.md.)

Everything lands under OUT/clips/NAME/: input.mp4 (what the engine sees), alpha.npy (uint8,
(T, H, W)), spec.json. Clips are rebuilt only when this file or the inputs change.
"""

import hashlib
import json
import math
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT, FPS, FRAMES = 640, 360, 25, 50  # 2 s: small enough for two CPU cores


def _smooth(t):
    """0..1 ease-in-out."""
    return 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))


# Each clip: subject photo, background (video fixture + first frame, or still photo) and the
# subject's path: per frame (centre x / W, subject height / H, rotation in degrees, bottom gap / H)
# where the bottom gap is how far the photo's bottom edge sits below the frame's bottom.
CLIPS = {
    # Real street footage (one shot of bikes.mp4, frames 137-186, which has nobody in it): the
    # subject walks right, comes closer and leaves the frame partly; a slight sway.
    "astronaut-bikes": {
        "subject": "astronaut",
        "background": ("bikes.mp4", 137),
        "path": lambda t: (0.30 + 0.55 * _smooth(t), 0.80 + 0.20 * t, 4.0 * math.sin(2 * math.pi * t), 0.06),
    },
    # A still photo: the subject stands almost still (breathing, small sway), the case where
    # per-frame models flicker most visibly.
    "cameraman-garage": {
        "subject": "camera",
        "background": ("motorcycle.png", None),
        "path": lambda t: (
            0.25 + 0.01 * math.sin(2 * math.pi * 0.7 * t),  # the photo's cut-off left edge stays out of frame
            0.95 + 0.01 * math.sin(2 * math.pi * 1.3 * t),
            1.5 * math.sin(2 * math.pi * 0.5 * t),
            0.04,
        ),
    },
    # Animated footage: the subject enters from the left edge, turns and comes closer.
    "astronaut-bunny": {
        "subject": "astronaut",
        "background": ("bigbuckbunny.mp4", 25),
        "path": lambda t: (-0.05 + 0.55 * _smooth(1.3 * t), 0.60 + 0.35 * t, -10.0 + 15.0 * t, 0.05),
    },
}


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cutout(home, name, cache):
    """The subject photo `name` (a fixture) as float RGB (H, W, 3) in [0, 255] and alpha (H, W)
    in [0, 1]. The alpha is ISNet's at 1024x1024 (models.md §3 pre/post-processing), computed
    once and cached as a PNG."""
    photo = Image.open(home / "fixtures" / f"{name}.png").convert("RGB")
    cached = cache / f"{name}-alpha.png"
    if not cached.exists():
        import onnxruntime as ort

        session = ort.InferenceSession(str(home / "models" / "isnet_fp32_dyn.onnx"), providers=["CPUExecutionProvider"])
        x = np.asarray(photo.resize((1024, 1024), Image.BILINEAR), dtype=np.float32)
        x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None]
        out = session.run(["output"], {"input": x})[0][0, 0]
        alpha = Image.fromarray(np.clip(out, 0, 1).astype(np.float32), "F").resize(photo.size, Image.BILINEAR)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.png")
        Image.fromarray((np.clip(np.asarray(alpha), 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp)
        tmp.rename(cached)
    alpha = np.asarray(Image.open(cached), dtype=np.float32) / 255.0
    return np.asarray(photo, dtype=np.float32), alpha


def _backgrounds(home, spec):
    """FRAMES background frames (uint8 (H, W, 3)), scaled to cover the frame and centre-cropped."""
    source, first = spec
    path = home / "fixtures" / source
    cover = f"scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=increase,crop={WIDTH}:{HEIGHT}"
    if first is None:  # a still photo
        img = Image.open(path).convert("RGB")
        k = max(WIDTH / img.width, HEIGHT / img.height)
        img = img.resize((math.ceil(img.width * k), math.ceil(img.height * k)), Image.LANCZOS)
        left, top = (img.width - WIDTH) // 2, (img.height - HEIGHT) // 2
        frame = np.asarray(img.crop((left, top, left + WIDTH, top + HEIGHT)))
        return [frame] * FRAMES
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", f"select=gte(n\\,{first}),{cover}",
         "-an", "-fps_mode", "passthrough",
         "-frames:v", str(FRAMES), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        check=True, capture_output=True,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)
    if len(frames) < FRAMES:
        raise RuntimeError(f"{source}: only {len(frames)} frames from frame {first}")
    return list(frames)


def _place(rgb, alpha, cx, height, angle, gap):
    """The subject transformed into the frame: premultiplied colour (H, W, 3) and alpha (H, W),
    both float. Downscaling is done by an antialiased resize, rotation and sub-pixel placement by
    one bilinear affine warp, the same warp for colour and alpha."""
    src_h, src_w = alpha.shape
    k = height * HEIGHT / src_h
    size = (max(1, round(src_w * k)), max(1, round(src_h * k)))
    planes = [rgb[..., c] * alpha for c in range(3)] + [alpha]
    planes = [Image.fromarray(p.astype(np.float32), "F").resize(size, Image.LANCZOS) for p in planes]
    sx, sy = size[0] / (src_w * k), size[1] / (src_h * k)  # residual of rounding the size
    # Output (x, y) -> subject pixel: undo translation, rotation (about the subject's centre) and
    # the residual scale. The subject's bottom edge sits `gap` below the frame's bottom.
    ox, oy = cx * WIDTH, HEIGHT * (1 + gap) - height * HEIGHT / 2
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    u = (cos * sx, sin * sx)
    v = (-sin * sy, cos * sy)
    c0 = size[0] / 2 - u[0] * ox - u[1] * oy
    c1 = size[1] / 2 - v[0] * ox - v[1] * oy
    coeffs = (u[0], u[1], c0, v[0], v[1], c1)
    warped = [np.asarray(p.transform((WIDTH, HEIGHT), Image.AFFINE, coeffs, Image.BILINEAR)) for p in planes]
    return np.stack(warped[:3], axis=-1), np.clip(warped[3], 0.0, 1.0)


def make_clip(home, out, name, cache):
    """Builds clip `name` under OUT/clips/NAME unless it is already there for the same inputs."""
    spec = CLIPS[name]
    clip_dir = out / "clips" / name
    bg_file = spec["background"][0]
    stamp = {
        "generator": _sha(__file__),
        "subject": _sha(home / "fixtures" / f"{spec['subject']}.png"),
        "background": _sha(home / "fixtures" / bg_file),
        "size": [WIDTH, HEIGHT, FPS, FRAMES],
    }
    spec_file = clip_dir / "spec.json"
    if spec_file.exists() and json.loads(spec_file.read_text()) == stamp:
        return clip_dir
    clip_dir.mkdir(parents=True, exist_ok=True)
    rgb, alpha = cutout(home, spec["subject"], cache)
    backgrounds = _backgrounds(home, spec["background"])
    encoder = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
         f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "pipe:0", "-c:v", "libx264", "-preset", "medium", "-crf", "23",
         "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(clip_dir / "input.mp4")],
        stdin=subprocess.PIPE,
    )
    truth = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for i, background in enumerate(backgrounds):
        premultiplied, a = _place(rgb, alpha, *spec["path"](i / (FRAMES - 1)))
        # The truth is 8-bit; composite with exactly that alpha so I = a*F + (1-a)*B holds for it.
        truth[i] = np.round(a * 255).astype(np.uint8)
        aq = truth[i].astype(np.float32)[..., None] / 255.0
        fg = np.clip(premultiplied / np.maximum(a[..., None], 1e-6), 0, 255)
        frame = aq * fg + (1 - aq) * background.astype(np.float32)
        encoder.stdin.write(np.round(frame).astype(np.uint8).tobytes())
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise RuntimeError(f"ffmpeg failed to encode {name}")
    np.save(clip_dir / "alpha.npy", truth)
    spec_file.write_text(json.dumps(stamp))
    return clip_dir
