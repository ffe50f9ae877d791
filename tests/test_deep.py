"""`check --deep` against real torch builds from this machine's disk (no mock torch).

The venvs are the cached real ones (tests/factory.py); a scenario that needs a changed venv
works on a hard-linked copy (`variant`), so the shared cache is never modified. There is no
GPU here: the GPU stages are reported as not exercised, and the tests pin that.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest

from doctor.checks.runtime import RUNTIME_IDS
from tests.driver_stub import Driver, DriverStubs
from tests.elf_fixtures import ElfBuilder, compiler, cudnn
from tests.factory import (
    REPO,
    DoctorRun,
    FakeEnv,
    doctor_env,
    real_torch_venv_path,
    run_doctor,
)

pytestmark = pytest.mark.slow

CPU_TORCH = "2.13.0"


def variant(source: Path, target: Path) -> FakeEnv:
    """A copy of a cached venv whose files are hard links: removing files from it leaves
    the cache intact (never write into its files in place)."""
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)
    return FakeEnv(target)


def deep_json(
    venv: Path, workdir: Path, *args: str, env: dict[str, str] | None = None
) -> DoctorRun:
    return run_doctor(
        "check", "--deep", "--python", str(venv), "--format", "json", *args, cwd=workdir, env=env
    )


def stages(run: DoctorRun) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run.json["facts"]["runtime"]["stages"]}


def assert_schema_valid(run: DoctorRun) -> None:
    schema = json.loads((REPO / "docs" / "report.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(run.json)


def assert_no_gpu_stage_claimed(run: DoctorRun) -> None:
    for name, stage in stages(run).items():
        assert not (name.startswith("gpu:") and stage["status"] == "passed"), stage
        assert stage["ran_on"] in (None, "cpu"), stage


@pytest.fixture(scope="module")
def cpu_torch() -> Path:
    return real_torch_venv_path(CPU_TORCH)


@pytest.fixture(scope="module")
def cuda_torch() -> Path:
    return real_torch_venv_path()


def test_cpu_build_imports_computes_and_compiles_on_the_cpu(cpu_torch: Path, workdir: Path) -> None:
    scratch = workdir / "tmp"  # this run's own temporary directory: other runs share /tmp
    scratch.mkdir()
    run = deep_json(cpu_torch, workdir, env={"TMPDIR": str(scratch)})
    assert_schema_valid(run)
    got = stages(run)
    assert got["import"]["status"] == "passed"
    assert got["import"]["evidence"]["version"].startswith(CPU_TORCH)
    assert got["cpu"]["status"] == "passed" and got["cpu"]["ran_on"] == "cpu"
    # torch.compile through inductor's C++ backend, with the system C compiler.
    assert got["compile"]["status"] == "passed" and got["compile"]["ran_on"] == "cpu"
    assert got["gpu"]["status"] == "skipped"
    assert got["gpu"]["reason"] == "not exercised: this torch is a CPU-only build"
    assert got["nccl"]["status"] == "skipped"
    assert run.json["facts"]["runtime"]["cuda_version"] is None
    assert_no_gpu_stage_claimed(run)
    runtime_findings = [f for f in run.json["findings"] if f["id"] in RUNTIME_IDS]
    assert runtime_findings == []
    # Nothing left behind: inductor's caches went to a directory the probe removed.
    assert not list(scratch.glob("torch-doctor-deep-*"))


def test_cuda_build_without_a_driver_is_one_root_no_nvidia_driver(
    cuda_torch: Path, workdir: Path
) -> None:
    run = deep_json(cuda_torch, workdir)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert_schema_valid(run)
    runtime = run.json["facts"]["runtime"]
    assert runtime["cuda_version"] == "13.0"
    assert runtime["cuda_available"] is False and runtime["device_count"] == 0
    assert runtime["nccl_version"] == "2.30.7"
    got = stages(run)
    assert got["import"]["status"] == "passed"
    assert got["gpu"]["reason"] == (
        "not exercised: torch sees no GPU (torch.cuda.is_available() is False)"
    )
    assert got["nccl"]["evidence"]["all_reduce"] == "not exercised: needs 2 GPUs, 0 visible"
    assert_no_gpu_stage_claimed(run)
    unavailable = run.finding("cuda-unavailable")
    assert unavailable["root"] == "no-nvidia-driver" and unavailable["remedies"] == []
    roots = [f for f in run.json["findings"] if f["root"] is None]
    assert [f["id"] for f in roots if f["severity"] in ("error", "warning")] == ["no-nvidia-driver"]
    # Every CUDA library torch mapped comes from its wheels: no mismatch.
    site = str(FakeEnv(cuda_torch).site_packages.resolve())
    mapped = {m["file_name"]: m for m in runtime["mapped"]}
    assert mapped["libcudnn.so.9"]["owner"] == "nvidia-cudnn-cu13"
    assert "runtime-library-mismatch" not in run.finding_ids()
    assert all(
        m["path"].replace("~", str(Path.home()), 1).startswith(site) for m in mapped.values()
    )


def test_terminal_shows_one_line_per_stage_with_its_time(cuda_torch: Path, workdir: Path) -> None:
    run = run_doctor("check", "--deep", "--python", str(cuda_torch), cwd=workdir)
    section = run.stdout.split("Runtime (", 1)[1].split("Findings", 1)[0]
    lines = [line for line in section.splitlines() if line and line[0] in "✓✗-⧗"]
    titles = [line[2:22].strip() for line in lines]
    assert titles == [
        "import torch",
        "build and devices",
        "GPU stages",
        "libraries mapped",
        "CPU matmul and conv",
        "NCCL",
        "torch.compile",
    ]
    assert lines[0].startswith("✓ import torch") and " s " in lines[0]
    assert lines[2].startswith("- GPU stages") and "not exercised" in lines[2]


def test_removed_cudnn_wheel_fails_import_as_missing_cuda_wheels_consequence(
    cuda_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    env = variant(cuda_torch, tmp_path / "no-cudnn")
    env.uninstall("nvidia-cudnn-cu13")
    run = deep_json(env.root, workdir)
    assert run.returncode == 1
    got = stages(run)
    assert got["import"]["status"] == "failed"
    assert got["import"]["error"] == (
        "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    )
    assert any("from torch._C import" in frame for frame in got["import"]["traceback_tail"])
    assert got["compile"]["reason"] == "torch did not import"
    # The maps were read after the failed import: the terminal does not let that line
    # read as a working torch's libraries.
    text = run_doctor(
        "check", "--deep", "--python", str(env.root), cwd=workdir, env={"COLUMNS": "120"}
    )
    [maps] = [line for line in text.stdout.splitlines() if "libraries mapped" in line]
    assert re.search(r"\d+ CUDA libraries mapped before import torch failed", maps), maps
    failed = run.finding("torch-import-failed")
    assert failed["root"] == "missing-cuda-wheel" and failed["remedies"] == []
    assert failed["evidence"][0] == (
        "import torch: ImportError: libcudnn.so.9: cannot open shared object file: "
        "No such file or directory"
    )
    # The Markdown report folds the traceback tail, redacted like the rest.
    markdown = run_doctor(
        "check", "--deep", "--python", str(env.root), "--format", "markdown", cwd=workdir
    ).stdout
    block = markdown.split("<summary>import torch: failed</summary>", 1)[1].split("</details>")[0]
    assert "ImportError: libcudnn.so.9: cannot open shared object file" in block
    assert str(Path.home()) not in markdown or str(Path.home()) == "/"
    # explain --deep: the pasted error is confirmed by what torch really did here.
    explained = run_doctor(
        "explain",
        "--deep",
        "--python",
        str(env.root),
        "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory",
        cwd=workdir,
    )
    confirmed = next(line for line in explained.stdout.splitlines() if "Confirmed here" in line)
    assert "missing-cuda-wheel" in confirmed and "torch-import-failed" in confirmed


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler")
def test_old_cudnn_preloaded_fails_import_as_library_shadowed_consequence(
    cuda_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    old = cudnn(ElfBuilder(tmp_path / "elf"), 90100)
    run = deep_json(cuda_torch, workdir, env={"LD_PRELOAD": str(old)})
    error = stages(run)["import"]["error"]
    assert (
        error.startswith("ImportError: ") and "libtorch_cuda.so: undefined symbol: cudnn" in error
    )
    failed = run.finding("torch-import-failed")
    assert failed["root"] == "library-shadowed"
    # The stand-in stays mapped: seen at run time, attached to the same root.
    mismatch = run.finding("runtime-library-mismatch")
    assert mismatch["root"] == "library-shadowed"


HANG = """\
import os, subprocess, sys, time

