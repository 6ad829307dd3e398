#!/usr/bin/env bash
# What `make test-gpu` needs on a GPU machine that reaches no package registry, gathered into .gpu/
# (git-ignored, about 35 MB): the pure-Python packages nin uses beyond what such a machine has
# (Hydra, OmegaConf, ANTLR's runtime, submitit and Hydra's joblib and submitit launchers) from this
# checkout's .venv, and Fashion-MNIST's four files. Carry .gpu/ with the tree; scripts/test-gpu.sh
# finds it there.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .gpu && mkdir -p .gpu/site/hydra_plugins .gpu/fashion-mnist
for pkg in hydra omegaconf antlr4 submitit; do cp -r "$site/$pkg" .gpu/site/; done
for plugin in hydra_joblib_launcher hydra_submitit_launcher; do cp -r "$site/hydra_plugins/$plugin" .gpu/site/hydra_plugins/; done
find .gpu -name __pycache__ -prune -exec rm -rf {} +
data=/usr/share/datasets/fashion-mnist
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "gpu-bundle: Fashion-MNIST is not in $data (make data)"; exit 1; }
cp "$data"/*.gz .gpu/fashion-mnist/
du -sh .gpu
