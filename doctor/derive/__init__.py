"""Derive: the views every stage needs, computed once from the facts.

``derive(facts)`` builds the ``Context`` that checks, remedies and renderers read:
torch's expected wheels, the GPUs CUDA will expose and whether the build covers them,
the distributions a report should list, and the workflow (uv project, uv-managed venv,
pip venv, conda) remedies are written for. Pure: no I/O, no caches between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.utils import canonicalize_name

from doctor.derive.cuda_compat import cuda_int_text, gpu_covered
from doctor.derive.expectations import Expectations, compute_expectations, parse_requirement
from doctor.derive.gpus import fabric_unready, hidden_by, visible_gpus
from doctor.derive.workflow import Workflow, detect_workflow
from doctor.facts import DistributionFacts, Facts
from doctor.facts.machine import GpuFacts, MachineFacts
from doctor.knowledge.cuda_libraries import cuda_library, wheel_matches

__all__ = ["Context", "GpuCoverage", "Workflow", "derive"]

# Distributions worth listing in a torch report, besides what torch itself requires: the
# maintainers' templates ask for numpy and transformers too (a numpy 2 under an extension
# built for numpy 1 is a classic import failure).
RELEVANT_PREFIXES = (
    "numpy",
    "transformers",
    "torch",
    "nvidia-",
    "cuda-",
    "triton",
    "pytorch-triton",
    "jax",
    "tensorflow",
    "onnxruntime",
    "xformers",
    "flash-attn",
    "vllm",
    "cupy",
)


@dataclass(frozen=True)
class GpuCoverage:
    """One GPU, whether this torch build carries code for it (None: unknown), and whether
    its NVSwitch fabric is not ready (registration pending or failed)."""

    gpu: GpuFacts
    covered: bool | None
    fabric_unready: bool = False


@dataclass(frozen=True)
class Context:
    """The facts and what every stage derives from them, computed once per run."""

    facts: Facts
    expected: Expectations | None
    workflow: Workflow
    torch: DistributionFacts | None  # the torch distribution that wins on sys.path
    torch_version: str | None  # torch/version.py's (with the local tag), else the dist's
    visible_gpus: tuple[GpuFacts, ...]
    gpus_hidden: bool  # CUDA_VISIBLE_DEVICES hides every GPU that is here
    coverage: tuple[GpuCoverage, ...]
    relevant_distributions: tuple[DistributionFacts, ...]

    @property
    def machine(self) -> MachineFacts | None:
        return self.facts.machine

    @property
    def marker_environment(self) -> dict[str, str]:
        interpreter = self.facts.interpreter
        return interpreter.marker_environment if interpreter is not None else {}

    @property
    def python(self) -> str:
        """The inspected interpreter, as a command names it."""
        interpreter = self.facts.interpreter
        return interpreter.executable if interpreter is not None else "python"

    @property
    def torch_label(self) -> str:
        return f"torch {self.torch_version}" if self.torch_version else "torch"

    @property
    def driver_cuda_text(self) -> str | None:
        """The CUDA version the driver supports, as "13.0" (None when unknown)."""
        machine = self.facts.machine
        cuda = machine.driver_cuda_version if machine is not None else None
        return cuda_int_text(cuda) if cuda else None

    @property
    def is_cuda_build(self) -> bool:
        return self.facts.torch is not None and self.facts.torch.is_cuda_build

    def pinned_wheels(self, soname: str) -> list[str]:
        """The wheels torch's own requirements name for this soname (none for a torch built
        against a system CUDA, e.g. conda's or a distribution's, which pins no wheel)."""
        library = cuda_library(soname)
        if library is None or self.expected is None:
            return []
        return [
            w.name
            for w in self.expected.cuda
            if any(wheel_matches(stem, w.name) for stem in library.wheels)
        ]

    def providing_wheels(self, soname: str) -> list[str]:
        """The wheels that ship this soname (installed or not), torch's pins first."""
        library = cuda_library(soname)
        if library is None:
            return []
        names = self.pinned_wheels(soname)
        if not names:
            names = [
                d.name
                for d in self.facts.distributions
                if not d.shadowed and any(wheel_matches(s, d.name) for s in library.wheels)
            ]
        return names or list(library.wheels)

    def pinned_version(self, wheel: str) -> str | None:
        """The version torch pins exactly for a wheel (``==9.24.0.43``), else the installed."""
        if self.expected is not None:
            for expected in self.expected.wheels:
                spec = expected.specifier
                if expected.name == wheel and spec.startswith("==") and "," not in spec:
                    version = spec[2:]
                    return version[:-2] if version.endswith(".*") else version
        installed = self.facts.distribution(wheel)
        return installed.version if installed is not None else None


def _relevant(facts: Facts, torch: DistributionFacts | None) -> tuple[DistributionFacts, ...]:
    """torch's family, the CUDA wheels, what torch requires (any marker), and any copy that
    is shadowed or damaged: what a torch report lists."""
    required: set[str] = set()
    for text in torch.requires_dist if torch is not None else ():
        requirement = parse_requirement(text)
        if requirement is not None:
            required.add(canonicalize_name(requirement.name))
    return tuple(
        d
        for d in facts.distributions
        if d.name in required or d.name.startswith(RELEVANT_PREFIXES) or d.shadowed or d.error
    )


def derive(facts: Facts) -> Context:
    torch = facts.distribution("torch")
    build = facts.torch
    version = build.version if build is not None and build.version else None
    if version is None and torch is not None:
        version = torch.version
    machine = facts.machine
    gpus = machine.gpus if machine is not None else ()
    cvd = machine.cuda_visible_devices if machine is not None else None
    archs = machine.torch_archs if machine is not None else None
    cuda_build = build is not None and build.is_cuda_build
    expected = compute_expectations(facts)
    return Context(
        facts=facts,
        expected=expected,
        workflow=detect_workflow(facts),
        torch=torch,
        torch_version=version,
        visible_gpus=visible_gpus(cvd, gpus),
        gpus_hidden=hidden_by(cvd, gpus),
        coverage=tuple(
            GpuCoverage(g, gpu_covered(g, archs) if cuda_build else None, fabric_unready(g))
            for g in gpus
        ),
        relevant_distributions=_relevant(facts, torch),
    )
