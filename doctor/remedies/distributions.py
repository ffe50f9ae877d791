"""Remedies for a damaged torch dist-info and for duplicate dist-info directories."""

from __future__ import annotations

import re
import shlex

from doctor.checks.cuda_compat import PYTORCH_INDEX_URL
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.packages import in_uv_project

__all__: list[str] = []

_LOCAL_VARIANT = re.compile(r"\+(cu\d+|cpu|rocm[\d.]+|xpu)$")


def _reinstall(facts: Facts, name: str, version: str | None) -> str:
    """The pinned reinstall of one distribution, without touching its dependencies."""
    python = facts.interpreter.executable if facts.interpreter else "python"
    spec = f"{name}=={version}" if version else name
    index = ""
    variant = _LOCAL_VARIANT.search(version or "")
    if variant is not None:  # a +cu130 build is only on PyTorch's index
        index = f" --index-url {PYTORCH_INDEX_URL}{variant.group(1)}"
    torch = facts.distribution("torch")
    if torch is not None and torch.installer == "uv":
        return f"uv pip install --python {shlex.quote(python)} --reinstall --no-deps{index} " + (
            shlex.quote(spec)
        )
    return f"{shlex.quote(python)} -m pip install --force-reinstall --no-deps{index} " + (
        shlex.quote(spec)
    )


@remedy_for("torch-metadata-damaged")
def _torch_metadata_damaged(finding: Finding, facts: Facts) -> list[Remedy]:
    if in_uv_project(facts):
        return [
            Remedy(
                RemedyKind.SHELL,
                "reinstall torch as uv.lock pins it",
                "uv sync --reinstall-package torch",
            )
        ]
    version = finding.data.get("version")
    return [
        Remedy(
            RemedyKind.SHELL,
            "reinstall torch at its installed version",
            _reinstall(facts, "torch", str(version) if version else None),
        )
    ]


@remedy_for("duplicate-dist-info")
def _duplicate_dist_info(finding: Finding, facts: Facts) -> list[Remedy]:
    stale = [str(d) for d in finding.data.get("stale_dirs", [])]
    name = str(finding.data.get("name"))
    keep = finding.data.get("keep_version")
    remove = "rm -rf -- " + " ".join(shlex.quote(d) for d in stale)
    if in_uv_project(facts):
        reinstall = f"uv sync --reinstall-package {shlex.quote(name)}"
    else:
        reinstall = _reinstall(facts, name, str(keep) if keep else None)
    return [
        Remedy(
            RemedyKind.SHELL,
            "remove the stale dist-info, then reinstall the version that stays",
            f"{remove}\n{reinstall}",
        )
    ]
