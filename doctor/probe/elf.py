"""ELF dynamic sections and a model of how glibc's loader resolves a soname.

One module owns "where does the loader find libfoo.so.1 for this object", in the spirit of
auditwheel's lddtree. The rules, as ld.so(8) states them for a NEEDED entry without a
slash (glibc, Linux):

1. an object already loaded with that soname is reused (LD_PRELOAD, earlier loads);
2. DT_RPATH of the loading object, then of the object that loaded it, and so on up the
   chain, but only when the loading object has no DT_RUNPATH (RUNPATH disables RPATH);
3. LD_LIBRARY_PATH (an empty entry, as in ``:/opt/cuda/lib64``, is the working directory);
4. DT_RUNPATH of the loading object only (never inherited);
5. /etc/ld.so.cache;
6. the default directories.

An LD_PRELOAD entry with a slash is that file; one without is searched by these rules as a
NEEDED entry of the program itself.

ELF files are read with pyelftools, and only the program headers, the dynamic segment and
the strings it names are read: libtorch_cuda.so is about 1 GB. Results are cached per
path for the run.
"""

from __future__ import annotations

import os
import platform
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, BinaryIO

from doctor.facts.libraries import Resolution, ResolvedDependency

__all__ = [
    "ElfDynamic",
    "LoaderModel",
    "dynamic_entries",
    "elf_header",
    "elf_sections",
    "expand_origin",
    "ld_so_cache",
    "read_dynamic",
    "split_preload",
    "split_search_path",
]


@dataclass(frozen=True)
class ElfDynamic:
    path: str
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    error: str | None = None


def split_preload(value: str) -> list[str]:
    """LD_PRELOAD entries: separated by colons or white space (ld.so(8))."""
    return [part for part in value.replace(":", " ").split() if part]


def split_search_path(value: str) -> tuple[str, ...]:
    """RPATH/RUNPATH/LD_LIBRARY_PATH entries; an empty entry means the working directory."""
    return tuple(part for part in value.replace(";", ":").split(":"))


def _file_key(path: str) -> tuple[str, int, int]:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device where a library should be: opening it could block for ever.
        raise OSError(f"{path}: not a regular file")
    return (path, info.st_mtime_ns, info.st_size)


def open_nonblocking(path: str, flags: int) -> int:
    """An ``opener`` for open(): never waits for a FIFO's writer."""
    return os.open(path, flags | os.O_NONBLOCK)


def read_dynamic(path: str) -> ElfDynamic:
    """SONAME, NEEDED, RPATH and RUNPATH of an ELF file (never raises)."""
    try:
        return _read_dynamic_cached(_file_key(path))
    except OSError as exc:
        return ElfDynamic(path, error=exc.strerror or str(exc))


@cache
def _read_dynamic_cached(key: tuple[str, int, int]) -> ElfDynamic:
    path = key[0]
    try:
        return _read_dynamic(path)
    except OSError as exc:
        return ElfDynamic(path, error=exc.strerror or str(exc))
    except Exception as exc:
        return ElfDynamic(path, error=f"not a readable ELF file ({type(exc).__name__}: {exc})")


@cache
def _elf_structs(
    little_endian: bool, elfclass: int, e_type: str, e_machine: str, osabi: str
) -> Any:
    """pyelftools' parsers for one kind of ELF file, built once (ELFFile builds them for
    every file it opens, a third of the time of reading a dynamic section)."""
    from elftools.elf.structs import ELFStructs

    structs = ELFStructs(little_endian=little_endian, elfclass=elfclass)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type, e_machine, osabi)
    return structs


@cache
def _header_structs(little_endian: bool, elfclass: int) -> Any:
    from elftools.elf.structs import ELFStructs

    structs = ELFStructs(little_endian=little_endian, elfclass=elfclass)
    structs.create_basic_structs()
    return structs


def elf_header(stream: BinaryIO) -> tuple[Any, Any]:
    """The ELF header and pyelftools' parsers for the file (ELFError if it is not ELF)."""
    from elftools.common.exceptions import ELFError
    from elftools.common.utils import struct_parse

    # e_ident, read as ELFFile reads it: magic, class, byte order.
    stream.seek(0)
    ident = stream.read(6)
    if ident[:4] != b"\x7fELF":
        raise ELFError("Magic number does not match")
    if ident[4:5] not in (b"\x01", b"\x02"):
        raise ELFError(f"Invalid EI_CLASS {ident[4:5]!r}")
    if ident[5:6] not in (b"\x01", b"\x02"):
        raise ELFError(f"Invalid EI_DATA {ident[5:6]!r}")
    little_endian = ident[5:6] == b"\x01"
    elfclass = 32 if ident[4:5] == b"\x01" else 64
    header = struct_parse(_header_structs(little_endian, elfclass).Elf_Ehdr, stream, 0)
    structs = _elf_structs(
        little_endian,
        elfclass,
        header["e_type"],
        header["e_machine"],
        header["e_ident"]["EI_OSABI"],
    )
    return header, structs


