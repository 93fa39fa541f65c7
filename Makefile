# The two quick-start commands: `make run` and `make test` (each sets up first when needed).
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# on a machine without a local CPU wheel (a bare `torch` from PyPI is the CUDA build on Linux).
TORCH_PIP_ARGS ?=

.PHONY: setup run test test-fast lint imports bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, so nothing that depends on torch can pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,onnx,tune,transfer,boost,explain,clean,prune,ray,s3]'
	touch $@

run: setup
	$(VENV)/bin/tidian run --report report.html

test: setup
	$(PY) -m pytest -q

# The fast part: everything but the whole-pipeline runs (marked slow).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The layer contract in pyproject.toml ([tool.importlinter]).
imports: setup
	$(VENV)/bin/lint-imports

lint: imports
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: setup
	$(PY) bench/loop_overhead.py
	$(PY) bench/digits.py
	$(PY) bench/seed_parallel.py
	$(PY) bench/gate_calibration.py
	$(PY) bench/cv_coverage.py
	$(PY) bench/tune_overhead.py
	$(PY) bench/tune_samplers.py
	$(PY) bench/tune_mnist1d.py
	$(PY) bench/mnist1d_paper.py
	$(PY) bench/deep_compression.py
	$(PY) bench/compression_techniques.py
	$(PY) bench/hinton_mnist1d.py
	$(PY) bench/ensembles.py
	$(PY) bench/augment_mnist1d.py
	$(PY) bench/label_noise.py
	$(PY) bench/tabular.py
	$(PY) bench/tree_families.py
	$(PY) bench/vs_autogluon.py
	$(PY) bench/text_transfer.py
	$(PY) bench/scale_out.py
	$(PY) bench/prune_vs_torch_pruning.py
	$(PY) bench/faults.py
	$(PY) bench/csv_load.py
	$(PY) bench/fuzz.py
	$(PY) bench/startup.py
