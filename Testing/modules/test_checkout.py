"""A source checkout works in Slicer by the README's route (the module folders added as additional module paths).

Slicer then puts the module folders on ``sys.path``, not the repository root, so ``scanai`` is not importable; each
module file falls back to the checkout's root (the folder above its own) before ``from scanai import ...``. The test
loads a module file of this checkout in a fresh interpreter where ``scanai`` cannot be imported: ``python -S`` (no
site processing, so the editable install's finder is not installed) with the site-packages folders and ``Testing/``
on ``sys.path`` but no folder that holds ``scanai``, run from an empty folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import slicer_harness

HOME = Path(__file__).resolve().parents[2]
MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]

CHILD = r"""
import importlib.util, json, sys
sys.path.extend(json.loads(sys.argv[1]))
spec = importlib.util.find_spec("scanai")
if spec is not None:
    sys.exit(f"scanai is importable before the module is loaded ({spec.origin}): the test cannot check the fallback")
before = list(sys.path)
import slicer_harness
module = slicer_harness.load_module(sys.argv[2])
import scanai
print(json.dumps({"scanai": scanai.__file__, "mrml": module.mrml.__file__, "added": sys.path[len(before):],
                  "kept": sys.path[:len(before)] == before, "help": module._harness_parent.helpText}))
"""


def _path_without_scanai() -> list[str]:
    """This interpreter's ``sys.path`` less every folder that holds a ``scanai`` package, plus ``Testing/modules/``."""
    paths = []
    for entry in sys.path:
        folder = Path(entry or os.getcwd()).resolve()
        if (folder / "scanai" / "__init__.py").is_file():
            if folder != HOME:
                pytest.skip(f"scanai is installed in {folder} (not editable): no interpreter here lacks it")
            continue
        paths.append(str(folder))
    return [*paths, str(HOME / "Testing" / "modules")]


def _fallback(name: str) -> list[str]:
    """The lines of ``<name>.py`` from the ``find_spec("scanai")`` test to the ``from scanai import`` line."""
    lines = (HOME / name / f"{name}.py").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if 'find_spec("scanai")' in line), None)
    assert start is not None, f"{name}.py has no fallback to the checkout's scanai"
    end = next(i for i, line in enumerate(lines) if line.startswith("from scanai import"))
    assert not any("scanai" in line for line in lines[:start] if "import" in line), "scanai imported before"
    return lines[start:end]


def test_the_fallback_is_the_same_in_every_module_file():
    blocks = {name: _fallback(name) for name in MODULES}
    assert len(blocks["MotionCorrection"]) == 2, blocks["MotionCorrection"]
    assert all(block == blocks["MotionCorrection"] for block in blocks.values()), blocks


@pytest.mark.parametrize("name", MODULES)
def test_a_module_file_of_the_checkout_finds_scanai_beside_it(name, tmp_path):
    if not slicer_harness.available():
        pytest.skip(slicer_harness.SKIP_REASON)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONNOUSERSITE"] = "1"
    result = subprocess.run([sys.executable, "-S", "-c", CHILD, json.dumps(_path_without_scanai()), name],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(loaded["scanai"]).resolve() == HOME / "scanai" / "__init__.py"
    assert Path(loaded["mrml"]).resolve() == HOME / "scanai" / "mrml" / "__init__.py"
    assert loaded["kept"] and loaded["added"] == [str(HOME)], "the checkout's root is appended once, nothing else"
    assert 'href="https://' in loaded["help"]