class _HangOnTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            child = subprocess.Popen(["sleep", "300"])
            with open(os.environ["TD_TEST_HANG_PID"], "w") as f:
                f.write(str(child.pid))
            time.sleep(300)
        return None

sys.meta_path.insert(0, _HangOnTorch())
"""


def test_import_that_hangs_is_stopped_at_the_timeout_with_its_children(
    cpu_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    env = variant(cpu_torch, tmp_path / "hangs")
    # A .pth line runs at start-up; this one makes `import torch` hang (and start a child).
    (env.site_packages / "hang_on_torch.py").write_text(HANG)
    (env.site_packages / "zz_hang.pth").write_text("import hang_on_torch\n")
    pid_file = tmp_path / "sleep.pid"
    started = time.monotonic()
    run = deep_json(env.root, workdir, "--timeout", "8", env={"TD_TEST_HANG_PID": str(pid_file)})
    assert time.monotonic() - started < 60
    got = stages(run)
    assert got["import"]["status"] == "timed out"
    assert "8 s (--timeout)" in got["import"]["reason"]
    assert got["cpu"]["status"] == "skipped"
    assert "stopped in 'import torch'" in got["cpu"]["reason"]
    failed = run.finding("torch-import-failed")
    assert failed["severity"] == "error" and failed["root"] is None
    assert failed["title"] == "import torch did not finish"
    assert failed["remedies"][0]["text"].endswith('-X importtime -c "import torch"\n')
    assert run.returncode == 1
    # The sleeping grandchild was stopped with the child.
    pid = int(pid_file.read_text())
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    shutil.rmtree(env.root)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _gone(pids: list[int], within: float = 5.0) -> list[int]:
    """The pids still running (not exited, not a zombie) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_sigterm_during_the_runtime_stage_stops_the_run_and_every_child_at_once(
    cpu_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    """`timeout`, CI cancellation and `docker stop` send SIGTERM: while `import torch`
    hangs in the runtime child (and its own child sleeps), the run stops within seconds,
    exit 128+15, and leaves neither behind."""
    env = variant(cpu_torch, tmp_path / "hangs")
    (env.site_packages / "hang_on_torch.py").write_text(HANG)
    (env.site_packages / "zz_hang.pth").write_text("import hang_on_torch\n")
    pid_file = tmp_path / "sleep.pid"
    scratch = tmp_path / "tmp"  # the doctor's TMPDIR: its own, so nothing else writes there
    scratch.mkdir()
    proc = subprocess.Popen(
        # --timeout far beyond the test: only the signal stops it
        [
            *(sys.executable, "-m", "doctor", "check", "--deep", "--python", str(env.root)),
            *("--timeout", "60", "--format", "json"),
        ],
        cwd=workdir,
        env=doctor_env({"TD_TEST_HANG_PID": str(pid_file), "TMPDIR": str(scratch)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists(), "the runtime child never reached import torch"
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == "torch-doctor: stopped by SIGTERM"
    sleeper = int(pid_file.read_text())
    assert sleeper in children  # the runtime child's own child, seen before the signal
    assert _gone(children) == []
    assert list(scratch.iterdir()) == []  # torch.compile's cache directory went too
    shutil.rmtree(env.root)


CRASH = """\
import ctypes, sys

class _CrashOnTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            ctypes.string_at(0)  # a real SIGSEGV, as a broken library constructor gives
        return None

sys.meta_path.insert(0, _CrashOnTorch())
"""


def test_import_that_dies_of_a_real_signal_is_a_crashed_stage_with_its_signal(
    cpu_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    env = variant(cpu_torch, tmp_path / "crashes")
    (env.site_packages / "crash_on_torch.py").write_text(CRASH)
    (env.site_packages / "zz_crash.pth").write_text("import crash_on_torch\n")
    run = deep_json(env.root, workdir, "--timeout", "30")
    got = stages(run)
    assert (got["import"]["status"], got["import"]["signal"]) == ("crashed", "SIGSEGV")
    assert got["import"]["reason"] == "the child died with SIGSEGV"
    assert got["cpu"]["status"] == "skipped"
    assert "stopped in 'import torch'" in got["cpu"]["reason"]
    failed = run.finding("torch-import-failed")
    assert failed["title"] == "import torch killed the process (SIGSEGV)"
    assert failed["root"] is None and failed["severity"] == "error"
    assert run.returncode == 1
    assert_schema_valid(run)
    shutil.rmtree(env.root)


@pytest.mark.parametrize(
    ("driver", "warning", "root"),
    [
        pytest.param(
            Driver(cu_init_error=803),
            "Error 803: system has unsupported display driver / cuda driver combination",
            "cuda-init-failed",
            id="cuInit-803",
        ),
        pytest.param(
            Driver(cu_init_error=804),
            "Error 804: forward compatibility was attempted on non supported HW",
            "cuda-init-failed",
            id="cuInit-804",
        ),
        pytest.param(
            Driver(version="535.288.01", cuda=12020),
            "The NVIDIA driver on your system is too old (found version 12020)",
            "driver-too-old",
            id="driver-too-old",
        ),
    ],
)
def test_torchs_own_cuda_warning_reaches_the_report_through_the_driver_stand_in(
    cuda_torch: Path,
    workdir: Path,
    driver_stubs: DriverStubs,
    driver: Driver,
    warning: str,
    root: str,
) -> None:
    # The real libcudart of torch's wheel loads the libcuda.so.1 stand-in (tests/c), takes
    # cuInit and cuDriverGetVersion from it, and torch warns in its own words.
    run = deep_json(cuda_torch, workdir, env=driver_stubs.env(driver))
    build = stages(run)["build"]
    assert build["evidence"]["available"] is False
    assert any(warning in text for text in build["warnings"]), build["warnings"]
    unavailable = run.finding("cuda-unavailable")
    assert any(warning in line for line in unavailable["evidence"])
    assert unavailable["root"] == root
    assert root in run.finding_ids()


def test_a_cuda_error_no_static_check_explains_gets_the_meaning_of_its_own_number(
    cuda_torch: Path, workdir: Path, driver_stubs: DriverStubs
) -> None:
    """The driver (the stand-in: NVML fine, but a libcuda without the entry points this
    libcudart needs) makes torch warn "Error 36: API call is not supported in the installed
    CUDA driver". No static check explains it, so cuda-unavailable is its own root, and its
    remedy used to be the same paragraph about errors 803/804 whatever the number: now it
    says what error 36 means and what to do, first."""
    run = deep_json(cuda_torch, workdir, env=driver_stubs.env(Driver()))
    unavailable = run.finding("cuda-unavailable")
    assert unavailable["root"] is None  # a root cause of its own
    assert any("Error 36" in line for line in unavailable["evidence"])
    first = unavailable["remedies"][0]
    assert "error 36" in first["summary"].lower(), first
    assert "cudaErrorCallRequiresNewerDriver" in first["text"], first
    assert "803" not in first["text"]


def test_library_preloaded_by_sitecustomize_is_seen_mapped_although_import_works(
    cuda_torch: Path, tmp_path: Path, workdir: Path
) -> None:
    # A copy of torch's own libcudart, loaded by path at start-up before torch: import works.
    lib = tmp_path / "lib"
    lib.mkdir()
    wheel_copy = FakeEnv(cuda_torch).site_packages / "nvidia" / "cu13" / "lib" / "libcudart.so.13"
    shutil.copy(wheel_copy, lib / "libcudart.so.13")
    preload = tmp_path / "preload"
    preload.mkdir()
    (preload / "sitecustomize.py").write_text(
        f"import ctypes\nctypes.CDLL({str(lib / 'libcudart.so.13')!r}, mode=ctypes.RTLD_GLOBAL)\n"
    )
    run = deep_json(cuda_torch, workdir, "--no-redact", env={"PYTHONPATH": str(preload)})
    assert stages(run)["import"]["status"] == "passed"
    mismatch = run.finding("runtime-library-mismatch")
    [item] = mismatch["data"]["libraries"]
    assert item["path"] == str((lib / "libcudart.so.13").resolve())
    assert item["owner"] is None
    assert item["predicted"] == str(wheel_copy.resolve())
    # The contained load probe saw it too: one root, library-shadowed.
    assert mismatch["root"] == "library-shadowed"
