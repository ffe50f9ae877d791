"""Can torch.compile's GPU path (triton) work here (catalogue 22)?

torch itself does not need these; ``torch.compile`` on a GPU does, at its first compiled
function: a C compiler for triton's launcher, a ptxas that knows the GPU's architecture,
and a GPU triton supports at all.
"""

from __future__ import annotations

from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts, NvidiaToolFacts, ToolchainFacts
from doctor.facts.machine import GpuFacts
from doctor.findings import Finding, Severity
from doctor.knowledge import first_cuda_for, last_cuda_major_for, triton_min_capability

__all__ = ["tool_for"]

BLACKWELL = (10, 0)  # triton compiles for 10.0 and later with ptxas-blackwell, if bundled


def tool_for(capability: tuple[int, int], toolchain: ToolchainFacts) -> NvidiaToolFacts | None:
    """The ptxas triton runs for a GPU of this compute capability."""
    if capability >= BLACKWELL and toolchain.tool("ptxas-blackwell") is not None:
        return toolchain.tool("ptxas-blackwell")
    return toolchain.tool("ptxas")


def _release(text: str) -> tuple[int, int] | None:
    parts = text.split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1])
    return None


def _gpu_problem(gpu: GpuFacts, toolchain: ToolchainFacts) -> str | None:
    capability = gpu.compute_capability
    if capability is None:
        return None
    label = f"GPU {gpu.index} ({gpu.name}, {gpu.sm})"
    if capability < triton_min_capability():
        floor = "{}.{}".format(*triton_min_capability())
        return (
            f"{label}: triton supports compute capability {floor} and later, so "
            "torch.compile's GPU backend refuses this GPU"
        )
    tool = tool_for(capability, toolchain)
    if tool is None or tool.release is None:
        reason = tool.error if tool is not None else "triton bundles no ptxas"
        return f"{label}: triton's ptxas cannot be run ({reason})"
    release = _release(tool.release)
    first = first_cuda_for(capability)
    last = last_cuda_major_for(capability)
    where = f"{tool.name} {tool.release} ({tool.source}: {tool.path})"
    if release is not None and first is not None and release < first:
        needed = "{}.{}".format(*first)
        return (
            f"{label}: {where} predates {gpu.sm}, which needs the ptxas of CUDA {needed} or later"
        )
    if release is not None and last is not None and release[0] > last:
        return f"{label}: {where} no longer compiles for {gpu.sm} (CUDA {last}.x was the last)"
    return None


@check(
    "torch-compile-toolchain",
    family="compile",
    summary="torch.compile's GPU path (triton) lacks a C compiler or a ptxas for this GPU.",
    label="torch.compile's toolchain (triton, ptxas, C compiler)",
)
def torch_compile_toolchain(facts: Facts) -> Outcome:
    toolchain = facts.toolchain
    if facts.torch is None or not facts.torch.is_cuda_build:
        return Skip("torch is not a CUDA build")
    if toolchain is None:
        return Skip("triton is not installed")
    environment = facts.interpreter.marker_environment if facts.interpreter else {}
    if environment.get("platform_system", "Linux") != "Linux":
        # triton-windows bundles its own compiler and names its tools *.exe.
        return Skip("judged on Linux only")
    gpus = facts.machine.gpus if facts.machine is not None else ()
    gpu_problems = [(g, p) for g in gpus if (p := _gpu_problem(g, toolchain)) is not None]
    problems: list[str] = []
    headline: list[str] = []
    if toolchain.c_compiler is None:
        headline.append("no C compiler")
        problems.append(
            "no C compiler: CC is not set and neither gcc nor clang is on PATH; triton builds "
            "its launcher with one (`RuntimeError: Failed to find C compiler. Please specify "
            "via CC environment variable`)"
        )
    if gpu_problems:
        headline.append(
            "triton cannot compile for " + ", ".join(str(g.sm) for g, _ in gpu_problems)
        )
        problems += [p for _, p in gpu_problems]
    if not problems:
        return []
    evidence = list(problems)
    if toolchain.c_compiler is not None:
        evidence.append(f"C compiler: {toolchain.c_compiler} ({toolchain.c_compiler_source})")
    for tool in toolchain.tools:
        if tool.release is not None:
            evidence.append(f"{tool.name}: CUDA {tool.release}, {tool.source} ({tool.path})")
    return [
        Finding(
            id="torch-compile-toolchain",
            severity=Severity.WARNING,
            title="torch.compile will fail on the GPU: " + "; ".join(headline),
            detail=(
                "torch itself loads and runs, but torch.compile (and anything else that uses "
                "triton, such as inductor's GPU kernels) fails at its first compiled function. "
                "triton JIT-compiles a small C launcher with the system C compiler and turns "
                "PTX into GPU code with its ptxas, which must know the GPU's architecture."
            ),
            evidence=tuple(evidence),
            data={
                "c_compiler": toolchain.c_compiler,
                "gpus": [{"index": g.index, "sm": g.sm, "problem": p} for g, p in gpu_problems],
                "tools": [
                    {"name": t.name, "path": t.path, "release": t.release, "source": t.source}
                    for t in toolchain.tools
                ],
            },
        )
    ]
