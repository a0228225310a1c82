"""``scanai batch``: manifests of tiny generated studies of every command through local worker processes and through
a ``dask.distributed.LocalCluster`` of 2 worker processes; the combined report equals the one from running each
study alone; a worker killed in the middle of a study (its results written, not yet in place) is retried and leaves
nothing half-written; a re-run skips the completed studies; bad manifests and TLS options are refused at once."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # before any worker starts: workers import it by name
import batch_helpers  # noqa: E402

from scanai.batch.manifest import read_manifest  # noqa: E402
from scanai.batch.report import write_report  # noqa: E402
from scanai.batch.runner import (  # noqa: E402
    StudyTask,
    local_client,
    prepare_output,
    records,
    run_batch,
    run_study,
    security_of,
)
from scanai.cli import command_parser, main  # noqa: E402
from scanai.core.errors import InputError  # noqa: E402

COMMANDS = list(batch_helpers.WRITERS)
#: Columns that differ between runs of the same study (its run time, how often its worker died).
RUN_COLUMNS = ("seconds", "attempts")
EXPECTED_STATUS = {"chest-corrupt": "error", "chest-mixed": "failed"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in RUN_COLUMNS} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    """command -> its manifest of tiny generated studies."""
    folder = tmp_path_factory.mktemp("cohort")
    return {command: batch_helpers.write_studies(command, folder / command) for command in COMMANDS}


@pytest.fixture(scope="module")
def alone(cohort, tmp_path_factory) -> dict[str, list[dict[str, str]]]:
    """command -> the report rows of its studies, each run alone in this process (no Dask)."""
    folder = tmp_path_factory.mktemp("alone")
    rows = {}
    for command, manifest in cohort.items():
        studies = read_manifest(manifest, command, command_parser)
        found = [run_study(StudyTask(s.study_id, command, s.argv, str(folder / command / s.study_id)), main)
                 for s in studies]
        rows[command] = _rows(write_report(found, folder / f"{command}.csv"))
    return rows


@pytest.fixture(scope="module")
def local():
    """The local mode's client: 2 local worker processes."""
    with local_client(2) as client:
        yield client


@pytest.fixture(scope="module")
def cluster():
    """A user's cluster: a LocalCluster of 2 worker processes (Dask's own settings), by its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as running:
        yield running.scheduler_address


# ---------------------------------------------------------------------------------------------- manifest


def test_manifest_columns_become_each_commands_arguments(tmp_path):
    (tmp_path / "d").mkdir()
    manifest = tmp_path / "d" / "m.csv"
    manifest.write_text("\ufeffstudy_id,image,input_function,--method,refine,window,where,vb\n"
                        "s1,pet.nii.gz,blood.csv,2tcm,yes,30;50,PET=a;scan=1,\n\n"
                        "s2,/abs/pet.nii.gz,blood.csv,,no,,,0.05\n")
    first, second = read_manifest(manifest, "pet", command_parser)
    folder = tmp_path / "d"
    assert first.study_id == "s1" and first.row == 2 and second.row == 4
    assert first.argv == (str(folder / "pet.nii.gz"), "--input-function", str(folder / "blood.csv"), "--method",
                          "2tcm", "--refine", "--window", "30", "50", "--where", "PET=a", "--where", "scan=1")
    assert second.argv == ("/abs/pet.nii.gz", "--input-function", str(folder / "blood.csv"), "--vb", "0.05")


@pytest.mark.parametrize("text, words", [
    ("input,backend\na.dcm,classical\n", "no 'study_id' column"),
    ("study_id,input,colour\ns,a.dcm,red\n", "'colour' are not arguments of 'scanai chest'"),
    ("study_id,input,out\ns,a.dcm,x\n", "'out' are not arguments"),
    ("study_id,input\ns,a.dcm\ns,b.dcm\n", "used twice"),
    ("study_id,input\n../up,a.dcm\n", "cannot name a folder"),
    ("study_id,input\nreport.csv,a.dcm\n", "cannot name a folder"),
    ("study_id,input,recursive\ns,a.dcm,maybe\n", "'maybe' in column 'recursive' is not yes or no"),
    ("study_id,input,backend\ns,a.dcm,magic\n", "Row 2 of m.csv (study s): argument --backend: invalid choice"),
    ("study_id,backend\ns,classical\n", "the following arguments are required: input"),
    ("study_id,input\n", "holds no study"),
    ("study_id,input\ns,a.dcm,extra\n", "2 columns"),
])
def test_a_bad_manifest_is_refused_before_anything_runs(tmp_path, capsys, text, words):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=None) as refused:
        read_manifest(manifest, "chest", command_parser)
    assert words in str(refused.value)
    assert main(["batch", "chest", str(manifest), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("scanai batch: ") and error.count("\n") == 1 and words in error
    assert not (tmp_path / "out").exists()


def test_tls_needs_all_three_files_and_a_tls_scheduler(tmp_path, capsys):
    with pytest.raises(InputError, match="--tls-key is missing"):
        security_of(tmp_path / "ca.pem", tmp_path / "cert.pem", None)
    with pytest.raises(InputError, match="do not exist"):
        security_of(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not a certificate\n")
    tls = ["--tls-ca-file", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "cert.pem"),
           "--tls-key", str(tmp_path / "key.pem")]
    cases = [([], "local workers need none"), (["--scheduler", "tcp://127.0.0.1:1"], "is not tls://")]
    for extra, words in cases:
        manifest = tmp_path / "m.csv"
        manifest.write_text("study_id,input\ns1,a.npz\n")
        assert main(["batch", "kspace", str(manifest), "--out", str(tmp_path / "o"), *tls, *extra]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_unrelated_output_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="not a scanai batch's"):
        prepare_output(tmp_path)


# ---------------------------------------------------------------------------------------------- running


def test_local_processes_run_every_command_as_each_study_alone(cohort, alone, local, tmp_path):
    pids = set()
    for command, manifest in cohort.items():
        studies = read_manifest(manifest, command, command_parser)
        out = prepare_output(tmp_path / command)
        done = run_batch(studies, command, out, local, main)
        assert (done.ran, done.skipped, done.retried, done.slots) == (len(studies), 0, 0, 2)
        assert done.wall_s > 0 and done.study_s > 0 and done.overhead_ms >= 0
        found = records(out, studies)
        pids |= {record["pid"] for record in found if "pid" in record}
        assert _rows(write_report(found, out / "report.csv")) == alone[command], command
        for study in studies:
            status = EXPECTED_STATUS.get(study.study_id, "ok")
            assert (out / study.study_id).is_dir() == (status != "error")
        assert not [p for p in out.iterdir() if ".partial-" in p.name]
    assert len(pids) <= 2  # the worker processes live across studies and commands: their model caches persist
    rows = {row["study_id"]: row for row in alone["chest"]}
    assert rows["chest-a"]["status"] == "ok" and rows["chest-a"]["level"] and rows["chest-a"]["images"] == "1"
    assert rows["chest-corrupt"]["exit_code"] == "2" and "not a DICOM file" in rows["chest-corrupt"]["error"]
    assert rows["chest-mixed"]["exit_code"] == "1" and rows["chest-mixed"]["image_errors"] == "1"
    assert {row["status"] for row in alone["pet"] + alone["kspace"] + alone["motion"]} == {"ok"}
    assert [row["selected_items"] for row in alone["motion-correct"]] == ["2;3;4;5", "2;3;4;5"]
    assert [int(row["spike_samples"]) > 0 for row in alone["kspace"]] == [False, True]


def _with_victims(manifest: Path, *victims: str) -> Path:
    """A manifest beside the chest manifest: its header, chest-a's row and copies of it under the ids ``victims``."""
    header, model = manifest.read_text().splitlines()[:2]
    path = manifest.with_name(f"manifest-{'-'.join(victims)}.csv")
    path.write_text("\n".join([header, model] + [model.replace("chest-a,", f"{v},", 1) for v in victims]) + "\n")
    return path


