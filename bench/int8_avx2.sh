#!/usr/bin/env bash
# ISNet in int8 against fp32 on this CPU as it is and as an AVX2-only CPU, end to end.
#
#   bench/int8_avx2.sh [CLEARBG]                 original, model on every frame, 2 s clip, 3 rounds
#   TIERS="original pro" KEYFRAMES=adaptive ROUNDS=5 SECONDS_CLIP=4 bench/int8_avx2.sh
#
# ONNX Runtime runs int8 convolutions with VNNI where the CPU has it and with plain AVX2 where it
# does not; int8's speed-up was measured on a CPU with VNNI. scripts/avx2_only.c, preloaded,
# hides AVX-512, VNNI and AMX from CPUID, so every program of the run (clearbg, ONNX Runtime,
# ffmpeg) takes its AVX2 code on this machine's cores: the speed of the path a CPU without VNNI
# takes, on this microarchitecture (an older core's AVX2 units differ). Runs alternate between
# the four variants, so a change in load falls on all alike. Prints, per tier, the best fps of
# each and int8 ÷ fp32 on each path. Run by hand on an idle machine, never from the test suite.
set -euo pipefail

cd "$(dirname "$0")/.."
CLEARBG=${1:-target/release/clearbg}
[[ -x "$CLEARBG" ]] || { echo "bench: $CLEARBG not built (cargo build --release)" >&2; exit 2; }
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
TIERS="${TIERS:-original}"
KEYFRAMES="${KEYFRAMES:-every}"
ROUNDS="${ROUNDS:-3}"
SECONDS_CLIP="${SECONDS_CLIP:-2}"
OUT=bench/out/int8_avx2
mkdir -p "$OUT"

SHIM="$OUT/avx2_only.so"
gcc -O2 -shared -fPIC scripts/avx2_only.c -o "$SHIM"
# The library must work here (CPUID faulting), or every "AVX2" number would be this CPU's own.
LD_PRELOAD="$PWD/$SHIM" true || { echo "bench: CPUID faulting unavailable here; nothing measured" >&2; exit 1; }

source bench/clip.sh
CLIP="$OUT/clip_720p30_${SECONDS_CLIP}s.mp4"
make_clip 1280 720 "$SECONDS_CLIP" "$CLIP"

# Each path keeps ONNX Runtime's optimised graphs, which are laid out for its vector width, in a
# home of its own (the models are shared): one home would make each run redo the other's.
for path in native avx2; do
    mkdir -p "$OUT/home-$path"
    for dir in lib models; do ln -sfn "$CLEARBG_HOME/$dir" "$OUT/home-$path/$dir"; done
done

# fps PATH PRECISION TIER: one run's fps, from clearbg's summary line ("N frames, F fps, S s, …"):
# N / S, as the line rounds F to one decimal.
fps() {
    local preload=""
    [[ $1 == avx2 ]] && preload="$PWD/$SHIM"
    CLEARBG_HOME="$OUT/home-$1" LD_PRELOAD="$preload" "$CLEARBG" remove "$CLIP" -o "$OUT/out.webm" --model "$3" --keyframes "$KEYFRAMES" \
        --precision "$2" -q | tail -n 1 | awk '{ printf "%.3f", $1 / $5 }'
}

echo "| tier | keyframes | this CPU: fp32 fps | int8 fps | int8 ÷ fp32 | AVX2 only: fp32 fps | int8 fps | int8 ÷ fp32 |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for tier in $TIERS; do
    declare -A best=()
    for variant in native:fp32 native:int8 avx2:fp32 avx2:int8; do  # saves the graphs; not timed
        fps "${variant%%:*}" "${variant##*:}" "$tier" >/dev/null
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for variant in native:fp32 native:int8 avx2:fp32 avx2:int8; do
            f=$(fps "${variant%%:*}" "${variant##*:}" "$tier")
            if awk -v a="$f" -v b="${best[$variant]:-0}" 'BEGIN { exit !(a > b) }'; then best[$variant]=$f; fi
        done
    done
    awk -v t="$tier" -v k="$KEYFRAMES" -v nf="${best[native:fp32]}" -v ni="${best[native:int8]}" \
        -v af="${best[avx2:fp32]}" -v ai="${best[avx2:int8]}" \
        'BEGIN { printf "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", t, k, nf, ni, ni / nf, af, ai, ai / af }'
    unset best
done
