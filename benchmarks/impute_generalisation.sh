#!/usr/bin/env bash
# The Table 2 protocol, settings chosen on MERFISH Animal 1 (docs/imputation.md), unchanged on every other dataset.
# Usage: bash benchmarks/impute_generalisation.sh FIRST_SEED N_SEEDS [dataset ...]
# Writes $OUT_ROOT/<dataset>/seeds<FIRST>-<LAST>/impute_patches.{json,md} (OUT_ROOT: docs/results/generalisation).
# EXTRA adds options to every run, e.g. EXTRA="--no-cifm --option calibrate_output=true"
# OUT_ROOT=docs/results/generalisation_calibrated (the validation-chosen output of docs/imputation.md).
set -euo pipefail
FIRST=${1:-0}; N=${2:-1}; shift 2 || true
D=${SQUINT_DATA:-../shared/data}
SQ=${SQUINT:-.venv/bin/squint}
OUT_ROOT=${OUT_ROOT:-docs/results/generalisation}
read -r -a EXTRA <<< "${EXTRA:-}"
# the MERFISH Animal 1 settings of docs/imputation.md (20 epochs, heads=8, lambda_cell=2.0), CIFM with its defaults
COMMON=(--sites patches --epochs 20 --threads 1 --option heads=8 --option lambda_cell=2.0
        --variants squint --methods context --first-seed "$FIRST" --seeds "$N")
run() {  # name file [extra options]
  local name=$1 file=$2; shift 2
  local out=$OUT_ROOT/$name/seeds$FIRST-$((FIRST + N - 1))
  echo "== $name -> $out ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$SQ" benchmark impute "$D/$file" "${COMMON[@]}" "${EXTRA[@]}" --out "$out" "$@"
}
# merfish_animal1 is where the defaults were chosen: its rows are training figures, reported as such
# starmap3d is read in 3D (obsm['spatial_3d'], as its data README says); starmap3d_xy is its (x, y) projection
sets=("${@:-merfish_animal1 lung mpfc osmfish merfish_animal7 starmap3d}")
for s in ${sets[@]}; do
  case $s in
    lung) run merfish_lungcancer merfish_lungcancer_chen2024_tessera_subset.h5ad ;;
    mpfc) run starmap_mpfc starmap_mpfc_wang2018_3sections.h5ad ;;
    osmfish) run osmfish_cortex osmfish_sscortex_codeluppi2018.h5ad ;;
    merfish_animal1) run merfish_animal1 merfish_hypothalamus_moffitt2018_9sections.h5ad \
        --train-sections Animal1_Bregma_-0.19,Animal1_Bregma_-0.14,Animal1_Bregma_-0.09 \
        --section Animal1_Bregma_-0.14 ;;
    merfish_animal7) run merfish_animal7 merfish_hypothalamus_moffitt2018_9sections.h5ad \
        --train-sections Animal7_Bregma_-0.09,Animal7_Bregma_+0.16 --section Animal7_Bregma_-0.09 ;;
    starmap3d) run starmap3d starmap3d_visualcortex_wang2018.h5ad --spatial-key spatial_3d ;;
    starmap3d_xy) run starmap3d_xy starmap3d_visualcortex_wang2018.h5ad ;;
    *) echo "unknown dataset $s" >&2; exit 2 ;;
  esac
done