def test_a_killed_worker_is_retried_and_leaves_nothing_half_written(cohort, alone, local, tmp_path):
    manifest = _with_victims(cohort["chest"], "victim-1", "doomed-1")
    studies = read_manifest(manifest, "chest", command_parser)
    out = prepare_output(tmp_path / "out")
    done = run_batch(studies, "chest", out, local, batch_helpers.kill_some, retries=1)
    assert done.retried == 2 and (tmp_path / "out-victim-1.killed").is_file()
    found = {record["study_id"]: record for record in records(out, studies)}
    assert found["victim-1"]["status"] == "ok" and found["victim-1"]["attempts"] == 2
    victim = _rows(write_report([found["victim-1"]], tmp_path / "victim.csv"))[0]
    assert victim == {**alone["chest"][0], "study_id": "victim-1"}  # the same results as chest-a
    # a study whose worker dies every time: an error after 1 + retries attempts, nothing written; the others go on
    assert found["doomed-1"]["status"] == "error" and "died 2 time(s)" in found["doomed-1"]["error"]
    assert found["chest-a"]["status"] == "ok" and found["chest-a"]["attempts"] == 1
    assert not (out / "doomed-1").exists()
    assert not [p for p in out.iterdir() if ".partial-" in p.name or ".previous-" in p.name]


def test_cluster_runs_every_command_resumes_and_skips_completed_studies(cohort, alone, cluster, tmp_path, capfd):
    for command, manifest in cohort.items():
        out = tmp_path / command
        code = main(["batch", command, str(manifest), "--out", str(out), "--scheduler", cluster])
        assert code == (1 if command == "chest" else 0)
        assert _rows(out / "report.csv") == alone[command], command
        assert (out / "summary.png").stat().st_size > 5000
    printed = capfd.readouterr()
    inputs = next(iter(cohort.values())).parent.parent
    for name in (str(inputs), "a.dcm", "corrupt.dcm", "dynamic.nii", "plasma.csv", "spiked.npz", "cine.seq", "phase0"):
        assert name not in printed.out + printed.err, name  # the runner shows study ids, never input paths
    assert "chest-corrupt: error (see report.csv)" in printed.err and "2 worker(s), 1 study(ies)" in printed.err
    # a re-run skips every completed study and gives the same report
    chest = tmp_path / "chest"
    assert main(["batch", "chest", str(cohort["chest"]), "--out", str(chest), "--scheduler", cluster]) == 1
    assert "3 done earlier (skipped), 1 run" in capfd.readouterr().out  # the study that could not run is tried again
    assert _rows(chest / "report.csv") == alone["chest"]


def test_local_mode_from_the_command_line(cohort, alone, tmp_path, capsys):
    out = tmp_path / "pet"
    assert main(["batch", "pet", str(cohort["pet"]), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr()
    assert "1 worker(s), 1 study(ies) at a time each" in printed.err and "scanai batch pet" in printed.err
    assert "2 studies: 2 ok; 0 done earlier (skipped), 2 run" in printed.out
    assert _rows(out / "report.csv") == alone["pet"]


def test_without_dask_the_batch_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    from scanai import cli as main_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study_id,image\na,missing.png\n")
    assert main_cli.main(["batch", "chest", str(manifest), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'dask[distributed]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
