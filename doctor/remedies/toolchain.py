"""Remedies for torch-compile-toolchain: a C compiler, a newer ptxas, or no compiling."""

from __future__ import annotations

from collections.abc import Sequence

from doctor.checks.toolchain import tool_for
from doctor.facts import Facts
from doctor.facts.environment import triton_tool_variable
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.knowledge import first_cuda_for, triton_min_capability
from doctor.remedies import remedy_for

__all__: list[str] = []


@remedy_for("torch-compile-toolchain")
def torch_compile_toolchain(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    remedies: list[Remedy] = []
    toolchain = facts.toolchain
    if toolchain is not None and toolchain.c_compiler is None:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "install a C compiler, or point CC at one",
                "Debian/Ubuntu: `apt-get install gcc`; Fedora/RHEL: `dnf install gcc`; "
                "Alpine: `apk add gcc musl-dev`; or `export CC=/path/to/cc`.",
            )
        )
    gpus = {g.index: g for g in (facts.machine.gpus if facts.machine is not None else ())}
    variables: dict[str, str] = {}
    too_old: list[str] = []
    for row in finding.data.get("gpus", []):
        gpu = gpus.get(row["index"])
        if gpu is None or gpu.compute_capability is None or toolchain is None:
            continue
        if gpu.compute_capability < triton_min_capability():
            too_old.append(str(gpu.sm))
            continue
        tool = tool_for(gpu.compute_capability, toolchain)
        first = first_cuda_for(gpu.compute_capability)
        if tool is not None and first is not None:
            variables[triton_tool_variable(tool.name)] = "{}.{}".format(*first)
    if variables:
        lines = [
            f"export {variable}=/usr/local/cuda/bin/ptxas  # the ptxas of CUDA {needed} or later"
            for variable, needed in variables.items()
        ]
        remedies.append(
            Remedy(
                RemedyKind.ENV,
                "point triton at a ptxas that knows this GPU (or upgrade torch and triton "
                "together: `uv lock --upgrade-package torch --upgrade-package triton`)",
                "\n".join(lines) + "\n",
            )
        )
    if too_old:
        remedies.append(
            Remedy(
                RemedyKind.ENV,
                f"run without torch.compile on {', '.join(too_old)}",
                "export TORCHDYNAMO_DISABLE=1\n",
            )
        )
    return remedies
