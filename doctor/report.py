"""The report: the context, every check's result, the findings related to their root
causes and carrying their remedies, and every judgement a renderer shows (verdict, order,
the first step). Renderers only format what is here."""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from doctor.checks import CheckResult, CheckStatus
from doctor.derive import Context
from doctor.derive.expectations import Expectations
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind, Severity

__all__ = [
    "EXIT_DOCTOR_FAILED",
    "EXIT_ERRORS",
    "EXIT_OK",
    "Explanation",
    "Recognised",
    "Report",
    "Verdict",
    "fix_command",
]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_DOCTOR_FAILED = 2


class Verdict(str, enum.Enum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    # No error found, but the doctor could not do all its work (exit code 2).
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Recognised:
    """A failure `explain` recognised in the pasted text."""

    id: str
    name: str
    matched: str  # the line of the pasted text that matched
    findings: tuple[str, ...]  # the finding ids whose checks decide its cause
    advice: str | None
    source: str  # where the error text was seen


@dataclass(frozen=True)
class Explanation:
    """What `explain` concluded: the failures recognised, and what the checks say of them."""

    recognised: tuple[Recognised, ...]
    confirmed: tuple[str, ...]
    ruled_out: tuple[str, ...]
    undetermined: tuple[tuple[str, str], ...]  # (finding id, why it could not judge)
    not_checked: tuple[str, ...]  # finding ids this version has no check for
    # The distributions the pasted errors come from (signatures.toml comes_from) that are
    # not installed in the inspected interpreter: the errors came from another one.
    not_installed: tuple[str, ...] = ()
    interpreter: str | None = None  # the inspected interpreter
    # The pasted text, cleaned (terminal codes, line ends) and cut to its end: the ticket's
    # traceback. Held here so that redaction covers it like the rest of the report.
    pasted: str = ""

    @property
    def conclusion(self) -> str:
        if self.confirmed:
            return "Confirmed here: " + ", ".join(self.confirmed) + " (remedies below)."
        if self.not_installed:
            return (
                f"Not from this interpreter: {' and '.join(self.not_installed)} "
                f"{'is' if len(self.not_installed) == 1 else 'are'} not installed in "
                f"{self.interpreter}, so the error came from another one. " + _RUN_WHERE_IT_FAILED
            )
        if not (self.ruled_out or self.undetermined):
            return "torch-doctor has no check for this cause yet: follow the advice above."
        if self.ruled_out and not self.undetermined and not self.not_checked:
            return (
                "Ruled out here: the checks for this failure found no such cause in this "
                "environment, so the error probably came from another venv, machine or "
                "container. " + _RUN_WHERE_IT_FAILED
            )
        return (
            "Not confirmed here: no check for this failure found its cause in this environment"
            + (", and some could not judge (below)." if self.undetermined else ".")
            + " If the error came from another venv, machine or container, "
            + _RUN_WHERE_IT_FAILED[0].lower()
            + _RUN_WHERE_IT_FAILED[1:]
        )


_RUN_WHERE_IT_FAILED = (
    "Run torch-doctor where it failed, with --python set to the interpreter (or venv) "
    "that printed the error."
)


@dataclass(frozen=True)
class Report:
    """The context, every check's result and the findings with their remedies.

    `explain` shows a focused report: the checks and findings that bear on the pasted
    error, with its ``explanation``; the verdict and exit code stay those of the ``whole``
    report, so explain and check agree on the same environment.
    """

    context: Context
    results: tuple[CheckResult, ...]
    findings: tuple[Finding[Any], ...]  # roots first, then consequences (Finding.root)
    explanation: Explanation | None = None
    whole: Report | None = None  # the unfocused report this one was cut from

    @property
    def other_roots(self) -> tuple[Finding[Any], ...]:
        """Root causes of the whole report that this focused one does not show."""
        if self.whole is None:
            return ()
        shown = {f.id for f in self.roots}
        return tuple(f for f in self.whole.roots if f.id not in shown)

    @property
    def facts(self) -> Facts:
        return self.context.facts

    @cached_property
    def roots(self) -> tuple[Finding[Any], ...]:
        """Root causes, the worst first (then in check order): what the user fixes."""
        roots = [f for f in self.findings if f.root is None]
        return tuple(sorted(roots, key=lambda f: -f.severity.rank))

    def consequences_of(self, root: Finding[Any]) -> tuple[Finding[Any], ...]:
        return tuple(f for f in self.findings if f.root == root.id)

    def root_of(self, result: CheckResult) -> str | None:
        """The root id every finding of a failed check hangs under (None: it is a root)."""
        # The check's findings as related (result.findings are as the check wrote them).
        roots = {f.root for f in self.findings if f.id == result.spec.id}
        if len(roots) == 1:
            return next(iter(roots))
        return None

    @property
    def verdict(self) -> Verdict:
        if self.whole is not None:
            return self.whole.verdict
        worst = max((f.severity.rank for f in self.roots), default=-1)
        if worst >= Severity.ERROR.rank:
            return Verdict.ERROR
        if self.crashed or self.facts.interpreter is None:
            return Verdict.INCOMPLETE
        if worst >= Severity.WARNING.rank:
            return Verdict.WARNING
        return Verdict.OK

    @property
    def torch_requirements(self) -> Expectations | None:
        """torch's requirements evaluated for the inspected interpreter (None without torch)."""
        return self.context.expected

    def count(self, severity: Severity) -> int:
        """Root causes of this severity (consequences are not counted again)."""
        if self.whole is not None:
            return self.whole.count(severity)
        return sum(1 for f in self.roots if f.severity is severity)

    @property
    def passed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is CheckStatus.PASSED)

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is CheckStatus.SKIPPED)

    @property
    def crashed(self) -> tuple[CheckResult, ...]:
        if self.whole is not None:
            return self.whole.crashed
        return tuple(r for r in self.results if r.status is CheckStatus.CRASHED)

    @property
    def exit_code(self) -> int:
        if self.verdict is Verdict.ERROR:
            return EXIT_ERRORS
        if self.verdict is Verdict.INCOMPLETE:
            return EXIT_DOCTOR_FAILED
        return EXIT_OK

    @property
    def summary(self) -> str:
        """One line, e.g. '2 errors, 1 warning' or 'no problems found'."""
        parts = []
        for severity, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning")):
            n = self.count(severity)
            if n:
                parts.append(f"{n} {word}{'s' if n != 1 else ''}")
        if self.facts.interpreter is None:
            parts.append("the environment could not be inspected")
        elif self.crashed:
            n = len(self.crashed)
            parts.append(f"{n} check{'s' if n != 1 else ''} could not run")
        return ", ".join(parts) if parts else "no problems found"

    @property
    def first_step(self) -> tuple[Finding[Any], Remedy] | None:
        """The worst root cause with a runnable remedy, and that remedy: what to do first.

        A pyproject.toml block is applied by `torch-doctor fix`, so for it the step is
        the block itself (renderers say `torch-doctor fix` beside it).
        """
        # Of the root causes as bad as the worst, one with a command to run comes first.
        actionable = sorted(
            (f for f in self.roots if f.severity is not Severity.INFO),
            key=lambda f: (-f.severity.rank, not any(r.kind.is_code for r in f.remedies)),
        )
        for finding in actionable:
            for remedy in finding.remedies:
                if remedy.kind.is_code:
                    return finding, remedy
            if finding.remedies:
                return finding, finding.remedies[0]
        return None

    def next_step(self, command: str) -> tuple[Finding[Any], Remedy] | None:
        """``first_step`` as something to run: a pyproject.toml block becomes the
        `torch-doctor fix --sync` command that applies it to the inspected environment (built from
        ``command``, this run's own command line, so --python and --project come along)."""
        step = self.first_step
        if step is None:
            return None
        finding, remedy = step
        if remedy.kind is not RemedyKind.TOML:
            return step
        run_fix = Remedy(
            kind=RemedyKind.SHELL,
            summary="add the pyproject.toml block, then lock and sync: `torch-doctor fix "
            "--sync` shows the diff and asks before writing",
            text=fix_command(command),
            target=remedy.target,
        )
        return finding, run_fix


# The options of a run that name what it inspected: `fix` must act on the same environment.
_TARGET_OPTIONS = ("--python", "--project")


def fix_command(command: str) -> str:
    """`torch-doctor fix --sync` for the environment ``command`` (a check or explain
    command line) inspected: its --python and --project, nothing else."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    fix = ["torch-doctor", "fix"]
    for i, word in enumerate(words):
        option, equals, value = word.partition("=")
        if option not in _TARGET_OPTIONS:
            continue
        if equals:
            fix += [option, value]
        elif i + 1 < len(words):
            fix += [option, words[i + 1]]
    return " ".join(shlex.quote(w) for w in [*fix, "--sync"])
