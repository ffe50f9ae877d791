"""Compiled extensions of torch: which installed shared objects need torch's libraries,
and which of the symbols they need torch no longer (or never) exported.

A distribution's shared objects are the ``.so`` files its RECORD lists. One needs torch
when it NEEDs ``libc10.so``/``libtorch*.so`` or its dynamic strings name torch's C++
namespaces (``c10::``, ``at::``, ``torch::``, ``caffe2::``) or ``aoti_torch_*`` (an extension
may leave torch's symbols to the libraries ``import torch`` already loaded). Its undefined
symbols in those namespaces are looked up in torch's libraries through their own hash
tables (doctor/probe/symbols.py), as ld.so would when ``import`` loads the extension: a
symbol no torch library exports is the ``undefined symbol: _ZN3c10…`` ImportError.

Cost: torch's libraries are never scanned, only asked for the symbols extensions need
(microseconds each); each extension's own table is scanned once. Nothing is cached on
disk. Editable installs (no ``.so`` in RECORD) are not seen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

from doctor.facts import DistributionFacts, TorchBuildFacts
from doctor.facts.extensions import (
    ExtensionFacts,
    ExtensionLibraryFacts,
    ExtensionsFacts,
    MissingSymbol,
    UnreadableObject,
)
from doctor.probe.files import UnreadableFile, read_capped
from doctor.probe.symbols import TABLE_ERRORS, SymbolTable, SymbolTableError, open_symbol_table
from doctor.probe.text import clean

__all__ = ["demangle", "is_torch_symbol", "probe_extensions", "torch_soname"]

# Distributions whose shared objects are torch itself or libraries torch needs: never
# extensions of torch, and some are large (libtorch_cuda.so, libtriton.so, cuDNN).
NOT_EXTENSIONS = re.compile(r"^(torch|triton|pytorch-triton|nvidia-.*|cuda-.*)$")
_SHARED_OBJECT_ROW = re.compile(r"^([^,\r\n]+\.so(?:\.\d+)*),", re.MULTILINE)
_TORCH_SONAME = re.compile(r"^lib(?:c10|torch|shm|caffe2)[\w.-]*\.so(?:\.\d+)*$")
# Mangled names in torch's namespaces: functions and data (_ZN / _ZNK ...), vtables,
# typeinfo and their names (_ZTV / _ZTI / _ZTS), thread_local init and wrapper functions
# (_ZTH / _ZTW), and the C shim of AOTInductor.
_TORCH_SYMBOL = re.compile(r"^(?:_Z(?:T[VISHW])?N[VKRO]*(?:3c10|2at|5torch|6caffe2)|aoti_torch_)")
_TORCH_STRINGS: tuple[bytes, ...] = (b"_ZN3c10", b"_ZNK3c10", b"_ZN2at", b"_ZNK2at")
_TORCH_STRINGS += (b"_ZN5torch", b"_ZNK5torch", b"_ZTVN3c10", b"_ZTIN3c10", b"aoti_torch_")
# std::string of the pre-C++11 ABI is the substitution "Ss" (std::basic_string<char>),
# seen as a parameter or template argument: RKSs, KSs, PSs, after E (a nested name's end)
# or I (a template's arguments). The C++11 ABI spells NSt7__cxx1112basic_string... instead.
_OLD_STRING = re.compile(r"[RKPEI]Ss")
_CUDA_RUNTIME = re.compile(r"^libcudart\.so\.\d+$")
# flash-attn's wheels: flash_attn-2.8.3+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl
_BUILD_TAG = re.compile(r"cu(\d+)torch(\d+\.\d+)cxx11abi(TRUE|FALSE)", re.IGNORECASE)
_LOCAL_CUDA = re.compile(r"\+cu(\d+)")
MISSING_KEPT = 5  # per shared object: enough to name the problem
TORCH_SONAMES_FIRST = ("libc10.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch_python.so")


def torch_soname(name: str) -> bool:
    """Whether a NEEDED entry is one of torch's own libraries."""
    return _TORCH_SONAME.match(name) is not None


def is_torch_symbol(name: str) -> bool:
    """Whether a mangled name lies in torch's namespaces (c10, at, torch, caffe2, AOTI)."""
    return _TORCH_SYMBOL.match(name) is not None


def _shared_objects(dist: DistributionFacts) -> list[str]:
    try:
        # Through files.py: a FIFO would block here for ever, /dev/zero grow without end.
        data = read_capped(os.path.join(dist.metadata_dir, "RECORD"), "RECORD")
    except UnreadableFile:
        return []  # the inside probe reports a RECORD it cannot read
    text = data.decode("utf-8", "replace")
    if ".so" not in text:  # most distributions: a substring test, not a regex over RECORD
        return []
    out = []
    for relative in _SHARED_OBJECT_ROW.findall(text):
        path = os.path.normpath(os.path.join(dist.location, relative))
        if os.path.isfile(path):
            out.append(path)
    return out


