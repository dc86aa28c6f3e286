#!/usr/bin/env bash
# Idempotent set-up for `--device cuda`: the GPU build of ONNX Runtime and the CUDA libraries it
# loads, all from PyPI (models.md §4.4), under $CLEARBG_HOME (default ~/.cache/clearbg):
#   cuda-venv/                  onnxruntime-gpu with its [cuda,cudnn] extras (CUDA 13, cuDNN 9)
#   lib/cuda/                   links to libonnxruntime.so.1.31.1 and its provider libraries
#   lib/cuda/library-path       the directories to put on LD_LIBRARY_PATH (see docs/deploy.md)
# The machine needs an NVIDIA driver recent enough for CUDA 13; nothing else from NVIDIA.
set -euo pipefail

ROOT=${CLEARBG_HOME:-$HOME/.cache/clearbg}
ORT_GPU_VERSION=1.31.1
VENV=$ROOT/cuda-venv
LIB=$ROOT/lib/cuda
mkdir -p "$ROOT"
exec 9>"$ROOT/.setup-cuda.lock"
flock 9

stamp="onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION"
if ! { [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.clearbg-stamp" 2>/dev/null)" = "$stamp" ]; }; then
  echo "installing $stamp into $VENV (about 2 GB)"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$stamp"
  echo "$stamp" >"$VENV/.clearbg-stamp"
fi

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
capi=$site/onnxruntime/capi
mkdir -p "$LIB"
for f in "libonnxruntime.so.$ORT_GPU_VERSION" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
  [ -f "$capi/$f" ] || { echo "setup-cuda: error: $capi/$f missing from the wheel" >&2; exit 1; }
  ln -sf "$capi/$f" "$LIB/$f"
done
# The CUDA provider finds libcudart, libcublas, libcudnn… through the dynamic loader's search
# path, which is fixed when a process starts: so it is a setting of the service, not a file.
find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | sort | paste -sd: >"$LIB/library-path"
echo "ok onnxruntime-gpu $ORT_GPU_VERSION in $LIB"
echo "run workers with: LD_LIBRARY_PATH=$(cat "$LIB/library-path") clearbg worker --device cuda"
