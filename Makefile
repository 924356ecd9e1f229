# The README's two commands: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-gpu install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch/torchvision pinned first so pip resolves them from the local wheel cache when present
	$(BIN)/pip install "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cifar-tui

# Three pytest-xdist workers (the waiting tests leave CPU to a third), a test file each at a time (module
# fixtures trained once), the longest files first (tests/support/file_order.py); about 7 min on 2 cores.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The GPU suite (tests/gpu): the CUDA paths for real. Without a CUDA device it fails (make test skips it).
test-gpu: $(STAMP)
	CIFAR_TUI_REQUIRE_GPU=1 $(BIN)/python -m pytest -q -m gpu tests/gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
