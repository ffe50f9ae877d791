"""The real torch 2.14.1 CUDA 13 venv: every CUDA library loads from its wheel, no false alarm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.elf_fixtures import ElfBuilder, compiler, cudnn
from tests.factory import FakeEnv, run_doctor

pytestmark = pytest.mark.slow

LIBRARY_IDS = {
    "library-not-found",
    "library-load-failed",
    "library-shadowed",
    "library-version-mismatch",
    "cuda-libs-in-loader-path",
}


def _path(shown: str) -> str:
    """A path from the JSON report (which may show the home directory as ~)."""
    return str(Path.home()) + shown[1:] if shown.startswith("~/") else shown


def _versions(env: FakeEnv) -> dict[str, str]:
    out = {}
    for dist_info in env.site_packages.glob("*.dist-info"):
        name, _, version = dist_info.name[: -len(".dist-info")].partition("-")
        out[name.replace("_", "-").lower()] = version
    return out


def test_real_torch_loads_every_cuda_library_from_its_wheels_without_a_gpu(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    run = run_doctor("--python", str(real_torch_venv.root), "--format", "json", cwd=workdir)
    assert not LIBRARY_IDS & set(run.finding_ids()), run.json["findings"]
    libraries = run.json["facts"]["libraries"]
    assert libraries["load_probe"]["ran"] and libraries["load_probe"]["processes"] == 1
    assert libraries["load_probe"]["torch_import_error"] is None
    site = str(real_torch_venv.site_packages.resolve())
    installed = _versions(real_torch_venv)
    rows = {row["soname"]: row for row in libraries["cuda"]}
    for soname in (
        "libcudart.so.13",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcudnn.so.9",
        "libnvrtc.so.13",
        "libcufft.so.12",
        "libcurand.so.10",
        "libcusparse.so.12",
        "libcusolver.so.12",
        "libnvJitLink.so.13",
        "libnccl.so.2",
        "libcusparseLt.so.0",
        "libcudnn_graph.so.9",
        "libcudnn_engines_precompiled.so.9",
        "libcudnn_adv.so.9",
    ):
        load = rows[soname]["load"]
        assert load["loaded"], (soname, load)
        assert _path(load["path"]).startswith(site + "/nvidia/"), (soname, load["path"])
        assert load["owner"] is not None
        if load["version"]:
            wheel_version = installed[load["owner"]]
            assert wheel_version.startswith(load["version"]), (soname, load, wheel_version)
    assert rows["libcudnn.so.9"]["load"]["version"] == "9.24.0"
    assert rows["libcudart.so.13"]["load"]["version"] == "13.0"
    # No GPU and no driver here: libcuda.so.1 is needed only by libcaffe2_nvrtc.so (which
    # torch loads lazily), and nothing else needs it to load.
    assert rows["libcuda.so.1"]["needed_by"] == ["libcaffe2_nvrtc.so"]
    assert rows["libcuda.so.1"]["resolved"]["how"] in ("not found", "ld.so.cache", "default dir")


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler")
def test_old_cudnn_preloaded_into_real_torch_is_named_as_shadowed(
    real_torch_venv: FakeEnv, workdir: Path, tmp_path: Path
) -> None:
    old = cudnn(ElfBuilder(tmp_path / "elf"), 90100)
    run = run_doctor(
        "--python",
        str(real_torch_venv.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_PRELOAD": str(old)},
    )
    shadowed = run.finding("library-shadowed")
    item = next(s for s in shadowed["data"]["shadowed"] if s["soname"] == "libcudnn.so.9")
    assert _path(item["path"]) == str(old.resolve())
    assert item["how"] == "LD_PRELOAD"
    site = real_torch_venv.site_packages.resolve()
    assert _path(item["expected_path"]) == str(site / "nvidia/cudnn/lib/libcudnn.so.9")
    mismatch = run.finding("library-version-mismatch")
    assert {"soname": "libcudnn.so.9", "version": "9.1.0"}.items() <= mismatch["data"][
        "mismatched"
    ][0].items()
    assert [r["text"] for r in shadowed["remedies"]] == ["unset LD_PRELOAD"]
    # One cause: the preload. What it breaks hangs under it (the sub-libraries cuDNN looks
    # for beside the outside copy, the version torch checks), and the shadowing is an error
    # because of them. The wheel is intact: nothing says to reinstall it.
    assert run.root_ids() == ["library-shadowed", "no-nvidia-driver"]
    assert run.returncode == 1 and shadowed["severity"] == "error"
    not_found = run.finding("library-not-found")
    assert not_found["root"] == "library-shadowed" and not_found["remedies"] == []
    assert not any("without this file" in line for line in not_found["evidence"])
    assert all("outside torch's wheels" in line for line in not_found["evidence"])


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler")
def test_a_whole_old_cudnn_preloaded_gets_one_remedy_the_preload_not_a_reinstall(
    real_torch_venv: FakeEnv, workdir: Path, tmp_path: Path
) -> None:
    """An old cuDNN with its sub-libraries beside it (a system install), preloaded: cuDNN
    opens its sub-libraries from its own directory, so they are outside torch's wheels too.
    They came with a second remedy, a force-reinstall of the intact nvidia-cudnn-cu13 wheel
    (gigabytes, and the next run the same); dropping the preload is the whole fix."""
    import shutil

    from tests.elf_fixtures import CUDNN_SUBLIBRARIES, StandIn

    builder = ElfBuilder(tmp_path / "elf")
    system = tmp_path / "cudnn-9.1" / "lib"
    system.mkdir(parents=True)
    shutil.copy(cudnn(builder, 90100), system / "libcudnn.so.9")
    for stem in CUDNN_SUBLIBRARIES:
        built = builder.build(StandIn(f"{stem}.so.9", search=("$ORIGIN",), runpath=True))
        shutil.copy(built, system / f"{stem}.so.9")
    preload = str(system / "libcudnn.so.9")
    run = run_doctor(
        "--python",
        str(real_torch_venv.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_PRELOAD": preload},
    )
    shadowed = run.finding("library-shadowed")
    assert [r["text"] for r in shadowed["remedies"]] == ["unset LD_PRELOAD"]
    items = {s["soname"]: s for s in shadowed["data"]["shadowed"]}
    assert items["libcudnn.so.9"]["how"] == "LD_PRELOAD"
    assert items["libcudnn_graph.so.9"]["beside"] == "libcudnn.so.9"
    assert any("cuDNN opens it beside libcudnn.so.9" in line for line in shadowed["evidence"])
    healed = run_doctor("--python", str(real_torch_venv.root), "--format", "json", cwd=workdir)
    assert not LIBRARY_IDS & set(healed.finding_ids())


GROUND_TRUTH = r"""
import ctypes, json, os, sys
lib = sys.argv[1]
ctypes.CDLL(os.path.join(lib, "libtorch_global_deps.so"), mode=ctypes.RTLD_GLOBAL)
ctypes.CDLL(os.path.join(lib, "libtorch_cuda.so"))  # what torch._C pulls in, minus Python
maps = {}
for line in open("/proc/self/maps"):
    parts = line.split(None, 5)
    if len(parts) == 6 and parts[5].startswith("/"):
        path = parts[5].strip()
        maps[os.path.basename(path)] = path
