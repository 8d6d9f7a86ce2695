#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages for a virtual display,
# a virtual environment in .venv, torch (CPU build, pinned) then the package.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
libxcb-xkb1 libxcb-randr0 libxcb-shape0 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0 libgl1 libegl1 \
libfontconfig1 libdbus-1-3 libglib2.0-0"
if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q libxcb-cursor; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing system packages for Xvfb and Qt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PKGS >/dev/null
  else
    echo "[setup] warning: cannot install $APT_PKGS (not root or no apt-get); napari tests will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[napari,testing]"
echo "[setup] ready: $(.venv/bin/python -c 'import torch, napari_squint; print("torch", torch.__version__, "napari-squint", napari_squint.__version__)')"
