"""Knowledge kept as data: TOML files with their sources and review dates, and a loader.

Nothing here decides anything; checks and remedies read these tables.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# The TOML files sit next to this module, in the source tree and in the wheel (hatch
# packages the whole doctor/ directory). A plain path read avoids importing
# importlib.resources (~10 ms of start-up); torch-doctor is never run from a zip.
_HERE = Path(__file__).parent

__all__ = [
    "HostCompilerLimit",
    "MvcFloor",
    "ToolkitDriver",
    "TorchBuild",
    "TorchRelease",
    "cuda_runtime_error",
    "cuinit_meaning",
    "driver_download_url",
    "first_cuda_for",
    "gpu_family",
    "host_compiler_limit",
    "last_cuda_major_for",
    "load",
    "mvc_floors",
    "mvc_limitations",
    "pytorch_index_url",
    "toolkit_drivers",
    "torch_builds",
    "torch_family",
    "torch_index_family",
    "torch_release",
    "triton_min_capability",
]


@cache
def load(name: str) -> dict[str, Any]:
    """One knowledge file, e.g. ``load("cuda_drivers")``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    text = (_HERE / f"{name}.toml").read_text(encoding="utf-8")
    data: dict[str, Any] = tomllib.loads(text)
    return data


def _cc(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class ToolkitDriver:
    """The driver a CUDA toolkit release natively needs."""

    cuda: str  # "12.8"
    release: str  # "GA", "Update 1"
    linux: str | None
    windows: str | None


@dataclass(frozen=True)
class MvcFloor:
    """The lowest driver that runs any CUDA <major>.x application (minor-version compatibility)."""

    major: int
    linux: str
    windows: str


@dataclass(frozen=True)
class TorchBuild:
    """One published PyTorch CUDA variant and the GPU code it carries."""

    variant: str  # "cu128"
    cuda: str  # "12.8"
    torch: str  # a PEP 440 specifier of the releases, ">=2.8,<2.11"
    sm: tuple[tuple[int, int], ...]
    ptx: tuple[tuple[int, int], ...]
    source: str


@cache
def toolkit_drivers() -> tuple[ToolkitDriver, ...]:
    rows = load("cuda_drivers")["toolkit"]["rows"]
    return tuple(
        ToolkitDriver(r["cuda"], r["release"], r.get("linux"), r.get("windows")) for r in rows
    )


@cache
def mvc_floors() -> tuple[MvcFloor, ...]:
    floors = load("cuda_drivers")["minor_version_compatibility"]["floors"]
    return tuple(MvcFloor(int(f["major"]), f["linux"], f["windows"]) for f in floors)


def mvc_limitations() -> str:
    text: str = load("cuda_drivers")["minor_version_compatibility"]["limitations"]
    return text


@cache
def torch_builds() -> tuple[TorchBuild, ...]:
    return tuple(
        TorchBuild(
            variant=b["variant"],
            cuda=b["cuda"],
            torch=b["torch"],
            sm=tuple(_cc(x) for x in b["sm"]),
            ptx=tuple(_cc(x) for x in b["ptx"]),
            source=b["source"],
        )
        for b in load("torch_arch_lists")["builds"]
    )


@dataclass(frozen=True)
class TorchRelease:
    """A torch release's PyPI CUDA variant (Linux x86_64) and its torchvision release."""

    torch: str  # "2.11"
    pypi_linux: str | None  # "cu130": the variant of its wheels on PyPI (no local tag)
    torchvision: str | None  # "0.26"
    source: str
    latest: str | None = None  # its newest patch release, "2.11.0"


@cache
def _torch_releases() -> dict[str, TorchRelease]:
    return {
        r["torch"]: TorchRelease(
            r["torch"], r.get("pypi_linux"), r.get("torchvision"), r["source"], r.get("latest")
        )
        for r in load("torch_releases")["releases"]
    }


def torch_release(version: str) -> TorchRelease | None:
    """The entry for a torch version's major.minor ("2.11.0+cu126" -> "2.11"), if known."""
    parts = version.split("+", 1)[0].split(".")
    return _torch_releases().get(".".join(parts[:2])) if len(parts) >= 2 else None


def first_cuda_for(capability: tuple[int, int]) -> tuple[int, int] | None:
    """The first CUDA release whose ptxas compiles for this compute capability, when it is
    one the table lists (older ones are known to every supported CUDA)."""
    table: dict[str, str] = load("gpu_architectures")["toolkit"]["first_cuda"]
    text = table.get("{}.{}".format(*capability))
    return _cc(text) if text else None


def last_cuda_major_for(capability: tuple[int, int]) -> int | None:
    """The last CUDA major that still compiles for this compute capability (None: any)."""
    below = load("gpu_architectures")["toolkit"]["last_major_below"]
    return int(below["last_major"]) if capability < _cc(below["capability"]) else None


def triton_min_capability() -> tuple[int, int]:
    return _cc(load("gpu_architectures")["triton"]["min_capability"])


def gpu_family(capability: tuple[int, int]) -> str | None:
    """Maxwell, Ampere, Blackwell ... for a compute capability."""
    text = "{}.{}".format(*capability)
    for family in load("gpu_architectures")["families"]:
        if text in family["capabilities"]:
            name: str = family["name"]
            return name
    return None


def pytorch_index_url() -> str:
    """PyTorch's package index root: one simple index per variant below it (cu130, cpu)."""
    return str(load("indexes")["pytorch"]["url"])


def torch_family() -> tuple[str, ...]:
    """torch and the distributions released with it (torch_family.toml), torch first."""
    return tuple(str(m["name"]) for m in load("torch_family")["members"])


def torch_index_family() -> tuple[str, ...]:
    """The members published on PyTorch's indexes, routed with torch (torch first)."""
    return tuple(str(m["name"]) for m in load("torch_family")["members"] if m["index"])


def driver_download_url() -> str:
    """NVIDIA's driver download page, for a machine with no driver package to install."""
    return str(load("driver_errors")["download"]["url"])


def cuinit_meaning(code: int | None) -> str:
    """What a cuInit error code means, in a sentence ("" when the table has no entry)."""
    for entry in load("driver_errors")["cuinit"]:
        if entry["code"] == code:
            return str(entry["meaning"])
    return ""


@dataclass(frozen=True)
class CudaRuntimeError:
    """A CUDA runtime error code as torch's warning prints it, and what to do about it."""

    code: int
    name: str
    meaning: str
    todo: str


def cuda_runtime_error(code: int) -> CudaRuntimeError | None:
    """The cudaError_t ``code`` (``Error 36`` in torch's warning), when the table has it."""
    for entry in load("driver_errors").get("runtime", ()):
        if entry["code"] == code:
            return CudaRuntimeError(code, entry["name"], entry["meaning"], entry["todo"])
    return None


@dataclass(frozen=True)
class HostCompilerLimit:
    """The newest host compilers one CUDA release's nvcc accepts."""

    cuda: tuple[int, int]  # the first release the limit applies to
    gcc_max: int
    clang_max: int | None
    verified: str


def host_compiler_limit(cuda: tuple[int, int]) -> HostCompilerLimit | None:
    """The limit in force for an nvcc of this CUDA release (None before the table starts)."""
    rows = sorted(
        (
            HostCompilerLimit(
                _cc(row["cuda"]), int(row["gcc_max"]), row.get("clang_max"), row["verified"]
            )
            for row in load("cuda_host_compilers")["release"]
        ),
        key=lambda r: r.cuda,
    )
    applicable = [r for r in rows if r.cuda <= cuda]
    return applicable[-1] if applicable else None
