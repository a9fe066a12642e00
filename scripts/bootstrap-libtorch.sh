#!/usr/bin/env bash
# Installs libtorch 2.13.0 (the version tch 0.26 expects) from PyPI into a cache outside the clone
# and prints the directory to use as LIBTORCH. Idempotent: a finished install is reused.
# See ../shared/LIBTORCH.md for why these exact packages.
set -euo pipefail
TORCH_VERSION=2.13.0
CACHE_ROOT="${CONFIDE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/confide}"
DEST="$CACHE_ROOT/libtorch-$TORCH_VERSION"
MARKER="$DEST/.complete"
if [ ! -f "$MARKER" ]; then
  echo "bootstrap-libtorch: installing torch==$TORCH_VERSION (CPU libraries, ~580 MB download) into $DEST" >&2
  rm -rf "$DEST.partial"
  mkdir -p "$DEST.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST.partial" \
    "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2
  rm -rf "$DEST"
  mv "$DEST.partial" "$DEST"
  touch "$MARKER"
fi
test -f "$DEST/torch/lib/libtorch_cpu.so" || { echo "bootstrap-libtorch: $DEST/torch/lib/libtorch_cpu.so missing" >&2; exit 1; }
echo "$DEST/torch"
