"""Run a command over many studies on Dask workers: each study's work (its command line: paths and options, never
its data) goes to a worker process, which runs the command as ``scanai COMMAND ... --out DIR/<study_id>`` would.

- One study at a time per worker (one thread per worker process): a worker's memory is one study's plus the
  models it has loaded, and Dask's nanny restarts a worker that passes its memory limit.
- Worker processes live for the whole batch, so each module's model cache (``scanai.core.catalog.
  load_shipped_model``) loads a network once per worker, not once per study.
- Each study's outcome is a record, ``DIR/.batch/<study_id>.json`` (written under a temporary name and renamed):
  status ``ok`` (exit status 0), ``failed`` (exit status 1: the command finished and wrote its output but reports
  failed items, e.g. an unreadable image of a chest folder) or ``error`` (exit status 2, a crash, or a worker that
  died more than ``retries`` times: no output folder). A study whose record says ``ok`` or ``failed`` for the same
  command line and whose output folder exists is skipped on a re-run; any other study is run again.
- A study's output folder is complete or absent (:mod:`scanai.core.outputs`): a worker killed in the middle leaves
  only a hidden ``.<study_id>.partial-*`` folder, removed at the end of the batch, and the study is retried.
- The runner prints study ids, statuses and counts only: no path, no file name, nothing from the images.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanai.batch.manifest import Study
from scanai.batch.report import headline
from scanai.core.errors import InputError

#: Hidden folder of ``DIR`` that holds one record per study (study ids cannot start with a dot).
RECORDS = ".batch"
#: Statuses of a study whose output folder is complete (skipped on a re-run).
COMPLETE = ("ok", "failed")
#: Longest error text kept in a record.
MAX_ERROR = 500


@dataclass(frozen=True)
class StudyTask:
    """What a worker receives for one study: the command, its arguments and the output folder (absolute)."""

    study_id: str
    command: str
    argv: tuple[str, ...]
    out: str


@dataclass(frozen=True)
class BatchRun:
    """What :func:`run_batch` did: ``ran`` and ``skipped`` study counts, ``retried`` resubmissions after a worker
    died, ``wall_s`` from the first submission to the last result, ``study_s`` the sum of the studies' own run
    times (measured in the workers) and ``slots`` the studies the cluster runs at once."""

    ran: int
    skipped: int
    retried: int
    wall_s: float
    study_s: float
    slots: int

    @property
    def overhead_ms(self) -> float:
        """Scheduling overhead per study, ms: the slots' time not spent inside a study, per study run."""
        return 1000.0 * max(self.wall_s * self.slots - self.study_s, 0.0) / self.ran if self.ran else 0.0


# ---------------------------------------------------------------------------------------------- worker side


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"


def _error_line(stderr: str, command: str, code: int) -> str:
    """The command's one-line error (``scanai COMMAND: ...``), else its last line on stderr."""
    prefix = f"scanai {command}: "
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    stated = [line[len(prefix):] for line in lines if line.startswith(prefix)]
    if stated:
        return _one_line(stated[-1])
    if code == 1:
        return "the command finished but reports failed items (exit status 1); see the study's output folder"
    return _one_line(lines[-1]) if lines else f"the command stopped with exit status {code}"


def run_study(task: StudyTask, entry: Callable[[list[str]], int]) -> dict[str, Any]:
    """Run one study in this process (a worker): ``entry([command, *argv, "--out", out, "--overwrite"])`` with its
    output captured; returns its record (without ``attempts``). Never raises for the study's own failures."""
    from scanai.core.memory import release_memory

    out = Path(task.out)
    captured_out, captured_err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(captured_out), contextlib.redirect_stderr(captured_err):
        try:
            code = entry([task.command, *task.argv, "--out", str(out), "--overwrite"])
            error = "" if code == 0 else _error_line(captured_err.getvalue(), task.command, code)
        except SystemExit as stop:  # argparse: the manifest was checked, so only a changed command gets here
            code = stop.code if isinstance(stop.code, int) else 2
            error = _error_line(captured_err.getvalue(), task.command, code)
        except Exception as crash:  # a bug in the command: recorded, the batch goes on
            code, error = 2, _one_line(f"internal error ({type(crash).__name__}: {crash})")
    seconds = time.perf_counter() - started
    done = code in (0, 1) and out.is_dir()
    status = ("ok" if code == 0 else "failed") if done else "error"
    record = {"study_id": task.study_id, "command": task.command, "argv": list(task.argv), "status": status,
              "exit_code": code, "error": error, "seconds": round(seconds, 3),
              "results": headline(task.command, out) if done else {}, "pid": os.getpid()}
    release_memory()
    return record


