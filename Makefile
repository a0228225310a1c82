# ScanAI: self-contained set-up. `make test`, `make demo`, `make bench` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch must come first: a bare `torch` requirement pulls several GB of CUDA packages.
TORCH_PIN := torch==2.13.0
DEMO_OUT  ?= demo_output

.PHONY: test demo bench lint train clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -m "not slow" -q

demo: $(VENV)/.installed
	$(VENV)/bin/scanai demo --out $(DEMO_OUT)

bench: $(VENV)/.installed
	$(PY) -m pytest -m slow -q -s Testing

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
