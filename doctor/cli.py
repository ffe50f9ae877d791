"""Command line: arguments -> one command -> exit code.

Commands: ``check`` (the default: ``torch-doctor`` alone runs it), ``fix``, ``explain``,
``list``. Each command's logic lives in its own module; this file only wires arguments.

Exit codes: 0 no error finding, 1 at least one error finding, 2 usage error or the
doctor itself failed. Nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from doctor import __version__
from doctor.render.formats import Format

if TYPE_CHECKING:
    from doctor.report import Report

__all__ = ["main"]

COMMANDS = ("check", "fix", "explain", "list")


class UsageError(Exception):
    """Bad arguments or input: a clear message and exit code 2."""


def _target_options(parser: argparse._ActionsContainer) -> None:
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
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time limit for each contained probe (default: 60)",
    )
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="do not load torch's CUDA libraries in a contained process (ELF view only)",
    )


def _format_option(parser: argparse._ActionsContainer, help: str) -> None:
    parser.add_argument(
        "--format", type=Format, choices=list(Format), default=Format.TERMINAL, help=help
    )


def _report_options(parser: argparse._ActionsContainer) -> None:
    _format_option(parser, "terminal (default), json for programs, markdown for a support ticket")
    parser.add_argument("--output", metavar="FILE", help="write the report to FILE, not stdout")
    parser.add_argument("--no-color", action="store_true", help="plain text, no colour")
    privacy = parser.add_mutually_exclusive_group()
    privacy.add_argument(
        "--no-redact",
        dest="redact",
        action="store_false",
        default=None,
        help="keep home directory, user and host names, secrets and GPU UUIDs "
        "(markdown and json redact them by default)",
    )
    privacy.add_argument(
        "--redact",
        dest="redact",
        action="store_true",
        default=None,
        help="redact the terminal report too (it is not redacted by default)",
    )


def _subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand with its one-line description and an example under its options."""
    return commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog="example:\n" + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _verbose_option(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list every check that passed or was skipped (by default: one line counts them)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-doctor",
        usage="torch-doctor [COMMAND] [options]",
        description=(
            "Find why a CUDA build of PyTorch will not work in this environment,\n"
            "without importing torch, and print the exact remedy.\n"
            "With no command, runs `check`: its options are listed below."
        ),
        epilog=(
            "examples:\n"
            "  torch-doctor                                  check the active venv or ./.venv\n"
            "  torch-doctor --python /path/to/venv           check another environment\n"
            "  torch-doctor --format markdown --output t.md  a report for a support ticket\n"
            "  torch-doctor fix                              apply the pyproject.toml remedies\n"
            "  torch-doctor explain - < error.txt            name a pasted error\n"
            "\n"
            "`torch-doctor COMMAND --help` shows a command's own options.\n"
            "Exit status: 0 no error found, 1 errors found, 2 usage error or doctor failure."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"torch-doctor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    check = _subcommand(
        commands,
        "check",
        "diagnose the environment (the default command)",
        "  torch-doctor check --python .venv --format markdown --output report.md",
    )
    _target_options(check)
    _report_options(check)
    _verbose_option(check)
    # `torch-doctor [options]` runs check, so its options are shown (never parsed) here too:
    # the main parser only ever sees -h/--version or a command (see _with_default_command).
    shown = parser.add_argument_group(
        "check options (`torch-doctor [options]` is `torch-doctor check [options]`)"
    )
    _target_options(shown)
    _report_options(shown)
    _verbose_option(shown)
    for action in shown._group_actions:
        action.default = argparse.SUPPRESS

    fix = _subcommand(
        commands,
        "fix",
        "apply the pyproject.toml remedies (shows the diff, asks, keeps a backup)",
        "  torch-doctor fix --dry-run\n  torch-doctor fix --yes --sync",
    )
    _target_options(fix)
    fix.add_argument("-y", "--yes", action="store_true", help="apply without asking")
    fix.add_argument("--dry-run", action="store_true", help="only show the diff")
    fix.add_argument(
        "--sync", action="store_true", help="run `uv lock` and `uv sync` after the edit"
    )

    explain = _subcommand(
        commands,
        "explain",
        "name a pasted error and check whether its causes are present here",
        "  torch-doctor explain 'libcudnn.so.9: cannot open shared object file'\n"
        "  python -c 'import torch' 2>&1 | torch-doctor explain -",
    )
    explain.add_argument("text", help="the error text, or - to read it from stdin")
    _target_options(explain)
    _report_options(explain)

    listing = _subcommand(
        commands,
        "list",
        "list every finding id with its meaning and documentation link",
        "  torch-doctor list --format markdown",
    )
    _format_option(listing, "terminal (default), json or markdown")
    listing.add_argument("--output", metavar="FILE", help="write the list to FILE")
    return parser


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """``torch-doctor [options]`` means ``torch-doctor check [options]``."""
    args = list(argv)
    if args and (args[0] in COMMANDS or args[0] in ("-h", "--help", "--version")):
        return args
    return ["check", *args]


def _command_line(args: argparse.Namespace, command: Sequence[str] = ()) -> str:
    """The command that reproduces this report (shown in markdown and json)."""
    words = ["torch-doctor", *command]
    if args.python:
        words += ["--python", args.python]
    if args.project:
        words += ["--project", args.project]
    words += ["--format", args.format]
    if args.redact is False:
        words.append("--no-redact")
    return " ".join(shlex.quote(w) for w in words)


def _diagnose(
    args: argparse.Namespace, while_loading: Callable[[], object] | None = None
) -> Report:
    from doctor.probe import ProbeOptions
    from doctor.probe.start import start_probes
    from doctor.probe.target import TargetError, resolve_target

    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.project is not None and not Path(args.project).expanduser().is_dir():
        raise UsageError(f"--project {args.project}: no such directory")
    try:
        target = resolve_target(args.python, args.project)
    except TargetError as exc:
        raise UsageError(str(exc)) from exc
    # The probe processes start before the heavy imports below and run while they happen.
    started = start_probes(target.python, timeout=args.timeout, load=not args.no_load)
    try:
        from doctor.pipeline import diagnose
        from doctor.probe.progress import ProgressLine

        # Silent unless the run is still going after a second (a slow driver, a hang).
        with ProgressLine(started.waiting):
            return diagnose(
                ProbeOptions(
                    target=target,
                    project=args.project,
                    cwd=Path.cwd(),
                    timeout=args.timeout,
                    load_libraries=not args.no_load,
                    started=started,
                    while_loading=while_loading,
                )
            )
    finally:
        started.kill()  # only what an error left running


def _import_renderer(fmt: Format) -> None:
    """Import the report's renderer (rich for the terminal: ~30 ms) while probes finish."""
    import doctor.render.output

    if fmt is Format.TERMINAL:
        import doctor.render.terminal  # noqa: F401


def _check(args: argparse.Namespace) -> int:
    # First: it starts the probe processes before the heavy imports.
    report = _diagnose(args, while_loading=lambda: _import_renderer(args.format))
    from doctor.render.output import default_redaction, prepare, show

    redacted = default_redaction(args.format, args.redact)
    show(
        prepare(report, _command_line(args), redacted=redacted),
        args.format,
        args.output,
        args.no_color,
        verbose=args.verbose,
    )
    return report.exit_code


def _fix(args: argparse.Namespace) -> int:
    from doctor.fix import FixOptions, run_fix

    report = _diagnose(args)
    return run_fix(report, FixOptions(yes=args.yes, dry_run=args.dry_run, sync=args.sync))


def _explain(args: argparse.Namespace) -> int:
    from doctor.explain import ExplainOptions, explain

    if args.text == "-" and sys.stdin.isatty():
        print("torch-doctor: paste the error, then press Ctrl-D", file=sys.stderr)
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise UsageError("explain: give the error text (or - and the text on stdin)")
    options = ExplainOptions(
        fmt=args.format,
        output=args.output,
        redact=args.redact,
        no_color=args.no_color,
        command=_command_line(args, ["explain", "-"]),
    )
    return explain(text, lambda: _diagnose(args), options)


def _list(args: argparse.Namespace) -> int:
    from doctor.catalogue import render_list
    from doctor.render.output import write_output

    write_output(render_list(args.format), args.output)
    return 0


def _reported(exc: Exception) -> bool:
    """A usage, fix or output error: a message and exit code 2. doctor.fix and the output
    module are imported only here, so the probe processes start before their imports."""
    from doctor.fix import FixError
    from doctor.render.output import OutputError

    return isinstance(exc, (UsageError, FixError, OutputError))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_with_default_command(sys.argv[1:] if argv is None else argv))
    command = {"check": _check, "fix": _fix, "explain": _explain, "list": _list}[args.command]
    if argv is None:
        # The program: a short run that makes little garbage. The cyclic collector's
        # passes over every imported module (and again at exit) cost it ~40 ms;
        # in-process callers (argv given) keep their collector.
        gc.disable()
    try:
        return command(args)
    except KeyboardInterrupt:
        print("torch-doctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `torch-doctor | head`: the reader left; that is not our failure.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except Exception as exc:
        from doctor.report import EXIT_DOCTOR_FAILED

        if _reported(exc):
            print(f"torch-doctor: error: {exc}", file=sys.stderr)
            return EXIT_DOCTOR_FAILED
        if os.environ.get("TORCH_DOCTOR_DEBUG"):
            raise
        # A bug in the doctor, not in the user's input: one line, and how to see more.
        print(
            f"torch-doctor: internal error: {type(exc).__name__}: {exc}\n"
            "torch-doctor: please report it; TORCH_DOCTOR_DEBUG=1 shows the traceback",
            file=sys.stderr,
        )
        return EXIT_DOCTOR_FAILED
    finally:
        if argv is None:
            gc.freeze()  # nothing to collect at exit either


if __name__ == "__main__":
    raise SystemExit(main())