# ---------------------------------------------------------------------------------------------- records


def record_path(out_dir: Path, study_id: str) -> Path:
    return Path(out_dir) / RECORDS / f"{study_id}.json"


def save_record(out_dir: Path, record: dict[str, Any]) -> Path:
    """Write a study's record under a temporary name and rename it (a record is whole or absent)."""
    path = record_path(out_dir, record["study_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(partial, path)
    return path


def load_record(out_dir: Path, study_id: str) -> dict[str, Any] | None:
    """The study's record, or None when there is none (or it cannot be read)."""
    try:
        return json.loads(record_path(out_dir, study_id).read_text())
    except (OSError, ValueError):
        return None


def is_complete(out_dir: Path, study: Study, command: str) -> bool:
    """Whether ``study`` finished earlier with this command line and its output folder is in place."""
    record = load_record(out_dir, study.study_id)
    return (record is not None and record.get("status") in COMPLETE and record.get("command") == command
            and record.get("argv") == list(study.argv) and (Path(out_dir) / study.study_id).is_dir())


def records(out_dir: Path, studies: Sequence[Study]) -> list[dict[str, Any]]:
    """One record per study in manifest order; a study without a record (not run yet) gets status ``pending``."""
    return [load_record(out_dir, s.study_id) or {"study_id": s.study_id, "status": "pending", "error": "not run"}
            for s in studies]


def prepare_output(out_dir: Path) -> Path:
    """The absolute batch output folder, created with its records folder; InputError when it is a file or a
    folder holding other files than an earlier batch's."""
    from scanai.core.outputs import check_output_folder

    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / RECORDS).is_dir():
        raise InputError(f"The output folder {out_dir} holds files that are not a scanai batch's.",
                         "Choose a new folder for --out (or the folder of the batch to resume).")
    check_output_folder(out_dir, overwrite=True)  # a file in the way, a read-only parent
    (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    return out_dir


def remove_leftovers(out_dir: Path, studies: Sequence[Study]) -> int:
    """Remove the hidden partial folders that killed workers left for these studies; returns how many."""
    removed = 0
    for study in studies:
        for pattern in (f".{study.study_id}.partial-*", f".{study.study_id}.previous-*"):
            for path in Path(out_dir).glob(pattern):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------- scheduling


def _killed(study_id: str, attempts: int) -> str:
    return (f"the worker running this study died {attempts} time(s) (killed, or over its memory limit); nothing was "
            "written for it")


def run_batch(studies: Sequence[Study], command: str, out_dir: Path, client, entry: Callable[[list[str]], int],
              retries: int = 2, on_record: Callable[[dict[str, Any]], None] | None = None) -> BatchRun:
    """Run every study of ``studies`` not complete in ``out_dir`` (:func:`is_complete`) on the Dask ``client``'s
    workers with ``entry`` (``scanai.cli.main``); a study whose worker dies is submitted again, at most ``retries``
    times. Each outcome is saved as a record (:func:`save_record`) and passed to ``on_record`` as it arrives.

    Studies are submitted as worker threads free up (never more at once than the cluster runs), so a worker holds
    one study at a time and a dying worker takes no waiting study down with it; the task keys carry no study id."""
    from distributed import KilledWorker, as_completed

    out_dir = Path(out_dir)
    pending = [study for study in studies if not is_complete(out_dir, study, command)]
    waiting = collections.deque((study, 1) for study in pending)
    running: dict[Any, tuple[Study, int]] = {}
    done = as_completed()
    token = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def top_up() -> None:
        slots = max(1, sum(client.nthreads().values()))
        while waiting and len(running) < slots:
            study, attempt = waiting.popleft()
            task = StudyTask(study.study_id, command, study.argv, str(out_dir / study.study_id))
            future = client.submit(run_study, task, entry, key=f"scanai-study-{token}-{next(counter)}", pure=False)
            running[future] = (study, attempt)
            done.add(future)

    started = time.perf_counter()
    retried, study_s = 0, 0.0
    top_up()
    for future in done:
        study, attempt = running.pop(future)
        if future.status == "finished":
            record = future.result()
            study_s += record["seconds"]
        else:
            problem = future.exception()
            if isinstance(problem, KilledWorker) and attempt <= retries:
                retried += 1
                waiting.appendleft((study, attempt + 1))
                future.release()
                top_up()
                continue
            error = (_killed(study.study_id, attempt) if isinstance(problem, KilledWorker) else _one_line(
                f"the worker could not run the study ({type(problem).__name__}: {problem}); is this scanai "
                "installed on every worker?"))
            record = {"study_id": study.study_id, "command": command, "argv": list(study.argv), "status": "error",
                      "exit_code": None, "error": error, "seconds": None, "results": {}}
        future.release()
        record["attempts"] = attempt
        save_record(out_dir, record)
        if on_record is not None:
            on_record(record)
        top_up()
    wall_s = time.perf_counter() - started
    remove_leftovers(out_dir, studies)
    slots = sum(client.nthreads().values()) or 1
    return BatchRun(len(pending), len(studies) - len(pending), retried, wall_s, study_s, slots)


# ---------------------------------------------------------------------------------------------- clusters


def security_of(ca_file: Path | None, cert: Path | None, key: Path | None):
    """A ``distributed.security.Security`` for TLS with these files (all three, or None for none); InputError
    when only some are given or one is missing."""
    given = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    if not any(given.values()):
        return None
    missing = [flag for flag, path in given.items() if path is None]
    if missing:
        raise InputError(f"TLS needs all three certificate files; {', '.join(missing)} is missing.",
                         "Give --tls-ca-file, --tls-cert and --tls-key together (or none for a private network).")
    absent = [f"{flag} {path}" for flag, path in given.items() if not Path(path).is_file()]
    if absent:
        raise InputError(f"The TLS file(s) {', '.join(absent)} do not exist.", "Check the certificate paths.")
    from distributed.security import Security

    return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert), tls_client_key=str(key),
                    require_encryption=True)


