#!/usr/bin/env bash
# Fetch a pinned CUDA 13.0 toolchain (NVRTC, runtime headers, CCCL, ptxas) from PyPI wheels into a
# cache folder outside the repo, and print the environment that the kernel compile check needs.
#
# Usage:   eval "$(scripts/cuda-toolchain.sh)"        # then: make test / cargo test -p ernie-kernels
# Cache:   $ERNIE_CUDA_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/ernie-cuda-13.0
#
# Why 13.0.x exactly: the GPU machine runs driver 580 (CUDA 13.0). PTX from a newer NVRTC carries a
# newer .version that the 580 driver's JIT refuses (CUDA_ERROR_UNSUPPORTED_PTX_VERSION), so the
# NVRTC we compile-check with must be the one the runtime will ship with.
#
# Idempotent: a warm cache (stamp file present, hashes already verified) costs a few stat calls.
# Messages go to stderr; stdout carries only the export lines so `eval` is safe.
set -euo pipefail

CACHE="${ERNIE_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ernie-cuda-13.0}"
# The wheels all unpack into one tree: nvidia/cu13/{bin,include,lib}.
ROOT="$CACHE/root"
HOME_DIR="$ROOT/nvidia/cu13"

# name==version and the sha256 of the manylinux x86_64 wheel, pinned so a re-upload cannot slip in.
WHEELS=(
  "nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
)
# The stamp names every pin, so changing a pin re-runs the unpack.
STAMP_CONTENT="$(printf '%s\n' "${WHEELS[@]}")"
STAMP="$CACHE/.unpacked"

log() { echo "cuda-toolchain: $*" >&2; }

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$STAMP_CONTENT" || ! -x "$HOME_DIR/bin/ptxas" ]]; then
  PYTHON="${PYTHON:-python3}"
  command -v "$PYTHON" >/dev/null || { log "python3 is needed (pip download + zip unpack)"; exit 1; }
  mkdir -p "$CACHE/wheels"
  for entry in "${WHEELS[@]}"; do
    spec="${entry%% *}"
    sha="${entry##* }"
    name="${spec%%==*}"
    version="${spec##*==}"
    file_glob="$CACHE/wheels/${name//-/_}-${version}-"*.whl
    # shellcheck disable=SC2086
    if ! ls $file_glob >/dev/null 2>&1; then
      log "downloading $spec"
      # --platform/--only-binary: fetch the linux x86_64 wheel whatever the local Python is.
      "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 \
        --python-version 3.11 -d "$CACHE/wheels" "$spec" >&2
    fi
    # shellcheck disable=SC2086
    wheel="$(ls $file_glob | head -n1)"
    echo "$sha  $wheel" | sha256sum --check --status \
      || { log "sha256 mismatch for $wheel (expected $sha); delete it and retry"; exit 1; }
  done
  log "unpacking into $ROOT"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  "$PYTHON" - "$ROOT" "$CACHE/wheels" <<'PY'
import os, sys, zipfile, glob, stat
root, wheels = sys.argv[1], sys.argv[2]
for w in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(w) as z:
        for info in z.infolist():
            if ".dist-info/" in info.filename:
                continue
            path = z.extract(info, root)
            # zipfile drops the exec bit; ptxas and friends need it back.
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode)
PY
  chmod +x "$HOME_DIR"/bin/* 2>/dev/null || true
  # cudarc's dynamic loader tries libnvrtc.so.13 (wheel name) and then plain libnvrtc.so; the plain
  # name also serves tools that dlopen the unversioned library.
  ln -sf libnvrtc.so.13 "$HOME_DIR/lib/libnvrtc.so"
  ln -sf libcudart.so.13 "$HOME_DIR/lib/libcudart.so"
  printf '%s\n' "$STAMP_CONTENT" > "$STAMP"
  log "ready: $HOME_DIR"
fi

for need in bin/ptxas lib/libnvrtc.so.13 lib/libnvrtc-builtins.so.13.0; do
  [[ -e "$HOME_DIR/$need" ]] || { log "missing $HOME_DIR/$need; remove $STAMP and rerun"; exit 1; }
done

# stdout: the environment, ready for eval.
echo "export ERNIE_CUDA_HOME='$HOME_DIR'"
echo "export LD_LIBRARY_PATH='$HOME_DIR/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export ERNIE_CUDA_INCLUDE='$HOME_DIR/include'"
