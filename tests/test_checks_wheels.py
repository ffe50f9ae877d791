"""The wheel checks as pure functions over hand-built facts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from doctor.checks import Skip
from doctor.checks.registry import outcome_of
from doctor.derive import derive
from doctor.derive.expectations import compute_expectations as expected_wheels
from doctor.facts import Facts
from doctor.findings import Finding, Severity
from doctor.pipeline import judge
from tests.factory import TORCH_2_6_CU126_NVIDIA, TORCH_2_6_CU126_REQUIRES
from tests.handmade import (
    dist,
    facts,
    healthy_distributions,
    healthy_facts,
    locked_torch,
    marker_env,
    project,
    replace_dist,
    torch_build,
    torch_dist,
)

WHEEL_IDS = (
    "torch-not-installed",
    "missing-cuda-wheel",
    "cuda-wheel-version-mismatch",
    "cuda-wheel-files-missing",
    "missing-torch-dependency",
    "cpu-only-torch",
)


def run(check_id: str, all_facts: Facts) -> Skip | list[Finding]:
    outcome = outcome_of(check_id, derive(all_facts))
    return outcome if isinstance(outcome, Skip) else list(outcome)


def only(check_id: str, all_facts: Facts) -> Finding:
    outcome = run(check_id, all_facts)
    assert not isinstance(outcome, Skip), outcome
    assert [f.id for f in outcome] == [check_id]
    return outcome[0]


def missing_names(finding: Finding) -> list[str]:
    return [m.name for m in finding.data.missing]


@pytest.mark.parametrize("check_id", WHEEL_IDS)
def test_healthy_cu130_environment_keeps_every_wheel_check_quiet(check_id: str) -> None:
    assert run(check_id, healthy_facts()) == []


def test_healthy_environment_report_is_ok_with_exit_0() -> None:
    report = judge(healthy_facts())
    assert report.findings == ()
    assert report.exit_code == 0


# --- torch-not-installed -------------------------------------------------------------


def test_torch_absent_is_one_error_and_the_other_wheel_checks_skip() -> None:
    no_torch = facts([dist("filelock", "3.16.1")])
    finding = only("torch-not-installed", no_torch)
    assert finding.severity is Severity.ERROR
    for check_id in WHEEL_IDS[1:]:
        outcome = run(check_id, no_torch)
        assert isinstance(outcome, Skip)
        assert "not installed" in outcome.reason
    assert judge(no_torch).exit_code == 1


def test_torch_package_without_metadata_is_called_a_stray_directory() -> None:
    stray = facts([], build=torch_build())
    finding = only("torch-not-installed", stray)
    assert finding.data.stray_package_dir is True
    assert any("no distribution metadata" in line for line in finding.evidence)


def test_torch_absent_but_locked_says_the_environment_is_not_synced() -> None:
    unsynced = facts([], project=project(locked_torch()))
    finding = only("torch-not-installed", unsynced)
    assert finding.data.locked is True
    report = judge(unsynced)
    assert [r.text for r in report.findings[0].remedies] == ["uv sync"]


def test_unprobed_interpreter_skips_torch_not_installed() -> None:
    assert isinstance(run("torch-not-installed", Facts()), Skip)


# --- missing-cuda-wheel --------------------------------------------------------------


def test_missing_cudnn_is_named_with_its_exact_pin() -> None:
    finding = only("missing-cuda-wheel", facts(healthy_distributions(skip=["nvidia-cudnn-cu13"])))
    assert finding.severity is Severity.ERROR
    assert missing_names(finding) == ["nvidia-cudnn-cu13"]
    assert finding.data.missing[0].install == "nvidia-cudnn-cu13==9.24.0.43"
    assert finding.data.missing[0].required_by == "torch"


def test_wheel_pulled_by_a_cuda_toolkit_extra_is_named_with_the_toolkit_pin() -> None:
    finding = only("missing-cuda-wheel", facts(healthy_distributions(skip=["nvidia-cublas"])))
    [cublas] = finding.data.missing
    assert cublas.install == "nvidia-cublas==13.1.1.3.*"
    # cublas comes from two of the requested extras; both are named.
    assert cublas.required_by == "cuda-toolkit[cublas,cusolver]"


def test_extra_that_torch_does_not_request_is_not_expected() -> None:
    # cuda-toolkit has an `npp` extra; torch does not ask for it.
    wheels = expected_wheels(healthy_facts())
    assert wheels is not None
    assert "nvidia-npp" not in {w.name for w in wheels.wheels}
    assert "nvidia-cuda-runtime" in {w.name for w in wheels.wheels}


def toolkit_with_extra_requirement(requirement: str) -> Facts:
    """The healthy facts, with one more requirement in cuda-toolkit's metadata."""
    toolkit = next(d for d in healthy_distributions() if d.name == "cuda-toolkit")
    extended = dataclasses.replace(toolkit, requires_dist=(*toolkit.requires_dist, requirement))
    return replace_dist(healthy_facts(), extended)


