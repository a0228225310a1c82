"""The README's PET "Python" example runs as written on the shared PBR28 data, and prints what it says."""

from __future__ import annotations

import re

import numpy as np
from readme import python_example, run_python_example


def test_readme_python_example_runs(shared_data, capsys):
    code = python_example("Parametric PET")
    assert "../shared/data" in code and "fit_tacs" in code and "load_tac_table" in code
    namespace = run_python_example("Parametric PET", shared_data)
    printed = capsys.readouterr().out
    assert re.search(r"\['FC', 'TC', 'STR', 'THA', 'WB', 'CBL'\] \[0\. +0\. +0\.869", printed), printed
    assert re.search(r"THA: VT 3\.0\d\d mL/mL", printed), printed
    fit, logan, bounded = namespace["fit"], namespace["logan"], namespace["bounded"]
    assert fit.r2.min() > 0.95 and np.all(np.isfinite(logan.parameters["VT"]))
    assert float(bounded.parameters["vB"][0]) == 0.03 and "on a bound: True" in printed
    assert abs(float(namespace["delayed"].delay_s[0])) < 5.0 and "input delay" in printed
