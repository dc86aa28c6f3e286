#!/usr/bin/env bash
# clearbg end-to-end benchmark, run by hand on an otherwise idle machine (never from a test).
# What it measures and how the ratios are defined: bench/README.md.
#
#   bench/run.sh                          all tiers, 10 s and 60 s 1280x720 30 fps clips
#   TIERS="light human" bench/run.sh      some tiers (`video`, the opt-in tier, only when named)
#   QUICK=1 bench/run.sh                  smoke run on 1 s (and 2 s) clips
#   REPEAT=3 bench/run.sh                 best of 3 per tool
#   SECONDS_SHORT=10 SECONDS_LONG=60      clip lengths
#   LONG_TIERS="light video human"        tiers that also run the long clip (the memory check)
#   PROFILE=dev bench/run.sh              use the dev build (target/debug: the engine and every
#                                         dependency are optimised there too) instead of release
#
# The heavy tiers (human, original, pro) run twice: with adaptive keyframes (the default, tool
# `clearbg`) and with the model on every frame (`--keyframes every`, tool `every`); original and
# pro a third time, every frame with ISNet in fp32 (`--precision fp32`, tool `every_fp32`: the
# per-frame pipeline before int8).
#
# Writes bench/out/results.md (also printed), the clips, every output and per-run logs.
set -euo pipefail

cd "$(dirname "$0")/.."
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"

TIERS="${TIERS:-light human original pro}"
REPEAT="${REPEAT:-1}"
if [[ "${QUICK:-0}" == 1 ]]; then
    SECONDS_SHORT="${SECONDS_SHORT:-1}"
    SECONDS_LONG="${SECONDS_LONG:-2}"
else
    SECONDS_SHORT="${SECONDS_SHORT:-10}"
    SECONDS_LONG="${SECONDS_LONG:-60}"
fi
FPS=30 # the rate bench/clip.sh makes
OUT=bench/out
LOGS="$OUT/logs"
RESULTS="$OUT/results.tsv"
PROFILE="${PROFILE:-release}"
case "$PROFILE" in release) TARGET=target/release ;; dev) TARGET=target/debug ;; *) echo "bench: PROFILE must be release or dev" >&2; exit 1 ;; esac
CLEARBG=$TARGET/clearbg
INFER=$TARGET/examples/infer_only
PY="$CLEARBG_HOME/venv/bin/python"
SOURCE="$CLEARBG_HOME/fixtures/carphone.mp4"
# clearbg's WebM flags (crates/engine/src/video.rs); the transcode must do the same encoder work.
VP9=(-c:v libvpx-vp9 -pix_fmt yuva420p -b:v 0 -crf 32 -deadline realtime -cpu-used 8 -row-mt 1 -lag-in-frames 0)

die() { echo "bench: $*" >&2; exit 1; }

for tier in $TIERS; do
    case "$tier" in light|human|original|pro|video) ;; *) die "unknown tier '$tier' in TIERS" ;; esac
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
# GNU time, not the shell keyword: it reports peak RSS (%M).
if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time (Debian package 'time')" >&2
    sudo_=(); [[ $(id -u) == 0 ]] || sudo_=(sudo)
    "${sudo_[@]}" apt-get install -y -q time >/dev/null || die "could not install GNU time: apt-get install time"
fi
[[ -x "$PY" && -f "$SOURCE" ]] || die "set-up step not done: run 'make setup' (needs $PY and $SOURCE)"

# Cheap when up to date; the example is not part of `cargo build --release`.
cargo build --profile "$PROFILE" --quiet --bin clearbg --example infer_only

mkdir -p "$OUT" "$LOGS"
: >"$RESULTS"

source bench/clip.sh

# Frames in a video, by decoding it (libvpx for VP9 so alpha is decoded too, as a player would).
count_frames() {
    local decoder=()
    [[ "$1" == *.webm ]] && decoder=(-c:v libvpx-vp9)
    ffmpeg -nostdin -v error "${decoder[@]}" -i "$1" -map 0:v:0 -f null - -progress pipe:1 |
        sed -n 's/^frame=//p' | tail -n 1
}

audio_codec() {
    ffprobe -v error -select_streams a:0 -show_entries stream=codec_name -of csv=p=0 "$1"
}

