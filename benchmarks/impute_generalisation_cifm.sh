#!/usr/bin/env bash
# CIFM only (no SQuINT: --variants none), with the mask ratio and a longer training that docs/cifm.md found better
# on MERFISH Animal 1 (mask_ratio 0.2; 60 epochs), on the three small shared slides, seed 0. Run from the repository
# root; writes docs/results/generalisation_cifm_mask20_e60/<dataset>/impute_patches.{json,md}.
set -u
D=../shared/data
for pair in merfish_lungcancer:merfish_lungcancer_chen2024_tessera_subset.h5ad starmap_mpfc:starmap_mpfc_wang2018_3sections.h5ad osmfish_cortex:osmfish_sscortex_codeluppi2018.h5ad; do
  name=${pair%%:*}; file=${pair#*:}
  echo "== $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  .venv/bin/squint benchmark impute $D/$file --sites patches --variants none --first-seed 0 --seeds 1 --threads 1 \
     --cifm-option mask_ratio=0.2 --cifm-option epochs=60 --out docs/results/generalisation_cifm_mask20_e60/$name
done
echo ALLDONE
