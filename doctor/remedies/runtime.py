"""Remedies for the runtime findings (check --deep) that are roots of their own.

A runtime finding that another finding explains (``consequence_of``) gets none: the root's
remedy is the fix, and one cause has one remedy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.packages import in_uv_project, install_command

__all__: list[str] = []


def _python(facts: Facts) -> str:
    return shlex.quote(facts.interpreter.executable if facts.interpreter else "python")


@remedy_for("torch-import-failed")
def torch_import_failed(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    if finding.data.get("consequence_of"):
        return []
    if finding.data.get("status") == "timed out":
        return [
            Remedy(
                RemedyKind.SHELL,
                "see what blocks at start-up or import (the last module printed is the one "
                "that hangs; .pth files and sitecustomize run first)",
                f'{_python(facts)} -X importtime -c "import torch"\n',
            )
        ]
    torch = facts.distribution("torch")
    if torch is None:
        return []
    if in_uv_project(facts):
        command = "uv sync --reinstall-package torch\n"
    else:
        command = install_command(facts, ["--force-reinstall", f"torch=={torch.version}"]) + "\n"
    return [Remedy(RemedyKind.SHELL, "reinstall torch at its version, with its pins", command)]


@remedy_for("cuda-unavailable")
def cuda_unavailable(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    if finding.data.get("consequence_of"):
        return []
    return [
        Remedy(
            RemedyKind.TEXT,
            "read torch's warning in the evidence",
            "Error 803/804: the CUDA driver libraries and the kernel module disagree (reboot "
            "after a driver update, or take cuda-compat libraries off the loader path); "
            "'driver too old': update the driver or install a torch built for an older CUDA.",
        )
    ]