# sample_rss PID OUT: until PID (GNU time) is reaped, every 0.1 s, sums VmRSS over its
# descendants (the tool and its ffmpeg children) and reads the tool's own VmHWM; writes
# "TREE_PEAK_KB OWN_PEAK_KB" to OUT. GNU time's %M is only the largest single process of the
# tree, and for clearbg that is ffmpeg's VP9 encoder (~370 MB at 720p), which would hide any
# growth in clearbg itself. Pure bash builtins (apart from sleep), so sampling costs little.
sample_rss() {
    local root=$1 out=$2 tree_peak=0 own_peak=0 tool="" sum i p f key val _
    local -a pids kids
    while [[ -e /proc/$root ]]; do
        pids=()
        for f in /proc/"$root"/task/*/children; do
            # Reset first: a failed redirection (process gone) leaves the array untouched.
            kids=()
            read -r -a kids 2>/dev/null <"$f" || true
            pids+=("${kids[@]}")
        done
        [[ -z "$tool" && ${#pids[@]} -gt 0 ]] && tool=${pids[0]}
        # Breadth first: pids grows as the children of each process are appended.
        for ((i = 0; i < ${#pids[@]}; i++)); do
            for f in /proc/"${pids[i]}"/task/*/children; do
                kids=()
                read -r -a kids 2>/dev/null <"$f" || true
                pids+=("${kids[@]}")
            done
        done
        sum=0
        for p in "${pids[@]}"; do
            # A process may end between listing and reading: then it simply counts for nothing.
            { while read -r key val _; do
                case "$key" in
                    VmRSS:) sum=$((sum + val)) ;;
                    VmHWM:) [[ "$p" == "$tool" ]] && ((val > own_peak)) && own_peak=$val ;;
                esac
            done 2>/dev/null <"/proc/$p/status"; } 2>/dev/null || true
        done
        ((sum > tree_peak)) && tree_peak=$sum
        sleep 0.1
    done
    echo "$tree_peak $own_peak" >"$out"
}

# measure TIER TOOL CLIP_SECS OUTPUT -- COMMAND...
# Runs COMMAND REPEAT times under GNU time; keeps the fastest run's frames and fps, the largest
# peak RSS of each kind, and appends one row to results.tsv. fps comes from the tool itself
# where it reports it (model loading excluded), else from frames / wall time.
measure() {
    local tier=$1 tool=$2 secs=$3 output=$4
    shift 5
    local tag="${tier}_${secs}s_${tool}" best_fps=0 best_wall="" best_frames="" max_rss=0 max_tree=0 max_own=0
    local i pid sampler wall rss tree own frames fps job_s user sys best_cpu=""
    for ((i = 1; i <= REPEAT; i++)); do
        echo "  $tag (run $i/$REPEAT)" >&2
        /usr/bin/time -f '%e %M %U %S' -o "$LOGS/$tag.time" "$@" >"$LOGS/$tag.out" 2>"$LOGS/$tag.err" &
        pid=$!
        sample_rss "$pid" "$LOGS/$tag.rss" &
        sampler=$!
        if ! wait "$pid"; then
            cat "$LOGS/$tag.err" >&2
            die "$tag failed (logs in $LOGS)"
        fi
        wait "$sampler"
        read -r wall rss user sys <"$LOGS/$tag.time"
        read -r tree own <"$LOGS/$tag.rss"
        case "$tool" in
            clearbg | every | every_fp32) # "300 frames, 41.2 fps, 7.3 s, ...": fps from the seconds, as the printed
                # fps has a single decimal (0.2 fps could be 0.15 or 0.25 for the heavy tiers).
                read -r frames _ _ _ job_s _ <"$LOGS/$tag.out"
                fps=$(awk -v f="$frames" -v s="$job_s" 'BEGIN { printf "%.3f", f / (s > 0 ? s : 1e-9) }') ;;
            infer_only | baseline | ffmpeg_pipes) # {"frames":N,"seconds":S,"fps":F}
                frames=$(sed -n 's/.*"frames": *\([0-9]*\).*/\1/p' "$LOGS/$tag.out")
                fps=$(sed -n 's/.*"fps": *\([0-9.]*\).*/\1/p' "$LOGS/$tag.out") ;;
            ffmpeg | ffmpeg_alpha)
                frames=$(count_frames "$output")
                fps=$(awk -v f="$frames" -v w="$wall" 'BEGIN { printf "%.3f", f / (w > 0 ? w : 1e-9) }') ;;
        esac
        [[ -n "$frames" && -n "$fps" ]] || die "$tag: could not read frames/fps from $LOGS/$tag.out"
        if awk -v a="$fps" -v b="$best_fps" 'BEGIN { exit !(a > b) }'; then
            best_fps=$fps best_wall=$wall best_frames=$frames
            best_cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
        fi
        if ((rss > max_rss)); then max_rss=$rss; fi
        if ((tree > max_tree)); then max_tree=$tree; fi
        if ((own > max_own)); then max_own=$own; fi
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tier" "$tool" "$secs" "$best_frames" "$best_fps" "$best_wall" \
        "$max_rss" "$max_own" "$max_tree" "$best_cpu" >>"$RESULTS"
}

