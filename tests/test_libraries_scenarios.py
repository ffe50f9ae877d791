"""CUDA library findings end to end: stand-in libraries compiled here, the CLI as a subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.elf_fixtures import (
    OLD_TORCH_INIT,
    CudaTorchKit,
    ElfBuilder,
    compiler,
    cudnn,
    nvjitlink,
)
from tests.factory import DoctorRun, FakeEnv, run_doctor

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs a C compiler")

LIBRARY_IDS = {
    "library-not-found",
    "library-load-failed",
    "library-shadowed",
    "library-version-mismatch",
    "cuda-libs-in-loader-path",
}


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> ElfBuilder:
    return ElfBuilder(tmp_path_factory.getbasetemp() / "elf-stand-ins")


@pytest.fixture
def kit(builder: ElfBuilder) -> CudaTorchKit:
    return CudaTorchKit(builder)


def _row(run_json: dict, soname: str) -> dict:
    for row in run_json["facts"]["libraries"]["cuda"]:
        if row["soname"] == soname:
            return dict(row)
    raise AssertionError(f"{soname} not in the library table")


def test_healthy_stand_in_set_loads_from_the_wheels_with_their_versions(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    kit.install(env, kit.healthy_wheels())
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert not LIBRARY_IDS & set(run.finding_ids()), run.json["findings"]
    site = str(env.site_packages.resolve())
    cudnn_row = _row(run.json, "libcudnn.so.9")
    assert cudnn_row["load"]["loaded"]
    assert cudnn_row["load"]["path"] == f"{site}/nvidia/cudnn/lib/libcudnn.so.9"
    assert cudnn_row["load"]["version"] == "9.1.0"
    assert cudnn_row["load"]["owner"] == "nvidia-cudnn-cu12"
    assert _row(run.json, "libcudart.so.12")["load"]["version"] == "12.4"
    assert _row(run.json, "libnvJitLink.so.12")["load"]["version"] == "12.4"
    assert _row(run.json, "libcusparse.so.12")["load"]["version"] == "12.3.1"
    # cuDNN's sub-libraries are loaded from libcudnn's directory.
    graph = _row(run.json, "libcudnn_graph.so.9")
    assert graph["load"]["path"] == f"{site}/nvidia/cudnn/lib/libcudnn_graph.so.9"
    # The static view: torch's RPATH finds libcudart in the wheel.
    assert _row(run.json, "libcudart.so.12")["resolved"]["how"] == "RPATH"
    checks = {c["id"]: c["status"] for c in run.json["checks"]}
    assert all(checks[i] == "passed" for i in LIBRARY_IDS)


def test_terminal_report_shows_the_cuda_library_table(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    kit.install(env, kit.healthy_wheels())
    run = run_doctor("--python", str(env.root), cwd=workdir, env={"COLUMNS": "120"})
    table = run.stdout.split("CUDA libraries", 1)[1]
    row = next(line for line in table.splitlines() if line.strip().startswith("libcudnn.so.9"))
    assert row.split() == [
        "libcudnn.so.9",
        "9.1.0",
        "<site>/nvidia/cudnn/lib",
        "nvidia-cudnn-cu12",
        "loaded",
    ]


def test_missing_soname_names_the_wheel_that_should_provide_it(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    kit.install(env, kit.healthy_wheels(), pinned=[kit.cufft()])
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.returncode == 1
    finding = run.finding("library-not-found")
    assert finding["severity"] == "error"
    assert [m["soname"] for m in finding["data"]["missing"]] == ["libcufft.so.11"]
    assert finding["data"]["missing"][0]["wheels"] == ["nvidia-cufft-cu12"]
    assert any("nvidia-cufft-cu12 (not installed)" in line for line in finding["evidence"])
    # One cause, one error: the missing wheel is the root; the loader's view of it (the
    # soname nowhere, the load that failed) hangs under it, and only the root has a remedy.
    # The machine's own CUDA toolkit, if it has one (a real nvcc 13.0 here), is judged too:
    # against this CUDA 12 stand-in torch it is a warning of its own, not this relation's.
    toolkit = {"nvcc-cuda-mismatch", "several-cuda-toolkits", "nvcc-host-compiler-unsupported"}
    assert [i for i in run.root_ids() if i not in toolkit] == [
        "missing-cuda-wheel",
        "no-nvidia-driver",
    ]
    assert finding["root"] == "missing-cuda-wheel" and finding["remedies"] == []
    root = run.finding("missing-cuda-wheel")
    assert "nvidia-cufft-cu12==11.2.1.3" in root["remedies"][-1]["text"]
    assert run.finding("library-load-failed")["root"] == "missing-cuda-wheel"


def _old_nvjitlink_run(
    env: FakeEnv,
    kit: CudaTorchKit,
    builder: ElfBuilder,
    workdir: Path,
    directory: Path,
    ld_library_path: str,
    *,
    old_torch: bool = True,
) -> DoctorRun:
    """A libnvJitLink.so.12 without the 12.4 symbol libcusparse needs, in ``directory``, and
    the doctor's run. ``old_torch``: a torch (2.3-style) whose libtorch_global_deps.so NEEDs
    libcusparse; otherwise today's torch, which preloads its wheels' libraries first."""
    old = nvjitlink(builder, 1, ["__nvJitLinkComplete_12_1"])
    (directory / "libnvJitLink.so.12").write_bytes(old.read_bytes())
    if old_torch:
        kit.install(
            env,
            kit.healthy_wheels(),
            torch_init=OLD_TORCH_INIT,
            global_deps_needs=("libcudart.so.12", "libcusparse.so.12"),
        )
    else:
        kit.install(env, kit.healthy_wheels(), global_deps_needs=("libcudart.so.12",))
    return run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_LIBRARY_PATH": ld_library_path},
    )


def test_older_nvjitlink_first_in_ld_library_path_fails_with_undefined_symbol(
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    kit: CudaTorchKit,
    builder: ElfBuilder,
    tmp_path: Path,
) -> None:
    # A system CUDA 12.1 whose libnvJitLink.so.12 lacks the 12.4 symbol libcusparse needs.
    system = tmp_path / "cuda-12.1" / "lib64"
    system.mkdir(parents=True)
    run = _old_nvjitlink_run(
        make_env(), kit, builder, workdir, system, f"{system}:/opt/nothing-here"
    )
    assert run.returncode == 1
    failed = run.finding("library-load-failed")
    message = "undefined symbol: __nvJitLinkComplete_12_4, version libnvJitLink.so.12"
    assert any(message in line for line in failed["evidence"])
    failure = failed["data"]["failures"][0]
    assert failure["soname"] == "libcusparse.so.12"
    assert failure["cause"]["how"] == "LD_LIBRARY_PATH"
    assert failure["cause"]["entry"] == str(system)
    assert any(f"through the LD_LIBRARY_PATH entry {system}" in line for line in failed["evidence"])
    assert failed["data"]["torch_import_error"].startswith("OSError: ")
    assert failed["remedies"][0]["text"] == "export LD_LIBRARY_PATH=/opt/nothing-here"
    hygiene = run.finding("cuda-libs-in-loader-path")
    assert hygiene["severity"] == "warning"
    assert hygiene["data"]["entries"] == [
        {"variable": "LD_LIBRARY_PATH", "entry": str(system), "cuda_files": ["libnvJitLink.so.12"]}
    ]


def test_same_older_nvjitlink_is_harmless_when_torch_preloads_the_wheels_copy(
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    kit: CudaTorchKit,
    builder: ElfBuilder,
    tmp_path: Path,
) -> None:
    # torch >= 2.5 preloads libnvJitLink from its wheel before libcusparse (pytorch#131295).
    system = tmp_path / "cuda-12.1" / "lib64"
    system.mkdir(parents=True)
    run = _old_nvjitlink_run(
        make_env(), kit, builder, workdir, system, str(system), old_torch=False
    )
    ids = run.finding_ids()
    assert "library-load-failed" not in ids
    assert "library-shadowed" not in ids
    assert "cuda-libs-in-loader-path" in ids  # the entry is still a trap for other code


def test_older_cudnn_through_ld_preload_is_reported_as_shadowed(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit, builder: ElfBuilder
) -> None:
    old = cudnn(builder, 90000)
    env = make_env()
    kit.install(env, kit.healthy_wheels())
    run = run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_PRELOAD": str(old)},
    )
    shadowed = run.finding("library-shadowed")
    item = next(s for s in shadowed["data"]["shadowed"] if s["soname"] == "libcudnn.so.9")
    assert item["path"] == str(old.resolve())
    assert item["how"] == "LD_PRELOAD"
    site = env.site_packages.resolve()
    assert item["expected_path"] == str(site / "nvidia/cudnn/lib/libcudnn.so.9")
    mismatch = run.finding("library-version-mismatch")
    assert mismatch["data"]["mismatched"][0]["version"] == "9.0.0"
    assert mismatch["data"]["mismatched"][0]["expected"] == "9.1.0.70"
    assert any(r["text"] == "unset LD_PRELOAD" for r in shadowed["remedies"])


def test_ld_preload_by_bare_name_is_searched_like_a_needed_entry(
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    kit: CudaTorchKit,
    builder: ElfBuilder,
    tmp_path: Path,
) -> None:
    # LD_PRELOAD=libcudnn.so.9 (no slash): ld.so searches it as the program's NEEDED entry,
    # so the old copy that LD_LIBRARY_PATH leads to is in the process before torch's.
    system = tmp_path / "cudnn-9.0" / "lib"
    system.mkdir(parents=True)
    (system / "libcudnn.so.9").write_bytes(cudnn(builder, 90000).read_bytes())
    env = make_env()
    kit.install(env, kit.healthy_wheels())
    run = run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_PRELOAD": "libcudnn.so.9", "LD_LIBRARY_PATH": str(system)},
    )
    row = _row(run.json, "libcudnn.so.9")
    assert row["resolved"]["how"] == "LD_PRELOAD"
    assert row["resolved"]["path"] == str((system / "libcudnn.so.9").resolve())
    shadowed = run.finding("library-shadowed")
    item = next(s for s in shadowed["data"]["shadowed"] if s["soname"] == "libcudnn.so.9")
    assert item["how"] == "LD_PRELOAD"
    assert item["path"] == str((system / "libcudnn.so.9").resolve())
    entries = run.finding("cuda-libs-in-loader-path")["data"]["entries"]
    assert {
        "variable": "LD_PRELOAD",
        "entry": "libcudnn.so.9",
        "cuda_files": ["libcudnn.so.9"],
    } in (entries)


def test_an_empty_ld_library_path_entry_searches_the_working_directory(
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    kit: CudaTorchKit,
    builder: ElfBuilder,
) -> None:
    # `export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/opt/x` with the variable unset leaves an
    # empty first entry, which ld.so reads as the working directory.
    run = _old_nvjitlink_run(make_env(), kit, builder, workdir, workdir, ":/opt/nothing-here")
    failed = run.finding("library-load-failed")
    failure = failed["data"]["failures"][0]
    assert failure["soname"] == "libcusparse.so.12"
    assert failure["cause"]["how"] == "LD_LIBRARY_PATH"
    assert failure["cause"]["entry"] == ""
    assert any("the working directory" in line for line in failed["evidence"])
    assert failed["remedies"][0]["text"] == "export LD_LIBRARY_PATH=/opt/nothing-here"
    hygiene = run.finding("cuda-libs-in-loader-path")
    assert hygiene["data"]["entries"] == [
        {"variable": "LD_LIBRARY_PATH", "entry": "", "cuda_files": ["libnvJitLink.so.12"]}
    ]
    assert any("the working directory" in line for line in hygiene["evidence"])


def test_aborting_and_hanging_libraries_are_reported_and_the_others_still_load(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    wheels = [
        *kit.healthy_wheels(),
        kit.cufft(constructor="CONSTRUCTOR_ABORTS"),
        kit.curand(constructor="CONSTRUCTOR_HANGS"),
    ]
    kit.install(env, wheels)
    run = run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        "--timeout",
        "2",
        cwd=workdir,
        timeout=60,
    )
    assert run.returncode == 1
    failures = {f["soname"]: f for f in run.finding("library-load-failed")["data"]["failures"]}
    assert failures["libcufft.so.11"]["crashed_signal"] == "SIGABRT"
    assert failures["libcurand.so.10"]["timed_out"] is True
    assert _row(run.json, "libcufft.so.11")["load"]["crashed_signal"] == "SIGABRT"
    assert _row(run.json, "libcurand.so.10")["load"]["timed_out"] is True
    # Everything else was still loaded and asked its version.
    assert _row(run.json, "libcudnn.so.9")["load"]["version"] == "9.1.0"
    assert _row(run.json, "libcusparse.so.12")["load"]["loaded"] is True
    assert run.json["facts"]["libraries"]["load_probe"]["processes"] == 3


def test_no_load_skips_the_load_probe_but_keeps_the_static_view(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    kit.install(env, kit.healthy_wheels(), pinned=[kit.cufft()])
    run = run_doctor("--python", str(env.root), "--format", "json", "--no-load", cwd=workdir)
    assert "library-not-found" in run.finding_ids()
    checks = {c["id"]: c for c in run.json["checks"]}
    assert checks["library-load-failed"]["status"] == "skipped"
    assert run.json["facts"]["libraries"]["load_probe"]["ran"] is False


def test_cpu_only_torch_skips_the_library_checks(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_torch(version="2.14.1+cpu", cuda=None, requires_dist=())
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    checks = {c["id"]: c for c in run.json["checks"]}
    for finding_id in LIBRARY_IDS:
        assert checks[finding_id]["status"] == "skipped"
        assert "CPU-only" in checks[finding_id]["reason"]
    assert run.json["facts"]["libraries"] is None


def test_ld_library_path_into_the_venvs_own_wheels_is_not_a_hygiene_problem(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    # The documented last-resort workaround (catalogue entry 6): the wheels' own directories.
    env = make_env()
    kit.install(env, kit.healthy_wheels())
    own = env.site_packages / "nvidia" / "nvjitlink" / "lib"
    run = run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
        env={"LD_LIBRARY_PATH": str(own)},
    )
    assert not LIBRARY_IDS & set(run.finding_ids()), run.json["findings"]
    entry = run.json["facts"]["libraries"]["loader_path"][0]
    assert (entry["cuda_files"], entry["wheel_files"]) == ([], ["libnvJitLink.so.12"])


def test_a_cudnn_sub_library_missing_from_its_wheel_is_not_found(
    make_env: Callable[..., FakeEnv], workdir: Path, kit: CudaTorchKit
) -> None:
    env = make_env()
    cudnn_wheel = kit.cudnn()
    libraries = {k: v for k, v in cudnn_wheel.libraries.items() if k != "libcudnn_graph.so.9"}
    damaged = type(cudnn_wheel)(cudnn_wheel.name, cudnn_wheel.version, "cudnn", libraries)
    kit.install(env, [kit.runtime(), damaged, kit.nvjitlink(), kit.cusparse()])
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    finding = run.finding("library-not-found")
    missing = finding["data"]["missing"]
    assert [m["soname"] for m in missing] == ["libcudnn_graph.so.9"]
    assert missing[0]["installed"] == ["nvidia-cudnn-cu12"]
    assert any(
        "nvidia-cudnn-cu12 (installed, but without this file)" in e for e in finding["evidence"]
    )
    assert "library-load-failed" not in run.root_ids()