SHN_XINDEX = 0xFFFF


def elf_sections(stream: BinaryIO) -> list[tuple[str, str, int, int]]:
    """(name, type, file offset, size) of every section, as ELFFile.iter_sections names them."""
    from elftools.common.utils import parse_cstring_from_stream, struct_parse

    header, structs = elf_header(stream)

    def section(index: int) -> Any:
        offset = header["e_shoff"] + index * header["e_shentsize"]
        return struct_parse(structs.Elf_Shdr, stream, offset)

    # A damaged header can claim any count and offset: past the file's end is an error, not
    # a seek that fails with EINVAL or billions of headers read from nothing.
    file_size = stream.seek(0, 2)

    def check_within(count: int) -> None:
        if header["e_shoff"] + count * header["e_shentsize"] > file_size:
            raise ValueError("section headers past the end of the file")

    count = header["e_shnum"]
    names_index = header["e_shstrndx"]
    if header["e_shoff"] and (count == 0 or names_index == SHN_XINDEX):
        check_within(1)
        first = section(0)  # extended numbering keeps the real values here
        count = count or first["sh_size"]
        if names_index == SHN_XINDEX:
            names_index = first["sh_link"]
    if not header["e_shoff"] or count == 0:
        return []
    check_within(count)
    if names_index >= count:
        raise ValueError("the section name table's index is past the last section")
    headers = [section(i) for i in range(count)]
    names_offset = headers[names_index]["sh_offset"]
    out = []
    for entry in headers:
        raw = parse_cstring_from_stream(stream, names_offset + entry["sh_name"]) or b""
        out.append(
            (
                raw.decode("utf-8", "replace"),
                str(entry["sh_type"]),
                int(entry["sh_offset"]),
                int(entry["sh_size"]),
            )
        )
    return out


@cache
def _dynamic_tag_names() -> dict[int, str]:
    from elftools.elf.enums import ENUM_D_TAG_COMMON

    return {value: name for name, value in ENUM_D_TAG_COMMON.items()}


def dynamic_entries(
    stream: BinaryIO, structs: Any, offset: int, size: int
) -> list[tuple[str, int]]:
    """(tag name, value) of each dynamic entry up to DT_NULL. The entries are two words
    each: unpacked with struct, ~20 times faster than a pyelftools parse per entry; the
    tag names are pyelftools' (an unknown tag keeps its number)."""
    entry = struct.Struct(
        ("<" if structs.little_endian else ">") + ("qQ" if structs.elfclass == 64 else "iI")
    )
    names = _dynamic_tag_names()
    stream.seek(offset)
    data = stream.read(size - size % entry.size)
    entries: list[tuple[str, int]] = []
    for position in range(0, size - size % entry.size, entry.size):
        tag, value = entry.unpack_from(data, position)  # struct.error: the file is cut short
        if tag == 0:  # DT_NULL
            break
        entries.append((names.get(tag, str(tag)), value))
    return entries


def _read_dynamic(path: str) -> ElfDynamic:
    # elftools.elf.elffile imports DWARF and more; the header, program headers and
    # dynamic entries need only these.
    from elftools.common.utils import parse_cstring_from_stream, struct_parse

    with open(path, "rb", opener=open_nonblocking) as stream:
        elf, structs = elf_header(stream)
        headers = [
            struct_parse(structs.Elf_Phdr, stream, elf["e_phoff"] + i * elf["e_phentsize"])
            for i in range(elf["e_phnum"])
        ]
        dynamic = next((h for h in headers if h["p_type"] == "PT_DYNAMIC"), None)
        if dynamic is None:
            return ElfDynamic(path, error="no dynamic section (a static or non-library file)")
        entries = dynamic_entries(stream, structs, dynamic["p_offset"], dynamic["p_filesz"])
        strtab = next((value for tag, value in entries if tag == "DT_STRTAB"), None)
        if strtab is None:
            return ElfDynamic(path, error="the dynamic section has no string table")
        # DT_STRTAB is a virtual address: map it to a file offset through the PT_LOAD segments.
        offset = None
        for header in headers:
            start = header["p_vaddr"]
            if header["p_type"] == "PT_LOAD" and start <= strtab < start + header["p_filesz"]:
                offset = strtab - start + header["p_offset"]
                break
        if offset is None:
            return ElfDynamic(path, error="the string table lies outside the file")

        def string(value: int) -> str:
            raw = parse_cstring_from_stream(stream, offset + value) or b""
            return raw.decode("utf-8", "replace")

        soname = None
        needed: list[str] = []
        rpath: tuple[str, ...] = ()
        runpath: tuple[str, ...] = ()
        for tag, value in entries:
            if tag == "DT_NEEDED":
                needed.append(string(value))
            elif tag == "DT_SONAME":
                soname = string(value)
            elif tag == "DT_RPATH":
                rpath = split_search_path(string(value))
            elif tag == "DT_RUNPATH":
                runpath = split_search_path(string(value))
        return ElfDynamic(path, soname, tuple(needed), rpath, runpath)


