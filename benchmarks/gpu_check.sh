#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU, in one command from the repository root:
#
#   bash benchmarks/gpu_check.sh [OUT.json]          # default .bench/gpu_check.json
#
# 1. makes .bench/gpu-venv (git-ignored) with a CUDA build of the same torch version as constraints.txt, then the
#    package with constraints.txt (its torch pin replaced by the CUDA build just installed, so pip cannot swap it);
# 2. runs the CUDA tests (tests/train/test_cuda.py: training on the GPU with bf16 autocast and float32
#    likelihoods, checkpoints from the GPU loaded on the CPU) and keeps their result;
# 3. runs the training benchmark on the GPU: MERFISH (49,468 x 135, when ../shared/data holds it) and a synthetic
#    slide of 1,000,000 cells x 500 genes (benchmarks/train_speed.py --device cuda, 3 epochs each);
# 4. runs the in-painting benchmark (paper Table 2 protocol, SQuINT + CIFM + baselines, seed 0) on the GPU on the
#    MERFISH lung tumour slide, to compare with the CPU run of docs/results/generalisation (quality and seconds);
# 5. writes OUT.json: GPU name, driver, CUDA and torch versions, the test outcome and the benchmark figures.
#
# On a machine without a package index (the project's lent H200), skip the venv: GPU_PYTHON names an interpreter
# that already has a CUDA torch, WHEELS a folder of wheels for what it lacks (anndata, scanpy, zarr...; installed
# with --no-index into a temporary folder on PYTHONPATH), SQUINT_DATA the folder holding the .h5ad files; the
# package is then imported from src/. Step 5 (in-painting on the GPU) runs in both modes.
#
# Environment overrides:
#   GPU_PYTHON    an interpreter with a CUDA build of torch (offline mode; no venv, no pip index)
#   WHEELS        folder of wheels to add in offline mode
#   SQUINT_DATA   folder of the shared .h5ad files (default ../shared/data)
#   GPU_WORK      folder for the logs and intermediate files, kept afterwards (default: a temporary one, removed)
#   GPU_VENV      venv path (default <repo>/.bench/gpu-venv; an existing one is reused)
#   TORCH_INDEX   index URL of CUDA wheels (default: the PyPI index, whose Linux torch wheels are CUDA builds;
#                 e.g. https://download.pytorch.org/whl/cu128 for a given CUDA)
#   PYTHON        interpreter for the venv (default python3)
#   EPOCHS        epochs per benchmark case (default 3)
#   SYNTH_CELLS   cells of the synthetic case (default 1000000)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${1:-$REPO/.bench/gpu_check.json}"
VENV="${GPU_VENV:-$REPO/.bench/gpu-venv}"
PYTHON="${PYTHON:-python3}"
EPOCHS="${EPOCHS:-3}"
SYNTH_CELLS="${SYNTH_CELLS:-1000000}"
TORCH_VERSION="$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' constraints.txt | head -1)"
if [[ -n "${GPU_WORK:-}" ]]; then  # kept: logs survive a timeout of the caller
    WORK="$GPU_WORK"; mkdir -p "$WORK"
else
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$(dirname "$OUT")"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "[gpu_check] no NVIDIA GPU visible (nvidia-smi -L failed): nothing to check" >&2
    exit 2
fi

DATA="${SQUINT_DATA:-$REPO/../shared/data}"
export SQUINT_DATA="$DATA"
if [[ -n "${GPU_PYTHON:-}" ]]; then
    VPY="$GPU_PYTHON"
    SITE="$WORK/site"
    if [[ -n "${WHEELS:-}" ]]; then
        "$VPY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    fi
    export PYTHONPATH="$REPO/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "[gpu_check] creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    VPY="$VENV/bin/python"
    INDEX=()
    [[ -n "${TORCH_INDEX:-}" ]] && INDEX=(--index-url "$TORCH_INDEX")
    # no find-links/constraint files of a CPU machine: they would bring the CPU wheel back
    export PIP_FIND_LINKS="" PIP_CONSTRAINT=""
    "$VPY" -m pip install --upgrade pip >/dev/null
    "$VPY" -m pip install "${INDEX[@]}" "torch==${TORCH_VERSION}"
    INSTALLED="$("$VPY" -c 'import torch; print(torch.__version__)')"
    grep -v '^torch==' constraints.txt > "$WORK/constraints.txt"
    echo "torch==${INSTALLED}" >> "$WORK/constraints.txt"
    "$VPY" -m pip install -c "$WORK/constraints.txt" -e ".[testing]"
