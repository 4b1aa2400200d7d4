# `make demo` and `make test` create the virtual environment when missing, install, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
WAYMO_PROTOS := waymo-open-dataset-tf-2-12-0==1.6.7

.PHONY: install demo test test-fast bench bench-gpu checkpoints checkpoints-hires clean help
help:
	@echo "make demo   - install if needed, run the main job on procedural data -> runs/demo/report.html"
	@echo "make test   - install if needed, run the whole test suite"
	@echo "make bench  - run the benchmarks -> benchmarks/results/*.json and the README table"
	@echo "make bench-gpu - the GPU rows (needs CUDA) -> benchmarks/results/gpu_*.json and the README table"
	@echo "make checkpoints - retrain the shipped tiny camera-view and scene3d checkpoints (about 1 h on 2 cores)"
	@echo "make checkpoints-hires - train the 128x224 camera-view checkpoint into checkpoints/views_hires (not shipped; about 2.5 h on 2 cores)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	# Waymo protos only: the package's own requirements pin TensorFlow and an old numpy.
	$(PIP) install -q --no-deps $(WAYMO_PROTOS)
	$(BIN)/python -c "import bevgen.cli, sim_bridge.scenario, metadrive, nuscenes, torch, pybullet; from waymo_open_dataset.protos import scenario_pb2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bevgen demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	# one BLAS/OpenMP thread per xdist worker: two workers on two cores, no oversubscription
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/run.py --gpu

# The tiny checkpoints in checkpoints/ (used by `make demo`): procedural data -> synthetic cameras ->
# configs/views/tiny.yaml + configs/scene3d/tiny.yaml, seeded, one thread per training process.
checkpoints: $(STAMP)
	$(BIN)/python -m bevgen.pretrained --out checkpoints --work runs/checkpoints

# checkpoints/views_hires: configs/views/hires.yaml on the same frames, one process on every core.
checkpoints-hires: $(STAMP)
	$(BIN)/python -m bevgen.pretrained --hires --out checkpoints --work runs/checkpoints

clean:
	rm -rf runs .pytest_cache
