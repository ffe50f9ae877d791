"""Typed access to cuda_libraries.toml: CUDA sonames, their wheels, version APIs, preloads."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from doctor.knowledge import load

__all__ = [
    "CudaLibrary",
    "TorchPreload",
    "VersionApi",
    "WheelMajor",
    "cuda_library",
    "cuda_library_stems",
    "cudnn_sublibraries",
    "default_torch_preload",
    "driver_sonames",
    "owner_prefixes",
    "soname_stem",
    "wheel_cuda_major",
    "wheel_matches",
]


@dataclass(frozen=True)
class VersionApi:
    """The exported function a CUDA library reports its version with, and how."""

    function: str
    call: str  # "int_out", "size_t", "two_out", "property"
    decode: str | None = None  # "thousands", "cudnn", "nccl", "ten_thousands"


@dataclass(frozen=True)
class CudaLibrary:
    """A CUDA library stem and the wheels that ship it."""

    stem: str  # "libcudnn"
    wheels: tuple[str, ...]  # distribution names without the -cuXX suffix
    version: VersionApi | None


@dataclass(frozen=True)
class TorchPreload:
    """How torch/__init__.py preloads CUDA libraries (see cuda_libraries.toml)."""

    source: str  # where the list came from
    after_success: bool  # preload even when libtorch_global_deps.so loads
    libraries: tuple[tuple[str, str], ...]  # (folder, glob), in order
    optional: tuple[tuple[str, str], ...] = ()


def soname_stem(soname: str) -> str:
    """'libcublasLt.so.13' -> 'libcublasLt'; 'libcudnn_graph.so.9' -> 'libcudnn_graph'."""
    return soname.split(".so", 1)[0]


@cache
def _libraries() -> dict[str, CudaLibrary]:
    rows: list[dict[str, Any]] = load("cuda_libraries")["libraries"]
    out = {}
    for row in rows:
        version = row.get("version")
        out[row["stem"]] = CudaLibrary(
            stem=row["stem"],
            wheels=tuple(row["wheels"]),
            version=VersionApi(version["function"], version["call"], version.get("decode"))
            if version
            else None,
        )
    cudnn = out["libcudnn"]
    for stem in cudnn_sublibraries():
        out.setdefault(stem, CudaLibrary(stem, cudnn.wheels, None))
    return out


def cuda_library(soname: str) -> CudaLibrary | None:
    """The CUDA library a soname names (any cuDNN sub-library counts), or None."""
    stem = soname_stem(soname)
    found = _libraries().get(stem)
    if found is None and stem.startswith("libcudnn_"):
        return CudaLibrary(stem, _libraries()["libcudnn"].wheels, None)
    return found


def cuda_library_stems() -> tuple[str, ...]:
    return tuple(_libraries())


@cache
def cudnn_sublibraries() -> tuple[str, ...]:
    return tuple(load("cuda_libraries")["cudnn"]["sublibraries"])


@cache
def driver_sonames() -> tuple[str, ...]:
    return tuple(load("cuda_libraries")["driver_sonames"])


@cache
def owner_prefixes() -> tuple[str, ...]:
    """Name prefixes of the distributions whose CUDA libraries count as torch's own."""
    return tuple(load("cuda_libraries")["owner_prefixes"])


@cache
def default_torch_preload() -> TorchPreload:
    data = load("cuda_libraries")["torch_preload"]
    return TorchPreload(
        source=f"torch-doctor's copy of torch {data['torch']}'s list",
        after_success=bool(data["after_success"]),
        libraries=tuple((str(a), str(b)) for a, b in data["libraries"]),
        optional=tuple((str(a), str(b)) for a, b in data["optional"]),
    )


class WheelMajor(NamedTuple):
    """The CUDA major a CUDA library wheel belongs to."""

    major: int
    or_later: bool  # no -cuNN suffix: a wheel of this major or a later one


@cache
def _wheel_stems() -> frozenset[str]:
    return frozenset(stem for library in _libraries().values() for stem in library.wheels)


def wheel_cuda_major(distribution: str) -> WheelMajor | None:
    """The CUDA major of a CUDA library wheel from its -cuNN suffix; without a suffix, the
    first major that dropped it, "or later". None for other distributions."""
    # A set lookup, not wheel_matches per stem: a check asks for every installed
    # distribution, and a venv may hold thousands (bench/: 2,000 extra distributions).
    stems = _wheel_stems()
    if distribution in stems:
        major: int = load("cuda_libraries")["unsuffixed_from_cuda_major"]
        return WheelMajor(major, or_later=True)
    stem, marker, digits = distribution.rpartition("-cu")
    if marker and digits.isdecimal() and stem in stems:
        return WheelMajor(int(digits), or_later=False)
    return None


def wheel_matches(wheel_stem: str, distribution: str) -> bool:
    """Whether a distribution name is that wheel, with or without a -cuXX suffix."""
    # String tests, not a regex per stem: the library checks ask for every soname and
    # wheel, and compiling the patterns cost more than the checks themselves.
    if not distribution.startswith(wheel_stem):
        return False
    suffix = distribution[len(wheel_stem) :]
    return suffix == "" or (suffix.startswith("-cu") and suffix[3:].isdecimal())
