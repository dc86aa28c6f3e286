#!/usr/bin/env bash
# What a process pays before its first frame: `clearbg remove` of a one-frame clip per tier,
# with no saved optimised graph (ONNX Runtime optimises the model as it loads it) and with the
# graph that the first load saved in $CLEARBG_HOME/optimized/. Run by hand on an idle machine.
#
#   bench/startup.sh                 light human original pro, best of 3 each
#   TIERS=original REPEAT=5 bench/startup.sh
#   PROFILE=dev bench/startup.sh     the dev build (the engine is optimised there too)
#
# Prints a Markdown table: wall seconds of each run (the best of REPEAT) and their ratio. The
# saved graphs are removed before each cold run and kept afterwards as the last warm run left them.
set -euo pipefail

cd "$(dirname "$0")/.."
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
TIERS="${TIERS:-light human original pro}"
REPEAT="${REPEAT:-3}"
case "${PROFILE:-release}" in
    release) cargo build --release -q -p clearbg; CLEARBG=target/release/clearbg ;;
    dev) cargo build -q -p clearbg; CLEARBG=target/debug/clearbg ;;
    *) echo "startup: PROFILE must be release or dev" >&2; exit 1 ;;
esac
OUT=bench/out/startup
mkdir -p "$OUT"
CLIP=$OUT/one-frame.mp4
ffmpeg -nostdin -v error -y -i "$CLEARBG_HOME/fixtures/carphone.mp4" -frames:v 1 -an "$CLIP"

# Best wall time, in seconds, of REPEAT runs of clearbg on TIER; `cold` removes the saved graphs first.
best() {
    local tier=$1 mode=$2 best="" t0 t
    for _ in $(seq "$REPEAT"); do
        [[ $mode == cold ]] && rm -rf "$CLEARBG_HOME/optimized"
        t0=$(date +%s.%N)
        "$CLEARBG" remove -q --model "$tier" "$CLIP" -o "$OUT/$tier.webm" >/dev/null 2>"$OUT/$tier-$mode.err"
        t=$(echo "$(date +%s.%N) - $t0" | bc)
        if [[ -z $best ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
    done
    printf '%.2f' "$best"
}

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load $(cut -d' ' -f1-3 /proc/loadavg); git $(git rev-parse --short HEAD)"
echo
echo "| tier | first frame, graph optimised at load (s) | with the saved graph (s) | ratio |"
echo "|---|---:|---:|---:|"
for tier in $TIERS; do
    cold=$(best "$tier" cold)
    "$CLEARBG" remove -q --model "$tier" "$CLIP" -o "$OUT/$tier.webm" >/dev/null 2>&1  # saves the graph
    warm=$(best "$tier" warm)
    echo "| $tier | $cold | $warm | $(echo "scale=2; $cold / $warm" | bc)x |"
done