fi
"$VPY" - <<EOF
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"[gpu_check] torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: install a CUDA build "
             "matching the driver (set TORCH_INDEX, or GPU_PYTHON to an interpreter that has one)")
print(f"[gpu_check] torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

echo "[gpu_check] CUDA tests"
set +e
"$VPY" -m pytest -q -p no:cacheprovider tests/train/test_cuda.py --junitxml "$WORK/cuda_tests.xml" \
    > "$WORK/cuda_tests.log" 2>&1
TEST_RC=$?
set -e
tail -5 "$WORK/cuda_tests.log"

echo "[gpu_check] training benchmark on the GPU (MERFISH when present, ${SYNTH_CELLS} synthetic cells)"
set +e
"$VPY" benchmarks/train_speed.py --device cuda --epochs "$EPOCHS" --cases merfish,synthetic \
    --synthetic-cells "$SYNTH_CELLS" --no-novae --out "$WORK/train_speed.json" > "$WORK/bench.log" 2>&1
BENCH_RC=$?
set -e
tail -5 "$WORK/bench.log"

echo "[gpu_check] in-painting benchmark on the GPU (lung tumour, seed 0, the settings of impute_generalisation.sh)"
LUNG="$DATA/merfish_lungcancer_chen2024_tessera_subset.h5ad"
IMP_RC=-1
if [[ -f "$LUNG" ]]; then
    set +e
    T0=$(date +%s)
    "$VPY" -m napari_squint benchmark impute "$LUNG" --sites patches --epochs 20 --threads 1 --option heads=8 \
        --option lambda_cell=2.0 --variants squint --methods context --first-seed 0 --seeds 1 --out "$WORK/impute" \
        > "$WORK/impute.log" 2>&1
    IMP_RC=$?
    echo "$(( $(date +%s) - T0 ))" > "$WORK/impute_seconds"
    set -e
    tail -3 "$WORK/impute.log"
    [[ -f "$WORK/impute/impute_patches.md" ]] && cp "$WORK/impute/impute_patches.md" "${OUT%.json}_impute.md"
fi

"$VPY" - "$OUT" "$WORK" "$TEST_RC" "$BENCH_RC" "$IMP_RC" <<'EOF'
import json, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path
import torch
out, work, test_rc, bench_rc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
imp_rc = int(sys.argv[5])
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
tests = {"returncode": test_rc, "log_tail": (work / "cuda_tests.log").read_text()[-2000:]}
xml = work / "cuda_tests.xml"
if xml.exists():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
bench = json.loads((work / "train_speed.json").read_text()) if (work / "train_speed.json").exists() else None
res = {"gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_tests": tests,
       "benchmark_returncode": bench_rc, "benchmark": bench,
       "benchmark_log_tail": None if bench_rc == 0 else (work / "bench.log").read_text()[-3000:]}
imp = work / "impute" / "impute_patches.json"
res["impute"] = {"returncode": imp_rc,
                 "wall_s": float((work / "impute_seconds").read_text()) if (work / "impute_seconds").exists() else None,
                 "result": json.loads(imp.read_text()) if imp.exists() else None,
                 "log_tail": None if imp_rc == 0 else ((work / "impute.log").read_text()[-3000:]
                                                       if (work / "impute.log").exists() else "lung slide absent")}
out.write_text(json.dumps(res, indent=2, default=float))
print(f"[gpu_check] wrote {out}")
EOF
[[ $TEST_RC -eq 0 && $BENCH_RC -eq 0 && $IMP_RC -le 0 ]]
