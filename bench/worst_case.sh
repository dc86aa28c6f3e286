#!/usr/bin/env bash
# Peak memory of the largest input clearbg accepts: frames of exactly the frame-area limit
# (CLEARBG_MAX_FRAME_PIXELS, 4096x4096 by default), through every output format, measured as the
# peak of the summed RSS of clearbg and its ffmpeg children (sampled every 50 ms), beside the same
# job at 1280x720. Run by hand on a quiet machine; results go to bench/out/worst_case.md.
#
#   bench/worst_case.sh                         light model, 2 s clips, every format
#   SIDE=4096 CLIP_SECONDS=2 FORMATS="webm mov" bench/worst_case.sh
set -euo pipefail

cd "$(dirname "$0")/.."
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
SIDE="${SIDE:-4096}"
CLIP_SECONDS="${CLIP_SECONDS:-2}"
FORMATS="${FORMATS:-webm mov mp4 gif webp png_sequence matte}"
MODEL="${MODEL:-light}"
OUT=bench/out/worst_case
CLEARBG=target/release/clearbg
mkdir -p "$OUT"

cargo build --release -q
for size in 1280x720 "${SIDE}x${SIDE}"; do
    clip="$OUT/clip-$size.mp4"
    [[ -f "$clip" ]] || ffmpeg -nostdin -v error -y -f lavfi \
        -i "testsrc2=size=$size:rate=25:duration=$CLIP_SECONDS,drawbox=x='mod(t*400\,iw/2)':y=ih/4:w=iw/3:h=ih/2:color=white:t=fill" \
        -f lavfi -i "sine=frequency=440:duration=$CLIP_SECONDS" -c:v libx264 -preset ultrafast -c:a aac -shortest "$clip"
done

# Sum of the RSS (kB) of a process and all its descendants.
tree_rss() {
    local pids
    pids=$(ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ')
    local total
    total=$(ps -o rss= -p "$1" 2>/dev/null | tr -d ' ')
    total=${total:-0}
    for p in $pids; do total=$((total + $(tree_rss "$p"))); done
    echo "$total"
}

report="$OUT/../worst_case.md"
{
    echo "# Worst accepted case: peak memory ($(date -u +%F), $(nproc) cores, git $(git rev-parse --short HEAD))"
    echo
    echo "| input | format | frames | wall s | peak RSS, clearbg + ffmpeg (MB) |"
    echo "|---|---|---:|---:|---:|"
} >"$report"
for size in 1280x720 "${SIDE}x${SIDE}"; do
    for format in $FORMATS; do
        ext=$format
        bg=()
        case "$format" in
            png_sequence) ext=zip ;;
            matte) ext=mp4 ;;
            mp4) bg=(--bg green) ;;
        esac
        out="$OUT/out-$size-$format.$ext"
        start=$(date +%s.%N)
        "$CLEARBG" remove "$OUT/clip-$size.mp4" -o "$out" --format "$format" --model "$MODEL" "${bg[@]}" -q \
            >"$OUT/$size-$format.log" 2>&1 &
        pid=$!
        peak=0
        while kill -0 "$pid" 2>/dev/null; do
            now=$(tree_rss "$pid")
            ((now > peak)) && peak=$now
            sleep 0.05
        done
        wait "$pid" || { echo "clearbg failed on $size $format:"; cat "$OUT/$size-$format.log"; exit 1; }
        wall=$(echo "$(date +%s.%N) - $start" | bc)
        frames=$(tail -n 1 "$OUT/$size-$format.log" | grep -o '[0-9]* frames' | grep -o '[0-9]*' || echo "?")
        printf '| %s | %s | %s | %.1f | %d |\n' "$size" "$format" "$frames" "$wall" $((peak / 1024)) >>"$report"
    done
done
cat "$report"
