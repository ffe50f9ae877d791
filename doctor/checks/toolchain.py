"""Can torch.compile's GPU path (triton) work here (catalogue 22)?

torch itself does not need these; ``torch.compile`` on a GPU does, at its first compiled
function: a C compiler for triton's launcher, a ptxas that knows the GPU's architecture,
and a GPU triton supports at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.facts import NvidiaToolFacts, ToolchainFacts
from doctor.facts.environment import triton_tool_variable
from doctor.facts.machine import GpuFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import first_cuda_for, last_cuda_major_for, triton_min_capability

__all__ = ["GpuToolProblem", "ToolRef", "TorchCompileToolchain"]


@dataclass(frozen=True)
class GpuToolProblem:
    index: int
    sm: str | None
    problem: str


@dataclass(frozen=True)
class ToolRef:
    name: str
    path: str | None
    release: str | None
    source: str


@dataclass(frozen=True)
class TorchCompileToolchain(Payload):
    c_compiler: str | None
    gpus: tuple[GpuToolProblem, ...]
    tools: tuple[ToolRef, ...]

    def subjects(self) -> frozenset[str]:
        # Inductor needs the C compiler on both devices (triton builds its launcher with
        # it); triton's ptxas only on a GPU. torch-compile-failed names the same words.
        subjects = set()
        if self.c_compiler is None:
            subjects |= {"c-compiler", "triton"}
        if self.gpus:
            subjects.add("triton")
        return frozenset(subjects)


BLACKWELL = (10, 0)  # triton compiles for 10.0 and later with ptxas-blackwell, if bundled


def _tool_for(capability: tuple[int, int], toolchain: ToolchainFacts) -> NvidiaToolFacts | None:
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
    if capability < triton_min_capability():
        floor = "{}.{}".format(*triton_min_capability())
        return (
            f"triton supports compute capability {floor} and later, so "
            "torch.compile's GPU backend refuses this GPU"
        )
    tool = _tool_for(capability, toolchain)
    if tool is None or tool.release is None:
        reason = tool.error if tool is not None else "triton bundles no ptxas"
        return f"triton's ptxas cannot be run ({reason})"
    release = _release(tool.release)
    first = first_cuda_for(capability)
    last = last_cuda_major_for(capability)
    where = f"{tool.name} {tool.release} ({tool.source}: {tool.path})"
    if release is not None and first is not None and release < first:
        needed = "{}.{}".format(*first)
        return f"{where} predates {gpu.sm}, which needs the ptxas of CUDA {needed} or later"
    if release is not None and last is not None and release[0] > last:
        return f"{where} no longer compiles for {gpu.sm} (CUDA {last}.x was the last)"
    return None


def _gpus_label(indexes: list[int]) -> str:
    if len(indexes) == 1:
        return f"GPU {indexes[0]}"
    if indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"GPUs {indexes[0]}-{indexes[-1]}"
    return "GPUs " + ", ".join(str(i) for i in indexes)


@check(
    "torch-compile-toolchain",
    severities=(Severity.WARNING,),
    family="toolchain",
    summary="torch.compile's GPU path (triton) lacks a C compiler or a ptxas for this GPU.",
    label="torch.compile has its toolchain (triton's ptxas, a C compiler)",
    payload=TorchCompileToolchain,
    # triton-windows bundles its own compiler and names its tools *.exe: Linux only.
    requires=("torch", "cuda-build", "linux"),
)
def torch_compile_toolchain(ctx: Context) -> Outcome:
    facts = ctx.facts
    toolchain = facts.toolchain
    if toolchain is None:
        return Skip("triton is not installed")
    gpus = facts.machine.gpus if facts.machine is not None else ()
    gpu_problems: list[tuple[GpuFacts, str]] = []
    # GPUs of one model share their problem: said once for them all ("GPUs 0-7 (…)").
    alike: dict[tuple[str, str, str], list[int]] = {}
    for g in gpus:
        if (p := _gpu_problem(g, toolchain)) is not None:
            gpu_problems.append((g, f"GPU {g.index} ({g.name}, {g.sm}): {p}"))
            alike.setdefault((g.name, str(g.sm), p), []).append(g.index)
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
        sms = dict.fromkeys(str(g.sm) for g, _ in gpu_problems)
        headline.append("triton cannot compile for " + ", ".join(sms))
        problems += [
            f"{_gpus_label(indexes)} ({name}, {sm}): {problem}"
            for (name, sm, problem), indexes in alike.items()
        ]
    if not problems and not gpus:
        # Only the C compiler was judged: a pass would claim triton's ptxas was checked.
        return Skip(
            f"no GPU is known, so triton's ptxas was not asked (C compiler: {toolchain.c_compiler})"
        )
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
            data=TorchCompileToolchain(
                c_compiler=toolchain.c_compiler,
                gpus=tuple(GpuToolProblem(g.index, g.sm, p) for g, p in gpu_problems),
                tools=tuple(ToolRef(t.name, t.path, t.release, t.source) for t in toolchain.tools),
            ),
        )
    ]


@remedy("torch-compile-toolchain")
def _torch_compile_toolchain(finding: Finding[TorchCompileToolchain], ctx: Context) -> list[Remedy]:
    facts = ctx.facts
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
    for row in finding.data.gpus:
        gpu = gpus.get(row.index)
        if gpu is None or gpu.compute_capability is None or toolchain is None:
            continue
        if gpu.compute_capability < triton_min_capability():
            too_old.append(str(gpu.sm))
            continue
        tool = _tool_for(gpu.compute_capability, toolchain)
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
                "point triton at a ptxas that knows this GPU",
                "\n".join(lines) + "\n",
            )
        )
        # The other way: a newer triton, whose own ptxas knows newer GPUs. torch pins its
        # triton, so they move together; only a uv project has one command for that.
        if ctx.workflow is Workflow.UV_PROJECT:
            remedies.append(
                Remedy(
                    RemedyKind.SHELL,
                    "or upgrade torch and triton together (a newer triton's ptxas knows "
                    "newer GPUs)",
                    "uv lock --upgrade-package torch --upgrade-package triton\nuv sync\n",
                )
            )
        else:
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    "or upgrade torch",
                    "torch pins its triton, and a newer triton's ptxas knows newer GPUs: a "
                    "newer torch brings one.",
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
