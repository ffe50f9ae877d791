"""The runtime findings (check --deep) as pure checks over hand-built facts.

The GPU and NCCL paths cannot run on the test machine (no GPU): their findings are pinned
here with facts shaped as the runtime probe records them; the real-torch scenarios are in
tests/test_deep.py.
"""

from __future__ import annotations

import dataclasses

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
from doctor.findings import Severity
from doctor.pipeline import judge
from tests.handmade import CheckUnderTest, facts, healthy_distributions, healthy_facts
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
