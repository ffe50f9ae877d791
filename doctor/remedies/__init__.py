"""Remedy building blocks: commands for the workflow that manages the inspected environment.

Each finding's remedy lives beside its check (doctor/checks/<family>.py); the pieces they
share live here: the install and uninstall command for uv projects, uv-managed venvs, pip
venvs and conda environments, pinned to what torch requires, and the pyproject.toml blocks.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from doctor.derive import Context, Workflow
from doctor.findings import Remedy, RemedyKind

__all__ = [
    "install_command",
    "pinned_spec",
    "pyproject_target",
    "reinstall_command",
    "uninstall_command",
]


def _quoted(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _uv_pip(ctx: Context) -> bool:
    return ctx.workflow in (Workflow.UV_VENV, Workflow.UV_PROJECT)


def install_command(
    ctx: Context,
    specs: Sequence[str],
    *,
    reinstall: bool = False,
    no_deps: bool = False,
    index_url: str | None = None,
) -> str:
    """One command that installs ``specs`` (pinned) into the inspected interpreter."""
    if _uv_pip(ctx):
        words = ["uv", "pip", "install", "--python", ctx.python]
        if reinstall:
            words.append("--reinstall")
    else:
        words = [ctx.python, "-m", "pip", "install"]
        if reinstall:
            words.append("--force-reinstall")
    if no_deps:
        words.append("--no-deps")
    if index_url is not None:
        words += ["--index-url", index_url]
    return _quoted([*words, *specs])


def uninstall_command(ctx: Context, names: Sequence[str]) -> str:
    """One command that removes ``names`` from the inspected interpreter."""
    if _uv_pip(ctx):
        return _quoted(["uv", "pip", "uninstall", "--python", ctx.python, *names])
    return _quoted([ctx.python, "-m", "pip", "uninstall", "-y", *names])


def pinned_spec(ctx: Context, wheel: str) -> str:
    """``name==version`` as torch pins it (else as installed): never an unpinned name."""
    version = ctx.pinned_version(wheel)
    return f"{wheel}=={version}" if version else wheel


def reinstall_command(ctx: Context, wheels: Sequence[str]) -> str:
    """Put the wheels torch pins back in place, at torch's pins, with this venv's tool."""
    unique = list(dict.fromkeys(wheels))
    if ctx.workflow is Workflow.UV_PROJECT:
        return "uv sync " + " ".join(f"--reinstall-package {shlex.quote(w)}" for w in unique)
    return install_command(ctx, [pinned_spec(ctx, w) for w in unique], reinstall=True, no_deps=True)


def conda_note(ctx: Context) -> list[Remedy]:
    """In a conda environment, say which installer the commands use (never mix silently)."""
    if ctx.workflow is not Workflow.CONDA:
        return []
    return [
        Remedy(
            RemedyKind.TEXT,
            "this is a conda environment",
            "The commands use pip, which installed torch's wheels here. Packages conda owns "
            "(`conda list` shows their channel) should be changed with conda instead, and "
            "conda's own cudatoolkit/pytorch-cuda packages should not be mixed with torch's "
            "pip wheels.",
        )
    ]


def pyproject_target(ctx: Context) -> str | None:
    """The pyproject.toml a TOML remedy belongs in: only the inspected venv's own project."""
    project = ctx.facts.project
    if ctx.workflow is Workflow.UV_PROJECT and project is not None:
        return project.pyproject_path
    return None
