"""Remedies for the wheel and lock findings: TOML blocks and exact commands."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from packaging.utils import canonicalize_name

from doctor.checks.expectations import applicable_requirements, parse_requirement
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.metadata_block import entry_uv_uses, render_dependency_metadata

__all__ = ["in_uv_project", "install_command", "uninstall_command"]


def in_uv_project(facts: Facts) -> bool:
    """The inspected environment is the uv project's own venv (uv sync manages it)."""
    project = facts.project
    if project is None or project.pyproject_path is None or facts.interpreter is None:
        return False
    from pathlib import Path

    try:
        prefix = Path(facts.interpreter.prefix).resolve()
        root = Path(project.root).resolve()
    except OSError:
        return False
    return prefix.parent == root or root in prefix.parents


def _pip_command(facts: Facts, verb: str, specs: Sequence[str]) -> str:
    """``uv pip <verb>`` (torch was installed by uv) or ``python -m pip <verb>`` for the
    inspected interpreter."""
    quoted = " ".join(shlex.quote(s) for s in specs)
    python = facts.interpreter.executable if facts.interpreter else "python"
    torch = facts.distribution("torch")
    if torch is not None and torch.installer == "uv":
        return f"uv pip {verb} --python {shlex.quote(python)} {quoted}"
    confirm = " -y" if verb == "uninstall" else ""
    return f"{shlex.quote(python)} -m pip {verb}{confirm} {quoted}"


def install_command(facts: Facts, specs: Sequence[str]) -> str:
    """The command that installs ``specs`` into the inspected interpreter."""
    return _pip_command(facts, "install", specs)


def uninstall_command(facts: Facts, names: Sequence[str]) -> str:
    """The command that removes ``names`` from the inspected interpreter."""
    return _pip_command(facts, "uninstall", names)


def _specs(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [str(e["install"]) for e in entries]


@remedy_for("mixed-cuda-majors")
def _mixed_cuda_majors(finding: Finding, facts: Facts) -> list[Remedy]:
    rows = finding.data.get("foreign", [])
    leftovers = [str(r["name"]) for r in rows if not r["required_by"]]
    needed = [r for r in rows if r["required_by"]]
    remedies = []
    project = facts.project
    if leftovers and in_uv_project(facts) and project is not None:
        locked = [n for n in leftovers if n in project.locked_names]
        if not locked:
            remedies.append(
                Remedy(
                    RemedyKind.SHELL,
                    "uv.lock does not record them: uv sync removes what the lock does not hold",
                    "uv sync",
                )
            )
            leftovers = []
    if leftovers:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "remove the leftover wheels (nothing installed requires them)",
                uninstall_command(facts, leftovers),
            )
        )
    if needed:
        users = sorted({u for r in needed for u in r["required_by"]})
        major = finding.data.get("torch_cuda_major")
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"{', '.join(users)} want{'s' if len(users) == 1 else ''} another CUDA major",
                f"Install the CUDA {major} variant of {', '.join(users)}, or give "
                f"{'it' if len(users) == 1 else 'them'} an environment of its own.",
            )
        )
    return remedies


@remedy_for("missing-cuda-wheel")
def _missing_cuda_wheel(finding: Finding, facts: Facts) -> list[Remedy]:
    missing = finding.data.get("missing", [])
    project = facts.project
    remedies = []
    specs = _specs(missing)
    if finding.data.get("toolkit_extras_unknown") and not any(
        s.startswith("cuda-toolkit") for s in specs
    ):
        specs.append("cuda-toolkit")
    if in_uv_project(facts) and project is not None:
        locked = set(project.locked_names)
        if missing and all(m["name"] in locked for m in missing):
            remedies.append(
                Remedy(
                    RemedyKind.SHELL,
                    "uv.lock records these wheels: sync the environment with it",
                    "uv sync",
                )
            )
            return remedies
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "uv.lock does not record these wheels",
                "Fix the lock first (see lock-missing-dependencies if reported); a plain "
                "install would be removed by the next `uv sync`.",
            )
        )
    remedies.append(
        Remedy(RemedyKind.SHELL, "install the pinned wheels", install_command(facts, specs))
    )
    return remedies


@remedy_for("cuda-wheel-version-mismatch")
def _version_mismatch(finding: Finding, facts: Facts) -> list[Remedy]:
    wrong = finding.data.get("mismatched", [])
    if in_uv_project(facts):
        names = " ".join(f"--reinstall-package {shlex.quote(m['name'])}" for m in wrong)
        return [
            Remedy(
                RemedyKind.SHELL,
                "reinstall the versions uv.lock pins",
                f"uv sync {names}",
            ),
            Remedy(
                RemedyKind.TEXT,
                "if another dependency pulls a different version",
                "Pin torch's versions for the whole project with "
                '[tool.uv] override-dependencies = ["' + '", "'.join(_specs(wrong)) + '"].',
            ),
        ]
    return [
        Remedy(
            RemedyKind.SHELL,
            "install the versions torch pins",
            install_command(facts, _specs(wrong)),
        )
    ]


