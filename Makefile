# ScanAI: self-contained set-up. `make test`, `make demo`, `make bench` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch must come first: a bare `torch` requirement pulls several GB of CUDA packages.
TORCH_PIN := torch==2.13.0
DEMO_OUT  ?= demo_output

# Stock-Slicer check: .venv-slicer/ holds only what a stock 3D Slicer 5.10 bundles in its Python, plus
# slicer-core (Slicer's MRML core as a wheel, same spec as pyproject's [test] extra, with the vtk wheel it
# pins), pytest and coverage; scanai goes in with --no-deps. No torch, twixtools, h5py, tqdm, matplotlib or
# scikit-image, as in a real Slicer. The list, with its sources, is $(SLICER_REQS): repository Slicer/Slicer,
# SuperBuild/External_python-*.cmake (numpy, scipy, SimpleITK, dicom, requests, extension-manager,
# extension-manager-ssl, pythonqt requirements) as of tag v5.10.0 (Python 3.12 set of June 2025).
SLICER_VENV  := .venv-slicer
SLICER_PY    := $(SLICER_VENV)/bin/python
SLICER_REQS  := Utilities/slicer-5.10-python-requirements.txt
SLICER_PIP   := pip==25.1.1
# Slicer 5.10 runs Python 3.12: use it where this machine has it (needs >= 3.11 for tomllib below).
SLICER_PYTHON ?= $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || echo $(PYTHON))
SLICER_TESTS ?= Testing/modules/test_modules.py Testing/modules/test_widgets.py Testing/modules/test_responsiveness.py \
	Testing/modules/test_sample_data.py Testing/modules/test_mrml.py Testing/core/test_jobs.py

.PHONY: test demo bench lint train clean test-slicer

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# --no-deps everywhere but pytest/coverage: vtk's wheel requires matplotlib, which Slicer does not bundle.
$(SLICER_VENV)/.installed: $(SLICER_REQS) pyproject.toml Makefile
	rm -rf $(SLICER_VENV)
	$(SLICER_PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_PY) -m pip install --quiet '$(SLICER_PIP)'
	$(SLICER_PY) -m pip install --quiet --no-deps -r $(SLICER_REQS)
	$(SLICER_PY) -m pip install --quiet --no-deps "$$($(SLICER_PY) -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"] if r.startswith("slicer-core")))')"
	$(SLICER_PY) -m pip install --quiet --no-deps "$$($(SLICER_PY) -c 'from importlib.metadata import requires; print(next(r for r in requires("slicer-core") if r.startswith("vtk")))')"
	$(SLICER_PY) -m pip install --quiet pytest coverage
	$(SLICER_PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The modules' self-tests and widgets in the stock-Slicer environment, and the widgets' statement coverage
# (Utilities/widget_coverage.py: the four *Widget classes and the shared widget code of scanai/mrml/, >= 95 %).
WIDGET_FILES := */ChestQC.py,*/ParametricPET.py,*/KSpaceCalibration.py,*/MotionCorrection.py,*/scanai/mrml/*.py
test-slicer: $(SLICER_VENV)/.installed
	SCANAI_STOCK_SLICER=1 $(SLICER_PY) -m coverage run --data-file=.coverage.widgets --include='$(WIDGET_FILES)' \
		-m pytest -q -m "not slow" $(SLICER_TESTS)
	$(SLICER_PY) Utilities/widget_coverage.py --data-file .coverage.widgets --fail-under 95

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -m "not slow" -q
	$(MAKE) test-slicer

# The Slicer-view screenshots render offscreen through EGL (Mesa); as root on Debian/Ubuntu the EGL driver is
# installed when VTK finds none.
demo: $(VENV)/.installed
	$(VENV)/bin/scanai demo --out $(DEMO_OUT)
	@$(PY) -c "import sys; sys.path.insert(0, 'Testing/modules'); import slicer_views; sys.exit(not slicer_views.offscreen_rendering_available()[0])" \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -qq && apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri; }
	$(PY) Utilities/slicer_screenshots.py --out $(DEMO_OUT)/slicer_views

# The peer tools the benchmarks compare with (not needed by ScanAI or its tests): nifti_dynamic's Patlak needs
# only nibabel, indexed_gzip and scikit-learn of its requirements (its opencv, rich and typer serve its own CLI).
BENCH_PEERS := nibabel indexed_gzip scikit-learn
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet $(BENCH_PEERS) && $(PY) -m pip install --quiet --no-deps nifti_dynamic==0.3.1
	$(PY) -m pytest -m slow -q -s Testing

clean:
	rm -rf $(VENV) $(SLICER_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
