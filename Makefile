# convzoo: `make demo` and `make test` work on a fresh clone; everything lives in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: setup test test-all demo bench lint clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

# Until training lands (issue: train/eval), the demo shows the parts that exist: the synthetic COCO set
# with its mean-pose floor, block surgery on a pose model, and the block benchmark at small shapes.
demo: setup
	$(BIN)/python tools/make_synth.py --baseline
	$(BIN)/python tools/summary.py configs/models/simplebaseline_r50_coordconv.yaml
	$(BIN)/python tools/bench_blocks.py --quick --out runs/bench_blocks_demo.json

bench: setup
	$(BIN)/python tools/bench_blocks.py --out runs/bench_blocks.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