@pytest.mark.parametrize(
    "requirement",
    [
        # Not of the plain "(...) and extra == 'X'" shape: it holds on Linux whatever the
        # extra, so the shortcut that skips other extras' requirements must not skip it.
        "nvidia-npp==13.0.1.2.*; extra == 'npp' or sys_platform == 'linux'",
        # Extras compare normalised, as packaging compares them.
        "nvidia-npp==13.0.1.2.*; (sys_platform == 'linux') and extra == 'CuBLAS'",
    ],
)
def test_toolkit_requirement_that_holds_for_a_requested_extra_is_expected(
    requirement: str,
) -> None:
    wheels = expected_wheels(toolkit_with_extra_requirement(requirement))
    assert wheels is not None
    assert "nvidia-npp" in {w.name for w in wheels.wheels}


def test_toolkit_requirement_only_for_an_unrequested_extra_is_not_expected() -> None:
    requirement = "nvidia-npp==13.0.1.2.*; (sys_platform == 'linux') and extra == 'npp'"
    wheels = expected_wheels(toolkit_with_extra_requirement(requirement))
    assert wheels is not None
    assert "nvidia-npp" not in {w.name for w in wheels.wheels}


def test_missing_cuda_toolkit_says_its_extras_cannot_be_named() -> None:
    finding = only("missing-cuda-wheel", facts(healthy_distributions(skip=["cuda-toolkit"])))
    assert missing_names(finding) == ["cuda-toolkit"]
    assert "cublas" in finding.data.toolkit_extras_unknown
    assert "cuda-toolkit itself is missing" in finding.detail
    remedy = judge(facts(healthy_distributions(skip=["cuda-toolkit"]))).findings[0].remedies[-1]
    assert "cuda-toolkit[" in remedy.text and "==13.0.3" in remedy.text


def test_several_missing_wheels_are_all_listed_in_one_finding() -> None:
    gone = ["nvidia-nccl-cu13", "nvidia-curand", "triton"]
    finding = only("missing-cuda-wheel", facts(healthy_distributions(skip=gone)))
    assert sorted(missing_names(finding)) == sorted(gone)
    assert finding.title.startswith("3 CUDA wheels")


@pytest.mark.parametrize(
    ("machine", "system"),
    [("aarch64", "Linux"), ("AMD64", "Windows"), ("arm64", "Darwin")],
)
def test_founding_case_x86_64_only_wheels_are_not_expected_elsewhere(
    machine: str, system: str
) -> None:
    # torch 2.6.0+cu126 pins its nvidia wheels to Linux x86_64; the *target's* marker
    # environment decides, whatever machine the doctor runs on.
    torch26 = torch_dist("2.6.0+cu126", TORCH_2_6_CU126_REQUIRES)
    plain = [
        dist(n, "1.0") for n in ("filelock", "typing-extensions", "networkx", "jinja2", "fsspec")
    ]
    plain.append(dist("sympy", "1.13.1"))
    target = facts([torch26, *plain], environment=marker_env(machine, system))
    assert run("missing-cuda-wheel", target) == []
    on_x86 = facts([torch26, *plain], environment=marker_env("x86_64", "Linux"))
    finding = only("missing-cuda-wheel", on_x86)
    assert set(missing_names(finding)) == {*TORCH_2_6_CU126_NVIDIA, "triton"}


