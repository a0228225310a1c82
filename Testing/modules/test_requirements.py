"""Each module asks for what it uses and nothing else: its ``Resources/requirements.txt`` against the third-party
distributions its self-test makes ScanAI's code import (:mod:`module_imports`, one fresh interpreter per module)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import slicer_harness

slicer_harness.install()

from scanai import mrml  # noqa: E402

MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]
HOME = slicer_harness.HOME
#: What a stock Slicer bundles (the SuperBuild list), and torch, which only the PyTorch extension installs.
BUNDLED = {r.name.lower() for r in mrml.read_requirements(HOME / "Utilities" / "slicer-5.10-python-requirements.txt")}
FROM_PYTORCH_EXTENSION = {"torch"}


def _imports(name: str) -> dict:
    script = HOME / "Testing" / "modules" / "module_imports.py"
    run = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True, timeout=600, cwd=HOME)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", MODULES)
def test_requirements_file_holds_what_the_module_imports_beyond_slicer(name):
    declared = {r.name.lower() for r in mrml.read_requirements(HOME / name / "Resources" / "requirements.txt")}
    found = _imports(name)
    assert found["failed"] == 0
    imported = set(found["distributions"])
    assert imported - BUNDLED - FROM_PYTORCH_EXTENSION <= declared, "imports a package it does not declare"
    assert not declared & (BUNDLED | FROM_PYTORCH_EXTENSION), "never ask for what Slicer or the PyTorch extension gives"
    module = slicer_harness.load_module(name)
    per_format = {dist for dists in getattr(module.__dict__[f"{name}Widget"], "readerPackages", {}).values()
                  for dist in dists}
    assert declared <= imported | per_format, "declares a package nothing needs"
