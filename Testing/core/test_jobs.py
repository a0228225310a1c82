"""The job protocol (scanai.core.jobs): what crosses to a worker comes back equal, progress streams, the library's
errors keep their class and message, a crash says so, Cancel kills the worker, and a result is whole or absent."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scanai.core import jobs
from scanai.core.errors import Cancelled, FileFormatError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import CancelToken, Progress


def _roundtrip(value, tmp_path: pathlib.Path):
    jobs.save(value, tmp_path, "value")
    return jobs.load(tmp_path, "value")


def test_library_values_cross_unchanged(tmp_path):
    from scanai.chest.detection import Box

    geometry = Geometry(spacing_mm=(0.5, 0.7, 2.0), origin_mm=(1.0, -2.0, 3.0))
    sequence = VolumeSequence(np.arange(24, dtype=np.float32).reshape(2, 1, 3, 4), geometry, (0.0, 1.5), "time", "s")
    value = {"sequence": sequence, "box": Box(1, 2, 3, 4), "path": pathlib.Path("/tmp/x.dat"), 7: (1, "a", None),
             "nan": math.nan, "flags": [True, np.float32(2.5)], "volume": Volume(np.ones((1, 2, 2)), geometry)}
    back = _roundtrip(value, tmp_path)
    assert back["box"] == Box(1, 2, 3, 4) and isinstance(back["box"], Box)
    assert back["path"] == pathlib.Path("/tmp/x.dat") and back[7] == (1, "a", None) and math.isnan(back["nan"])
    assert back["flags"] == [True, 2.5]
    np.testing.assert_array_equal(back["sequence"].frames, sequence.frames)
    assert back["sequence"].frames.dtype == np.float32 and back["sequence"].index_values == (0.0, 1.5)
    assert back["sequence"].geometry == geometry and isinstance(back["volume"], Volume)


def test_only_the_librarys_own_classes_cross(tmp_path):
    with pytest.raises(TypeError, match="cannot carry"):
        jobs.save({"x": object()}, tmp_path, "value")
    with pytest.raises(TypeError, match="cannot carry"):
        jobs.save(subprocess.CompletedProcess([], 0), tmp_path, "value")
    (tmp_path / "evil.json").write_text(json.dumps({"__dataclass__": "subprocess:CompletedProcess", "fields": {}}))
    np.savez(tmp_path / "evil.npz")
    with pytest.raises(TypeError, match="cannot rebuild"):
        jobs.load(tmp_path, "evil")
    with pytest.raises(ValueError, match="unknown job"):
        jobs.write_job(tmp_path, "os.system", {})


def test_a_worker_streams_progress_and_returns_the_result():
    from scanai.kspace.phantom import make_phantom
    from scanai.kspace.pipeline import run

    kspace = make_phantom(size=32, n_coils=4).kspace
    reports = []
    result = jobs.run_worker("kspace.run", {"kspace": kspace, "detector": "classical"},
                             Progress(lambda f, m: reports.append((f, m))))
    expected = run(kspace, "classical")
    np.testing.assert_array_equal(result.original.array, expected.original.array)
    assert reports and reports[-1][0] == pytest.approx(1.0) and all(isinstance(m, str) for _, m in reports)


def test_library_errors_keep_their_class_and_words(tmp_path):
    with pytest.raises(FileFormatError) as caught:
        jobs.run_worker("kspace.file", {"path": tmp_path / "missing.dat"})
    assert "missing.dat" in str(caught.value) and caught.value.action


def test_a_crash_is_reported_with_the_workers_output(tmp_path):
    with pytest.raises(RuntimeError, match="worker stopped with status 1"):
        jobs.run_worker("kspace.run", {"kspace": "not k-space", "detector": "classical", "no_such_option": 1})


def test_cancel_kills_the_worker_and_leaves_no_result(tmp_path):
    from scanai.kspace.phantom import make_phantom

    token, seen = CancelToken(), []

    def report(fraction: float, message: str) -> None:
        seen.append(fraction)
        token.cancel()

    launched = []

    def launch(command, environment):
        launched.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))
        return launched[-1]

    with pytest.raises(Cancelled):
        jobs.run_worker("kspace.run", {"kspace": make_phantom(size=64, n_coils=8).kspace, "detector": "classical"},
                        Progress(report, token), launch=launch, folder=tmp_path)
    assert launched[0].poll() is not None and seen and not (tmp_path / "result.json").exists()


def test_the_worker_command_runs_a_job_folder(tmp_path):
    from scanai.kspace.phantom import make_phantom

    jobs.write_job(tmp_path, "kspace.run", {"kspace": make_phantom(size=16, n_coils=2).kspace, "detector": "classical"})
    run = subprocess.run(jobs.worker_command(tmp_path), env=jobs.worker_environment(), capture_output=True, text=True,
                         timeout=300)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0 and lines[-1] == {"done": True} and "progress" in lines[0]
    assert jobs.load(tmp_path, "result").original.array.shape[1:] == (16, 16)
    assert subprocess.run([sys.executable, "-m", "scanai.core.jobs"], capture_output=True).returncode == 64
    from scanai.cli import main

    assert main(["job", str(tmp_path)]) == 0  # the CLI serves the same protocol
