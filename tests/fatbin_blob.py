"""Hand-made CUDA fat binaries, and ELF shared libraries carrying them in `.nv_fatbin`.

The layout is the one doctor/probe/fatbin.py documents; payloads are filler bytes, since
only the headers are ever read.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

MAGIC = 0xBA55ED50
PTX = 1
CUBIN = 2


def entry(
    kind: int, arch: int, payload: bytes = b"\x7fELF" + b"\0" * 60, flags: int = 0x8011
) -> bytes:
    """One fat binary entry: a 64-byte header and its payload."""
    header = struct.pack(
        "<HHIQIIHHIIIQQQ",
        kind,
        0x0101,
        64,
        len(payload),
        len(payload),
        0,
        8,
        1,
        arch,
        0,
        0,
        flags,
        0,
        0,
    )
    assert len(header) == 64
    return header + payload


def container(entries: Sequence[bytes]) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", MAGIC, 1, 16, len(body)) + body


def cubins(*archs: int) -> bytes:
    return container([entry(CUBIN, arch) for arch in archs])


def shared_library_with_fatbin(
    directory: Path, fatbin: bytes, name: str = "libtorch_cuda.so"
) -> Path:
    """A real ELF .so (cc) with ``fatbin`` added as its `.nv_fatbin` section (objcopy)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("cc is needed to build a library with a fat binary")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "kernels.c"
    source.write_text("int torch_doctor_test_symbol(void) { return 42; }\n")
    plain = directory / f"{name}.plain"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(plain), str(source)],
        check=True,
        capture_output=True,
    )
    return add_fatbin(plain, fatbin, directory / name)


def add_fatbin(plain: Path, fatbin: bytes, library: Path) -> Path:
    """A copy of the ELF ``plain`` with ``fatbin`` as its `.nv_fatbin` section (objcopy)."""
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        raise RuntimeError("objcopy is needed to add a fat binary to a library")
    blob = library.with_name(library.name + ".fatbin")
    blob.write_bytes(fatbin)
    subprocess.run(
        [
            objcopy,
            f"--add-section=.nv_fatbin={blob}",
            "--set-section-flags=.nv_fatbin=alloc,readonly,data",
            "--set-section-alignment=.nv_fatbin=8",
            str(plain),
            str(library),
        ],
        check=True,
        capture_output=True,
    )
    return library