# check TIER TOOL SECS OUTPUT EXPECTED_FRAMES: the output decodes, with every frame and the audio.
check_output() {
    local tag="$1_$3s_$2" output=$4 expected=$5 got audio
    got=$(count_frames "$output")
    audio=$(audio_codec "$output")
    if [[ "$got" != "$expected" || "$audio" != opus ]]; then
        echo "WARNING: $tag: $output decodes to ${got:-no} frames (clip: $expected), audio '${audio:-none}'" | tee -a "$LOGS/warnings.txt" >&2
    fi
}

SHORT="$OUT/clip_720p${FPS}_${SECONDS_SHORT}s.mp4"
LONG="$OUT/clip_720p${FPS}_${SECONDS_LONG}s.mp4"
make_clip 1280 720 "$SECONDS_SHORT" "$SHORT"
# The long clip checks that memory stays flat: for light (the fastest) and video (the only tier
# with state carried across frames).
# LONG_TIERS names the tiers that run it (light and video by default: the heavy tiers take minutes
# per second of 720p).
LONG_TIERS="${LONG_TIERS:-light video}"
for tier in $TIERS; do
    if [[ " $LONG_TIERS " == *" $tier "* ]]; then make_clip 1280 720 "$SECONDS_LONG" "$LONG"; break; fi
