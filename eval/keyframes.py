"""`make eval-keyframes`: what running the model on keyframes only (and at a smaller input size)
costs in quality, against the model on every frame.

For each tier and clip, `matte_eval` runs once as the reference (`--keyframes every`, the model's
usual size, fp32) and once per variant: `adaptive` (the pipeline's default, at its precision:
ISNet in int8 on a CPU), `every@768` (every frame, first model at reference side 768),
`adaptive@768`, `every:int8` or `adaptive:fp32` (ISNet's number format), `adaptive+agreement=0.8`
(the keyframe planner's rules changed, as `CLEARBG_KEYFRAME_RULES` takes them; `+` between
several), ... Each run's shipped matte (stabilised + guided) is compared with the reference's
frame by frame: IoU of alpha >= 0.5 (mean and worst frame). Ground-truth clips (eval/clips.py) also get MAD and
dtSSD of both against the truth. Real footage without ground truth: carphone (a man in a car),
bunny (Big Buck Bunny, 720p) and bikes (street footage with cuts). Two columns describe the reference itself: how well the
model's mask on each frame agrees with its mask on the frame before carried along the motion
(IoU on the mask's grid, within a shot: what a carried frame can score against a model that
changes its mind from frame to frame), and the share of the picture the subject's box takes
(what running the model on a crop around the subject could save at most). Results: a table on
stdout, eval/out/keyframes.md and eval/out/keyframes.json.

    python eval/keyframes.py [--tiers human,original,pro] [--variants adaptive,adaptive+agreement=0]
        [--frames 50] [--clips carphone,bunny,bikes,astronaut-bikes,cameraman-garage,astronaut-bunny]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import clips
import metrics

ROOT = Path(__file__).resolve().parent.parent
# MATTE_EVAL=target/debug/examples/matte_eval also works: the engine and its dependencies are
# optimised in the dev profile too.
MATTE_EVAL = Path(os.environ.get("MATTE_EVAL", ROOT / "target" / "release" / "examples" / "matte_eval"))
REAL = {"carphone": "carphone.mp4", "bunny": "bigbuckbunny.mp4", "bikes": "bikes.mp4"}
# Goals from issue 13: adaptive against every-frame on real footage.
GOAL_IOU_MEAN = 0.95
GOAL_IOU_WORST = 0.85


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(tier, video, out, frames, keyframes, side, precision, rules=""):
    cmd = [str(MATTE_EVAL), tier, str(video), str(out), "--frames", str(frames), "--keyframes", keyframes]
    if side:
        cmd += ["--side", str(side)]
    if precision:
        cmd += ["--precision", precision]
    env = dict(os.environ, CLEARBG_KEYFRAME_RULES=rules)
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.time() - t0
    meta = json.loads((out / "meta.json").read_text())
    shape = (meta["frames"], meta["height"], meta["width"])
    alpha = np.fromfile(out / "stabilised.u8", np.uint8).reshape(shape)
    for f in out.glob("*.u8"):
        f.unlink()  # large: keep only the numbers
    return meta, alpha, wall


def parse_variant(text):
    """`adaptive@768:fp32+agreement=0.8+cut=0.05` -> ("adaptive", 768, "fp32", "agreement=0.8,cut=0.05")."""
    head, *rules = text.split("+")
    head, _, precision = head.partition(":")
    keyframes, _, side = head.partition("@")
    if (keyframes not in ("every", "adaptive") or (rules and keyframes != "adaptive")
            or precision not in ("", "int8", "fp32")):
        raise SystemExit(f"eval: variant {text!r}: expected every[@SIDE][:int8|fp32] or "
                         "adaptive[@SIDE][:int8|fp32][+RULE=VALUE...]")
    return keyframes, int(side) if side else None, precision or None, ",".join(rules)


def per_frame_iou(a, b):
    fa, fb = a >= 128, b >= 128
    inter = (fa & fb).reshape(len(a), -1).sum(1)
    union = (fa | fb).reshape(len(a), -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def subject_box_share(alpha, pad=0.1):
    """Mean share of the picture taken by the subject's box (alpha >= 0.5), widened by `pad` of
    its size each way: the model's cost on a crop around the subject at the same pixel density,
    relative to the whole frame (0 on frames without a subject)."""
    shares = []
    for a in alpha:
        ys, xs = np.nonzero(a >= 128)
        if len(xs) == 0:
            shares.append(0.0)
            continue
        h, w = a.shape
        bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        x0, x1 = max(0, xs.min() - pad * bw), min(w, xs.max() + 1 + pad * bw)
        y0, y1 = max(0, ys.min() - pad * bh), min(h, ys.max() + 1 + pad * bh)
        shares.append((x1 - x0) * (y1 - y0) / (w * h))
    return float(np.mean(shares))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", default="human,original,pro")
    parser.add_argument("--variants", default="adaptive")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--clips", default="carphone,bunny,bikes,astronaut-bikes,cameraman-garage,astronaut-bunny")
    parser.add_argument("--out", default=str(ROOT / "eval" / "out"))
    args = parser.parse_args()
    if not MATTE_EVAL.exists():
        raise SystemExit(f"eval: {MATTE_EVAL} is missing: run `make eval-keyframes` (it builds it)")
    home = Path(os.environ.get("CLEARBG_HOME", Path.home() / ".cache" / "clearbg"))
    out = Path(args.out)
    work = out / "work-keyframes"
    work.mkdir(parents=True, exist_ok=True)
    split = lambda s: [x for x in s.replace(",", " ").split() if x]
    variants = [(v, *parse_variant(v)) for v in split(args.variants)]
    sources = {}
    for name in split(args.clips):
        if name in REAL:
            sources[name] = (home / "fixtures" / REAL[name], None)
        elif name in clips.CLIPS:
            d = clips.make_clip(home, out, name, home / "eval")
            sources[name] = (d / "input.mp4", d / "alpha.npy")
        else:
            raise SystemExit(f"eval: unknown clip {name!r}")

    rows = []
    for tier in split(args.tiers):
        for name, (video, truth_file) in sources.items():
            ref_meta, ref, ref_wall = run(tier, video, work / tier / name / "every", args.frames, "every", None, "fp32")
            truth = None if truth_file is None else np.load(truth_file)[: ref_meta["frames"]].astype(np.float32) / 255
            gt = lambda a: {} if truth is None else {
                "mad": metrics.mad(a.astype(np.float32) / 255, truth),
                "dtssd": metrics.dtssd(a.astype(np.float32) / 255, truth),
            }
            ref_gt = gt(ref)
            for label, keyframes, side, precision, rules in variants:
                folder = label.replace("@", "-").replace("+", "_").replace(":", "-")
                meta, alpha, wall = run(tier, video, work / tier / name / folder, args.frames, keyframes, side,
                                        precision, rules)
                iou = per_frame_iou(alpha, ref)
                steady = np.array(ref_meta["carried_iou"] or [1.0])
                row = {
                    "tier": tier, "clip": name, "variant": label, "frames": meta["frames"],
                    "mask": f"{meta['mask_width']}x{meta['mask_height']}",
                    "keyframes": len(meta["keyframes"]), "stats": meta["stats"],
                    "iou_mean": float(iou.mean()), "iou_worst": float(iou.min()), "iou_worst_frame": int(iou.argmin()),
                    "reference_carried_iou_mean": float(steady.mean()),
                    "reference_carried_iou_worst": float(steady.min()),
                    "reference_subject_box_share": subject_box_share(ref),
                    "seconds": wall, "reference_seconds": ref_wall,
                    "ms_per_frame": 1000 * meta["infer_seconds"] / meta["frames"],
                    "reference_ms_per_frame": 1000 * ref_meta["infer_seconds"] / ref_meta["frames"],
                }
                for k, v in gt(alpha).items():
                    row[k] = v
                    row["reference_" + k] = ref_gt[k]
                rows.append(row)
                log(f"eval: {tier:<8} {name:<17} {label:<13} keyframes {row['keyframes']:>3}/{row['frames']}, "
                    f"IoU mean {row['iou_mean']:.3f} worst {row['iou_worst']:.3f} (frame {row['iou_worst_frame']}), "
                    f"segment {row['ms_per_frame']:.0f} vs {row['reference_ms_per_frame']:.0f} ms/frame")

    text = table(rows)
    (out / "keyframes.json").write_text(json.dumps(rows, indent=1))
    (out / "keyframes.md").write_text(text + "\n")
    print(text)


def table(rows):
    fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    lines = [
        "| tier | clip | variant | keyframes | segment ms/frame (every-frame) | speed-up | IoU mean | IoU worst | "
        "MAD x1e3 (every-frame) | dtSSD x1e2 (every-frame) | model against its last mask carried (mean / worst) | "
        "subject box share |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mad = "–" if "mad" not in r else f"{r['mad']:.2f} ({r['reference_mad']:.2f})"
        dtssd = "–" if "dtssd" not in r else f"{r['dtssd']:.2f} ({r['reference_dtssd']:.2f})"
        lines.append(
            f"| {r['tier']} | {r['clip']} | {r['variant']} | {r['keyframes']}/{r['frames']} | "
            f"{r['ms_per_frame']:.0f} ({r['reference_ms_per_frame']:.0f}) | "
            f"{r['reference_ms_per_frame'] / max(r['ms_per_frame'], 1e-9):.2f}x | {fmt(r['iou_mean'])} | "
            f"{fmt(r['iou_worst'])} | {mad} | {dtssd} | {fmt(r['reference_carried_iou_mean'])} / "
            f"{fmt(r['reference_carried_iou_worst'])} | {fmt(r['reference_subject_box_share'], 2)} |"
        )
    real = [r for r in rows if r["clip"] in REAL]
    for variant in sorted({r["variant"] for r in real}):
        for tier in sorted({r["tier"] for r in real}):
            sel = [r for r in real if r["variant"] == variant and r["tier"] == tier]
            ok = all(r["iou_mean"] >= GOAL_IOU_MEAN and r["iou_worst"] >= GOAL_IOU_WORST for r in sel)
            lines.append(f"\n{tier} {variant} on real footage: IoU per clip >= {GOAL_IOU_MEAN} on average and no "
                         f"frame below {GOAL_IOU_WORST}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
