"""Remedies for torch-companion-mismatch: torchvision and torchaudio from torch's index."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from doctor.checks.cuda_compat import PYTORCH_INDEX_URL
from doctor.checks.sources import source_entries
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.knowledge import torch_release
from doctor.remedies import remedy_for
from doctor.remedies.driver import platform_marker, render_index_block
from doctor.remedies.packages import in_uv_project, install_command

__all__: list[str] = []


def _tagged_variant(version: str) -> str | None:
    """'cu130' for torch 2.14.1+cu130: the PyTorch index torch came from (None from PyPI)."""
    return version.split("+", 1)[1] if "+" in version else None


def _sources_block(facts: Facts, names: list[str], variant: str | None) -> tuple[str, str] | None:
    """(summary, TOML) sending the companions where torch comes from; None for PyPI."""
    project = facts.project
    declared = {i.name for i in project.indexes} if project else set()
    routed = [
        str(e["index"])
        for e in source_entries(project.sources.get("torch") if project else None)
        if e.get("index") in declared
    ]
    if routed:
        # torch's own source names a declared index already: the companions go there too.
        block = render_index_block(routed[0], None, names, platform_marker(facts))
        return f"take {', '.join(names)} from {routed[0]}, as torch", block
    if variant is None:
        return None
    block = render_index_block(
        f"pytorch-{variant}", PYTORCH_INDEX_URL + variant, ["torch", *names], platform_marker(facts)
    )
    return f"take {', '.join(names)} from torch's index ({variant}), as torch", block


@remedy_for("torch-companion-mismatch")
def torch_companion_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    torch_version = str(finding.data.get("torch_version"))
    names = [str(c["name"]) for c in finding.data.get("companions", [])]
    variant = _tagged_variant(torch_version)
    release = torch_release(torch_version)
    remedies: list[Remedy] = []
    if in_uv_project(facts):
        upgrade = " ".join(f"--upgrade-package {shlex.quote(p)}" for p in ["torch", *names])
        toml = _sources_block(facts, names, variant)
        if toml is not None:
            summary, block = toml
            remedies.append(
                Remedy(
                    RemedyKind.TOML,
                    summary,
                    block,
                    target=facts.project.pyproject_path if facts.project else None,
                )
            )
        else:
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    f"take {', '.join(names)} from PyPI, as torch",
                    f"torch {torch_version} comes from PyPI: remove the [tool.uv.sources] "
                    f"entries of {', '.join(names)} from pyproject.toml.",
                )
            )
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "re-lock them together and sync",
                f"uv lock {upgrade}\nuv sync\n",
            )
        )
        return remedies
    # Outside a uv project: install the companion release built for this torch, when the
    # knowledge table names it (an unpinned install could replace torch itself).
    specs = [
        f"torchvision=={release.torchvision}.*"
        for name in names
        if name == "torchvision" and release is not None and release.torchvision
    ]
    where = f" from {PYTORCH_INDEX_URL}{variant}" if variant is not None else " from PyPI"
    if len(specs) == len(names):
        command = install_command(facts, specs)
        if variant is not None:
            command += f" --index-url {PYTORCH_INDEX_URL}{variant}"
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"install the {', '.join(names)} built for torch {torch_version}",
                command,
            )
        )
    else:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"install the {', '.join(names)} built for torch {torch_version}",
                f"Install the release of {', '.join(names)} whose metadata requires "
                f"torch=={torch_version.split('+', 1)[0]}{where}, with the same installer "
                "as torch; an unpinned install may replace torch itself.",
            )
        )
    return remedies
