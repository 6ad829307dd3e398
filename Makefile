# `make run` and `make test` work on a fresh machine: each sets up what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN_DIR ?= outputs/main

.PHONY: setup data run test test-fast test-slow test-install test-launchers test-slurm test-gpu gpu-bundle fuzz poster slurm-start slurm-stop lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml examples/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,mlflow,wandb]' --config-settings editable_mode=compat
	@# the researcher's own package of docs/your_network.md (its networks, data and configs), used by the tests
	$(BIN)/pip install -q --no-deps -e examples --config-settings editable_mode=compat
	@# the CNN's fused first block, compiled for this CPU now rather than inside a training job
	$(BIN)/python -m nin_cli.nets.conv_block
	touch $(STAMP)

data: setup
	bash scripts/install-fashion-mnist.sh $(BIN)/nin

# The main job: the default config (MLP 1x1024, in-NIN, SGD lr 0.05, batch 128, 10 epochs) on
# Fashion-MNIST, with sigma^2 = 0.01 in the papers' units (sigma = 12.5): the decay phase.
run: data
	$(BIN)/nin train noise.sigma2_paper=0.01 hydra.run.dir=$(RUN_DIR) progress=false
	$(BIN)/nin summarize $(RUN_DIR)

# Two workers, one thread each (two 2-thread processes on 2 cores run several times slower).
# `nin` is forked from a preloaded server in the tests (tests/forkrun.py), not started anew.
# The plugins named, not found: pytest rewrites the asserts of every module of a package that
# registers a plugin (hypothesis, hydra, anyio: 170 modules, 4 s a worker, not cached without
# bytecode); named, only the plugin module is, and hydra's and anyio's plugins are not loaded.
PYTEST := OMP_NUM_THREADS=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/pytest -p xdist -p timeout -p hypothesispytest -q -n 2 --dist worksteal

test: setup
	$(PYTEST)

# The quick loop after a change: the tests that call nin in-process (the e2e ones run nin as a process).
test-fast: setup
	$(PYTEST) -m "not slow and not slurm and not e2e"

test-slow: setup
	$(PYTEST) -m slow

# nin as a user installs it: a wheel built and installed into a fresh environment and driven from
# outside the checkout, and every subcommand as the console script, each a new interpreter (CI runs it).
test-install: setup
	$(PYTEST) -m install

# Sweeps through the launchers whose every job starts a new interpreter (3-4 s of imports each here):
# submitit's local executor (requeues on preemption), the batched local processes, joblib's workers (CI runs it).
test-launchers: setup
	$(PYTEST) -m launchers

# The fuzzer of tests/interface/test_fuzz.py with many more draws (the suite runs 60, and 20 config directories): every draw answered in one line.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz NIN_FUZZ_CONFIGS=400 $(PYTEST) tests/interface/test_fuzz.py

# The GPU check in one call (scripts/test-gpu.sh): tests/train/test_cuda.py, the main job on CUDA, the NIW
# precision table and the bench's GPU rows, as one table (GPU_OUT/report.md). On a machine without
# network access, carry .gpu/ (`make gpu-bundle` here) and run `bash scripts/test-gpu.sh` there.
GPU_OUT ?= outputs/gpu-check
test-gpu:
	@[ -d .gpu/site ] || $(MAKE) setup
	bash scripts/test-gpu.sh $(GPU_OUT)

gpu-bundle: data
	bash scripts/gpu-bundle.sh

# The NINR poster's table (README, docs/ninr/poster_clean.csv): its 54 runs trained and evaluated two at a
# time into outputs/sweeps/poster/, then the table written; hours on 2 cores; run again to resume
# (a complete sweep's records are kept in docs/ninr/poster_runs/ and restored, not retrained).
poster: data
	$(BIN)/python scripts/poster.py

# The SLURM tests, against the one-node cluster of scripts/slurm-local.sh (started if it is not up).
test-slurm: setup slurm-start
	$(BIN)/pytest -q -m slurm

slurm-start:
	bash scripts/slurm-local.sh start

slurm-stop:
	bash scripts/slurm-local.sh stop

lint: setup
	$(BIN)/ruff check nin_cli tests bench hydra_plugins scripts examples
	$(BIN)/ruff format --check nin_cli tests bench hydra_plugins scripts examples

format: setup
	$(BIN)/ruff format nin_cli tests bench hydra_plugins scripts examples
	$(BIN)/ruff check --fix nin_cli tests bench hydra_plugins scripts examples

bench: setup
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