def _unreadable(path: str, reason: str) -> UnreadableObject:
    return UnreadableObject(clean(path), clean(reason))


def _clean_or_none(text: str | None) -> str | None:
    return None if text is None else clean(text)


def _torch_libraries(torch: TorchBuildFacts) -> list[str]:
    lib = os.path.join(torch.package_dir, "lib")
    names = [n for n in torch.lib_files if torch_soname(n) and n.endswith(".so")]
    ordered = [n for n in TORCH_SONAMES_FIRST if n in names]
    ordered += sorted(n for n in names if n not in ordered)
    return [os.path.join(lib, n) for n in ordered]


def _built_for(
    dist: DistributionFacts,
) -> tuple[str | None, str | None, bool | None, str | None, str | None]:
    """(torch requirement, torch release, cxx11 ABI, CUDA major, wheel file) it names."""
    from packaging.requirements import InvalidRequirement, Requirement

    requirement: str | None = None
    release: str | None = None
    for text in dist.requires_dist:
        try:
            parsed = Requirement(text)
        except InvalidRequirement:
            continue
        if parsed.name.lower() != "torch" or (parsed.marker and "extra" in str(parsed.marker)):
            continue
        requirement = text
        pins = [s.version for s in parsed.specifier if s.operator in ("==", "===")]
        if pins:
            release = pins[0]
    wheel_file: str | None = None
    try:
        raw = read_capped(os.path.join(dist.metadata_dir, "direct_url.json"), "direct_url.json")
        direct = json.loads(raw.decode("utf-8"))
        url = direct.get("url") if isinstance(direct, dict) else None
        if isinstance(url, str) and url.endswith(".whl"):
            wheel_file = clean(url.rsplit("/", 1)[-1])
    except (OSError, ValueError, RecursionError):
        pass  # no file, not a file, too large, not JSON (UnicodeDecodeError is a ValueError)
    cxx11: bool | None = None
    cuda: str | None = None
    for named in (wheel_file, dist.version):
        match = _BUILD_TAG.search(named or "")
        if match:
            cuda, tagged, abi = match.group(1), match.group(2), match.group(3).upper()
            release = release or tagged
            cxx11 = abi == "TRUE"
            break
    if cuda is None:
        local = _LOCAL_CUDA.search(dist.version)
        cuda = local.group(1) if local else None
    return requirement, release, cxx11, cuda, wheel_file


class _TorchExports:
    """torch's libraries, asked symbol by symbol (first exporter wins)."""

    def __init__(self, tables: Sequence[SymbolTable]) -> None:
        self.tables = tables

    def exports(self, name: str, version: str | None) -> bool:
        for table in self.tables:
            found, exported = table.lookup(name)
            if found:
                return version is None or exported is None or exported == version
        return False

    def cxx11_abi(self) -> bool | None:
        """Whether libc10.so exports names with std::__cxx11 types (built with ABI=1)."""
        c10 = next((t for t in self.tables if os.path.basename(t.path) == "libc10.so"), None)
        if c10 is None:
            return None
        try:
            return any("__cxx11" in s.name for s in c10.symbols() if s.defined)
        except (SymbolTableError, *TABLE_ERRORS):
            return None  # a table that runs past the end of the file: unknown


def _library_facts(
    path: str, table: SymbolTable, torch: _TorchExports, read_gpu_code: bool
) -> ExtensionLibraryFacts | None:
    torch_needed = tuple(n for n in table.needed if torch_soname(n))
    if not torch_needed and not table.strings_contain(_TORCH_STRINGS):
        return None
    wanted = [s for s in table.symbols() if not s.defined and is_torch_symbol(s.name)]
    if not torch_needed and not wanted:
        return None
    missing = [s for s in wanted if not s.weak and not torch.exports(s.name, s.version)]
    gpu_targets: tuple[str, ...] | None = None
    gpu_error = None
    if read_gpu_code:
        gpu_targets, gpu_error = _gpu_targets(path)
    return ExtensionLibraryFacts(
        path=clean(path),
        torch_needed=torch_needed,
        cuda_runtime=tuple(n for n in table.needed if _CUDA_RUNTIME.match(n)),
        torch_symbols=len(wanted),
        missing_count=len(missing),
        # The names are the file's bytes: cleaned as every string from the environment.
        missing=tuple(
            MissingSymbol(clean(s.name), version=_clean_or_none(s.version))
            for s in missing[:MISSING_KEPT]
        ),
        uses_cxx11_abi=any("__cxx11" in s.name for s in wanted),
        uses_old_string_abi=any(_OLD_STRING.search(s.name) for s in missing),
        gpu_targets=gpu_targets,
        gpu_targets_error=gpu_error,
    )


