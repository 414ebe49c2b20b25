# typoattack developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CI_OUT ?= /tmp/typoattack-ci-run

.PHONY: help install test test-fast reproduce-ci ci-run bench bench-masks gpu-check train-reader clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

# constraints.txt pins the exact versions that reproduce results/; pyproject.toml holds the ranges.
# setuptools is installed too: tests/test_wheel.py builds the wheel without build isolation.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt setuptools
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ray,transformers]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install typoattack with the exact versions of constraints.txt

test: $(STAMP) ## Install if needed, check the import layers, then run the whole test suite (CI runs this)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP) ## Run the tests that take seconds (skips the end-to-end CI reproduction)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra -m "not slow"

.PHONY: lint-imports
lint-imports: $(STAMP) ## Check the layers of the package (import-linter contracts in pyproject.toml)
	$(BIN)/lint-imports

ci-run: $(STAMP) ## Run the CI reproduction (the demo model, 500 shipped images) into $(CI_OUT)
	$(BIN)/typoattack eval --config ci --out $(CI_OUT) --overwrite

reproduce-ci: $(STAMP) ## Regenerate the reference tables in results/ci/ from the built-in config ci
	$(BIN)/typoattack eval --config ci --out $(CI_OUT) --overwrite
	cp $(CI_OUT)/per_word.csv $(CI_OUT)/confusion.csv $(CI_OUT)/per_word.md results/ci/

bench: $(STAMP) ## Run the pipeline benchmark (tiny model, 500 shipped images, 9 words)
	$(BIN)/python benchmarks/pipeline.py

bench-masks: $(STAMP) ## Time the text-mask solver over the 1000 ImageNet class names (paper8 and random)
	$(BIN)/python benchmarks/masks.py

.PHONY: bench-threshold
bench-threshold: $(STAMP) ## threshold (grid 5 + 8 steps) against a 13-fraction eval sweep: time and agreement (500 shipped images)
	$(BIN)/python benchmarks/threshold.py

.PHONY: bench-executors
bench-executors: $(STAMP) ## Wall time of the CI config locally, on a local Ray cluster and as 2 shards + merge
	$(BIN)/python benchmarks/executors.py

.PHONY: bench-scale
bench-scale: $(STAMP) ## report and merge on fabricated runs of 1 M and 10 M records (100 M: see benchmarks/README.md)
	$(BIN)/python benchmarks/scale.py --records 1000000 --shards 8
	$(BIN)/python benchmarks/scale.py --records 10000000 --shards 8

.PHONY: bench-vlm
bench-vlm: $(STAMP) ## Likelihood scoring vs a SCAM-style generate loop on a tiny LLaVA (CPU): speed-up and agreement
	$(BIN)/python benchmarks/vlm.py

gpu-check: $(STAMP) ## On a CUDA machine: CUDA tests, CPU/GPU agreement, GPU speed and MFU, OOM halving (one table)
	$(BIN)/python benchmarks/gpu_check.py --out $(or $(GPU_CHECK_OUT),/tmp/typoattack-gpu-check)

train-reader: $(STAMP) ## Retrain the demo model typoattack-reader-tiny (about 35 minutes on 2 cores; CI never does)
	$(BIN)/python training/train_reader.py

clean: ## Remove the virtual environment and caches made by the tests
	rm -rf $(VENV) .pytest_cache
