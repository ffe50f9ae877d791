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
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from doctor import __version__
from doctor.render.formats import Format

if TYPE_CHECKING:
    from doctor.report import Report

__all__ = ["main"]

COMMANDS = ("check", "fix", "explain", "list", "lock", "compare")


class UsageError(Exception):
    """Bad arguments or input: a clear message and exit code 2."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived (like KeyboardInterrupt for SIGINT): stop, exit 128+signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# Longer than any probe could usefully take; also keeps deadline arithmetic finite.
MAX_TIMEOUT = 24 * 3600.0


def _timeout(value: str) -> float:
    """--timeout: a finite number of seconds, more than 0 and at most a day."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds <= MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"{value!r}: give a number of seconds above 0 and at most {MAX_TIMEOUT:g}"
        )
    return seconds


def _non_empty(option: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{option} needs a path, not an empty string")
        return value

    return parse


def _target_options(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--python",
        metavar="PATH",
        type=_non_empty("--python"),
        help="interpreter or virtual environment to inspect "
        "(default: the active venv, else the project's .venv, else this interpreter)",
    )
    parser.add_argument(
        "--project",
        metavar="DIR",
        type=_non_empty("--project"),
        help="uv project directory with pyproject.toml and uv.lock "
        "(default: the venv's parent, else found from the working directory)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=60.0,
        metavar="SECONDS",
        help="time limit for each contained probe (default: 60)",
    )
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="do not load torch's CUDA libraries in a contained process (ELF view only)",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also import torch in a contained process and run small CPU/GPU stages "
        "(seconds to a minute; see docs/deep.md); under torchrun, every rank also joins an "
        "all-reduce and rank 0 shows the cluster (docs/clusters.md)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="with --deep under torchrun: also run the torch.compile stage on every rank "
        "(skipped there by default: each rank compiles cold, ~10 s on a CPU)",
    )


def _format_option(parser: argparse._ActionsContainer, help: str) -> None:
    parser.add_argument(
        "--format", type=Format, choices=list(Format), default=Format.TERMINAL, help=help
    )


def _report_options(parser: argparse._ActionsContainer) -> None:
    _format_option(parser, "terminal (default), json for programs, markdown for a support ticket")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE, not stdout; FILE may hold {host}, {rank}, "
        "{SLURM_PROCID}, {SLURM_NODEID}, {SLURM_LOCALID}, {RANK}, {LOCAL_RANK} "
        "(one report per node: see docs/clusters.md)",
    )
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

    _lock_parser(commands)
    compare = _subcommand(
        commands,
        "compare",
        "compare the json reports of many nodes: the majority, the nodes that differ and in "
        "what, every node's findings (docs/clusters.md)",
        "  torch-doctor compare reports/",
    )
    compare.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT",
        type=_non_empty("REPORT"),
        help="report files, or directories of them",
    )
    _report_options(compare)

    listing = _subcommand(
        commands,
        "list",
        "list every finding id with its meaning and documentation link",
        "  torch-doctor list --format markdown",
    )
    _format_option(listing, "terminal (default), json or markdown")
    listing.add_argument("--output", metavar="FILE", help="write the list to FILE")
    return parser


