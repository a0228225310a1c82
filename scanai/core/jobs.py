"""Jobs: one of the library's long computations run in a child process, with progress streamed and Cancel at once.

The Slicer modules run their computation this way (as SlicerMONAIAuto3DSeg and SlicerTotalSegmentator do), so
Slicer's window never freezes and Cancel ends the work at once; tests and Python users call the same functions
in-process. A job is a folder:

- ``job.json``: ``{"job": NAME, "arguments": ...}`` where NAME is a key of :data:`JOBS` and the arguments are
  encoded by :func:`encode` (numbers, text, lists, dicts, tuples, paths, and the library's dataclasses and named
  tuples; every array goes into ``job.npz``);
- the worker, ``python -m scanai.core.jobs FOLDER``, prints one JSON line per progress report,
  ``{"progress": 0.42, "message": "..."}``, then writes ``result.json`` + ``result.npz`` (the function's return
  value, encoded the same way; written under temporary names and renamed, so a result is whole or absent) and
  prints ``{"done": true}``; a :class:`~scanai.core.errors.ScanAIError` is printed as ``{"error": {"type",
  "problem", "action"}}`` (exit status 2), anything else as a traceback (exit status 1).

:func:`run_worker` is the parent's side: it launches the worker (``launch`` adapts to Slicer's
``launchConsoleProcess``; the default is :class:`subprocess.Popen`), turns its lines into ``progress`` calls,
calls ``idle`` at least every :data:`POLL_SECONDS` so a GUI stays responsive, kills the worker as soon as
``progress`` raises :class:`~scanai.core.errors.Cancelled`, and returns the decoded result.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from scanai.core import errors
from scanai.core.errors import ScanAIError
from scanai.core.progress import Progress

#: The computations a job may run (name -> "module:function"); each takes ``progress=`` as a keyword.
JOBS = {
    "chest.analyse": "scanai.chest.pipeline:analyse_radiograph",
    "kspace.file": "scanai.kspace.pipeline:run_file",
    "kspace.run": "scanai.kspace.pipeline:run",
    "pet.maps": "scanai.pet.analysis:compute_maps",
    "pet.reference_maps": "scanai.pet.reference_cli:reference_map_result",
    "motion.cine": "scanai.motion.pipeline:analyse_cine",
    "motion.artifact": "scanai.artifact_correction.pipeline:correct_phase_sequence",
}
#: The longest the parent waits between two ``idle`` calls, in seconds.
POLL_SECONDS = 0.05
#: Only these packages' classes are encoded and rebuilt.
_OWN_PACKAGE = "scanai."


# ---------------------------------------------------------------------------------------------- codec


def _class_name(cls: type) -> str:
    if not cls.__module__.startswith(_OWN_PACKAGE):
        raise TypeError(f"a job cannot carry a {cls.__module__}.{cls.__qualname__}")
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(name: str) -> type:
    module, qualname = name.split(":")
    if not module.startswith(_OWN_PACKAGE):
        raise TypeError(f"a job cannot rebuild a {module}.{qualname}")
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON-ready data; its numpy arrays are added to ``arrays`` (key -> array) and referenced."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a job cannot carry an array of Python objects")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, enum.Enum):
        return {"__enum__": _class_name(type(value)), "name": value.name}
    if isinstance(value, pathlib.PurePath):
        return {"__path__": str(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": _class_name(type(value)),
                "fields": {f.name: encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value) if f.init}}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"__namedtuple__": _class_name(type(value)), "items": [encode(v, arrays) for v in value]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays) for v in value]
    if isinstance(value, Mapping):
        return {"__dict__": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    raise TypeError(f"a job cannot carry a {type(value).__name__}")


def decode(data: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The value :func:`encode` turned into ``data``."""
    if isinstance(data, list):
        return [decode(v, arrays) for v in data]
    if not isinstance(data, dict):
        return data
    if "__array__" in data:
        return arrays[data["__array__"]]
    if "__enum__" in data:
        return _class(data["__enum__"])[data["name"]]
    if "__path__" in data:
        return pathlib.Path(data["__path__"])
    if "__dataclass__" in data:
        return _class(data["__dataclass__"])(**{k: decode(v, arrays) for k, v in data["fields"].items()})
    if "__namedtuple__" in data:
        return _class(data["__namedtuple__"])(*(decode(v, arrays) for v in data["items"]))
    if "__tuple__" in data:
        return tuple(decode(v, arrays) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k, arrays): decode(v, arrays) for k, v in data["__dict__"]}
    raise ValueError(f"unknown job data {sorted(data)}")


def save(value: Any, folder: pathlib.Path, stem: str) -> None:
    """Write ``value`` as ``stem.json`` + ``stem.npz`` in ``folder``, each under a temporary name first."""
    arrays: dict[str, np.ndarray] = {}
    document = json.dumps(encode(value, arrays))
    partial = folder / f".{stem}.partial.npz"
    np.savez(partial, **arrays)
    os.replace(partial, folder / f"{stem}.npz")
    partial = folder / f".{stem}.partial.json"
    partial.write_text(document)
    os.replace(partial, folder / f"{stem}.json")  # the JSON last: it is what marks the pair complete


