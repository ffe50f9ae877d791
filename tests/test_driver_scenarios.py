"""The driver and the GPUs, end to end: the CLI as a subprocess, the real nvidia-ml-py and
the real probes talking to C stand-ins of libnvidia-ml.so.1 and libcuda.so.1.

No GPU is needed: each scenario is a config file the stand-ins read (tests/driver_stub.py).
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.driver_stub import GTX_980, H100, RTX_5090, TESLA_K80, Driver, DriverStubs, Gpu
from tests.factory import FakeEnv, run_doctor
from tests.fatbin_blob import cubins, shared_library_with_fatbin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DRIVER_IDS = {
    "no-nvidia-driver",
    "nvml-driver-mismatch",
    "cuda-init-failed",
    "driver-too-old",
    "gpu-arch-unsupported",
    "no-gpu-visible",
    "visible-devices-truncated",
    "mig-enabled",
}
CUDA_12_4_DRIVER = Driver(version="550.54.15", cuda=12040)
CUDA_12_2_DRIVER = Driver(version="535.104.05", cuda=12020)


def doctor(env: FakeEnv, workdir: Path, driver_env: dict[str, str] | None = None) -> Any:
    return run_doctor("--python", str(env.root), "--format", "json", cwd=workdir, env=driver_env)


@pytest.fixture
def cu130(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130()
    return env


def toml_remedy(finding: dict[str, Any]) -> dict[str, Any]:
    blocks = [r for r in finding["remedies"] if r["kind"] == "toml"]
    assert blocks, f"no TOML remedy in {finding['remedies']}"
    parsed: dict[str, Any] = tomllib.loads(blocks[0]["text"])
    return parsed


def assert_installs_variant(finding: dict[str, Any], variant: str) -> None:
    """These venvs belong to no uv project: the remedy is one command for the inspected
    interpreter, from the variant's index, and no pyproject.toml block."""
    assert not [r for r in finding["remedies"] if r["kind"] == "toml"]
    [command] = [r["text"] for r in finding["remedies"] if r["kind"] == "shell"]
    assert f"--index-url https://download.pytorch.org/whl/{variant} " in command
    assert re.search(r"'?torch(==[\d.]+\+" + variant + r"|[<>=][^ ]+)'?$", command), command


def assert_index_block(block: dict[str, Any], variant: str) -> None:
    (index,) = block["tool"]["uv"]["index"]
    assert index == {
        "name": f"pytorch-{variant}",
        "url": f"https://download.pytorch.org/whl/{variant}",
        "explicit": True,
    }
    (source,) = block["tool"]["uv"]["sources"]["torch"]
    assert source["index"] == f"pytorch-{variant}"
    assert "sys_platform == 'linux'" in source["marker"]


# --- no driver at all -----------------------------------------------------------------


def test_this_machine_really_has_no_nvidia_driver() -> None:
    # The no-driver scenario relies on it: nothing named libnvidia-ml.so.1 can be loaded.
    with pytest.raises(OSError):
        ctypes.CDLL("libnvidia-ml.so.1")
    with pytest.raises(OSError):
        ctypes.CDLL("libcuda.so.1")


def test_cuda_build_without_any_driver_warns_it_will_run_on_the_cpu(
    cu130: FakeEnv, workdir: Path
) -> None:
    run = doctor(cu130, workdir)
    finding = run.finding("no-nvidia-driver")
    assert finding["severity"] == "warning"
    assert "CPU" in finding["title"]
    assert any("NVML Shared Library Not Found" in e for e in finding["evidence"])
    assert any("libcuda.so.1" in e for e in finding["evidence"])
    assert run.json["facts"]["machine"]["nvml"]["status"] == "library-not-found"
    # One cause, one finding: the checks that need a driver stay silent.
    assert set(run.finding_ids()) & DRIVER_IDS == {"no-nvidia-driver"}


def test_cpu_build_without_a_driver_is_only_information(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=())
    run = doctor(env, workdir)
    assert run.finding("no-nvidia-driver")["severity"] == "info"
    assert run.finding("cpu-only-torch")["severity"] == "info"
    assert run.returncode == 0


