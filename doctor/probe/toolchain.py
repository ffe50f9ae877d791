"""What torch.compile's GPU path needs beside torch: triton's ptxas and a C compiler.

triton picks its tools as triton/knobs.py does (3.x): ``TRITON_PTXAS_PATH`` (or
``TRITON_PTXAS_BLACKWELL_PATH``) when it names a usable file, else the copy bundled in
``triton/backends/nvidia/bin``; compute capability 10.0 and later uses ``ptxas-blackwell``
where triton bundles one. Its launcher is built with ``$CC``, else ``gcc``, else ``clang``
from ``PATH`` (triton/runtime/build.py). The tools are asked for their CUDA release (a
contained ``--version`` run) only when a GPU is known: that is what they would compile for.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence

from doctor.facts import DistributionFacts, NvidiaToolFacts, ToolchainFacts
from doctor.facts.environment import triton_tool_variable
from doctor.probe.contained import Contained

__all__ = ["TOOLS", "probe_toolchain"]

TOOLS = ("ptxas", "ptxas-blackwell")
TRITON_DISTRIBUTIONS = ("triton", "pytorch-triton")
_RELEASE = re.compile(r"release (\d+\.\d+)")


def _triton_dir(distributions: Sequence[DistributionFacts]) -> str | None:
    for dist in distributions:
        if dist.name in TRITON_DISTRIBUTIONS and not dist.shadowed:
            candidate = os.path.join(dist.location, "triton")
            if os.path.isdir(candidate):
                return candidate
    return None


def _c_compiler(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    if environ.get("CC") is not None:
        return environ["CC"], "CC"
    path = environ.get("PATH")
    for name in ("gcc", "clang"):
        found = shutil.which(name, path=path)
        if found is not None:
            return found, name
    return None, None


def _candidates(tool: str, triton_dir: str, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(path, source) in the order triton tries them: its variable, then the bundled copy."""
    candidates = []
    variable = triton_tool_variable(tool)
    if environ.get(variable):
        candidates.append((environ[variable], variable))
    bundled = os.path.join(triton_dir, "backends", "nvidia", "bin", tool)
    candidates.append((bundled, "bundled with triton"))
    return candidates


def _tools(
    tools: Sequence[str], triton_dir: str, environ: Mapping[str, str], timeout: float
) -> tuple[NvidiaToolFacts, ...]:
    """Each tool's CUDA release from ``--version``; every candidate runs at once."""
    started = {
        (tool, path): Contained([path, "--version"], timeout=timeout, env=environ)
        for tool in tools
        for path, _ in _candidates(tool, triton_dir, environ)
        if os.path.isfile(path)
    }
    runs = {key: child.wait() for key, child in started.items()}
    out = []
    for tool in tools:
        errors = []
        found = None
        for path, source in _candidates(tool, triton_dir, environ):
            run = runs.get((tool, path))
            if run is None:
                errors.append(f"{path}: no such file")
                continue
            match = _RELEASE.search(run.stdout + run.stderr) if run.ok else None
            if match:
                found = NvidiaToolFacts(tool, path, source, release=match.group(1))
                break
            errors.append(f"{path}: " + (run.describe_failure() if not run.ok else "no release"))
        out.append(
            found or NvidiaToolFacts(tool, None, "bundled with triton", error="; ".join(errors))
        )
    return tuple(out)


def probe_toolchain(
    distributions: Sequence[DistributionFacts],
    *,
    gpu_known: bool,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> ToolchainFacts | None:
    """None without triton (torch.compile has no GPU path to judge)."""
    env = os.environ if environ is None else environ
    triton_dir = _triton_dir(distributions)
    if triton_dir is None:
        return None
    compiler, source = _c_compiler(env)
    if not gpu_known:
        return ToolchainFacts(
            triton_dir, compiler, source, tools_skipped="no GPU is known to compile for"
        )
    wanted = [
        tool
        for tool in TOOLS
        if tool == "ptxas" or any(os.path.isfile(p) for p, _ in _candidates(tool, triton_dir, env))
    ]
    return ToolchainFacts(
        triton_dir, compiler, source, tools=_tools(wanted, triton_dir, env, timeout)
    )
