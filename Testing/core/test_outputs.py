"""Every ``scanai`` command's output folder is complete or absent (scanai.core.outputs through scanai.cli.main):
checked before computing, never mixed with an earlier run, nothing left by Ctrl-C, SIGTERM or a write error."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scanai import cli
from scanai.kspace import cli as kspace_cli


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".previous-" in p.name]


@pytest.fixture
def spiked(tmp_path) -> Path:
    from scanai.kspace.phantom import make_phantom
    from scanai.kspace.simulate import inject_spikes

    corrupted, _truth = inject_spikes(make_phantom(size=32, n_coils=4).kspace.data, n_events=5, seed=3)
    path = tmp_path / "spiked.npz"
    np.savez(path, kspace=corrupted)
    return path


def test_a_run_writes_a_complete_folder_and_names_it(spiked, tmp_path, capsys):
    out = tmp_path / "results"
    assert cli.main(["kspace", str(spiked), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and ".partial-" not in printed
    assert (out / "corrected.nrrd").is_file() and _leftovers(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # an ordinary folder, not mkdtemp's private one


def test_an_earlier_run_is_refused_or_replaced_whole(spiked, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "logan_VT.nrrd").write_text("an earlier run's map")
    before = _digest(out)
    assert cli.main(["kspace", str(spiked), "--out", str(out)]) == 2
    assert "already holds files" in capsys.readouterr().err and _digest(out) == before
    assert cli.main(["kspace", str(spiked), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "logan_VT.nrrd").exists() and (out / "corrected.nrrd").is_file() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["file", "read-only"])
def test_an_unusable_output_folder_is_refused_before_computing(case, spiked, tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(kspace_cli, "run", lambda args: ran.append(args) or 0)
    if case == "file":
        out = tmp_path / "results"
        out.write_text("not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write to read-only folders")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "results"
    assert cli.main(["kspace", str(spiked), "--out", str(out)]) == 2
    assert ran == [] and ("is a file" in capsys.readouterr().err if case == "file" else True)


def _writes_then_fails(error: BaseException):
    def run(args) -> int:
        (Path(args.out) / "half.nrrd").write_bytes(b"NRRD0004\n")  # a half-written output
        raise error

    return run


@pytest.mark.parametrize(("error", "status", "words"), [
    (KeyboardInterrupt(), 130, "interrupted; nothing was written to"),
    (OSError(28, "No space left on device", "half.nrrd"), 2, "could not be written (half.nrrd): No space left"),
])
def test_an_interrupted_or_failed_run_leaves_nothing(error, status, words, spiked, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    (out / "old.csv").write_text("kept")
    monkeypatch.setattr(kspace_cli, "run", _writes_then_fails(error))
    assert cli.main(["kspace", str(spiked), "--out", str(out), "--overwrite"]) == status
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _digest(out) == {"old.csv": hashlib.sha256(b"kept").hexdigest()} and _leftovers(tmp_path) == []


SLOW_COMMAND = """
import sys, time
from pathlib import Path
from scanai import cli
from scanai.kspace import cli as kspace_cli

def run(args):
    (Path(args.out) / "frame_000.nrrd").write_text("partial")
    print("writing", flush=True)
    time.sleep(60)
    return 0

kspace_cli.run = run
sys.exit(cli.main(["kspace", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_sigterm_ends_a_command_as_ctrl_c_does(spiked, tmp_path):
    out = tmp_path / "results"
    process = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND, str(spiked), str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - started < 5
    assert "interrupted; nothing was written to" in stderr and "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path) == []