def _lib_dir_name() -> str:
    return "lib64" if struct.calcsize("P") == 8 else "lib"


@lru_cache(maxsize=4096)  # a walk expands the same few entries for every NEEDED
def expand_origin(entry: str, object_path: str) -> str:
    """$ORIGIN (the object's directory), $LIB and $PLATFORM, as ld.so expands them."""
    origin = os.path.dirname(object_path)
    out = entry
    for token, value in (
        ("ORIGIN", origin),
        ("LIB", _lib_dir_name()),
        ("PLATFORM", platform.machine()),
    ):
        out = out.replace("${" + token + "}", value).replace("$" + token, value)
    return out


# /etc/ld.so.cache, new format ("glibc-ld.so.cache1.1"): header, then entries of
# (int32 flags, uint32 key, uint32 value, uint32 osversion, uint64 hwcap); key and value
# are offsets of the soname and the path from the start of the new-format header.
_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_CACHE_HEADER = struct.Struct("<II B3x I 12x")
_CACHE_ENTRY = struct.Struct("<iIIIQ")
_FLAG_ELF_LIBC6 = 0x0003
_REQUIRED_FLAGS = {"x86_64": 0x0300, "aarch64": 0x0A00, "ppc64le": 0x0500, "s390x": 0x0400}


@lru_cache(maxsize=4)
def ld_so_cache(path: str = "/etc/ld.so.cache") -> Mapping[str, str]:
    """soname -> path from the loader's cache, first entry wins as in ld.so; {} if unreadable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return {}
    start = data.find(_CACHE_MAGIC)
    if start < 0:
        return {}
    try:
        count, _strings, _flags, _ext = _CACHE_HEADER.unpack_from(data, start + len(_CACHE_MAGIC))
    except struct.error:
        return {}
    base = start + len(_CACHE_MAGIC) + _CACHE_HEADER.size
    wanted = _REQUIRED_FLAGS.get(platform.machine())
    out: dict[str, str] = {}

    def text(offset: int) -> str:
        end = data.find(b"\0", start + offset)
        return data[start + offset : end].decode("utf-8", "replace")

    for i in range(count):
        try:
            flags, key, value, _os, _hwcap = _CACHE_ENTRY.unpack_from(
                data, base + i * _CACHE_ENTRY.size
            )
        except struct.error:
            break
        if flags & 0xFF != _FLAG_ELF_LIBC6:
            continue
        if wanted is not None and flags & 0xFF00 != wanted:
            continue
        out.setdefault(text(key), text(value))
    return out


def default_dirs() -> tuple[str, ...]:
    """The loader's built-in directories (multiarch ones first, as Debian's glibc has them)."""
    machine = platform.machine()
    multiarch = f"{machine}-linux-gnu"
    lib = _lib_dir_name()
    candidates: tuple[str, ...] = (
        f"/lib/{multiarch}",
        f"/usr/lib/{multiarch}",
        f"/{lib}",
        f"/usr/{lib}",
    )
    if lib != "lib":
        candidates += ("/lib", "/usr/lib")
    return candidates


@dataclass
class LoaderModel:
    """Resolves sonames for objects as glibc's loader would, given the environment."""

    ld_library_path: Sequence[str] = ()  # "" is the working directory, as ld.so reads it
    ld_preload: Mapping[str, str] = field(default_factory=dict)  # soname -> path
    # soname -> the LD_PRELOAD entry as written, when it is not the path (a bare name)
    preload_entries: Mapping[str, str] = field(default_factory=dict)
    cache: Mapping[str, str] | None = None
    defaults: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = ld_so_cache()
        if not self.defaults:
            self.defaults = default_dirs()
        # (directory, soname) -> file: a walk asks the same RPATH entries hundreds of times.
        self._seen: dict[tuple[str, str], str | None] = {}

    def _found(self, directory: str, soname: str) -> str | None:
        key = (directory, soname)
        if key not in self._seen:
            candidate = os.path.join(directory or ".", soname)
            self._seen[key] = os.path.realpath(candidate) if os.path.isfile(candidate) else None
        return self._seen[key]

    def search(
        self,
        soname: str,
        chain: Sequence[ElfDynamic],
        *,
        loaded: Mapping[str, ResolvedDependency] | None = None,
    ) -> ResolvedDependency:
        """Resolve ``soname`` NEEDED by ``chain[-1]``; ``chain`` runs from the root object.

        ``loaded`` maps sonames already in the process to how they got there.
        """
        expected = self._expected(soname, chain)
        if soname in self.ld_preload:
            return ResolvedDependency(
                soname,
                Resolution.LD_PRELOAD,
                os.path.realpath(self.ld_preload[soname]),
                entry=self.preload_entries.get(soname, self.ld_preload[soname]),
                expected_path=expected,
            )
        if loaded and soname in loaded:
            return loaded[soname]
        requester = chain[-1]
        if not requester.runpath:
            for ancestor in reversed(chain):
                for entry in ancestor.rpath:
                    found = self._found(expand_origin(entry, ancestor.path), soname)
                    if found:
                        return ResolvedDependency(
                            soname,
                            Resolution.RPATH,
                            found,
                            entry=entry,
                            entry_from=ancestor.path,
                            expected_path=expected,
                        )
        for entry in self.ld_library_path:
            found = self._found(entry, soname)
            if found:
                return ResolvedDependency(
                    soname,
                    Resolution.LD_LIBRARY_PATH,
                    found,
                    entry=entry,
                    expected_path=expected,
                )
        for entry in requester.runpath:
            found = self._found(expand_origin(entry, requester.path), soname)
            if found:
                return ResolvedDependency(
                    soname,
                    Resolution.RUNPATH,
                    found,
                    entry=entry,
                    entry_from=requester.path,
                    expected_path=expected,
                )
        cached = (self.cache or {}).get(soname)
        if cached:
            return ResolvedDependency(
                soname,
                Resolution.CACHE,
                os.path.realpath(cached),
                entry=cached,
                expected_path=expected,
            )
        for entry in self.defaults:
            found = self._found(entry, soname)
            if found:
                return ResolvedDependency(
                    soname, Resolution.DEFAULT, found, entry=entry, expected_path=expected
                )
        return ResolvedDependency(soname, Resolution.NOT_FOUND, expected_path=expected)

    @classmethod
    def for_environment(
        cls, environment: Mapping[str, str], program: ElfDynamic
    ) -> tuple[LoaderModel, tuple[tuple[str, str | None], ...]]:
        """The loader of a process started from ``program`` with ``environment``
        (LD_LIBRARY_PATH, LD_PRELOAD), and each LD_PRELOAD entry as written with the file
        it loads (None when it loads none)."""
        # ld.so ignores an empty LD_LIBRARY_PATH but reads an empty entry as the
        # working directory.
        value = environment.get("LD_LIBRARY_PATH", "")
        model = cls(ld_library_path=list(split_search_path(value)) if value else [])
        preloaded: dict[str, str] = {}
        written: dict[str, str] = {}
        files: list[tuple[str, str | None]] = []
        for item in split_preload(environment.get("LD_PRELOAD", "")):
            preload_file = model.preload_path(item, program)
            files.append((item, preload_file))
            if preload_file is None:
                continue
            soname = read_dynamic(preload_file).soname or os.path.basename(item)
            if soname not in preloaded:
                preloaded[soname] = preload_file
                if preload_file != item:
                    written[soname] = item
        model.ld_preload = preloaded
        model.preload_entries = written
        return model, tuple(files)

    def preload_path(self, item: str, program: ElfDynamic) -> str | None:
        """The file an LD_PRELOAD entry loads: a path as written; a name without a slash
        is searched like a NEEDED entry of the program itself (ld.so(8))."""
        if "/" in item:
            return item if os.path.isfile(item) else None
        return self.search(item, [program]).path

    def _expected(self, soname: str, chain: Sequence[ElfDynamic]) -> str | None:
        """Where the objects' own RPATH/RUNPATH find it: what the wheels were built for."""
        requester = chain[-1]
        entries: list[tuple[str, str]] = []
        if not requester.runpath:
            entries += [(e, a.path) for a in reversed(chain) for e in a.rpath]
        entries += [(e, requester.path) for e in requester.runpath]
        for entry, origin_of in entries:
            found = self._found(expand_origin(entry, origin_of), soname)
            if found:
                return found
        return None
