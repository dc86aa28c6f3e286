#!/usr/bin/env bash
# Two clearbg binaries on the same 720p clip, their runs alternated so that a change in the
# machine's load falls on both alike. For a change meant to be faster with the same output, it
# also says whether the outputs are the same file.
#
#   bench/ab.sh OLD NEW                          light, human, original; 4 s clip; 3 rounds
#   TIERS=light ROUNDS=5 SECONDS_CLIP=10 bench/ab.sh OLD NEW
#   KEYFRAMES=every bench/ab.sh OLD NEW          the model on every frame (default: adaptive)
#
# OLD and NEW are clearbg binaries (build the old one in a worktree, or keep a copy). Prints one
# row per tier: the best fps of each over the rounds, NEW ÷ OLD, and whether the outputs decode to
# the same pictures, alpha included (the WebM files themselves differ run to run: Matroska
# writes a random segment id). Run by hand on an idle machine, never from the test suite.
set -euo pipefail

cd "$(dirname "$0")/.."
[[ $# -eq 2 ]] || { echo "usage: bench/ab.sh OLD_CLEARBG NEW_CLEARBG" >&2; exit 2; }
OLD=$1 NEW=$2
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
TIERS="${TIERS:-light human original}"
ROUNDS="${ROUNDS:-3}"
SECONDS_CLIP="${SECONDS_CLIP:-4}"
KEYFRAMES="${KEYFRAMES:-adaptive}"
OUT=bench/out/ab
mkdir -p "$OUT"

source bench/clip.sh
CLIP="$OUT/clip_720p30_${SECONDS_CLIP}s.mp4"
make_clip 1280 720 "$SECONDS_CLIP" "$CLIP"

# run BINARY TIER OUT: prints "FPS MD5": the fps from clearbg's summary line ("N frames, F fps,
# …"), then the MD5 of the output's decoded frames (libvpx decodes the alpha plane too).
run() {
    local fps
    fps=$("$1" remove "$CLIP" -o "$3" --model "$2" --keyframes "$KEYFRAMES" -q | tail -n 1 | awk '{ print $3 }')
    echo "$fps $(ffmpeg -nostdin -v error -c:v libvpx-vp9 -i "$3" -map 0:v -f md5 - | cut -d= -f2)"
}

echo "| tier | old fps (best of $ROUNDS) | new fps | new ÷ old | same output |"
echo "|---|---:|---:|---:|---|"
for tier in $TIERS; do
    best_old=0 best_new=0 same=yes
    for _ in $(seq "$ROUNDS"); do
        read -r fps_old md5_old <<<"$(run "$OLD" "$tier" "$OUT/$tier-old.webm")"
        read -r fps_new md5_new <<<"$(run "$NEW" "$tier" "$OUT/$tier-new.webm")"
        [[ "$md5_old" == "$md5_new" ]] || same=no
        best_old=$(awk -v a="$best_old" -v b="$fps_old" 'BEGIN { print (b > a) ? b : a }')
        best_new=$(awk -v a="$best_new" -v b="$fps_new" 'BEGIN { print (b > a) ? b : a }')
    done
    ratio=$(awk -v a="$best_old" -v b="$best_new" 'BEGIN { printf "%.2f", b / a }')
    echo "| $tier | $best_old | $best_new | $ratio | $same |"
done
