"""How much the ELF fast path in doctor/probe/elf.py saves over pyelftools' public API.

doctor/probe/elf.py reads the ELF header, program headers and dynamic entries with
pyelftools' struct parsers (``ELFStructs``, ``struct_parse``), built once per kind of file,
instead of opening each file with ``ELFFile``: ``ELFFile`` builds its parsers for every
file it opens. This benchmark reads the dynamic section (SONAME, NEEDED, RPATH, RUNPATH) of
every shared library in the real torch venv's site-packages (torch/lib, nvidia/*) both
ways and prints the medians, so the private path is kept only while it matters.

    uv run --group dev python bench/bench_elf.py [--runs 7]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def public_api(path: str) -> tuple[str | None, list[str]]:
    from elftools.elf.elffile import ELFFile

    soname = None
    needed: list[str] = []
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        for segment in elf.iter_segments():
            if segment["p_type"] != "PT_DYNAMIC":
                continue
            for tag in segment.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = tag.soname
                elif tag.entry.d_tag == "DT_RPATH":
                    _ = tag.rpath
                elif tag.entry.d_tag == "DT_RUNPATH":
                    _ = tag.runpath
    return soname, needed


def fast_path(path: str) -> tuple[str | None, list[str]]:
    from doctor.probe import elf

    dynamic = elf._read_dynamic(path)
    return dynamic.soname, list(dynamic.needed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from tests.factory import real_torch_venv_path

    venv = real_torch_venv_path()
    [site] = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))
    files = sorted(
        p
        for pattern in ("torch/lib/*.so*", "torch/_C*.so", "nvidia/**/*.so*")
        for p in glob.glob(os.path.join(site, pattern), recursive=True)
        if os.path.isfile(p)
    )
    for path in files:  # the same answers both ways
        assert fast_path(path) == public_api(path), path
    results = {}
    for name, read in (("fast path (ELFStructs once per kind)", fast_path),
                       ("public API (ELFFile per file)", public_api)):  # fmt: skip
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            for path in files:
                read(path)
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times)
        print(f"{name:40} median {results[name] * 1000:7.1f} ms for {len(files)} files")
    fast, public = results.values()
    print(f"saved per default run: {(public - fast) * 1000:.1f} ms ({public / fast:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