def test_windows_target_does_not_expect_linux_only_cu13_wheels() -> None:
    windows = facts(
        [torch_dist(), *healthy_distributions()[1:8]], environment=marker_env("AMD64", "Windows")
    )
    wheels = expected_wheels(windows)
    assert wheels is not None and wheels.cuda == ()
    assert run("missing-cuda-wheel", windows) == []


def test_python_version_marker_is_read_from_the_target() -> None:
    # triton and cuda-bindings apply only for python_version < "3.15".
    py315 = facts(
        healthy_distributions(skip=["triton", "cuda-bindings"]),
        environment=marker_env(python="3.15.0"),
    )
    assert run("missing-cuda-wheel", py315) == []
    py311 = facts(healthy_distributions(skip=["triton", "cuda-bindings"]))
    assert sorted(missing_names(only("missing-cuda-wheel", py311))) == ["cuda-bindings", "triton"]


# --- cuda-wheel-version-mismatch ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "installed", "fires"),
    [
        ("cuda-toolkit", "13.0.3.0", False),  # ==13.0.3 matches 13.0.3.0 (zero padding)
        ("cuda-toolkit", "13.0.2", True),
        ("nvidia-cublas", "13.1.1.3", False),  # ==13.1.1.3.* matches the release itself
        ("nvidia-cublas", "13.1.1.3.post1", False),  # ... and anything under it
        ("nvidia-cublas", "13.1.1.4", True),
        ("nvidia-cublas", "13.1.0.3", True),
        ("nvidia-nvjitlink", "13.5.37", False),  # <14,>=13.0.88
        ("nvidia-nvjitlink", "14.0.0", True),
        ("nvidia-cudnn-cu13", "9.24.0.43", False),
        ("nvidia-cudnn-cu13", "9.23.0.1", True),
        ("triton", "3.8.2", False),  # ~=3.8.0
        ("triton", "3.9.0", True),
    ],
)
def test_installed_version_is_judged_against_the_pin(
    name: str, installed: str, fires: bool
) -> None:
    all_facts = facts(healthy_distributions(versions={name: installed}))
    outcome = run("cuda-wheel-version-mismatch", all_facts)
    if not fires:
        assert outcome == []
        return
    assert not isinstance(outcome, Skip)
    [finding] = outcome
    assert [m.name for m in finding.data.mismatched] == [name]
    assert finding.data.mismatched[0].installed_version == installed
    assert any(f"{name} {installed} installed" in line for line in finding.evidence)


def test_version_mismatch_remedy_installs_the_pinned_version() -> None:
    report = judge(facts(healthy_distributions(versions={"nvidia-cudnn-cu13": "9.23.0.1"})))
    [finding] = report.findings
    assert finding.id == "cuda-wheel-version-mismatch"
    assert "nvidia-cudnn-cu13==9.24.0.43" in finding.remedies[-1].text
    assert "/project/.venv/bin/python" in finding.remedies[-1].text


def test_invalid_installed_version_counts_as_mismatch() -> None:
    all_facts = facts(healthy_distributions(versions={"nvidia-nccl-cu13": "not-a-version"}))
    finding = only("cuda-wheel-version-mismatch", all_facts)
    assert finding.data.mismatched[0].name == "nvidia-nccl-cu13"


# --- cuda-wheel-files-missing -------------------------------------------------------


def test_nvidia_wheel_with_deleted_files_is_reported_with_examples() -> None:
    lost = [f"nvidia/cudnn/lib/libcudnn_{n}.so.9" for n in ("ops", "cnn", "adv", "graph")]
    damaged = [
        dist("nvidia-cudnn-cu13", "9.24.0.43", missing_files=lost, files=40)
        if d.name == "nvidia-cudnn-cu13"
        else d
        for d in healthy_distributions()
    ]
    finding = only("cuda-wheel-files-missing", facts(damaged))
    assert finding.data.packages == ("nvidia-cudnn-cu13",)
    [line] = finding.evidence
    assert "4 of 40 files" in line and "libcudnn_ops.so.9" in line and "1 more" in line