# --- healthy ----------------------------------------------------------------------------


def test_h100_on_a_580_driver_is_healthy_for_cu130(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver("580.95.05", 13000, (H100,))))
    assert run.returncode == 0, run.stdout
    assert set(run.finding_ids()) & DRIVER_IDS == set()
    machine = run.json["facts"]["machine"]
    assert machine["nvml"]["driver_version"] == "580.95.05"
    assert machine["nvml"]["cuda_driver_version"] == 13000
    assert machine["nvml"]["gpus"][0]["compute_capability"] == [9, 0]
    assert machine["cuda_driver"]["init_result"] == 0
    # The FakeEnv's libtorch_cuda.so is no ELF file: the arch list comes from the table.
    assert machine["torch_archs"]["source"] == "table"


def test_header_shows_driver_cuda_and_gpu_coverage(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = run_doctor(
        "--python", str(cu130.root), cwd=workdir, env=driver_stubs.env(Driver(gpus=(H100,)))
    )
    header = run.stdout.split("Checks")[0]
    assert "580.95.05  supports CUDA 13.0" in header
    assert "NVIDIA H100 80GB HBM3  compute capability 9.0 (sm_90)" in header
    assert "covered by this torch build" in header


def test_header_says_when_this_build_does_not_cover_a_gpu(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100, GTX_980)))
    header = run_doctor("--python", str(cu130.root), cwd=workdir, env=env).stdout
    header = " ".join(header.split("Checks")[0].replace("│", " ").split())
    assert "GPU 0 NVIDIA H100 80GB HBM3 compute capability 9.0 (sm_90) covered" in header
    assert "GPU 1 NVIDIA GeForce GTX 980 compute capability 5.2 (sm_52) NOT covered" in header


# --- driver too old ---------------------------------------------------------------------


def test_535_driver_is_too_old_for_a_cu130_build(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(CUDA_12_2_DRIVER))
    assert run.returncode == 1
    finding = run.finding("driver-too-old")
    assert finding["severity"] == "error"
    evidence = "\n".join(finding["evidence"])
    assert "535.104.05" in evidence and "12020" in evidence
    assert "CUDA 12.2" in evidence and "CUDA 13.0" in evidence
    assert "580.65.06" in evidence  # CUDA 13.0's native minimum on Linux
    assert "found version 12020" in finding["detail"]
    # torch 2.14 is also published for CUDA 12.6, which a 535 driver runs.
    assert_installs_variant(finding, "cu126")


def test_12_4_driver_under_a_cu128_build_warns_about_minor_version_compatibility(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_torch("2.10.0+cu128", cuda="12.8", requires_dist=())
    run = doctor(env, workdir, driver_stubs.env(CUDA_12_4_DRIVER))
    finding = run.finding("driver-too-old")
    assert finding["severity"] == "warning"
    assert "minor-version compatibility" in finding["title"]
    assert "PTX" in finding["detail"]  # what MVC does not cover
    evidence = "\n".join(finding["evidence"])
    assert "550.54.15" in evidence and "12040" in evidence and "12.8" in evidence
    assert any("570.26" in r["summary"] for r in finding["remedies"])


# --- GPU architecture -------------------------------------------------------------------


def test_rtx_5090_on_a_build_with_only_sm80_and_sm90_cubins_is_unsupported(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, tmp_path: Path
) -> None:
    library = shared_library_with_fatbin(tmp_path / "lib", cubins(80, 90) + cubins(80, 90))
    env = make_env()
    env.install_torch(lib_files={"libtorch_cuda.so": library}, requires_dist=())
    run = doctor(env, workdir, driver_stubs.env(Driver("580.95.05", 13000, (RTX_5090,))))
    finding = run.finding("gpu-arch-unsupported")
    assert finding["severity"] == "error"
    assert "NVIDIA GeForce RTX 5090" in finding["title"] and "sm_120" in finding["title"]
    assert "sm_120 is not compatible with the current PyTorch installation" in finding["detail"]
    archs = run.json["facts"]["machine"]["torch_archs"]
    assert archs["source"] == "fatbin"
    assert archs["sm"] == ["sm_80", "sm_90"] and archs["ptx"] == []
    assert archs["fat_binaries"] == 2
    assert_installs_variant(finding, "cu130")


@pytest.mark.parametrize("gpu", [TESLA_K80, GTX_980], ids=["kepler-3.7", "maxwell-5.2"])
def test_old_gpus_are_unsupported_by_a_current_cu130_build(
    gpu: Gpu, cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(gpus=(gpu,))))
    finding = run.finding("gpu-arch-unsupported")
    assert gpu.name in finding["title"]
    assert finding["data"]["too_old"] is True
    sm = "sm_" + gpu.capability.replace(".", "")
    assert sm in finding["title"]


