#!/usr/bin/env bash
# The GPU check, run by hand on a machine with an NVIDIA GPU (never from a test or CI):
# installs the GPU build of ONNX Runtime (make setup-cuda), builds clearbg with `--features cuda`,
# then at 1080p measures every tier with `--device cuda`, keyframes `every` and `adaptive`, and
# checks that the GPU's alpha agrees with the CPU's on the same frames.
#
#   bench/gpu.sh                      all installed tiers, a 5 s 1920x1080 30 fps clip
#   TIERS="light original" SECONDS_CLIP=10 CHECK_SECONDS=1 bench/gpu.sh
#
# On a GPU machine that cannot reach the package registries, bring $CLEARBG_HOME and a release
# binary built with `--features cuda` (bench/gpu-bundle.sh packs both), and skip the install and
# build steps; CLEARBG_REV names the commit the binary was built at:
#   SETUP=no CLEARBG_BIN=$HOME_THERE/bin/clearbg PY=python3 CLEARBG_REV=abc1234 bench/gpu.sh
#
# Prints one row per tier and mode (fps, wall, frames the model ran on, each pipeline stage's
# working time, peak memory of the process and of the GPU) and, per tier, the alpha agreement
# over the first CHECK_SECONDS (IoU of alpha >= 0.5, mean |difference|); writes
# bench/out-gpu/results.md, and each run's log beside it. The CPU side of the check is slow for
# the ISNet tiers (~2 s a frame on 2 cores).
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
# The run's log (with the pipeline's stage working times and the peak RSS) is OUT.log.
run() {
    local device=$1 tier=$2 mode=$3 out=$4 preview=${5:-} line
    local extra=()
    [[ -n "$preview" ]] && extra=(--preview "$preview")
    # Python's getrusage gives the peak RSS of the largest process (clearbg or one ffmpeg) on
    # any machine, GNU time or not. fp32 on both devices (a CPU's default is int8), so that the
    # alpha check compares the same model.
    line=$(CLEARBG_LOG=warn,clearbg_engine::pipeline=debug LD_LIBRARY_PATH="$LIBS" "$PY" -c '
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(code)' "$CLEARBG" remove "$CLIP" -o "$out" --format matte --model "$tier" \
        --keyframes "$mode" --device "$device" --precision fp32 -q "${extra[@]}" 2>"$out.log" | tail -n 1) || { cat "$out.log" >&2; return 1; }
    # "N frames, F fps, S s, … model on K frames)"
    awk '{ for (i = 1; i <= NF; i++) if ($i == "on") k = $(i + 1); print $1, $3, $5, k + 0 }' <<<"$line"
}

# stages LOG: "decode/segment/matte/encode" working milliseconds from the run's debug line.
stages() {
    sed -E 's/\x1b\[[0-9;]*m//g' "$1" | awk '/stage working times/ {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s/%s/%s/%s", v["decode_ms"], v["segment_ms"], v["matte_ms"], v["encode_ms"] }'
}

# peak_rss_mb LOG
peak_rss_mb() {
    awk -F= '/^peak_rss_kb=/ { printf "%d", $2 / 1024 }' "$1"
}

# failed_row TIER MODE: the table's row for a run that failed (clearbg's error went to stderr).
failed_row() {
    echo "| $1 | $2 | – | – | – | failed (stderr above) | – | – | – | – | – |"
}

# GPU memory in use (MiB), sampled every 100 ms into $OUT/gpu-memory.csv while a run goes on.
gpu_sampler() {
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/gpu-memory.csv" 2>/dev/null &
    echo $!
}

{
    echo "# clearbg on a GPU"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); clearbg at ${CLEARBG_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown); CPU: $(nproc) cores"
    echo "- clip: 1920x1080 30 fps, ${SECONDS_CLIP} s; alpha check over the first ${CHECK_SECONDS} s against the CPU"
    echo
    echo "| tier | keyframes | frames | fps (GPU) | wall s | model ran on | stage ms decode/segment/matte/encode | peak RSS MB | peak GPU MiB | IoU vs CPU | mean abs diff vs CPU |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for tier in $TIERS; do
        if ! installed "$tier"; then
            echo "| $tier | – | – | – | – | not installed | – | – | – | – | – |"
            continue
        fi
        for mode in every adaptive; do
            # The short check first: it also leaves the optimised model in the cache, so the timed
            # run below measures the pipeline, not ONNX Runtime's one-off graph optimisation.
            if ! run cuda "$tier" "$mode" "$OUT/$tier-$mode-gpu-check.mp4" "$CHECK_SECONDS" >/dev/null; then
                failed_row "$tier" "$mode"
                continue
            fi
            idle_gpu=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null || echo 0)
            sampler=$(gpu_sampler)
            timing=$(run cuda "$tier" "$mode" "$OUT/$tier-$mode-gpu.mp4") || timing=
            [[ -n "$sampler" ]] && kill "$sampler" 2>/dev/null
            if [[ -z "$timing" ]] || ! run cpu "$tier" "$mode" "$OUT/$tier-$mode-cpu-check.mp4" "$CHECK_SECONDS" >/dev/null; then
                failed_row "$tier" "$mode"
                continue
            fi
            read -r frames fps wall model <<<"$timing"
            log="$OUT/$tier-$mode-gpu.mp4.log"
            gpu_peak=$(sort -n "$OUT/gpu-memory.csv" 2>/dev/null | tail -n 1)
            gpu_mib=$(( ${gpu_peak:-0} - ${idle_gpu:-0} ))
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
            echo "| $tier | $mode | $frames | $fps | $wall | $model | $(stages "$log") | $(peak_rss_mb "$log") | $gpu_mib | ${agreement% *} | ${agreement#* } |"
        done
    done
} | tee "$OUT/results.md"
