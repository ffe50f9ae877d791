"""The CUDA toolkit that would build a torch extension here, found as torch does.

torch.utils.cpp_extension's ``_find_cuda_home`` (torch 2.x): ``CUDA_HOME``, else
``CUDA_PATH``, else the directory above ``nvcc`` found on ``PATH``, else ``/usr/local/cuda``
when it exists; it runs ``<CUDA_HOME>/bin/nvcc``. nvcc calls the host compiler given with
``-ccbin`` (cpp_extension passes ``$CC`` when set), else ``gcc`` from ``PATH``. Every tool
runs contained (``--version`` / ``-dumpfullversion``) with a timeout, and only when present:
nothing here runs on a machine without a toolkit.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping

from doctor.facts.extensions import CudaToolkitFacts, HostCompilerFacts
from doctor.probe.contained import Contained
from doctor.probe.text import clean

__all__ = ["CudaToolkitProbe", "nvcc_release", "probe_cuda_toolkit"]

_RELEASE = re.compile(r"release (\d+\.\d+)")
DEFAULT_CUDA_HOME = "/usr/local/cuda"


def nvcc_release(text: str) -> str | None:
    """``12.1`` from nvcc's ``Cuda compilation tools, release 12.1, V12.1.105``."""
    match = _RELEASE.search(text)
    return match.group(1) if match else None


def _clean_or_none(text: str | None) -> str | None:
    return None if text is None else clean(text)


def _cuda_home(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(variable):
            return env[variable], variable
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc is not None:
        return os.path.dirname(os.path.dirname(nvcc)), "nvcc on PATH"  # as torch: no realpath
    if os.path.isdir(DEFAULT_CUDA_HOME):
        return DEFAULT_CUDA_HOME, DEFAULT_CUDA_HOME
    return None, None


def _nvccs_on_path(env: Mapping[str, str]) -> list[str]:
    """Every nvcc on PATH, each toolkit once (by the file it resolves to)."""
    seen: set[str] = set()
    out = []
    for directory in (env.get("PATH") or "").split(os.pathsep):
        candidate = os.path.join(directory or ".", "nvcc")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            real = os.path.realpath(candidate)
            if real not in seen:
                seen.add(real)
                out.append(candidate)
    return out


def _host_compiler(env: Mapping[str, str]) -> tuple[str, str] | None:
    if env.get("CC"):
        return shutil.which(env["CC"], path=env.get("PATH")) or env["CC"], "CC"
    gcc = shutil.which("gcc", path=env.get("PATH"))
    return (gcc, "PATH") if gcc else None


def _compiler_facts(path: str, source: str, child: Contained) -> HostCompilerFacts:
    # The path is $CC as the environment spells it: cleaned, as every such string.
    path = clean(path)
    run = child.wait()
    if not run.ok:
        return HostCompilerFacts(path, source, error=clean(run.describe_failure()))
    text = (run.stdout or run.stderr).strip().split("\n", 1)[0]
    family = "clang" if "clang" in text.lower() else "gcc"
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return HostCompilerFacts(path, source, family, match.group(1) if match else None)


class CudaToolkitProbe:
    """Starts every ``--version`` run at once when created; ``finish`` collects them, so the
    tools run while the doctor's other probes do."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, timeout: float = 60.0) -> None:
        env = os.environ if environ is None else environ
        self.home, self.source = _cuda_home(env)
        on_path = _nvccs_on_path(env)
        self.found = self.home is not None or bool(on_path)
        nvcc = os.path.join(self.home, "bin", "nvcc") if self.home is not None else None
        self.nvcc = nvcc if nvcc is not None and os.path.isfile(nvcc) else None
        chosen = os.path.realpath(self.nvcc) if self.nvcc else None
        self.others = [p for p in on_path if os.path.realpath(p) != chosen]
        self.first_on_path = on_path[0] if on_path else None
        limit = min(timeout, 20.0)
        self.started: dict[str, Contained] = {}
        self.compiler = _host_compiler(env) if self.found else None
        self.compiler_child: Contained | None = None
        if not self.found:
            return
        for path in [self.nvcc, *self.others]:
            if path:
                self.started[path] = Contained([path, "--version"], timeout=limit, env=env)
        if self.compiler is not None:
            self.compiler_child = Contained([self.compiler[0], "--version"], timeout=limit, env=env)

    def finish(self) -> CudaToolkitFacts | None:
        """None when no toolkit is found (no CUDA_HOME, no nvcc, no /usr/local/cuda)."""
        if not self.found:
            return None
        runs = {p: child.wait() for p, child in self.started.items()}
        release = error = None
        if self.nvcc is not None:
            run = runs[self.nvcc]
            release = nvcc_release(run.stdout) if run.ok else None
            if release is None:
                error = run.describe_failure() if not run.ok else "no release in its --version"
        elif self.home is not None:
            error = f"{self.home}/bin/nvcc: no such file"
        host = None
        if self.compiler is not None and self.compiler_child is not None:
            host = _compiler_facts(self.compiler[0], self.compiler[1], self.compiler_child)
        # Paths from CUDA_HOME, CUDA_PATH and PATH: cleaned, as every string from the
        # environment (the tools ran with the paths as they are).
        return CudaToolkitFacts(
            cuda_home=_clean_or_none(self.home),
            cuda_home_source=self.source,
            nvcc=_clean_or_none(self.nvcc),
            release=release,
            error=_clean_or_none(error),
            others=tuple(
                (clean(p), nvcc_release(runs[p].stdout) if runs[p].ok else None)
                for p in self.others
            ),
            host_compiler=host,
            first_on_path=_clean_or_none(self.first_on_path),
        )


def probe_cuda_toolkit(
    environ: Mapping[str, str] | None = None, *, timeout: float = 60.0
) -> CudaToolkitFacts | None:
    """None when no toolkit is found (no CUDA_HOME, no nvcc, no /usr/local/cuda)."""
    return CudaToolkitProbe(environ, timeout=timeout).finish()
