"""``scanai`` command line: one sub-command per module, ``scanai demo``, and ``scanai job FOLDER`` (the worker of the
Slicer modules' job protocol, :mod:`scanai.core.jobs`).

Each domain package provides ``scanai.<domain>.cli`` with ``add_arguments(parser)``, ``run(args) -> int`` and
``demo(out_dir, data_dir) -> str`` (a Markdown section); this file only dispatches to them. ``scanai batch``
(:mod:`scanai.batch`) runs one of these commands per study of a manifest, on local processes or a Dask cluster.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from scanai import __version__
from scanai.batch import cli as batch_cli
from scanai.core.errors import ScanAIError
from scanai.core.paths import shared_data_dir

DOMAINS = {  # sub-command -> (package, module it feeds, one-line help)
    "motion": ("scanai.motion.cli", "MotionCorrection",
               "dense motion over a cardiac cine: transforms, warped cine, Jacobian, propagated labels, strain"),
    "motion-correct": ("scanai.artifact_correction.cli", "MotionCorrection",
                       "multi-phase cardiac motion-artifact correction: N phase volumes -> one corrected volume"),
    "pet": ("scanai.pet.cli", "ParametricPET", "kinetic maps (Patlak, Logan, 1TCM, 2TCM, Ki network) of dynamic PET"),
    "kspace": ("scanai.kspace.cli", "KSpaceCalibration", "root-sum-of-squares image from raw multi-coil k-space"),
    "chest": ("scanai.chest.cli", "ChestQC",
              "quality grade, reasons and findings of chest radiographs (a file or a folder)"),
}


def _domain(command: str):
    return importlib.import_module(DOMAINS[command][0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanai", description="ScanAI: scanner-side AI tools (batch mode).")
    parser.add_argument("--version", action="version", version=f"scanai {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, (_package, module, summary) in DOMAINS.items():
        _add_command_arguments(commands.add_parser(command, help=f"{summary} ({module})",
                                                   description=f"{module}: {summary}."), command)
    batch = commands.add_parser("batch", help="run a command once per study of a manifest CSV, on local processes "
                                              "or a Dask cluster, resumable, with one report",
                                description="Run a command once per study of a manifest (scanai.batch).")
    batch_cli.add_arguments(batch, list(DOMAINS))
    demo = commands.add_parser("demo", help="run every module's job on real data (or phantoms) and write a report")
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    demo.add_argument("--data", type=Path, default=None,
                      help="real data folder (default: ../shared/data when present, else phantoms only)")
    demo.add_argument("--only", choices=sorted(DOMAINS), action="append", help="run only these modules")
    job = commands.add_parser("job", help="run one job folder (the Slicer modules' worker protocol, "
                                          "scanai.core.jobs): progress as JSON lines, the result beside the job")
    job.add_argument("folder", type=Path, help="a folder holding job.json + job.npz (scanai.core.jobs.write_job)")
    return parser


def _add_command_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    _domain(command).add_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder whole when it already holds results (default: refuse)")


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one module command's arguments (what ``scanai COMMAND`` takes after its name)."""
    parser = argparse.ArgumentParser(prog=f"scanai {command}")
    _add_command_arguments(parser, command)
    return parser


def run_demo(out_dir: Path, data_dir: Path | None, only: list[str] | None = None) -> Path:
    """Run each domain's demo into ``out_dir/<domain>`` and write ``out_dir/report.md``; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for command in only or DOMAINS:
        started = time.perf_counter()
        print(f"[{command}] running {DOMAINS[command][1]} demo…", file=sys.stderr)
        section = _domain(command).demo(out_dir / command, data_dir)
        sections.append(section.rstrip() + f"\n\n_Run time: {time.perf_counter() - started:.1f} s._\n")
    source = f"real data in `{data_dir}` and generated phantoms" if data_dir else "generated phantoms only"
    overview = write_overview(out_dir, sections)
    report = out_dir / "report.md"
    report.write_text(f"# ScanAI demo report\n\nscanai {__version__}; inputs: {source}.\n\n"
                      f"![overview]({overview.name})\n\n" + "\n".join(sections))
    return report


def write_overview(out_dir: Path, sections: list[str]) -> Path:
    """Stack one figure of each Markdown section into ``out_dir/overview.png`` (the README picture)."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for section in sections:  # prefer a figure of real data over a phantom's
        links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", section)
        real = [link for link in links if "phantom" not in link]
        if links:
            figures.append(out_dir / (real or links)[0])
    images = [plt.imread(path) for path in figures if path.is_file()]
    heights = [image.shape[0] / image.shape[1] for image in images] or [1.0]
    figure, axes = plt.subplots(len(heights), 1, figsize=(12, 12 * sum(heights)),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, image in zip(axes[:, 0], images, strict=False):
        axis.imshow(image)
    for axis in axes[:, 0]:
        axis.set_axis_off()
    figure.subplots_adjust(0, 0, 1, 1, 0, 0.02)
    path = out_dir / "overview.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run_command(args: argparse.Namespace) -> int:
    """Run a module's command so that its output folder is complete or absent (:mod:`scanai.core.outputs`): the
    folder is checked before any computation, the results are written into a temporary folder beside it and moved
    into place when the command succeeds."""
    from scanai.core.outputs import check_output_folder, printed_as, results_folder

    if getattr(args, "list", False):  # a command that only lists its input (scanai motion DIR --list) writes nothing
        return _domain(args.command).run(args)
    out = check_output_folder(args.out, args.overwrite)
    with results_folder(out) as partial, printed_as(partial, out):
        args.out = partial
        return _domain(args.command).run(args)


def main(argv: list[str] | None = None) -> int:
    """``scanai``: one line and exit status 2 for a user's error, 130 when interrupted (Ctrl-C or SIGTERM); in both
    cases nothing is left in the output folder."""
    from scanai.core.outputs import interrupt_on_terminate

    args = build_parser().parse_args(argv)
    target = getattr(args, "out", None) or getattr(args, "folder", "")
    try:
        with interrupt_on_terminate():
            if args.command == "demo":
                data_dir = args.data if args.data is not None else shared_data_dir()
                report = run_demo(args.out, data_dir, args.only)
                print(f"Demo results are in {args.out.resolve()}; report: {report.resolve()}")
                return 0
            if args.command == "batch":
                return batch_cli.run(args, command_parser, main)
            if args.command == "job":
                from scanai.core.jobs import work

                return work(args.folder)
            return run_command(args)
    except ScanAIError as error:
        print(f"scanai {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scanai {args.command}: interrupted; nothing was written to {target}", file=sys.stderr)
        return 130
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"scanai {args.command}: the results could not be written{where}: {error.strerror or error}. Nothing "
              f"was written to {target}; check the disk space and permissions.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
