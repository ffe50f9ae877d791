"""The GPU code in torch's libraries, read from the CUDA fat binaries' headers alone.

A CUDA shared library keeps its device code in the ELF section ``.nv_fatbin``: a run of
fat binary *containers*, each a 16-byte header followed by *entries* (one cubin or one
PTX text each), every entry with its own header naming its kind and target
architecture. libtorch_cuda.so's section is several hundred MB; reading it costs about
a second, so this module maps the file and reads only the headers, jumping over each
payload by the sizes the headers give. The whole walk costs tens of milliseconds, so
no cache is kept: a cache on disk would be a write no command asked for.

Layouts (little-endian), as written by NVIDIA's fatbinary tool and read by cuobjdump:

    container header (16 bytes): u32 magic 0xBA55ED50, u16 version, u16 header size,
                                 u64 size of the entries that follow
    entry header (>= 64 bytes):  u16 kind (1 = PTX, 2 = ELF cubin), u16 version,
                                 u32 header size, u64 payload size, ...,
                                 u32 arch at offset 28 (e.g. 120 for sm_120),
                                 u64 flags at offset 40

Flag bit 0x100000 marks an architecture-specific target (``sm_90a``, ``sm_100a``); this
was checked against ``cuobjdump --list-elf`` on torch 2.14.1+cu130's libtorch_cuda.so.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FATBIN_MAGIC",
    "FatbinEntry",
    "FatbinError",
    "FatbinSummary",
    "read_fatbin_summary",
    "walk_fatbin",
]

FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
CONTAINER_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, entries size
ENTRY_PREFIX = struct.Struct("<HHIQ")  # kind, version, header size, payload size
ENTRY_ARCH_OFFSET = 28
ENTRY_FLAGS_OFFSET = 40
ENTRY_MIN_HEADER = 48  # up to and including the flags
KIND_PTX = 1
KIND_CUBIN = 2
FLAG_ARCH_SPECIFIC = 0x100000


class FatbinError(Exception):
    """The fat binaries cannot be read: not an ELF file, no section, corrupt headers."""


@dataclass(frozen=True)
class FatbinEntry:
    kind: int  # KIND_PTX or KIND_CUBIN
    arch: int  # 120 for sm_120 / compute_120
    arch_specific: bool = False

    @property
    def target(self) -> str:
        """``sm_120``, ``sm_90a`` or ``compute_120``, as nvcc and cuobjdump name them."""
        prefix = "compute" if self.kind == KIND_PTX else "sm"
        return f"{prefix}_{self.arch}{'a' if self.arch_specific else ''}"


@dataclass(frozen=True)
class FatbinSummary:
    """How many containers carry each target, over one library's fat binary sections."""

    path: str
    containers: int
    carriers: dict[str, int]  # target -> number of containers with at least one such entry


def walk_fatbin(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[list[FatbinEntry]]:
    """Yield the entries of each fat binary container in ``data[start:end]``.

    Only headers are read. Zero padding between containers is skipped; anything else
    that is not a container header raises FatbinError.
    """
    magic = struct.pack("<I", FATBIN_MAGIC)
    position = start
    while position + CONTAINER_HEADER.size <= end:
        found, header_size, entries_size = _container_at(data, position)
        if not found:
            # Alignment padding between containers: find the next header in C, not Python.
            following = data.find(magic, position, end)
            if following < 0:
                if any(data[position : min(end, position + 64)]):
                    raise FatbinError(f"no fat binary header at offset {position:#x}")
                return
            if any(data[position:following]):
                raise FatbinError(f"unexpected bytes at offset {position:#x}")
            position = following
            continue
        entry = position + header_size
        container_end = entry + entries_size
        if header_size < CONTAINER_HEADER.size or container_end > end:
            raise FatbinError(f"fat binary at offset {position:#x} runs past its section")
        entries = []
        while entry + ENTRY_MIN_HEADER <= container_end:
            kind, _version, entry_header, payload = ENTRY_PREFIX.unpack_from(data, entry)
            if entry_header < ENTRY_MIN_HEADER:
                raise FatbinError(f"corrupt fat binary entry at offset {entry:#x}")
            (arch,) = struct.unpack_from("<I", data, entry + ENTRY_ARCH_OFFSET)
            (flags,) = struct.unpack_from("<Q", data, entry + ENTRY_FLAGS_OFFSET)
            if kind in (KIND_PTX, KIND_CUBIN):
                entries.append(FatbinEntry(kind, arch, bool(flags & FLAG_ARCH_SPECIFIC)))
            entry += entry_header + payload  # jump over the payload: never read it
        yield entries
        position = container_end


def _container_at(data: bytes | mmap.mmap, position: int) -> tuple[bool, int, int]:
    magic, _version, header_size, entries_size = CONTAINER_HEADER.unpack_from(data, position)
    return magic == FATBIN_MAGIC, header_size, entries_size


def read_fatbin_summary(path: Path) -> FatbinSummary:
    """Walk every fat binary section of one ELF shared library."""
    try:
        from elftools.common.exceptions import ELFError

        from doctor.probe.elf import elf_sections, open_nonblocking
        from doctor.probe.files import check_regular
    except (ImportError, SyntaxError) as exc:  # a pyelftools too new for this Python
        raise FatbinError(f"pyelftools cannot be imported: {exc}") from exc

    carriers: Counter[str] = Counter()
    containers = 0
    try:
        check_regular(str(path))  # a FIFO would block open() for ever
        with open(path, "rb", opener=open_nonblocking) as handle:
            try:
                sections = [
                    (offset, size)
                    for name, kind, offset, size in elf_sections(handle)
                    if name in FATBIN_SECTIONS and kind != "SHT_NOBITS"
                ]
            except (ELFError, struct.error, ValueError) as exc:
                raise FatbinError(f"{path.name} is not a readable ELF file: {exc}") from exc
            if not sections:
                raise FatbinError(f"{path.name} has no .nv_fatbin section")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                for offset, size in sections:
                    if offset + size > len(mapped):
                        raise FatbinError(f"{path.name}: .nv_fatbin runs past the end of the file")
                    for entries in walk_fatbin(mapped, offset, offset + size):
                        containers += 1
                        carriers.update({e.target for e in entries})
    except OSError as exc:
        raise FatbinError(f"{path}: {exc.strerror or exc}") from exc
    except struct.error as exc:
        raise FatbinError(f"{path.name}: truncated fat binary header") from exc
    if containers == 0:
        raise FatbinError(f"{path.name}: the .nv_fatbin section holds no fat binary")
    return FatbinSummary(str(path), containers, dict(carriers))
