#!/usr/bin/env bash
# Create an isolated virtual environment for the Novae peer benchmark.
#
#   bash benchmarks/novae_setup.sh
#
# Result: <repo>/.bench/novae-venv (git-ignored) with torch==2.13.0 (CPU build)
# and `novae` installed against a constraints file that pins that torch, so pip
# can never replace it with a CUDA build. Idempotent: re-running reuses the venv
# and pip skips what is already satisfied.
#
# Environment overrides:
#   NOVAE_VENV     venv path            (default: <repo>/.bench/novae-venv)
#   NOVAE_VERSION  novae version spec   (default: empty = newest on the index, e.g. "==1.1.2")
#   TORCH_VERSION  pinned torch         (default: 2.13.0)
#   PYTHON         interpreter for venv (default: python3)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NOVAE_VENV:-$REPO_ROOT/.bench/novae-venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
NOVAE_VERSION="${NOVAE_VERSION:-}"
PYTHON="${PYTHON:-python3}"

start=$(date +%s)

mkdir -p "$(dirname "$VENV")"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[novae_setup] creating venv at $VENV"
    "$PYTHON" -m venv "$VENV"
else
    echo "[novae_setup] reusing venv at $VENV"
fi

VPY="$VENV/bin/python"

CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"

# Local CPU wheels live in /opt/wheels on these machines (pip's global config
# also points there); pass it explicitly when present so the script does not
# depend on that config.
FIND_LINKS=()
if [[ -d /opt/wheels ]]; then
    FIND_LINKS=(--find-links /opt/wheels)
fi

# 1) torch first, pinned (CPU build from /opt/wheels).
"$VPY" -m pip install "${FIND_LINKS[@]}" "torch==${TORCH_VERSION}"

# 2) novae with the torch pin as a constraint (no extras: they could pull
#    another torch).
"$VPY" -m pip install "${FIND_LINKS[@]}" -c "$CONSTRAINTS" "novae${NOVAE_VERSION}"

# Sanity: torch must still be the pinned CPU build.
"$VPY" - <<EOF
import importlib.metadata as md, sys
import torch
tv = md.version("torch")
if not tv.startswith("${TORCH_VERSION}"):
    sys.exit(f"torch {tv} installed, expected ${TORCH_VERSION}")
print(f"[novae_setup] torch {tv} (cuda build: {torch.version.cuda})")
print(f"[novae_setup] novae {md.version('novae')}")
EOF

end=$(date +%s)
echo "[novae_setup] done in $((end - start)) s; activate with: source $VENV/bin/activate"
