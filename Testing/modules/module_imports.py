"""Which third-party distributions ScanAI's own code imports while a module's self-test runs.

    python Testing/modules/module_imports.py MODULE   ->  prints one JSON object: {"module", "distributions", "failed"}

An import counts when the statement that triggers it is in this repository (a module file or ``scanai``), not
when a third-party package imports its own optional extras (pydicom imports tqdm if it is there). Run in a
subprocess so that every module starts from a fresh interpreter.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import sys
import unittest

HOME = pathlib.Path(__file__).resolve().parents[2]
#: The repository's own code: the library and the four module folders.
SOURCES = tuple(str(HOME / folder) + "/" for folder in
                ("scanai", "MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"))


class _ImportRecorder:
    """A meta-path finder that finds nothing and records the top-level names imported from this repository."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(SOURCES):
            self.names.add(name.split(".")[0])
        return None


def third_party_imports(name: str) -> tuple[list[str], int]:
    """(distributions imported by the repository's code while ``name``'s self-tests run, failed test count)."""
    sys.path.insert(0, str(HOME / "Testing" / "modules"))
    import slicer_harness

    slicer_harness.install()
    recorder = _ImportRecorder()
    sys.meta_path.insert(0, recorder)
    module = slicer_harness.load_module(name)
    test_class = getattr(module, f"{name}Test")
    result = unittest.TestResult()
    for method in sorted(m for m in dir(test_class) if m.startswith("test_")):
        test_class(method).run(result)
    sys.meta_path.remove(recorder)
    distributions = importlib.metadata.packages_distributions()
    own = {"scanai", "slicer", "vtk", "vtkmodules", "qt", "ctk", name}
    found = {dist.lower() for top in recorder.names - own if top not in sys.stdlib_module_names
             for dist in distributions.get(top, [top])}
    return sorted(found), len(result.errors) + len(result.failures)


if __name__ == "__main__":
    imported, failed = third_party_imports(sys.argv[1])
    print(json.dumps({"module": sys.argv[1], "distributions": imported, "failed": failed}))
