#!/usr/bin/env bash
# The GPU check, run by hand on a machine with an NVIDIA GPU (never from a test or CI):
# installs the GPU build of ONNX Runtime (make setup-cuda), builds clearbg with `--features cuda`,
# then at 1080p measures every tier with `--device cuda`, keyframes `every` and `adaptive`, and
# checks that the GPU's alpha agrees with the CPU's on the same frames.
#
#   bench/gpu.sh                      all installed tiers, a 5 s 1920x1080 30 fps clip
#   TIERS="light original" SECONDS_CLIP=10 CHECK_SECONDS=1 bench/gpu.sh
#
# On a GPU machine that cannot reach the package registries, prepare $CLEARBG_HOME elsewhere
# (models, lib/, lib/cuda/ with its library-path file, fixtures/carphone.mp4), bring a release
# binary built with `--features cuda`, and skip the install and build steps:
#   SETUP=no CLEARBG_BIN=/path/to/clearbg PY=python3 bench/gpu.sh
#
# Prints one row per tier and mode (fps, wall, frames the model ran on) and, per tier, the alpha
# agreement over the first CHECK_SECONDS (IoU of alpha >= 0.5, mean |difference|); writes
# bench/out-gpu/results.md. The CPU side of the check is slow for the ISNet tiers (~2 s a frame).
set -euo pipefail

cd "$(dirname "$0")/.."
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
TIERS="${TIERS:-light human original pro video}"
SECONDS_CLIP="${SECONDS_CLIP:-5}"
CHECK_SECONDS="${CHECK_SECONDS:-1}"
OUT=bench/out-gpu
CLEARBG="${CLEARBG_BIN:-target/release/clearbg}"
PY="${PY:-$CLEARBG_HOME/venv/bin/python}"
mkdir -p "$OUT"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader ||
    echo "gpu: nvidia-smi not found; carrying on (clearbg says whether it can use the GPU)" >&2
if [[ "${SETUP:-yes}" != no ]]; then
    make setup
    make setup-cuda
    cargo build --release --features clearbg/cuda --bin clearbg
fi
LIBS=$(cat "$CLEARBG_HOME/lib/cuda/library-path")

source bench/clip.sh
CLIP="$OUT/clip_1080p30_${SECONDS_CLIP}s.mp4"
make_clip 1920 1080 "$SECONDS_CLIP" "$CLIP"

# Whether every model file of tier $1 is installed and loads (`clearbg models`: TIER FILE SHA256 LOADS …
# rows, then a TIER DESCRIPTION list that the .onnx test skips).
installed() {
    "$CLEARBG" models 2>/dev/null |
        awk -v t="$1" '$1 == t && $2 ~ /\.onnx$/ { seen = 1; if ($4 != "yes") bad = 1 } END { exit !(seen && !bad) }'
}

# run DEVICE TIER MODE OUT [PREVIEW]: prints "FRAMES FPS WALL MODEL_FRAMES", or fails with
# clearbg's error on stderr (the caller writes a row saying so and goes on with the next tier).
run() {
    local device=$1 tier=$2 mode=$3 out=$4 preview=${5:-} line
    local extra=()
    [[ -n "$preview" ]] && extra=(--preview "$preview")
    line=$(LD_LIBRARY_PATH="$LIBS" "$CLEARBG" remove "$CLIP" -o "$out" --format matte --model "$tier" \
        --keyframes "$mode" --device "$device" -q "${extra[@]}" | tail -n 1) || return 1
    # "N frames, F fps, S s, … model on K frames)"
    awk '{ for (i = 1; i <= NF; i++) if ($i == "on") k = $(i + 1); print $1, $3, $5, k + 0 }' <<<"$line"
}

{
    echo "# clearbg on a GPU"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); clearbg at $(git rev-parse --short HEAD 2>/dev/null || echo "${CLEARBG_REV:-unknown}")"
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown); CPU: $(nproc) cores"
    echo "- clip: 1920x1080 30 fps, ${SECONDS_CLIP} s; alpha check over the first ${CHECK_SECONDS} s against the CPU"
    echo
    echo "| tier | keyframes | frames | fps (GPU) | wall s | model ran on | IoU vs CPU | mean abs diff vs CPU |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for tier in $TIERS; do
        if ! installed "$tier"; then
            echo "| $tier | – | – | – | – | not installed | – | – |"
            continue
        fi
        for mode in every adaptive; do
            if ! timing=$(run cuda "$tier" "$mode" "$OUT/$tier-$mode-gpu.mp4") ||
                ! run cuda "$tier" "$mode" "$OUT/$tier-$mode-gpu-check.mp4" "$CHECK_SECONDS" >/dev/null ||
                ! run cpu "$tier" "$mode" "$OUT/$tier-$mode-cpu-check.mp4" "$CHECK_SECONDS" >/dev/null; then
                echo "| $tier | $mode | – | – | – | failed (stderr above) | – | – |"
                continue
            fi
            read -r frames fps wall model <<<"$timing"
            agreement=$("$PY" - "$OUT/$tier-$mode-gpu-check.mp4" "$OUT/$tier-$mode-cpu-check.mp4" <<'EOF'
import subprocess, sys
import numpy as np
def frames(path):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 1080, 1920).astype(np.float32) / 255
g, c = frames(sys.argv[1]), frames(sys.argv[2])
n = min(len(g), len(c))
g, c = g[:n], c[:n]
inter = ((g >= 0.5) & (c >= 0.5)).sum()
union = ((g >= 0.5) | (c >= 0.5)).sum()
print(f"{inter / max(union, 1):.4f} {np.abs(g - c).mean():.4f}")
EOF
)
            echo "| $tier | $mode | $frames | $fps | $wall | $model | ${agreement% *} | ${agreement#* } |"
        done
    done
} | tee "$OUT/results.md"
