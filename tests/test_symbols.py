"""The dynamic symbol reader against nm -D, and on every truncation of a real object."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from doctor.probe.symbols import SymbolTableError, open_symbol_table
from tests.extension_objects import EXPORTED, TORCH_DEFINES, USES_EXPORTED, compile_shared


@pytest.fixture
def objects(tmp_path: Path) -> tuple[Path, Path]:
    c10 = compile_shared(TORCH_DEFINES, tmp_path / "lib" / "libc10.so", soname="libc10.so")
    ext = compile_shared(
        USES_EXPORTED, tmp_path / "ext" / "_C.so", link_dir=c10.parent, libraries=("c10",)
    )
    return c10, ext


def nm(path: Path, flag: str) -> set[str]:
    out = subprocess.run(["nm", "-D", flag, str(path)], check=True, capture_output=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.decode().splitlines()}


def test_symbols_are_what_nm_reads(objects: tuple[Path, Path]) -> None:
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed (.ci/run installs it)")
    c10, ext = objects
    for path in (c10, ext):
        with open_symbol_table(str(path)) as table:
            symbols = list(table.symbols())
        assert {s.name for s in symbols if not s.defined} == nm(path, "--undefined-only")
        assert {s.name for s in symbols if s.defined} == nm(path, "--defined-only")
    with open_symbol_table(str(ext)) as table:
        assert table.needed[0] == "libc10.so"
        versions = {s.name: (s.version, s.version_file) for s in table.symbols()}
    # Versions the object requires, with the library they come from (libstdc++'s here).
    assert any(file == "libstdc++.so.6" for _, file in versions.values())
    assert versions[EXPORTED] == (None, None)


def test_lookup_finds_exports_through_the_gnu_hash_table(objects: tuple[Path, Path]) -> None:
    c10, ext = objects
    with open_symbol_table(str(c10)) as table:
        assert table.lookup(EXPORTED) == (True, None)
        assert table.lookup(EXPORTED + "x") == (False, None)
        assert table.lookup("td_check") == (False, None)  # the extension's, not c10's
    with open_symbol_table(str(ext)) as table:
        assert table.lookup("td_check")[0]
        assert not table.lookup(EXPORTED)[0]  # undefined here: never an export


def test_every_truncation_fails_as_a_symbol_table_error_or_a_struct_error(
    objects: tuple[Path, Path], tmp_path: Path
) -> None:
    _, ext = objects
    data = ext.read_bytes()
    cut = tmp_path / "cut.so"
    for length in range(0, len(data), max(1, len(data) // 97)):
        cut.write_bytes(data[:length])
        try:
            with open_symbol_table(str(cut)) as table:
                list(table.symbols())
                table.lookup(EXPORTED)
        except (SymbolTableError, struct.error, ValueError, IndexError):
            pass  # what the extensions probe reports as an unreadable object
