"""``scanai batch COMMAND MANIFEST --out DIR``: run ``scanai COMMAND`` once per study of a manifest
(:mod:`scanai.batch.manifest`) on local worker processes (default one per core, ``--workers N``) or on a running
Dask cluster (``--scheduler ADDRESS``, TLS with ``--tls-ca-file --tls-cert --tls-key``).

Output: ``DIR/<study_id>/`` per study (what ``scanai COMMAND ... --out DIR/<study_id>`` writes), ``DIR/report.csv``
(one row per study, :mod:`scanai.batch.report`), ``DIR/summary.png``, and ``DIR/.batch/`` (the runner's records).
Running the same command again skips the studies already done and runs the others (resume after a stop or crash).

Exit status: 0 when every study is ok; 1 when at least one failed or could not run (its row says why; the others
ran); 2 when the batch cannot start (bad manifest, unreachable scheduler, bad TLS files), with nothing run; 130 when
interrupted (the studies done are kept; run the command again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scanai.core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser, commands: Sequence[str]) -> None:
    """Arguments of ``scanai batch`` (``commands``: the module commands it can run)."""
    parser.add_argument("batch_command", choices=list(commands), metavar="COMMAND",
                        help=f"the command run for each study: {', '.join(commands)}")
    parser.add_argument("manifest", type=Path,
                        help="CSV, one study per row: study_id, the command's inputs (input / image / inputs) and any "
                             "of its options as columns (e.g. method, t-star-min); see the README")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder: DIR/<study_id>/ per study, DIR/report.csv, DIR/summary.png")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes, one study at a time each (default: one per core)")
    parser.add_argument("--memory-limit", default="auto", metavar="SIZE",
                        help="local mode: memory limit per worker, e.g. 4GB; a worker past it is restarted and its "
                             "study retried (default auto: the machine's memory / workers)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on this running Dask scheduler (tcp://host:8786 or tls://host:8786) instead of "
                             "local processes; the workers must see the same file paths")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="submit a study again at most N times when its worker dies (default 2)")
    parser.add_argument("--tls-ca-file", type=Path, default=None, metavar="PEM",
                        help="certificate authority of the cluster (TLS, with --tls-cert and --tls-key)")
    parser.add_argument("--tls-cert", type=Path, default=None, metavar="PEM", help="this client's certificate (TLS)")
    parser.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="this client's private key (TLS)")


def _client(args: argparse.Namespace):
    from scanai.batch.runner import cluster_client, local_client, security_of

    security = security_of(args.tls_ca_file, args.tls_cert, args.tls_key)
    if args.scheduler is None:
        if security is not None:
            raise InputError("TLS certificates are for a cluster (--scheduler); local workers need none.",
                             "Add --scheduler tls://HOST:PORT, or leave the --tls-* options out.")
        return local_client(args.workers or os.cpu_count() or 1, args.memory_limit)
    if security is not None and not args.scheduler.startswith("tls://"):
        raise InputError(f"TLS certificates were given but the scheduler address {args.scheduler} is not tls://.",
                         "Start the scheduler with TLS and give its tls:// address.")
    if args.workers is not None:
        raise InputError("--workers sets the local worker processes; a cluster has its own workers.",
                         "Leave --workers out with --scheduler (start as many 'dask worker' as you need).")
    return cluster_client(args.scheduler, security)


def _progress(total: int, done: int, command: str) -> tuple[contextlib.ExitStack, Callable[[dict[str, Any]], None]]:
    """Progress over the studies (a bar on a terminal, a plain line per 10 % in a log:
    :func:`scanai.core.progress.tqdm_progress`) and the callback that advances it (non-ok studies: one line each,
    study id and status only). Close the returned stack to end it."""
    from scanai.core.progress import tqdm_progress

    stack = contextlib.ExitStack()
    progress = stack.enter_context(tqdm_progress(f"scanai batch {command}"))
    counts = {"ok": 0, "failed": 0, "error": 0}
    finished = [done]

    def advance(record: dict[str, Any]) -> None:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        finished[0] += 1
        if record["status"] != "ok":
            print(f"{record['study_id']}: {record['status']} (see report.csv)", file=sys.stderr)
        progress(finished[0] / max(total, 1), f"{finished[0]}/{total} studies ("
                 + ", ".join(f"{status} {count}" for status, count in counts.items()) + ")")

    return stack, advance


def run(args: argparse.Namespace, command_parser: Callable[[str], argparse.ArgumentParser],
        entry: Callable[[list[str]], int]) -> int:
    """Run ``scanai batch`` (see the module docstring); ``command_parser(command)`` is the parser of a module
    command and ``entry(argv)`` runs one command line (``scanai.cli.main``, imported by name in the workers)."""
    from scanai.batch.manifest import read_manifest
    from scanai.batch.report import status_counts, write_report, write_summary_figure
    from scanai.batch.runner import describe_workers, is_complete, prepare_output, records, run_batch

    if importlib.util.find_spec("distributed") is None:
        raise InputError("scanai batch needs dask.distributed, which is not installed.",
                         "Install it with: pip install 'dask[distributed]' (or the scanai[batch] extra).")
    if args.retries < 0 or (args.workers is not None and args.workers < 1):
        raise InputError("--workers must be at least 1 and --retries at least 0.", "Correct the option.")
    command = args.batch_command
    studies = read_manifest(args.manifest, command, command_parser)
    connection = _client(args)  # checks the options; connects or starts the workers on entering
    out = prepare_output(args.out)
    done = sum(is_complete(out, study, command) for study in studies)
    interrupted = False
    with connection as client:
        print(f"scanai batch {command}: {len(studies)} studies ({done} done earlier, skipped); "
              f"{describe_workers(client)}", file=sys.stderr)
        shown, advance = _progress(len(studies), done, command)
        try:
            summary = run_batch(studies, command, out, client, entry, args.retries, advance)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            shown.close()
    results = records(out, studies)
    report = write_report(results, out / "report.csv")
    counts = status_counts(results)
    figure = write_summary_figure(results, out / "summary.png", f"scanai batch {command}: {out.name}")
    shown = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    if interrupted:
        print(f"scanai batch {command}: interrupted ({shown}); the studies done are kept. Run the same command "
              "again to resume.", file=sys.stderr)
        return 130
    print(f"{len(studies)} studies: {shown}; {summary.skipped} done earlier (skipped), {summary.ran} run, "
          f"{summary.retried} retried after a worker died; {summary.wall_s:.1f} s, scheduling overhead "
          f"{summary.overhead_ms:.0f} ms per study.\nReport: {report}; summary figure: {figure}")
    return 0 if counts["ok"] == len(studies) else 1