def test_maxwell_is_sent_to_the_cu126_index_and_kepler_to_no_index(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    maxwell = doctor(cu130, workdir, driver_stubs.env(Driver(gpus=(GTX_980,))))
    assert_installs_variant(maxwell.finding("gpu-arch-unsupported"), "cu126")
    kepler = doctor(cu130, workdir, driver_stubs.env(Driver(gpus=(TESLA_K80,))))
    remedies = kepler.finding("gpu-arch-unsupported")["remedies"]
    assert [r["kind"] for r in remedies] == ["text"]
    assert "no published torch build" in remedies[0]["summary"]


# --- broken drivers ----------------------------------------------------------------------


def test_nvml_rm_version_mismatch_is_one_error(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(nvml_init_error=18, cu_init_error=803)))
    assert run.returncode == 1
    finding = run.finding("nvml-driver-mismatch")
    assert finding["severity"] == "error"
    assert any("Driver/library version mismatch" in e for e in finding["evidence"])
    assert set(run.finding_ids()) & DRIVER_IDS == {"nvml-driver-mismatch"}
    assert any("sudo reboot" in r["text"] for r in finding["remedies"])


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        (9, "driver-not-loaded", "Driver Not Loaded"),
        (4, "no-permission", "Insufficient Permissions"),
        (999, "unknown", "Unknown Error"),
    ],
)
def test_nvml_errors_become_clear_facts(
    code: int, status: str, text: str, cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(nvml_init_error=code, cu_init_error=100)))
    nvml = run.json["facts"]["machine"]["nvml"]
    assert (nvml["status"], nvml["error_code"], nvml["error_text"]) == (status, code, text)
    if status == "driver-not-loaded":
        assert run.finding("no-nvidia-driver")["severity"] == "warning"
    else:
        finding = run.finding("cuda-init-failed")
        assert any(text in e for e in finding["evidence"])


def test_cuinit_803_names_the_error_and_its_text(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(cu_init_error=803)))
    finding = run.finding("cuda-init-failed")
    assert finding["severity"] == "error"
    assert "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" in finding["title"]
    assert any(
        "system has unsupported display driver / cuda driver combination" in e
        for e in finding["evidence"]
    )


def test_cuda_compat_directory_in_ld_library_path_is_named_for_error_804(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(cu_init_error=804))
    env["LD_LIBRARY_PATH"] += ":/usr/local/cuda/compat"
    finding = doctor(cu130, workdir, env).finding("cuda-init-failed")
    assert "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE" in finding["title"]
    env_remedy = next(r for r in finding["remedies"] if r["kind"] == "env")
    assert "/usr/local/cuda/compat" not in env_remedy["text"]
    assert env_remedy["text"].startswith("export LD_LIBRARY_PATH=")


def test_a_crash_inside_cuinit_is_a_finding_not_a_doctor_crash(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(cu_init_crash=True)))
    assert run.returncode == 1
    finding = run.finding("cuda-init-failed")
    assert any("crashed with SIGABRT" in e for e in finding["evidence"])
    assert "Traceback" not in run.stderr


