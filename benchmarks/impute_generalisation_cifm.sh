#!/usr/bin/env bash
# CIFM only (no SQuINT: --variants none; the baselines are always scored) with the CifmConfig defaults chosen on
# MERFISH Animal 1 in docs/cifm.md ("In-painting held-out patches"): mask_ratio 0.2, 60 epochs, and impute_cells
# decoding the held-out cells ring by ring from the observed ones inward (impute_path "infill"). Run from the
# repository root:
#
#   bash benchmarks/impute_generalisation_cifm.sh            # the three small slides, seeds 0-2 (report only)
#   CHOOSE=1 bash benchmarks/impute_generalisation_cifm.sh   # also MERFISH Animal 1, where the defaults were chosen
#
# Writes docs/results/generalisation_cifm_infill/<dataset>/impute_patches.{json,md}. CIFM runs on one torch thread.
# The figures in that folder were made before CIFM chose its training length by validation (val_frac, 2026-12-08):
# val_frac=0 below reproduces them; VAL_FRAC=0.1 gives today's default.
set -u
D=${SQUINT_DATA:-../shared/data}
OUTDIR=${OUTDIR:-docs/results/generalisation_cifm_infill}
SEEDS=${SEEDS:-3}
run() {  # name file [extra benchmark arguments]
  name=$1; file=$2; shift 2
  echo "== $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  .venv/bin/squint benchmark impute "$D/$file" --sites patches --variants none --first-seed 0 --seeds "$SEEDS" \
     --threads 1 --cifm-option num_threads=1 --cifm-option "val_frac=${VAL_FRAC:-0}" --out "$OUTDIR/$name" \
     --overwrite "$@"
}
if [ -n "${CHOOSE:-}" ]; then
  run merfish_animal1 merfish_hypothalamus_moffitt2018_9sections.h5ad --section Animal1_Bregma_-0.14 \
     --train-sections Animal1_Bregma_-0.19,Animal1_Bregma_-0.14,Animal1_Bregma_-0.09
fi
run merfish_lungcancer merfish_lungcancer_chen2024_tessera_subset.h5ad
run starmap_mpfc starmap_mpfc_wang2018_3sections.h5ad
run osmfish_cortex osmfish_sscortex_codeluppi2018.h5ad
echo ALLDONE
