"""Build isnet_int8_dyn.onnx: isnet_fp32_dyn.onnx with int8 weights and activations.

usage: isnet_to_int8.py FP32.onnx RANGES.json OUT.onnx
       isnet_to_int8.py --calibrate FP32.onnx RANGES.json VIDEO...

ISNet at 1024x1024 is most of `original`'s and `pro`'s cost on a CPU. Static quantisation
(ONNX Runtime's QDQ format: int8 weights per output channel, uint8 activations) lets ONNX Runtime
run its convolutions as int8 kernels, which CPUs with VNNI run several times faster than fp32
(eval/RESULTS.md and bench/RESULTS.md have the measurements, quality included).

Static quantisation needs each activation's range, measured by running the fp32 model on
frames. That measurement goes through ONNX Runtime's float kernels, whose last bits depend on
the CPU, so doing it at set-up would give each machine a slightly different file. Instead the
ranges are measured once (`--calibrate`, on frames of the set-up's test footage) and committed
as RANGES.json; the set-up only applies them, which is plain numpy work on the weights: the
same file, to the byte, everywhere (its sha256 is pinned like the other models').
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

SIDE = 1024


def frames(video):
    """ISNet's input for `video`'s first frame: 1024x1024 stretched, (v - 128) / 256, NCHW.

    One frame per clip. Eighteen (every 20th, six per clip) were measured too: min and max over
    more frames are wider ranges, which leave fewer steps for the common values, and the model
    came out further from fp32 (IoU at alpha 0.5 on held-out frames: carphone 0.903-0.985
    instead of 0.964-0.986, bikes 0.898-0.925 instead of 0.947-0.956, the same elsewhere).
    """
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-vf", f"scale={SIDE}:{SIDE}:flags=bilinear",
         "-frames:v", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"],
        check=True, capture_output=True).stdout
    if len(raw) != SIDE * SIDE * 3:
        sys.exit(f"{video}: no frame decoded")
    frame = np.frombuffer(raw, np.uint8).reshape(SIDE, SIDE, 3)
    yield ((frame.astype(np.float32) - 128.0) / 256.0).transpose(2, 0, 1)[None]


class Frames(CalibrationDataReader):
    def __init__(self, videos):
        self.inputs = (x for video in videos for x in frames(video))

    def get_next(self):
        x = next(self.inputs, None)
        return None if x is None else {"input": x}


def quantise(fp32, ranges, out, reader=None):
    """With `reader`, measures the ranges into `ranges` first; then applies them."""
    quantize_static(
        str(fp32), str(out), reader,
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(ranges))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calibrate", action="store_true", help="measure RANGES.json from the videos first")
    p.add_argument("fp32", type=Path)
    p.add_argument("ranges", type=Path)
    p.add_argument("rest", nargs="+", help="OUT.onnx, or with --calibrate the videos")
    a = p.parse_args()
    if a.calibrate:
        a.ranges.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            quantise(a.fp32, a.ranges, Path(tmp) / "int8.onnx", Frames(a.rest))
        print(f"wrote {a.ranges}", file=sys.stderr)
    else:
        if len(a.rest) != 1:
            p.error("expected one OUT.onnx")
        if not a.ranges.is_file():
            p.error(f"{a.ranges} not found (made with --calibrate)")
        quantise(a.fp32, a.ranges, a.rest[0])


if __name__ == "__main__":
    main()