def _gpu_targets(path: str) -> tuple[tuple[str, ...] | None, str | None]:
    from doctor.probe.fatbin import FatbinError, read_fatbin_summary

    try:
        summary = read_fatbin_summary(Path(path))
    except FatbinError as exc:
        if "no .nv_fatbin section" in str(exc):
            return (), None  # CPU code only: nothing to run on a GPU
        return None, str(exc)
    return tuple(sorted(summary.carriers)), None


def probe_extensions(
    distributions: Iterable[DistributionFacts],
    torch: TorchBuildFacts | None,
    *,
    read_gpu_code: bool = False,
    timeout: float = 60.0,
) -> ExtensionsFacts | None:
    """None without torch. ``read_gpu_code``: read the extensions' fat binaries (only
    worth it when a GPU is known to judge them against)."""
    if torch is None or not torch.lib_files:
        return None
    torch_paths = _torch_libraries(torch)
    unreadable: list[UnreadableObject] = []
    extensions: list[ExtensionFacts] = []
    with ExitStack() as stack:
        tables = []
        for path in torch_paths:
            try:
                tables.append(stack.enter_context(open_symbol_table(path)))
            except SymbolTableError as exc:
                unreadable.append(_unreadable(path, str(exc)))
        if not tables:
            return ExtensionsFacts(
                tuple(torch_paths),
                unreadable=tuple(unreadable),
                error="none of torch's libraries could be read",
            )
        exports = _TorchExports(tables)
        for dist in distributions:
            if dist.shadowed or NOT_EXTENSIONS.match(dist.name):
                continue
            libraries = []
            for path in _shared_objects(dist):
                try:
                    with open_symbol_table(path) as table:
                        if table.machine is not None:
                            unreadable.append(_unreadable(path, f"built for {table.machine}"))
                            continue
                        found = _library_facts(path, table, exports, read_gpu_code)
                except SymbolTableError as exc:
                    unreadable.append(_unreadable(path, str(exc)))
                    continue
                except TABLE_ERRORS as exc:
                    # Headers that parse, tables that run past the end of the file.
                    unreadable.append(_unreadable(path, f"truncated or corrupt ({exc})"))
                    continue
                if found is not None:
                    libraries.append(found)
            if libraries:
                requirement, release, cxx11, cuda, wheel_file = _built_for(dist)
                extensions.append(
                    ExtensionFacts(
                        name=dist.name,
                        display_name=dist.display_name,
                        version=dist.version,
                        installer=dist.installer or _installer(dist.metadata_dir),
                        torch_requirement=requirement,
                        built_for_torch=release,
                        built_for_cxx11_abi=cxx11,
                        built_for_cuda=cuda,
                        wheel_file=wheel_file,
                        libraries=tuple(libraries),
                    )
                )
        torch_cxx11 = exports.cxx11_abi() if extensions else None
    names = [m.name for e in extensions for lib in e.libraries for m in lib.missing]
    demangled, demangler = demangle(names, timeout=timeout) if names else ({}, None)
    if demangled:
        extensions = [_with_demangled(e, demangled) for e in extensions]
    return ExtensionsFacts(
        torch_libraries=tuple(t.path for t in tables),
        torch_cxx11_abi=torch_cxx11,
        extensions=tuple(extensions),
        unreadable=tuple(unreadable),
        demangler=demangler,
    )


def _with_demangled(extension: ExtensionFacts, demangled: dict[str, str]) -> ExtensionFacts:
    import dataclasses

    libraries = tuple(
        dataclasses.replace(
            lib,
            missing=tuple(
                dataclasses.replace(m, demangled=demangled.get(m.name)) for m in lib.missing
            ),
        )
        for lib in extension.libraries
    )
    return dataclasses.replace(extension, libraries=libraries)


def demangle(names: Sequence[str], *, timeout: float = 10.0) -> tuple[dict[str, str], str | None]:
    """Mangled -> demangled names through binutils' c++filt, run contained; ({}, None)
    when it is not installed or fails (the mangled names are shown instead)."""
    from doctor.probe.contained import run_contained

    tool = shutil.which("c++filt")
    if tool is None:
        return {}, None
    run = run_contained([tool], timeout=min(timeout, 10.0), stdin_text="\n".join(names) + "\n")
    lines = run.stdout.splitlines()
    if not run.ok or len(lines) != len(names):
        return {}, None
    return {m: clean(d) for m, d in zip(names, lines) if d != m}, "c++filt"


def _installer(metadata_dir: str) -> str | None:
    """INSTALLER of a distribution the inside probe did not read it for (it reads it only
    for torch's family and requirements): an extension's installer is in its report."""
    try:
        text = read_capped(os.path.join(metadata_dir, "INSTALLER"), "INSTALLER")
    except UnreadableFile:
        return None
    return clean(text.decode("utf-8", "replace").strip()) or None
