"""The README's k-space "Python" example runs as written, on the shared real data, and finds its spike."""

from __future__ import annotations

import numpy as np
from readme import python_example, run_python_example


def test_readme_python_example_runs(shared_data, capsys):
    code = python_example("K-Space Calibration")
    assert "../shared/data" in code and "read_kspace" in code and "run(" in code
    namespace = run_python_example("K-Space Calibration", shared_data)
    printed = capsys.readouterr().out
    assert "(2, 1, 160, 320)" in printed and "spike sample(s) in the clean scan" in printed
    result = namespace["result"]
    assert result.detection.mask[0, 40, 100] and namespace["image"].shape == (1, 160, 160)
    corrected = namespace["corrected"]
    untouched = ~result.detection.mask[np.newaxis].repeat(corrected.shape[0], axis=0)
    assert (corrected[untouched] == namespace["spiked"][untouched]).all()  # only flagged samples change