@contextlib.contextmanager
def local_client(workers: int, memory_limit: str = "auto") -> Iterator[Any]:
    """A Dask client of ``workers`` new local worker processes (one thread each; ``memory_limit`` per worker,
    ``"auto"``: the machine's memory / workers), on the loopback interface, closed at the end. A worker that dies
    fails its study at once (``allowed-failures`` 0): :func:`run_batch` does the retrying."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0",
                               memory_limit=memory_limit, silence_logs=logging.CRITICAL)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def cluster_client(address: str, security=None, timeout_s: float = 60.0) -> Iterator[Any]:
    """A Dask client of the running scheduler at ``address`` (``tls://`` with ``security``), once at least one
    worker has joined; InputError when it cannot be reached or no worker joins within ``timeout_s``."""
    from distributed import Client

    try:
        client = Client(address, security=security, timeout=timeout_s)
    except (OSError, TimeoutError) as error:
        raise InputError(f"The Dask scheduler at {address} cannot be reached ({error}).",
                         "Check that it runs (dask scheduler) and the address, port and certificates.") from error
    try:
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError as error:
            raise InputError(f"No worker joined the Dask scheduler at {address} within {timeout_s:.0f} s.",
                             f"Start workers with: dask worker {address} --nthreads 1") from error
        yield client
    finally:
        client.close()


def describe_workers(client) -> str:
    """One line on the workers: how many, threads each, memory limit each (no host names)."""
    workers = client.scheduler_info()["workers"].values()
    threads = sorted({w.get("nthreads", 1) for w in workers})
    limits = sorted({w.get("memory_limit", 0) for w in workers})
    memory = ", ".join(f"{limit / 2**30:.1f} GiB" if limit else "no limit" for limit in limits)
    line = (f"{len(workers)} worker(s), {'/'.join(map(str, threads))} study(ies) at a time each, memory limit "
            f"{memory} each")
    if threads[-1:] and threads[-1] > 1:
        line += ("; warning: a worker with several threads runs several studies at once (start workers with "
                 "--nthreads 1 for one study per worker)")
    return line


__all__ = ["COMPLETE", "RECORDS", "BatchRun", "StudyTask", "cluster_client", "describe_workers", "is_complete",
           "load_record", "local_client", "prepare_output", "records", "remove_leftovers", "run_batch", "run_study",
           "save_record", "security_of"]
