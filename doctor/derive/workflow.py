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

    It is when the venv lives in the project, when UV_PROJECT_ENVIRONMENT names it, or when
    the user named the project with --project. A project found only from the working
    directory does not own a venv that lives elsewhere: remedies never target a
    pyproject.toml of another checkout.

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
        if PurePath(environment) == prefix:
            return True
    return prefix.parent == root or root in prefix.parents


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
