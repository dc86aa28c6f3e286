#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a GPU machine that reaches no package registry, in parts
# small enough to carry one at a time, with the script that unpacks them there:
#
#   bench/gpu-bundle.sh DIR [PARTS]     here: DIR/part.NN (PARTS of them, default 6) + DIR/unpack.sh
#   bash unpack.sh PARTS_DIR HOME       there: joins the parts and fills HOME as CLEARBG_HOME
#   SETUP=no CLEARBG_BIN=HOME/bin/clearbg PY=python3 CLEARBG_HOME=HOME PATH=HOME/bin:$PATH bench/gpu.sh
#
# The bundle (about 350 MB as xz) holds a release clearbg built here with `--features cuda`, the
# three libraries of the `onnxruntime-gpu` wheel (PyPI), the installed models, carphone.mp4, and
# static ffmpeg and ffprobe (PyPI `imageio-ffmpeg`, npm `@ffprobe-installer/linux-x64`). The CUDA
# and cuDNN libraries are the GPU machine's own: unpack.sh names the `nvidia/*/lib` folders of
# its python3 (PyTorch's CUDA wheels) in `lib/cuda/library-path`; the provider needs only the same
# major versions (CUDA 13, cuDNN 9). Needs pip, npm and xz here; python3 and tar there.
set -euo pipefail

cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { echo "usage: bench/gpu-bundle.sh DIR [PARTS]" >&2; exit 2; }
DIR=$1 PARTS=${2:-6}
export CLEARBG_HOME="${CLEARBG_HOME:-$HOME/.cache/clearbg}"
ORT_GPU_VERSION=$(sed -n 's/^ORT_GPU_VERSION=//p' scripts/setup-cuda.sh)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DIR" "$WORK"/{dl,home/bin,home/lib/cuda,home/models,home/fixtures,xz}

cargo build --release --features clearbg/cuda --bin clearbg
cp target/release/clearbg "$WORK/home/bin/" && strip "$WORK/home/bin/clearbg"

pip_get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$WORK/dl" "$1"; }
pip_get "onnxruntime-gpu==$ORT_GPU_VERSION"
unzip -q -j -o "$WORK"/dl/onnxruntime_gpu-*.whl 'onnxruntime/capi/libonnxruntime.so.*' \
    'onnxruntime/capi/libonnxruntime_providers_shared.so' 'onnxruntime/capi/libonnxruntime_providers_cuda.so' \
    -d "$WORK/home/lib/cuda"
pip_get imageio-ffmpeg
unzip -q -p "$WORK"/dl/imageio_ffmpeg-*.whl 'imageio_ffmpeg/binaries/ffmpeg-*' >"$WORK/home/bin/ffmpeg"
(cd "$WORK/dl" && npm pack -q @ffprobe-installer/linux-x64 >/dev/null)
tar -xzf "$WORK"/dl/ffprobe-installer-linux-x64-*.tgz -C "$WORK/dl" package/ffprobe
mv "$WORK/dl/package/ffprobe" "$WORK/home/bin/ffprobe"
chmod +x "$WORK"/home/bin/*
# The CPU side of gpu.sh's alpha check runs on the GPU build's CPU provider.
cpu_ort=$(sed -n 's/^pub const ORT_LIBRARY: &str = "\(.*\)";/\1/p' crates/engine/src/home.rs)
ln -s "cuda/libonnxruntime.so.$ORT_GPU_VERSION" "$WORK/home/lib/$cpu_ort"
cp "$CLEARBG_HOME"/models/*.onnx "$WORK/home/models/"
cp "$CLEARBG_HOME/fixtures/carphone.mp4" "$WORK/home/fixtures/"

# One xz stream per folder, on both cores; then one plain tar of them, cut into equal parts.
for part in bin lib models fixtures; do
    tar -C "$WORK/home" -cf - "$part" | xz -6 -T2 >"$WORK/xz/$part.tar.xz"
done
rm -f "$DIR"/part.*
tar -C "$WORK/xz" -cf "$WORK/bundle.tar" .
split -n "$PARTS" -d -a 2 "$WORK/bundle.tar" "$DIR/part."
cat >"$DIR/unpack.sh" <<'EOF'
#!/usr/bin/env bash
# bash unpack.sh PARTS_DIR HOME: joins PARTS_DIR/part.* and fills HOME (made by bench/gpu-bundle.sh).
set -euo pipefail
parts=$1 home=$2
mkdir -p "$home" "$parts/xz"
cat "$parts"/part.* | tar -x -C "$parts/xz"
for f in "$parts"/xz/*.tar.xz; do
    # Python's tarfile rather than xz(1), which a bare machine may lack.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$f" "$home"
done
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
{ find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null || true; } | sort | paste -sd: >"$home/lib/cuda/library-path"
echo "unpacked into $home; CUDA libraries from: $(cat "$home/lib/cuda/library-path")"
EOF
ls -l "$DIR"
