"""The compatibility rules between driver, CUDA, GPU and torch build, as pure functions.

The numbers come from doctor/knowledge (data with sources); this module only applies
the rules (NVIDIA Blackwell Compatibility Guide; CUDA minor-version compatibility):

* a cubin for sm_XY runs on the same major X with minor >= Y; ``sm_XYa`` only on X.Y;
* PTX for compute_XY is JIT-compiled for any GPU with compute capability >= X.Y;
* a driver runs CUDA applications of its own CUDA version and below; within one major it
  also runs newer minors if it meets that major's minor-version-compatibility floor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from doctor.facts.machine import ArchListFacts, GpuFacts
from doctor.knowledge import (
    TorchBuild,
    mvc_floors,
    pytorch_index_url,
    toolkit_drivers,
    torch_builds,
)

__all__ = [
    "Target",
    "VariantChoice",
    "best_variant",
    "build_targets",
    "covering_target",
    "cuda_int",
    "cuda_int_text",
    "driver_at_least",
    "gpu_covered",
    "mvc_floor",
    "native_driver",
    "parse_cuda",
    "parse_target",
]


_TARGET = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")


@dataclass(frozen=True)
class Target:
    """One code target of a build: a cubin (sm) or PTX (compute) for a capability."""

    ptx: bool
    capability: tuple[int, int]
    arch_specific: bool = False

    @property
    def name(self) -> str:
        major, minor = self.capability
        return (
            f"{'compute' if self.ptx else 'sm'}_{major}{minor}{'a' if self.arch_specific else ''}"
        )

    def runs_on(self, capability: tuple[int, int]) -> bool:
        if self.ptx:
            return capability >= self.capability
        if self.arch_specific:
            return capability == self.capability
        return capability[0] == self.capability[0] and capability[1] >= self.capability[1]


def parse_target(name: str) -> Target | None:
    """``sm_120`` -> cubin for 12.0; ``compute_90`` -> PTX for 9.0; ``sm_90a`` exact 9.0."""
    match = _TARGET.match(name)
    if match is None:
        return None
    kind, major, minor, suffix = match.groups()
    return Target(kind == "compute", (int(major), int(minor)), suffix == "a")


def build_targets(archs: ArchListFacts) -> list[Target]:
    targets = [parse_target(n) for n in (*archs.sm, *archs.ptx)]
    return [t for t in targets if t is not None]


def covering_target(capability: tuple[int, int], targets: Sequence[Target]) -> Target | None:
    """The target the driver would use for this GPU: a cubin first, else PTX."""
    cubins = [t for t in targets if not t.ptx and t.runs_on(capability)]
    if cubins:
        return max(cubins, key=lambda t: t.capability)
    ptx = [t for t in targets if t.ptx and t.runs_on(capability)]
    return max(ptx, key=lambda t: t.capability) if ptx else None


def parse_cuda(text: str | None) -> tuple[int, int] | None:
    """``"12.8"`` -> (12, 8)."""
    if not text:
        return None
    match = re.match(r"^(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cuda_int(value: int) -> tuple[int, int]:
    """12040 -> (12, 4): NVML and cuDriverGetVersion encode 1000*major + 10*minor."""
    return value // 1000, (value % 1000) // 10


def cuda_int_text(value: int) -> str:
    return "{}.{}".format(*cuda_int(value))


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def driver_at_least(driver: str, floor: str) -> bool:
    """Compare dotted driver versions numerically ("570.124.06" >= "570.26")."""
    return _numbers(driver) >= _numbers(floor)


def native_driver(cuda: tuple[int, int], system: str = "Linux") -> str | None:
    """The driver the CUDA X.Y toolkit natively needs (its GA row), if the table has it."""
    text = "{}.{}".format(*cuda)
    for row in toolkit_drivers():
        if row.cuda == text and row.release == "GA":
            return row.windows if system == "Windows" else row.linux
    return None


def mvc_floor(major: int, system: str = "Linux") -> str | None:
    for floor in mvc_floors():
        if floor.major == major:
            return floor.windows if system == "Windows" else floor.linux
    return None


@dataclass(frozen=True)
class VariantChoice:
    """The CUDA variant of torch to install, and whether this torch release has it."""

    build: TorchBuild
    same_release: bool  # the installed torch release is published in this variant

    @property
    def index_name(self) -> str:
        return f"pytorch-{self.build.variant}"

    @property
    def index_url(self) -> str:
        return pytorch_index_url() + self.build.variant


def _release_bound(build: TorchBuild) -> tuple[int, ...]:
    return max((_numbers(s) for s in re.findall(r"[\d.]+", build.torch)), default=())


def _covers(build: TorchBuild, capabilities: Sequence[tuple[int, int]]) -> bool:
    targets = [Target(False, cc) for cc in build.sm] + [Target(True, cc) for cc in build.ptx]
    return all(covering_target(cc, targets) is not None for cc in capabilities)


def best_variant(
    *,
    driver_cuda: int | None,
    capabilities: Sequence[tuple[int, int]],
    torch_version: str | None,
    driver_version: str | None = None,
    system: str = "Linux",
) -> VariantChoice | None:
    """The CUDA variant of torch to install for this driver and these GPUs.

    A variant qualifies if it carries code for every GPU and the driver runs its CUDA,
    natively or through minor-version compatibility (same major, driver above the floor).
    Variants published for the installed torch release come first; among them, one the
    driver runs natively, then the newest CUDA. Otherwise the newest release that has a
    qualifying variant.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    supported = cuda_int(driver_cuda) if driver_cuda else None

    def runs(build: TorchBuild) -> bool:
        cuda = parse_cuda(build.cuda) or (0, 0)
        if supported is None or cuda <= supported:
            return True
        if cuda[0] != supported[0]:
            return False  # no compatibility across major versions
        floor = mvc_floor(cuda[0], system)
        return driver_version is None or floor is None or driver_at_least(driver_version, floor)

    def native(build: TorchBuild) -> bool:
        return supported is None or (parse_cuda(build.cuda) or (0, 0)) <= supported

    fitting = [b for b in torch_builds() if _covers(b, capabilities) and runs(b)]
    if not fitting:
        return None
    release: Version | None = None
    if torch_version:
        try:
            release = Version(Version(torch_version).public)
        except InvalidVersion:
            release = None
    same = [b for b in fitting if release is not None and release in SpecifierSet(b.torch)]
    if same:
        return VariantChoice(max(same, key=lambda b: (native(b), parse_cuda(b.cuda))), True)
    newest = max(fitting, key=lambda b: (_release_bound(b), native(b), parse_cuda(b.cuda)))
    return VariantChoice(newest, False)


def gpu_covered(gpu: GpuFacts, archs: ArchListFacts | None) -> bool | None:
    """Whether this build carries code for the GPU; None when either side is unknown."""
    if archs is None or gpu.compute_capability is None or archs.source == "unknown":
        return None
    return covering_target(gpu.compute_capability, build_targets(archs)) is not None
