"""Compiled extensions and extension builds, through the CLI, on stand-ins built here:

- torch's libraries are stand-ins compiled from C++ (a libc10.so that defines the one
  function the extensions call), so these tests run without the real torch (the real
  torch and torchvision are in test_extensions_real_torch.py);
- the GPU is the NVML/libcuda stand-in (tests/c), the extension's GPU code a fat binary
  added to its .so with objcopy;
- nvcc and gcc are stand-in scripts printing the real tools' version text.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.driver_stub import Driver, DriverStubs
from tests.extension_objects import (
    NOT_EXPORTED,
    TORCH_DEFINES,
    USES_EXPORTED,
    USES_REMOVED,
    compile_shared,
)
from tests.factory import DoctorRun, FakeEnv, run_doctor
from tests.fatbin_blob import add_fatbin, cubins

NVCC_12_1 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2023 NVIDIA Corporation
Built on Mon_Apr__3_17:16:06_PDT_2023
Cuda compilation tools, release 12.1, V12.1.105
Build cuda_12.1.r12.1/compiler.32688072_0
"""
NVCC_13_0 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Wed_Aug_20_01:58:59_PM_PDT_2025
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0
"""
GCC_12 = (
    "gcc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.\n"
)
GCC_16 = "gcc (GCC) 16.1.0\nCopyright (C) 2026 Free Software Foundation, Inc.\n"


@pytest.fixture
def stand_in_torch(tmp_path: Path) -> Path:
    """torch/lib stand-ins: libc10.so defining torchCheckFail, an empty libtorch_cpu.so."""
    lib = tmp_path / "torch-lib"
    compile_shared(TORCH_DEFINES, lib / "libc10.so", soname="libc10.so")
    compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
    return lib


def torch_env(root: Path, torch_lib: Path) -> FakeEnv:
    env = FakeEnv.create(root)
    env.install_torch(
        lib_files={name: torch_lib / name for name in ("libc10.so", "libtorch_cpu.so")}
    )
    return env


def compiled_extension(tmp_path: Path, torch_lib: Path, *sources: str, name: str = "_C") -> Path:
    return compile_shared(
        "\n".join(sources),
        tmp_path / "objects" / f"{name}.so",
        link_dir=torch_lib,
        libraries=("c10", "torch_cpu"),
    )


def doctor(env: FakeEnv, workdir: Path, **environ: str) -> DoctorRun:
    return run_doctor(
        "--python", str(env.root), "--no-load", "--format", "json", cwd=workdir, env=environ
    )


def test_stand_in_extension_needing_a_symbol_torch_lacks_fires(
    tmp_path: Path, stand_in_torch: Path, workdir: Path
) -> None:
    env = torch_env(tmp_path / "venv", stand_in_torch)
    good = compiled_extension(tmp_path, stand_in_torch, USES_EXPORTED, name="good")
    bad = compiled_extension(tmp_path, stand_in_torch, USES_REMOVED, name="bad")
    env.install("good-ext", "1.0", files={"good_ext/_C.so": good})
    env.install("bad-ext", "0.5+pt26", files={"bad_ext/_C.so": bad})
    run = doctor(env, workdir)
    findings = [f for f in run.json["findings"] if f["id"] == "extension-abi-mismatch"]
    assert [f["data"]["distribution"] for f in findings] == ["bad-ext"]
    assert "local version 0.5+pt26" in "\n".join(findings[0]["evidence"])


def test_without_a_demangler_the_mangled_names_are_shown(
    tmp_path: Path, stand_in_torch: Path, workdir: Path
) -> None:
    env = torch_env(tmp_path / "venv", stand_in_torch)
    bad = compiled_extension(tmp_path, stand_in_torch, USES_REMOVED)
    env.install("bad-ext", "1.0", files={"bad_ext/_C.so": bad})
    empty = tmp_path / "no-tools"
    empty.mkdir()
    run = doctor(env, workdir, PATH=str(empty))  # no c++filt (nor anything else) on PATH
    assert run.json["facts"]["extensions"]["demangler"] is None
    evidence = "\n".join(run.finding("extension-abi-mismatch")["evidence"])
    assert f"that torch does not export: {NOT_EXPORTED}" in evidence


def test_unreadable_shared_objects_in_a_distribution_never_crash_the_check(
    tmp_path: Path, stand_in_torch: Path, workdir: Path
) -> None:
    env = torch_env(tmp_path / "venv", stand_in_torch)
    bad = compiled_extension(tmp_path, stand_in_torch, USES_REMOVED)
    data = bad.read_bytes()
    other_arch = bytearray(data)
    other_arch[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    env.install(
        "odd-ext",
        "1.0",
        files={
            "odd_ext/_C.so": bad,
            "odd_ext/truncated.so": data[:100],
            "odd_ext/cut.so": data[: len(data) * 3 // 4],
            "odd_ext/text.so": "INPUT(-lfoo)\n",  # a linker script named .so
            "odd_ext/empty.so": b"",
            "odd_ext/arm.so": bytes(other_arch),
        },
    )
    run = doctor(env, workdir)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    reasons = {
        Path(u["path"]).name: u["reason"] for u in run.json["facts"]["extensions"]["unreadable"]
    }
    assert set(reasons) == {"truncated.so", "cut.so", "text.so", "empty.so", "arm.so"}
    assert "EM_AARCH64" in reasons["arm.so"]
    finding = run.finding("extension-abi-mismatch")
    assert finding["data"]["libraries"] == [str(env.site_packages / "odd_ext" / "_C.so")]


@pytest.mark.parametrize(("targets", "fires"), [((80,), True), ((80, 90), False)])
def test_extension_gpu_code_is_judged_against_the_gpus_here(
    targets: tuple[int, ...],
    fires: bool,
    tmp_path: Path,
    stand_in_torch: Path,
    workdir: Path,
    driver_stubs: DriverStubs,
) -> None:
    env = torch_env(tmp_path / "venv", stand_in_torch)
    plain = compiled_extension(tmp_path, stand_in_torch, USES_EXPORTED)
    kernels = add_fatbin(plain, cubins(*targets), tmp_path / "objects" / "_C_cuda.so")
    env.install("kernels-ext", "1.0", files={"kernels_ext/_C.so": kernels})
    run = doctor(env, workdir, **driver_stubs.env(Driver()))
    assert ("extension-gpu-arch-unsupported" in run.finding_ids()) == fires
    if fires:
        finding = run.finding("extension-gpu-arch-unsupported")
        assert "sm_90" in finding["title"]
        remedies = "\n".join(r["text"] for r in finding["remedies"])
        assert "TORCH_CUDA_ARCH_LIST=9.0" in remedies


def test_extension_with_the_cxx11_abi_beside_an_old_abi_torch_fires(
    tmp_path: Path, workdir: Path
) -> None:
    # torch before 2.7 was built with _GLIBCXX_USE_CXX11_ABI=0: its stand-in is too.
    lib = tmp_path / "torch-lib-old-abi"
    flags = ["-D_GLIBCXX_USE_CXX11_ABI=0"]
    compile_shared(TORCH_DEFINES, lib / "libc10.so", soname="libc10.so", flags=flags)
    compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
    env = torch_env(tmp_path / "venv", lib)
    env.install(
        "good-ext",
        "1.0",
        files={"good_ext/_C.so": compiled_extension(tmp_path, lib, USES_EXPORTED)},
    )
    run = doctor(env, workdir)
    assert run.json["facts"]["extensions"]["torch_cxx11_abi"] is False
    finding = run.finding("extension-cxx11-abi-mismatch")
    assert finding["data"]["torch_cxx11_abi"] is False
    assert "_GLIBCXX_USE_CXX11_ABI=1 (std::__cxx11 names)" in "\n".join(finding["evidence"])
    assert "extension-abi-mismatch" not in run.finding_ids()


def versioned_c10(directory: Path, version: str) -> Path:
    """A stand-in libc10.so whose exports carry the symbol version ``version``."""
    script = directory / f"{version}.map"
    directory.mkdir(parents=True, exist_ok=True)
    script.write_text(f"{version} {{ global: *; }};\n")
    return compile_shared(
        TORCH_DEFINES,
        directory / "libc10.so",
        soname="libc10.so",
        flags=[f"-Wl,--version-script={script}"],
    )


def test_symbol_versions_are_compared_where_torch_defines_them(
    tmp_path: Path, workdir: Path
) -> None:
    built_against = versioned_c10(tmp_path / "c10-v2", "C10_2.0")
    compile_shared("", built_against.parent / "libtorch_cpu.so", soname="libtorch_cpu.so")
    extension = compiled_extension(tmp_path, built_against.parent, USES_EXPORTED)
    for installed, fires in (("C10_2.0", False), ("C10_3.0", True)):
        lib = tmp_path / f"torch-{installed}"
        versioned_c10(lib, installed)
        compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
        env = torch_env(tmp_path / f"venv-{installed}", lib)
        env.install("good-ext", "1.0", files={"good_ext/_C.so": extension})
        run = doctor(env, workdir)
        assert ("extension-abi-mismatch" in run.finding_ids()) == fires, installed
        if fires:
            (missing,) = run.finding("extension-abi-mismatch")["data"]["missing"]
            library = run.json["facts"]["extensions"]["extensions"][0]["libraries"][0]
            assert library["missing"][0]["version"] == "C10_2.0"
            assert missing.startswith("_ZN3c106detail14torchCheckFail")
            evidence = "\n".join(run.finding("extension-abi-mismatch")["evidence"])
            assert "_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE), version C10_2.0" in (
                evidence
            )


# -- building extensions: nvcc and the host compiler ------------------------------------


def stand_in_tool(path: Path, output: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def toolkit(root: Path, version_text: str) -> Path:
    """A CUDA_HOME whose bin/nvcc prints ``version_text``."""
    stand_in_tool(root / "bin" / "nvcc", version_text)
    return root


def build_path(*toolkits: Path) -> str:
    # The system's own directories, without /usr/local/bin (a real nvcc may live there).
    return os.pathsep.join([*(str(t / "bin") for t in toolkits), "/usr/bin", "/bin"])


def test_nvcc_of_another_cuda_major_than_torch_is_named_with_the_fix(
    tmp_path: Path, workdir: Path
) -> None:
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()  # 2.14.1+cu130
    old = toolkit(tmp_path / "cuda-12.1", NVCC_12_1)
    new = toolkit(tmp_path / "cuda-13.0", NVCC_13_0)
    run = doctor(env, workdir, PATH=build_path(old, new))
    finding = run.finding("nvcc-cuda-mismatch")
    assert finding["severity"] == "warning"
    assert "CUDA 12.1" in finding["title"] and "13.0" in finding["title"]
    evidence = "\n".join(finding["evidence"])
    assert f"also on PATH: {new}/bin/nvcc (release 13.0)" in evidence
    (remedy,) = finding["remedies"]
    assert remedy["text"] == f"export CUDA_HOME={new}\n"
    # The remedy, applied: the next run builds with CUDA 13.0 and is quiet.
    again = doctor(env, workdir, PATH=build_path(old, new), CUDA_HOME=str(new))
    assert "nvcc-cuda-mismatch" not in again.finding_ids()
    assert again.json["facts"]["cuda_toolkit"]["release"] == "13.0"


def test_nvcc_of_torchs_cuda_major_is_quiet(tmp_path: Path, workdir: Path) -> None:
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()
    new = toolkit(tmp_path / "cuda-13.0", NVCC_13_0)
    run = doctor(env, workdir, PATH=build_path(new))
    checks = {c["id"]: c for c in run.json["checks"]}
    assert checks["nvcc-cuda-mismatch"]["status"] == "passed"
    assert checks["several-cuda-toolkits"]["status"] == "passed"


def test_nvcc_on_path_of_another_major_than_cuda_home_fires_until_path_is_fixed(
    tmp_path: Path, workdir: Path
) -> None:
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()
    old = toolkit(tmp_path / "cuda-12.1", NVCC_12_1)
    new = toolkit(tmp_path / "cuda-13.0", NVCC_13_0)
    run = doctor(env, workdir, PATH=build_path(old, new), CUDA_HOME=str(new))
    assert "nvcc-cuda-mismatch" not in run.finding_ids()
    finding = run.finding("several-cuda-toolkits")
    assert "CUDA 12.1" in finding["title"] and "CUDA 13.0" in finding["title"]
    assert f"first nvcc on PATH: {old}/bin/nvcc (release 12.1)" in finding["evidence"]
    (remedy,) = finding["remedies"]
    assert remedy["text"] == f'export PATH={new}/bin:"$PATH"\n'
    # The remedy, applied as the shell would: CUDA_HOME's bin first.
    fixed = f"{new}/bin:" + build_path(old, new)
    again = doctor(env, workdir, PATH=fixed, CUDA_HOME=str(new))
    assert "several-cuda-toolkits" not in again.finding_ids()


@pytest.mark.parametrize(("gcc", "fires"), [(GCC_16, True), (GCC_12, False)])
def test_host_compiler_newer_than_nvcc_accepts(
    gcc: str, fires: bool, tmp_path: Path, workdir: Path
) -> None:
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()
    new = toolkit(tmp_path / "cuda-13.0", NVCC_13_0)
    compiler = stand_in_tool(tmp_path / "compilers" / "gcc", gcc)
    run = doctor(env, workdir, PATH=build_path(new), CC=str(compiler))
    assert ("nvcc-host-compiler-unsupported" in run.finding_ids()) == fires
    if fires:
        finding = run.finding("nvcc-host-compiler-unsupported")
        assert "gcc 16.1.0" in finding["title"] and "gcc 15" in finding["title"]
        install, variables = (r["text"] for r in finding["remedies"])
        assert install == "sudo apt-get install gcc-15 g++-15\n"
        assert variables.startswith("export CC=gcc-15 ")


def test_cuda_home_without_nvcc_is_a_skip_with_its_reason(tmp_path: Path, workdir: Path) -> None:
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()
    empty = tmp_path / "empty"
    empty.mkdir()
    run = doctor(env, workdir, PATH=f"{empty}:/bin", CUDA_HOME=str(tmp_path / "nowhere"))
    checks = {c["id"]: c for c in run.json["checks"]}
    assert checks["nvcc-cuda-mismatch"]["status"] == "skipped"
    assert run.json["facts"]["cuda_toolkit"]["error"].endswith("bin/nvcc: no such file")
