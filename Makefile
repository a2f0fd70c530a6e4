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
