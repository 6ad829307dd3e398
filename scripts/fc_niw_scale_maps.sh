#!/usr/bin/env bash
# The FC's sigma x NIW-scale maps (docs/ninr.md, "FC, the NIW's initial scale, mapped"): in-NINR
# (nin=input) and full-NINR (nin=all), the comparison's protocol, seeds 0, 1, 2, one map per core,
# one thread each, in the background. Rerun the same command to resume: finished runs are skipped.
#   bash scripts/fc_niw_scale_maps.sh input    # or: all
set -euo pipefail
cd "$(dirname "$0")/.."
placement=${1:?usage: fc_niw_scale_maps.sh input|all}
export OMP_NUM_THREADS=1
exec .venv/bin/nin map +experiment=ninr_comparison "~hydra.sweeper.params.model" "~hydra.sweeper.params.method" model=fc \
  method=custom "nin=$placement" "nin.init=layer,unit,0.01,0.003" precision=fp32 hydra/launcher=batched \
  hydra.sweeper.axis=noise.sigma hydra.sweeper.lo=3 hydra.sweeper.hi=1000 hydra.sweeper.tolerance=3.4 \
  "hydra.sweeper.seeds='0,1,2'" evaluate=false progress=false "hydra.sweep.dir=outputs/sweeps/fc_niw_scale_$placement"
