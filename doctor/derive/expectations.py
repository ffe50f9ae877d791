"""What torch expects to find installed here, derived from facts (pure, no I/O).

torch's own Requires-Dist is evaluated with the *inspected* interpreter's marker
environment. CUDA 13 builds require ``cuda-toolkit[cublas,cudart,...]==13.0.x``; the
extras are expanded through cuda-toolkit's own metadata, so every nvidia wheel that
will really be needed is named with its pin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.facts import DistributionFacts, Facts

__all__ = [
    "CUDA_TOOLKIT",
    "Expectations",
    "ExpectedWheel",
    "applicable_requirements",
    "compute_expectations",
    "is_cuda_wheel",
    "marker_applies",
    "parse_requirement",
    "same_version",
]

CUDA_TOOLKIT = "cuda-toolkit"


def is_cuda_wheel(name: str) -> bool:
    """A wheel that carries CUDA libraries or the GPU compiler torch pins."""
    name = canonicalize_name(name)
    return name.startswith(("nvidia-", "cuda-")) or name in ("triton", "pytorch-triton")


def marker_applies(
    marker: Marker | None, environment: Mapping[str, str], extras: Iterable[str] = ("",)
) -> bool:
    """Whether a marker holds here for any of the given extras ("" means no extra)."""
    if marker is None:
        return True
    for extra in extras:
        try:
            if marker.evaluate({**environment, "extra": extra}):
                return True
        except (UndefinedComparison, UndefinedEnvironmentName):
            continue
    return False


# cuda-toolkit declares ~60 requirements, each only for one of its extras, e.g.
# `nvidia-cublas==13.1.1.3.*; (sys_platform == 'linux' and ...) and extra == 'cublas'`.
# Parsing one costs ~0.4 ms, and torch requests a few extras. A marker of exactly this
# shape, "(<no parentheses>) and extra == 'X'" (or just "extra == 'X'"), is false for
# every other extra, so its text tells which single extra it can hold for. Anything else
# (another shape, a URL requirement, which may hold ";") is parsed as usual.
_ONLY_FOR_EXTRA = re.compile(
    r"""[^;@]*;\s*(?:\([^()]*\)\s+and\s+)?extra\s*==\s*(?P<q>['"])(?P<extra>[^'"]+)(?P=q)\s*"""
)


def only_for_extra(text: str) -> str | None:
    """The one extra a requirement string can apply for, when its text says so plainly."""
    match = _ONLY_FOR_EXTRA.fullmatch(text)
    return canonicalize_name(match.group("extra")) if match else None


def applicable_requirements(
    requires_dist: Iterable[str], environment: Mapping[str, str], extras: Iterable[str] = ("",)
) -> tuple[list[Requirement], list[str]]:
    """Requirements whose markers hold here, and the strings that did not parse.

    A string whose marker plainly holds only for an extra not asked for is skipped
    without being parsed (see ``only_for_extra``).
    """
    applicable = []
    unparsable = []
    extras = tuple(extras)
    for text in requires_dist:
        only_for = only_for_extra(text)
        if only_for is not None and all(canonicalize_name(e) != only_for for e in extras):
            continue
        requirement = parse_requirement(text)
        if requirement is None:
            unparsable.append(text)
        elif marker_applies(requirement.marker, environment, extras):
            applicable.append(requirement)
    return applicable, unparsable


def same_version(a: str | None, b: str | None) -> bool:
    """PEP 440 equality (2.6.0+cu126 == 2.6.0+cu126, 13.0.3 == 13.0.3.0); text equality for
    versions that do not parse; never equal to a missing version."""
    if a is None or b is None:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


@lru_cache(maxsize=4096)
def parse_requirement(text: str) -> Requirement | None:
    """A PEP 508 requirement, or None when it does not parse (parsed once per string)."""
    try:
        return Requirement(text)
    except (InvalidRequirement, InvalidMarker):
        return None


@dataclass(frozen=True)
class ExpectedWheel:
    """A distribution torch requires here (directly or through cuda-toolkit's extras)."""

    name: str  # normalised
    requirement: str  # as declared, e.g. "nvidia-cudnn-cu13==9.24.0.43; platform_system == ..."
    specifier: str  # e.g. "==9.24.0.43" ("" when any version will do)
    extras: tuple[str, ...]
    required_by: str  # "torch" or "cuda-toolkit[cublas]"
    installed: DistributionFacts | None

    @property
    def is_cuda(self) -> bool:
        return is_cuda_wheel(self.name)

    @property
    def install_spec(self) -> str:
        """What to pass to an installer: name, extras and specifier, no marker."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.name}{extras}{self.specifier}"

    @property
    def version_ok(self) -> bool | None:
        """None when not installed; otherwise whether the installed version satisfies the pin."""
        if self.installed is None:
            return None
        if not self.specifier:
            return True
        try:
            version = Version(self.installed.version)
        except InvalidVersion:
            return False
        return SpecifierSet(self.specifier).contains(version, prereleases=True)

    @property
    def status(self) -> str:
        """One word for reports: ok, missing, wrong-version or incomplete."""
        if self.installed is None:
            return "missing"
        if self.version_ok is False:
            return "wrong-version"
        if self.files_missing:
            return "incomplete"
        return "ok"

    @property
    def files_missing(self) -> int:
        record = self.installed.record if self.installed else None
        return record.missing_count if record is not None else 0


@dataclass(frozen=True)
class Expectations:
    """Every distribution torch requires here, and what could not be named."""

    wheels: tuple[ExpectedWheel, ...]
    unparsable: tuple[str, ...] = ()
    # cuda-toolkit is required but absent: the wheels its extras bring cannot be named.
    toolkit_extras_unknown: tuple[str, ...] = ()

    # Cached: every library check asks once per soname (cached_property writes the
    # instance __dict__ directly, so it works on a frozen dataclass).
    @cached_property
    def cuda(self) -> tuple[ExpectedWheel, ...]:
        return tuple(w for w in self.wheels if w.is_cuda)

    @cached_property
    def other(self) -> tuple[ExpectedWheel, ...]:
        return tuple(w for w in self.wheels if not w.is_cuda)


def compute_expectations(facts: Facts) -> Expectations | None:
    """torch's applicable requirements, cuda-toolkit's extras expanded; None without torch."""
    torch = facts.distribution("torch")
    if torch is None or facts.interpreter is None:
        return None
    environment = facts.interpreter.marker_environment
    requirements, unparsable = applicable_requirements(torch.requires_dist, environment)
    wheels: list[ExpectedWheel] = []
    unknown_extras: tuple[str, ...] = ()
    seen: set[str] = set()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        installed = facts.distribution(name)
        wheels.append(_expected(requirement, "torch", installed))
        seen.add(name)
        if name != CUDA_TOOLKIT or not requirement.extras:
            continue
        extras = tuple(sorted(requirement.extras))
        if installed is None:
            unknown_extras = extras
            continue
        # Which requested extras pull in each of cuda-toolkit's requirements, in one pass.
        pulled_by: dict[str, list[str]] = {}
        first: dict[str, Requirement] = {}
        for text in installed.requires_dist:
            candidates = extras
            only_for = only_for_extra(text)
            if only_for is not None:
                candidates = tuple(e for e in extras if canonicalize_name(e) == only_for)
                if not candidates:
                    continue  # for an extra torch does not request: cannot apply here
            sub = parse_requirement(text)
            if sub is None:
                unparsable.append(text)
                continue
            sub_name = canonicalize_name(sub.name)
            for extra in candidates:
                if marker_applies(sub.marker, environment, (extra,)):
                    first.setdefault(sub_name, sub)
                    if extra not in pulled_by.setdefault(sub_name, []):
                        pulled_by[sub_name].append(extra)
        for pulled_name, pulled in first.items():
            if pulled_name in seen:
                continue
            seen.add(pulled_name)
            label = f"{CUDA_TOOLKIT}[{','.join(pulled_by[pulled_name])}]"
            wheels.append(_expected(pulled, label, facts.distribution(pulled_name)))
    return Expectations(tuple(wheels), tuple(unparsable), unknown_extras)


def _expected(
    requirement: Requirement, required_by: str, installed: DistributionFacts | None
) -> ExpectedWheel:
    return ExpectedWheel(
        name=canonicalize_name(requirement.name),
        requirement=str(requirement),
        specifier=str(requirement.specifier),
        extras=tuple(sorted(requirement.extras)),
        required_by=required_by,
        installed=installed,
    )
