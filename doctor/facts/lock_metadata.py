"""Facts of `torch-doctor lock`: the wheels uv.lock records and the metadata they carry."""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.facts.project import LockedPackage

__all__ = ["LockMetadataFacts", "LockedWheel", "WheelMetadata"]


@dataclass(frozen=True)
class LockedWheel:
    """One wheel of one package, as uv.lock records it."""

    package: str  # PEP 503 normalised
    version: str
    filename: str
    url: str  # as uv.lock writes it (uv never writes credentials there)
    registry: str | None  # the index the package comes from (its simple API root)
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class WheelMetadata:
    """A locked wheel, the platform it serves and its core metadata (or why there is none).

    ``environment`` is the PEP 508 environment of the platform the wheel's tags name;
    ``via`` says where the metadata came from: ``cache``, ``metadata-file`` (PEP 658),
    ``range`` (the wheel's METADATA read through HTTP range requests) or ``download``.
    """

    wheel: LockedWheel
    platform: str  # e.g. "linux x86_64"; "any" for a platform-independent wheel
    python: str | None  # "3.12" for cp312 wheels
    environment: dict[str, str] = field(default_factory=dict)
    via: str | None = None
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    provides_extra: tuple[str, ...] = ()
    error: str | None = None  # why the metadata could not be read (the wheel is unchecked)
    # Why the wheel was not checked although nothing failed (the lock never installs it).
    skipped: str | None = None


@dataclass(frozen=True)
class LockMetadataFacts:
    """What `torch-doctor lock` read: the lock's packages and their wheels' metadata."""

    lock_path: str
    pyproject_path: str | None
    offline: bool
    packages: tuple[LockedPackage, ...] = ()  # the checked packages' uv.lock entries
    wheels: tuple[WheelMetadata, ...] = ()
    # [[tool.uv.dependency-metadata]] entries of pyproject.toml (what uv applies).
    dependency_metadata: tuple[dict[str, object], ...] = ()

    @property
    def unchecked(self) -> tuple[WheelMetadata, ...]:
        return tuple(w for w in self.wheels if w.error is not None)