def test_a_hanging_nvml_is_stopped_at_the_timeout_and_reported(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    started = time.monotonic()
    run = run_doctor(
        "--python",
        str(cu130.root),
        "--format",
        "json",
        "--timeout",
        "3",
        cwd=workdir,
        env=driver_stubs.env(Driver(nvml_init_sleep=60)),
    )
    assert time.monotonic() - started < 30
    assert run.json["facts"]["machine"]["nvml"]["status"] == "probe-failed"
    failures = {f["probe"]: f["reason"] for f in run.json["facts"]["failures"]}
    assert "did not finish within" in failures["nvml"]
    assert "Traceback" not in run.stderr


def test_a_hanging_nvml_still_leaves_cuinit_s_answer(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    # NVML and cuInit share one probe process: when NVML never returns, cuInit is asked
    # in a process of its own, so the report still says what the driver API answered.
    run = run_doctor(
        "--python",
        str(cu130.root),
        "--format",
        "json",
        "--timeout",
        "3",
        cwd=workdir,
        env=driver_stubs.env(Driver(nvml_init_sleep=60)),
    )
    machine = run.json["facts"]["machine"]
    assert machine["nvml"]["status"] == "probe-failed"
    assert machine["cuda_driver"]["init_result"] == 0
    assert machine["cuda_driver"]["driver_version"] == 13000


def test_a_crash_inside_cuinit_keeps_what_nvml_said(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(cu130, workdir, driver_stubs.env(Driver(cu_init_crash=True)))
    nvml = run.json["facts"]["machine"]["nvml"]
    assert nvml["status"] == "ok"
    assert [gpu["name"] for gpu in nvml["gpus"]] == ["NVIDIA H100 80GB HBM3"]
    assert "crashed with SIGABRT" in run.json["facts"]["machine"]["cuda_driver"]["probe_error"]


def test_nvml_without_libcuda_in_a_container_asks_for_the_compute_capability(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(), libcuda=False, NVIDIA_DRIVER_CAPABILITIES="utility")
    run = doctor(cu130, workdir, env)
    finding = run.finding("cuda-init-failed")
    assert "libcuda.so.1 cannot be loaded" in finding["title"]
    assert "no-nvidia-driver" not in run.finding_ids()
    env_remedy = next(r for r in finding["remedies"] if r["kind"] == "env")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env_remedy["text"]


# --- visibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles", "3"])
def test_cuda_visible_devices_hiding_every_gpu_is_an_error(
    value: str, cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100,)), CUDA_VISIBLE_DEVICES=value)
    run = doctor(cu130, workdir, env)
    finding = run.finding("no-gpu-visible")
    assert finding["severity"] == "error"
    assert "CUDA_VISIBLE_DEVICES" in finding["title"]
    assert any("NVIDIA H100" in e for e in finding["evidence"])
    # cuInit's CUDA_ERROR_NO_DEVICE is the same cause, not a second finding.
    assert "cuda-init-failed" not in run.finding_ids()
    remedy = finding["remedies"][0]["text"]
    assert "unset CUDA_VISIBLE_DEVICES" in remedy
    assert "CUDA_VISIBLE_DEVICES=0" in remedy


@pytest.mark.parametrize("value", ["0", "GPU-00000000", "0,-1,2"])
def test_cuda_visible_devices_naming_a_gpu_is_quiet(
    value: str, cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100,)), CUDA_VISIBLE_DEVICES=value)
    run = doctor(cu130, workdir, env)
    assert "no-gpu-visible" not in run.finding_ids()
    assert run.json["facts"]["machine"]["cuda_driver"]["device_count"] == 1


def test_cuda_visible_devices_stopping_early_hides_the_second_gpu(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100, RTX_5090)), CUDA_VISIBLE_DEVICES="0,-1,1")
    run = doctor(cu130, workdir, env)
    finding = run.finding("visible-devices-truncated")
    assert finding["severity"] == "warning"
    assert finding["data"]["visible"] == [0] and finding["data"]["hidden_gpus"] == [1]
    assert any("RTX 5090" in e and "hidden" in e for e in finding["evidence"])
    assert finding["remedies"][0]["text"] == "export CUDA_VISIBLE_DEVICES=0,1"
    assert "no-gpu-visible" not in run.finding_ids()
    assert run.returncode == 0


def test_cuda_visible_devices_naming_both_gpus_is_quiet(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100, RTX_5090)), CUDA_VISIBLE_DEVICES="1,0")
    run = doctor(cu130, workdir, env)
    assert "visible-devices-truncated" not in run.finding_ids()
    assert "no-gpu-visible" not in run.finding_ids()