def test_torch_itself_with_deleted_files_is_reported() -> None:
    dists = healthy_distributions()
    dists[0] = dataclasses.replace(
        torch_dist(),
        record=dataclasses.replace(
            dists[0].record,  # type: ignore[arg-type]
            missing_count=1,
            missing=("torch/lib/libtorch_cuda.so",),
        ),
    )
    finding = only("cuda-wheel-files-missing", facts(dists))
    assert finding.data.packages == ("torch",)


def test_missing_files_in_a_non_cuda_dependency_are_not_this_finding() -> None:
    dists = [
        dist("filelock", "3.16.1", missing_files=["filelock/__init__.py"])
        if d.name == "filelock"
        else d
        for d in healthy_distributions()
    ]
    assert run("cuda-wheel-files-missing", facts(dists)) == []


# --- missing-torch-dependency -------------------------------------------------------


def test_missing_python_dependency_is_an_error() -> None:
    finding = only("missing-torch-dependency", facts(healthy_distributions(skip=["sympy"])))
    assert finding.severity is Severity.ERROR
    assert missing_names(finding) == ["sympy"]
    assert run("missing-cuda-wheel", facts(healthy_distributions(skip=["sympy"]))) == []


def test_python_dependency_at_a_rejected_version_is_a_warning() -> None:
    all_facts = facts(healthy_distributions(versions={"sympy": "1.12"}))
    finding = only("missing-torch-dependency", all_facts)
    assert finding.severity is Severity.WARNING
    assert any("sympy 1.12 installed" in line for line in finding.evidence)
    assert judge(all_facts).exit_code == 0


def test_requirements_of_torch_extras_are_not_expected() -> None:
    # optree, opt-einsum and pyyaml are behind `extra == ...`; nobody asked for them.
    wheels = expected_wheels(healthy_facts())
    assert wheels is not None
    assert not {"optree", "opt-einsum", "pyyaml"} & {w.name for w in wheels.wheels}


# --- cpu-only-torch -----------------------------------------------------------------


def cpu_facts(**build: Any) -> Facts:
    cpu_torch = torch_dist("2.14.1+cpu", requires_dist=TORCH_CPU_REQUIRES)
    options: dict[str, Any] = {"version": "2.14.1+cpu", "cuda": None}
    options.update(build)
    return facts([cpu_torch, *(dist(n, "9.9") for n in PLAIN)], build=torch_build(**options))


PLAIN = ("filelock", "typing-extensions", "setuptools", "sympy", "networkx", "jinja2", "fsspec")
TORCH_CPU_REQUIRES = tuple(f"{n}" for n in PLAIN)


def test_cpu_build_is_information_not_an_error() -> None:
    finding = only("cpu-only-torch", cpu_facts())
    assert finding.severity is Severity.INFO
    assert "+cpu" in finding.detail
    assert "torch/lib has no libtorch_cuda.so" in finding.evidence
    report = judge(cpu_facts())
    assert report.exit_code == 0 and report.verdict.value == "ok"


def test_rocm_build_is_not_called_cpu_only() -> None:
    rocm = cpu_facts(version="2.14.1+rocm6.4")
    rocm = dataclasses.replace(rocm, torch=dataclasses.replace(rocm.torch, hip="6.4"))  # type: ignore[arg-type]
    assert run("cpu-only-torch", rocm) == []


def test_unreadable_torch_build_skips_the_cpu_check_with_the_reason() -> None:
    broken = cpu_facts()
    broken = dataclasses.replace(
        broken,
        torch=dataclasses.replace(
            broken.torch,  # type: ignore[arg-type]
            version=None,
            error="cannot parse torch/version.py: invalid syntax",
        ),
    )
    outcome = run("cpu-only-torch", broken)
    assert isinstance(outcome, Skip)
    assert "version.py" in outcome.reason


def test_missing_wheel_detail_names_the_build_version_with_its_local_tag() -> None:
    # PyPI's dist-info says 2.14.1; torch/version.py says 2.14.1+cu130.
    dists = healthy_distributions(skip=["nvidia-nccl-cu13"])
    dists[0] = dataclasses.replace(dists[0], version="2.14.1")
    finding = only("missing-cuda-wheel", facts(dists, build=torch_build("2.14.1+cu130")))
    assert "torch 2.14.1+cu130 declares" in finding.detail
