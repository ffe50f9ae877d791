"""The fat binary header walker: hand-made blobs, a real ELF built here, the real torch."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from doctor.probe.fatbin import FatbinError, read_fatbin_summary, walk_fatbin
from tests.factory import FakeEnv
from tests.fatbin_blob import CUBIN, PTX, container, cubins, entry, shared_library_with_fatbin


def targets(blob: bytes) -> list[list[str]]:
    return [[e.target for e in entries] for entries in walk_fatbin(blob, 0, len(blob))]


def test_entries_of_each_container_are_named_as_nvcc_names_them() -> None:
    blob = cubins(80, 90) + container([entry(CUBIN, 120), entry(PTX, 120)])
    assert targets(blob) == [["sm_80", "sm_90"], ["sm_120", "compute_120"]]


def test_arch_specific_flag_gives_the_a_suffix() -> None:
    blob = container([entry(CUBIN, 100, flags=0x1108011), entry(CUBIN, 100, flags=0x1008011)])
    assert targets(blob) == [["sm_100a", "sm_100"]]


def test_payloads_are_skipped_by_their_sizes_not_read() -> None:
    # A payload that looks like a container header must not be taken for one.
    decoy = struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 0) + b"\0" * 48
    blob = container([entry(CUBIN, 75, payload=decoy), entry(CUBIN, 86)])
    assert targets(blob) == [["sm_75", "sm_86"]]


def test_zero_padding_between_containers_is_skipped() -> None:
    blob = cubins(80) + b"\0" * 24 + cubins(90)
    assert targets(blob) == [["sm_80"], ["sm_90"]]


@pytest.mark.parametrize(
    "blob",
    [
        b"garbage!" * 8,
        cubins(80)[:-10],  # the container claims more than the section holds
        struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 64) + struct.pack("<HHIQ", 2, 0, 8, 0) + b"\0" * 48,
    ],
    ids=["not-a-fatbin", "truncated", "entry-header-too-small"],
)
def test_corrupt_sections_raise_a_clear_error(blob: bytes) -> None:
    with pytest.raises(FatbinError):
        targets(blob)


def test_a_real_elf_library_with_a_crafted_section_is_read(tmp_path: Path) -> None:
    library = shared_library_with_fatbin(tmp_path, cubins(80, 90) + cubins(80, 90, 100))
    summary = read_fatbin_summary(library)
    assert summary.containers == 2
    assert summary.carriers == {"sm_80": 2, "sm_90": 2, "sm_100": 1}


def test_a_library_without_the_section_or_not_elf_says_so(tmp_path: Path) -> None:
    stand_in = tmp_path / "libtorch_cuda.so"
    stand_in.write_bytes(b"\x7fELF stand-in")
    with pytest.raises(FatbinError, match="not a readable ELF file"):
        read_fatbin_summary(stand_in)
    with pytest.raises(FatbinError, match=r"(?i)no such file"):
        read_fatbin_summary(tmp_path / "missing.so")


@pytest.mark.slow
def test_real_libtorch_cuda_headers_give_the_cu130_arch_list_in_milliseconds(
    real_torch_venv: FakeEnv,
) -> None:
    library = real_torch_venv.site_packages / "torch" / "lib" / "libtorch_cuda.so"
    read_fatbin_summary(library)  # warm the page cache and pyelftools' import
    started = time.perf_counter()
    summary = read_fatbin_summary(library)
    elapsed = time.perf_counter() - started
    everywhere = sorted(
        (t for t, n in summary.carriers.items() if n == summary.containers),
        key=lambda t: int(t[3:]),
    )
    # Checked against `cuobjdump --list-elf --list-ptx` on the same file: no PTX at all.
    assert everywhere == ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert not any(t.startswith("compute_") for t in summary.carriers)
    assert elapsed < 0.25, f"walking the headers took {elapsed:.3f} s"
