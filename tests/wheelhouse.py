"""Tiny but valid wheel files, built at test time, for a local package index.

Each wheel is a real zip with a ``.dist-info`` (METADATA, WHEEL, RECORD with correct
sha256 hashes), so uv locks, downloads, verifies and installs it like any other wheel.
The torch wheels carry torch/__init__.py (raises if imported), torch/version.py and a
placeholder torch/lib/libtorch_cuda.so; everything else is a stub with no dependencies,
so a resolution never needs anything but the local index.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.factory import TORCH_2_6_CU126_NVIDIA, TORCH_2_6_CU126_REQUIRES

__all__ = [
    "CPYTHON_TAG",
    "TORCH_2_6_EXTRAS",
    "WheelSpec",
    "build_wheel",
    "build_wheels",
    "founding_case_wheels",
    "metadata_text",
    "wheel_filename",
]

# Wheels for the interpreter running the tests (the one uv syncs the project with).
CPYTHON_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
TORCH_2_6_EXTRAS = ("opt-einsum", "optree")
TORCH_2_6_REQUIRES_PYTHON = ">=3.9.0"
TRITON_2_6 = ("triton", "3.2.0")
# torch 2.6.0's other requirements, at versions its METADATA accepts.
PLAIN_2_6 = {
    "filelock": "3.17.0",
    "typing-extensions": "4.12.2",
    "networkx": "3.4.2",
    "jinja2": "3.1.5",
    "fsspec": "2025.2.0",
    "sympy": "1.13.1",
}


@dataclass(frozen=True)
class WheelSpec:
    name: str
    version: str
    tag: str = "py3-none-any"
    requires_dist: tuple[str, ...] = ()
    provides_extra: tuple[str, ...] = ()
    requires_python: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def distribution(self) -> str:
        """The name as wheel filenames and .dist-info directories spell it (PEP 427)."""
        return re.sub(r"[-_.]+", "_", self.name).lower()

    @property
    def dist_info(self) -> str:
        return f"{self.distribution}-{self.version}.dist-info"


def wheel_filename(spec: WheelSpec) -> str:
    return f"{spec.distribution}-{spec.version}-{spec.tag}.whl"


def metadata_text(spec: WheelSpec) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {spec.name}", f"Version: {spec.version}"]
    if spec.requires_python:
        lines.append(f"Requires-Python: {spec.requires_python}")
    lines += [f"Requires-Dist: {r}" for r in spec.requires_dist]
    lines += [f"Provides-Extra: {e}" for e in spec.provides_extra]
    return "\n".join(lines) + "\n\n"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(spec: WheelSpec, directory: Path) -> Path:
    """Write the wheel into ``directory`` and return its path."""
    purelib = spec.tag.endswith("-none-any")
    wheel_meta = (
        "Wheel-Version: 1.0\nGenerator: torch-doctor-tests\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\n"
        + "".join(f"Tag: {tag}\n" for tag in _expand_tags(spec.tag))
    )
    members: dict[str, bytes] = dict(spec.files)
    members[f"{spec.dist_info}/METADATA"] = metadata_text(spec).encode()
    members[f"{spec.dist_info}/WHEEL"] = wheel_meta.encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in members.items())
    record += f"{spec.dist_info}/RECORD,,\n"
    members[f"{spec.dist_info}/RECORD"] = record.encode()

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / wheel_filename(spec)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _expand_tags(tag: str) -> list[str]:
    """A compressed tag set (py2.py3-none-any) as the WHEEL file lists it: one per line."""
    python, abi, platform = tag.split("-")
    return [
        f"{p}-{a}-{plat}"
        for p in python.split(".")
        for a in abi.split(".")
        for plat in platform.split(".")
    ]


def build_wheels(specs: Iterable[WheelSpec], directory: Path) -> list[Path]:
    return [build_wheel(spec, directory) for spec in specs]


def _torch_files(version: str, cuda: str) -> dict[str, bytes]:
    return {
        "torch/__init__.py": b"raise ImportError('torch-doctor must never import torch')\n",
        "torch/version.py": (
            "from typing import Optional\n\n"
            f"__version__ = {version!r}\n"
            "debug = False\n"
            f"cuda: str | None = {cuda!r}\n"
            "git_version = '1eba9b3aa3c43f86f4a2c807ac8e12c4a7767340'\n"
            "hip: str | None = None\n"
        ).encode(),
        "torch/lib/libtorch_cuda.so": b"\x7fELF stand-in for libtorch_cuda.so\n",
    }


def _nvidia_component(name: str) -> str:
    """nvidia-cuda-nvrtc-cu12 -> cuda_nvrtc: the directory the real wheel installs into."""
    return name[len("nvidia-") : -len("-cu12")].replace("-", "_")


def founding_case_wheels(*, aarch64_declares_nvidia: bool = False) -> list[WheelSpec]:
    """torch 2.6.0+cu126 as the PyTorch index served it when uv#11945 was filed.

    The x86_64 wheel's METADATA declares the 13 nvidia-*-cu12 pins and triton; the
    aarch64 wheel of the very same version declares none of them. With
    ``aarch64_declares_nvidia`` both wheels carry the x86_64 metadata: the consistent
    index PyTorch published after pytorch#145021, where uv locks every dependency.
    """
    version = "2.6.0+cu126"
    full = tuple(TORCH_2_6_CU126_REQUIRES)
    cuda_names = {*TORCH_2_6_CU126_NVIDIA, TRITON_2_6[0]}
    without_cuda = tuple(
        r for r in full if re.split(r"[ ;=<>~!]", r, maxsplit=1)[0] not in cuda_names
    )
    platform_tag = f"{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28"
    torch_wheels = [
        WheelSpec(
            "torch",
            version,
            tag=f"{platform_tag}_x86_64",
            requires_dist=full,
            provides_extra=TORCH_2_6_EXTRAS,
            requires_python=TORCH_2_6_REQUIRES_PYTHON,
            files=_torch_files(version, "12.6"),
        ),
        WheelSpec(
            "torch",
            version,
            tag=f"{platform_tag}_aarch64",
            requires_dist=full if aarch64_declares_nvidia else without_cuda,
            provides_extra=TORCH_2_6_EXTRAS,
            requires_python=TORCH_2_6_REQUIRES_PYTHON,
            files=_torch_files(version, "12.6"),
        ),
    ]
    nvidia = [
        WheelSpec(
            name,
            nvidia_version,
            tag="py3-none-manylinux_2_17_x86_64",
            files={f"nvidia/{_nvidia_component(name)}/lib/placeholder": name.encode() + b"\n"},
        )
        for name, nvidia_version in TORCH_2_6_CU126_NVIDIA.items()
    ]
    triton = WheelSpec(
        TRITON_2_6[0],
        TRITON_2_6[1],
        tag=f"{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_x86_64",
        files={"triton/__init__.py": b"__version__ = '3.2.0'\n"},
    )
    plain = [
        WheelSpec(
            name,
            plain_version,
            files={f"{re.sub(r'[-.]', '_', name)}/__init__.py": b""},
        )
        for name, plain_version in PLAIN_2_6.items()
    ]
    return [*torch_wheels, *nvidia, triton, *plain]