# --- CPU build on a GPU machine, MIG ------------------------------------------------------


def test_cpu_build_on_a_blackwell_with_a_570_driver_gets_the_cu128_index_block(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=())
    run = doctor(env, workdir, driver_stubs.env(Driver("570.124.06", 12080, (RTX_5090,))))
    assert run.returncode == 1
    finding = run.finding("cpu-only-torch")
    assert finding["severity"] == "error"
    assert any("NVIDIA GeForce RTX 5090" in e for e in finding["evidence"])
    assert_installs_variant(finding, "cu128")
    # torch 2.14 has no cu128 build: the remedy says which releases do.
    assert any("torch>=2.11,<2.12" in r["text"] for r in finding["remedies"])


def test_cpu_build_on_an_h100_with_a_580_driver_gets_the_cu130_index_block(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=())
    finding = doctor(env, workdir, driver_stubs.env(Driver())).finding("cpu-only-torch")
    assert finding["severity"] == "error"
    assert_installs_variant(finding, "cu130")
    assert not any(r["kind"] == "text" for r in finding["remedies"])


def test_mig_mode_is_reported_as_information(
    cu130: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    mig_h100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", mig=True, uuid="GPU-aaaa")
    run = doctor(cu130, workdir, driver_stubs.env(Driver(gpus=(mig_h100, H100))))
    finding = run.finding("mig-enabled")
    assert finding["severity"] == "info"
    assert [(g["index"], g["name"]) for g in finding["data"]["gpus"]] == [
        (0, "NVIDIA H100 80GB HBM3")
    ]
    assert run.returncode == 0


def test_without_any_gpu_the_arch_list_comes_from_the_table_not_the_fat_binaries(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    # No driver and no NVIDIA PCI device on this machine: nothing to compare the build's
    # GPU code with, so its fat binaries are not read; the documented list is reported.
    library = shared_library_with_fatbin(tmp_path / "lib", cubins(80, 90) + cubins(80, 90))
    env = make_env()
    env.install_torch(lib_files={"libtorch_cuda.so": library}, requires_dist=())
    run = doctor(env, workdir)
    archs = run.json["facts"]["machine"]["torch_archs"]
    assert archs["source"] == "table"
    assert archs["sm"] != ["sm_80", "sm_90"]  # the table's cu130 list, not this library's
    assert any("no GPU to compare" in note for note in archs["notes"])
    assert "gpu-arch-unsupported" not in run.finding_ids()


# --- the real torch 2.14.1 CUDA-13 venv ---------------------------------------------------


@pytest.mark.slow
def test_real_torch_on_h100_with_580_is_healthy_and_its_archs_come_from_the_fatbin(
    real_torch_venv: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(real_torch_venv, workdir, driver_stubs.env(Driver(gpus=(H100, RTX_5090))))
    assert set(run.finding_ids()) & DRIVER_IDS == set()
    archs = run.json["facts"]["machine"]["torch_archs"]
    assert archs["source"] == "fatbin"
    assert archs["sm"] == ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert archs["fat_binaries"] > 100
    assert archs["libraries"][0].endswith("torch/lib/libtorch_cuda.so")


@pytest.mark.slow
def test_real_torch_on_a_535_driver_is_too_old(
    real_torch_venv: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(real_torch_venv, workdir, driver_stubs.env(CUDA_12_2_DRIVER))
    assert run.finding("driver-too-old")["severity"] == "error"
    assert run.returncode == 1


@pytest.mark.slow
def test_real_torch_has_no_kernels_for_a_maxwell_gpu(
    real_torch_venv: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    run = doctor(real_torch_venv, workdir, driver_stubs.env(Driver(gpus=(GTX_980,))))
    finding = run.finding("gpu-arch-unsupported")
    assert "sm_52" in finding["title"]
    assert any("fat binaries" in e for e in finding["evidence"])


@pytest.mark.slow
def test_real_torch_without_a_driver_warns(real_torch_venv: FakeEnv, workdir: Path) -> None:
    run = doctor(real_torch_venv, workdir)
    assert run.finding("no-nvidia-driver")["severity"] == "warning"
