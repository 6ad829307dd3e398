#!/usr/bin/env bash
# make test-gpu: the whole GPU check in one call (about 6 minutes on one H200): tests/train/test_cuda.py
# and the probe's GPU test, the main job on CUDA (make run's), the NIW precision table and the bench's
# GPU rows, then one table of all of it (scripts/gpu_report.py). Works in a checkout with its .venv, and on a machine
# without network access from a tree carrying .gpu/ (scripts/gpu-bundle.sh) and a python3 with torch.
#   bash scripts/test-gpu.sh [OUTPUT_DIR]      # default outputs/gpu-check
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/gpu-check}
mkdir -p "$out"
if [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
  export PYTHONPATH="$PWD:$PWD/examples:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
  data=/usr/share/datasets/fashion-mnist
  if [ ! -f "$data/train-images-idx3-ubyte.gz" ] && [ -d .gpu/fashion-mnist ]; then mkdir -p "$data" && cp .gpu/fashion-mnist/*.gz "$data/"; fi
fi
export PYTHONUNBUFFERED=1
$py -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "test-gpu: torch sees no CUDA device here")' || exit 1
$py -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())' | tee "$out/device.txt"
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$out/steps.txt"; }
: >"$out/steps.txt"
step cuda_tests 240 $py -m pytest -q -p no:cacheprovider -o addopts= tests/train/test_cuda.py \
  tests/probe/test_probe.py::test_on_a_gpu_the_probes_step_never_waits_on_the_device \
  tests/probe/test_probe.py::test_a_loop_in_half_precision_autocast_trains_the_niws_as_in_float32 \
  tests/nets/test_cnin.py::test_the_probes_niw_gradient_at_a_convolutions_input_is_autograds --junitxml="$out/cuda_tests.xml"
rm -rf "$out/main"
step main_job 120 $py -m nin_cli train noise.sigma2_paper=0.01 device=cuda progress=false "hydra.run.dir=$out/main"
step main_summary 60 $py -m nin_cli summarize "$out/main" --format markdown
step precision 150 $py bench/niw_precision.py --steps 100
step bench_mlp 240 $py bench/speed.py --device cuda --settings fig1 fig3 --ks 64 --repeats 2
step bench_cnn 150 $py bench/speed.py --device cuda --settings cnn --ks 64 --repeats 2 --train-size 10000
$py scripts/gpu_report.py "$out" | tee "$out/report.md"
