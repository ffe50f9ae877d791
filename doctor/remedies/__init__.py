"""Remedy building blocks: commands for the workflow that manages the inspected environment.

Each finding's remedy lives beside its check (doctor/checks/<family>.py); the pieces they
share live here: the install and uninstall command for uv projects, uv-managed venvs, pip
venvs and conda environments, pinned to what torch requires, and the pyproject.toml blocks.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import replace

from doctor.derive import Context, Workflow
from doctor.findings import Remedy, RemedyKind
from doctor.knowledge import pytorch_index_url

__all__ = [
    "conda_note",
    "drop_entries",
    "install_command",
    "pinned_spec",
    "pyproject_target",
    "reinstall_command",
    "reinstall_one",
    "run_in_project",
    "start_container_with_gpus",
    "uninstall_command",
    "variant_index_url",
]

# The local tag of a PyTorch-index build (torch 2.14.1+cu126): such a version is only on
# that index, never on PyPI.
_LOCAL_VARIANT = re.compile(r"\+(cu\d+|cpu|rocm[\d.]+|xpu)$")


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


def variant_index_url(version: str | None) -> str | None:
    """PyTorch's index of the build variant a version's local tag names (``+cu126`` ->
    ``https://download.pytorch.org/whl/cu126``); None for a version PyPI carries."""
    variant = _LOCAL_VARIANT.search(version or "")
    return pytorch_index_url() + variant.group(1) if variant else None


def reinstall_one(
    ctx: Context, name: str, version: str | None = None, *, no_deps: bool = True
) -> str | None:
    """Reinstall one distribution at an exact version, with this environment's tool.

    A uv project syncs it back from uv.lock. Otherwise ``name==version``: the version
    given (torch's own, with its local tag), else torch's pin, else the installed one,
    from the PyTorch index its local tag names. None when no version is known: a
    remedy then says so rather than install whatever an index has newest.
    """
    if ctx.workflow is Workflow.UV_PROJECT:
        return f"uv sync --reinstall-package {shlex.quote(name)}"
    version = version or ctx.pinned_version(name)
    if not version:
        return None
    return install_command(
        ctx,
        [f"{name}=={version}"],
        reinstall=True,
        no_deps=no_deps,
        index_url=variant_index_url(version),
    )


def drop_entries(ctx: Context, variable: str, entries: Iterable[str]) -> Remedy:
    """``export VAR=<its value without those entries>``, or ``unset VAR`` when nothing is
    left (LD_PRELOAD's entries are split on colons and white space, as ld.so(8) does)."""
    drop = set(entries)
    current = ctx.facts.environment.get(variable, "")
    parts = current.replace(":", " ").split() if variable == "LD_PRELOAD" else current.split(":")
    kept = [part for part in parts if part and part not in drop]
    text = f"export {variable}={shlex.quote(':'.join(kept))}" if kept else f"unset {variable}"
    names = ", ".join(e or "the empty entry (the working directory)" for e in sorted(drop))
    return Remedy(
        RemedyKind.ENV,
        f"drop {names} from {variable} in the shell (and the profile or module) that sets it",
        text,
    )


def start_container_with_gpus(container: str | None) -> Remedy:
    """How the container is started again with the host's GPUs, for its engine: Docker's
    --gpus (the NVIDIA Container Toolkit's runtime hook), Podman's CDI device (the
    toolkit's documented way for Podman), a GPU resource in Kubernetes."""
    if container == "kubernetes":
        return Remedy(
            RemedyKind.TEXT,
            "request the GPUs in the pod's spec",
            "Under the container's resources, set `limits: {nvidia.com/gpu: N}` (the NVIDIA "
            "device plugin must run on the node), then recreate the pod.",
        )
    if container == "podman":
        return Remedy(
            RemedyKind.SHELL,
            "on the host, start the container with the GPUs (IMAGE: its image; needs the "
            "toolkit's CDI spec, `nvidia-ctk cdi generate`)",
            "podman run --device nvidia.com/gpu=all IMAGE\n",
        )
    return Remedy(
        RemedyKind.SHELL,
        "on the host, start the container with the GPUs (IMAGE: its image)",
        "docker run --gpus all IMAGE\n",
    )


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


# Commands that act on the project of the directory they run in (uv finds pyproject.toml
# from there); `uv pip --python …` names its environment and runs anywhere.
_PROJECT_COMMANDS = ("uv sync", "uv lock", "uv add", "uv remove", "uv run", "torch-doctor lock")


def run_in_project(ctx: Context, remedies: Iterable[Remedy]) -> list[Remedy]:
    """The remedies, with ``cd <project>`` before uv's project commands when torch-doctor
    ran outside the project it inspected (``--python /elsewhere/proj/.venv``): pasted
    there, `uv sync` finds no pyproject.toml, or syncs the project of that directory."""
    out = list(remedies)
    project = ctx.facts.project
    if (
        ctx.workflow is not Workflow.UV_PROJECT
        or project is None
        or project.cwd_inside is not False
    ):
        return out
    cd = f"cd {shlex.quote(project.root)}"
    for i, remedy in enumerate(out):
        lines = [line.strip() for line in remedy.text.splitlines()]
        if remedy.kind is RemedyKind.SHELL and any(
            line.startswith(_PROJECT_COMMANDS) for line in lines
        ):
            out[i] = replace(remedy, text=f"{cd}\n{remedy.text}")
    return out
