# convzoo: `make demo` and `make test` work on a fresh clone; everything lives in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: setup kernels test test-kernels test-all demo bench lint clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,export]"
	touch $(STAMP)

# The compiled CPU kernels (convblocks/kernels/csrc) build once per machine, into TORCH_EXTENSIONS_DIR (1-7 min on 2 cores).
kernels: setup
	$(BIN)/python -c "from convblocks.kernels import cpu_ext; assert cpu_ext.extension() is not None, 'build failed'"

# `make test` tests the compiled kernels only where they are built already; otherwise the pure-PyTorch paths
# (its header says so). `make test-kernels` builds and tests them; `make test-all` runs everything, slow included.
test: setup
	$(BIN)/python -m pytest -q

test-kernels: kernels
	$(BIN)/python -m pytest -q -m "kernels and not slow"

test-all: kernels
	$(BIN)/python -m pytest -q -m ""

# The main job: generate the synthetic COCO-format set the baseline recipe trains on (cached), train it,
# evaluate the best checkpoint with COCOeval (GT boxes, then the synthetic detector's boxes), draw predictions.
DEMO := runs/demo
DEMO_CFG := configs/pose_baseline.yaml
demo: setup
	$(BIN)/python tools/make_synth.py $(DEMO_CFG) --baseline
	rm -rf $(DEMO)
	$(BIN)/python tools/train.py $(DEMO_CFG) train.run_dir=$(DEMO) train.progress_bar=false
	$(BIN)/python tools/eval.py --checkpoint $(DEMO)/checkpoints/best.ckpt --out $(DEMO)/results.json
	$(BIN)/python tools/eval.py --checkpoint $(DEMO)/checkpoints/best.ckpt \
		--det-boxes "$$($(BIN)/python tools/make_synth.py $(DEMO_CFG) | sed -n 's/^  val detections: //p')"
	$(BIN)/python tools/visualize.py $(DEMO_CFG) --results $(DEMO)/results.json --out $(DEMO)/vis

bench: setup
	$(BIN)/python tools/bench_blocks.py --out runs/bench_blocks.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
