"""Dynamic symbols of ELF shared objects, read the way glibc's loader reads them.

Only the dynamic segment is used: DT_SYMTAB, DT_STRTAB/DT_STRSZ, DT_GNU_HASH, DT_VERSYM,
DT_VERNEED and DT_VERDEF, mapped to file offsets through the PT_LOAD segments, as ld.so
does (section headers may be stripped; the loader never reads them). The ELF header and
program headers are parsed by pyelftools (doctor/probe/elf.py); the tables themselves
are arrays of fixed-size records, unpacked with struct, because libtorch_cpu.so alone
has ~75,000 dynamic symbols and a pyelftools parse per record would take seconds.

An exported symbol is looked up through the library's own GNU hash table, as ld.so does,
so asking libtorch_cpu.so for the few hundred symbols an extension needs costs
microseconds each and never reads its full table. The file is memory-mapped, so the pages
read are the only ones touched (libtorch_cuda.so is ~500 MB).

Layouts (System V gABI and the GNU extensions, as binutils' readelf reads them):

    Elf64_Sym   u32 name, u8 info, u8 other, u16 shndx, u64 value, u64 size
    Elf32_Sym   u32 name, u32 value, u32 size, u8 info, u8 other, u16 shndx
    .gnu.hash   u32 nbuckets, symoffset, bloom_size, bloom_shift; bloom words (u64 or
                u32); u32 buckets[nbuckets]; u32 chain[] (bit 0 ends a chain)
    versym      u16 per symbol (0 local, 1 global, bit 15 hidden)
    Verneed     u16 version, u16 count, u32 file, u32 aux, u32 next
    Vernaux     u32 hash, u16 flags, u16 other (the versym index), u32 name, u32 next
    Verdef      u16 version, u16 flags, u16 ndx, u16 count, u32 hash, u32 aux, u32 next
    Verdaux     u32 name, u32 next
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from doctor.probe.elf import open_nonblocking
from doctor.probe.files import UnreadableFile, check_regular

__all__ = ["TABLE_ERRORS", "DynamicSymbol", "SymbolTable", "SymbolTableError", "open_symbol_table"]

STB_WEAK = 2
SHN_UNDEF = 0
STT_SECTION = 3
STT_FILE = 4
VERSYM_HIDDEN = 0x8000
_U32 = struct.Struct("<I")


class SymbolTableError(Exception):
    """The dynamic symbols cannot be read: not ELF, truncated, no dynamic symbol table."""


# What reading a table may raise besides SymbolTableError once the headers parsed: a
# table that runs past the end of the file (struct.error, IndexError, ValueError) or an
# offset past what an index can hold (OverflowError). Callers catch these, never more.
TABLE_ERRORS = (struct.error, ValueError, IndexError, OverflowError)


@dataclass(frozen=True)
class DynamicSymbol:
    name: str
    defined: bool
    weak: bool
    version: str | None = None  # the version it has (defined) or requires (undefined)
    version_file: str | None = None  # undefined: the library the version is required from


class SymbolTable:
    """One shared object's dynamic symbols; use as a context manager (it maps the file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            check_regular(path)  # a FIFO where a library should be would block open() for ever
        except UnreadableFile as exc:
            raise SymbolTableError(str(exc)) from exc
        self._handle = open(path, "rb", opener=open_nonblocking)  # noqa: SIM115 - closed by close()
        try:
            self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # an empty file cannot be mapped
            self._handle.close()
            raise SymbolTableError(f"cannot map the file: {exc}") from exc
        try:
            self._parse()
        except SymbolTableError:
            self.close()
            raise
        except (struct.error, ValueError, IndexError, KeyError) as exc:
            self.close()
            raise SymbolTableError(f"truncated or corrupt ELF file ({exc})") from exc
        except Exception as exc:  # pyelftools' ELFError and construct's errors
            self.close()
            raise SymbolTableError(
                f"not a readable ELF file ({type(exc).__name__}: {exc})"
            ) from exc

    def __enter__(self) -> SymbolTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
        self._handle.close()

    # -- reading the dynamic segment -------------------------------------------------

    def _parse(self) -> None:
        from elftools.common.utils import struct_parse

        from doctor.probe.elf import dynamic_entries, elf_header

        header, structs = elf_header(self._handle)
        self._little = bool(structs.little_endian)
        self._is64 = structs.elfclass == 64
        if header["e_machine"] != _host_machine(self._is64):
            self.machine: str | None = str(header["e_machine"])
        else:
            self.machine = None
        phdrs = [
            struct_parse(
                structs.Elf_Phdr, self._handle, header["e_phoff"] + i * header["e_phentsize"]
            )
            for i in range(header["e_phnum"])
        ]
        self._loads = [
            (int(p["p_vaddr"]), int(p["p_offset"]), int(p["p_filesz"]))
            for p in phdrs
            if p["p_type"] == "PT_LOAD"
        ]
        dynamic = next((p for p in phdrs if p["p_type"] == "PT_DYNAMIC"), None)
        if dynamic is None:
            raise SymbolTableError("no dynamic section (a static or non-library file)")
        entries = dynamic_entries(
            self._handle, structs, int(dynamic["p_offset"]), int(dynamic["p_filesz"])
        )
        tags: dict[str, int] = {}
        for tag, value in entries:
            tags.setdefault(tag, value)
        if "DT_SYMTAB" not in tags or "DT_STRTAB" not in tags:
            raise SymbolTableError("no dynamic symbol table")
        self._symtab = self._offset(tags["DT_SYMTAB"])
        self._strtab = self._offset(tags["DT_STRTAB"])
        self._strsz = tags.get("DT_STRSZ", len(self._map) - self._strtab)
        self.needed = tuple(
            self._cstring(self._strtab + value) for tag, value in entries if tag == "DT_NEEDED"
        )
        self._sym = struct.Struct(
            ("<" if self._little else ">") + ("IBBHQQ" if self._is64 else "IIIBBH")
        )
        self._gnu_hash = self._offset(tags["DT_GNU_HASH"]) if "DT_GNU_HASH" in tags else None
        self._sysv_hash = self._offset(tags["DT_HASH"]) if "DT_HASH" in tags else None
        self._versym = self._offset(tags["DT_VERSYM"]) if "DT_VERSYM" in tags else None
        self._count: int | None = None  # counted on the first scan; lookups need none
        self._version_names = self._versions(tags)
        self._exports: dict[str, int] | None = None

    def _offset(self, address: int) -> int:
        """A virtual address as a file offset, through the PT_LOAD segment holding it."""
        for start, offset, size in self._loads:
            if start <= address < start + size:
                return address - start + offset
        raise SymbolTableError(f"address {address:#x} lies outside the file's segments")

    def _u32(self, offset: int) -> int:
        value: int = struct.unpack_from("<I" if self._little else ">I", self._map, offset)[0]
        return value

    def _cstring(self, offset: int) -> str:
        end = self._map.find(b"\0", offset)
        if end < 0:
            raise SymbolTableError("a string runs past the end of the file")
        return self._map[offset:end].decode("utf-8", "replace")

    def _symbol_count(self) -> int:
        """As ld.so and readelf do without section headers: DT_HASH's nchain, else the
        highest symbol index any GNU hash chain reaches."""
        if self._sysv_hash is not None:
            return self._u32(self._sysv_hash + 4)
        if self._gnu_hash is None:
            raise SymbolTableError("no symbol hash table (DT_GNU_HASH or DT_HASH)")
        nbuckets, symoffset, bloom_size, _shift = self._gnu_header()
        buckets = self._gnu_hash + 16 + bloom_size * (8 if self._is64 else 4)
        last = max(struct.unpack_from(self._order(f"{nbuckets}I"), self._map, buckets), default=0)
        if last < symoffset:
            return symoffset
        chain = buckets + 4 * nbuckets
        while not self._u32(chain + 4 * (last - symoffset)) & 1:
            last += 1
        return last + 1

    def _gnu_header(self) -> tuple[int, int, int, int]:
        assert self._gnu_hash is not None
        unpacked = struct.unpack_from("<4I" if self._little else ">4I", self._map, self._gnu_hash)
        return unpacked[0], unpacked[1], unpacked[2], unpacked[3]

    def _versions(self, tags: dict[str, int]) -> dict[int, tuple[str, str | None]]:
        """versym index -> (version name, file it is required from; None when defined)."""
        out: dict[int, tuple[str, str | None]] = {}
        if "DT_VERNEED" in tags:
            need = self._offset(tags["DT_VERNEED"])
            for _ in range(tags.get("DT_VERNEEDNUM", 0)):
                _v, count, file, aux, following = struct.unpack_from(
                    self._order("HHIII"), self._map, need
                )
                library = self._cstring(self._strtab + file)
                entry = need + aux
                for _ in range(count):
                    _h, _f, index, name, next_aux = struct.unpack_from(
                        self._order("IHHII"), self._map, entry
                    )
                    out[index & ~VERSYM_HIDDEN] = (self._cstring(self._strtab + name), library)
                    entry += next_aux
                if not following:
                    break
                need += following
        if "DT_VERDEF" in tags:
            define = self._offset(tags["DT_VERDEF"])
            for _ in range(tags.get("DT_VERDEFNUM", 0)):
                _v, flags, index, count, _h, aux, following = struct.unpack_from(
                    self._order("HHHHIII"), self._map, define
                )
                if count and not flags & 1:  # VER_FLG_BASE names the file itself
                    (name,) = struct.unpack_from(self._order("I"), self._map, define + aux)
                    out[index] = (self._cstring(self._strtab + name), None)
                if not following:
                    break
                define += following
        return out

    def _order(self, fields: str) -> str:
        return ("<" if self._little else ">") + fields

    # -- symbols ---------------------------------------------------------------------

    def _symbol(self, index: int) -> tuple[int, int, int]:
        """(name offset, info, section index) of one symbol."""
        if self._is64:
            name, info, _other, shndx, _value, _size = self._sym.unpack_from(
                self._map, self._symtab + index * self._sym.size
            )
        else:
            name, _value, _size, info, _other, shndx = self._sym.unpack_from(
                self._map, self._symtab + index * self._sym.size
            )
        return name, info, shndx

    def _version_of(self, index: int) -> tuple[str | None, str | None]:
        if self._versym is None:
            return None, None
        (raw,) = struct.unpack_from(self._order("H"), self._map, self._versym + 2 * index)
        found = self._version_names.get(raw & ~VERSYM_HIDDEN)
        return found if found is not None else (None, None)

    def _symbols_counted(self) -> int:
        if self._count is None:
            self._count = self._symbol_count()
        return self._count

    def symbols(self) -> Iterator[DynamicSymbol]:
        """Every global or weak dynamic symbol (the null symbol and locals left out)."""
        for index in range(1, self._symbols_counted()):
            name, info, shndx = self._symbol(index)
            binding, kind = info >> 4, info & 0xF
            if binding == 0 or kind in (STT_SECTION, STT_FILE):
                continue
            version, library = self._version_of(index)
            yield DynamicSymbol(
                self._cstring(self._strtab + name),
                defined=shndx != SHN_UNDEF,
                weak=binding == STB_WEAK,
                version=version,
                version_file=library,
            )

    def strings_contain(self, needles: tuple[bytes, ...]) -> bool:
        """Whether the dynamic string table holds any of these bytes (one C-speed scan)."""
        end = min(self._strtab + self._strsz, len(self._map))  # DT_STRSZ may be anything
        return any(self._map.find(needle, self._strtab, end) >= 0 for needle in needles)

    def lookup(self, name: str) -> tuple[bool, str | None]:
        """Whether the object exports ``name`` (defined, global or weak), and its version.

        Through the GNU hash table when there is one, as ld.so looks symbols up.
        """
        if self._gnu_hash is None:
            return self._lookup_in_scan(name)
        encoded = name.encode()
        wanted = _gnu_hash(encoded)
        nbuckets, symoffset, bloom_size, _shift = self._gnu_header()
        if nbuckets == 0:
            return False, None
        buckets = self._gnu_hash + 16 + bloom_size * (8 if self._is64 else 4)
        chain = buckets + 4 * nbuckets
        index = self._u32(buckets + 4 * (wanted % nbuckets))
        if index < symoffset:
            return False, None
        while True:
            value = self._u32(chain + 4 * (index - symoffset))
            if (value | 1) == (wanted | 1):
                offset, info, shndx = self._symbol(index)
                start = self._strtab + offset
                if (
                    shndx != SHN_UNDEF
                    and info >> 4 != 0
                    and self._map[start : start + len(encoded) + 1] == encoded + b"\0"
                ):
                    return True, self._version_of(index)[0]
            if value & 1:
                return False, None
            index += 1

    def _lookup_in_scan(self, name: str) -> tuple[bool, str | None]:
        if self._exports is None:
            self._exports = {}
            for index in range(1, self._symbols_counted()):
                offset, info, shndx = self._symbol(index)
                if shndx != SHN_UNDEF and info >> 4 != 0:
                    self._exports.setdefault(self._cstring(self._strtab + offset), index)
        found = self._exports.get(name)
        if found is None:
            return False, None
        return True, self._version_of(found)[0]


def _gnu_hash(name: bytes) -> int:
    value = 5381
    for byte in name:
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value


def _host_machine(is64: bool) -> str:
    import platform

    return {
        "x86_64": "EM_X86_64",
        "aarch64": "EM_AARCH64",
        "ppc64le": "EM_PPC64",
        "s390x": "EM_S390",
    }.get(platform.machine(), "EM_X86_64" if is64 else "EM_386")


def open_symbol_table(path: str) -> SymbolTable:
    """The dynamic symbols of one file (SymbolTableError when they cannot be read)."""
    try:
        return SymbolTable(path)
    except OSError as exc:
        raise SymbolTableError(exc.strerror or str(exc)) from exc