def _lock_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lock = _subcommand(
        commands,
        "lock",
        "check uv.lock against its wheels' metadata on every platform (uses the network)",
        "  torch-doctor lock              # after uv lock, in CI\n"
        "  torch-doctor lock --fix --dry-run",
    )
    lock.epilog = (
        "Checks, before anyone syncs, that uv.lock records the dependencies each locked\n"
        "torch-family wheel declares for its platform (uv#11945). Needs no venv, GPU or\n"
        "torch. USES THE NETWORK: reads each wheel's metadata from its index (PEP 658\n"
        "metadata file, else an HTTP range read of the wheel) and caches it by the\n"
        "wheel's sha256 (TORCH_DOCTOR_CACHE_DIR, default ~/.cache/torch-doctor).\n"
        "Exit status: 0 the lock is consistent, 1 it is not, 2 some wheel could not be\n"
        "checked or bad input.\n\n" + (lock.epilog or "")
    )
    lock.add_argument(
        "--project",
        metavar="DIR",
        type=_non_empty("--project"),
        default=".",
        help="the uv project (default: .)",
    )
    lock.add_argument(
        "--offline", action="store_true", help="no network: only the cache; says what it skipped"
    )
    lock.add_argument(
        "--download",
        action="store_true",
        help="when an index offers neither metadata files nor range requests, "
        "download whole wheels (their size is said first)",
    )
    lock.add_argument(
        "--package",
        metavar="NAME",
        action="append",
        default=[],
        help="also check this package's wheels (torch, torchvision, torchaudio and triton "
        "always are); repeatable",
    )
    lock.add_argument(
        "--all",
        dest="all_packages",
        action="store_true",
        help="also check every package whose locked wheels serve several platforms "
        "(more requests on the first run)",
    )
    lock.add_argument(
        "--timeout",
        type=_timeout,
        default=30.0,
        metavar="SECONDS",
        help="for each request, from its start to its last byte (default 30)",
    )
    lock.add_argument(
        "--format",
        choices=[Format.TERMINAL.value, Format.JSON.value],
        default=Format.TERMINAL.value,
        help="terminal (default) or json",
    )
    lock.add_argument(
        "--fix",
        action="store_true",
        help="write the [[tool.uv.dependency-metadata]] remedy into pyproject.toml "
        "(shows the diff, asks, keeps a backup; as `torch-doctor fix`)",
    )
    lock.add_argument("-y", "--yes", action="store_true", help="with --fix: apply without asking")
    lock.add_argument("--dry-run", action="store_true", help="with --fix: only show the diff")


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
    if getattr(args, "deep", False):
        words.append("--deep")
    if getattr(args, "compile", False):
        words.append("--compile")
    words += ["--format", args.format]
    if args.redact is False:
        words.append("--no-redact")
    return " ".join(shlex.quote(w) for w in words)


def _diagnose(args: argparse.Namespace, renderer: Format | None = None) -> Report:
    """Start the probes, then (while they run) import the pipeline and, for ``renderer``,
    the report's renderer; then gather, judge, and return the report."""
    from doctor.probe import ProbeOptions
    from doctor.probe.start import start_probes
    from doctor.probe.target import TargetError, resolve_target

    if args.project is not None and not Path(args.project).expanduser().is_dir():
        raise UsageError(f"--project {args.project}: no such directory")
    if getattr(args, "compile", False) and not getattr(args, "deep", False):
        raise UsageError("--compile goes with --deep (it adds a stage of the runtime probe)")
    try:
        target = resolve_target(args.python, args.project)
    except TargetError as exc:
        raise UsageError(str(exc)) from exc
    # The probe processes start before the heavy imports below and run while they happen.
    started = start_probes(target.python, timeout=args.timeout, load=not args.no_load)
    try:
        from doctor.pipeline import diagnose
        from doctor.probe.progress import ProgressLine

        if renderer is not None:
            _import_renderer(renderer)

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
                    deep=getattr(args, "deep", False),
                    compile=getattr(args, "compile", False),
                )
            )
    finally:
        started.kill()  # only what an error left running


def _import_renderer(fmt: Format) -> None:
    """Import the report's renderer (rich for the terminal: ~30 ms) while probes finish."""
    import doctor.render.output

    if fmt is Format.TERMINAL:
        import doctor.render.terminal  # noqa: F401


def _check_output_template(output: str | None) -> None:
    """A bad --output placeholder is a usage error before any probe runs."""
    if output is None:
        return
    from doctor.render.destination import PlaceholderError, expand_output

    try:
        expand_output(output)
    except PlaceholderError as exc:
        raise UsageError(str(exc)) from exc


