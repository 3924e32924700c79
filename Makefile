# Two commands from a fresh clone:  make demo  (set up + train + evaluate)  and  make test  (set up + tests).
# torch is pinned here, not in pyproject.toml: torch==2.14.1 with torchvision==0.29.1 is the pair that
# torch-fidelity imports with (research/feasibility.md); an unpinned torch pulls the newest CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test lint demo results clean

EXAMPLE := examples/fewstep-example-plugin

# The example third-party plugin is installed too: the test suite checks it is found and works.
$(VENV)/.installed: pyproject.toml Makefile $(EXAMPLE)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) -e ".[dev]"
	$(PY) -m pip install -q --no-deps -e $(EXAMPLE)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/fewstep train recipes/imm_toy.yaml
	$(VENV)/bin/fewstep eval runs/imm_toy

results: setup
	$(VENV)/bin/fewstep bench recipes/bench_toy.yaml

clean:
	rm -rf $(VENV) runs *.egg-info $(EXAMPLE)/*.egg-info