done
SHORT_FRAMES=$(count_frames "$SHORT")
: >"$LOGS/warnings.txt"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for tier in $TIERS; do
    echo "tier $tier" >&2
    o="$OUT/${tier}_${SECONDS_SHORT}s"
    measure "$tier" clearbg "$SECONDS_SHORT" "$o.clearbg.webm" -- \
        "$CLEARBG" remove "$SHORT" -o "$o.clearbg.webm" --model "$tier" -q
    check_output "$tier" clearbg "$SECONDS_SHORT" "$o.clearbg.webm" "$SHORT_FRAMES"
    if [[ "$tier" == human || "$tier" == original || "$tier" == pro ]]; then
        measure "$tier" every "$SECONDS_SHORT" "$o.every.webm" -- \
            "$CLEARBG" remove "$SHORT" -o "$o.every.webm" --model "$tier" --keyframes every -q
        check_output "$tier" every "$SECONDS_SHORT" "$o.every.webm" "$SHORT_FRAMES"
    fi
    if [[ "$tier" == original || "$tier" == pro ]]; then
        # ISNet in fp32 on every frame: the per-frame pipeline as it was before int8.
        measure "$tier" every_fp32 "$SECONDS_SHORT" "$o.every_fp32.webm" -- \
            "$CLEARBG" remove "$SHORT" -o "$o.every_fp32.webm" --model "$tier" --keyframes every --precision fp32 -q
        check_output "$tier" every_fp32 "$SECONDS_SHORT" "$o.every_fp32.webm" "$SHORT_FRAMES"
    fi
    measure "$tier" infer_only "$SECONDS_SHORT" - -- "$INFER" "$tier" "$SHORT"
    measure "$tier" baseline "$SECONDS_SHORT" "$o.baseline.webm" -- \
        "$PY" bench/baseline.py "$tier" "$SHORT" "$o.baseline.webm"
    check_output "$tier" baseline "$SECONDS_SHORT" "$o.baseline.webm" "$SHORT_FRAMES"
    if [[ "$tier" == light ]]; then
        # The floor without any model: decode, alpha plane, VP9 with clearbg's flags, audio.
        measure light ffmpeg "$SECONDS_SHORT" "$o.ffmpeg.webm" -- \
            ffmpeg -nostdin -v error -y -i "$SHORT" -map 0:v:0 -map '0:a?' -vf format=yuva420p "${VP9[@]}" \
            -c:a libopus -b:a 96k -f webm "$o.ffmpeg.webm"
        check_output light ffmpeg "$SECONDS_SHORT" "$o.ffmpeg.webm" "$SHORT_FRAMES"
        # The same with clearbg's own alpha instead of an opaque one: VP9 codes alpha as a second
        # picture, and a real matte costs that encoder more than a constant plane does. The
        # alpha is decoded beforehand (not timed) and read raw, so this is the encoder's floor
        # for light's output.
        ffmpeg -nostdin -v error -y -c:v libvpx-vp9 -i "$o.clearbg.webm" -map 0:v:0 -vf alphaextract \
            -f rawvideo -pix_fmt gray "$o.alpha.gray"
        measure light ffmpeg_alpha "$SECONDS_SHORT" "$o.ffmpeg_alpha.webm" -- \
            ffmpeg -nostdin -v error -y -i "$SHORT" -f rawvideo -pix_fmt gray -s 1280x720 -framerate "$FPS" \
            -i "$o.alpha.gray" -filter_complex '[0:v]format=yuva420p[v];[v][1:v]alphamerge[out]' \
            -map '[out]' -map '0:a?' "${VP9[@]}" -c:a libopus -b:a 96k -f webm "$o.ffmpeg_alpha.webm"
        check_output light ffmpeg_alpha "$SECONDS_SHORT" "$o.ffmpeg_alpha.webm" "$SHORT_FRAMES"
        # clearbg's own two ffmpeg children, their command lines taken from a debug log of the
        # same job (untimed), joined by a pass-through that appends that alpha: light with its
        # model and matte costing nothing, the ceiling of its design (bench/ffmpeg_pipes.py).
        CLEARBG_LOG=clearbg_engine=debug "$CLEARBG" remove "$SHORT" -o "$o.commands.webm" --model light -q \
            2>"$LOGS/light_commands.log" >/dev/null
        measure light ffmpeg_pipes "$SECONDS_SHORT" "$o.ffmpeg_pipes.webm" -- \
            "$PY" bench/ffmpeg_pipes.py "$LOGS/light_commands.log" "$o.alpha.gray" "$o.ffmpeg_pipes.webm"
        check_output light ffmpeg_pipes "$SECONDS_SHORT" "$o.ffmpeg_pipes.webm" "$SHORT_FRAMES"
        rm -f "$o.alpha.gray" "$o.commands.webm"
    fi
    if [[ " $LONG_TIERS " == *" $tier "* ]]; then
        # Constant memory: the same tier on a clip 6x as long.
        ol="$OUT/${tier}_${SECONDS_LONG}s"
        measure "$tier" clearbg "$SECONDS_LONG" "$ol.clearbg.webm" -- \
            "$CLEARBG" remove "$LONG" -o "$ol.clearbg.webm" --model "$tier" -q
        check_output "$tier" clearbg "$SECONDS_LONG" "$ol.clearbg.webm" "$(count_frames "$LONG")"
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Machine facts go with the numbers: they are meaningless without them.
{
    echo "# clearbg benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), nproc $(nproc)," \
        "memory $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- load average (1/5/15 min): before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "- $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3); onnxruntime $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)');" \
        "$(rustc --version | cut -d' ' -f1-2); clearbg at $(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')" \
        "$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo '(uncommitted changes)')"
    echo "- binaries: $TARGET ($PROFILE profile)"
    long_run=""
    for tier in $TIERS; do [[ " $LONG_TIERS " == *" $tier "* ]] && long_run+="${long_run:+, }$tier"; done
    [[ -n "$long_run" ]] && long_run=", and ${SECONDS_LONG} s for the memory check ($long_run)"
    echo "- clips: 1280x720 ${FPS} fps H.264 + AAC, ${SECONDS_SHORT} s ($SHORT_FRAMES frames)$long_run; best of $REPEAT run(s)"
    echo
    "$PY" - "$RESULTS" "$FPS" "$SECONDS_SHORT" "$SECONDS_LONG" <<'EOF'
import sys
path, clip_fps, short, long_ = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}
for line in open(path):
    tier, tool, secs, frames, fps, wall, rss, own, tree, cpu = line.rstrip("\n").split("\t")
    rows[tier, tool, secs] = dict(frames=int(frames), fps=float(fps), wall=float(wall), cpu=float(cpu),
                                  rss=int(rss) / 1024, own=int(own) / 1024, tree=int(tree) / 1024)
tiers = list(dict.fromkeys(k[0] for k in rows))

def ratio(tier, other, goal):
    a, b = rows.get((tier, "clearbg", short)), rows.get((tier, other, short))
    if not a or not b:
        return "–"
    r = a["fps"] / b["fps"]
    return f"{r:.2f} {'ok' if r >= goal else 'MISS'}"