print(json.dumps(maps))
"""


def test_the_probe_agrees_with_the_loader_loading_libtorch_cuda_itself(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    # Ground truth without torch's Python: the loader resolving libtorch_cuda.so's NEEDED.
    import json
    import subprocess

    lib = real_torch_venv.site_packages / "torch" / "lib"
    truth = json.loads(
        subprocess.run(
            [str(real_torch_venv.python), "-I", "-c", GROUND_TRUTH, str(lib)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    run = run_doctor("--python", str(real_torch_venv.root), "--format", "json", cwd=workdir)
    reported = {
        row["soname"]: _path(row["load"]["path"])
        for row in run.json["facts"]["libraries"]["cuda"]
        if row["load"] and row["load"]["path"]
    }
    for soname in (
        "libcudart.so.13",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcudnn.so.9",
        "libcusparse.so.12",
        "libnvJitLink.so.13",
        "libcufft.so.12",
        "libcurand.so.10",
        "libnccl.so.2",
        "libcusparseLt.so.0",
        "libnvrtc.so.13",
    ):
        assert os.path.realpath(truth[soname]) == reported[soname], soname


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler")
def test_a_leftover_cuda_12_cublas_that_torch_preloads_is_one_finding_mixed_cuda_majors(
    real_torch_venv: FakeEnv, workdir: Path, tmp_path: Path
) -> None:
    """nvidia-cublas-cu12 left beside torch 2.14.1 (CUDA 13): torch/__init__.py preloads
    nvidia/cublas/lib/libcublas.so.12 (its glob looks there before nvidia/cu13/lib). That
    was also reported as library-shadowed, "loaded from X; expected X" (the same path),
    with a force-reinstall of nvidia-cublas 13 that changes nothing. One cause, one finding:
    mixed-cuda-majors, which says torch loads it; its command makes the next run clean."""
    import subprocess

    from tests.elf_fixtures import StandIn
    from tests.wheelhouse import WheelSpec, build_wheel

    lib = ElfBuilder(tmp_path / "elf").build(StandIn("libcublas.so.12"))
    wheel = build_wheel(
        WheelSpec(
            "nvidia-cublas-cu12",
            "12.8.4.1",
            tag="py3-none-manylinux_2_27_x86_64",
            files={
                "nvidia/cublas/lib/libcublas.so.12": lib.read_bytes(),
                "nvidia/cublas/__init__.py": b"",
            },
        ),
        tmp_path / "wheels",
    )
    # A hard-linked copy of the cached venv: pip writes new files, the cache stays intact.
    venv = tmp_path / "venv"
    subprocess.run(["cp", "-al", str(real_torch_venv.root), str(venv)], check=True)
    env = FakeEnv(venv)
    pip = [str(env.python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True)

    run = run_doctor("--python", str(venv), "--format", "json", "--no-redact", cwd=workdir)
    assert "library-shadowed" not in run.finding_ids(), run.finding("library-shadowed")
    assert [r for r in run.root_ids() if r != "no-nvidia-driver"] == ["mixed-cuda-majors"]
    mixed = run.finding("mixed-cuda-majors")
    assert any(
        line.startswith("torch loads libcublas.so.12 from nvidia-cublas-cu12")
        for line in mixed["evidence"]
    ), mixed["evidence"]
    [command] = [r["text"] for r in mixed["remedies"] if r["kind"] == "shell"]
    assert command == f"{env.python} -m pip uninstall -y nvidia-cublas-cu12"

    subprocess.run(["bash", "-e", "-c", command], check=True, capture_output=True)
    healed = run_doctor("--python", str(venv), "--format", "json", cwd=workdir)
    assert [r for r in healed.root_ids() if r != "no-nvidia-driver"] == []
