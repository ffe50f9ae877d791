"""Command line: arguments -> one run of the pipeline -> exit code.

Exit codes: 0 no error finding, 1 at least one error finding, 2 usage error or the
doctor itself failed. Nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from doctor import __version__
from doctor.report import EXIT_DOCTOR_FAILED

__all__ = ["main"]

FORMATS = ("terminal", "json")


class UsageError(Exception):
    """Bad arguments or input: a clear message and exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-doctor",
        description=(
            "Find why a CUDA build of PyTorch will not work in this environment, "
            "without importing torch, and print the exact remedy."
        ),
        epilog="Exit status: 0 no error found, 1 errors found, 2 usage error or doctor failure.",
    )
    parser.add_argument("--version", action="version", version=f"torch-doctor {__version__}")
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter or virtual environment to inspect "
        "(default: the active venv, else the project's .venv, else this interpreter)",
    )
    parser.add_argument(
        "--project",
        metavar="DIR",
        help="uv project directory with pyproject.toml and uv.lock "
        "(default: the venv's parent, else found from the working directory)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="terminal", help="report format (default: terminal)"
    )
    parser.add_argument("--output", metavar="FILE", help="write the report to FILE, not stdout")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time limit for each contained probe (default: 60)",
    )
    parser.add_argument("--no-color", action="store_true", help="plain text, no colour")
    return parser


def _check(args: argparse.Namespace) -> int:
    from doctor.pipeline import diagnose
    from doctor.probe import ProbeOptions
    from doctor.probe.target import TargetError, resolve_target

    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.project is not None and not Path(args.project).expanduser().is_dir():
        raise UsageError(f"--project {args.project}: no such directory")
    try:
        target = resolve_target(args.python, args.project)
    except TargetError as exc:
        raise UsageError(str(exc)) from exc

    report = diagnose(
        ProbeOptions(target=target, project=args.project, cwd=Path.cwd(), timeout=args.timeout)
    )

    if args.format == "json":
        from doctor.render.json import render_json

        _emit(render_json(report), args.output)
    elif args.output is not None:
        from doctor.render.terminal import render_terminal_text

        _emit(render_terminal_text(report), args.output)
    else:
        from rich.console import Console

        from doctor.render.terminal import render_terminal

        no_color = args.no_color or "NO_COLOR" in os.environ
        console = Console(no_color=no_color, highlight=False, soft_wrap=False)
        render_terminal(report, console)
    return report.exit_code


def _emit(text: str, output: Optional[str]) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output).expanduser()
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    print(f"torch-doctor: report written to {path}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _check(args)
    except UsageError as exc:
        print(f"torch-doctor: error: {exc}", file=sys.stderr)
        return EXIT_DOCTOR_FAILED
    except KeyboardInterrupt:
        print("torch-doctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `torch-doctor | head`: the reader left; that is not our failure.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