@remedy_for("cuda-wheel-files-missing")
def _files_missing(finding: Finding, facts: Facts) -> list[Remedy]:
    names = finding.data.get("packages", [])
    if in_uv_project(facts):
        flags = " ".join(f"--reinstall-package {shlex.quote(n)}" for n in names)
        return [Remedy(RemedyKind.SHELL, "reinstall the damaged wheels", f"uv sync {flags}")]
    python = facts.interpreter.executable if facts.interpreter else "python"
    torch = facts.distribution("torch")
    quoted = " ".join(shlex.quote(n) for n in names)
    if torch is not None and torch.installer == "uv":
        command = f"uv pip install --python {shlex.quote(python)} --reinstall {quoted}"
    else:
        command = f"{shlex.quote(python)} -m pip install --force-reinstall --no-deps {quoted}"
    return [Remedy(RemedyKind.SHELL, "reinstall the damaged wheels", command)]


@remedy_for("missing-torch-dependency")
def _missing_dependency(finding: Finding, facts: Facts) -> list[Remedy]:
    if in_uv_project(facts):
        return [Remedy(RemedyKind.SHELL, "sync the environment with uv.lock", "uv sync")]
    specs = _specs(finding.data.get("missing", []))
    return [Remedy(RemedyKind.SHELL, "install torch's requirements", install_command(facts, specs))]


@remedy_for("torch-not-installed")
def _torch_not_installed(finding: Finding, facts: Facts) -> list[Remedy]:
    if finding.data.get("locked"):
        return [Remedy(RemedyKind.SHELL, "install what uv.lock records", "uv sync")]
    if facts.project is not None and facts.project.pyproject_path is not None:
        return [
            Remedy(
                RemedyKind.TEXT,
                "add torch to the project",
                "Follow uv's PyTorch guide to choose the CUDA index for your driver, then "
                "`uv add torch`. torch-doctor prints the index block once it knows the driver.",
            )
        ]
    return [
        Remedy(
            RemedyKind.TEXT,
            "inspect the environment where torch is installed",
            "Run `torch-doctor --python /path/to/venv`, or install torch into this one.",
        )
    ]


def _declares_all(entry: Mapping[str, Any], missing: Sequence[str], facts: Facts) -> bool:
    """Whether a dependency-metadata entry declares every missing requirement, pins included.

    An entry copied from another build declares the same names with other versions:
    re-locking with it would install the wrong wheels, so it counts as not declaring them.
    """
    environment = facts.interpreter.marker_environment if facts.interpreter else {}
    requires = entry.get("requires-dist")
    if not isinstance(requires, list):
        return False
    declared, _ = applicable_requirements([str(r) for r in requires], environment)
    pins = {(canonicalize_name(r.name), r.specifier, frozenset(r.extras)) for r in declared}
    wanted = [parse_requirement(m) for m in missing]
    return all(
        w is not None and (canonicalize_name(w.name), w.specifier, frozenset(w.extras)) in pins
        for w in wanted
    )


@remedy_for("lock-missing-dependencies")
def _lock_missing(finding: Finding, facts: Facts) -> list[Remedy]:
    torch = facts.distribution("torch")
    if torch is None:
        return []
    pyproject = finding.data.get("pyproject_path")
    relock = "uv lock\nuv sync"
    entries = facts.project.dependency_metadata if facts.project else ()
    used = entry_uv_uses(entries, "torch", torch.version)
    if used is not None and _declares_all(used, finding.data.get("missing", []), facts):
        return [
            Remedy(
                RemedyKind.SHELL,
                "pyproject.toml already declares these for uv; uv.lock predates it: "
                "re-lock and sync",
                relock,
            )
        ]
    if used is not None and used.get("version") is not None:
        # uv reads the first entry for a version and silently ignores later ones:
        # appending a second entry would change nothing.
        summary = (
            f"replace the [[tool.uv.dependency-metadata]] entry for torch {used['version']} "
            "in pyproject.toml with this one (uv uses only the first entry for a version)"
        )
    else:
        summary = (
            "declare torch's metadata for uv (append to pyproject.toml, or run `torch-doctor fix`)"
        )
    return [
        Remedy(RemedyKind.TOML, summary, render_dependency_metadata(torch), target=pyproject),
        Remedy(RemedyKind.SHELL, "then re-lock and sync", relock),
    ]
