"""The runtime findings (check --deep) as pure checks over hand-built facts.

The GPU and NCCL paths cannot run on the test machine (no GPU): their findings are pinned
here with facts shaped as the runtime probe records them; the real-torch scenarios are in
tests/test_deep.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.checks import Skip
from doctor.checks.runtime import RUNTIME_IDS
from doctor.facts import Facts
from doctor.facts.libraries import (
    CudaLibraryFacts,
    LibrariesFacts,
    Resolution,
    ResolvedDependency,
)
from doctor.facts.machine import ArchListFacts
from doctor.facts.runtime import (
    MappedLibrary,
    RuntimeDevice,
    RuntimeFacts,
    RuntimeStage,
    StageStatus,
)
from doctor.findings import Remedy, RemedyKind, Severity
from doctor.pipeline import judge
from tests.handmade import (
    CheckUnderTest,
    facts,
    healthy_distributions,
    healthy_facts,
    torch_build,
)
from tests.test_driver_checks import H100, RTX_5090, machine, with_machine
from tests.test_toolchain import with_toolchain

SITE = "/venv/lib/python3.11/site-packages"


def stage(name: str, status: str = StageStatus.PASSED, **kwargs: object) -> RuntimeStage:
    return RuntimeStage(name=name, title=name, status=status, **kwargs)  # type: ignore[arg-type]


def healthy_runtime(**changes: object) -> RuntimeFacts:
    """A GPU machine where every stage passed (what the probe records there)."""
    runtime = RuntimeFacts(
        ran=True,
        torch_version="2.14.1+cu130",
        cuda_version="13.0",
        cuda_available=True,
        device_count=2,
        devices=(
            RuntimeDevice(0, "NVIDIA H100 80GB HBM3", "9.0", 85_000_000_000, True),
            RuntimeDevice(1, "NVIDIA H100 80GB HBM3", "9.0", 85_000_000_000, True),
        ),
        nccl_version="2.30.7",
        mapped=(
            MappedLibrary(
                "libcudnn.so.9", f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9", "nvidia-cudnn-cu13"
            ),
            MappedLibrary("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", None),
        ),
        stages=(
            stage("import"),
            stage("build"),
            stage("gpu:0", ran_on="cuda:0"),
            stage("gpu:1", ran_on="cuda:1"),
            stage("maps"),
            stage("cpu", ran_on="cpu"),
            stage("nccl"),
            stage("compile", ran_on="cuda"),
        ),
    )
    return dataclasses.replace(runtime, **changes)  # type: ignore[arg-type]


def with_stage(runtime: RuntimeFacts, replacement: RuntimeStage) -> RuntimeFacts:
    stages = tuple(replacement if s.name == replacement.name else s for s in runtime.stages)
    return dataclasses.replace(runtime, stages=stages)


def deep(runtime: RuntimeFacts | None, base: Facts | None = None) -> Facts:
    return dataclasses.replace(base or healthy_facts(), runtime=runtime)


@pytest.mark.parametrize("finding_id", RUNTIME_IDS)
def test_runtime_checks_are_quiet_when_every_stage_passed(finding_id: str) -> None:
    assert CheckUnderTest(finding_id).run(deep(healthy_runtime())) == []


@pytest.mark.parametrize("finding_id", RUNTIME_IDS)
def test_runtime_checks_skip_without_deep(finding_id: str) -> None:
    outcome = CheckUnderTest(finding_id).run(deep(None))
    assert isinstance(outcome, Skip) and "--deep" in outcome.reason


def test_import_that_hung_is_its_own_root_naming_the_stage() -> None:
    hung = stage(
        "import",
        StageStatus.TIMED_OUT,
        reason="did not finish within 5 s (--timeout); the child and its processes were stopped",
    )
    finding = CheckUnderTest("torch-import-failed").only(deep(with_stage(healthy_runtime(), hung)))
    assert finding.severity is Severity.ERROR
    assert finding.title == "import torch did not finish"
    assert finding.data.status == "timed out"
    # Nothing named: no static finding can explain it, it is a root of its own.
    assert finding.data.subjects() == frozenset()


def test_import_error_concerns_the_wheel_of_the_library_it_names() -> None:
    failed = stage(
        "import",
        StageStatus.FAILED,
        error="ImportError: libcudnn.so.9: cannot open shared object file: No such file",
    )
    finding = CheckUnderTest("torch-import-failed").only(
        deep(with_stage(healthy_runtime(), failed))
    )
    assert finding.severity is Severity.ERROR
    assert finding.data.subjects() == {"nvidia-cudnn-cu13"}
    assert "libcudnn.so.9: cannot open shared object file" in finding.evidence[0]
    # Healthy static facts: nothing explains it, so it is a root with the real text.
    judged = CheckUnderTest("torch-import-failed").judged(
        deep(with_stage(healthy_runtime(), failed))
    )
    assert judged.root is None and judged.remedies


def test_import_error_for_a_missing_wheel_hangs_under_missing_cuda_wheel() -> None:
    failed = stage(
        "import",
        StageStatus.FAILED,
        error="ImportError: libcudnn.so.9: cannot open shared object file: No such file",
    )
    base = facts(healthy_distributions(skip=["nvidia-cudnn-cu13"]))
    report = judge(deep(with_stage(healthy_runtime(), failed), base))
    imported = next(f for f in report.findings if f.id == "torch-import-failed")
    assert imported.root == "missing-cuda-wheel" and imported.remedies == ()
    assert [f.id for f in report.roots] == ["missing-cuda-wheel"]


def test_import_error_for_a_missing_module_concerns_its_distribution() -> None:
    failed = stage(
        "import",
        StageStatus.FAILED,
        error="ModuleNotFoundError: No module named 'typing_extensions'",
    )
    base = facts(healthy_distributions(skip=["typing-extensions"]))
    report = judge(deep(with_stage(healthy_runtime(), failed), base))
    imported = next(f for f in report.findings if f.id == "torch-import-failed")
    assert imported.data.subjects() == {"typing-extensions"}
    assert imported.root == "missing-torch-dependency"


def test_cuda_unavailable_keeps_torchs_warning_verbatim() -> None:
    warning = (
        "CUDA initialization: Unexpected error from cudaGetDeviceCount(). Did you run some "
        "cuda functions before calling NumCudaDevices() that might have already set an error? "
        "Error 803: system has unsupported display driver / cuda driver combination"
    )
    runtime = with_stage(
        healthy_runtime(cuda_available=False, device_count=0),
        stage("build", warnings=(warning,)),
    )
    finding = CheckUnderTest("cuda-unavailable").only(deep(runtime))
    assert f"torch warned: {warning}" in finding.evidence
    assert finding.data.warnings == (warning,)
    assert finding.data.subjects() == {"driver"}  # what the driver family's findings name


def test_cuda_unavailable_is_not_judged_for_a_cpu_build() -> None:
    runtime = healthy_runtime(cuda_version=None, cuda_available=False, device_count=0)
    assert isinstance(CheckUnderTest("cuda-unavailable").run(deep(runtime)), Skip)


def test_no_kernel_image_on_a_gpu_points_at_the_arch_check() -> None:
    failed = stage(
        "gpu:1",
        StageStatus.FAILED,
        error="RuntimeError: CUDA error: no kernel image is available for execution on the device",
    )
    finding = CheckUnderTest("gpu-kernel-failed").only(deep(with_stage(healthy_runtime(), failed)))
    assert finding.data.gpus == ("gpu:1",)
    assert finding.data.subjects() == {"sm_90"}  # what gpu-arch-unsupported names
    assert finding.title.startswith("1 of 2 GPUs failed")


def test_gpu_stage_that_crashed_is_reported_with_its_signal() -> None:
    crashed = stage("gpu:0", StageStatus.CRASHED, signal="SIGSEGV", reason="died with SIGSEGV")
    finding = CheckUnderTest("gpu-kernel-failed").only(deep(with_stage(healthy_runtime(), crashed)))
    assert finding.data.signal == "SIGSEGV"


def test_nccl_all_reduce_failure_is_a_finding() -> None:
    failed = stage(
        "nccl", StageStatus.FAILED, error="RuntimeError: NCCL Error 2: unhandled system error"
    )
    finding = CheckUnderTest("nccl-failed").only(deep(with_stage(healthy_runtime(), failed)))
    assert finding.severity is Severity.ERROR
    assert "NCCL Error 2" in finding.title


def test_compile_without_a_c_compiler_points_at_the_toolchain_check() -> None:
    failed = stage(
        "compile",
        StageStatus.FAILED,
        error="BackendCompilerFailed: RuntimeError: Failed to find C compiler. "
        "Please specify via CC environment variable.",
    )
    finding = CheckUnderTest("torch-compile-failed").only(
        deep(with_stage(healthy_runtime(), failed))
    )
    assert finding.severity is Severity.WARNING
    # What torch-compile-toolchain names when it finds no C compiler.
    assert finding.data.subjects() == {"c-compiler"}


def test_library_mapped_from_outside_the_wheels_is_named_with_the_prediction() -> None:
    outside = "/opt/cuda/lib64/libcudnn.so.9"
    predicted = f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9"
    libraries = LibrariesFacts(
        cuda=(
            CudaLibraryFacts(
                soname="libcudnn.so.9",
                needed_by=("libtorch_cuda.so",),
                resolved=ResolvedDependency(
                    "libcudnn.so.9",
                    Resolution.RPATH,
                    predicted,
                    owner="nvidia-cudnn-cu13",
                    expected_path=predicted,
                ),
                expected_owner="nvidia-cudnn-cu13",
            ),
        )
    )
    runtime = healthy_runtime(mapped=(MappedLibrary("libcudnn.so.9", outside, None),))
    base = dataclasses.replace(healthy_facts(), libraries=libraries)
    finding = CheckUnderTest("runtime-library-mismatch").only(deep(runtime, base))
    [item] = finding.data.libraries
    assert (item.file_name, item.path, item.owner) == ("libcudnn.so.9", outside, None)
    assert (item.predicted, item.wheel) == (predicted, "nvidia-cudnn-cu13")
    assert finding.severity is Severity.WARNING
    assert finding.data.subjects() == {"nvidia-cudnn-cu13"}


def test_no_kernel_image_hangs_under_gpu_arch_unsupported_for_that_sm() -> None:
    # An sm_120 GPU and a build without sm_120 cubins or PTX: the static root names sm_120.
    old_build = ArchListFacts(source="fatbin", sm=("sm_80", "sm_90"), libraries=("lib.so",))
    base = with_machine(machine((RTX_5090,), archs=old_build))
    failed = stage(
        "gpu:0",
        StageStatus.FAILED,
        error="RuntimeError: CUDA error: no kernel image is available for execution on the device",
    )
    one_gpu = [s for s in healthy_runtime().stages if s.name != "gpu:1"]
    runtime = with_stage(
        healthy_runtime(
            device_count=1,
            devices=(RuntimeDevice(0, "NVIDIA GeForce RTX 5090", "12.0", 34_190_917_632, True),),
            stages=tuple(one_gpu),
        ),
        failed,
    )
    report = judge(deep(runtime, base))
    kernel = next(f for f in report.findings if f.id == "gpu-kernel-failed")
    assert kernel.data.subjects() == {"sm_120"}
    assert kernel.root == "gpu-arch-unsupported" and kernel.remedies == ()


def test_compile_without_a_c_compiler_hangs_under_torch_compile_toolchain() -> None:
    failed = stage(
        "compile",
        StageStatus.FAILED,
        ran_on="cuda:0",
        error="BackendCompilerFailed: RuntimeError: Failed to find C compiler. "
        "Please specify via CC environment variable.",
    )
    base = with_toolchain([H100], c_compiler=None)
    report = judge(deep(with_stage(healthy_runtime(), failed), base))
    compiled = next(f for f in report.findings if f.id == "torch-compile-failed")
    assert compiled.root == "torch-compile-toolchain"
    assert "torch-compile-failed" not in [f.id for f in report.roots]


# --- remedies of the runtime findings when they are the root cause -------------------------

PYTHON = "/project/.venv/bin/python"
CU130 = "--index-url https://download.pytorch.org/whl/cu130"


def as_pip_venv(all_facts: Facts) -> Facts:
    """The same environment, installed by pip into a plain venv."""
    dists = tuple(dataclasses.replace(d, installer="pip") for d in all_facts.distributions)
    return dataclasses.replace(all_facts, distributions=dists)


def assert_code_parses(remedies: tuple[Remedy, ...]) -> None:
    for remedy in remedies:
        if remedy.kind is not RemedyKind.TEXT:
            checked = subprocess.run(
                ["bash", "-n"], input=remedy.text, capture_output=True, text=True
            )
            assert checked.returncode == 0, (remedy.text, checked.stderr)


def root_remedies(finding_id: str, all_facts: Facts) -> tuple[Remedy, ...]:
    judged = CheckUnderTest(finding_id).judged(all_facts)
    assert judged.root is None and judged.remedies, judged
    assert_code_parses(judged.remedies)
    return judged.remedies


def shell(remedies: tuple[Remedy, ...]) -> list[str]:
    return [r.text for r in remedies if r.kind is RemedyKind.SHELL]


def test_import_failure_as_root_reinstalls_what_it_names_and_torch_from_its_index() -> None:
    failed = stage(
        "import",
        StageStatus.FAILED,
        error="ImportError: libcudnn.so.9: cannot open shared object file: No such file",
    )
    remedies = root_remedies("torch-import-failed", deep(with_stage(healthy_runtime(), failed)))
    assert shell(remedies) == [
        f"uv pip install --python {PYTHON} --reinstall --no-deps nvidia-cudnn-cu13==9.24.0.43\n",
        # A +cu130 torch is on PyTorch's cu130 index only: pinned, and from there.
        f"uv pip install --python {PYTHON} --reinstall {CU130} torch==2.14.1+cu130\n",
    ]


def test_import_failure_of_a_cu126_torch_in_a_pip_venv_names_the_cu126_index() -> None:
    cu126 = healthy_facts(build=torch_build("2.14.1+cu126", cuda="12.6"))
    failed = stage("import", StageStatus.CRASHED, signal="SIGSEGV", reason="died with SIGSEGV")
    remedies = root_remedies(
        "torch-import-failed", deep(with_stage(healthy_runtime(), failed), as_pip_venv(cu126))
    )
    assert shell(remedies) == [
        f"{PYTHON} -m pip install --force-reinstall "
        "--index-url https://download.pytorch.org/whl/cu126 torch==2.14.1+cu126\n"
    ]


def test_import_that_hung_shows_what_blocks_and_the_command_runs(tmp_path: Path) -> None:
    hung = stage("import", StageStatus.TIMED_OUT, reason="did not finish within 5 s")
    [command] = shell(
        root_remedies("torch-import-failed", deep(with_stage(healthy_runtime(), hung)))
    )
    # Run literally, with this interpreter standing in for the venv's (torch is absent
    # here: Python's own import time table and the error are what it prints).
    ran = subprocess.run(
        ["bash", "-c", command.replace(PYTHON, sys.executable)],
        capture_output=True,
        text=True,
    )
    assert "import time:" in ran.stderr


def _no_kernel_image_on_a_5090(driver: str, cuda: int, build: str, build_cuda: str) -> Facts:
    base = dataclasses.replace(
        with_machine(machine((RTX_5090,), driver=driver, cuda=cuda)),
        torch=torch_build(build, cuda=build_cuda),
    )
    failed = stage(
        "gpu:0",
        StageStatus.FAILED,
        error="RuntimeError: CUDA error: no kernel image is available for execution on the device",
    )
    one_gpu = tuple(s for s in healthy_runtime().stages if s.name != "gpu:1")
    runtime = with_stage(
        healthy_runtime(
            device_count=1,
            devices=(RuntimeDevice(0, "NVIDIA GeForce RTX 5090", "12.0", 34_190_917_632, True),),
            stages=one_gpu,
        ),
        failed,
    )
    return deep(runtime, base)


def test_no_kernel_image_as_root_installs_the_variant_that_covers_the_gpu() -> None:
    # torch's arch list was not read, so the static arch check could not judge: the
    # runtime's "no kernel image" is the root, and its remedy the build for this GPU.
    all_facts = _no_kernel_image_on_a_5090("580.95.05", 13000, "2.14.1+cu126", "12.6")
    [install] = shell(root_remedies("gpu-kernel-failed", all_facts))
    assert install == f"uv pip install --python {PYTHON} {CU130} torch==2.14.1+cu130"


def test_no_kernel_image_never_reinstalls_the_build_already_there() -> None:
    all_facts = _no_kernel_image_on_a_5090("580.95.05", 13000, "2.14.1+cu130", "13.0")
    remedies = root_remedies("gpu-kernel-failed", all_facts)
    assert not any("torch==" in r.text for r in remedies)
    assert remedies[0].summary.startswith("no other published torch build")


def test_a_gpu_crash_with_nothing_installed_to_blame_points_at_the_drivers_log() -> None:
    crashed = stage("gpu:0", StageStatus.CRASHED, signal="SIGSEGV", reason="died with SIGSEGV")
    remedies = root_remedies("gpu-kernel-failed", deep(with_stage(healthy_runtime(), crashed)))
    assert shell(remedies) == ["sudo dmesg | grep -E 'NVRM|Xid' | tail -n 20\n"]


def test_nccl_failure_as_root_reinstalls_torchs_nccl_at_its_pin() -> None:
    failed = stage(
        "nccl", StageStatus.FAILED, error="RuntimeError: NCCL Error 2: unhandled system error"
    )
    remedies = root_remedies("nccl-failed", deep(with_stage(healthy_runtime(), failed)))
    assert shell(remedies) == [
        f"uv pip install --python {PYTHON} --reinstall --no-deps nvidia-nccl-cu13==2.30.7\n"
    ]
    [env] = [r.text for r in remedies if r.kind is RemedyKind.ENV]
    assert env.startswith("export NCCL_DEBUG=INFO")


def test_compile_failure_as_root_clears_the_caches_and_reinstalls_triton_at_its_pin(
    tmp_path: Path,
) -> None:
    failed = stage(
        "compile",
        StageStatus.FAILED,
        ran_on="cuda:0",
        error="BackendCompilerFailed: backend='inductor' raised: ImportError: cannot import name",
    )
    remedies = root_remedies("torch-compile-failed", deep(with_stage(healthy_runtime(), failed)))
    clear, reinstall = shell(remedies)
    assert reinstall == (f"uv pip install --python {PYTHON} --reinstall --no-deps triton==3.8.0\n")
    # The cache removal, run literally: the caches of this user go, nothing else.
    caches = tmp_path / "caches"
    inductor, triton = caches / "torchinductor_alice", caches / "triton"
    for directory in (inductor, triton):
        (directory / "stale").mkdir(parents=True)
    keep = caches / "other"
    keep.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "TORCHINDUCTOR_CACHE_DIR": str(inductor),
        "TRITON_CACHE_DIR": str(triton),
    }
    subprocess.run(["bash", "-e", "-c", clear], env=env, check=True)
    assert not inductor.exists() and not triton.exists() and keep.exists()


def test_compile_failure_of_the_c_compiler_installs_it_with_pythons_headers() -> None:
    failed = stage(
        "compile",
        StageStatus.FAILED,
        ran_on="cpu",
        error="CppCompileError: C++ compile error: fatal error: Python.h: No such file",
    )
    remedies = root_remedies("torch-compile-failed", deep(with_stage(healthy_runtime(), failed)))
    assert shell(remedies)[-1] == "sudo apt-get install build-essential python3.11-dev\n"


def test_a_preloaded_library_as_root_is_dropped_from_ld_preload() -> None:
    outside = "/opt/cuda/lib64/libcudnn.so.9"
    runtime = healthy_runtime(mapped=(MappedLibrary("libcudnn.so.9", outside, None),))
    preloaded = dataclasses.replace(
        healthy_facts(), environment={"LD_PRELOAD": f"{outside} /usr/lib/libjemalloc.so.2"}
    )
    remedies = root_remedies("runtime-library-mismatch", deep(runtime, preloaded))
    [env] = [r.text for r in remedies if r.kind is RemedyKind.ENV]
    assert env == "export LD_PRELOAD=/usr/lib/libjemalloc.so.2"


def test_a_library_loaded_by_other_code_gets_the_loaders_log_and_it_runs() -> None:
    outside = "/opt/cuda/lib64/libcudnn.so.9"
    runtime = healthy_runtime(mapped=(MappedLibrary("libcudnn.so.9", outside, None),))
    [command] = shell(root_remedies("runtime-library-mismatch", deep(runtime)))
    assert command.startswith(f'LD_DEBUG=files {PYTHON} -c "import torch" 2>&1 | grep -E ')
    # Literally, against this interpreter loading libssl: the grep keeps who needed it.
    probe = command.replace(PYTHON, sys.executable).replace("import torch", "import ssl")
    probe = probe.replace("libcudnn\\.so\\.9", "libssl\\.so[.0-9]*")
    ran = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert "needed by" in ran.stdout and "_ssl" in ran.stdout


@pytest.mark.parametrize(
    ("name", "finding_id"),
    [
        ("import", "torch-import-failed"),
        ("nccl", "nccl-failed"),
        ("compile", "torch-compile-failed"),
    ],
)
def test_a_stage_that_was_not_run_is_a_skip_not_a_pass(name: str, finding_id: str) -> None:
    runtime = healthy_runtime()
    without = dataclasses.replace(
        runtime, stages=tuple(s for s in runtime.stages if s.name != name)
    )
    outcome = CheckUnderTest(finding_id).run(deep(without))
    assert outcome == Skip(f"the {name} stage was not run")


def test_cuda_unavailable_without_the_build_stage_is_a_skip() -> None:
    runtime = healthy_runtime(cuda_available=False)
    without = dataclasses.replace(
        runtime, stages=tuple(s for s in runtime.stages if s.name != "build")
    )
    assert CheckUnderTest("cuda-unavailable").run(deep(without)) == Skip(
        "the build stage was not run"
    )