def _check(args: argparse.Namespace) -> int:
    _check_output_template(args.output)
    # First: it starts the probe processes before the heavy imports.
    report = _diagnose(args, renderer=args.format)
    from doctor.render.output import default_redaction, prepare, show
    from doctor.report import EXIT_DOCTOR_FAILED

    redacted = default_redaction(args.format, args.redact)
    stage = view = None
    if args.deep:
        from doctor.collective import run_collective

        report, stage, view = run_collective(report, redacted=redacted, timeout=args.timeout)
    code = report.exit_code
    if view is not None and code == 0 and view.comparison.exit_code == 1:
        code = 1  # rank 0 speaks for the job: its nodes disagree, or one has an error
    try:
        show(
            prepare(report, _command_line(args), redacted=redacted, extra=view),
            args.format,
            args.output,
            args.no_color,
            verbose=args.verbose,
        )
    except Exception:
        if stage is not None:
            stage.release(EXIT_DOCTOR_FAILED)  # no report here: the others may go
        raise
    if stage is not None:
        # This rank has reported; rank 0 waits for the others' reports, then tells them
        # its exit status (the job's), and they exit after it.
        stage.release(code)
    return code


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


def _lock(args: argparse.Namespace) -> int:
    from doctor.lockcheck import LockOptions, LockUsageError, run_lock

    project = Path(args.project).expanduser()
    if not project.is_dir():
        raise UsageError(f"--project {args.project}: no such directory")
    if args.offline and args.download:
        raise UsageError("--offline and --download contradict each other")
    if (args.yes or args.dry_run) and not args.fix:
        raise UsageError("--yes and --dry-run go with --fix")
    fmt = Format(args.format)
    if args.fix and fmt is Format.JSON:
        raise UsageError("--fix shows a diff and asks: use it with the terminal format")
    options = LockOptions(
        project=project.absolute(),
        offline=args.offline,
        download=args.download,
        timeout=args.timeout,
        fmt=fmt,
        packages=tuple(args.package),
        all_packages=args.all_packages,
        fix=args.fix,
        yes=args.yes,
        dry_run=args.dry_run,
    )
    try:
        return run_lock(options)
    except LockUsageError as exc:
        raise UsageError(str(exc)) from exc


def _compare(args: argparse.Namespace) -> int:
    from doctor.compare import compare_paths, redact_comparison
    from doctor.render.compare import render_compare
    from doctor.render.output import default_redaction, report_width, write_output

    comparison = compare_paths(args.reports)
    redactions = None
    if default_redaction(args.format, args.redact):
        comparison, redactions = redact_comparison(comparison)
    write_output(
        render_compare(comparison, args.format, redactions, width=report_width()), args.output
    )
    return comparison.exit_code


def _reported(exc: Exception) -> bool:
    """A usage, fix or output error: a message and exit code 2. doctor.fix and the output
    module are imported only here, so the probe processes start before their imports."""
    from doctor.fix import FixError
    from doctor.render.output import OutputError

    return isinstance(exc, (UsageError, FixError, OutputError))


def _stop_on_signal(signum: int, frame: object) -> None:
    from doctor.probe.contained import defer_signal, kill_all

    if defer_signal(signum):
        return  # a child is being started: the signal comes again once it is registered
    kill_all()  # at once: the exception below may take a moment to reach main
    raise Stopped(signum)


def _stopped(signum: int) -> int:
    """The contained children are killed; one line; exit status 128+signal, as a shell's."""
    from doctor.probe.contained import kill_all

    kill_all()
    name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"torch-doctor: {name}", file=sys.stderr)
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_with_default_command(sys.argv[1:] if argv is None else argv))
    command = {
        "check": _check,
        "fix": _fix,
        "explain": _explain,
        "list": _list,
        "lock": _lock,
        "compare": _compare,
    }[args.command]
    if argv is None:
        # The program: `timeout`, CI cancellation and `docker stop` send SIGTERM, a closed
        # terminal SIGHUP; both stop the run like Ctrl-C, children included.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stop_on_signal)
        # The program: a short run that makes little garbage. The cyclic collector's
        # passes over every imported module (and again at exit) cost it ~40 ms;
        # in-process callers (argv given) keep their collector.
        gc.disable()
    try:
        return command(args)
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except Stopped as stop:
        return _stopped(stop.signum)
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
