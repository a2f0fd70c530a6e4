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

# The main job: generate the synthetic COCO-format set (cached), train SimpleBaseline + CoordConv on it,
# evaluate the best checkpoint with COCOeval (GT boxes, then the synthetic detector's boxes), draw predictions.
DEMO := runs/demo
demo: setup
	$(BIN)/python tools/make_synth.py --baseline
	rm -rf $(DEMO)
	$(BIN)/python tools/train.py configs/pose_coordconv.yaml train.run_dir=$(DEMO) train.progress_bar=false
	$(BIN)/python tools/eval.py --checkpoint $(DEMO)/checkpoints/best.ckpt --out $(DEMO)/results.json
	$(BIN)/python tools/eval.py --checkpoint $(DEMO)/checkpoints/best.ckpt \
		--det-boxes "$$($(BIN)/python -c 'from data import ensure_synthetic; print(ensure_synthetic().val_detections)')"
	$(BIN)/python tools/visualize.py configs/pose_coordconv.yaml --results $(DEMO)/results.json --out $(DEMO)/vis

bench: setup
	$(BIN)/python tools/bench_blocks.py --out runs/bench_blocks.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