def load(folder: pathlib.Path, stem: str) -> Any:
    """The value :func:`save` wrote."""
    with np.load(folder / f"{stem}.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    return decode(json.loads((folder / f"{stem}.json").read_text()), arrays)


# ---------------------------------------------------------------------------------------------- worker


def function_of(job: str) -> Callable:
    """The library function a job name stands for (:data:`JOBS`)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; known: {', '.join(JOBS)}")
    module, name = JOBS[job].split(":")
    return getattr(importlib.import_module(module), name)


def write_job(folder: pathlib.Path, job: str, arguments: Mapping[str, Any]) -> pathlib.Path:
    """Write the job files into ``folder`` (created); returns it."""
    function_of(job)  # an unknown name fails here, not in the worker
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save({"job": job, "arguments": dict(arguments)}, folder, "job")
    return folder


def _print_line(document: dict) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def work(folder: pathlib.Path) -> int:
    """The worker: run the job in ``folder``, reporting on stdout (see the module docstring); the exit status."""
    folder = pathlib.Path(folder)
    try:
        job = load(folder, "job")
        function = function_of(job["job"])
        result = function(**job["arguments"], progress=Progress(lambda f, m: _print_line(
            {"progress": round(float(f), 4), "message": m})))
        save(result, folder, "result")
    except ScanAIError as error:
        _print_line({"error": {"type": type(error).__name__, "problem": error.problem, "action": error.action}})
        return 2
    except Exception:  # reported with its traceback: a bug, not a user error
        traceback.print_exc()
        return 1
    _print_line({"done": True})
    return 0


# ---------------------------------------------------------------------------------------------- parent


def worker_command(folder: pathlib.Path, python: str | None = None) -> list[str]:
    """The command line that runs the worker on ``folder`` with ``python`` (default: this interpreter)."""
    return [python or sys.executable, "-m", "scanai.core.jobs", str(folder)]


def worker_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with this ``scanai``'s folder first on PYTHONPATH, so the
    worker imports the same library, and one thread pool per worker unless the caller set one."""
    environment = dict(os.environ if base is None else base)
    root = str(pathlib.Path(__file__).resolve().parents[2])
    paths = [root] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    return environment


def _launch(command: list[str], environment: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _raise_worker_error(document: dict) -> None:
    kind = getattr(errors, document.get("type", ""), ScanAIError)
    kind = kind if isinstance(kind, type) and issubclass(kind, ScanAIError) else ScanAIError
    raise kind(document.get("problem", "The computation failed."), document.get("action"))


def run_worker(job: str, arguments: Mapping[str, Any], progress: Progress | None = None,
               launch: Callable[[list[str], dict[str, str]], subprocess.Popen] | None = None,
               idle: Callable[[], None] | None = None, folder: pathlib.Path | None = None,
               python: str | None = None) -> Any:
    """Run ``job`` with ``arguments`` in a worker process and return its result (see the module docstring).

    progress: receives the worker's reports; when it raises Cancelled (the user pressed Cancel) the worker is
    killed at once and Cancelled propagates. launch(command, environment) -> Popen with text stdout (stderr
    merged). idle(): called at least every POLL_SECONDS while waiting (Slicer: process the GUI's events).
    folder: where the job files go (default: a temporary folder, removed afterwards). A ScanAIError in the worker
    is raised here with its class and message; a crash raises RuntimeError with the worker's last output lines.
    """
    progress = Progress.ensure(progress)
    idle = idle or (lambda: None)
    with tempfile.TemporaryDirectory(prefix="scanai-job-") as temporary:
        folder = pathlib.Path(folder or temporary)
        write_job(folder, job, arguments)
        process = (launch or _launch)(worker_command(folder, python), worker_environment())
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
        output: list[str] = []
        try:
            _follow(lines, output, progress, idle)
        except BaseException:
            process.kill()
            process.wait()
            raise
        status = process.wait()
        for line in output:
            document = _json_line(line)
            if document is not None and "error" in document:
                _raise_worker_error(document["error"])
        if status != 0 or not (folder / "result.json").is_file():
            raise RuntimeError(f"The ScanAI worker stopped with status {status}:\n" + "\n".join(output[-20:]))
        return load(folder, "result")


def _json_line(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _follow(lines: queue.Queue, output: list[str], progress: Progress, idle: Callable[[], None]) -> None:
    """Pass the worker's progress lines on until its output ends, calling ``idle`` in between."""
    last = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            line = ""
        if line is None:
            return
        if line:
            output.append(line)
            document = _json_line(line)
            if document is not None and "progress" in document:
                progress(float(document["progress"]), str(document.get("message", "")))
        if time.monotonic() - last >= POLL_SECONDS or not line:
            progress.token.raise_if_cancelled()
            idle()
            last = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    """``python -m scanai.core.jobs FOLDER``: run the job in FOLDER (the worker)."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m scanai.core.jobs JOB_FOLDER", file=sys.stderr)
        return 64
    return work(pathlib.Path(arguments[0]))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["JOBS", "POLL_SECONDS", "decode", "encode", "function_of", "load", "run_worker", "save",
           "work", "worker_command", "worker_environment", "write_job"]
