"""Which tool manages the inspected environment, so that remedies speak its language."""

from __future__ import annotations

import enum
from pathlib import PurePath

from doctor.facts import Facts

__all__ = ["Workflow", "detect_workflow", "owns_project"]


class Workflow(str, enum.Enum):
    """How the inspected environment is managed; remedies are written for it."""

    UV_PROJECT = "uv-project"  # the venv of a uv project: pyproject.toml, uv lock, uv sync
    UV_VENV = "uv-venv"  # a venv made or filled by uv without a project: uv pip
    PIP_VENV = "pip-venv"  # a venv (or a plain interpreter) managed by pip
    CONDA = "conda"  # a conda environment: conda owns some packages, pip others

    @property
    def label(self) -> str:
        return {
            Workflow.UV_PROJECT: "uv project",
            Workflow.UV_VENV: "uv-managed venv",
            Workflow.PIP_VENV: "pip venv",
            Workflow.CONDA: "conda environment",
        }[self]


def owns_project(facts: Facts) -> bool:
    """The inspected environment is the uv project's own venv (`uv sync` manages it).

    It is when UV_PROJECT_ENVIRONMENT names it, when the user named the project with
    --project, or when it is the project's ``.venv`` (the one `uv sync` and `uv run` use)
    and uv manages the project (see ``_uv_manages``). A venv of another name in the
    project (``venv/``, made by ``python -m venv``) is not the one `uv sync` syncs, and a
    pip venv in a setuptools project without uv.lock is pip's: their remedies are pip's or
    `uv pip`'s. A project found only from the working directory does not own a venv that
    lives elsewhere: remedies never target a pyproject.toml of another checkout.

    The paths compared are the ones the probes resolved (symlinks followed); facts built
    without them (by hand, in tests) are compared as written.
    """
    project = facts.project
    interpreter = facts.interpreter
    if project is None or project.pyproject_path is None or interpreter is None:
        return False
    if project.found_by == "--project":
        return True
    prefix = PurePath(interpreter.real_prefix or interpreter.prefix)
    root = PurePath(project.real_root or project.root)
    named = facts.environment.get("UV_PROJECT_ENVIRONMENT")
    if named:
        environment = project.real_environment or str(root / named)
        return PurePath(environment) == prefix
    return prefix == root / ".venv" and _uv_manages(facts)


def _uv_manages(facts: Facts) -> bool:
    """Whether uv manages the project of the inspected ``.venv``: it has a uv.lock or a
    [tool.uv] table, or uv made the venv or installed torch into it. A ``.venv`` that
    ``python -m venv`` made and pip filled, in a project uv never locked, is pip's."""
    project = facts.project
    assert project is not None
    if project.lock_path is not None or project.tool_uv:
        return True
    interpreter = facts.interpreter
    if interpreter is not None and interpreter.venv_creator == "uv":
        return True
    torch = facts.distribution("torch")
    return torch is not None and torch.installer == "uv"


def detect_workflow(facts: Facts) -> Workflow:
    interpreter = facts.interpreter
    if interpreter is not None and interpreter.conda:
        return Workflow.CONDA
    if owns_project(facts):
        return Workflow.UV_PROJECT
    torch = facts.distribution("torch")
    created_by_uv = interpreter is not None and interpreter.venv_creator == "uv"
    if created_by_uv or (torch is not None and torch.installer == "uv"):
        return Workflow.UV_VENV
    return Workflow.PIP_VENV