# Goals (issue 13): adaptive keyframes against the model on every frame, and against the Python
# per-frame baseline.
EVERY_GOAL = {"human": 2.0, "original": 3.0, "pro": 2.0}
BASELINE_GOAL = {"human": 1.5, "original": 2.0}
# "every-frame": the model on every frame at the tier's precision (keyframes alone); "every-frame
# fp32": also ISNet in fp32, the per-frame pipeline as issue 13 measured it (original, pro).
print("| tier | frames | clearbg fps | real-time factor | wall s | peak RSS MB clearbg / with ffmpeg | "
      "÷ every-frame [goal] | ÷ every-frame fp32 [goal] | ÷ Python baseline [goal] | ÷ inference alone | "
      "÷ ffmpeg transcode [≥ 0.8] | ÷ ffmpeg transcode, clearbg's alpha | ÷ clearbg's ffmpeg children alone |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in tiers:
    c = rows[t, "clearbg", short]
    every = f"{ratio(t, 'every', EVERY_GOAL[t])} [≥ {EVERY_GOAL[t]}]" if t in EVERY_GOAL else "–"
    fp32 = f"{ratio(t, 'every_fp32', EVERY_GOAL[t])} [≥ {EVERY_GOAL[t]}]" if t in EVERY_GOAL else "–"
    base = f"{ratio(t, 'baseline', BASELINE_GOAL.get(t, 1.5))} [≥ {BASELINE_GOAL.get(t, 1.5)}]"
    print(f"| {t} | {c['frames']} | {c['fps']:.1f} | {c['fps'] / clip_fps:.2f} | {c['wall']:.1f} | "
          f"{c['own']:.0f} / {c['tree']:.0f} | {every} | {fp32} | {base} | "
          f"{ratio(t, 'infer_only', 0.0).split()[0]} | {ratio(t, 'ffmpeg', 0.8)} | "
          f"{ratio(t, 'ffmpeg_alpha', 0.0).split()[0]} | {ratio(t, 'ffmpeg_pipes', 0.0).split()[0]} |")
p, f = rows.get(("light", "ffmpeg_pipes", short)), rows.get(("light", "ffmpeg", short))
if p and f:
    print(f"\nlight's ceiling: clearbg's own ffmpeg children and pipes with its alpha, no model or matte "
          f"(bench/ffmpeg_pipes.py): {p['fps']:.1f} fps = {p['fps'] / f['fps']:.2f} of the plain transcode")
for t in tiers:
    a, b = rows.get((t, "clearbg", short)), rows.get((t, "clearbg", long_))
    if not (a and b) or short == long_:
        continue
    print(f"\nConstant memory ({t}, {long_} s clip vs {short} s clip) [goal within ±10%]:")
    for key, what in (("own", "clearbg process"), ("tree", "clearbg + its ffmpeg children"), ("rss", "largest single process (GNU time)")):
        growth = b[key] / max(a[key], 1e-9) - 1
        print(f"- {what}: {a[key]:.0f} MB → {b[key]:.0f} MB ({growth:+.1%}) {'ok' if abs(growth) <= 0.10 else 'MISS'}")
c, h = rows.get(("video", "clearbg", short)), rows.get(("human", "clearbg", short))
if c and h:
    r = c["fps"] / h["fps"]
    print(f"\nvideo vs human, end to end (same run) [goal ≥ 2.5x and ≥ 4 fps]: {c['fps']:.2f} vs {h['fps']:.2f} fps = "
          f"{r:.2f}x {'ok' if r >= 2.5 and c['fps'] >= 4 else 'MISS'}; CPU per frame (user+sys, ffmpeg children "
          f"included): {1000 * c['cpu'] / c['frames']:.0f} vs {1000 * h['cpu'] / h['frames']:.0f} ms = "
          f"{(h['cpu'] / h['frames']) / (c['cpu'] / c['frames']):.2f}x less")
print("\nEvery run. fps: the tool's own count where it reports one (model loading excluded), else frames / wall; "
      "wall: the whole process; RSS peaks: the tool's own process, the sampled sum with its children, "
      "and GNU time's %M (largest single process):\n")
print("| tier | tool | clip s | frames | fps | wall s | CPU s (user+sys) | CPU ms/frame | own RSS MB | tree RSS MB | GNU time RSS MB |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (t, tool, secs), r in rows.items():
    print(f"| {t} | {tool} | {secs} | {r['frames']} | {r['fps']:.2f} | {r['wall']:.2f} | {r['cpu']:.1f} | "
          f"{1000 * r['cpu'] / max(r['frames'], 1):.0f} | {r['own']:.0f} | {r['tree']:.0f} | {r['rss']:.0f} |")
EOF
    if [[ -s "$LOGS/warnings.txt" ]]; then
        echo
        echo "Warnings:"
        sed 's/^/- /' "$LOGS/warnings.txt"
    fi
} | tee "$OUT/results.md"
