"""ISNet in int8 on a CPU without VNNI: its masks against fp32's, as such a CPU computes them.

ONNX Runtime picks its int8 convolution kernels by what the CPU has. With VNNI (AVX512-VNNI,
AVX-VNNI; every CPU with AMX has it) one instruction multiplies u8 activations by s8 weights and
adds into 32 bits. With AVX2 alone it goes through `vpmaddubsw`, whose 16-bit sums of two
products saturate, which is why ONNX Runtime's quantisation guide mentions `reduce_range` for
such CPUs. int8's quality was measured on a CPU with VNNI (eval/RESULTS.md, "ISNet in int8"), and
`original` and `pro` run int8 on every CPU by default, so this measures the other path too.

The AVX2 path runs natively here with scripts/avx2_only.c preloaded, which hides AVX-512, VNNI
and AMX from CPUID, so ONNX Runtime dispatches to its AVX2 kernels. `--qemu CPU` also runs int8
under qemu's user-mode emulation of such a CPU (`Haswell-v4`: AVX2 and FMA, no AVX-512, no
VNNI; minutes a frame, needs `apt-get install qemu-user`) and says whether its masks are those
of the AVX2 path to the bit: a check of the library by an independent way to the same kernels.

Inputs: the set-up's still images and two frames (0.5 s and 1.5 s) of each real clip, stretched
to 1024x1024 and normalised as the engine does. Prints a table (IoU of alpha >= 0.5, mean and
largest alpha difference, each against fp32 on this CPU) and writes eval/out/int8_cpu.md.

    python eval/int8_cpu.py [--qemu Haswell-v4] [--inputs astronaut.png,carphone.mp4@1.5,...]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import metrics

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("CLEARBG_HOME", Path.home() / ".cache" / "clearbg"))
MODELS = HOME / "models"
FIXTURES = HOME / "fixtures"
SIDE = 1024
INPUTS = ["astronaut.png", "camera.png", "motorcycle.png"] + [
    f"{clip}@{t}" for clip in ("carphone.mp4", "bikes.mp4", "bigbuckbunny.mp4") for t in ("0.5", "1.5")
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def model_input(name):
    """ISNet's input for an image, or for `clip@seconds`: stretched to SIDE², (v - 128) / 256, CHW."""
    path, _, at = name.partition("@")
    seek = ["-ss", at] if at else []
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *seek, "-i", str(FIXTURES / path), "-vf",
         f"scale={SIDE}:{SIDE}:flags=bilinear", "-frames:v", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"],
        check=True, capture_output=True).stdout
    if len(raw) != SIDE * SIDE * 3:
        sys.exit(f"{name}: no frame decoded")
    rgb = np.frombuffer(raw, np.uint8).reshape(SIDE, SIDE, 3)
    return ((rgb.astype(np.float32) - 128.0) / 256.0).transpose(2, 0, 1)


def infer(model, inputs, out):
    """The worker (`--infer`): `model` on every input in `inputs` (.npy), alphas saved to `out`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    alphas = [session.run(None, {name: x[None]})[0].reshape(-1) for x in np.load(inputs)]
    np.save(out, np.stack(alphas))


def run_worker(prefix, model, inputs, out, env=None):
    cmd = [*prefix, sys.executable, __file__, "--infer", str(model), str(inputs), str(out)]
    # qemu warns once per thread about CPU features it cannot emulate; only failures matter.
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, **(env or {})))
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if "TCG doesn't support" not in line]
        sys.exit(f"{' '.join(cmd)} failed:\n" + "\n".join(errors[-20:]))
    return np.load(out)


def compare(reference, alpha):
    """IoU of alpha >= 0.5 (1 when both are empty), mean and largest |difference|."""
    diff = np.abs(reference - alpha)
    return f"{metrics.iou(alpha, reference):.4f} | {diff.mean():.4f} | {diff.max():.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qemu", metavar="CPU", help="also run int8 under qemu-x86_64 -cpu CPU (e.g. Haswell-v4)")
    p.add_argument("--inputs", default=",".join(INPUTS), help="images and clip@seconds from CLEARBG_HOME/fixtures")
    p.add_argument("--infer", nargs=3, metavar=("MODEL", "INPUTS", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.infer:
        return infer(*a.infer)

    names = a.inputs.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shim = tmp / "avx2_only.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(ROOT / "scripts" / "avx2_only.c"), "-o", str(shim)],
                       check=True)
        inputs = tmp / "inputs.npy"
        np.save(inputs, np.stack([model_input(n) for n in names]))
        fp32_model, int8_model = MODELS / "isnet_fp32_dyn.onnx", MODELS / "isnet_int8_dyn.onnx"
        log("fp32 and int8 on this CPU, int8 on its AVX2 path")
        fp32 = run_worker([], fp32_model, inputs, tmp / "fp32.npy")
        native = run_worker([], int8_model, inputs, tmp / "native.npy")
        avx2 = run_worker([], int8_model, inputs, tmp / "avx2.npy", {"LD_PRELOAD": str(shim)})
        emulated = None
        if a.qemu:
            log(f"int8 emulated as {a.qemu} (minutes a frame, {len(names)} frames)")
            emulated = run_worker(["qemu-x86_64", "-cpu", a.qemu], int8_model, inputs, tmp / "emulated.npy")

    header = "| input | subject share (fp32) | this CPU: IoU | mean diff | max diff | AVX2 only: IoU | mean diff | max diff |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if emulated is not None:
        header, rule = header + f" {a.qemu} (qemu) = AVX2 only |", rule + "---|"
    lines = [header, rule]
    for k, (name, r) in enumerate(zip(names, fp32)):
        row = f"| {name} | {(r >= 0.5).mean():.3f} | {compare(r, native[k])} | {compare(r, avx2[k])} |"
        if emulated is not None:
            row += f" {'bit for bit' if np.array_equal(emulated[k], avx2[k]) else 'DIFFERS'} |"
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    out = ROOT / "eval" / "out"
    out.mkdir(exist_ok=True)
    (out / "int8_cpu.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
